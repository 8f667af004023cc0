"""What a settle returns: a named status per sample, residuals, counters and a trace.

A failure has a name, never a NaN (after diffrax's RESULTS): every sample ends in exactly
one `Status`, and the batch's `status` is the worst of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


class Status(enum.Enum):
    """How a settle ended. Ordered from best to worst by `severity`."""

    CONVERGED = "converged"
    """The displacement rms(F(z) / w) fell to atol + rtol rms(z) (the scale-aware test of
    `analogeq.integrators._convergence`; `tol` is rtol)."""
    MAX_STEPS = "max_steps"
    """The step budget ran out while the residual was still going down (or without a cycle)."""
    STALLED = "stalled"
    """The method could not make progress (a root-finder's best point stopped improving, or the
    residual sits at the precision floor of the dtype, above `tol`)."""
    LIMIT_CYCLE = "limit_cycle"
    """The residual tail floors above `tol` and oscillates: the state keeps moving on a cycle."""
    DIVERGED = "diverged"
    """The state or the force became non-finite, or the state exploded; `z` is the last finite
    state."""

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def __str__(self) -> str:  # print as `converged`, not `Status.CONVERGED`
        return self.value


_SEVERITY = {
    Status.CONVERGED: 0,
    Status.MAX_STEPS: 1,
    Status.STALLED: 2,
    Status.LIMIT_CYCLE: 3,
    Status.DIVERGED: 4,
}


@dataclass(frozen=True)
class CycleReport:
    """Shape of a residual tail, as judged by `detect_cycle`.

    Residuals are force residuals (dimensionless); `period` is in steps (entries of the trace).
    """

    is_cycle: bool
    floor: float
    """Median force residual over the tail."""
    amplitude: float
    """Half the peak-to-peak force residual over the tail (same units as `floor`)."""
    period: float | None
    """Dominant period of the tail oscillation in steps; None for a flat or monotone tail."""
    monotone: bool
    """True when the tail never changes direction (beyond float noise)."""
    decay: float
    """Envelope ratio max(second half) / max(first half) of the tail: ~1 on a floor, << 1 while
    still converging."""
    tail_length: int
    reason: str


@dataclass(frozen=True)
class Trace:
    """Per-step history of one settle. Entry 0 is the initial state; all tensors live on the CPU.

    * `residual`: (n+1,) largest force residual over the batch at each step (finished samples keep
      their final value).
    * `step_residual`: (n,) largest step residual ||z_{k+1} - z_k|| / ||z_k|| over the active
      samples (never use it to judge convergence, docs/physics.md section 2).
    * `step_size`: (n,) largest step size (time units) over the active samples; NaN for
      root-finders.
    * `time`: (n+1,) largest continuous time reached; None for root-finders.
    * `sample_residual`: (n+1, batch) force residual of every sample at every step.
    * `sample_time`: (n+1, batch) continuous time of every sample; None for root-finders.
    * `nfe`: (n+1,) cumulative force evaluations after each step (x-axis for comparing methods
      whose steps cost different numbers of evaluations).
    * `observed`: (n+1, batch) values of the settle's `observer` at every step, or None.
    * `sample_state_norm`: (n+1, batch) ||z|| of every sample at every step (a cycle is bounded,
      a runaway is not).
    * `sample_error`: (n+1, batch) scaled error delta / (atol + rtol rms(z)) of every sample at
      every step (the convergence test: converged iff <= 1; `analogeq.integrators._convergence`).
    """

    residual: Tensor
    step_residual: Tensor
    step_size: Tensor
    time: Tensor | None
    sample_residual: Tensor
    sample_time: Tensor | None
    nfe: Tensor
    observed: Tensor | None = None
    sample_state_norm: Tensor | None = None
    sample_error: Tensor | None = None


@dataclass(frozen=True)
class SettleResult:
    """Outcome of `settle`. Shapes: `z` like `z0`; per-sample tensors are (batch,)."""

    z: Tensor
    status: Status
    """The worst per-sample status (CONVERGED only if every sample converged)."""
    residual: Tensor
    """Force residual ||F(z)|| / ||z|| per sample, shape (batch,), real dtype of z."""
    nfe: int
    """Force evaluations: calls of the force on a (sub-)batch, including JVPs, Newton and
    controller probes. Per-sample counts are in `nfe_per_sample`."""
    steps: int
    """Iterations of the settle loop (accepted steps for stepping methods)."""
    t: Tensor | None
    """Continuous time reached per sample (batch,), in units of the force's time scale; None for
    root-finders, which have no time."""
    trace: Trace
    wall_time: float
    """Seconds of wall clock for the whole settle."""
    sample_status: tuple[Status, ...] = ()
    nfe_per_sample: Tensor | None = None
    steps_per_sample: Tensor | None = None
    cycles: tuple[CycleReport | None, ...] = ()
    """Per sample: the tail analysis for samples that did not converge (None for converged ones)."""
    method: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    """Method-specific figures (e.g. rejected steps, noise floor, eps fall-backs), and the test's
    `tol` (rtol), `atol` (per sample) and `rate_source` ("leak", "rate" or "measured")."""
    error: Tensor | None = None
    """Scaled error per sample (batch,), float64 on the CPU: delta / (atol + rtol rms(z)) at the
    returned state, the number the convergence test compares with 1 (`_convergence`)."""

    @property
    def converged(self) -> bool:
        return self.status is Status.CONVERGED

    def summary(self) -> str:
        """One line a person can read: method, status, worst residual, NFE, steps, time, wall."""
        worst = float(self.residual.max()) if self.residual.numel() else float("nan")
        t = "" if self.t is None else f" t={float(self.t.max()):.4g}"
        counts = {s: self.sample_status.count(s) for s in Status if s in self.sample_status}
        mix = ", ".join(f"{n} {s}" for s, n in counts.items()) if len(counts) > 1 else ""
        return (
            f"{self.method}: {self.status} (max force residual {worst:.3e}; nfe {self.nfe}; "
            f"steps {self.steps};{t} wall {self.wall_time:.3f}s)" + (f" [{mix}]" if mix else "")
        )


def worst_status(statuses: tuple[Status, ...]) -> Status:
    """The most severe status of a batch."""
    return max(statuses, key=lambda s: s.severity) if statuses else Status.CONVERGED


def to_cpu(t: Tensor) -> Tensor:
    """Detach and move to the CPU (one transfer at the end of a run, never inside the loop)."""
    return t.detach().to("cpu")


__all__ = ["Status", "CycleReport", "Trace", "SettleResult", "worst_status", "to_cpu"]
