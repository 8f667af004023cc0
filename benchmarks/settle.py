"""Settle benchmark: every registered analogeq method vs torchdeq and torchdiffeq, same operators.

    .venv/bin/python benchmarks/settle.py [--quick] [--out benchmarks/results/settle.json]

Every row settles the same operator (benchmarks/operators.py) from the same z0 to a force residual
||F(z)|| / ||z|| = 1e-5 (docs/physics.md section 2) and is judged by recomputing that residual at
the returned z, never by a solver's own claim.

Peers and how their tolerance is converted (see also BENCHMARKS.md):
* torchdeq (`anderson_solver`, `broyden_solver`, `fixed_point_iter`, called exactly as
  `get_deq(...).eval()` calls them: under no_grad with max_iter, tol, stop_mode) iterate a map
  f(z) and stop when max over the batch of their relative residual
      r = ||f(x) - x|| / (||f(x)|| + 1e-9)
  drops below tol. Each solver runs on three maps, all of the form f(z) - z = h F(z) (see
  `peer_maps`): the Picard map analogeq's Anderson iterates (z + h F, h = 1 / (1/eps + leak)), the
  classic DEQ map N(z) / leak (h = 1 / leak) and the Euler map of our `euler` row (h = eps). At
  convergence ||f(x)|| = ||x|| (1 + O(r)), so g = ||F(x)|| / ||x|| = r / h to first order, and
  tol = h * 1e-5 makes them stop at g = 1e-5.
  Anderson and fixed_point_iter return f(x) rather than x (their residual is measured at x); for a
  contractive map the residual there is smaller, for a map with spectral radius > 1 it can be
  larger: hence the verification.
* torchdiffeq `odeint(..., method="dopri5")` has no steady-state stop: it integrates to a fixed
  horizon T, calibrated per operator (one untimed run with dense output) as the first time at which
  the force residual of every sample is <= 1e-5, then re-verified on the timed run. NFE comes from a
  counting wrapper around the vector field.

Timing: torch.set_num_threads is fixed (default 1) and printed. Per operator, every row runs once
untimed (warm-up; also the run whose NFE, residual and status are reported), then `--repeats`
rounds in which every row runs once, round-robin, so that load from other processes hits all rows
alike; wall = median of the timed runs. Rows that do not converge, or whose warm-up took over 20 s,
are timed once. Overhead = wall / (NFE x one bare force evaluation on the full batch), the bare
evaluation re-measured (median of 30) after every warm-up and round, and its median used; masking
makes evaluations on sub-batches cheaper, so the table also reports the full-batch-equivalent NFE
(sum of per-sample evaluations / batch) and the overhead against it.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import io
import json
import math
import os
import platform
import pstats
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analogeq.integrators import Status, force_residual, settle  # noqa: E402
from analogeq.integrators.settle import METHODS  # noqa: E402
from operators import Operator, operators, spectrum  # noqa: E402

TOL = 1e-5
DEFAULT_OUT = HERE / "results" / "settle.json"

# --------------------------------------------------------------------------------------------
# Settings: per method, per operator kind ("block", "rotor", "stiff"): options and step budget.
# One setting per method and operator, chosen as a user would (documented defaults where they
# exist, a stable eps for the explicit methods on the stiff system); never tuned on the timings.
# --------------------------------------------------------------------------------------------
STIFF_EULER_EPS = 1.9e-3  # < 2 / 1000, Euler's stability limit on the stiff system
_B, _R, _S = "block", "rotor", "stiff"

# method -> list of variants; a variant maps an operator kind to (options, max_steps). The first
# variant of a method is its default configuration (its constructor defaults where they are
# sensible); a second variant is added where the default fails on an operator and a documented
# option fixes it, so that both the default's failure and the method's capability are visible.
OURS: dict[str, list[dict[str, tuple[dict[str, Any], int]]]] = {
    "euler": [{
        _B: ({"eps": 0.1}, 4000),  # the digital baseline (docs/physics.md section 1)
        _R: ({"eps": 0.1}, 2000),  # past eps_crit = 0.077: expected to cycle
        _S: ({"eps": STIFF_EULER_EPS}, 20000),
    }],
    "adaptive": [
        # Default controller (Overshoot), default initial eps 0.1; on the stiff system eps 0.1
        # diverges before the controller reacts, so it starts at 1e-3 there.
        {_B: ({}, 4000), _R: ({}, 4000), _S: ({"eps": 1e-3}, 40000)},
        {_B: ({"controller": "pi"}, 4000), _R: ({"controller": "pi"}, 4000),
         _S: ({"controller": "pi", "eps": 1e-3}, 40000)},
    ],
    "imex": [{_B: ({"eps": 0.5}, 4000), _R: ({"eps": 0.5}, 2000), _S: ({"eps": 1.0}, 40000)}],
    "implicit": [{_B: ({}, 500), _R: ({}, 500), _S: ({"eps": 100.0}, 500)}],
    "anderson": [
        {_B: ({}, 2000), _R: ({}, 2000), _S: ({}, 2000)},  # the default budget
        {_B: ({"m": 10}, 2000), _S: ({"m": 10}, 2000)},  # rotor: m is capped at n + 1 = 3 anyway
    ],
    "ode": [{_B: ({}, 20000), _R: ({}, 20000), _S: ({}, 20000)}],
    "euler-maruyama": [{
        _B: ({"eps": 0.1, "sigma": 1e-6, "seed": 0}, 4000),
        _R: ({"eps": 0.1, "sigma": 1e-6, "seed": 0}, 2000),
        _S: ({"eps": STIFF_EULER_EPS, "sigma": 1e-6, "seed": 0}, 20000),
    }],
}
METHOD_ORDER = ["euler", "adaptive", "imex", "implicit", "anderson", "ode", "euler-maruyama"]

# torchdeq: max_iter per operator kind; their solvers' defaults otherwise (anderson m=6, lam=1e-4,
# tau=1; broyden without line search; fixed_point_iter tau=1).
PEER_MAX_ITER = {_B: 2000, _R: 2000, _S: 20000}
BROYDEN_MAX_ITER = {_B: 300, _R: 2000, _S: 2000}  # Broyden stores (B, D, max_iter) twice
# dopri5: the tolerances analogeq's ODESolver uses by default (rtol 1e-7, atol 1e-9), floored as it
# floors them in float32 (rtol >= 10 eps, atol >= eps). Exception, the stiff system: there dopri5
# runs at its stability limit (h ~ 3.3 / 1000) and its error in the stiff modes floors the force
# residual near 1e-5 at rtol 1e-7 (measured: 7.6e-5 at T = 8, 1.6e-5 at T = 16), so the plain solve
# never meets the target; at rtol 1e-9 it does (2.4e-6 at T = 16, with fewer evaluations, because
# fewer steps are rejected). analogeq's ODESolver tightens its tolerance near a fixed point itself.
_F32 = torch.finfo(torch.float32).eps
DOPRI_TOLS = {_B: (10 * _F32, _F32), _R: (1e-7, 1e-9), _S: (1e-9, 1e-11)}
DOPRI_MAX_NFE = 2_000_000  # calibration budget per operator


def kind(op: Operator) -> str:
    return op.name.split("-")[0]


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    operator: str
    family: str  # analogeq | torchdeq | torchdiffeq
    method: str  # label with key options
    nfe: int
    nfe_full: float  # full-batch-equivalent evaluations (sum over samples / batch)
    wall: float  # median seconds
    walls: list[float]
    residual: float  # recomputed max force residual over the batch
    status: str
    claimed: float | None = None  # the solver's own final figure (for reference only)
    ratio: float | None = None  # wall / best converged torchdeq wall on this operator
    overhead: float | None = None  # wall / (nfe * bare eval)
    overhead_full: float | None = None  # wall / (nfe_full * bare eval)
    in_force: float | None = None  # median over runs of wall / seconds spent inside the force
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def recomputed_residual(op: Operator, z: torch.Tensor) -> torch.Tensor:
    """The force residual ||F(z)|| / ||z|| per sample, from the raw operator (never a claim)."""
    with torch.no_grad():
        return force_residual(z, op.force(z))


SLOW_S = 20.0  # a row whose warm-up run takes longer than this is timed once


@dataclass
class Case:
    """One row before timing: `run()` does the work and returns an outcome; `finish(outcome,
    walls)` turns the warm-up's outcome and the timed walls into a Row; `ok(outcome)` says whether
    it converged (failed rows are timed once)."""

    run: Callable[[], Any]
    finish: Callable[[Any, list[float]], Row]
    ok: Callable[[Any], bool]
    first: Any = None
    warm_wall: float = 0.0
    walls: list[float] = field(default_factory=list)

    def warm_up(self) -> None:
        t0 = time.perf_counter()
        self.first = self.run()
        self.warm_wall = time.perf_counter() - t0

    @property
    def rounds(self) -> int | None:
        """Timed runs wanted: None = every round; 1 for a failed or slow row."""
        return None if self.ok(self.first) and self.warm_wall <= SLOW_S else 1


def time_cases(cases: list[Case], repeats: int, between: Callable[[], None] | None = None) -> None:
    """Warm every case up once, then `repeats` rounds in which every case runs once, round-robin,
    so that load from other processes on a shared machine hits all rows alike."""
    for c in cases:
        c.warm_up()
        report(c.finish(c.first, [c.warm_wall]), "warm-up")
        if between:
            between()
    for r in range(repeats):
        for c in cases:
            want = c.rounds
            if want is not None and r >= want:
                continue
            t0 = time.perf_counter()
            c.run()
            c.walls.append(time.perf_counter() - t0)
        if between:
            between()


def fmt_opts(opts: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in opts.items())


class _TimedForce:
    """A force that adds the seconds spent inside it (calls and `nonlinear`, on any sub-batch) to
    a shared clock; `select` returns a timed view on the same clock. The loop's overhead is then
    wall / time in force, measured in the same run: robust to load from other processes, which a
    bare evaluation timed at another moment is not."""

    def __init__(self, force: Any, clock: list[float]):
        self._force, self._clock = force, clock
        if hasattr(force, "leak"):
            self.leak = force.leak

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self._force(z)
        self._clock[0] += time.perf_counter() - t0
        return out

    def nonlinear(self, z: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self._force.nonlinear(z)
        self._clock[0] += time.perf_counter() - t0
        return out

    def select(self, index: torch.Tensor) -> _TimedForce:
        return _TimedForce(self._force.select(index), self._clock)


def same_stop(op: Operator) -> dict[str, Any]:
    """settle's tolerances that stop exactly where the peers stop, at ||F|| / ||z|| <= TOL.

    settle's test is delta = rms(F) / leak <= atol + rtol rms(z) (scalar leak, every operator
    here): with atol = 0 and rtol = TOL / leak it is ||F|| / ||z|| <= TOL, the rule the peers'
    tolerances are converted to (module docstring); the methods' own steps, which follow the
    leak, are unchanged.
    """
    return {"tol": TOL / float(op.force.leak), "atol": 0.0}


def case_ours(op: Operator, name: str, opts: dict[str, Any], max_steps: int | None) -> Case:
    in_force: list[float] = []  # wall / time inside the force, per run

    def run():
        clock = [0.0]
        force = _TimedForce(op.force, clock)
        t0 = time.perf_counter()
        res = settle(force, op.z0.clone(), name, max_steps=max_steps, **same_stop(op), **opts)
        in_force.append((time.perf_counter() - t0) / max(clock[0], 1e-12))
        return res

    def finish(res, walls) -> Row:
        g = recomputed_residual(op, res.z)
        per = res.nfe_per_sample
        nfe_full = float(per.sum()) / op.z0.shape[0] if per is not None else float(res.nfe)
        label = f"{name}" + (f" ({fmt_opts(opts)})" if opts else "")
        extra = {"steps": res.steps, "loop_wall_warmup": res.wall_time, "max_steps": max_steps,
                 "sample_status": [str(s) for s in res.sample_status],
                 "info": _jsonable(res.info)}
        timed = in_force[1:] or in_force  # the timed runs (the warm-up only if it was all)
        extra["in_force_runs"] = list(in_force)
        return Row(op.name, "analogeq", label, res.nfe, nfe_full, statistics.median(walls),
                   walls, float(g.max()), str(res.status), claimed=float(res.residual.max()),
                   in_force=statistics.median(timed), extra=extra)

    return Case(run, finish, lambda r: r.status is Status.CONVERGED)


def our_variants(name: str, op: Operator) -> list[tuple[dict[str, Any], int | None]]:
    """The configurations of method `name` on `op` (defaults for a method not listed here)."""
    out = [v[kind(op)] for v in OURS.get(name, []) if kind(op) in v]
    return out or [({}, None)]


class _CountingMap:
    """z -> f(z) for a torchdeq solver, counting evaluations (each one full-batch force call).

    `which` = "deq": f(z) = N(z) / leak (the classic DEQ map, h = 1 / leak); otherwise
    f(z) = z + h F(z). In every case f(z) - z = h F(z).
    """

    def __init__(self, op: Operator, which: str, h: float):
        self.force, self.which, self.h, self.calls = op.force, which, h, 0
        self.leak = float(op.force.leak)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.which == "deq":
            return self.force.nonlinear(z) / self.leak
        return z + self.h * self.force(z)


def peer_maps(op: Operator) -> list[tuple[str, str, float]]:
    """(kind, label, h) of the maps the torchdeq rows iterate, each f(z) = z + h F(z):

    * "anderson": the Picard map analogeq's default Anderson iterates on this force, G(z) = z + h F
      with h = 1 / (1/eps + leak) for a force with the leak split (eps = Anderson's resolved
      default; eps = inf is the DEQ map), h = eps without it; read from the method, so the rows
      follow its default;
    * "deq": N(z) / leak, the classic DEQ map (h = 1 / leak), what a torchdeq user writes;
    * "euler": z + eps F(z) with the eps of this operator's `euler` row (same iterates as ours).
    """
    leak = float(op.force.leak)
    maps: list[tuple[str, str, float]] = []
    if "anderson" in METHODS:
        from analogeq.integrators import CountedForce
        from analogeq.integrators.settle import make_method

        method, _ = make_method("anderson", {})
        counted = CountedForce(op.force, op.z0)
        eps = float(method.resolved_eps(counted))
        h = (1.0 / (0.0 if math.isinf(eps) else 1.0 / eps + leak)) if counted.has_split else eps
        if not math.isclose(h, 1.0 / leak):
            maps.append(("anderson", f"z+{h:.3g}F(z), as anderson", h))
    maps.append(("deq", "N(z)/leak", 1.0 / leak))
    euler_eps = OURS["euler"][0][kind(op)][0]["eps"]
    maps.append(("euler", f"z+{euler_eps:g}F(z)", euler_eps))
    return maps


def case_torchdeq(op: Operator, solver: str, which: str, mapname: str, h: float) -> Case:
    from torchdeq.solver import get_solver

    fn = get_solver(solver)
    tol = h * TOL  # f(z) - z = h F(z): relative residual r = g h at convergence (module docstring)
    max_iter = (BROYDEN_MAX_ITER if solver == "broyden" else PEER_MAX_ITER)[kind(op)]

    def run():
        f = _CountingMap(op, which, h)
        with torch.no_grad():  # as get_deq(...).eval() calls its f_solver
            z, _, info = fn(f, op.z0.clone(), max_iter=max_iter, tol=tol, stop_mode="rel")
        return z, info, f.calls

    def finish(out, walls) -> Row:
        z, info, calls = out
        g = float(recomputed_residual(op, z).max())
        label = f"torchdeq {solver} (map {mapname}, rel tol {tol:.3g})"
        claimed = float(info["rel_lowest"].max()) / h  # their residual, in force units
        status = "converged" if g <= TOL else "not converged"
        return Row(op.name, "torchdeq", label, calls, float(calls), statistics.median(walls),
                   walls, g, status, claimed=claimed,
                   extra={"max_iter": max_iter, "tol": tol, "map": mapname, "h": h,
                          "nstep": float(info["nstep"].max())})

    return Case(run, finish, lambda out: float(recomputed_residual(op, out[0]).max()) <= TOL)


class _Budget(Exception):
    pass


class _CountingField:
    def __init__(self, force: Any, budget: int | None = None):
        self.force, self.calls, self.budget = force, 0, budget

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.budget is not None and self.calls > self.budget:
            raise _Budget
        return self.force(z)


def calibrate_horizon(op: Operator, rtol: float, atol: float, t_max: float = 1024.0,
                      points: int = 400) -> float | None:
    """Smallest horizon T (on a grid of `points` outputs over [0, T], T doubling from 8) at which
    every sample's force residual is <= TOL and stays there; None if none up to t_max or within
    DOPRI_MAX_NFE evaluations. Output times do not change torchdiffeq's steps (it interpolates),
    so the solution at a grid time equals a plain solve to that time."""
    from torchdiffeq import odeint

    T, used = 8.0, 0
    while T <= t_max:
        grid = torch.linspace(0.0, T, points, dtype=torch.float64)
        fld = _CountingField(op.force, DOPRI_MAX_NFE - used)
        try:
            with torch.no_grad():
                traj = odeint(fld, op.z0.clone(), grid.to(op.z0.dtype),
                              rtol=rtol, atol=atol, method="dopri5")
        except _Budget:
            return None
        used += fld.calls
        res = torch.stack([recomputed_residual(op, z).max() for z in traj])
        hit = (res <= TOL).nonzero()
        if hit.numel():
            k = int(hit[0])
            # The first grid time below TOL; residuals can wiggle, so require it to stay below.
            later = (res[k:] <= TOL).all()
            if later:
                return float(grid[k])
        T *= 2
    return None


def case_dopri5(op: Operator) -> Case:
    from torchdiffeq import odeint

    rtol, atol = DOPRI_TOLS[kind(op)]
    name = f"torchdiffeq dopri5 (rtol {rtol:.3g} atol {atol:.3g}"
    T = calibrate_horizon(op, rtol, atol)
    if T is None:
        def finish_none(out, walls) -> Row:
            return Row(op.name, "torchdiffeq", name + ")", 0, 0.0, float("nan"), [],
                       float("nan"), "no horizon", notes="residual never reached 1e-5 (T <= 1024)")
        return Case(lambda: None, finish_none, lambda out: False)

    def solve(T: float):
        fld = _CountingField(op.force)
        with torch.no_grad():
            z = odeint(fld, op.z0.clone(), torch.tensor([0.0, T], dtype=op.z0.dtype),
                       rtol=rtol, atol=atol, method="dopri5")[-1]
        return z, fld.calls

    # Verify on a plain [0, T] solve; nudge T up by 5 % if the residual is not yet below TOL.
    for _ in range(5):
        if float(recomputed_residual(op, solve(T)[0]).max()) <= TOL:
            break
        T *= 1.05

    def finish(out, walls) -> Row:
        z, calls = out
        g = float(recomputed_residual(op, z).max())
        status = "converged" if g <= TOL else "not converged"
        return Row(op.name, "torchdiffeq", f"{name}, T {T:.4g})", calls, float(calls),
                   statistics.median(walls), walls, g, status,
                   extra={"horizon": T, "rtol": rtol, "atol": atol})

    return Case(lambda: solve(T), finish,
                lambda out: float(recomputed_residual(op, out[0]).max()) <= TOL)


# --------------------------------------------------------------------------------------------
# Bare evaluation, loop micro-overhead, profile
# --------------------------------------------------------------------------------------------
def bare_eval_time(op: Operator, n: int) -> float:
    """Median seconds of one force evaluation on the full batch (at a settled-like state)."""
    z = op.z0 + 0.5 * torch.randn_like(op.z0) if op.z0.abs().max() == 0 else op.z0.clone()
    times = []
    with torch.no_grad():
        for _ in range(5):
            op.force(z)
        for _ in range(n):
            t0 = time.perf_counter()
            op.force(z)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _FreeForce:
    """A force that costs (almost) nothing: F(z) = b - 2 z, with the block's shape and split."""

    def __init__(self, like: torch.Tensor):
        self.b = torch.ones_like(like)
        self.leak = 2.0

    def nonlinear(self, z):
        return self.b.expand_as(z)

    def __call__(self, z):
        return self.b - 2 * z

    def select(self, index):
        out = _FreeForce.__new__(_FreeForce)
        out.b, out.leak = self.b.index_select(0, index), self.leak
        return out


