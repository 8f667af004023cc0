"""The one settle loop every method runs in: masking, residuals, statuses, trace, counters.

Per step: pick the still-running samples, hand the method their state and a force restricted to
them, judge the returned state on the *force* residual, and write it back. Converged, stalled and
diverged samples leave the active set at once and cost no more evaluations (STYLE.md, torchode).
Samples still running when the budget ends are classified from their own residual tail by
`detect_cycle`: LIMIT_CYCLE, MAX_STEPS, or STALLED at the dtype's precision floor.

The running samples are kept *compacted*: the method steps a state that holds only them, and rows
are gathered and scattered only when a sample leaves (at most `batch` times per run), never on an
ordinary step. Host syncs: one per step, a (6, k) transfer of the k running samples' norms, times
and flags, from which the per-sample bookkeeping (statuses, residuals, histories) is done on the
host; nothing else syncs (the working set's new indices go back to the device without a sync).
The state itself stays on its device; only the observer's readings are moved at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._base import PRECISION_FLOOR_EPS, Integrator, StepState, check_positive, check_range
from ._cycle import detect_cycle
from ._force import CountedForce, force_residual
from ._result import CycleReport, SettleResult, Status, Trace, to_cpu, worst_status

_RUNNING = -1
_NAN = float("nan")
_CODES = {s: i for i, s in enumerate(Status)}
_STATUSES = list(Status)


@dataclass(frozen=True)
class LoopOptions:
    """Options of the shared loop (any method). Validated on construction.

    * `tol`: force-residual tolerance (> 0): one number for every sample, or a 1-D real tensor
      of shape (batch,), one per sample (e.g. a tolerance relative to each sample's own scale).
    * `max_steps`: loop iterations (>= 1).
    * `blowup`: a sample whose ||z|| exceeds blowup * (||z0|| + ||F(z0)||) is DIVERGED.
    * `cycle_min_tail`: a residual tail shorter than 2 * cycle_min_tail is never called a cycle.
    * `progress`: show a tqdm bar with the residual.
    * `observer`: optional `observer(z, index) -> (k,)` recorded after every step in
      `trace.observed` (e.g. the power a circuit dissipates at z); `z` holds the samples `index`
      (a 1-D LongTensor into the batch, or None for the whole batch). Not counted as an NFE.
    """

    tol: float | Tensor
    max_steps: int
    blowup: float = 1e6
    cycle_min_tail: int = 50
    progress: bool = False
    observer: Callable[[Tensor, Tensor | None], Tensor] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tol, Tensor):
            _check_tol_tensor(self.tol)
        else:
            check_positive("tol", self.tol)
        check_range("max_steps", self.max_steps, 1, 10**12, integer=True)
        check_positive("blowup", self.blowup, allow_inf=True)
        check_range("cycle_min_tail", self.cycle_min_tail, 2, 10**9, integer=True)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool, got {type(self.progress).__name__}")
        if self.observer is not None and not callable(self.observer):
            raise TypeError(
                f"observer must be callable(z, index), got {type(self.observer).__name__}"
            )


LOOP_OPTIONS = ("blowup", "cycle_min_tail", "progress", "observer")


def _check_tol_tensor(tol: Tensor) -> None:
    """A per-sample tolerance: 1-D, real floating, finite and > 0 (one host check, at setup)."""
    if tol.ndim != 1 or tol.is_complex() or not tol.is_floating_point():
        raise TypeError(
            f"tol must be a number or a 1-D real floating tensor of shape (batch,), got a "
            f"{tol.dtype} tensor of shape {tuple(tol.shape)}"
        )
    if not bool((torch.isfinite(tol) & (tol > 0)).all()):
        raise ValueError("tol must be finite and > 0 for every sample")


def _tolerances(tol: float | Tensor, batch: int) -> np.ndarray:
    """The (batch,) float64 host array of per-sample tolerances."""
    if not isinstance(tol, Tensor):
        return np.full(batch, float(tol))
    if tol.shape != (batch,):
        raise ValueError(
            f"tol has shape {tuple(tol.shape)}: a per-sample tolerance needs shape ({batch},), "
            "one per sample of z0"
        )
    return tol.detach().to("cpu", torch.float64).numpy().copy()


def check_initial_state(z0: Any) -> Tensor:
    """z0 must be a finite floating or complex tensor of shape (batch, ...), batch >= 1."""
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a torch.Tensor of shape (batch, ...), got {type(z0).__name__}")
    if not (z0.is_floating_point() or z0.is_complex()):
        raise TypeError(f"z0 must have a floating or complex dtype, got {z0.dtype}")
    if z0.ndim < 2:
        raise ValueError(
            f"z0 must have shape (batch, ...) with at least one state dimension, got "
            f"{tuple(z0.shape)}; add a batch dimension with z0.unsqueeze(0)"
        )
    if z0.shape[0] < 1 or z0[0].numel() < 1:
        raise ValueError(
            f"z0 must hold at least one sample and one state entry, got {tuple(z0.shape)}"
        )
    if not bool(torch.isfinite(z0).all()):
        raise ValueError("z0 must be finite (it holds NaN or inf)")
    return z0


def run(method: Integrator, force: Any, z0: Tensor, options: LoopOptions) -> SettleResult:
    """Settle `force` from `z0` with `method`; see `settle` for the meaning of the result."""
    # Detached (the settle is not differentiated; gradients come from the learning estimators)
    # and contiguous (forward-mode JVPs refuse expanded, stride-0 states).
    z0 = check_initial_state(z0).detach().contiguous()
    wall0 = time.perf_counter()
    counted = CountedForce(force, z0)
    if method.needs_split and not counted.has_split:
        _ = counted.leak  # raises a TypeError that says what the method needs
    batch = z0.shape[0]
    dims = tuple(range(1, z0.ndim))
    dev = z0.device

    with torch.no_grad():
        f0 = counted(z0)
    full = method.init(counted, z0, f0)
    real = full.t.dtype
    tiny = torch.finfo(real).tiny
    # Per-sample bookkeeping (statuses, residuals, norms, times, counters) lives on the host, in
    # float64: a few (batch,)-sized numbers per step, fetched in the one transfer the step needs
    # anyway. On the device it would cost ~30 tiny kernel launches per step (BENCHMARKS.md).
    first = torch.stack(
        (
            torch.linalg.vector_norm(full.z, dim=dims).to(real),
            torch.linalg.vector_norm(full.f, dim=dims).to(real),
            torch.linalg.vector_norm(torch.nan_to_num(full.f), dim=dims).to(real),
            full.t,
        )
    )
    zn0, fn0, fn0_finite, t0 = _host(first)
    with np.errstate(over="ignore", invalid="ignore"):
        res = fn0 / np.maximum(zn0, tiny)
    finite0 = np.isfinite(fn0) & np.isfinite(zn0)
    limit = options.blowup * np.maximum(zn0 + fn0_finite, tiny)
    code = np.full(batch, _RUNNING, dtype=np.int64)
    code[~finite0] = _CODES[Status.DIVERGED]
    tol = _tolerances(options.tol, batch)
    code[finite0 & (res <= tol)] = _CODES[Status.CONVERGED]
    res = np.where(finite0, res, np.inf)
    norm = zn0
    steps_per_sample = np.zeros(batch, dtype=np.int64)

    hist_res, hist_t, hist_nfe, hist_norm = [res], [t0], [counted.calls], [norm]
    observe = options.observer
    hist_obs = [_observe(observe, full.z, None, batch)] if observe is not None else []
    hist_step_res: list[float] = []
    hist_eps: list[float] = []
    bar = _progress_bar(options, method.name)

    # The working set: the running samples only, compacted. `rows` are their indices into the
    # batch (None: the whole batch, in order; `rows_np` the same on the host). It changes at most
    # `batch` times per run, so the state is gathered and scattered only then, never on an
    # ordinary step (a take/put of every state tensor per step was the loop's largest cost,
    # BENCHMARKS.md). `full` holds the finished samples; the running ones are scattered back into
    # it when they finish.
    work, rows, rows_np, view = full, None, np.arange(batch), counted
    if not bool((code == _RUNNING).all()):
        rows_np = np.flatnonzero(code == _RUNNING)
        rows = torch.from_numpy(rows_np).to(dev)
        work, view = full.take(rows), counted.restrict(rows)
    scratch = torch.empty_like(work.z)  # for z_new - z: reused, no fresh memory per step
    steps = 0
    for _ in range(options.max_steps):
        if rows_np.size == 0:
            break
        steps += 1
        with torch.no_grad():
            new = method.step(view, work)
        torch.sub(new.z, work.z, out=scratch)
        flags = torch.stack(
            (
                torch.linalg.vector_norm(new.z, dim=dims).to(real),
                torch.linalg.vector_norm(new.f, dim=dims).to(real),
                torch.linalg.vector_norm(scratch, dim=dims).to(real),
                new.t,
                new.stalled.to(real),
                new.settled.to(real),
            )
        )
        zn, fn, dzn, t_new, stalled, settled = _host(flags)  # the one host sync per step
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN norms are judged below
            r = fn / np.maximum(zn, tiny)
            dz = dzn / np.maximum(norm[rows_np], tiny)  # step residual ||z_new - z|| / ||z||
        # A non-finite entry makes its norm non-finite, so the norms double as the finiteness
        # check (zn <= limit is False for NaN and inf).
        ok = (zn <= limit[rows_np]) & np.isfinite(r)
        old_norm, old_t = norm[rows_np], hist_t[-1][rows_np]
        hist_step_res.append(float(np.where(ok, dz, 0.0).max()))
        # The step actually taken (after any shrink or retry), not the next proposal in new.eps.
        hist_eps.append(float(np.where(ok, t_new - old_t, 0.0).max()) if method.has_time else _NAN)
        sub_code = np.where(ok, _RUNNING, _CODES[Status.DIVERGED])
        sub_code[ok & (stalled > 0)] = _CODES[Status.STALLED]
        sub_code[ok & ((r <= tol[rows_np]) | (settled > 0))] = _CODES[Status.CONVERGED]
        all_ok = bool(ok.all())
        if not all_ok:  # rare: keep the last finite state of the failed samples
            new = work.merge(new, keep=torch.from_numpy(~ok).to(dev))
        code, res, norm = code.copy(), res.copy(), norm.copy()
        t_now = hist_t[-1].copy()
        code[rows_np] = sub_code
        res[rows_np] = np.where(ok, r, res[rows_np])
        norm[rows_np] = np.where(ok, zn, old_norm)
        t_now[rows_np] = np.where(ok, t_new, old_t)
        steps_per_sample[rows_np] += 1
        hist_res.append(res)
        hist_t.append(t_now)
        hist_norm.append(norm)
        hist_nfe.append(counted.calls)
        if observe is not None:
            seen = _observe(observe, new.z, rows, rows_np.size)
            last = hist_obs[-1]
            keep_ok = torch.from_numpy(ok).to(dev)
            hist_obs.append(
                torch.where(keep_ok, seen, last)
                if rows is None
                else last.index_copy(0, rows, torch.where(keep_ok, seen, last[rows]))
            )
        still = sub_code == _RUNNING
        if still.all():
            work = new
        else:  # some samples finished: scatter them into `full`, compact the rest
            gone = torch.from_numpy(np.flatnonzero(~still)).to(dev)
            stay = torch.from_numpy(np.flatnonzero(still)).to(dev)
            gone_rows = gone if rows is None else rows.index_select(0, gone)
            full = _scatter(full, new, gone_rows, gone, batch)
            work = new.take(stay)
            rows = stay if rows is None else rows.index_select(0, stay)
            rows_np = rows_np[still]
            # Frozen rows for forces without `select` (a view copies them when it is made).
            view.refresh(full.z)
            view = view.restrict(stay)
            scratch = torch.empty_like(work.z)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"residual {res.max():.2e} active {rows_np.size}")
    if bar is not None:
        bar.close()
    if rows_np.size > 0:  # samples still running when the budget ended
        idx = torch.arange(rows_np.size, device=dev)
        full = _scatter(full, work, idx if rows is None else rows, idx, batch)
    state = full

    sample_res = torch.from_numpy(np.stack(hist_res))
    sample_norm = torch.from_numpy(np.stack(hist_norm))
    sample_time = torch.from_numpy(np.stack(hist_t))
    final_codes = code.tolist()
    statuses: list[Status] = []
    cycles: list[CycleReport | None] = []
    precision = PRECISION_FLOOR_EPS * torch.finfo(real).eps
    for i, c in enumerate(final_codes):
        if c == _CODES[Status.CONVERGED]:
            statuses.append(Status.CONVERGED)
            cycles.append(None)
            continue
        n_i = int(steps_per_sample[i]) + 1
        tail, tail_norm = sample_res[:n_i, i], sample_norm[:n_i, i]
        finite = torch.isfinite(tail)
        report = detect_cycle(
            tail[finite], min_tail=options.cycle_min_tail, state_norm=tail_norm[finite]
        )
        cycles.append(report)
        if c != _RUNNING:
            statuses.append(_STATUSES[c])
        elif report.floor <= precision and report.decay >= 0.9:
            statuses.append(Status.STALLED)
        elif report.is_cycle:
            statuses.append(Status.LIMIT_CYCLE)
        else:
            statuses.append(Status.MAX_STEPS)

    z_out, f_out = method.finalize(state)
    residual = force_residual(z_out, f_out)
    info = dict(method.info(state))
    info["rejected_steps"] = int(state.rejected.sum())
    info["precision_floor"] = float(precision)
    # A number stays a number; a per-sample tolerance is reported as the (batch,) float64 tensor.
    info["tol"] = torch.from_numpy(tol) if isinstance(options.tol, Tensor) else options.tol
    trace = Trace(
        residual=sample_res.max(dim=1).values,
        step_residual=torch.tensor(hist_step_res, dtype=torch.float64),
        step_size=torch.tensor(hist_eps, dtype=torch.float64),
        time=sample_time.max(dim=1).values if method.has_time else None,
        sample_residual=sample_res,
        sample_time=sample_time if method.has_time else None,
        nfe=torch.tensor(hist_nfe, dtype=torch.long),
        observed=to_cpu(torch.stack(hist_obs)).double() if hist_obs else None,
        sample_state_norm=sample_norm,
    )
    return SettleResult(
        z=z_out,
        status=worst_status(tuple(statuses)),
        residual=residual,
        nfe=counted.calls,
        steps=steps,
        t=state.t if method.has_time else None,
        trace=trace,
        wall_time=time.perf_counter() - wall0,
        sample_status=tuple(statuses),
        nfe_per_sample=counted.per_sample,
        steps_per_sample=torch.from_numpy(steps_per_sample).to(dev),
        cycles=tuple(cycles),
        method=method.name,
        info=info,
    )


def _host(values: Tensor) -> np.ndarray:
    """A (k, batch) device tensor as float64 numpy rows (one transfer)."""
    return values.detach().to("cpu").to(torch.float64).numpy()


def _scatter(full: StepState, new: StepState, rows: Tensor, local: Tensor, batch: int) -> StepState:
    """`full` with rows `rows` replaced by rows `local` of `new` (the whole of `new` if it covers
    the batch in order)."""
    if rows.numel() == batch and new.z.shape[0] == batch and local.numel() == batch:
        return new
    return full.put(rows, new.take(local))


def _observe(observer: Callable, z: Tensor, index: Tensor | None, k: int) -> Tensor:
    value = observer(z, index)
    if not isinstance(value, Tensor) or value.shape != (k,):
        raise ValueError(f"observer must return a tensor of shape ({k},), one value per sample")
    return value.detach()


def _progress_bar(options: LoopOptions, name: str) -> Any:
    if not options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=options.max_steps, desc=f"settle[{name}]", leave=False)


__all__ = ["LoopOptions", "LOOP_OPTIONS", "run", "check_initial_state", "StepState"]
