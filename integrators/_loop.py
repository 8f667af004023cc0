"""The one settle loop every method runs in: masking, residuals, statuses, trace, counters.

Per step: pick the still-running samples, hand the method their state and a force restricted to
them, judge the returned state by the scale-aware convergence test on its force (`_convergence`:
the displacement rms(F / w) against atol + rtol rms(z), never the step), and write it back.
Converged, stalled and diverged samples leave the active set at once and cost no more evaluations
(after torchode). A sample whose tail already shows an established cycle or runaway ends then
(`_EarlyEnd`); samples still running when the budget ends are classified from their own
scaled-error tail by `detect_cycle`: LIMIT_CYCLE, MAX_STEPS, or STALLED at the dtype's precision
floor. A method may name a `fallback` that takes over the samples it leaves stalled, cycling or
exploded (`_chain`).

The running samples are kept *compacted*: the method steps a state that holds only them, and rows
are gathered and scattered only when a sample leaves (at most `batch` times per run), never on an
ordinary step. Host syncs: one per step, a (6, k) transfer of the k running samples' norms, times
and flags (7 rows with an elementwise leak), from which the per-sample bookkeeping (statuses,
residuals, histories) is done on the host; nothing else syncs (the working set's new indices go
back to the device without a sync; a norm that overflowed is taken again, rarely).
The state itself stays on its device; only the observer's readings are moved at the end.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._base import PRECISION_FLOOR_EPS, Integrator, StepState, check_positive, check_range
from ._chain import chain
from ._convergence import Displacement, check_tolerance, default_atol, per_sample, scaled_error
from ._cycle import detect_cycle
from ._force import CountedForce, force_residual, safe_norm
from ._result import CycleReport, SettleResult, Status, Trace, to_cpu, worst_status

_RUNNING = -1
_SPENT = -2  # the sample's own budget ended: classified from its tail, like a running one
_NAN = float("nan")
_CODES = {s: i for i, s in enumerate(Status)}
_STATUSES = list(Status)


@dataclass(frozen=True)
class LoopOptions:
    """Options of the shared loop (any method). Validated on construction.

    * `tol`: relative tolerance rtol (> 0) of the convergence test (`_convergence`): one number
      for every sample, or a 1-D real tensor of shape (batch,), one per sample.
    * `atol`: absolute tolerance on the displacement, units of z per entry (>= 0; number or
      (batch,) tensor); None: rtol times each sample's initial displacement.
    * `rate`: the force's rate scale (1 / time, > 0; number or (batch,) tensor); None: the leak
      when the force has the split, else measured at z0 (one evaluation).
    * `max_steps`: loop iterations (>= 1).
    * `blowup`: a sample whose ||z|| exceeds blowup * (||z0|| + ||F(z0) / w||) (its start's size
      plus its initial displacement, units of z) is DIVERGED.
    * `cycle_min_tail`: a residual tail shorter than 2 * cycle_min_tail is never called a cycle;
      every `cycle_min_tail` steps the running samples' tails are checked for an established cycle
      or runaway (`_early_end`).
    * `progress`: show a tqdm bar with the residual.
    * `observer`: optional `observer(z, index) -> (k,)` recorded after every step in
      `trace.observed` (e.g. the power a circuit dissipates at z); `z` holds the samples `index`
      (a 1-D LongTensor into the batch, or None for the whole batch). Not counted as an NFE.
    """

    tol: float | Tensor
    max_steps: int
    atol: float | Tensor | None = None
    rate: float | Tensor | None = None
    blowup: float = 1e6
    cycle_min_tail: int = 50
    progress: bool = False
    observer: Callable[[Tensor, Tensor | None], Tensor] | None = None

    def __post_init__(self) -> None:
        check_tolerance("tol", self.tol)
        if self.atol is not None:
            check_tolerance("atol", self.atol, allow_zero=True)
        if self.rate is not None:
            check_tolerance("rate", self.rate)
        check_range("max_steps", self.max_steps, 1, 10**12, integer=True)
        check_positive("blowup", self.blowup, allow_inf=True)
        check_range("cycle_min_tail", self.cycle_min_tail, 2, 10**9, integer=True)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool, got {type(self.progress).__name__}")
        if self.observer is not None and not callable(self.observer):
            raise TypeError(
                f"observer must be callable(z, index), got {type(self.observer).__name__}"
            )


LOOP_OPTIONS = ("atol", "rate", "blowup", "cycle_min_tail", "progress", "observer")


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
    """Settle `force` from `z0` with `method`; see `settle` for the meaning of the result.

    Samples the method leaves STALLED, LIMIT_CYCLE or DIVERGED (with a finite force) are handed
    to its `fallback` method, if it has one, from the state the method returned, with the rest
    of their own step budget (so no sample takes more than `max_steps` loop steps in all). With a
    fallback, a sample that converges too slowly to meet the test within its budget at the rate
    it measures is handed over too (`_EarlyEnd.too_slow`). A sample takes the fallback's outcome
    unless that is worse (a more severe status: e.g. the flow running off from a force without a
    root, where the method had stalled at its best point); `info["fallback"]` says what was done
    (`_chain`).
    """
    # Detached (the settle is not differentiated; gradients come from the learning estimators)
    # and contiguous (forward-mode JVPs refuse expanded, stride-0 states).
    z0 = check_initial_state(z0).detach().contiguous()
    wall0 = time.perf_counter()
    counted = CountedForce(force, z0)
    batch = z0.shape[0]
    with torch.no_grad():
        f0 = counted(z0)
    disp = Displacement.build(counted, z0, f0, options.rate)
    rtol = per_sample("tol", options.tol, batch)
    dims = tuple(range(1, z0.ndim))
    delta0 = _rms(disp.scale(_host(disp.norms(counted, f0, dims)[None])[0], np.arange(batch)),
                  z0[0].numel())
    atol = default_atol(rtol, delta0) if options.atol is None else per_sample(
        "atol", options.atol, batch)
    counted.set_rate(_method_rate(disp, counted, z0))
    test = _Test(rtol, atol, disp)
    fallback = getattr(method, "fallback", None)
    budget = np.full(batch, options.max_steps, dtype=np.int64)
    first, state = _run_rows(method, counted, z0, f0, test, options, budget, None,
                             handover=fallback is not None)
    if fallback is None:
        return _finish(first, wall0)
    assert first.steps_per_sample is not None
    left = budget - first.steps_per_sample.cpu().numpy()
    retry = _fallback_rows(first, state.nonfinite)
    retry = retry[left[retry] > 0] if retry.size else retry
    if retry.size == 0:
        return _finish(first, wall0)
    index = torch.from_numpy(retry).to(z0.device)
    view = counted.restrict(index)
    z_start = first.z.index_select(0, index)
    f_start = state.f.index_select(0, index)
    second, _ = _run_rows(fallback, view, z_start, f_start, test.take(retry), options,
                          left[retry], retry)
    return _finish(chain(first, second, retry, keep_worse=False), wall0)


@dataclass(frozen=True)
class _Test:
    """The convergence test of one settle, per sample (host arrays; `_convergence`)."""

    rtol: np.ndarray
    atol: np.ndarray
    disp: Displacement

    def take(self, rows: np.ndarray) -> _Test:
        disp = self.disp
        if disp.scalar_rate is not None:
            disp = Displacement(disp.scalar_rate[rows], disp.elementwise, disp.source)
        return _Test(self.rtol[rows], self.atol[rows], disp)


@dataclass
class _End:
    """What `_run_rows` leaves besides the result: F at the returned z, non-finite flags."""

    f: Tensor
    nonfinite: np.ndarray


def _rms(norm: np.ndarray, n: int) -> np.ndarray:
    return norm / math.sqrt(n)


def _method_rate(disp: Displacement, counted: CountedForce, z0: Tensor) -> Tensor:
    """(batch,) rate scale for the methods' default steps: the scalar rate, or the smallest leak
    of each sample (the slowest node sets the time scale of an elementwise leak)."""
    real = z0.real.dtype if z0.is_complex() else z0.dtype
    if disp.scalar_rate is not None:
        rate = np.abs(disp.scalar_rate)
        rate = np.where(np.isfinite(rate) & (rate > 0), rate, 1.0)
        return torch.as_tensor(rate, dtype=real, device=z0.device)
    leak = counted.leak.to(device=z0.device, dtype=real)
    leak = torch.broadcast_to(leak, z0.shape) if leak.ndim == z0.ndim else torch.broadcast_to(
        leak, z0.shape[1:]).expand(z0.shape)
    return leak.reshape(z0.shape[0], -1).amin(dim=1)


def _fallback_rows(result: SettleResult, nonfinite: np.ndarray) -> np.ndarray:
    """Samples a fallback method takes over: stalled, cycling, or exploded with a finite force."""
    rows = []
    for i, s in enumerate(result.sample_status):
        if s in (Status.STALLED, Status.LIMIT_CYCLE) or (
                s is Status.DIVERGED and not nonfinite[i]):
            rows.append(i)
    return np.asarray(rows, dtype=np.int64)


def _finish(result: SettleResult, wall0: float) -> SettleResult:
    return dataclasses.replace(result, wall_time=time.perf_counter() - wall0)


def _run_rows(
    method: Integrator, base: CountedForce, z0: Tensor, f0: Tensor, test: _Test,
    options: LoopOptions, budget: np.ndarray, batch_rows: np.ndarray | None, *,
    handover: bool = False,
) -> tuple[SettleResult, _End]:
    """The loop proper, on the samples `base` holds (all of them, or a fallback's subset).

    `budget` (k,): each sample's own step budget (a sample whose steps reach it stops and is
    classified from its tail). `batch_rows` maps this run's samples to the settle's batch (None:
    the same), for the observer's indices. `handover`: end samples that converge too slowly
    for their budget as STALLED (a fallback takes them).
    """
    max_steps = int(budget.max())
    inv_sqrt_n = 1.0 / math.sqrt(z0[0].numel())  # rms = 2-norm / sqrt(entries)
    if method.needs_split and not base.has_split:
        _ = base.leak  # raises a TypeError that says what the method needs
    batch = z0.shape[0]
    n_entries = z0[0].numel()
    dims = tuple(range(1, z0.ndim))
    dev = z0.device
    disp = test.disp

    full = method.init(base, z0, f0)
    real = full.t.dtype
    tiny = torch.finfo(real).tiny
    # Per-sample bookkeeping (statuses, residuals, norms, times, counters) lives on the host, in
    # float64: a few (batch,)-sized numbers per step, fetched in the one transfer the step needs
    # anyway. On the device it would cost ~30 tiny kernel launches per step (BENCHMARKS.md).
    first_rows = [
        torch.linalg.vector_norm(full.z, dim=dims).to(real),
        torch.linalg.vector_norm(full.f, dim=dims).to(real),
        torch.linalg.vector_norm(torch.nan_to_num(full.f), dim=dims).to(real),
        full.t,
    ]
    if disp.elementwise:
        first_rows.append(disp.norms(base, full.f, dims).to(real))
    values = _host(torch.stack(first_rows))
    if np.isinf(values[:2]).any() or (disp.elementwise and np.isinf(values[4]).any()):
        values = _unoverflow(values, (full.z, full.f, None, None, None), dims,
                             disp=(disp, base) if disp.elementwise else None)
    zn0, fn0, fn0_finite, t0 = values[:4]
    all_rows = np.arange(batch)
    dn0 = disp.scale(values[4] if disp.elementwise else fn0, all_rows)
    with np.errstate(over="ignore", invalid="ignore"):
        res = fn0 / np.maximum(zn0, tiny)
    err = scaled_error(_rms(dn0, n_entries), _rms(zn0, n_entries), test.rtol, test.atol)
    finite0 = np.isfinite(fn0) & np.isfinite(zn0) & ~np.isnan(err)
    nonfinite = ~finite0
    # In units of z: the start's size plus its displacement (||F(z0)|| alone has units of z per
    # time, which would make the limit depend on the force's scale).
    limit = options.blowup * np.maximum(zn0 + np.nan_to_num(dn0, nan=0.0, posinf=0.0), tiny)
    code = np.full(batch, _RUNNING, dtype=np.int64)
    code[~finite0] = _CODES[Status.DIVERGED]
    code[finite0 & (err <= 1.0)] = _CODES[Status.CONVERGED]
    res = np.where(finite0, res, np.inf)
    err = np.where(finite0, err, np.inf)
    norm = zn0
    steps_per_sample = np.zeros(batch, dtype=np.int64)
    # Steps in a row on which a sample's state did not change at all (its steps are below the
    # rounding of z, or every step was refused): `cycle_min_tail` of them end it STALLED.
    frozen = np.zeros(batch, dtype=np.int64)

    hist_res, hist_err, hist_t, hist_nfe, hist_norm = [res], [err], [t0], [base.calls], [norm]
    observe = options.observer
    obs_index = None if batch_rows is None else torch.from_numpy(batch_rows).to(dev)

    def observed(z: Tensor, rows: Tensor | None, k: int) -> Tensor:
        if obs_index is None:
            return _observe(observe, z, rows, k)
        return _observe(observe, z, obs_index if rows is None else obs_index[rows], k)

    hist_obs = [observed(full.z, None, batch)] if observe is not None else []
    hist_step_res: list[float] = []
    hist_eps: list[float] = []
    bar = _progress_bar(options, method.name, max_steps)
    early = _EarlyEnd(options.cycle_min_tail, max_steps)


    # The working set: the running samples only, compacted. `rows` are their indices into this
    # run's batch (None: the whole batch, in order; `rows_np` the same on the host). It changes
    # at most `batch` times per run, so the state is gathered and scattered only then, never on
    # an ordinary step (a take/put of every state tensor per step was the loop's largest cost,
    # BENCHMARKS.md). `full` holds the finished samples; the running ones are scattered back into
    # it when they finish.
    work, rows, rows_np, view = full, None, all_rows, base
    if not bool((code == _RUNNING).all()):
        rows_np = np.flatnonzero(code == _RUNNING)
        rows = torch.from_numpy(rows_np).to(dev)
        work, view = full.take(rows), base.restrict(rows)
    scratch = torch.empty_like(work.z)  # for z_new - z: reused, no fresh memory per step
    steps = 0
    for _ in range(max_steps):
        if rows_np.size == 0:
            break
        steps += 1
        with torch.no_grad():
            new = method.step(view, work)
        torch.sub(new.z, work.z, out=scratch)
        # Norms of real or complex states are already in the real dtype (no cast per step).
        step_rows = [
            torch.linalg.vector_norm(new.z, dim=dims),
            torch.linalg.vector_norm(new.f, dim=dims),
            torch.linalg.vector_norm(scratch, dim=dims),
            new.t,
            new.stalled.to(real),
            new.settled.to(real),
        ]
        if disp.elementwise:
            step_rows.append(disp.norms(view, new.f, dims))
        flags = _host(torch.stack(step_rows))  # the one host sync per step
        if np.isinf(flags[:3]).any() or (disp.elementwise and np.isinf(flags[6]).any()):
            flags = _unoverflow(flags, (new.z, new.f, scratch, None, None, None), dims,
                                disp=(disp, view) if disp.elementwise else None)
        zn, fn, dzn, t_new, stalled, settled = flags[:6]
        dn = disp.scale(flags[6] if disp.elementwise else fn, rows_np)
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN norms are judged below
            r = fn / np.maximum(zn, tiny)
            dz = dzn / np.maximum(norm[rows_np], tiny)  # step residual ||z_new - z|| / ||z||
            e = scaled_error(dn * inv_sqrt_n, zn * inv_sqrt_n, test.rtol[rows_np],
                             test.atol[rows_np])
        # A non-finite entry makes its norm non-finite, so the norms double as the finiteness
        # check (zn <= limit is False for NaN and inf).
        finite = np.isfinite(r) & ~np.isnan(e)
        ok = (zn <= limit[rows_np]) & finite
        nonfinite[rows_np] |= ~finite
        old_norm, old_t = norm[rows_np], hist_t[-1][rows_np]
        hist_step_res.append(float(np.where(ok, dz, 0.0).max()))
        # The step actually taken (after any shrink or retry), not the next proposal in new.eps.
        hist_eps.append(float(np.where(ok, t_new - old_t, 0.0).max()) if method.has_time else _NAN)
        frozen[rows_np] = np.where(dzn == 0, frozen[rows_np] + 1, 0)
        sub_code = np.where(ok, _RUNNING, _CODES[Status.DIVERGED])
        sub_code[ok & ((stalled > 0) | (frozen[rows_np] >= options.cycle_min_tail))] = _CODES[
            Status.STALLED]
        sub_code[ok & ((e <= 1.0) | (settled > 0))] = _CODES[Status.CONVERGED]
        all_ok = bool(ok.all())
        if not all_ok:  # rare: keep the last finite state of the failed samples
            new = work.merge(new, keep=torch.from_numpy(~ok).to(dev))
        code, res, err, norm = code.copy(), res.copy(), err.copy(), norm.copy()
        t_now = hist_t[-1].copy()
        code[rows_np] = sub_code
        res[rows_np] = np.where(ok, r, res[rows_np])
        err[rows_np] = np.where(ok, e, err[rows_np])
        norm[rows_np] = np.where(ok, zn, old_norm)
        t_now[rows_np] = np.where(ok, t_new, old_t)
        steps_per_sample[rows_np] += 1
        hist_res.append(res)
        hist_err.append(err)
        hist_t.append(t_now)
        hist_norm.append(norm)
        hist_nfe.append(base.calls)
        if observe is not None:
            seen = observed(new.z, rows, rows_np.size)
            last = hist_obs[-1]
            keep_ok = torch.from_numpy(ok).to(dev)
            hist_obs.append(
                torch.where(keep_ok, seen, last)
                if rows is None
                else last.index_copy(0, rows, torch.where(keep_ok, seen, last[rows]))
            )
        if early.due(steps):
            ended = early.judge(hist_err, hist_norm, hist_t, rows_np, sub_code, steps_per_sample,
                                steps)
            for status, local in ended:
                sub_code[local] = _CODES[status]
                code[rows_np[local]] = _CODES[status]
        if handover and early.due_slow(steps):
            local = early.too_slow(hist_err, rows_np, sub_code, steps_per_sample, budget)
            sub_code[local] = _CODES[Status.STALLED]
            code[rows_np[local]] = _CODES[Status.STALLED]
        # A sample whose own budget is spent stops here; it is classified from its tail at the end.
        spent = (sub_code == _RUNNING) & (steps_per_sample[rows_np] >= budget[rows_np])
        if spent.any():
            sub_code[spent] = _SPENT
            code[rows_np[spent]] = _SPENT
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
            base.refresh_rows(full.z)
            view = base.restrict(rows)
            scratch = torch.empty_like(work.z)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"residual {res.max():.2e} active {rows_np.size}")
    if bar is not None:
        bar.close()
    code = np.where(code == _SPENT, _RUNNING, code)
    if rows_np.size > 0:  # samples still running when the budget ended
        idx = torch.arange(rows_np.size, device=dev)
        full = _scatter(full, work, idx if rows is None else rows, idx, batch)
    state = full

    sample_res = torch.from_numpy(np.stack(hist_res))
    sample_err = torch.from_numpy(np.stack(hist_err))
    sample_norm = torch.from_numpy(np.stack(hist_norm))
    sample_time = torch.from_numpy(np.stack(hist_t))
    statuses, cycles = _classify(code, sample_err, sample_res, sample_norm, steps_per_sample, test,
                                 norm, n_entries, real, options.cycle_min_tail)

    # A converged sample returns the state the test passed at; the method's own pick (Anderson's
    # lowest-||F|| / ||z|| iterate) only where it did not converge (at z* = 0 those differ).
    z_pick, f_pick = method.finalize(state)
    done = torch.from_numpy(code == _CODES[Status.CONVERGED]).to(dev)
    done = done.view((-1,) + (1,) * (z0.ndim - 1))
    z_out = torch.where(done, state.z, z_pick)
    f_out = torch.where(done, state.f, f_pick)
    residual = force_residual(z_out, f_out)
    info = dict(method.info(state))
    info["rejected_steps"] = int(state.rejected.sum())
    info["precision_floor"] = float(PRECISION_FLOOR_EPS * torch.finfo(real).eps)
    # A number stays a number; a per-sample tolerance is reported as the (batch,) float64 tensor.
    info["tol"] = torch.from_numpy(test.rtol) if isinstance(options.tol, Tensor) else options.tol
    info["atol"] = torch.from_numpy(test.atol)
    info["rate_source"] = disp.source
    # The scalar rate scale per sample (1 / time), or None for an elementwise leak.
    info["rate"] = None if disp.scalar_rate is None else torch.from_numpy(disp.scalar_rate.copy())
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
        sample_error=sample_err,
    )
    result = SettleResult(
        z=z_out,
        status=worst_status(tuple(statuses)),
        residual=residual,
        nfe=base.calls,
        steps=steps,
        t=state.t if method.has_time else None,
        trace=trace,
        wall_time=0.0,
        sample_status=tuple(statuses),
        nfe_per_sample=base.per_sample if base.index is None else base.per_sample.index_select(
            0, base.index),
        steps_per_sample=torch.from_numpy(steps_per_sample).to(dev),
        cycles=tuple(cycles),
        method=method.name,
        info=info,
        error=sample_err[-1].clone(),
    )
    return result, _End(f_out, nonfinite)


def _in_force_residual(report: CycleReport, g: Tensor) -> CycleReport:
    """The tail report with its floor and amplitude in force-residual units (the diagnostic users
    read), over the same tail; the judgement (cycle or not, period, shape) stays the scaled
    error's."""
    tail = (g[-report.tail_length:] if report.tail_length else g).double().numpy()
    if tail.size == 0:
        return report
    return dataclasses.replace(report, floor=float(np.median(tail)),
                               amplitude=float(np.ptp(tail)) / 2)


