"""Holomorphic equilibrium propagation (Laborieux & Zenke 2022), on the block's vector field.

Nudge with N complex strengths on a circle, beta_k = r w^k, w = exp(2 pi i / N), and read the
derivative of the nudged fixed point z(beta) off Cauchy's integral formula, discretised:

    delta = (1 / (N r)) sum_k (z_{beta_k} - z0) w^{-k} = z'(0) + r^N z^{(N+1)}(0) / (N+1)! + ...

exact up to O(r^N) aliasing at a *finite* radius, so r can be large enough to beat rounding and
noise (earlier work, docs/physics.md section 5: a radius of 0.02 was about ten times too small, 0.2
good). It needs z(beta) analytic: the force, the loss and its gradient are evaluated in their
holomorphic (complex) extensions (tanh-GELU, conjugation-free norms and softmax: analogeq._layers).

Conjugate symmetry. The force and the loss are real on real states, so
z_{conj(beta)} = conj(z_beta): the phases k and N - k are conjugate and delta is real,
    delta = (1/(N r)) [ (z_r - z0) - [N even] (z_{-r} - z0)
                        + 2 sum_{0<k<N/2} Re((z_k - z0) w^{-k}) ].
Only k = 0 .. floor(N/2) are settled: k = 0 (beta = r) and k = N/2 (beta = -r) are real settles,
the others complex. N = 2 is exactly symmetric EP with beta = r.

The asymmetry correction. The original method assumes an energy (symmetric J); on a
non-conservative vector field the nudged fixed point satisfies z'(0) = J^{-1} l, not J^{-T} l, and
no choice of r or N removes that bias. With `asym_correction=True` (default) the nudged force
carries AsymEP's -2 A (z - z0), A real at z0 extended complex-linearly to complex z: F_beta stays
holomorphic in (z, beta), its Jacobian at z0 is J^T, and z'(0) = J^{-T} l exactly: the combination
is exact up to O(r^N) for any asymmetry. tests/test_learning.py checks both against a dense adjoint.
"""

from __future__ import annotations

import cmath
import math
from typing import Any

import torch
from torch import Tensor

from ..integrators import Integrator
from ._common import DEFAULT_GATE_RESIDUAL, check_int, check_positive_float
from ._ep import _EquilibriumPropagation


class HolomorphicEP(_EquilibriumPropagation):
    """Holomorphic EP with N nudges on a circle of radius r; `gradients(model, tokens, targets)`.

    Args:
        radius: r > 0, in the units of beta (see `AsymEP`); exact up to O(r^N).
        points: N >= 2 nudges (floor(N/2) + 1 settles by conjugate symmetry; 2 of them real).
        asym_correction: add AsymEP's -2 A (z - z0) (default True; False reproduces the original
            method, biased for a non-symmetric J).
        free_method, nudged_method, ...: as for `AsymEP`. The nudged method must handle complex
            states (Anderson, Euler, IMEX, implicit and adaptive Euler do).

    The model must be float32 or float64 (complex64 / complex128 nudged states) and its force and
    loss must accept complex states (`EquilibriumTransformer` does).

    `info` adds "radius", "points", "betas" (the settled nudges) to the keys of `GradientResult`.
    """

    name = "holomorphic"

    def __init__(
        self,
        radius: float,
        points: int = 4,
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
        self.radius = check_positive_float("radius", radius)
        self.points = check_int("points", points, 2)
        super().__init__(
            asym_correction=asym_correction, free_method=free_method, nudged_method=nudged_method,
            free_tol=free_tol, nudged_rtol=nudged_rtol, free_max_steps=free_max_steps,
            nudged_max_steps=nudged_max_steps, free_options=free_options,
            nudged_options=nudged_options, gate_residual=gate_residual, extrapolate=extrapolate,
        )

    def nudges(self) -> list[float | complex]:
        r, n = self.radius, self.points
        out: list[float | complex] = []
        for k in range(n // 2 + 1):
            if k == 0:
                out.append(r)  # type: ignore[arg-type]
            elif 2 * k == n:
                out.append(-r)  # type: ignore[arg-type]
            else:
                w = r * cmath.exp(2j * math.pi * k / n)
                # Exact zeros where the circle crosses an axis (k = N/4: beta = i r), not 1e-17.
                re = 0.0 if abs(w.real) < 1e-14 * r else w.real
                im = 0.0 if abs(w.imag) < 1e-14 * r else w.imag
                out.append(complex(re, im))
        return out

    def combine(self, z0: Tensor, states: list[Tensor]) -> Tensor:
        r, n = self.radius, self.points
        acc = torch.zeros_like(z0)
        for k, zk in enumerate(states):
            dz = zk - (z0 if not zk.is_complex() else z0.to(zk.dtype))
            if k == 0:
                acc = acc + dz
            elif 2 * k == n:
                acc = acc - dz  # w^{-N/2} = -1
            else:
                acc = acc + 2 * (dz * cmath.exp(-2j * math.pi * k / n)).real
        return acc / (n * r)

    def describe(self) -> dict[str, Any]:
        return {"radius": self.radius, "points": self.points, "betas": tuple(self.nudges())}

    def __repr__(self) -> str:
        return (
            f"HolomorphicEP(radius={self.radius:g}, points={self.points}, "
            f"asym_correction={self.asym_correction})"
        )


__all__ = ["HolomorphicEP"]
