"""Backpropagation through the finite relaxation the user deploys (docs/physics.md sections 1 and
5).

The deployed digital block is not the equilibrium: it is z_T, T fixed explicit steps from the
settle's start (docs/physics.md section 1: Euler, eps = 0.1, about 150 steps). BPTT differentiates
L(z_T(theta)) through that unroll with autograd. It therefore differs from the equilibrium gradient
in two ways:

* when z_T is not yet at z* (slow contraction, a cycle), it is the gradient of what is deployed,
  where the equilibrium gradient refers to a state that is never reached;
* even when z_T ~= z*, dz_T/dtheta = sum_t M^{T-1-t} eps dF/dtheta (M = I + eps J the step map)
  equals the equilibrium's -J^{-1} dF/dtheta only up to the truncated tail M^T J^{-1} dF/dtheta,
  and z_T's dependence on theta also carries the transient: through it BPTT sees (and rewards) how
  fast the relaxation contracts, a term that defends contraction and that the equilibrium gradient
  does not see (docs/physics.md section 5). On a fast-contracting block the two agree closely.

The start. Like `model.settle`, the unroll starts at `model.initial_state(force, z0)`, by default
x_in / (1 + c). That start depends on the embeddings, so BPTT differentiates through it as well (the
deployed z_T does depend on theta through it); a "zeros" or user-given start is a constant.

Memory grows linearly with T (one autograd graph of the block per step): the price EP avoids.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from ..integrators import CountedForce, ExplicitEuler, IMEXEuler, Integrator, Status, force_residual
from ..integrators.settle import make_method
from ._common import (
    DEFAULT_GATE_RESIDUAL,
    Estimator,
    GradientResult,
    PhaseInfo,
    check_batch,
    check_int,
    check_positive_float,
    finish_info,
    trainable_parameters,
)

# Fixed-step explicit methods: their unrolled step is differentiable as written and has no
# data-dependent control flow (adaptive and root-finding methods decide on host-side tests).
_UNROLLABLE = (ExplicitEuler, IMEXEuler)


class BPTT(Estimator):
    """Gradient of L(z_T) through `steps` fixed steps of `method` from the deployed start.

    Args:
        steps: T >= 1 (docs/physics.md section 1: about 150).
        method: "euler" / "imex" or an `ExplicitEuler` / `IMEXEuler` instance (default
            ExplicitEuler(eps=0.1)).
        gate_residual: z_T's force residual above which the unroll phase is reported as not
            converged (> 0). Diagnostic only: BPTT's gradient is exact for the deployed z_T
            whether or not z_T is a fixed point, so `valid` only requires finite values.

    `info` adds "steps", "residual" ((batch,) force residual at z_T) to the keys of
    `GradientResult`; the "unroll" phase counts T + 1 force evaluations.
    """

    name = "bptt"

    def __init__(
        self,
        steps: int = 150,
        method: str | Integrator | None = None,
        *,
        gate_residual: float = DEFAULT_GATE_RESIDUAL,
    ):
        self.steps = check_int("steps", steps, 1)
        if method is None:
            method = ExplicitEuler(eps=0.1)
        if isinstance(method, str):
            method = make_method(method, {})[0]
        if not isinstance(method, _UNROLLABLE):
            raise TypeError(
                "method must be 'euler', 'imex' or an ExplicitEuler / IMEXEuler instance (a "
                f"fixed-step unroll), got {method!r}"
            )
        self.method = method
        self.gate_residual = check_positive_float("gate_residual", gate_residual)

    def gradients(
        self,
        model: Any,
        tokens: Tensor,
        targets: Tensor,
        *,
        z0: Tensor | str | None = None,
    ) -> GradientResult:
        """dL(z_T)/dtheta by autograd through the unroll; z0: the start (`model.initial_state`)."""
        wall0 = time.perf_counter()
        check_batch(tokens, targets)
        params = trainable_parameters(model)
        force = model.force(tokens)
        with torch.enable_grad():
            if (z0 is None or (isinstance(z0, str) and z0 == "input")) and hasattr(force, "x_in"):
                # The value model.initial_state returns, but with its graph to the embeddings.
                start = force.x_in / force.leak
            else:
                start = model.initial_state(force, z0).detach()
            counted = CountedForce(force, start.detach())
            state = self.method.init(counted, start, counted(start))
            for _ in range(self.steps):
                state = self.method.step(counted, state)
            loss = model.loss(state.z, targets)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        out = {
            name: torch.zeros_like(p) if g is None else g
            for (name, p), g in zip(params.items(), grads, strict=True)
        }
        residual = force_residual(state.z.detach(), state.f.detach())
        wall = time.perf_counter() - wall0
        statuses = tuple(
            Status.CONVERGED if ok else Status.MAX_STEPS
            for ok in (residual <= self.gate_residual).tolist()
        )
        unroll = PhaseInfo(
            name="unroll", method=self.method.name,
            status=Status.CONVERGED if all(s is Status.CONVERGED for s in statuses)
            else Status.MAX_STEPS,
            sample_status=statuses, residual=residual, nfe=counted.calls, steps=self.steps,
            wall=wall, tol=self.gate_residual,
        )
        loss = loss.detach()
        finite = bool(torch.isfinite(loss)) and all(
            bool(torch.isfinite(g).all()) for g in out.values()
        )
        info: dict[str, Any] = {
            "estimator": type(self).__name__,
            "valid": finite,
            "reason": "" if finite else "non-finite loss or gradient through the unroll",
            "valid_samples": torch.isfinite(residual),
            "loss": float(loss),
            "free": None,
            "steps": self.steps,
            "residual": residual,
        }
        return GradientResult(out, finish_info(info, [unroll], wall0))

    def __repr__(self) -> str:
        return f"BPTT(steps={self.steps}, method={self.method!r})"


def bptt_gradient(
    model: Any,
    tokens: Tensor,
    targets: Tensor,
    steps: int = 150,
    method: str | Integrator | None = None,
    *,
    z0: Tensor | str | None = None,
) -> GradientResult:
    """Backprop through `steps` steps of `method` (default ExplicitEuler(0.1)): `BPTT(...)`.

    It differentiates the deployed z_T, not the equilibrium (see the module docstring).
    """
    return BPTT(steps, method).gradients(model, tokens, targets, z0=z0)


__all__ = ["BPTT", "bptt_gradient"]
