"""What every gradient estimator shares: the result type, the free phase, the validity gate and the
contraction of a state-space vector with dF/dtheta.

The equilibrium gradient (docs/physics.md section 5). At a fixed point F(z*, theta) = 0 of the
block, dz*/dtheta = -J^{-1} dF/dtheta (J = dF/dz at z*), so for a loss L(z*, theta)

    dL/dtheta = dL/dtheta|_z  +  lam^T dF/dtheta(z*),        J^T lam = -dL/dz(z*).

The first term is direct: only the readout (`head`, `ln_out`) enters L itself. The second is one
vector-Jacobian product of the force with respect to the parameters at fixed z*: autograd of
(F(z*) * lam).sum(). Every parameter the force touches gets its share, including the embedding
tables (`embed`, `pos`), which enter through the input drive x_in. Estimators differ only in how
they obtain lam: the implicit adjoint solves for it, equilibrium propagation reads it off a nudged
relaxation (lam ~= -(z_beta - z*) / beta), BPTT does not use it at all. `assemble_gradients` turns
any lam into the full gradient, so the estimators cannot drift apart in that step.

The model protocol the estimators rely on (an `EquilibriumTransformer` satisfies it; a test may pass
any module that does):
* `model.force(inputs)` -> a force F(z) on states (batch, ...) with the `leak`/`nonlinear` split and
  (optionally) `select(index)`; F must be differentiable in z and in the parameters;
* `model.initial_state(force, z0)` -> the settle's start (optional: without it z0 must be given);
* `model.loss(z, targets)` -> a scalar that is a sum of per-sample terms divided by a constant
  (a mean cross entropy), so that dL/dz of one sample depends on that sample's state only;
* `model.named_parameters()`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..integrators import Integrator, SettleResult, Status, settle
from ..integrators.settle import make_method

# Default validity gate (docs/physics.md sections 5 and 6): an estimate is trusted only at a
# stationary state; 1e-3 is the free-phase residual target the adaptive Jacobian penalty steers
# towards.
DEFAULT_GATE_RESIDUAL = 1e-3


# ------------------------------------------------------------------------------------------------
# argument checks


def check_positive_float(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A finite real number > 0 (or None when allowed), else a TypeError/ValueError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite real number > 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite real number > 0, got {value}")
    return float(value)


def check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__}")
    return value


def check_max_steps(name: str, value: Any) -> int | None:
    """None (the method's default) or an integer >= 1."""
    if value is None:
        return None
    return check_int(name, value, 1)


def check_options(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict of settle options or None, got {type(value).__name__}"
        )
    return dict(value)


def resolve_method(
    name: str, method: str | Integrator, options: dict[str, Any]
) -> tuple[Integrator, dict[str, Any]]:
    """Validate a phase's method and options now (not after an expensive free phase).

    Returns the integrator instance and the options left for the settle loop.
    """
    try:
        return make_method(method, options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def check_batch(inputs: Any, targets: Any) -> None:
    """Shape agreement of inputs (batch, T[, features]) and targets (batch, T) or (batch,).

    Values (class ids in range, not all ignored) are checked by `model.loss` at the free state,
    before any nudged or adjoint phase runs.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"tokens must be a torch.Tensor (batch, T), got {type(inputs).__name__}")
    if not isinstance(targets, Tensor):
        raise TypeError(
            f"targets must be an int64 tensor (batch, T) or (batch,), got {type(targets).__name__}"
        )
    if inputs.ndim < 2:
        raise ValueError(f"tokens must have shape (batch, T), got {tuple(inputs.shape)}")
    B, T = inputs.shape[:2]
    if tuple(targets.shape) not in ((B, T), (B,)):
        raise ValueError(
            f"targets must have shape (batch, T) = {(B, T)} or (batch,) = {(B,)} to match tokens "
            f"{tuple(inputs.shape)}, got {tuple(targets.shape)}"
        )


def default_tol(dtype: torch.dtype, tight: float) -> float:
    """`tight` where the dtype allows it, else 100 machine epsilons (float32: 1.2e-5)."""
    real = torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype
    return max(tight, 100.0 * torch.finfo(real).eps)


def trainable_parameters(model: torch.nn.Module) -> dict[str, Tensor]:
    """{name: parameter} for every parameter with requires_grad, in `named_parameters` order."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    return params


# ------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class PhaseInfo:
    """One relaxation (or solve) of an estimator.

    * `name`: "free", "nudged" (with `beta`), "adjoint", "unroll".
    * `beta`: the nudge (float or complex) of a nudged phase, else None.
    * `method`: the integrator (or "gmres").
    * `status`, `sample_status`: worst and per-sample `Status`.
    * `residual`: (batch,) force residual ||F(z)|| / ||z|| of the phase's own force at its end
      (the nudged force for a nudged phase; the relative linear residual for the adjoint).
    * `nfe`: evaluations of the phase's force (a nudged evaluation is one F, one dL/dz and, with
      the AsymEP correction, one J v and one J^T v); `jvp`, `vjp`: linearization products at z0
      (a complex vector counts two, its real and imaginary parts).
    * `steps`, `wall` (seconds), `tol` (the phase's stopping tolerance: a number, or a (batch,)
      tensor of per-sample tolerances).
    """

    name: str
    method: str
    status: Status
    sample_status: tuple[Status, ...]
    residual: Tensor
    nfe: int
    steps: int
    wall: float
    tol: float | Tensor | None = None
    beta: float | complex | None = None
    jvp: int = 0
    vjp: int = 0

    @property
    def converged(self) -> bool:
        return self.status is Status.CONVERGED

    @classmethod
    def from_settle(
        cls, name: str, result: SettleResult, tol: float | Tensor,
        beta: float | complex | None = None, jvp: int = 0, vjp: int = 0,
    ) -> PhaseInfo:
        return cls(
            name=name, method=result.method, status=result.status,
            sample_status=tuple(result.sample_status) or (result.status,),
            residual=result.residual.detach(), nfe=result.nfe, steps=result.steps,
            wall=result.wall_time, tol=tol, beta=beta, jvp=jvp, vjp=vjp,
        )

    def summary(self) -> str:
        worst = float(self.residual.max()) if self.residual.numel() else float("nan")
        b = "" if self.beta is None else f" beta={self.beta:.3g}"
        lin = f" jvp {self.jvp} vjp {self.vjp};" if self.jvp or self.vjp else ""
        return (
            f"{self.name}{b} [{self.method}]: {self.status} (max residual {worst:.2e}, tol "
            f"{_format_tol(self.tol)}; nfe {self.nfe};{lin} steps {self.steps}; wall "
            f"{self.wall:.3f}s)"
        )


def _format_tol(tol: float | Tensor | None) -> str:
    """'1.0e-06', or 'min..max' of a per-sample tolerance."""
    if tol is None:
        return "None"
    if isinstance(tol, Tensor):
        if tol.numel() == 0:
            return "-"
        lo, hi = float(tol.min()), float(tol.max())
        return f"{lo:.1e}" if lo == hi else f"{lo:.1e}..{hi:.1e}"
    return f"{tol:.1e}"


@dataclass(frozen=True)
class GradientResult:
    """Gradients keyed like `model.named_parameters()` (every trainable parameter, readout included)
    plus diagnostics.

    `info` keys shared by every estimator:
    * "estimator" (str), "valid" (bool), "reason" (str, empty when valid), "valid_samples" ((batch,)
      bool: samples whose phases all converged and whose free residual is under the gate);
    * "loss" (float): the loss at the state the gradient refers to (z* or the unrolled z_T);
    * "phases" (tuple of `PhaseInfo`), "free" (the free `PhaseInfo`, None for BPTT);
    * "nfe" (dict phase name -> force evaluations), "wall" (dict phase -> seconds, with "total",
      the wall of this call: a free phase handed over with `free=` keeps its own nfe and wall in
      its entry but is not part of "total");
    * "adjoint" ((batch, ...) tensor): the adjoint lam the gradient was assembled from (for EP the
      estimate -delta; absent for BPTT).
    Estimator-specific keys are listed on each estimator.
    """

    grads: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """False when the trainer should skip this update (see info["reason"])."""
        return bool(self.info.get("valid", True))

    def summary(self) -> str:
        head = f"{self.info.get('estimator', 'gradient')}: " + (
            "valid" if self.valid else f"INVALID ({self.info.get('reason', '')})"
        )
        lines = [head + f"; loss {self.info.get('loss', float('nan')):.4g}"]
        lines += ["  " + p.summary() for p in self.info.get("phases", ())]
        return "\n".join(lines)


class Estimator:
    """Base class: `gradients(model, tokens, targets) -> GradientResult`."""

    name: ClassVar[str] = "estimator"

    def gradients(
        self, model: torch.nn.Module, tokens: Tensor, targets: Tensor, **kwargs: Any
    ) -> GradientResult:
        raise NotImplementedError

    def __call__(self, model: torch.nn.Module, tokens: Tensor, targets: Tensor, **kwargs: Any):
        return self.gradients(model, tokens, targets, **kwargs)


# ------------------------------------------------------------------------------------------------
# free phase and gate


def free_phase(
    model: Any,
    inputs: Tensor,
    method: Integrator,
    loop_options: dict[str, Any],
    tol: float | None,
    max_steps: int | None,
    free: SettleResult | None,
    z0: Tensor | str | None,
) -> tuple[Any, SettleResult, PhaseInfo]:
    """Bind the force to `inputs` and settle it (or reuse the caller's settle `free`).

    Returns (force, result, info). The tolerance default is dtype-aware (`default_tol(dtype,
    1e-10)`: 1e-10 in float64, 1.2e-5 in float32): every estimator is exact only at a stationary
    state.
    """
    force = model.force(inputs)
    if free is not None:
        if not isinstance(free, SettleResult):
            raise TypeError(f"free must be a SettleResult or None, got {type(free).__name__}")
        zf = free.z
        if hasattr(force, "shape") and tuple(zf.shape) != tuple(force.shape):
            raise ValueError(
                f"free.z has shape {tuple(zf.shape)}, but the force on these tokens has states of "
                f"shape {tuple(force.shape)}"
            )
        if zf.is_complex():
            raise TypeError("free.z must be a real state (the free phase is real)")
        tol = free.info.get("tol", math.nan)
        tol = tol if isinstance(tol, Tensor) else float(tol)
        return force, free, PhaseInfo.from_settle("free", free, tol)
    if hasattr(model, "initial_state"):
        start = model.initial_state(force, z0)
    elif isinstance(z0, Tensor):
        start = z0
    else:
        raise TypeError("model has no initial_state(force, z0): pass z0 as a tensor")
    start = start.detach()
    if tol is None:
        tol = default_tol(start.dtype, 1e-10)
    result = settle(force, start, method, tol=tol, max_steps=max_steps, **loop_options)
    return force, result, PhaseInfo.from_settle("free", result, tol)


def gate(
    free: PhaseInfo, others: list[PhaseInfo], gate_residual: float
) -> tuple[bool, str, Tensor]:
    """The validity gate (docs/physics.md section 5: AsymEP is exact only at a stationary state).

    Valid when the free phase CONVERGED with every sample's force residual <= `gate_residual`, and
    every later phase (nudged relaxations, adjoint solve) converged too. Returns (valid, reason,
    valid_samples (batch,) bool). One host sync.
    """
    res = free.residual
    converged = torch.tensor(
        [s is Status.CONVERGED for s in free.sample_status], device=res.device
    )
    ok = converged & (res <= gate_residual)
    reasons = []
    if free.status is not Status.CONVERGED:
        reasons.append(f"free phase {free.status}")
    worst = float(res.max())
    if not worst <= gate_residual:  # also catches NaN
        reasons.append(f"free force residual {worst:.2e} > gate {gate_residual:.1e}")
    for p in others:
        ok = ok & torch.tensor(
            [s is Status.CONVERGED for s in p.sample_status], device=res.device
        )
        if p.status is not Status.CONVERGED:
            b = "" if p.beta is None else f" (beta {p.beta:.3g})"
            reasons.append(f"{p.name} phase{b} {p.status}")
    return not reasons, "; ".join(reasons), ok


# ------------------------------------------------------------------------------------------------
# assembly


def loss_and_grad_z(model: Any, z: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(L(z), dL/dz) at a real state z (batch, ...); no graph kept. Validates the targets."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        loss = model.loss(zz, targets)
        (g,) = torch.autograd.grad(loss, zz)
    return loss.detach(), g


def assemble_gradients(
    model: Any,
    force: Any,
    z: Tensor,
    targets: Tensor,
    lam: Tensor | None,
    params: dict[str, Tensor],
    f_z: Tensor | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """dL/dtheta = dL/dtheta|_z + lam^T dF/dtheta(z), every parameter, in one backward pass.

    Args:
        z: the (real) state the gradient refers to, (batch, ...); no gradient flows through it.
        lam: the adjoint (batch, ...) (exact, or an EP estimate), or None for the direct term only.
        params: {name: parameter} to differentiate (`trainable_parameters(model)`).
        f_z: F(z) already evaluated with its autograd graph to the parameters (e.g. a
            `Linearization`'s `out`), to save the forward pass; None evaluates it here.

    Returns:
        ({name: gradient shaped like the parameter}, loss at z (0-d tensor)).
    """
    z = z.detach()
    with torch.enable_grad():
        loss = model.loss(z, targets)
        total = loss
        if lam is not None:
            # x_in is recomputed from the embeddings inside F: embed/pos get their share here.
            f = force(z) if f_z is None else f_z
            total = total + (f * lam.detach()).sum()
        grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    out = {
        name: torch.zeros_like(p) if g is None else g
        for (name, p), g in zip(params.items(), grads, strict=True)
    }
    return out, loss.detach()


def finish_info(info: dict[str, Any], phases: list[PhaseInfo], wall0: float) -> dict[str, Any]:
    """Fill the shared bookkeeping keys ("phases", "nfe", "wall") from the phases run."""
    info["phases"] = tuple(phases)
    nfe: dict[str, int] = {}
    wall: dict[str, float] = {}
    for p in phases:
        key = p.name if p.beta is None else f"{p.name}({p.beta:.3g})"
        nfe[key] = p.nfe
        wall[key] = p.wall
    info["nfe"] = nfe
    wall["total"] = time.perf_counter() - wall0
    info["wall"] = wall
    return info


__all__ = [
    "GradientResult",
    "PhaseInfo",
    "Estimator",
    "DEFAULT_GATE_RESIDUAL",
    "trainable_parameters",
    "assemble_gradients",
    "loss_and_grad_z",
    "free_phase",
    "gate",
    "default_tol",
]