def _classify(
    code: np.ndarray, sample_err: Tensor, sample_res: Tensor, sample_norm: Tensor,
    steps_per_sample: np.ndarray,
    test: _Test, norm: np.ndarray, n_entries: int, real: torch.dtype, min_tail: int,
) -> tuple[list[Status], list[CycleReport | None]]:
    """Final status and tail report per sample. Samples still running when the budget ended are
    classified from their scaled-error tail: STALLED at the dtype's precision floor, LIMIT_CYCLE,
    or MAX_STEPS."""
    statuses: list[Status] = []
    cycles: list[CycleReport | None] = []
    eps = PRECISION_FLOOR_EPS * torch.finfo(real).eps
    # The precision floor in units of the scaled error: a displacement of 16 eps rms(z).
    z_rms = _rms(norm, n_entries)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = eps * z_rms / (test.atol + test.rtol * z_rms)
    for i, c in enumerate(code.tolist()):
        if c == _CODES[Status.CONVERGED]:
            statuses.append(Status.CONVERGED)
            cycles.append(None)
            continue
        n_i = int(steps_per_sample[i]) + 1
        tail, tail_norm = sample_err[:n_i, i], sample_norm[:n_i, i]
        finite = torch.isfinite(tail)
        report = detect_cycle(tail[finite], min_tail=min_tail, state_norm=tail_norm[finite])
        cycles.append(_in_force_residual(report, sample_res[:n_i, i][finite]))
        if c != _RUNNING:
            statuses.append(_STATUSES[c])
        elif report.floor <= precision[i] and report.decay >= 0.9:
            statuses.append(Status.STALLED)
        elif report.is_cycle:
            statuses.append(Status.LIMIT_CYCLE)
        else:
            statuses.append(Status.MAX_STEPS)
    return statuses, cycles