def loop_microbench(op: Operator, steps: int = 300) -> dict[str, Any]:
    """Seconds per loop step spent outside the force: settle on a free force for `steps` steps."""
    free = _FreeForce(op.z0)
    z0 = torch.zeros_like(op.z0)
    out: dict[str, Any] = {"state_shape": list(op.z0.shape), "steps": steps}
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(steps):
            free(z0)
        out["free_force_eval_s"] = (time.perf_counter() - t0) / steps
    # eps tiny so no sample converges (every step runs the full batch).
    for name, opts in (("euler", {"eps": 1e-9}), ("imex", {"eps": 1e-9})):
        settle(free, z0 + 1, name, tol=1e-30, max_steps=20, **opts)
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            settle(free, z0 + 1, name, tol=1e-30, max_steps=steps, **opts)
            walls.append(time.perf_counter() - t0)
        out[f"{name}_s_per_step"] = statistics.median(walls) / steps
    out["state_costs_us"] = state_costs(free, z0 + 1)
    # torchdeq's fixed_point_iter on the same map, for comparison.
    from torchdeq.solver import fixed_point_iter

    def fmap(z):
        return z + 1e-9 * free(z)

    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            fixed_point_iter(fmap, z0 + 1, max_iter=steps, tol=0.0, stop_mode="rel")
        walls.append(time.perf_counter() - t0)
    out["torchdeq_fixed_point_iter_s_per_step"] = statistics.median(walls) / steps
    return out


