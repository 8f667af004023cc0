"""Anderson acceleration on the Picard map of the force: the default `settle` method.

A root-finder, not a time stepper: it looks for F(z) = 0 and has no continuous time (`t` is None).
It finds a root much faster than a relaxation, also where a coarse Euler step cycles (a stiff
rotating mode), but it cannot create a stable root (docs/physics.md section 4): when none exists its
best residual stops improving and the sample ends STALLED with the best point it found as `z`
(docs/physics.md section 3, point 3: the eigenvalues at that point say why). A root it finds need
not be stable for the continuous dynamics; the probes decide that.

The map. Per entry G(z) = z + h F(z), computed from the F the loop already holds (one force
evaluation per iteration, FSAL):
* plain force: h = eps, the explicit-Euler map. Default eps = 0.3: the scale of F is unknown, and
  Anderson with a small memory needs a Picard map that does not expand much (|1 + h mu| of order
  one for the leading Jacobian eigenvalues mu); 0.3 suits forces like the block's (docs/physics.md
  section 1) with leak 2 (measured on the systems below without their split: 0.1 and 0.2 cost up to
  2x more evaluations on the blocks, 0.5 lost a rotor sample; a rotation-dominated linear system
  needs eps <= 0.3).
* force with the split F = -leak z + N(z): the IMEX Picard map G(z) = (z + eps N(z)) / (1 + eps
  leak), which is identically z + h F(z) with h = eps / (1 + eps leak) = 1 / (1/eps + leak), so it
  is computed that way (no cancellation in z + eps N for large eps). eps -> inf gives the classic
  DEQ map N(z) / leak. The default eps = 0.5 (h = 0.25 for leak 2, ~1e-3 for a leak of 1000) was
  chosen by measurement on random leak-2 transformer blocks (benchmarks/operators.py, gain 1 and
  3, float32), saturating rotors whose rotation dominates the leak (a = 1, b = 5 and 8; 128
  samples), a stiff linear system (leak 1000) and a contractive tanh network: eps = inf left 55 of
  the 128 rotor samples stalled (h = 1 / leak overshoots, |1 + h mu| ~ 5), eps = 1 one, eps = 0.5
  none, at <= 11 % more evaluations than eps = inf on the blocks.

One iteration, per sample (Type-II Anderson, the DEQ formulation):
    x_k and r_k = h F(x_k) join a ring of the last m pairs;
    alpha = argmin ||sum_i alpha_i r_i||^2 + lam sum_i |alpha_i|^2 ||r_i||^2, sum_i alpha_i = 1
    x_{k+1} = sum_i alpha_i (x_i + beta s r_i)        (beta = damping, s = per-sample gain scale)
The constrained least squares is solved by its bordered (m+1) x (m+1) system in scaled variables:
with w_i = ||r_i||, unit residuals u_i = r_i / w_i and d_i = min(w) / w_i, alpha = d * gamma where
    [[0, d^T], [d, C + lam I]] [nu; gamma] = [1; 0],      C_ij = <u_i, u_j> (Hermitian Gram).
Why scaled: near convergence the history spans decades of residual size and an unscaled Gram
matrix is ill-conditioned by magnitude alone. The Tikhonov term lam ||r_i||^2 |alpha_i|^2 is
relative per column (scale invariant) and penalises combinations that cancel large residuals.
lam = 1e-4 by default, in any dtype: it dominates the rounding of Gram entries in float32, and it
measured better than weaker values in float64 too (windowed Anderson exploits an ill-conditioned
Krylov-like history badly; weights bounded by the regularization extrapolate more safely).
The history ring is written in place and the Gram matrix updated incrementally (one row and
column per iteration, O(m n)), so an iteration costs a few passes over the state; the bordered
systems are solved in float64 (complex128) with `torch.linalg.inv_ex` (batched, no host sync).
Inner products conjugate their first argument, so complex states minimise the true residual norm;
the root is the same for a holomorphic force (holomorphic EP needs the root, not the path).
The history is capped at n + 1 pairs (n entries per sample): more are linearly dependent by
construction and only add a degenerate direction to the least squares.

Safeguards, per sample, without host syncs:
* restart: when the 1-norm condition number of the scaled, regularized bordered system exceeds
  `restart_cond`, or the solve fails or gives non-finite weights, the history is cleared and the
  iteration takes a damped Picard step. The bordered system, not the plain Gram matrix, is measured:
  the plain Gram matrix is singular for harmless histories (a scalar problem, where Anderson is the
  secant method) while the constrained problem is well posed. With lam = 1e-4 the condition number
  stays below ~1e5, so the default threshold 1e8 restarts only after failed solves; measured
  restarts at lower thresholds only slowed convergence (the regularization already bounds the
  weights). The threshold matters when `regularization` is set near 0.
* step cap: one iteration moves at most `_REACH` times ||x_k|| + max_i ||r_i||. Far outside its
  history the secant model means nothing, and on a saturating force (tanh) an unbounded
  extrapolation carries the iterate off to where ||F|| / ||z|| only looks small (||z|| is big).
* rejection: a new iterate whose force is non-finite or whose ||F|| exceeds `_REJECT_GROWTH` times
  the smallest ||F|| seen is discarded (its evaluation still counts): the sample returns to its best
  point, its history is cleared and its gain scale s halved (an overshooting map, e.g. a plain force
  stiffer than 1/eps). Counted in `SettleResult.info["rejected_steps"]`. `_NONFINITE_LIMIT` (5)
  non-finite forces in a row end the sample DIVERGED, as every other method reports a force that
  turned NaN.
* best iterate: the lowest force residual ||F(z)|| / ||z|| seen is kept and returned by `finalize`.
* stall and relaxation: progress is a drop of the best force residual or of the smallest ||F|| below
  `_STALL_FACTOR` times its value at the last such drop (both count: ||F|| / ||z|| can rise while a
  far-away iterate approaches the root). After `stall_patience` iterations without progress the
  sample relaxes for `stall_patience` iterations: damped Picard steps (no extrapolation) from its
  best point, its gain scale s halved (until it settles), following the flow like Euler, which leads
  out of places where the secant model misleads Anderson (a saturated force, a local minimum of
  ||F||); then it accelerates again. A relaxation window without progress ends the sample
  *settling*: it follows the undamped Picard flow from where it is, for good (no extrapolation, no
  rejection of a rising ||F||; every relaxation cut of s is undone, which halved the settling steps
  of a block-g3 sample that had relaxed twice). This is how it leaves a "ghost": a point of small
  but non-zero residual, which the secant model keeps returning to and from which the flow must
  first climb (measured on the gain-3 block of benchmarks/operators.py: the best Anderson point of
  one sample sat at residual 4e-3, and the flow out of it rose to 1.4e-2 before it fell to a stable
  root; that sample has at least two stable roots, 76 % apart, and Anderson and IMEX from z0 = 0 end
  at different ones). A settling sample progresses while its residual moves 10 % away from its value
  at the last progress (down, or up: climbing out of a ghost is progress); after `_SETTLE_WINDOWS`
  windows without that, or an ||F|| 10x the larger of the one it started settling from and the one
  after its first iteration (a runaway: no root ahead, e.g. a finite-time blow-up, or the explicit
  flow beyond its stability limit), end it STALLED at its best point (where the `fallback`, the
  continuous flow by default, takes over). The second reference matters for a deep ghost: a
  rounding-level change of the path once left that sample's best point at 4.4e-4, and the flow out
  of it rose 30x before it fell to the root. An oscillating settling flow keeps progressing, and the
  loop's cycle test judges its tail (LIMIT_CYCLE). STALLED is evidence; the ODE reference decides.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor

from ._base import Integrator, StepState, check_positive, check_range
from ._force import CountedForce, force_residual
from .ode import ODESolver
from .ptc import PseudoTransient

# Default eps of the Picard map without and with the leak split, in units of 1 / rate (the force's
# rate scale; see the module docstring): 0.3 and 0.5 at the block's leak 2, where they were tuned.
_PLAIN_EPS = 0.6
_SPLIT_EPS = 1.0
# An improvement of the best residual counts for the stall test only if it is at least 10 %.
# Slower than that over `stall_patience` (50) iterations, i.e. a rate above ~0.998 per iteration,
# a root-finder is making no progress (and the best residual of a force without a root, bounded
# below, stops improving by 10 % after finitely many steps).
_STALL_FACTOR = 0.9
# A settling sample progresses while its residual moves by 10 % (down or up) from its value at the
# last progress.
_SETTLE_FACTOR = 0.9
# A new point whose ||F|| exceeds this factor times the smallest one seen is rejected. Converging
# runs measured growth below 6 (Anderson is not monotone); a runaway grows without bound.
_REJECT_GROWTH = 10.0
# Gain reduction after a rejected step.
_GAIN_SHRINK = 0.5
# Longest move of one iteration, in units of the sample's scale ||x_k|| + max_i ||r_i||.
_REACH = 1.0
# Relaxation windows (of `stall_patience` iterations) a settling sample may go without a 10 % drop
# of its own residual before it is STALLED.
_SETTLE_WINDOWS = 4
# Local error tolerances of the default fallback, the continuous flow (dopri5): loose enough for
# float32 (rtol >= 10 eps), tight enough that the flow's own error stays below the settle's test
# (near a fixed point ODESolver holds the error below 1 % of the motion anyway).
_FALLBACK_RTOL, _FALLBACK_ATOL = 1e-5, 1e-6
# Non-finite forces in a row (each retry from the best point with half the gain) after which the
# sample is DIVERGED: the force is not finite anywhere the iteration can still reach.
_NONFINITE_LIMIT = 5


class Anderson(Integrator):
    """Anderson acceleration of the Picard map G(z) = z + h F(z); a root-finder (no time).

    States of any shape (batch, ...), real or complex, any device; exactly one force evaluation
    per iteration. Histories live in `StepState.extra` as (batch, m, n) tensors (n = entries per
    sample), so memory is about 2 m copies of the state.

    Args:
        m: history length (>= 1); m = 1 is damped Picard iteration with the safeguards.
        damping: beta in (0, 1], x_{k+1} = sum alpha_i (x_i + beta r_i).
        regularization: relative Tikhonov weight lam in [0, 1) on ||r_i||^2 |alpha_i|^2
            (dimensionless).
        eps: step of the Picard map, in time units of the force (> 0; inf allowed with the split,
            the DEQ map N / leak). None: relative to the force's rate scale w (its smallest leak,
            the `rate` settle option, or a secant measured at z0): 1 / w with the leak split,
            0.6 / w without (0.5 and 0.3 for a leak of 2), so that scaling F changes nothing.
        restart_cond: 1-norm condition number (>= 1, inf allowed) of the scaled, regularized
            bordered system above which a sample's history is cleared.
        stall_patience: iterations (>= 1) without a 10 % drop of the best force residual or of
            the smallest ||F|| after which a sample relaxes, and after which a relaxation phase
            without such a drop ends it STALLED.
        fallback: the method that takes over the samples Anderson leaves STALLED, LIMIT_CYCLE or
            DIVERGED (with a finite force), from Anderson's best point with the rest of the
            budget: "ode" (default: the continuous flow, dopri5 at rtol 1e-5 / atol 1e-6, which
            cannot run away from a stable root and does not settle where the circuit would not:
            a Hopf-unstable root stays a cycle), "ptc" (`PseudoTransient`, backward Euler
            growing to Newton: faster on stiff linear systems, but it also converges to unstable
            roots), another `Integrator`, or None (Anderson alone). A sample keeps Anderson's
            outcome where the fallback's is worse; `SettleResult.info["fallback"]` says which
            samples it took and how they ended.
    """

    name = "anderson"
    default_max_steps = 2000
    has_time = False

    def __init__(
        self,
        m: int = 5,
        damping: float = 1.0,
        regularization: float = 1e-4,
        eps: float | None = None,
        restart_cond: float = 1e8,
        stall_patience: int = 50,
        fallback: str | Integrator | None = "ode",
    ):
        self.m = check_range("m", m, 1, 1000, integer=True)
        self.damping = _check_half_open("damping", damping, "(0, 1]", lambda v: 0 < v <= 1)
        self.regularization = _check_half_open(
            "regularization", regularization, "[0, 1)", lambda v: 0 <= v < 1
        )
        self.eps = None if eps is None else check_positive("eps", eps, allow_inf=True)
        self.restart_cond = check_range("restart_cond", restart_cond, 1.0, math.inf)
        self.stall_patience = check_range("stall_patience", stall_patience, 1, 10**9, integer=True)
        if fallback == "ode":
            self.fallback: Integrator | None = ODESolver(rtol=_FALLBACK_RTOL, atol=_FALLBACK_ATOL)
        elif fallback == "ptc":
            self.fallback = PseudoTransient()
        elif fallback is None or isinstance(fallback, Integrator):
            self.fallback = fallback
        else:
            raise ValueError(
                f"fallback must be 'ptc', an Integrator instance or None, got {fallback!r}"
            )

    # -- the map ---------------------------------------------------------------------------------
    def resolved_eps(self, force: CountedForce) -> Tensor:
        """The eps in use per sample (k,) (time units): the given one, else relative to the
        force's rate scale w (`CountedForce.rate`): 1 / w with the leak split (w = the smallest
        leak: eps = 0.5 for the block's leak 2), 0.6 / w without (0.3 at w = 2)."""
        rate = force.rate
        if self.eps is not None:
            return torch.full_like(rate, self.eps)
        return (_SPLIT_EPS if force.has_split else _PLAIN_EPS) / rate

    def _gain(self, force: CountedForce, z: Tensor) -> Tensor:
        """h with G(z) = z + h F(z): a real tensor broadcastable to z (per sample, and per entry
        with a tensor leak)."""
        real = z.real.dtype if z.is_complex() else z.dtype
        eps = self.resolved_eps(force).to(device=z.device, dtype=real)
        eps = eps.view((-1,) + (1,) * (z.ndim - 1))
        if not force.has_split:
            return eps
        inv = torch.where(torch.isinf(eps), torch.zeros_like(eps), 1.0 / eps)
        leak = force.leak
        if isinstance(leak, Tensor):
            return 1.0 / (inv + leak.to(device=z.device, dtype=real))
        return 1.0 / (inv + float(leak))

    def _check_gain(self, force: CountedForce) -> None:
        """The IMEX map needs 1/eps + leak > 0 everywhere (else it divides by <= 0); once a run."""
        if not force.has_split:
            if self.eps is not None and math.isinf(self.eps):
                raise ValueError(
                    "eps must be finite for a force without the leak/nonlinear split (eps = inf "
                    "is the DEQ map N / leak, which needs the split)"
                )
            return
        eps = self.resolved_eps(force)
        inv = torch.where(torch.isinf(eps), torch.zeros_like(eps), 1.0 / eps)
        leak = force.leak
        if isinstance(leak, Tensor):
            if leak.is_complex():
                raise TypeError(f"the force's leak must be real, got dtype {leak.dtype}")
            # Conservative over samples (smallest 1/eps with the smallest leak); one host sync.
            ok = bool(inv.min() + leak.min().to(inv) > 0)
        else:
            ok = bool((inv + float(leak) > 0).all())
        if not ok:
            raise ValueError(
                f"eps={self.eps} with this force's leak gives 1/eps + leak <= 0: Anderson's IMEX "
                "map needs 1/eps + leak > 0 everywhere; pass a finite eps < 1/|min(leak)|"
            )

    # -- the protocol ----------------------------------------------------------------------------
    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        """Empty history, best point z0. `StepState.eps` holds the resolved eps. Extra tensors:

        `YR` (b, m, 2n): ring of candidate points y = x + beta s r and base Picard residuals
        r = h F(x) side by side (the mixing reads the y half, the Gram update the r half);
        `gram` (b, m, m): <r_i, r_j>; `valid` (b, m) bool; `count` (b,) iterations (ring slot =
        count % m); `scale` (b,) gain scale s; `least_fn` (b,) smallest ||F|| since the last
        reset; `best_z`, `best_f` like z0; `best_res` (b,) force residual of the best point;
        `stall_ref`,
        `stall_fn` (b,) the two at the last progress; `since` (b,) iterations since then;
        `relax` (b,) relaxation iterations left; `relax_cut` (b,) product of the gain cuts of
        the relaxation windows (undone when settling); `settling` (b,) bool; `settle_fn` (b,) the
        runaway reference (an ||F||); `entry_fn` (b,) ||F|| after the first iteration;
        `restarts` (b,).
        """
        self._check_gain(force)
        b, n = z0.shape[0], z0[0].numel()
        m = min(self.m, n + 1)
        real = z0.real.dtype if z0.is_complex() else z0.dtype
        dev = z0.device
        res0 = force_residual(z0, f0)
        fn0 = torch.linalg.vector_norm(f0.reshape(b, -1), dim=-1)
        extra = dict(
            YR=torch.zeros(b, m, 2 * n, dtype=z0.dtype, device=dev),
            gram=torch.zeros(b, m, m, dtype=z0.dtype, device=dev),
            valid=torch.zeros(b, m, dtype=torch.bool, device=dev),
            count=torch.zeros(b, dtype=torch.long, device=dev),
            scale=torch.ones(b, dtype=real, device=dev),
            relax_cut=torch.ones(b, dtype=real, device=dev),
            least_fn=fn0,
            best_z=z0,
            best_f=f0,
            best_res=res0,
            stall_ref=res0,
            stall_fn=fn0,
            since=torch.zeros(b, dtype=torch.long, device=dev),
            relax=torch.zeros(b, dtype=torch.long, device=dev),
            settling=torch.zeros(b, dtype=torch.bool, device=dev),
            settle_fn=fn0,
            entry_fn=fn0,
            restarts=torch.zeros(b, dtype=torch.long, device=dev),
            nonfinite=torch.zeros(b, dtype=torch.long, device=dev),
        )
        return StepState.start(z0, f0, self.resolved_eps(force).to(real), **extra)

    def step(self, force: CountedForce, state: StepState) -> StepState:
        z, f, ex = state.z, state.f, state.extra
        b = z.shape[0]
        x = z.reshape(b, -1)
        r = (self._gain(force, z) * f).reshape(b, -1)
        # The candidate point y_k = x_k + beta s r_k goes into the ring, not x_k: the mixing then
        # reads m rows instead of 2m. The gain beta s is the one of this iteration; every change of
        # s (rejection, relaxation, settling) clears the history or takes a Picard step (weight 1
        # on the newest pair), so mixing with the gain stored per pair equals mixing with today's.
        gain = (self.damping * ex["scale"]).to(z.dtype).unsqueeze(-1)
        y = torch.addcmul(x, gain, r)

        settling = ex["settling"]
        relaxing = (ex["relax"] > 0) | settling
        if z.device.type == "cpu" and bool(settling.all()):
            # Every running sample follows the Picard flow for good: the history is no longer
            # used and the step is y_k itself (the cap never binds on a Picard step, since
            # ||beta s r_k|| <= ||r_k|| <= reach), so the ring, the Gram update and the solve are
            # skipped (block-g3's slowest samples settle for hundreds of iterations). The check
            # is free on the CPU; elsewhere it would be a host sync, and the general path
            # computes the same step.
            YR, gram, valid = ex["YR"], ex["gram"], ex["valid"]
            restart = torch.zeros_like(settling)
            z_new = y.reshape(z.shape)
        else:
            YR, gram, valid, restart, z_new = self._accelerate(ex, x, r, y, relaxing, z.shape)
        f_new = force(z_new)

        dims = tuple(range(1, z.ndim))
        zn = torch.linalg.vector_norm(z_new, dim=dims)
        fn = torch.linalg.vector_norm(f_new, dim=dims)
        res = fn / zn.clamp_min(torch.finfo(zn.dtype).tiny)
        finite = torch.isfinite(zn + fn)  # both norms are >= 0: no cancellation
        # While settling (following the flow for good) ||F|| may rise on the way to the root: only
        # a non-finite force is refused then.
        reject = ~finite | (~settling & (fn > _REJECT_GROWTH * ex["least_fn"]))
        # A rejected sample goes back to its best point, unless it has none with a finite residual
        # yet (z0 = 0, where ||F|| / ||z|| is infinite and the loop would call the state diverged):
        # then a finite new point is kept. Either way the history is cleared and the gain cut.
        back = reject & (torch.isfinite(ex["best_res"]) | ~finite)
        scale = torch.where(reject, ex["scale"] * _GAIN_SHRINK, ex["scale"])
        least_fn = torch.where(back, ex["least_fn"], torch.minimum(ex["least_fn"], fn))
        least_fn = torch.where(reject & ~back, fn, least_fn)  # a kept point resets the reference

        better = ~back & (res < ex["best_res"])
        best_res = torch.where(better, res, ex["best_res"])

        # Progress is a 10 % drop of the best force residual or of the smallest ||F|| (the relative
        # residual alone can rise while a far-away iterate approaches the root).
        # While settling, progress is judged on the flow's own path: its residual moved 10 % away
        # from its value at the last progress, down or up (leaving a ghost, the residual first
        # rises, measured up to 30x on block-g3; a runaway is caught below; an oscillating flow
        # keeps "progressing" and the loop's cycle test judges its tail).
        ref = ex["stall_ref"]
        level = torch.where(settling, torch.where(back, ref, res), best_res)
        factor = torch.where(settling, _SETTLE_FACTOR, _STALL_FACTOR)
        moved = (level < factor * ref) | (settling & (_SETTLE_FACTOR * level > ref))
        down_fn = ~settling & (least_fn < _STALL_FACTOR * ex["stall_fn"])
        stall_ref = torch.where(moved, level, ref)
        stall_fn = torch.where(down_fn, least_fn, ex["stall_fn"])
        since = torch.where(moved | down_fn, 0, ex["since"] + 1)
        # No progress for a whole Anderson window: relax (damped Picard steps, no extrapolation,
        # half the gain) from the best point for a window, then accelerate again.
        # A relaxation window without progress either: the sample settles, i.e. follows the damped
        # Picard flow from where it is for good (an Anderson best point far from any root, a
        # "ghost", can only be left that way); only `_SETTLE_WINDOWS` relaxation windows without
        # progress of the flow end it STALLED.
        expired = since >= self.stall_patience
        enter = expired & ~relaxing
        go_settle = expired & relaxing & ~settling
        # A settling flow that runs away (its ||F|| 10x the one it started from: no root ahead,
        # e.g. a finite-time blow-up, or an explicit flow beyond its stability limit) ends STALLED
        # at the best point too. ||F||, not ||F|| / ||z||: along an unstable linear direction the
        # latter stays flat at |mu| while the state explodes.
        runaway = settling & (fn > _REJECT_GROWTH * ex["settle_fn"])
        stalled = settling & ((since >= _SETTLE_WINDOWS * self.stall_patience) | runaway)
        relax = torch.where(enter, self.stall_patience, (ex["relax"] - 1).clamp_min(0))
        since = torch.where(enter | go_settle, 0, since)
        stall_ref = torch.where(go_settle, res, stall_ref)
        # The runaway reference: the ||F|| settling starts from, or the sample's ||F|| after its
        # first iteration if larger. A flow climbing out of a ghost may rise far above the
        # ghost's force, but not above the forces the sample has already come down from.
        entry_fn = torch.where(ex["count"] == 0, fn, ex["entry_fn"])
        settle_fn = torch.where(go_settle, torch.maximum(fn, entry_fn), ex["settle_fn"])
        # Entering a relaxation window halves the gain; settling follows the undamped map again,
        # undoing every relaxation cut (they were guesses against overshoot; rejections keep their
        # own cuts). `relax_cut` is the product of the relaxation cuts so far.
        cut_now = torch.where(enter, _GAIN_SHRINK, 1.0)
        relax_cut = ex["relax_cut"] * cut_now
        scale = torch.where(go_settle, (scale / relax_cut).clamp(max=1.0), scale * cut_now)
        relax_cut = torch.where(go_settle, 1.0, relax_cut)
        settling = settling | go_settle
        valid = valid & ~(reject | enter).unsqueeze(1)

        # The new best point is the new one where it is better; a sample sent home (rejected,
        # relaxing, runaway) returns to its best point (the new one if it just became the best; a
        # rejected one never does).
        keep = better.view((b,) + (1,) * (z.ndim - 1))
        best_z = torch.where(keep, z_new, ex["best_z"])
        best_f = torch.where(keep, f_new, ex["best_f"])
        home = ((back | enter | runaway) & ~better).view(keep.shape)
        z_out = torch.where(home, ex["best_z"], z_new)
        f_out = torch.where(home, ex["best_f"], f_new)
        # A force that stays non-finite however small the retry ends the sample DIVERGED: the
        # loop sees a non-finite force and keeps the last finite state (never a silent retry loop).
        nonfinite = torch.where(finite, 0, ex["nonfinite"] + 1)
        dead = (nonfinite >= _NONFINITE_LIMIT).view(keep.shape)
        f_out = torch.where(dead, torch.full_like(f_out, math.nan), f_out)
        extra = dict(
            YR=YR, gram=gram, valid=valid, count=ex["count"] + 1, scale=scale,
            least_fn=least_fn, best_z=best_z, best_f=best_f, best_res=best_res,
            stall_ref=stall_ref, stall_fn=stall_fn, since=since, relax=relax,
            settling=settling, settle_fn=settle_fn, entry_fn=entry_fn, relax_cut=relax_cut,
            restarts=ex["restarts"] + restart.long(), nonfinite=nonfinite,
        )
        return state.replace(
            z=z_out,
            f=f_out,
            rejected=state.rejected + back.long(),
            stalled=state.stalled | stalled,
            extra=extra,
        )

    def _accelerate(
        self, ex: dict[str, Tensor], x: Tensor, r: Tensor, y: Tensor, relaxing: Tensor,
        shape: torch.Size,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One Anderson move from x (b, n) with r = h F(x) and y = x + beta s r: the updated ring,
        Gram matrix and history mask, the restart flags (b,) and z_new (shape like z)."""
        b, n = x.shape
        m = ex["valid"].shape[1]
        dev = x.device
        # Write (y_k, r_k) into the ring slot (in place, see `_ring_write`) and refresh that row
        # and column of the Gram matrix. g_i = <r_i, r_k> as one (1, n) x (n, m) product per
        # sample (the (m, n) x (n, 1) form takes a slow matrix-vector path on the CPU).
        slot = ex["count"] % m
        here = slot.unsqueeze(1) == torch.arange(m, device=dev)  # (b, m)
        YR = _ring_write(ex["YR"], slot, y, r)
        Rt = YR[:, :, n:].transpose(1, 2)
        g = torch.bmm(r.unsqueeze(1), Rt.conj() if r.is_complex() else Rt).squeeze(1)
        gram = torch.where(here.unsqueeze(1), g.unsqueeze(2), ex["gram"])  # column k
        gram = torch.where(here.unsqueeze(2), g.conj().unsqueeze(1), gram)  # row k
        valid = ex["valid"] | here

        alpha, cond = mixing_weights(gram, valid, self.regularization)
        # Restart above the threshold, and always on a failed solve (cond inf or NaN, also when
        # restart_cond is inf).
        restart = ~relaxing & ~(cond <= min(self.restart_cond, sys.float_info.max))
        picard = (restart | relaxing).unsqueeze(1)
        valid = torch.where(picard, here, valid)
        alpha = torch.where(picard, here.to(alpha.dtype), alpha).to(x.dtype)

        # move = sum alpha_i y_i - x_k, capped at `_REACH` times the sample's scale.
        move = torch.bmm(alpha.unsqueeze(1), YR[:, :, :n]).squeeze(1).sub_(x)
        length = torch.linalg.vector_norm(move, dim=-1)
        r2 = gram.diagonal(dim1=-2, dim2=-1).real.masked_fill(~valid, 0)  # ||r_i||^2
        reach = _REACH * (torch.linalg.vector_norm(x, dim=-1) + r2.amax(-1).sqrt())
        cut = (reach / length.clamp_min(torch.finfo(length.dtype).tiny)).clamp(max=1.0)
        z_new = torch.addcmul(x, cut.unsqueeze(-1).to(x.dtype), move).reshape(shape)
        return YR, gram, valid, restart, z_new

    def finalize(self, state: StepState) -> tuple[Tensor, Tensor]:
        """The lowest-residual iterate of each sample and its force, both like z0."""
        ex = state.extra
        now = force_residual(state.z, state.f)
        take_now = (now <= ex["best_res"]).view((-1,) + (1,) * (state.z.ndim - 1))
        return (
            torch.where(take_now, state.z, ex["best_z"]),
            torch.where(take_now, state.f, ex["best_f"]),
        )

    def info(self, state: StepState) -> dict[str, Any]:
        """`restarts` (all samples), `eps` resolved, `history` (ring length after the n + 1 cap),
        `gain_scale_min` (smallest gain scale s left by rejections)."""
        ex = state.extra
        return {
            "restarts": int(ex["restarts"].sum()),
            "eps": float(state.eps[0]) if state.eps.numel() else math.nan,
            "history": int(ex["valid"].shape[1]),
            "gain_scale_min": float(ex["scale"].min()),
        }


def _ring_write(ring: Tensor, slot: Tensor, y: Tensor, r: Tensor) -> Tensor:
    """Write rows y and r (b, n) side by side into ring (b, m, 2n) at slot (b,), in place, and
    return the ring.

    In place because a copy of the whole history per iteration costs more than the mixing itself
    (and, for large states on the CPU, fresh page-faulted memory); y and r go into the two halves
    directly, without a concatenated (b, 2n) copy. It is safe with the settle loop: the loop hands
    `step` a state it owns (its compacted working set, or a fresh `take` copy) and only reads the
    returned state; the overwritten slot holds the pair about to leave the history, and a sample
    whose new state the loop refuses (DIVERGED) never steps again. A caller that reuses a state
    after `step` must copy `extra["YR"]` first.
    """
    n = y.shape[1]
    rows = torch.arange(ring.shape[0], device=ring.device)
    ring[:, :, :n].index_put_((rows, slot), y)
    ring[:, :, n:].index_put_((rows, slot), r)
    return ring


def _check_half_open(name: str, value: Any, shown: str, inside: Any) -> float:
    """A real number in a half-open interval `shown`, or an error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number in {shown}, got {type(value).__name__}")
    if not inside(value):  # False for NaN
        raise ValueError(f"{name} must be in {shown}, got {value}")
    return float(value)


def mixing_weights(gram: Tensor, valid: Tensor, regularization: float) -> tuple[Tensor, Tensor]:
    """Anderson weights from a masked Gram matrix, batched, without host syncs.

    Args:
        gram: (b, m, m) Hermitian Gram matrix <r_i, r_j> = sum conj(r_i) r_j of the residuals.
        valid: (b, m) bool, the history slots in use (at least one per sample); others get weight 0.
        regularization: relative Tikhonov weight lam >= 0 (see the module docstring).

    Returns:
        alpha (b, m), summing to 1, float64 (complex128 for a complex Gram matrix; the Gram
        matrix's own dtype on MPS, which has no float64), minimising ||sum alpha_i r_i||^2
        + lam sum |alpha_i|^2 ||r_i||^2; and the 1-norm condition number (b,) of the scaled,
        regularized bordered system (inf where the solve failed or gave non-finite weights, whose
        alpha is then 0).
    """
    b, m = valid.shape
    if gram.device.type == "mps":
        dtype = gram.dtype
    else:
        dtype = torch.complex128 if gram.is_complex() else torch.float64
    H = gram.to(dtype)
    real = H.real.dtype
    w = H.diagonal(dim1=-2, dim2=-1).real.clamp_min(torch.finfo(real).tiny).sqrt()  # ||r_i||
    u = torch.where(valid, w.reciprocal(), 0.0)  # 1 / ||r_i|| on the used slots, else 0
    d = u / u.amax(-1, keepdim=True)  # min(w) / w_i, <= 1; 0 on unused slots
    K = torch.zeros(b, m + 1, m + 1, dtype=dtype, device=H.device)
    A = K[:, 1:, 1:]
    torch.mul(H, u.unsqueeze(-1) * u.unsqueeze(-2), out=A)  # C_ij = <u_i, u_j>; 0 off the used
    # Unused slots become identity rows with d_i = 0, which forces their weight to 0.
    A.diagonal(dim1=-2, dim2=-1).copy_(torch.where(valid, 1.0 + regularization, 1.0))
    K[:, 0, 1:] = d
    K[:, 1:, 0] = d
    K_inv, info = torch.linalg.inv_ex(K)
    alpha = d * K_inv[:, 1:, 0]  # [nu; gamma] = K^-1 e_0
    alpha = alpha / alpha.sum(-1, keepdim=True)  # exact in theory; removes rounding drift
    cond = K.abs().sum(-2).amax(-1) * K_inv.abs().sum(-2).amax(-1)
    ok = (info == 0) & torch.isfinite(cond + alpha.abs().sum(-1))
    return torch.where(ok.unsqueeze(-1), alpha, 0.0), torch.where(ok, cond, math.inf)


__all__ = ["Anderson", "mixing_weights"]
