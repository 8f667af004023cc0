"""The exact equilibrium gradient by the implicit adjoint (docs/physics.md section 5).

At the free fixed point z* (F(z*) = 0), with J = dF/dz(z*) and l = dL/dz(z*):

    J^T lam = -l,        dL/dtheta = dL/dtheta|_z* + lam^T dF/dtheta(z*).

The transposed system is solved matrix-free by batched restarted GMRES (`analogeq.integrators.
_krylov.gmres`, one independent system per sample, J being block-diagonal over samples) with
J^T v from vector-Jacobian products through one autograd graph of F recorded at z* (one backward
pass per Krylov iteration, no new forward). This is the reference the EP estimators are judged
against: it differentiates the equilibrium, not a finite relaxation (compare `bptt_gradient`).
"""

from __future__ import annotations

import time
from typing import Any

from torch import Tensor

from ..integrators import Integrator, SettleResult, Status
from ..integrators._krylov import gmres
from ._common import (
    DEFAULT_GATE_RESIDUAL,
    Estimator,
    GradientResult,
    PhaseInfo,
    assemble_gradients,
    check_batch,
    check_int,
    check_max_steps,
    check_options,
    check_positive_float,
    default_tol,
    finish_info,
    free_phase,
    gate,
    loss_and_grad_z,
    resolve_method,
    trainable_parameters,
)
from ._nudge import Linearization


class ImplicitAdjoint(Estimator):
    """Exact equilibrium gradient: free settle, GMRES on J^T lam = -dL/dz, one parameter VJP.

    Args:
        method: integrator of the free phase (name or instance; default "anderson").
        tol: free-phase force-residual tolerance (> 0); None: 1e-10 in float64, 1.2e-5 in float32.
        rtol: GMRES relative tolerance on ||J^T lam + l|| / ||l|| (in (0, 1)); None: 1e-10 in
            float64, 1.2e-5 in float32.
        restart: GMRES Krylov dimension per cycle (>= 1).
        max_iter: total GMRES iterations (>= 1); None: GMRES's default min(10 n, 50 restart).
        max_steps: free-phase loop iterations; None: the method's default.
        options: further settle options of the free phase.
        gate_residual: validity gate on the free force residual (> 0).

    `info` adds "adjoint_residual" ((batch,) relative residual of the linear solve),
    "adjoint_iterations" ((batch,) Krylov iterations), "matvecs" (VJPs) to the keys of
    `GradientResult`; the adjoint phase's status is CONVERGED when every sample's solve met rtol.
    """

    name = "adjoint"

    def __init__(
        self,
        *,
        method: str | Integrator = "anderson",
        tol: float | None = None,
        rtol: float | None = None,
        restart: int = 30,
        max_iter: int | None = None,
        max_steps: int | None = None,
        options: dict[str, Any] | None = None,
        gate_residual: float = DEFAULT_GATE_RESIDUAL,
    ):
        self.tol = check_positive_float("tol", tol, allow_none=True)
        self.rtol = check_positive_float("rtol", rtol, allow_none=True)
        if self.rtol is not None and self.rtol >= 1:
            raise ValueError(f"rtol must be in (0, 1), got {rtol}")
        self.restart = check_int("restart", restart, 1)
        self.max_iter = None if max_iter is None else check_int("max_iter", max_iter, 1)
        self.max_steps = check_max_steps("max_steps", max_steps)
        self.gate_residual = check_positive_float("gate_residual", gate_residual)
        self._free = resolve_method("method", method, check_options("options", options))

    def gradients(
        self,
        model: Any,
        tokens: Tensor,
        targets: Tensor,
        *,
        free: SettleResult | None = None,
        z0: Tensor | str | None = None,
    ) -> GradientResult:
        """The exact gradient at the free equilibrium (arguments as `AsymEP.gradients`)."""
        wall0 = time.perf_counter()
        check_batch(tokens, targets)
        params = trainable_parameters(model)
        method, loop = self._free
        force, free_res, free_info = free_phase(
            model, tokens, method, loop, self.tol, self.max_steps, free, z0
        )
        z = free_res.z.detach()
        _, l0 = loss_and_grad_z(model, z, targets)

        t0 = time.perf_counter()
        lin = Linearization(force, z, jvp=False)
        rtol = self.rtol if self.rtol is not None else default_tol(z.dtype, 1e-10)
        # J^T lam = -l, per sample. A sample whose l is 0 (all its targets ignored) has lam = 0.
        lam, ginfo = gmres(
            lin.vjp, -l0, rtol=rtol, atol=0.0, restart=self.restart, max_iter=self.max_iter
        )
        t_solve = time.perf_counter() - t0
        statuses = tuple(
            Status.CONVERGED if c else Status.MAX_STEPS for c in ginfo.converged.tolist()
        )
        adj = PhaseInfo(
            name="adjoint", method="gmres",
            status=Status.CONVERGED if all(s is Status.CONVERGED for s in statuses)
            else Status.MAX_STEPS,
            sample_status=statuses, residual=ginfo.residual, nfe=ginfo.matvecs,
            steps=ginfo.restarts, wall=t_solve, tol=rtol, vjp=lin.n_vjp,
        )
        t0 = time.perf_counter()
        grads, loss = assemble_gradients(model, force, z, targets, lam, params, f_z=lin.out)
        lin.release()
        t_asm = time.perf_counter() - t0

        valid, reason, ok = gate(free_info, [adj], self.gate_residual)
        info: dict[str, Any] = {
            "estimator": type(self).__name__,
            "valid": valid,
            "reason": reason,
            "valid_samples": ok,
            "loss": float(loss),
            "free": free_info,
            "adjoint": lam,
            "adjoint_residual": ginfo.residual,
            "adjoint_iterations": ginfo.iterations,
            "matvecs": ginfo.matvecs,
        }
        info = finish_info(info, [free_info, adj], wall0)
        info["wall"]["assemble"] = t_asm
        return GradientResult(grads, info)

    def __repr__(self) -> str:
        return f"ImplicitAdjoint(rtol={self.rtol}, restart={self.restart})"


def exact_gradient(
    model: Any,
    tokens: Tensor,
    targets: Tensor,
    *,
    free: SettleResult | None = None,
    z0: Tensor | str | None = None,
    **options: Any,
) -> GradientResult:
    """The exact equilibrium gradient by the implicit adjoint: `ImplicitAdjoint(**options)`.

    Args:
        model, tokens, targets, free, z0: as `AsymEP.gradients`.
        **options: `ImplicitAdjoint` arguments (method, tol, rtol, restart, max_iter, max_steps,
            options, gate_residual).
    """
    return ImplicitAdjoint(**options).gradients(model, tokens, targets, free=free, z0=z0)


__all__ = ["ImplicitAdjoint", "exact_gradient"]