class _EarlyEnd:
    """Ends samples whose answer is already known, instead of running out the budget.

    Every `min_tail` steps, each running sample's scaled-error history is cut into two windows of
    w = max(4 min_tail, 8 periods) steps (the period from `detect_cycle` on the last 4 min_tail
    steps), the latest and the one before it; the sample needs 2 w steps. It ends
    * LIMIT_CYCLE when both windows are cycles (`detect_cycle`, with the state norms) with the same
      period and floor (within 20 %), the same time advanced per window (within 10 %: an adaptive
      method whose step is still changing is not on its cycle yet), and the envelope, extrapolated
      at the rate it decayed from one window to the next, cannot bring the error to 1 within the
      steps left (a slowly decaying spiral that can still converge keeps running);
    * DIVERGED when both windows are runaways (||z|| grew by more than half in each) and the scaled
      error did not decay from one to the next: the state leaves along an unstable direction and the
      displacement grows with it (an approach to a far fixed point has a falling error and is never
      ended).
    Host work only (no force evaluation, no device sync).
    """

    def __init__(self, min_tail: int, max_steps: int):
        self.every = min_tail
        self.base = 4 * min_tail
        self.max_steps = max_steps

    def due(self, steps: int) -> bool:
        return steps % self.every == 0 and steps >= 2 * self.base

    def judge(self, hist_err: list[np.ndarray], hist_norm: list[np.ndarray],
              hist_t: list[np.ndarray], rows_np: np.ndarray, sub_code: np.ndarray,
              steps_per_sample: np.ndarray, steps: int) -> list[tuple[Status, np.ndarray]]:
        recent_err = np.stack(hist_err[-self.base:])
        recent_norm = np.stack(hist_norm[-self.base:])
        windows: dict[int, int] = {}
        for local, i in enumerate(rows_np.tolist()):
            if sub_code[local] != _RUNNING or steps_per_sample[i] < 2 * self.base:
                continue
            if not np.all(np.isfinite(recent_err[:, i])):
                continue
            probe = detect_cycle(recent_err[:, i], min_tail=self.every, tail_fraction=1.0,
                                 state_norm=recent_norm[:, i])
            w = max(self.base, math.ceil(8 * probe.period)) if probe.period else self.base
            if steps_per_sample[i] >= 2 * w:
                windows[local] = w
        if not windows:
            return []
        need = 2 * max(windows.values()) + 1  # only the history the longest window needs
        errs = np.stack(hist_err[-need:])
        norms = np.stack(hist_norm[-need:])
        times = np.stack(hist_t[-need:])
        left = self.max_steps - steps
        cyc, run = [], []
        for local, w in windows.items():
            i = int(rows_np[local])
            e, n, t = errs[-2 * w:, i], norms[-2 * w:, i], times[-2 * w - 1:, i]
            if not np.all(np.isfinite(e)):
                continue
            old = detect_cycle(e[:w], min_tail=self.every, tail_fraction=1.0, state_norm=n[:w])
            new = detect_cycle(e[w:], min_tail=self.every, tail_fraction=1.0, state_norm=n[w:])
            decay = float(e[w:].max() / max(e[:w].max(), np.finfo(float).tiny))
            if _runaway(old) and _runaway(new):
                if decay >= 1.0:
                    run.append(local)
                continue
            if not (old.is_cycle and new.is_cycle):
                continue
            same_floor = abs(new.floor - old.floor) <= 0.2 * max(old.floor, 1e-300)
            same_period = (old.period is None and new.period is None) or (
                old.period is not None and new.period is not None
                and abs(new.period - old.period) <= 0.2 * old.period)
            dt_old, dt_new = t[w] - t[0], t[-1] - t[w]
            same_time = abs(dt_new - dt_old) <= 0.1 * max(abs(dt_old), 1e-300) or dt_old == dt_new
            rate = decay ** (1.0 / w) if decay > 0 else 0.0
            reachable = rate < 1.0 and new.floor * rate ** max(left, 0) <= 1.0
            if same_floor and same_period and same_time and not reachable:
                cyc.append(local)
        out = []
        if cyc:
            out.append((Status.LIMIT_CYCLE, np.asarray(cyc, dtype=np.int64)))
        if run:
            out.append((Status.DIVERGED, np.asarray(run, dtype=np.int64)))
        return out


    def due_slow(self, steps: int) -> bool:
        return steps % self.every == 0 and steps >= self.base

    def too_slow(self, hist_err: list[np.ndarray], rows_np: np.ndarray, sub_code: np.ndarray,
                 steps_per_sample: np.ndarray, budget: np.ndarray) -> np.ndarray:
        """Running samples that converge, but too slowly to pass the test within their budget.

        The rate rho per step is measured over the last 4 min_tail steps; a sample with
        0 < rho < 1 whose projected steps ln(err) / -ln(rho) overrun its budget is listed (local
        indices). Samples not contracting over the window are left to the method's own logic.
        """
        recent = np.stack(hist_err[-self.base:])
        out = []
        for local, i in enumerate(rows_np.tolist()):
            if sub_code[local] != _RUNNING or steps_per_sample[i] < self.base:
                continue
            first, last = recent[0, i], recent[-1, i]
            if not (np.isfinite(first) and np.isfinite(last)) or last <= 1.0 or first <= 0:
                continue
            rho = (last / first) ** (1.0 / (self.base - 1))
            if not 0.0 < rho < 1.0:
                continue
            projected = math.log(last) / -math.log(rho)
            if steps_per_sample[i] + projected > budget[i]:
                out.append(local)
        return np.asarray(out, dtype=np.int64)


