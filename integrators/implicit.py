"""Implicit (backward) Euler by Newton-Krylov: z_{n+1} = z_n + eps F(z_{n+1}) (docs/physics.md
section 4).

Every step solves G(y) = y - z_n - eps F(y) = 0 for y = z_{n+1}. For a Jacobian eigenvalue mu the
step multiplies the error by 1 / (1 - eps mu), which is < 1 in modulus for *every* eps > 0 when
Re mu < 0: stiffness no longer limits the step. A stiff system (eigenvalues -1 and -1000) takes
steps of eps = 1 or larger where explicit Euler needs eps < 2 / 1000. The price is a nonlinear
solve per step.

Newton-Krylov, matrix-free, batched per sample:

* Newton on G from y_0 = z_n. There G(z_n) = -eps F(z_n) is known from the loop's state, so the
  first residual is free. Each direction s solves (I - eps J(y)) s = -G(y) by `gmres` with J v from
  a JVP of the force (forward-mode AD through the counted force, one force evaluation each; or a
  one-sided finite difference, `jvp="difference"`, for forces that forward AD cannot trace).
* Inexact Newton: the linear solve stops at ||G + G' s|| <= eta_k ||G||. `forcing=
  "eisenstat-walker"` (default) is Eisenstat & Walker's (1996) choice 1,
  eta_k = | ||G_k|| - ||G_{k-1} + G'_{k-1} s_{k-1}|| | / ||G_{k-1}||, which goes to 0 when the
  linear model predicts the nonlinear residual well (a near-linear step is then solved accurately
  at once) and stays loose far from the root; safeguarded by eta_k >= eta_{k-1}^phi when
  eta_{k-1}^phi > 0.1 (phi = golden ratio), capped at 0.5. The first term of a step is the
  choice-1 ratio measured on the first iteration of the sample's previous step (at most 0.1, and
  0.1 on the first step): consecutive steps of a trajectory see a similar nonlinearity, and a
  linear system then takes one Newton iteration per step. A float `forcing` is a fixed fraction.
  Both are raised to 0.5 * target / ||G_k|| when that is larger, so the last linear solve never
  over-solves past the Newton target (Kelley 2003, nsoli).
* Newton converges for a sample when ||G(y)|| <= max(newton_tol * eps ||F(z_n)||, floor): relative
  to the explicit step length eps ||F(z_n)|| (the size of the step being solved), with a floor of
  16 machine epsilons of the terms of G, ||y|| + ||z_n|| + eps ||F(y)|| + ||eps J|| ||y|| (the
  rounding level at which G can be evaluated; the last term is eps times the evaluation noise of a
  force with Jacobian J, with ||eps J|| estimated from the Krylov matvecs; 16 eps as the loop's
  precision floor). A sample whose residual stops contracting (||G_k|| > 0.9 ||G_{k-1}||) when
  already below sqrt(newton_tol) * eps ||F(z_n)|| is accepted too: it sits on the force's
  evaluation noise, which no smaller eps can remove.
* Leak split (force.has_split, F = -leak z + N(z)): the leak is exact and linear, so the Newton
  matrix is D - eps J_N with D = 1 + eps leak. GMRES is right-preconditioned with D^{-1} (the
  solve then minimizes the true residual). For a scalar leak D^{-1} is a pure rescaling (GMRES is
  invariant to it); for a per-node leak (a circuit's different time constants) it removes the
  leak's stiffness from the Krylov solve entirely. Evaluations and JVPs still go through F itself
  (I - eps J_F = D - eps J_N exactly, at the same count): `CountedForce.nonlinear` on a restricted
  view of a force without `select` does not embed the sub-batch (a core bug), F does.
* Fallback: a sample whose Newton does not converge in `max_newton` iterations, or produces a
  non-finite value, is retried from z_n with eps halved; every retry counts one in
  `state.rejected` (the loop reports the sum as `info["rejected_steps"]`). Below `min_eps` the
  sample is marked stalled (Status.STALLED), never an exception; DIVERGED instead when every
  attempt ended on a non-finite value (the force is NaN or inf near z_n at every step size).
  After an accepted step the next eps doubles back towards the configured eps.

Each sample has its own eps, Newton iteration count and Krylov solve; samples whose Newton has
converged leave the active set (the force is restricted to the others). Host syncs: one per Newton
iteration (which samples still iterate), one per fallback round, and GMRES's one per Krylov
iteration; each saves force evaluations.

NFE: every F evaluation and every JVP goes through the loop's counted force and counts one. Per
step: sum over Newton iterations of (GMRES matvecs + 1), including iterations of failed attempts.
Complex states work for holomorphic forces (JVPs are then complex-linear).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from ._base import Integrator, StepState, check_positive, check_range
from ._force import CountedForce
from ._krylov import gmres
from .imex import leak_tensor

_FORCING = "eisenstat-walker"
_EW_ETA0 = 0.1  # first forcing term of a step
_EW_ETA_MAX = 0.5  # Eisenstat-Walker terms never ask for less than halving the linear residual
_EW_PHI = (1 + math.sqrt(5)) / 2  # safeguard exponent of choice 1 (Eisenstat & Walker 1996)
_STAGNATION = 0.9  # ||G_k|| / ||G_{k-1}|| above this: Newton no longer contracts
_NOISE_EPS = 16  # machine epsilons: rounding floor of evaluating G (as the loop's precision floor)
_JVP_MODES = ("forward", "difference")
_forward_ad_ready = False


def _prepare_forward_ad() -> None:
    """Load torch's forward-AD decompositions once, outside the counted force.

    torch loads them lazily on the first `make_dual` and its loader calls the deprecated
    `torch.jit.script`, which warns from inside torch; that one message is silenced here.
    """
    global _forward_ad_ready
    if _forward_ad_ready:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        with fwAD.dual_level():
            fwAD.make_dual(torch.zeros(1), torch.zeros(1))
    _forward_ad_ready = True


class _Newton(NamedTuple):
    """Outcome of Newton on k samples; tensors have leading dimension k."""

    y: Tensor
    f: Tensor
    ok: Tensor
    newton: Tensor
    jvps: Tensor
    krylov: Tensor
    nonlinearity: Tensor
    """Eisenstat-Walker's choice-1 ratio after the first iteration (how well the linear model
    predicted G over the whole step); NaN where no iteration finished."""
    nonfinite: Tensor
    """Samples whose attempt ended on a non-finite value (not a mere Newton non-convergence)."""


class ImplicitEuler(Integrator):
    """Backward Euler with a Newton-Krylov solve per step (see the module docstring).

    Args:
        eps: step size in time units of the force (> 0). Large values are fine for stiff systems.
        newton_tol: Newton stops when ||G(y)|| <= newton_tol * eps ||F(z_n)|| (in (0, 1)).
        max_newton: Newton iterations per attempt (>= 1) before eps is halved.
        forcing: "eisenstat-walker" (adaptive, default) or a fixed fraction in (0, 1): each GMRES
            solve stops at ||G + G' s|| <= forcing * ||G||.
        krylov_restart: GMRES restart length (>= 1), i.e. basis vectors kept per sample.
        krylov_max_iter: GMRES iterations (JVPs) per Newton iteration (>= 1); default
            2 * krylov_restart.
        min_eps: smallest eps a fallback may try (time units, 0 < min_eps <= eps); below it the
            sample is stalled. Default eps / 1024 (ten halvings).
        jvp: "forward" (forward-mode AD through the force, exact) or "difference" (one-sided
            finite difference with step sqrt(machine eps) * (1 + ||y||) / ||v||, one force
            evaluation each, for forces forward AD cannot trace).
    """

    name = "implicit"
    default_max_steps = 500

    def __init__(
        self,
        eps: float = 1.0,
        *,
        newton_tol: float = 1e-6,
        max_newton: int = 10,
        forcing: str | float = _FORCING,
        krylov_restart: int = 20,
        krylov_max_iter: int | None = None,
        min_eps: float | None = None,
        jvp: str = "forward",
    ):
        self.eps = check_positive("eps", eps)
        self.newton_tol = check_positive("newton_tol", newton_tol)
        if self.newton_tol >= 1:
            raise ValueError(f"newton_tol must be in (0, 1), got {newton_tol}")
        self.max_newton = check_range("max_newton", max_newton, 1, 10**6, integer=True)
        if isinstance(forcing, str):
            if forcing != _FORCING:
                raise ValueError(
                    f"forcing must be {_FORCING!r} or a number in (0, 1), got {forcing!r}"
                )
            self.forcing: str | float = forcing
        else:
            self.forcing = check_positive("forcing", forcing)
            if self.forcing >= 1:
                raise ValueError(
                    f"forcing must be {_FORCING!r} or a number in (0, 1), got {forcing}"
                )
        self.krylov_restart = check_range("krylov_restart", krylov_restart, 1, 10**6, integer=True)
        if krylov_max_iter is None:
            krylov_max_iter = 2 * self.krylov_restart
        self.krylov_max_iter = check_range(
            "krylov_max_iter", krylov_max_iter, 1, 10**9, integer=True
        )
        if min_eps is None:
            min_eps = self.eps / 1024
        self.min_eps = check_positive("min_eps", min_eps)
        if self.min_eps > self.eps:
            raise ValueError(f"min_eps must be in (0, eps = {self.eps}], got {min_eps}")
        if jvp not in _JVP_MODES:
            raise ValueError(f"jvp must be one of {_JVP_MODES}, got {jvp!r}")
        self.jvp = jvp

    # -- protocol -----------------------------------------------------------------------------
    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        b = z0.shape[0]
        zeros = torch.zeros(b, dtype=torch.long, device=z0.device)
        state = StepState.start(
            z0, f0, self.eps, newton=zeros, jvps=zeros.clone(), krylov=zeros.clone()
        )
        state.extra["eps_min"] = state.eps.clone()  # smallest accepted eps per sample
        state.extra["eta0"] = torch.full_like(state.eps, _EW_ETA0)  # first forcing term of a step
        # Per-sample bounds of eps: a fallback below `eps_floor` stalls the sample; accepted steps
        # grow eps back up to `eps_cap`.
        state.extra["eps_floor"] = torch.full_like(state.eps, self.min_eps)
        state.extra["eps_cap"] = torch.full_like(state.eps, self.eps)
        return state

    def _next_eps(self, state: StepState, f_new: Tensor, eps_done: Tensor,
                  accepted: Tensor) -> Tensor:
        """eps of the next step after an accepted one (k,): double back towards the cap."""
        return torch.minimum(2 * eps_done, state.extra["eps_cap"])

    def step(self, force: CountedForce, state: StepState) -> StepState:
        b = state.z.shape[0]
        device = state.z.device
        eps_try = state.eps.clone()
        eps_done = torch.zeros_like(state.eps)
        z, f = state.z, state.f
        stalled = state.stalled.clone()
        fallbacks = torch.zeros_like(state.rejected)
        counts = {k: state.extra[k].clone() for k in ("newton", "jvps", "krylov")}
        eta0 = state.extra["eta0"]
        todo = torch.arange(b, device=device)
        # Samples whose every attempt so far ended on a non-finite value: at the eps floor they
        # are DIVERGED (the force is not finite near z_n at any step size), not STALLED.
        poisoned = torch.ones(b, dtype=torch.bool, device=device)
        while todo.numel() > 0:  # one round per eps halving; one host sync per round
            whole = todo.numel() == b
            view = force if whole else force.restrict(todo)
            zt = state.z if whole else state.z.index_select(0, todo)
            ft = state.f if whole else state.f.index_select(0, todo)
            out = self._newton(
                view, zt, ft, eps_try.index_select(0, todo), eta0.index_select(0, todo)
            )
            for k in counts:
                counts[k] = counts[k].index_add(0, todo, getattr(out, k))
            keep = out.ok.view(-1, *([1] * (z.ndim - 1)))
            z = z.index_copy(0, todo, torch.where(keep, out.y, zt))
            f = f.index_copy(0, todo, torch.where(keep, out.f, ft))
            eps_done = eps_done.index_copy(
                0, todo, torch.where(out.ok, eps_try.index_select(0, todo), 0)
            )
            # The next step of a trajectory sees a similar nonlinearity: start its forcing there (a
            # linear system then needs one Newton iteration per step), never looser than eta_0.
            first = torch.nan_to_num(out.nonlinearity, nan=_EW_ETA0).clamp(max=_EW_ETA0)
            eta0 = eta0.index_copy(0, todo, torch.where(out.ok, first, eta0.index_select(0, todo)))
            poisoned = poisoned.index_copy(0, todo, poisoned.index_select(0, todo) & out.nonfinite)
            failed = todo[~out.ok]
            eps_try = eps_try.index_copy(0, failed, eps_try.index_select(0, failed) / 2)
            fallbacks = fallbacks.index_add(0, failed, torch.ones_like(failed))
            too_small = eps_try.index_select(0, failed) < state.extra["eps_floor"].index_select(
                0, failed)
            stalled = stalled.index_fill(0, failed[too_small], True)
            todo = failed[~too_small]
        accepted = eps_done > 0
        dead = (stalled & ~state.stalled & poisoned).view(-1, *([1] * (z.ndim - 1)))
        f = torch.where(dead, torch.full_like(f, math.nan), f)  # the loop then says DIVERGED
        # Grow back towards the configured eps after a fallback (doubling per accepted step).
        next_eps = torch.where(accepted, self._next_eps(state, f, eps_done, accepted), eps_try)
        extra = dict(state.extra)
        extra.update(counts)
        extra["eta0"] = eta0
        extra["eps_min"] = torch.where(
            accepted, torch.minimum(state.extra["eps_min"], eps_done), state.extra["eps_min"]
        )
        return state.replace(
            z=z,
            f=f,
            t=state.t + eps_done,
            eps=next_eps,
            rejected=state.rejected + fallbacks,
            stalled=stalled,
            extra=extra,
        )

    def info(self, state: StepState) -> dict[str, Any]:
        """Newton iterations, JVPs and Krylov iterations summed over samples; smallest eps used."""
        return {
            "newton_iterations": int(state.extra["newton"].sum()),
            "jvp_evaluations": int(state.extra["jvps"].sum()),
            "krylov_iterations": int(state.extra["krylov"].sum()),
            "eps_fallbacks": int(state.rejected.sum()),
            "min_eps_used": float(state.extra["eps_min"].min()),
        }

    # -- Newton-Krylov on one attempt ---------------------------------------------------------
    def _newton(
        self, force: CountedForce, z_n: Tensor, f_n: Tensor, eps: Tensor, eta0: Tensor
    ) -> _Newton:
        """Solve y - z_n - eps F(y) = 0 for k samples.

        Shapes: z_n, f_n = F(z_n): (k, ...); eps, eta0 (first forcing term, Eisenstat-Walker only):
        (k,) real.
        """
        k = z_n.shape[0]
        dims = tuple(range(1, z_n.ndim))
        bshape = (-1,) + (1,) * (z_n.ndim - 1)
        u = torch.finfo(eps.dtype).eps

        def norm(x: Tensor) -> Tensor:
            return torch.linalg.vector_norm(x, dim=dims)

        y, f = z_n, f_n
        g = norm(f_n) * eps  # ||G(z_n)|| = eps ||F(z_n)||: the first residual is free
        G = -eps.view(bshape).to(z_n.dtype) * f_n
        target = self.newton_tol * g
        stagnant_ok = math.sqrt(self.newton_tol) * g
        zn_norm = norm(z_n)
        if self.forcing == _FORCING:
            eta = torch.maximum(eta0, 0.5 * self.newton_tol * torch.ones_like(g))
        else:
            eta = torch.full_like(g, float(self.forcing))
        nonlinearity = torch.full_like(g, math.nan)
        ok = torch.zeros(k, dtype=torch.bool, device=z_n.device)
        failed = torch.zeros_like(ok)
        n_newton = torch.zeros(k, dtype=torch.long, device=z_n.device)
        n_jvps = torch.zeros_like(n_newton)
        n_krylov = torch.zeros_like(n_newton)
        for it in range(self.max_newton):
            # One host sync per Newton iteration: which samples still iterate.
            idx = (~ok & ~failed).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            whole = idx.numel() == k
            view = force if whole else force.restrict(idx)

            def sel(t: Tensor, idx: Tensor = idx, whole: bool = whole) -> Tensor:
                return t if whole else t.index_select(0, idx)

            ya, fa, za, Ga, ea, ga = sel(y), sel(f), sel(z_n), sel(G), sel(eps), sel(g)
            e = ea.view(bshape).to(z_n.dtype)
            leak = leak_tensor(view, ya) if view.has_split else None
            matvec, precond, gain = self._operator(view, ya, fa, e, leak)
            s, info = gmres(
                matvec,
                -Ga,
                rtol=sel(eta),
                restart=self.krylov_restart,
                max_iter=self.krylov_max_iter,
                precond=precond,
                true_residual=False,  # Newton evaluates G(y + s) itself
            )
            y_new = ya + s
            f_new = view(y_new)
            G_new = y_new - za - e * f_new
            gn = norm(G_new)
            finite = torch.isfinite(gn)
            # Rounding level of G: its terms, and eps F's own evaluation noise ~ u ||eps J|| ||y||.
            floor = _NOISE_EPS * u * ((1 + gain()) * norm(y_new) + sel(zn_norm) + ea * norm(f_new))
            goal = torch.maximum(sel(target), torch.nan_to_num(floor, nan=0.0, posinf=0.0))
            converged = finite & (gn <= goal)
            noise = finite & (gn > _STAGNATION * ga) & (gn <= sel(stagnant_ok))
            lin = info.residual * ga  # ||G + G' s||, GMRES's (Givens) estimate
            eta_new = self._forcing(gn, ga, lin, sel(eta), goal)
            if it == 0:
                ratio = (gn - lin).abs() / torch.where(ga > 0, ga, torch.ones_like(ga))
                nonlinearity = nonlinearity.index_copy(0, idx, torch.where(finite, ratio, math.nan))

            n_newton = n_newton.index_add(0, idx, torch.ones_like(idx))
            n_jvps = n_jvps.index_add(0, idx, torch.full_like(idx, info.matvecs))
            n_krylov = n_krylov.index_add(0, idx, info.iterations)
            keep = finite.view(bshape)
            y = y.index_copy(0, idx, torch.where(keep, y_new, ya))
            f = f.index_copy(0, idx, torch.where(keep, f_new, fa))
            G = G.index_copy(0, idx, torch.where(keep, G_new, Ga))
            g = g.index_copy(0, idx, torch.where(finite, gn, ga))
            eta = eta.index_copy(0, idx, eta_new)
            ok = ok.index_copy(0, idx, converged | noise)
            failed = failed.index_copy(0, idx, ~finite)
        return _Newton(y, f, ok, n_newton, n_jvps, n_krylov, nonlinearity, failed)

    def _forcing(self, gn: Tensor, gprev: Tensor, lin: Tensor, eta: Tensor, goal: Tensor) -> Tensor:
        """Next forcing term per sample (see the module docstring), in [16 u, 0.9]."""
        safe_prev = torch.where(gprev > 0, gprev, torch.ones_like(gprev))
        if self.forcing == _FORCING:
            new = (gn - lin).abs() / safe_prev
            guard = eta**_EW_PHI
            new = torch.where(guard > 0.1, torch.maximum(new, guard), new)
            new = torch.clamp(new, max=_EW_ETA_MAX)
        else:
            new = torch.full_like(eta, float(self.forcing))
        safe_gn = torch.where(gn > 0, gn, torch.ones_like(gn))
        new = torch.maximum(new, 0.5 * goal / safe_gn)
        u = torch.finfo(eta.dtype).eps
        return torch.nan_to_num(new, nan=_EW_ETA0).clamp(_NOISE_EPS * u, 0.9)

    def _operator(
        self, force: CountedForce, y: Tensor, f: Tensor, e: Tensor, leak: Tensor | float | None
    ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor] | None, Callable[[], Tensor]]:
        """The Newton matrix v -> (I - eps J(y)) v, its right preconditioner (None without split),
        and `gain()`: the largest ||eps J v|| / ||v|| seen by the matvecs so far, (k,) real (a lower
        bound on ||eps J||, which scales the force's evaluation noise).

        Shapes: y, f = F(y): (k, ...); e: eps broadcastable to y; leak: float or broadcastable.
        """
        dims = tuple(range(1, y.ndim))
        real = y.real.dtype if y.is_complex() else y.dtype
        seen = [torch.zeros(y.shape[0], dtype=real, device=y.device)]

        def record(v: Tensor, eps_jv: Tensor) -> Tensor:
            vn = torch.linalg.vector_norm(v, dim=dims)
            ratio = torch.linalg.vector_norm(eps_jv, dim=dims) / torch.where(vn > 0, vn, 1)
            seen[0] = torch.maximum(seen[0], torch.nan_to_num(ratio, nan=0.0, posinf=0.0))
            return eps_jv

        jv = self._jvp_fn(force, y, f)

        def matvec(v: Tensor) -> Tensor:
            return v - record(v, e * jv(v))

        if leak is None:
            return matvec, None, lambda: seen[0]
        d = 1 + e * leak  # the exact leak part of the Newton matrix, diagonal
        return matvec, (lambda v: v / d), lambda: seen[0]

    def _jvp_fn(
        self, fn: Callable[[Tensor], Tensor], y: Tensor, fy: Tensor
    ) -> Callable[[Tensor], Tensor]:
        """v -> J_fn(y) v; `fy = fn(y)` (for the finite difference). One fn evaluation per call."""
        if self.jvp == "forward":
            _prepare_forward_ad()

            # Forward AD with dual tensors rather than torch.func.jvp: functorch forbids the
            # counted force's in-place counter update inside its transform.
            def forward(v: Tensor) -> Tensor:
                with fwAD.dual_level():
                    try:
                        tangent = fwAD.unpack_dual(fn(fwAD.make_dual(y, v))).tangent
                    except (RuntimeError, NotImplementedError) as exc:
                        raise RuntimeError(
                            f"forward-mode JVP of the force failed ({exc}); a force that forward "
                            "AD cannot trace can use ImplicitEuler(jvp='difference')"
                        ) from exc
                # A force that does not depend on z at all has no tangent: its Jacobian is zero.
                return torch.zeros_like(y) if tangent is None else tangent

            return forward
        dims = tuple(range(1, y.ndim))
        bshape = (-1,) + (1,) * (y.ndim - 1)
        real = y.real.dtype if y.is_complex() else y.dtype
        scale = math.sqrt(torch.finfo(real).eps) * (1 + torch.linalg.vector_norm(y, dim=dims))

        def difference(v: Tensor) -> Tensor:
            vn = torch.linalg.vector_norm(v, dim=dims)
            h = torch.where(vn > 0, scale / torch.where(vn > 0, vn, 1), 1).view(bshape).to(y.dtype)
            return (fn(y + h * v) - fy) / h

        return difference


__all__ = ["ImplicitEuler"]
