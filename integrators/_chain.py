"""One result from two runs: a method's, and a second method's on some of its samples.

Used by the loop when a method's `fallback` takes over the samples it left stalled, cycling or
exploded, and by callers that continue a run with more budget. The second run started where the
first ended (its entry 0 is the first run's last state for those samples), shares its evaluation
counter (its NFE figures are cumulative already), and is appended step by step: the samples it
does not hold keep their final values in its entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._result import SettleResult, Trace, worst_status


def _append(a: Tensor | None, b: Tensor | None, rows: np.ndarray,
            cols: np.ndarray) -> Tensor | None:
    """(n1+1, batch) history `a` followed by entries 1.. of columns `cols` of the (n2+1, k)
    history `b`, written into columns `rows` (the other columns repeat their last value)."""
    if a is None or b is None:
        return None
    more = a[-1:].expand(b.shape[0] - 1, -1).clone()
    more[:, torch.from_numpy(rows)] = b[1:, torch.from_numpy(cols)].to(a.dtype)
    return torch.cat((a, more))


def _replace(a: Tensor, b: Tensor, rows: np.ndarray, cols: np.ndarray) -> Tensor:
    """`a` with rows `rows` set to rows `cols` of `b`."""
    index = torch.from_numpy(rows).to(a.device)
    part = b.index_select(0, torch.from_numpy(cols).to(b.device))
    return a.index_copy(0, index, part.to(device=a.device, dtype=a.dtype))


def chain(first: SettleResult, second: SettleResult, rows: np.ndarray, *,
          keep_worse: bool = True, shared_counter: bool = True) -> SettleResult:
    """`first`, with the samples `rows` (indices into its batch) continued by `second`.

    Statuses, residuals, states, tail reports and histories of those samples are the second
    run's; step counts add; NFE figures are the second run's (cumulative, shared counter). With
    `keep_worse=False`, a sample whose second status is more severe than its first keeps its
    first outcome and history (its work still counts in `nfe_per_sample` and
    `steps_per_sample`). `info["fallback"]` records the second method, the samples, their
    statuses before and after, which of them took the second outcome, and its own info.
    Continuous time is kept only when both runs have one.
    """
    cols = np.arange(rows.size)
    taken = np.asarray(
        [keep_worse or second.sample_status[k].severity <= first.sample_status[i].severity
         for k, i in zip(cols, rows.tolist(), strict=True)], dtype=bool)
    t_rows, t_cols = rows[taken], cols[taken]
    statuses = list(first.sample_status)
    cycles = list(first.cycles)
    for k, i in zip(t_cols.tolist(), t_rows.tolist(), strict=True):
        statuses[i] = second.sample_status[k]
        cycles[i] = second.cycles[k]
    ft, st = first.trace, second.trace
    has_time = first.t is not None and second.t is not None
    sample_residual = _append(ft.sample_residual, st.sample_residual, t_rows, t_cols)
    assert sample_residual is not None
    sample_time = _append(ft.sample_time, st.sample_time, t_rows, t_cols) if has_time else None
    trace = Trace(
        residual=sample_residual.max(dim=1).values,
        step_residual=torch.cat((ft.step_residual, st.step_residual)),
        step_size=torch.cat((ft.step_size, st.step_size)),
        time=sample_time.max(dim=1).values if sample_time is not None else None,
        sample_residual=sample_residual,
        sample_time=sample_time,
        nfe=torch.cat((ft.nfe, st.nfe[1:] + (0 if shared_counter else int(ft.nfe[-1])))),
        observed=_append(ft.observed, st.observed, t_rows, t_cols),
        sample_state_norm=_append(ft.sample_state_norm, st.sample_state_norm, t_rows, t_cols),
        sample_error=_append(ft.sample_error, st.sample_error, t_rows, t_cols),
    )
    steps_per_sample = first.steps_per_sample
    if steps_per_sample is not None and second.steps_per_sample is not None:
        index = torch.from_numpy(rows).to(steps_per_sample.device)
        steps_per_sample = steps_per_sample.index_add(
            0, index, second.steps_per_sample.to(steps_per_sample))
    nfe_per_sample = first.nfe_per_sample
    if nfe_per_sample is not None and second.nfe_per_sample is not None:
        if shared_counter:
            nfe_per_sample = _replace(nfe_per_sample, second.nfe_per_sample, rows, cols)
        else:
            nfe_per_sample = nfe_per_sample.index_add(
                0, torch.from_numpy(rows).to(nfe_per_sample.device),
                second.nfe_per_sample.to(nfe_per_sample))
    t = None
    if has_time:
        assert first.t is not None and second.t is not None
        index = torch.from_numpy(t_rows).to(first.t.device)
        later = first.t.index_select(0, index) + second.t.index_select(
            0, torch.from_numpy(t_cols).to(second.t.device)).to(first.t)
        t = first.t.index_copy(0, index, later)
    info: dict[str, Any] = dict(first.info)
    info["fallback"] = {
        "method": second.method,
        "samples": rows.tolist(),
        "statuses_before": [first.sample_status[i].value for i in rows.tolist()],
        "statuses_after": [s.value for s in second.sample_status],
        "taken": taken.tolist(),
        "steps": second.steps,
        "info": second.info,
    }
    error = first.error
    if error is not None and second.error is not None:
        error = _replace(error, second.error, t_rows, t_cols)
    return SettleResult(
        z=_replace(first.z, second.z, t_rows, t_cols),
        status=worst_status(tuple(statuses)),
        residual=_replace(first.residual, second.residual, t_rows, t_cols),
        nfe=second.nfe if shared_counter else first.nfe + second.nfe,
        steps=first.steps + second.steps,
        t=t,
        trace=trace,
        wall_time=first.wall_time + second.wall_time,
        sample_status=tuple(statuses),
        nfe_per_sample=nfe_per_sample,
        steps_per_sample=steps_per_sample,
        cycles=tuple(cycles),
        method=first.method,
        info=info,
        error=error,
    )


__all__ = ["chain"]
