"""AsymEP: equilibrium propagation with the asymmetry correction (docs/physics.md section 5).

    nudged:   dz/dt = F(z) - beta dL/dz(z) - 2 A (z - z0),     A = (J - J^T) / 2 at z0
    gradient: dL/dtheta ~= dL/dtheta|_z0 - delta^T dF/dtheta(z0)
    delta   = (z_{+beta} - z_{-beta}) / (2 beta)   (symmetric, default; bias O(beta^2))
            = (z_{+beta} - z0) / beta              (one-sided; bias O(beta))

With the correction the nudged Jacobian at z0 is J^T, so delta -> J^{-T} dL/dz = -lam exactly as
beta -> 0 for any asymmetry (Scurria et al. 2026, arXiv 2602.03670). `asym_correction=False` is
plain vector-field EP (delta -> J^{-1} dL/dz), kept for comparison: its error grows with the
antisymmetric part of J and vanishes for a conservative (symmetric-J) force.

Choosing beta. The nudge's relative size is s = beta ||dL/dz|| / ||z0|| (`info["nudge_scale"]`);
for the mean cross entropy over B T tokens ||dL/dz|| is small (~ 1 / sqrt(B T) per sample), so s is
much smaller than beta. The symmetric estimate's bias is O(s^2) (curvature), its rounding error
~ machine eps / s: in float64 beta 1e-3 is safe; in float32 pick beta so that s ~ 1e-3..1e-2
(the estimator warns when s is below the rounding floor). The one-sided estimate also absorbs the
free phase's residual as an O(residual / s) error: keep the free tolerance far below s.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..integrators import Integrator
from ._common import DEFAULT_GATE_RESIDUAL, check_bool, check_positive_float
from ._ep import _EquilibriumPropagation


class AsymEP(_EquilibriumPropagation):
    """Equilibrium propagation with the AsymEP correction; `gradients(model, tokens, targets)`.

    Args:
        beta: nudge strength (> 0), in units of the loss gradient (see the module docstring).
        symmetric: nudge with +beta and -beta (two nudged phases, O(beta^2) bias; default) or +beta
            only (one phase, O(beta) bias).
        asym_correction: the -2 A (z - z0) term (default True); False is plain vector-field EP.
        free_method, nudged_method, free_tol, nudged_rtol, free_max_steps, nudged_max_steps,
        free_options, nudged_options, gate_residual, extrapolate: see
            `analogeq.learning._ep._EquilibriumPropagation` (defaults: Anderson for both phases,
            free_tol 1e-10 (float64) / 1.2e-5 (float32), nudged_rtol 1e-3, gate 1e-3, extrapolate).

    Cost per estimate: the free phase, one recorded graph of F at z0, and per nudged evaluation one
    F, one dL/dz and (with the correction) one J v and one J^T v. Memory: that one graph, no
    unroll.

    `info` adds "beta", "symmetric" to the keys of `GradientResult`.
    """

    name = "asymep"

    def __init__(
        self,
        beta: float,
        symmetric: bool = True,
        asym_correction: bool = True,
        *,
        free_method: str | Integrator = "anderson",
        nudged_method: str | Integrator = "anderson",
        free_tol: float | None = None,
        nudged_rtol: float = 1e-3,
        free_max_steps: int | None = None,
        nudged_max_steps: int | None = None,
        free_options: dict[str, Any] | None = None,
        nudged_options: dict[str, Any] | None = None,
        gate_residual: float = DEFAULT_GATE_RESIDUAL,
        extrapolate: bool = True,
    ):
        self.beta = check_positive_float("beta", beta)
        self.symmetric = check_bool("symmetric", symmetric)
        super().__init__(
            asym_correction=asym_correction, free_method=free_method, nudged_method=nudged_method,
            free_tol=free_tol, nudged_rtol=nudged_rtol, free_max_steps=free_max_steps,
            nudged_max_steps=nudged_max_steps, free_options=free_options,
            nudged_options=nudged_options, gate_residual=gate_residual, extrapolate=extrapolate,
        )

    def nudges(self) -> list[float | complex]:
        b = self.beta
        return [b, -b] if self.symmetric else [b]  # type: ignore[list-item]

    def combine(self, z0: Tensor, states: list[Tensor]) -> Tensor:
        if self.symmetric:
            # z0 cancels: the free phase's own residual drops out at first order.
            return (states[0] - states[1]) / (2 * self.beta)
        return (states[0] - z0) / self.beta

    def describe(self) -> dict[str, Any]:
        return {"beta": self.beta, "symmetric": self.symmetric}

    def __repr__(self) -> str:
        return (
            f"AsymEP(beta={self.beta:g}, symmetric={self.symmetric}, "
            f"asym_correction={self.asym_correction})"
        )


__all__ = ["AsymEP"]
