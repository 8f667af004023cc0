"""Explicit Euler: z <- z + eps F(z). The digital baseline of docs/physics.md section 1 (eps 0.1).

Stable for an eigenvalue mu of J iff |1 + eps mu| < 1: a stiff rotating mode cycles under Euler
even where the continuous dynamics settle (a discretization artifact, docs/physics.md section 3).
"""

from __future__ import annotations

import torch

from ._base import Integrator, StepState, check_positive
from ._force import CountedForce


class ExplicitEuler(Integrator):
    """Fixed-step forward Euler. One force evaluation per step.

    Args:
        eps: step size in time units of the force (> 0). Default 0.1, the digital baseline of
        docs/physics.md section 1.
    """

    name = "euler"
    default_max_steps = 2000

    def __init__(self, eps: float = 0.1):
        self.eps = check_positive("eps", eps)

    def step(self, force: CountedForce, state: StepState) -> StepState:
        eps = state.eps.view(-1, *([1] * (state.z.ndim - 1))).to(state.z.dtype)
        z = torch.addcmul(state.z, eps, state.f)  # one pass, one fresh tensor
        return state.replace(z=z, f=force(z), t=state.t + state.eps)
