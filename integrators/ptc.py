"""Pseudo-transient continuation: backward Euler whose step grows as the force falls.

Newton's method finds roots fast but, far from one, may run anywhere; the continuous flow
dz/dt = F(z) reaches a stable root from anywhere in its basin but slowly. Pseudo-transient
continuation (Kelley & Keyes 1998, "Convergence analysis of pseudo-transient continuation") is the
globalisation that joins them: backward Euler steps z_{n+1} = z_n + eps_n F(z_{n+1}) (Newton-Krylov
per step, `ImplicitEuler`) with the step chosen by *switched evolution relaxation* (SER, Mulder &
van Leer 1985)

    eps_{n+1} = eps_n * ||F(z_n)|| / ||F(z_{n+1})||     (the ratio clamped to [1/2, 4])

so that eps stays small, and the iteration follows the flow, while the force does not fall, and
grows towards Newton (eps -> inf) as the root comes near: quadratic convergence at the end.
Backward Euler damps every mode with Re mu < 0 for every eps > 0, so the iteration cannot run away
from a stable root the way an explicit or extrapolating one can (a rotation-dominated Jacobian,
|Im mu| >> |Re mu|, is where Anderson's secant model and explicit Picard steps fail). It is the
fallback of the default `Anderson` (`Anderson(fallback="ptc")`).

Like every implicit step with a large eps it also converges to *unstable* roots (|1 - eps mu| > 1
for Re mu > 0 once eps > 2 Re mu / |mu|^2): `converged` means a root, not a stable one; the probes
decide that.

Steps are relative to the force's rate scale w (`CountedForce.rate`: its leak, the `rate` option,
or a measured secant): eps starts at `eps / w` and is capped at `eps_max / w`, so scaling F changes
nothing. Failed Newton solves halve eps (`ImplicitEuler`); below `eps / (1024 w)` the sample
stalls.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import StepState, check_positive
from ._force import CountedForce
from .implicit import ImplicitEuler

# Largest change of eps per step: SER's ratio is clamped to [1 / _SHRINK, _GROW].
_GROW = 4.0
_SHRINK = 2.0


class PseudoTransient(ImplicitEuler):
    """Pseudo-transient continuation (module docstring): backward Euler, eps by SER.

    Args:
        eps: first step, in units of 1 / rate (> 0; default 1: one relaxation time).
        eps_max: largest step, in units of 1 / rate (>= eps; default 1e6: Newton in all but name).
        **newton: `ImplicitEuler`'s Newton-Krylov settings (newton_tol, max_newton, forcing,
            krylov_restart, krylov_max_iter, jvp).
    """

    name = "ptc"
    default_max_steps = 500

    def __init__(
        self,
        eps: float = 1.0,
        eps_max: float = 1e6,
        *,
        newton_tol: float = 1e-6,
        max_newton: int = 10,
        forcing: str | float = "eisenstat-walker",
        krylov_restart: int = 20,
        krylov_max_iter: int | None = None,
        jvp: str = "forward",
    ):
        super().__init__(
            eps, newton_tol=newton_tol, max_newton=max_newton, forcing=forcing,
            krylov_restart=krylov_restart, krylov_max_iter=krylov_max_iter, jvp=jvp,
        )
        self.eps_max = check_positive("eps_max", eps_max)
        if self.eps_max < self.eps:
            raise ValueError(f"eps_max must be >= eps = {self.eps}, got {eps_max}")

    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        state = super().init(force, z0, f0)
        unit = 1.0 / force.rate.to(device=z0.device, dtype=state.eps.dtype)
        state = state.replace(eps=self.eps * unit)
        state.extra["eps_min"] = state.eps.clone()
        state.extra["eps_floor"] = state.eps / 1024
        state.extra["eps_cap"] = self.eps_max * unit
        return state

    def _next_eps(self, state: StepState, f_new: Tensor, eps_done: Tensor,
                  accepted: Tensor) -> Tensor:
        """SER: eps times ||F(z_n)|| / ||F(z_{n+1})||, clamped, capped at eps_max / rate."""
        dims = tuple(range(1, f_new.ndim))
        old = torch.linalg.vector_norm(state.f, dim=dims)
        new = torch.linalg.vector_norm(f_new, dim=dims)
        ratio = old / new.clamp_min(torch.finfo(new.dtype).tiny)
        ratio = torch.nan_to_num(ratio, nan=1.0, posinf=_GROW).clamp(1.0 / _SHRINK, _GROW)
        return torch.minimum(eps_done * ratio.to(eps_done.dtype), state.extra["eps_cap"])

    def __repr__(self) -> str:
        return f"PseudoTransient(eps={self.eps!r}, eps_max={self.eps_max!r})"


__all__ = ["PseudoTransient"]
