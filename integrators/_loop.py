"""The one settle loop every method runs in: masking, residuals, statuses, trace, counters.

Per step: pick the still-running samples, hand the method their state and a force restricted to
them, judge the returned state on the *force* residual, and write it back. Converged, stalled and
diverged samples leave the active set at once and cost no more evaluations (STYLE.md, torchode).
Samples still running when the budget ends are classified from their own residual tail by
`detect_cycle`: LIMIT_CYCLE, MAX_STEPS, or STALLED at the dtype's precision floor.

Host syncs: one per step (finding the active rows needs their count on the host). Everything else
stays on the state's device; histories are moved to the CPU once, at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._base import PRECISION_FLOOR_EPS, Integrator, StepState, check_positive, check_range
from ._cycle import detect_cycle
from ._force import CountedForce, force_residual, step_residual
from ._result import CycleReport, SettleResult, Status, Trace, to_cpu, worst_status

_RUNNING = -1
_CODES = {s: i for i, s in enumerate(Status)}
_STATUSES = list(Status)


@dataclass(frozen=True)
class LoopOptions:
    """Options of the shared loop (any method). Validated on construction.

    * `tol`: force-residual tolerance (> 0).
    * `max_steps`: loop iterations (>= 1).
    * `blowup`: a sample whose ||z|| exceeds blowup * (||z0|| + ||F(z0)||) is DIVERGED.
    * `cycle_min_tail`: a residual tail shorter than 2 * cycle_min_tail is never called a cycle.
    * `progress`: show a tqdm bar with the residual.
    * `observer`: optional `observer(z, index) -> (k,)` recorded after every step in
      `trace.observed` (e.g. the power a circuit dissipates at z); `z` holds the samples `index`
      (a 1-D LongTensor into the batch, or None for the whole batch). Not counted as an NFE.
    """

    tol: float
    max_steps: int
    blowup: float = 1e6
    cycle_min_tail: int = 50
    progress: bool = False
    observer: Callable[[Tensor, Tensor | None], Tensor] | None = None

    def __post_init__(self) -> None:
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

    with torch.no_grad():
        f0 = counted(z0)
    state = method.init(counted, z0, f0)
    res = force_residual(state.z, state.f)
    real = res.dtype
    finite0 = torch.isfinite(state.f).flatten(1).all(1)
    scale = torch.linalg.vector_norm(z0, dim=dims) + torch.linalg.vector_norm(
        torch.nan_to_num(state.f), dim=dims
    )
    limit = options.blowup * scale.clamp_min(torch.finfo(real).tiny)

    code = torch.full((batch,), _RUNNING, dtype=torch.long, device=z0.device)
    code = torch.where(~finite0, _CODES[Status.DIVERGED], code)
    code = torch.where(finite0 & (res <= options.tol), _CODES[Status.CONVERGED], code)
    res = torch.where(finite0, res, torch.full_like(res, float("inf")))
    steps_per_sample = torch.zeros(batch, dtype=torch.long, device=z0.device)

    hist_res, hist_t, hist_nfe = [res], [state.t], [counted.calls]
    norm = torch.linalg.vector_norm(state.z, dim=dims).to(real)
    hist_norm = [norm]
    observe = options.observer
    hist_obs = [_observe(observe, state.z, None, batch)] if observe is not None else []
    nan = torch.full((), float("nan"), dtype=real, device=z0.device)
    hist_step_res: list[Tensor] = []
    hist_eps: list[Tensor] = []
    bar = _progress_bar(options, method.name)
    steps = 0
    for _ in range(options.max_steps):
        active = code == _RUNNING
        index = active.nonzero().squeeze(1)  # the one host sync per step
        if index.numel() == 0:
            break
        steps += 1
        whole = index.numel() == batch
        counted.refresh(state.z)
        view = counted if whole else counted.restrict(index)
        sub = state if whole else state.take(index)
        with torch.no_grad():
            new = method.step(view, sub)
        # Norms once: a non-finite entry makes its norm non-finite, so they double as the finiteness
        # check (zn <= limit is False for NaN and inf) without two more passes over the state.
        zn = torch.linalg.vector_norm(new.z, dim=dims)
        fn = torch.linalg.vector_norm(new.f, dim=dims)
        r = fn / zn.clamp_min(torch.finfo(real).tiny)
        ok = torch.isfinite(fn) & (zn <= limit[index]) & torch.isfinite(r)
        hist_step_res.append(torch.where(ok, step_residual(new.z, sub.z), 0).max())
        # The step actually taken (after any shrink or retry), not the next proposal in new.eps.
        hist_eps.append(torch.where(ok, new.t - sub.t, 0).max() if method.has_time else nan)
        state = state.merge(new, keep=~ok) if whole else state.put(index, new, keep=~ok)
        sub_code = torch.where(~ok, _CODES[Status.DIVERGED], _RUNNING)
        sub_code = torch.where(ok & new.stalled, _CODES[Status.STALLED], sub_code)
        done = ok & ((r <= options.tol) | new.settled)
        sub_code = torch.where(done, _CODES[Status.CONVERGED], sub_code)
        if whole:
            code, res = sub_code, torch.where(ok, r, res)
            steps_per_sample = steps_per_sample + 1
        else:
            code = code.index_copy(0, index, sub_code)
            res = res.index_copy(0, index, torch.where(ok, r, res[index]))
            steps_per_sample = steps_per_sample.index_add(0, index, torch.ones_like(index))
        hist_res.append(res)
        hist_t.append(state.t)
        norm = (
            torch.where(ok, zn, norm)
            if whole
            else norm.index_copy(0, index, torch.where(ok, zn, norm[index]))
        )
        hist_norm.append(norm)
        hist_nfe.append(counted.calls)
        if observe is not None:
            seen = _observe(observe, new.z, None if whole else index, index.numel())
            last = hist_obs[-1]
            hist_obs.append(
                torch.where(ok, seen, last)
                if whole
                else last.index_copy(0, index, torch.where(ok, seen, last[index]))
            )
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"residual {float(res.max()):.2e} active {index.numel()}")
    if bar is not None:
        bar.close()

    sample_res = to_cpu(torch.stack(hist_res)).to(torch.float64)
    sample_norm = to_cpu(torch.stack(hist_norm)).to(torch.float64)
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
    info["tol"] = options.tol
    trace = Trace(
        residual=sample_res.max(dim=1).values,
        step_residual=to_cpu(torch.stack(hist_step_res)).double()
        if hist_step_res
        else torch.zeros(0),
        step_size=to_cpu(torch.stack(hist_eps)).double() if hist_eps else torch.zeros(0),
        time=to_cpu(torch.stack(hist_t)).double().max(dim=1).values if method.has_time else None,
        sample_residual=sample_res,
        sample_time=to_cpu(torch.stack(hist_t)).double() if method.has_time else None,
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
        steps_per_sample=steps_per_sample,
        cycles=tuple(cycles),
        method=method.name,
        info=info,
    )


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
