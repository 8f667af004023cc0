"""The machinery shared by the equilibrium-propagation estimators (AsymEP, holomorphic EP).

One estimate: free phase -> z0; linearize F at z0 once; one nudged relaxation per nudge beta_k
(warm-started); combine the nudged states into delta ~= J^{-T} l; assemble
dL/dtheta = dL/dtheta|_z0 - delta^T dF/dtheta(z0). Subclasses only choose the nudges and the
combination.

Tolerance of the nudged phases. A nudge moves the state by about beta ||J^{-T} l||, which for a
mean cross entropy over many tokens is a tiny fraction of ||z||: the nudge's own force residual at
the warm start is s = |beta| ||l|| / ||z0|| per sample (`info["nudge_scale"]`). The nudged phases
therefore stop, per sample, at `nudged_rtol * s`: a residual that small relative to the sample's
own nudge bounds the relative error of its delta by about `nudged_rtol` times the conditioning of
J. (The settle is told rate 1 and atol 0, so its test is exactly ||F|| / ||z|| <= nudged_rtol * s:
relative to the nudge's own force, which already makes it invariant to the force's scale.) An
absolute tolerance (the free phase's 1e-6) would declare them converged before they moved; one
tolerance for the batch (its smallest s) would make every sample resolve its nudge as finely
as the one with the weakest nudge, a well-classified sample whose s can be 100x below the others'.
The tolerance cannot go below the dtype's rounding floor (64 machine epsilons here; the loop's
precision floor is 16) and is clamped there; delta then carries a relative rounding error of
about floor / s_i in sample i. Each sample's delta is of size ~s_i, so the batch's delta (and the
gradient, a sum over samples) carries a relative rounding error of about floor / rms(s) over the
samples with s > 0; the estimator warns (RuntimeWarning, also in `info["warnings"]`) when that
exceeds 1 %: a beta too small for the dtype (float32 with beta 1e-3 on a batch-mean loss, s ~
1e-6) gives a delta made of rounding. A few well-classified samples on the floor do not: their
deltas are small parts of the total. A sample with s = 0 (no loss gradient) holds its free
state; its tolerance is the free phase's.

Warm starts. The first nudged phase starts at z0. With `extrapolate=True` later phases start at
the first order prediction z0 + beta_k d, d = (z_{beta_1} - z0) / beta_1 from the first phase
(z0 - beta d for the -beta phase of symmetric EP): the remaining error is O(beta^2), so they need
far fewer evaluations. The fixed point reached does not depend on the start (it is the same root);
`extrapolate=False` starts every phase at z0.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from ..integrators import Integrator, SettleResult, settle
from ._common import (
    Estimator,
    GradientResult,
    PhaseInfo,
    assemble_gradients,
    check_batch,
    check_bool,
    check_max_steps,
    check_options,
    check_positive_float,
    finish_info,
    free_phase,
    gate,
    loss_and_grad_z,
    resolve_method,
    trainable_parameters,
)
from ._nudge import Linearization, LossGradient, NudgedForce, complex_dtype, complexify

# The nudged tolerance never goes below this many machine epsilons (4x the loop's precision floor).
_NUDGE_FLOOR_EPS = 64
# Warn when the rounding floor is this large relative to the nudge scale.
_WARN_ROUNDING = 1e-2


class _EquilibriumPropagation(Estimator):
    """Free phase, nudged phases, assembly; see the module docstring. Options common to EP:

    Args:
        asym_correction: add -2 A (z - z0) to the nudged force (AsymEP). False is plain
            vector-field EP, biased for non-symmetric J.
        free_method, nudged_method: integrator names or instances ("anderson" by default: the
            fastest on the block; any method that handles the state's dtype works).
        free_tol: force-residual tolerance of the free phase (> 0); None: 1e-10 in float64,
            100 eps (1.2e-5) in float32.
        nudged_rtol: nudged tolerance relative to the nudge scale (> 0, < 1).
        free_max_steps, nudged_max_steps: loop iterations; None: the method's default.
        free_options, nudged_options: further settle options (method or loop options).
        gate_residual: the validity gate on the free force residual (> 0).
        extrapolate: warm-start later nudged phases at the first-order prediction.
    """

    def __init__(
        self,
        *,
        asym_correction: bool,
        free_method: str | Integrator,
        nudged_method: str | Integrator,
        free_tol: float | None,
        nudged_rtol: float,
        free_max_steps: int | None,
        nudged_max_steps: int | None,
        free_options: dict[str, Any] | None,
        nudged_options: dict[str, Any] | None,
        gate_residual: float,
        extrapolate: bool,
    ):
        self.asym_correction = check_bool("asym_correction", asym_correction)
        self.free_tol = check_positive_float("free_tol", free_tol, allow_none=True)
        self.nudged_rtol = check_positive_float("nudged_rtol", nudged_rtol)
        if self.nudged_rtol >= 1:  # type: ignore[operator]
            raise ValueError(f"nudged_rtol must be in (0, 1), got {nudged_rtol}")
        self.gate_residual = check_positive_float("gate_residual", gate_residual)
        self.extrapolate = check_bool("extrapolate", extrapolate)
        self.free_max_steps = check_max_steps("free_max_steps", free_max_steps)
        self.nudged_max_steps = check_max_steps("nudged_max_steps", nudged_max_steps)
        self._free = resolve_method(
            "free_method", free_method, check_options("free_options", free_options)
        )
        self._nudged = resolve_method(
            "nudged_method", nudged_method, check_options("nudged_options", nudged_options)
        )

    # -- what subclasses choose --------------------------------------------------------------------
    def nudges(self) -> list[float | complex]:
        """The betas, first one real and positive (it seeds the warm starts)."""
        raise NotImplementedError

    def combine(self, z0: Tensor, states: list[Tensor]) -> Tensor:
        """delta ~= J^{-T} l (real, like z0) from the nudged states (one per nudge)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Estimator-specific info entries."""
        return {}

    # -- one estimate ------------------------------------------------------------------------------
    def gradients(
        self,
        model: Any,
        tokens: Tensor,
        targets: Tensor,
        *,
        free: SettleResult | None = None,
        z0: Tensor | str | None = None,
    ) -> GradientResult:
        """Estimate dL/dtheta at the free equilibrium.

        Args:
            model: an `EquilibriumTransformer` (or any module with the protocol of
                `analogeq.learning._common`).
            tokens: inputs (batch, T) (or features (batch, T, input_dim)).
            targets: int64 (batch, T) per token or (batch,) per sequence.
            free: a free-phase `SettleResult` on these tokens to reuse (the trainer's own settle);
                None settles here with `free_method`.
            z0: the free phase's start (see `model.initial_state`); ignored when `free` is given.

        Returns:
            `GradientResult`: grads for every trainable parameter; info as documented there, plus
            "beta" / "radius" etc. (`describe`), "nudge_scale" ((batch,) |beta| ||l|| / ||z0||),
            "nudged_tol" ((batch,) per-sample tolerance of the nudged phases), "relative_nudge"
            ((batch,) ||z_beta1 - z0|| / ||z0||), "loss".
        """
        wall0 = time.perf_counter()
        check_batch(tokens, targets)
        params = trainable_parameters(model)
        nudges = self.nudges()
        if any(isinstance(b, complex) for b in nudges):
            complex_dtype(next(iter(params.values())).dtype)  # fail before any settle
        method, loop = self._free
        force, free_res, free_info = free_phase(
            model, tokens, method, loop, self.free_tol, self.free_max_steps, free, z0
        )
        z = free_res.z.detach()
        _, l0 = loss_and_grad_z(model, z, targets)  # also checks the target values, early

        t_lin = time.perf_counter()
        lin = Linearization(force, z, jvp=self.asym_correction)
        t_lin = time.perf_counter() - t_lin

        dims = tuple(range(1, z.ndim))
        ln = torch.linalg.vector_norm(l0, dim=dims)
        zn = torch.linalg.vector_norm(z, dim=dims).clamp_min(torch.finfo(z.dtype).tiny)
        scale = abs(nudges[0]) * ln / zn
        tol, warn = self._nudged_tol(scale, z.dtype, free_info.tol)

        nmethod, nloop = self._nudged
        lg = LossGradient(model, targets, z)
        states: list[Tensor] = []
        phases: list[PhaseInfo] = []
        d: Tensor | None = None
        for beta in nudges:
            complex_beta = isinstance(beta, complex)
            base = complexify(z) if complex_beta else z
            start = base if (d is None or not self.extrapolate) else base + beta * d
            nf = NudgedForce(force, lg, beta, z, lin if self.asym_correction else None)
            jvp0, vjp0 = lin.n_jvp, lin.n_vjp
            # The tolerance is relative to the nudge's own force (F's units), so the phase is
            # judged on the force itself: rate 1, no absolute part (scale-invariant already).
            res = settle(nf, start, nmethod, tol=tol, max_steps=self.nudged_max_steps,
                         **{"rate": 1.0, "atol": 0.0, **nloop})
            phases.append(PhaseInfo.from_settle(
                "nudged", res, tol, beta, jvp=lin.n_jvp - jvp0, vjp=lin.n_vjp - vjp0
            ))
            states.append(res.z.detach())
            if d is None:
                d = (res.z.detach() - z) / beta
        assert d is not None
        relative_nudge = torch.linalg.vector_norm(states[0] - z, dim=dims) / zn

        delta = self.combine(z, states)
        lam = -delta
        t_asm = time.perf_counter()
        grads, loss = assemble_gradients(model, force, z, targets, lam, params, f_z=lin.out)
        lin.release()
        t_asm = time.perf_counter() - t_asm

        valid, reason, ok = gate(free_info, phases, self.gate_residual)
        info: dict[str, Any] = {
            "estimator": type(self).__name__,
            "valid": valid,
            "reason": reason,
            "valid_samples": ok,
            "loss": float(loss),
            "free": free_info,
            "asym_correction": self.asym_correction,
            "nudge_scale": scale,
            "nudged_tol": tol,
            "relative_nudge": relative_nudge,
            "adjoint": lam,
            "warnings": warn,
            **self.describe(),
        }
        info = finish_info(info, [free_info, *phases], wall0)
        info["wall"]["linearize"] = t_lin
        info["wall"]["assemble"] = t_asm
        return GradientResult(grads, info)

    def _nudged_tol(
        self, scale: Tensor, dtype: torch.dtype, free_tol: float | Tensor | None
    ) -> tuple[Tensor, list[str]]:
        """Per sample: nudged_rtol * its nudge scale, floored at the dtype's rounding level; the
        free tolerance (or the floor) for a sample without a nudge. Shape (batch,), like scale."""
        floor = _NUDGE_FLOOR_EPS * torch.finfo(dtype).eps
        if isinstance(free_tol, Tensor):
            idle = free_tol.to(scale.device, scale.dtype).clamp_min(floor)
        else:
            ok = free_tol is not None and math.isfinite(free_tol)
            idle = torch.full_like(scale, max(free_tol if ok else floor, floor))
        tol = torch.where(scale > 0, (self.nudged_rtol * scale).clamp_min(floor), idle)
        nonzero = scale[scale > 0]
        if not nonzero.numel():
            # dL/dz = 0 on every sample (e.g. all targets of the batch's samples ignored): the
            # nudge does nothing and the nudged phases only hold the free state.
            return tol, []
        typical = float(nonzero.square().mean().sqrt())  # one host sync per estimate
        warn: list[str] = []
        # Warn only when rounding, not the tolerance, limits delta: its relative error is about
        # floor / rms(scale) (1e-2 keeps cos to the exact gradient above ~0.999 on the block).
        if floor / typical > _WARN_ROUNDING:
            msg = (
                f"the nudge is too small for {dtype}: its scale |beta| ||dL/dz|| / ||z|| is "
                f"{typical:.2e} (rms over the batch), while the nudged phases cannot resolve "
                f"residuals below the rounding floor {floor:.1e}: delta carries rounding error of "
                f"relative size ~{floor / typical:.1e}; increase beta (or the radius)"
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            warn.append(msg)
        return tol, warn


__all__ = ["_EquilibriumPropagation"]