def _runaway(report: CycleReport) -> bool:
    return report.reason.startswith("state running away")


def _unoverflow(values: np.ndarray, tensors: tuple[Tensor | None, ...], dims: tuple[int, ...],
                disp: tuple[Displacement, CountedForce] | None = None) -> np.ndarray:
    """Recompute, without overflow, the norms (rows of `values`) that came out inf.

    Rare (entries near 1e19 in float32): one more host sync, only then. `tensors[k]` is the tensor
    whose norm is row k (None: not a norm); with `disp`, the last row is ||F / w|| of tensors[1].
    """
    values = values.copy()
    for k, x in enumerate(tensors):
        if x is not None and np.isinf(values[k]).any():
            values[k] = _host(safe_norm(x, dims)[None].to(torch.float64))[0]
    if disp is not None and np.isinf(values[-1]).any():
        d, view = disp
        leak = view.leak
        f = tensors[1]
        assert f is not None
        scaled = f / leak.to(device=f.device, dtype=f.real.dtype if f.is_complex() else f.dtype)
        values[-1] = _host(safe_norm(scaled, dims)[None].to(torch.float64))[0]
    return values


def _host(values: Tensor) -> np.ndarray:
    """A (k, batch) device tensor as float64 numpy rows (one transfer)."""
    return values.detach().to("cpu", torch.float64).numpy()


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


def _progress_bar(options: LoopOptions, name: str, total: int) -> Any:
    if not options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"settle[{name}]", leave=False)


__all__ = ["LoopOptions", "LOOP_OPTIONS", "run", "check_initial_state", "StepState"]
