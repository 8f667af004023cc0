"""IMEX Euler: the linear leak implicit, the nonlinearity explicit (docs/physics.md section 4).

For F(z) = -leak * z + N(z):  z_{n+1} = (z_n + eps N(z_n)) / (1 + eps leak).
The leak's stiffness no longer limits eps: for a pure leak the map contracts for every eps > 0, so
large steps are allowed. The nonlinear part is still explicit, so a stiff or rotating N can still
make the map unstable; the fixed point is the same as F's (N(z*) = leak z*).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import Integrator, StepState, check_positive
from ._force import CountedForce


def leak_tensor(force: CountedForce, like: Tensor) -> Tensor | float:
    """The force's leak, as a float or a tensor on `like`'s device and dtype."""
    leak = force.leak
    if isinstance(leak, Tensor):
        return leak.to(device=like.device, dtype=like.dtype)
    return float(leak)


class IMEXEuler(Integrator):
    """Semi-implicit Euler on the leak/nonlinear split. One N evaluation per step.

    Args:
        eps: step size in time units (> 0); values far above Euler's eps_crit of the leak are fine.
    """

    name = "imex"
    default_max_steps = 2000
    needs_split = True

    def __init__(self, eps: float = 0.5):
        self.eps = check_positive("eps", eps)

    def step(self, force: CountedForce, state: StepState) -> StepState:
        leak = leak_tensor(force, state.z)
        eps = state.eps.view(-1, *([1] * (state.z.ndim - 1))).to(state.z.dtype)
        # (z + eps N(z)) / (1 + eps leak) with N(z) = F(z) + leak z is identically z + h F(z),
        # h = eps / (1 + eps leak): one pass over the state, from the F the loop already holds
        # (no extra evaluation), and no cancellation in z + eps N for large eps.
        z = torch.addcmul(state.z, eps / (1 + eps * leak), state.f)
        return state.replace(z=z, f=force(z), t=state.t + state.eps)