def state_costs(force: Any, z0: torch.Tensor, n: int = 50) -> dict[str, float]:
    """Microseconds of the loop's per-step state bookkeeping, per method state (median of n):
    `merge` (whole batch, every step while no sample has finished), `take` + `put` (a batch with
    one sample finished: the path of every later step), and `step` (the method's own step with a
    free force, i.e. its arithmetic beyond the force)."""
    from analogeq.integrators import CountedForce
    from analogeq.integrators.settle import make_method

    def tm(fn: Callable[[], Any]) -> float:
        for _ in range(3):
            fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    out: dict[str, float] = {}
    b = z0.shape[0]
    keep = torch.zeros(b, dtype=torch.bool)
    sub = torch.arange(b - 1)
    for name in ("euler", "imex", "anderson"):
        if name not in METHODS:
            continue
        method, _ = make_method(name, {})
        counted = CountedForce(force, z0)
        with torch.no_grad():
            state = method.init(counted, z0, counted(z0))
            new = method.step(counted, state)
            part = new.take(sub)
            out[f"{name}.step"] = tm(lambda m=method, c=counted, s=state: m.step(c, s))
            out[f"{name}.merge"] = tm(lambda s=state, n=new: s.merge(n, keep))
            out[f"{name}.take"] = tm(lambda s=state: s.take(sub))
            out[f"{name}.put"] = tm(lambda s=state, p=part: s.put(sub, p, keep[:-1]))
    return out


