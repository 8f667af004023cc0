"""A high-accuracy ODE solve with torchdiffeq: the reference for the true continuous dynamics.

docs/physics.md section 4: on analog hardware the relaxation is the continuous ODE dz/dt = F(z),
with no eps at all; an adaptive solver with tight tolerances (dopri5, rtol 1e-7, atol 1e-9) tells
what the circuit does, so that an explicit-Euler cycle can be recognised as a discretization
artifact.

How it runs in the shared loop. Each loop step integrates the active samples over one *chunk* of
continuous time with `torchdiffeq.odeint` and returns the state at the chunk's end, F there, and the
time reached; the loop judges the force residual per sample at every chunk boundary and stops a
sample as soon as it meets `tol`. One loop step is therefore one chunk, and the per-step residual
trace that `detect_cycle` reads is the residual sampled at chunk boundaries.

The chunk schedule (default `chunk=None`). A chunk spans at most `chunk_steps` of the solver's own
steps (the step size its controller proposed at the end of the previous chunk), at most twice the
previous chunk, and at most the length over which F turns by `_MAX_TURN` (45 degrees):

    h_next = min(chunk_steps * dt_next,  2 * h,  h * _MAX_TURN / angle(F(z_start), F(z_end)))

Why: the trace must resolve an oscillation, or a limit cycle aliases. A chunk as long as the period
samples the residual at the same phase every time (a flat floor or a slow alias that may show too
few direction changes), while `detect_cycle` needs a tail of >= 2 * cycle_min_tail = 100 entries
with several oscillations in it. On a cycle of angular speed omega, F = dz/dt rotates at omega, so
the turn bound keeps >= 8 trace entries per period whatever the tolerance (on the Hopf cycle of
tests/test_ode.py, omega = 2 and radius 0.5, dopri5 takes ~28 steps per period at rtol 1e-7 and ~3
at rtol 1e-4, so there the turn bound, not the step bound, sets the chunk: pi / 8 = period / 8).
The step bound ties the chunk to the fastest time scale the solver resolves and keeps the work of
one loop step bounded (`max_steps` bounds the evaluations, and the loop stops a converged sample
within ~`chunk_steps` solver steps of reaching `tol`); the factor-2 growth lets the turn probe see
every intermediate length, so the chunk cannot jump over a whole period. Where the dynamics relax
without rotating, the step size grows as the state settles (up to dopri5's stability limit
~3.3 / |lambda_max|) and the chunk with it; where they start to rotate or stiffen, the turn and step
bounds shrink it again, without a separate rule.
A fixed `chunk=h` (time units) makes every chunk end at a multiple of h, for trajectories compared
on a grid; a fixed chunk much longer than an oscillation's period aliases it (see above).

Step size across chunks: the controller's last proposal is carried into the next chunk as
torchdiffeq's `first_step`, so step selection does not restart; the chunk end is forced to be a
mesh point (`step_t`), so no step is wasted and, for first-same-as-last tableaus (dopri5, dopri8,
bosh3), the state at the chunk's end and F there are the solver's own last stage: no extra force
evaluation for the loop's residual, and torchdiffeq's first evaluation of the next chunk (at the
same state) is served from it too. Other methods cost one evaluation per chunk for F(z_end).

Tolerances near a fixed point. atol + rtol |z| is a tolerance on the state, but settling is
judged on the force residual: near z* an explicit solver at its stability limit keeps the stiff
components alive at the tolerance level and the residual floors at ~||J|| rtol (1.8e-7 measured on
a 4-d linear system at rtol 1e-7, so tol = 1e-8 was never met). Each chunk therefore also holds a
sample's local error below 1 % of its displacement per step (`ODESolver._weights`): tighter, never
looser, than the user's tolerances; the same system then converges to tol 1e-12 in ~600
evaluations, and every local error still meets rtol/atol.

Batches. torchdiffeq takes one step size for the whole tensor; the error norm used here is the
largest per-sample RMS error ratio, so a step is accepted only when *every* sample meets rtol/atol
(torchdiffeq's default RMS over the whole batch would let one sample's error hide among the
others'). Settled samples leave the batch (the loop's sub-batching), so they cost nothing more.
A failure of the solver (torchdiffeq's "underflow in dt" or "max_num_steps exceeded") is retried
sample by sample; a sample that still fails keeps its last accepted state and is marked stalled
(STALLED, or DIVERGED when that state has exploded), with a RuntimeWarning quoting torchdiffeq.

Precision. rtol 1e-7 / atol 1e-9 are float64 tolerances. In float32 (eps 1.2e-7) an error
estimate below ~10 eps is rounding noise, so the effective tolerances are floored at rtol >= 10 eps
and atol >= eps of the state's dtype (a RuntimeWarning says so once per settle); a float32 run is a
consistency check, not a reference. Host syncs: torchdiffeq decides acceptance of every internal
step on the host; this module adds none of its own inside a chunk.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

# torchdiffeq lists its method names and solver families only in its private modules.
from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
from torchdiffeq._impl.solvers import FixedGridODESolver

from ._base import Integrator, StepState, check_positive, check_range
from ._force import CountedForce

# Largest turn of F over one chunk (radians): >= 8 trace entries per period of a rotation.
_MAX_TURN = math.pi / 4
# Largest growth of the chunk from one loop step to the next.
_GROWTH = 2.0
# Near a fixed point, local errors are held below this fraction of the per-step displacement.
_MOTION = 0.01
# ... but never below this many machine epsilons of |z| (the state's own rounding).
_ROUNDING = 100.0
# Effective tolerances in a dtype of machine epsilon e: rtol >= 10 e, atol >= e.
_RTOL_EPS, _ATOL_EPS = 10.0, 1.0
# Attempted solver steps per chunk (times chunk_steps, at least 512) before a chunk is cut short.
_CHUNK_STEP_CAP = 64

_EXCLUDED = {
    "scipy_solver": "it round-trips every evaluation through NumPy on the host and reports no "
    "step sizes; call scipy.integrate.solve_ivp directly for a SciPy reference",
}
_RESERVED = {
    "step_t": "ODESolver places the chunk ends itself",
    "jump_t": "F(z) is autonomous and has no jumps in time",
    "grid_constructor": "ODESolver builds the fixed-step grid from step_size",
}
# Arguments of torchdiffeq's solver classes that are not options.
_NOT_OPTIONS = {"self", "func", "y0", "rtol", "atol"}


def _kind(cls: type) -> str | None:
    """"adaptive" (embedded Runge-Kutta pairs), "fixed" (fixed-grid methods) or None (other)."""
    if issubclass(cls, RKAdaptiveStepsizeODESolver):
        return "adaptive"
    if issubclass(cls, FixedGridODESolver):
        return "fixed"
    return None


def solver_names() -> list[str]:
    """The torchdiffeq method names ODESolver accepts."""
    return sorted(
        n for n, cls in _TORCHDIFFEQ_SOLVERS.items() if n not in _EXCLUDED and _kind(cls)
    )


def _solver_options(cls: type) -> set[str]:
    """Keyword options a torchdiffeq solver class takes (its constructors' named parameters)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in _NOT_OPTIONS:
                names.add(p.name)
    if issubclass(cls, RKAdaptiveStepsizeODESolver):
        names.add("norm")  # taken by the base class through **kwargs
    return names


def _is_fsal(cls: type) -> bool:
    """True when the tableau's last stage is evaluated at the step's result (first same as last).

    The same test torchdiffeq applies in `_runge_kutta_step`: then its last evaluation of a step
    is F(y1) exactly, at the very y1 it returns.
    """
    tab = cls.tableau
    return bool(
        float(tab.alpha[-1]) == 1.0
        and float(tab.c_sol[-1]) == 0.0
        and torch.equal(tab.c_sol[:-1], tab.beta[-1])
    )


def _real_dtype(z: Tensor) -> torch.dtype:
    """The real dtype of a (possibly complex) state."""
    return z.real.dtype if z.is_complex() else z.dtype


def _rms(x: Tensor) -> Tensor:
    """Per-sample RMS of x (batch, ...) -> (batch,), real."""
    return x.abs().square().flatten(1).mean(1).sqrt()


class _WeightedMaxNorm:
    """torchdiffeq error norm: the largest per-sample RMS error ratio, each sample's times `w` (b,).

    The max over samples holds every sample to the tolerance; `w` >= 1 tightens a sample's
    tolerance near its fixed point (see `ODESolver._weights`).
    """

    def __init__(self, weights: Tensor):
        self.weights = weights

    def __call__(self, x: Tensor) -> Tensor:
        return (_rms(x) * self.weights.to(_real_dtype(x))).amax()


class _Rhs:
    """F(z) in torchdiffeq's form func(t, y), through the CountedForce, with a memory.

    * The first call of a chunk is at the chunk's initial state: F there is already known (FSAL
      across chunks), so it is served without an evaluation.
    * `last_y`, `last_f`: the most recent evaluation (the final stage of the last step).
    * `callback_step` (torchdiffeq calls it before every attempted step): the step size the
      controller proposes and the last accepted state and time, for carrying the step size and
      for recovering from a failure.
    """

    def __init__(self, force: CountedForce, y0: Tensor, f0: Tensor):
        self.force = force
        self.y0, self.f0 = y0, f0
        self.last_y: Tensor | None = None
        self.last_f: Tensor | None = None
        self.proposed: Tensor | None = None
        self.accepted_y: Tensor = y0
        self.accepted_t: Tensor | None = None
        self.rejected = 0
        self.partial = False  # the chunk hit its step cap and ends at the last accepted step

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        f = self.f0 if y is self.y0 else self.force(y)
        self.last_y, self.last_f = y, f
        return f

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.proposed = dt
        self.accepted_y, self.accepted_t = y0, t0


class _AdaptiveRhs(_Rhs):
    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


class ODESolver(Integrator):
    """Settle by integrating dz/dt = F(z) with a torchdiffeq solver, chunk by chunk.

    Args:
        method: a torchdiffeq method name (`solver_names()`: dopri5, dopri8, bosh3, rk4, ...).
            Fixed-step methods need `options={"step_size": h}`.
        rtol, atol: relative and absolute local error tolerances (> 0) of adaptive methods, per
            sample (the error norm is the largest per-sample RMS ratio). Floored at 10 eps and
            eps of the state's dtype (float32: rtol >= 1.2e-6), with a warning.
        chunk: None (default) for the automatic schedule (module docstring), or a fixed chunk
            length in time units of the force (> 0).
        chunk_steps: solver steps per chunk in the automatic schedule (>= 1); for fixed-step
            methods, the number of `step_size` steps per chunk.
        options: torchdiffeq options of the method (`first_step` sets the initial step; `max_step`,
            `min_step`, `safety`, `ifactor`, `dfactor`,
            `norm`, ...; `max_num_steps` counts attempted steps per chunk, default
            max(64 chunk_steps, 512): a chunk that needs more ends at its last accepted step and
            the next loop step goes on from there, so `max_steps` bounds the work).
            `step_t`, `jump_t`, `grid_constructor` are reserved.

    Shapes: z (batch, ...), any floating dtype, any device. `SettleResult.t` (batch,) is the
    continuous time reached, in time units of the force; `info["step_size"]` (batch,) the last
    step size the controller proposed (fixed-step methods: `step_size`).
    """

    name = "ode"
    default_max_steps = 2000

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-7,
        atol: float = 1e-9,
        chunk: float | None = None,
        chunk_steps: int = 8,
        options: dict[str, Any] | None = None,
    ):
        if not isinstance(method, str):
            raise TypeError(
                f"method must be a torchdiffeq method name, got {type(method).__name__}"
            )
        if method in _EXCLUDED:
            raise ValueError(f"method {method!r} is not supported: {_EXCLUDED[method]}")
        if method not in _TORCHDIFFEQ_SOLVERS:
            raise ValueError(f"unknown method {method!r}; choose one of {solver_names()}")
        self.method = method
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        self.chunk = None if chunk is None else check_positive("chunk", chunk)
        self.chunk_steps = check_range("chunk_steps", chunk_steps, 1, 10**6, integer=True)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        self.options = dict(options or {})
        cls = _TORCHDIFFEQ_SOLVERS[method]
        kind = _kind(cls)
        if kind is None:
            raise ValueError(
                f"method {method!r} is neither an adaptive Runge-Kutta pair nor a fixed-grid "
                f"method; choose one of {solver_names()}"
            )
        self._kind = kind
        self._fsal = self._kind == "adaptive" and _is_fsal(cls)
        self._order = int(getattr(cls, "order", 1))
        self._solver_options = self._check_options(cls)

    # -- configuration -------------------------------------------------------------------------
    def _check_options(self, cls: type) -> dict[str, Any]:
        """Validate `options`; return the ones passed to torchdiffeq on every chunk."""
        opts = dict(self.options)
        for key in sorted(set(opts) & set(_RESERVED)):
            raise ValueError(f"options[{key!r}] is reserved: {_RESERVED[key]}")
        allowed = _solver_options(cls) - set(_RESERVED)
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for torchdiffeq method {self.method!r}; "
                f"allowed: {sorted(allowed)}"
            )
        if self._kind == "fixed":
            if "step_size" not in opts:
                raise ValueError(
                    f"fixed-step method {self.method!r} needs options={{'step_size': h}} (h > 0, "
                    "time units of the force)"
                )
            self._step_size = check_positive("options['step_size']", opts.pop("step_size"))
            # Steps per chunk: the fixed chunk in steps no longer than step_size, or chunk_steps.
            if self.chunk is None:
                self._grid_steps = self.chunk_steps
            else:
                self._grid_steps = max(1, math.ceil(self.chunk / self._step_size - 1e-9))
        else:
            if "first_step" in opts:
                self._first_step: float | None = check_positive(
                    "options['first_step']", opts.pop("first_step")
                )
            else:
                self._first_step = None
            # Per chunk, so one loop step's work is bounded: a chunk that needs more attempted steps
            # ends at its last accepted one (`_run`) and the next chunk goes on from there.
            opts.setdefault("max_num_steps", max(_CHUNK_STEP_CAP * self.chunk_steps, 512))
        return opts

    def _tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        """rtol, atol used for a state of `dtype` (floored at the dtype's resolution)."""
        eps = torch.finfo(dtype).eps
        return max(self.rtol, _RTOL_EPS * eps), max(self.atol, _ATOL_EPS * eps)

    # -- the method ----------------------------------------------------------------------------
    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        real = _real_dtype(z0)
        rtol, atol = self._tolerances(real)
        if self._kind == "adaptive" and (rtol, atol) != (self.rtol, self.atol):
            warnings.warn(
                f"ode: rtol={self.rtol:g}, atol={self.atol:g} are below the resolution of {real} "
                f"(eps {torch.finfo(real).eps:.2g}); using rtol={rtol:.3g}, atol={atol:.3g}. "
                "Use float64 for a reference solve.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._kind == "fixed":
            dt = torch.full((z0.shape[0],), self._step_size, dtype=real, device=z0.device)
        elif self._first_step is not None:
            dt = torch.full((z0.shape[0],), self._first_step, dtype=real, device=z0.device)
        else:
            with torch.no_grad():
                dt = self._initial_step(force, z0, f0, rtol, atol).to(real)
        state = StepState.start(z0, f0, dt)
        if self.chunk is None and self._kind == "adaptive":
            state.extra["chunk"] = self.chunk_steps * dt
        return state

    def _initial_step(self, force: CountedForce, z: Tensor, f: Tensor, rtol: float,
                      atol: float) -> Tensor:
        """Per-sample initial step (Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4), (b,).

        One force evaluation; the estimate torchdiffeq makes for a single tensor, made per sample
        (so that one sample's scale does not set another's step) and in units of the force's own
        time scale 1 / rate (`CountedForce.rate`): HNW's thresholds (1e-5, 1e-15), fallbacks
        (1e-6) and the root h1 = (0.01 / max(d1, d2))^(1/(p+1)) assume a unit time scale, so they
        are applied to the force divided by its rate and the step is scaled back. For rate 1 this
        is HNW's estimate exactly; for a force multiplied by k it gives the step divided by k.
        """
        def per_sample(x: Tensor) -> Tensor:
            return x.view(-1, *([1] * (z.ndim - 1)))

        tiny_real = torch.finfo(_real_dtype(z)).tiny
        rate = force.rate.to(device=z.device, dtype=_real_dtype(z))
        scale = atol + z.abs() * rtol
        d0, d1 = _rms(z / scale), _rms(f / scale) / rate  # d1 in units of the force's time
        tiny = (d0 < 1e-5) | (d1 < 1e-5)
        h0 = torch.where(tiny, torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(tiny_real))
        f1 = force(z + per_sample(h0 / rate).to(z.dtype) * f)
        d2 = _rms((f1 - f) / scale) / rate / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(
            dmax <= 1e-15,
            torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
            (0.01 / dmax.clamp_min(tiny_real)) ** (1.0 / (self._order + 1)),
        )
        return torch.minimum(100 * h0, h1) / rate

    def step(self, force: CountedForce, state: StepState) -> StepState:
        z, f = state.z, state.f
        real = state.t.dtype
        # All active samples have been integrated together, so they share one step size; the
        # smallest is the safe choice after a per-sample retry gave them different ones.
        dt = state.eps.amin()
        if self._kind == "fixed":
            length = self._grid_steps * self._step_size if self.chunk is None else self.chunk
            grid = torch.linspace(0.0, length, self._grid_steps + 1, dtype=torch.float64,
                                  device=z.device)
            h = grid[-1]
        elif self.chunk is None:
            h = state.extra["chunk"].amin().to(torch.float64)
            grid = torch.stack((torch.zeros_like(h), h))
        else:
            h = torch.tensor(self.chunk, dtype=torch.float64, device=z.device)
            grid = torch.stack((torch.zeros_like(h), h))

        out = self._integrate(force, z, f, grid, dt)
        if out is None:  # torchdiffeq failed on the batch: retry sample by sample
            parts = [self._integrate_alone(force, z, f, grid, dt, i) for i in range(z.shape[0])]
            z1 = torch.cat([p[0] for p in parts])
            f1 = torch.cat([p[1] for p in parts])
            t1 = torch.cat([p[2] for p in parts])
            dt1 = torch.cat([p[3] for p in parts])
            stalled = torch.cat([p[4] for p in parts])
            rejected = torch.cat([p[5] for p in parts])
        else:
            z1, f1, t_reached, dt_next, rej = out
            b = z.shape[0]
            h = torch.minimum(h, t_reached.to(h.dtype))  # a chunk cut short by the step cap
            t1 = t_reached.to(real).expand(b)
            dt1 = dt_next.to(real).expand(b)
            stalled = torch.zeros(b, dtype=torch.bool, device=z.device)
            rejected = torch.full((b,), rej, dtype=torch.long, device=z.device)

        new = state.replace(
            z=z1, f=f1, t=state.t + t1, eps=dt1, stalled=stalled, rejected=state.rejected + rejected
        )
        if "chunk" in state.extra:
            new.extra = dict(state.extra, chunk=self._next_chunk(h.to(real), f, f1, dt1))
        return new

    def _next_chunk(self, h: Tensor, f0: Tensor, f1: Tensor, dt: Tensor) -> Tensor:
        """Automatic schedule: the next chunk length per sample (b,) after a chunk of length h.

        f0, f1: F at the chunk's start and end (b, ...); dt: the carried step size (b,).
        """
        dims = tuple(range(1, f0.ndim))
        dot = (f0.conj() * f1).real.sum(dims) if f0.is_complex() else (f0 * f1).sum(dims)
        norms = torch.linalg.vector_norm(f0, dim=dims) * torch.linalg.vector_norm(f1, dim=dims)
        cos = (dot / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(-1.0, 1.0)
        turn = torch.arccos(cos).to(dt.dtype)
        by_turn = h * _MAX_TURN / turn.clamp_min(torch.finfo(dt.dtype).tiny)
        return torch.minimum(torch.minimum(self.chunk_steps * dt, _GROWTH * h), by_turn)

    def _integrate(self, force: CountedForce, z: Tensor, f: Tensor, grid: Tensor,
                   dt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int] | None:
        """One chunk for the batch: (z_end, F(z_end), time reached, next step, rejections).

        None when torchdiffeq gives up (its assertions: step underflow, too many steps).
        """
        rhs, out = self._run(force, z, f, grid, dt)
        dt_next = dt if rhs.proposed is None else rhs.proposed
        if rhs.partial:
            assert rhs.accepted_t is not None
            z1 = rhs.accepted_y
            f1 = f if z1 is z else (rhs.last_f if z1 is rhs.last_y else force(z1))
            return z1, f1, rhs.accepted_t.to(grid.dtype), dt_next, rhs.rejected
        if out is None:
            return None
        z1, f1 = self._end_state(force, rhs, out)
        return z1, f1, grid[-1], dt_next, rhs.rejected

    def _integrate_alone(self, force: CountedForce, z: Tensor, f: Tensor, grid: Tensor,
                         dt: Tensor, i: int) -> tuple[Tensor, ...]:
        """Sample `i` alone after a batch failure: (z, f, t, dt, stalled, rejected), rows of 1."""
        index = torch.tensor([i], device=z.device)
        view = force.restrict(index)
        zi, fi = z.index_select(0, index), f.index_select(0, index)
        rhs, out = self._run(view, zi, fi, grid, dt)
        real = _real_dtype(z)
        rejected = torch.full((1,), rhs.rejected, dtype=torch.long, device=z.device)
        if rhs.partial:  # cut short by the step cap: go on from the last accepted step next time
            assert rhs.accepted_t is not None
            za = rhs.accepted_y
            fa = fi if za is zi else (rhs.last_f if za is rhs.last_y else view(za))
            dt1 = (dt if rhs.proposed is None else rhs.proposed).to(real).reshape(1)
            stalled = torch.zeros(1, dtype=torch.bool, device=z.device)
            return za, fa, rhs.accepted_t.to(real).reshape(1), dt1, stalled, rejected
        if out is not None:
            z1, f1 = self._end_state(view, rhs, out)
            dt1 = (dt if rhs.proposed is None else rhs.proposed).to(real).reshape(1)
            stalled = torch.zeros(1, dtype=torch.bool, device=z.device)
            return z1, f1, grid[-1].to(real).reshape(1), dt1, stalled, rejected
        # Keep the last accepted state: the loop calls it DIVERGED if it has exploded, or if the
        # solver failed on a non-finite force (then F there is reported as NaN).
        za = rhs.accepted_y
        fa = fi if za is zi else view(za)
        if rhs.last_f is not None and not bool(torch.isfinite(rhs.last_f).all()):
            fa = torch.full_like(fa, math.nan)
        ta = torch.zeros((), dtype=torch.float64, device=z.device) if rhs.accepted_t is None \
            else rhs.accepted_t
        stalled = torch.ones(1, dtype=torch.bool, device=z.device)
        return za, fa, ta.to(real).reshape(1), dt.to(real).reshape(1), stalled, rejected

    def _run(self, force: CountedForce, z: Tensor, f: Tensor, grid: Tensor,
             dt: Tensor) -> tuple[_Rhs, Tensor | None]:
        rhs_cls = _AdaptiveRhs if self._kind == "adaptive" else _Rhs
        rhs = rhs_cls(force, z, f)
        real = _real_dtype(z)
        rtol, atol = self._tolerances(real)
        opts = dict(self._solver_options)
        if self._kind == "adaptive":
            # first_step carries the step size across chunks; step_t makes the chunk's end a
            # mesh point, so the returned state is a step's result, not an interpolant.
            opts["first_step"] = dt.to(torch.float64)
            opts["step_t"] = grid[-1:]
            if "norm" not in self.options:
                opts["norm"] = _WeightedMaxNorm(self._weights(z, f, dt, rtol, atol))
        try:
            out = odeint(rhs, z, grid, rtol=rtol, atol=atol, method=self.method, options=opts)
        except AssertionError as err:  # torchdiffeq reports its failures with assert
            if "max_num_steps" in str(err) and rhs.accepted_t is not None:
                # The chunk's step cap, not a failure: the chunk ends at the last accepted step.
                rhs.partial = True
                return rhs, None
            warnings.warn(
                f"ode: torchdiffeq {self.method} failed on {z.shape[0]} sample(s) ({err}); "
                + ("retrying them one by one" if z.shape[0] > 1 else
                   "the sample keeps its last accepted state and is marked stalled, or diverged "
                   "where the force there is not finite"),
                RuntimeWarning,
                stacklevel=4,
            )
            return rhs, None
        return rhs, out

    @staticmethod
    def _weights(z: Tensor, f: Tensor, dt: Tensor, rtol: float, atol: float) -> Tensor:
        """Per-sample tightening (b,) >= 1 of the error tolerance for one chunk.

        Near a fixed point atol + rtol |z| is large compared with the motion, and an explicit
        solver at its stability limit (|lambda dt| ~ 3.3 for dopri5) lets the stiff components grow
        until the error estimate catches them at the tolerance level: the numerical state hovers
        ~rtol |z| away from z* and the force residual floors at ~||J|| rtol, never lower (measured
        1.8e-7 on a 4-d linear system with eigenvalues -1..-3.9 at rtol 1e-7). So the tolerance
        of each sample is also held below `_MOTION` times its displacement per step, rms(F) dt:
        then the stiff part stays below a fraction ~3.3 * _MOTION of the current residual and the
        residual keeps falling geometrically, as the continuous dynamics do. It never goes below
        `_ROUNDING` eps |z| (the state's rounding) and it never loosens the user's tolerance.
        """
        real = _real_dtype(z)
        standard = _rms(atol + rtol * z.abs())
        motion = _MOTION * _rms(f) * dt.to(real)
        rounding = _ROUNDING * torch.finfo(real).eps * _rms(z)
        return (standard / torch.maximum(motion, rounding).clamp_min(torch.finfo(real).tiny)
                ).clamp_min(1.0)

    def _end_state(self, force: CountedForce, rhs: _Rhs, out: Tensor) -> tuple[Tensor, Tensor]:
        """(z, F(z)) at the chunk's end: the last stage of an FSAL tableau, else one evaluation."""
        if self._fsal and rhs.last_y is not None and rhs.last_f is not None:
            return rhs.last_y, rhs.last_f
        z1 = out[-1]
        return z1, force(z1)

    def info(self, state: StepState) -> dict[str, Any]:
        real = state.t.dtype
        rtol, atol = self._tolerances(real)
        out: dict[str, Any] = {"solver": self.method, "step_size": state.eps.clone(),
                               "rtol": rtol, "atol": atol}
        if "chunk" in state.extra:
            out["chunk"] = state.extra["chunk"].clone()
        return out


__all__ = ["ODESolver", "solver_names"]