def profile_settle(op: Operator, name: str, opts: dict[str, Any], max_steps: int,
                   top: int = 25) -> str:
    settle(op.force, op.z0.clone(), name, max_steps=max_steps, **same_stop(op), **opts)
    prof = cProfile.Profile()
    prof.enable()
    res = settle(op.force, op.z0.clone(), name, max_steps=max_steps, **same_stop(op), **opts)
    prof.disable()
    buf = io.StringIO()
    buf.write(f"== cProfile: settle({op.name}, {name!r}, {fmt_opts(opts)}) -> {res.summary()}\n")
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Table, JSON, main
# --------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist() if obj.numel() <= 64 else f"tensor{tuple(obj.shape)}"
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)


def _f(x: float | None, spec: str) -> str:
    if x is None:
        return "-"
    return "nan" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def report(row: Row, what: str = "") -> None:
    print(f"   {what:8s}{row.method:60s} {row.status:13s} nfe {row.nfe:6d} wall {row.wall:8.4f}s "
          f"residual {row.residual:.2e}", flush=True)


def table(rows: list[Row]) -> str:
    head = ("operator", "method", "NFE", "NFE full-eq", "wall s", "residual", "status",
            "wall/torchdeq", "overhead", "overhead full-eq", "wall/in-force")
    body = [(r.operator, r.method, str(r.nfe), _f(r.nfe_full, ".1f"), _f(r.wall, ".4f"),
             _f(r.residual, ".3e"), r.status, _f(r.ratio, ".2f"), _f(r.overhead, ".2f"),
             _f(r.overhead_full, ".2f"), _f(r.in_force, ".2f")) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    head = ("operator", "method", "NFE", "NFE full-eq", "wall (s)", "final force residual",
            "status", "wall / best torchdeq", "overhead", "overhead full-eq",
            "wall / time in force")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = (r.operator, r.method, str(r.nfe), _f(r.nfe_full, ".1f"), _f(r.wall, ".4f"),
                 _f(r.residual, ".3e"), r.status, _f(r.ratio, ".2f"), _f(r.overhead, ".2f"),
                 _f(r.overhead_full, ".2f"), _f(r.in_force, ".2f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def converged(r: Row) -> bool:
    return r.status == "converged" and r.residual <= TOL


def fill_ratios(rows: list[Row], bare: dict[str, float]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for opname in dict.fromkeys(r.operator for r in rows):
        mine = [r for r in rows if r.operator == opname]
        peers = [r for r in mine if r.family == "torchdeq" and converged(r)]
        best_peer = min(peers, key=lambda r: r.wall) if peers else None
        for r in mine:
            if best_peer is not None:
                r.ratio = r.wall / best_peer.wall
            if opname.startswith("block") and r.nfe:
                r.overhead = r.wall / (r.nfe * bare[opname])
                r.overhead_full = r.wall / (r.nfe_full * bare[opname])
        ours = [r for r in mine if r.family == "analogeq" and converged(r)]
        best_ours = min(ours, key=lambda r: r.wall) if ours else None
        summary[opname] = {
            "best_torchdeq": None if best_peer is None else
            {"method": best_peer.method, "wall": best_peer.wall},
            "best_analogeq": None if best_ours is None else
            {"method": best_ours.method, "wall": best_ours.wall},
            "ratio_best_ours_to_best_torchdeq": None if not (best_peer and best_ours)
            else best_ours.wall / best_peer.wall,
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 block samples, 32 rotors, 1 repeat: for debugging, not for reporting")
    p.add_argument("--out", default=None,
                   help=f"JSON output (default {DEFAULT_OUT.relative_to(HERE.parent)}; "
                   "settle-quick.json with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per row (default 5, quick 1)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--operators", default=None, help="comma-separated subset of operator names")
    p.add_argument("--methods", default=None, help="comma-separated subset of analogeq methods")
    p.add_argument("--no-peers", action="store_true", help="skip torchdeq and torchdiffeq rows")
    p.add_argument("--no-calibration", action="store_true", help="skip the block spectra")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile settle on the first block operator (euler, anderson)")
    args = p.parse_args(argv)

    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    out = Path(args.out) if args.out else (
        DEFAULT_OUT.with_name("settle-quick.json") if args.quick else DEFAULT_OUT)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Methods warn once per settle (e.g. ODESolver flooring float32 tolerances): show each once.
    warnings.simplefilter("once")
    argv_shown = sys.argv[1:] if argv is None else argv
    flags = [f"-W {w}" for w in sys.warnoptions]
    command = " ".join([".venv/bin/python", *flags, "benchmarks/settle.py",
                        *map(shlex.quote, argv_shown)])

    available = [m for m in METHODS if m not in METHOD_ORDER]
    methods = [m for m in METHOD_ORDER if m in METHODS] + available
    if args.methods:
        methods = [m for m in args.methods.split(",") if m]
    ops = operators(quick=args.quick)
    if args.operators:
        keep = set(args.operators.split(","))
        ops = [o for o in ops if o.name in keep]

    import torchdeq  # noqa: F401  (version below)
    import torchdiffeq

    meta = {
        "command": command,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torchdiffeq": torchdiffeq.__version__,
        "torchdeq": _dist_version("torchdeq"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "tol_force_residual": TOL,
        "quick": args.quick,
        "methods": methods,
        **_git_info(),
    }
    print(f"torch {meta['torch']}  threads {meta['threads']}  cpus {meta['cpu_count']}  "
          f"repeats {repeats}  tol (force residual) {TOL:g}")
    print(f"analogeq methods: {', '.join(methods)}")

    rows: list[Row] = []
    bare: dict[str, float] = {}
    op_info: dict[str, Any] = {}
    for op in ops:
        print(f"\n== {op.name}: {op.description}", flush=True)
        op_info[op.name] = {"description": op.description, "params": op.params}
        cases = [case_ours(op, name, opts, max_steps)
                 for name in methods for opts, max_steps in our_variants(name, op)]
        if not args.no_peers:
            cases += [case_torchdeq(op, solver, which, mapname, h)
                      for which, mapname, h in peer_maps(op)
                      for solver in ("anderson", "broyden", "fixed_point_iter")]
            cases.append(case_dopri5(op))
        bares: list[float] = []
        # The machine's speed drifts: the bare evaluation is re-measured after every warm-up and
        # every round; overheads use the median of those.
        n_bare = 10 if args.quick else 30
        time_cases(cases, repeats,
                   lambda o=op, b=bares, n=n_bare: b.append(bare_eval_time(o, n)))
        bare[op.name] = statistics.median(bares)
        op_info[op.name]["bare_eval_s"] = bare[op.name]
        op_info[op.name]["bare_eval_samples_s"] = bares
        for c in cases:
            rows.append(c.finish(c.first, c.walls))
            report(rows[-1])
        if op.name.startswith("block") and not args.no_calibration:
            op_info[op.name]["calibration"] = calibrate_block(op)
            print(f"   calibration: {json.dumps(op_info[op.name]['calibration']['summary'])}")

    summary = fill_ratios(rows, bare)
    targets = check_targets(rows, summary)
    print()
    print(table(rows))
    print()
    for line in targets["lines"]:
        print(line)

    extra: dict[str, Any] = {}
    blocks = [o for o in ops if o.name.startswith("block")]
    if blocks:
        extra["loop_microbench"] = loop_microbench(blocks[0], steps=50 if args.quick else 300)
        print(f"\nloop micro-benchmark (free force, shape {tuple(blocks[0].z0.shape)}): "
              + json.dumps({k: v for k, v in extra["loop_microbench"].items()}))
    if args.profile and blocks:
        text = ""
        for name in ("euler", "anderson"):
            if name in METHODS:
                opts, steps = OURS[name][0]["block"]
                text += profile_settle(blocks[0], name, opts, steps) + "\n"
        prof_path = out.with_name(out.stem + "-profile.txt")
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        prof_path.write_text(text)
        print(f"profile: {prof_path}")

    doc = {"meta": meta, "operators": op_info, "rows": [_jsonable(asdict(r)) for r in rows],
           "summary": summary, "targets": targets, **_jsonable(extra),
           "markdown_table": markdown_table(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    print(f"\nresults: {out}")
    return 0


def calibrate_block(op: Operator) -> dict[str, Any]:
    """Per-sample leading eigenvalues of J at a tightly settled fixed point (docs/physics.md 3)."""
    ref = settle(op.force, op.z0.clone(), "euler", tol=1e-6, max_steps=20000, eps=0.1)
    per = []
    for i in range(op.z0.shape[0]):
        sp = spectrum(op.force, ref.z, sample=i)
        per.append(sp)
    summary = {
        "reference": ref.summary(),
        "max_re_mu": max(s["max_re"] for s in per),
        "max_abs_mu": max(s["max_abs"] for s in per),
        "deq_map_radius_max": max(s["deq_map_radius"] for s in per),
        "deq_map_radius_min": min(s["deq_map_radius"] for s in per),
        "euler_eps_crit_bound_min": min(s["euler_eps_crit_bound"] for s in per),
    }
    return {"summary": summary, "per_sample": per}


def check_targets(rows: list[Row], summary: dict[str, Any]) -> dict[str, Any]:
    lines, met = [], {}
    for opname, s in summary.items():
        if not opname.startswith("block"):
            continue
        ratio = s["ratio_best_ours_to_best_torchdeq"]
        ok = ratio is not None and ratio <= 0.5
        met[f"{opname}: best analogeq wall <= 0.5 x best torchdeq"] = ok
        lines.append(f"target {opname}: best analogeq {s['best_analogeq']} vs best torchdeq "
                     f"{s['best_torchdeq']}: ratio {_f(ratio, '.2f')} (target <= 0.5) -> "
                     f"{'MET' if ok else 'MISSED'}")
    for r in rows:
        if r.family == "analogeq" and r.operator.startswith("block") and r.in_force is not None:
            # Judged on wall / time inside the force of the same runs (load-robust); the ratios
            # to a separately timed bare evaluation are shown beside it.
            ok = r.in_force <= 1.15
            met[f"{r.operator} {r.method}: overhead <= 1.15"] = ok
            lines.append(f"overhead {r.operator} {r.method}: wall / time in force "
                         f"{r.in_force:.2f} (vs bare eval: {_f(r.overhead, '.2f')} per call, "
                         f"{_f(r.overhead_full, '.2f')} full-eq; target <= 1.15) "
                         f"-> {'MET' if ok else 'MISSED'}")
    return {"met": met, "lines": lines}


def _git_info() -> dict[str, Any]:
    """The commit measured, and uncommitted changes under integrators/ (read-only git calls)."""
    import subprocess

    root = HERE.parent

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "integrators").splitlines()]
    return {"git_commit": git("rev-parse", "HEAD") or None, "integrators_uncommitted": dirty}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
