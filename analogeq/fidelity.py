"""Digital fidelity: is a discrete method's failure an artifact of the discretization, or does the
circuit itself not settle? (docs/physics.md sections 2-3.)

`compare(force, z0, methods=[...])` runs every discrete method and the continuous reference (a
tight `ODESolver`, what the analog circuit does), finds the best fixed-point estimate z* per
sample (the reference's end where it settled, else a root: the search escalates through
`root_finders()`, Anderson and then pseudo-transient continuation from large steps, until every
sample has one or every finder failed; roots may be *unstable*, so a finder's convergence never
means stability), probes the Jacobian spectrum at z* (`analogeq.probes`), and returns a verdict
per method and sample. A method whose budget ends while it still converges at a measured rate is
continued first (`_extend`), so that a verdict is given instead of "not converged":

* FAITHFUL: the method settles to the reference's fixed point (relative distance <= distance_tol).
* DISCRETIZATION_ARTIFACT: the reference settles and every Re mu < 0 at its fixed point, but the
  method does not settle (cycles, diverges, stalls, or its linear map has |1 + h mu| > 1: those
  eigenvalues and eps_crit are reported).
* CONTINUOUS_INSTABILITY (HOPF for a complex pair with Re mu > 0, REAL otherwise): Re mu > 0 at
  the best root AND the reference does not settle. A method that "settles" there anyway (a
  root-finder, an implicit step) has found a state the circuit never holds.
* NOT_CONVERGED: none of these is established; `next_step` says what to run.

Stochastic methods (Euler-Maruyama): a force-residual floor at the noise level (the integrator's
noise-floor rule, or drift/noise ratio <= 1 with a stable Euler map) is reported as a noise floor
around the fixed point, not as a cycle.

`eps_sweep` (force-residual floors at fixed eps * N beside the step residual, with the predicted
eps_crit) and `knockout` (re-probe with a parameter group scaled) live in `analogeq._fidelity_sweep`
and are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._fidelity_report import (
    FidelityReport,
    Instability,
    MethodReport,
    SampleVerdict,
    Verdict,
    dedupe,
    fmt_c,
    worst,
)
from ._fidelity_sweep import (
    KNOCKOUT_GROUPS,
    EpsSweep,
    KnockoutResult,
    eps_sweep,
    knockout,
)
from .integrators import (
    Anderson,
    EulerMaruyama,
    ExplicitEuler,
    IMEXEuler,
    Integrator,
    ODESolver,
    PseudoTransient,
    SettleResult,
    Status,
    settle,
)
from .integrators._chain import chain
from .integrators._loop import check_initial_state
from .integrators.settle import make_method
from .probes import asymmetry, find_eps_crit, jacobian_eigs

MethodSpec = str | Integrator | tuple[str, Mapping[str, Any]]

REFERENCE_RTOL, REFERENCE_ATOL = 1e-8, 1e-10
"""Default tolerances of the continuous reference (dopri5), floored at 10 eps / eps of the
state's dtype (a float32 reference is a consistency check, not a reference)."""


NOISE_RATIO = 1.0
"""A stochastic run that ends on a floor (LIMIT_CYCLE or MAX_STEPS by the loop's tail test) around
a stable fixed point, with a stable Euler map at its step and a drift/noise power ratio Q <= this
(EulerMaruyama's `drift_noise_ratio`: the noise moves the state more than the drift), is reported
as a noise floor, whatever the method's own `max_drift_ratio` (which only decides when its run
stops)."""


EXTEND_FACTOR = 20
"""Default cap of a budget extension: a run still converging at a measured rate when its budget
ends is continued up to this many times its budget (`compare(max_extend=...)`)."""


def root_finders() -> list[tuple[str, Integrator]]:
    """The default escalation of `compare`'s root search, cheapest first.

    Anderson alone (no fallback: a root-finder, it may land on unstable roots too), then
    pseudo-transient continuation from a large first step, 10 and 1000 relaxation times: backward
    Euler with such steps is attracted by unstable roots as well (|1 - eps mu| > 1 once
    eps > 2 Re mu / |mu|^2), so it finds the root inside a limit cycle that Anderson misses, and
    grows to Newton near it.
    """
    return [
        ("anderson", Anderson(fallback=None)),
        ("ptc(eps=10)", PseudoTransient(eps=10.0)),
        ("ptc(eps=1000)", PseudoTransient(eps=1e3, eps_max=1e8)),
    ]


def default_reference(dtype: torch.dtype = torch.float64) -> ODESolver:
    """The continuous reference: dopri5 at rtol 1e-8, atol 1e-10 (floored for the dtype)."""
    eps = torch.finfo(dtype).eps
    return ODESolver("dopri5", rtol=max(REFERENCE_RTOL, 10 * eps), atol=max(REFERENCE_ATOL, eps))


# ------------------------------------------------------------------------------------------------
# inputs


def _resolve_methods(methods: Any) -> list[tuple[str, Integrator]]:
    """(label, instance) per method spec; labels are unique."""
    if isinstance(methods, str | Integrator) or isinstance(methods, tuple) and len(methods) == 2 \
            and isinstance(methods[0], str) and isinstance(methods[1], Mapping):
        methods = [methods]
    if isinstance(methods, Mapping):
        items = list(methods.items())
    elif isinstance(methods, Sequence):
        items = [(None, m) for m in methods]
    else:
        raise TypeError(f"methods must be a sequence of method names, Integrator instances or "
                        f"(name, options) pairs, got {type(methods).__name__}")
    if not items:
        raise ValueError("methods must name at least one discrete method")
    out: list[tuple[str, Integrator]] = []
    for label, spec in items:
        if isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[0], str) or not isinstance(spec[1], Mapping):
                raise TypeError(f"a method given as a tuple must be (name, options dict), got "
                                f"{spec!r}")
            inst, rest = make_method(spec[0], dict(spec[1]))
            if rest:
                raise TypeError(f"loop options {sorted(rest)} cannot be set per method; pass "
                                "them to compare")
        elif isinstance(spec, str | Integrator):
            inst, _ = make_method(spec, {})
        else:
            raise TypeError(f"each method must be a name, an Integrator instance or a (name, "
                            f"options) pair, got {type(spec).__name__}")
        name = label if label is not None else _label(inst)
        if not isinstance(name, str):
            raise TypeError(f"method labels must be strings, got {type(name).__name__}")
        base, n = name, 2
        while any(name == existing for existing, _ in out):
            name, n = f"{base}#{n}", n + 1
        out.append((name, inst))
    return out


def _label(inst: Integrator) -> str:
    eps = getattr(inst, "eps", None)
    if isinstance(inst, ExplicitEuler | EulerMaruyama | IMEXEuler) and eps is not None:
        return f"{inst.name}(eps={eps:g})"
    return inst.name


def euler_step(method: Integrator, force: Any) -> float | None:
    """h such that the method's linear map at a fixed point is I + h J, or None.

    Explicit Euler and Euler-Maruyama: h = eps. IMEX with a scalar leak: the map
    (z + eps N(z)) / (1 + eps leak) is z + h F(z) with h = eps / (1 + eps leak). Other methods
    (adaptive, implicit, root-finders, ODE solvers) have no fixed Euler step.
    """
    if isinstance(method, ExplicitEuler | EulerMaruyama):
        return float(method.eps)
    if isinstance(method, IMEXEuler):
        leak = getattr(force, "leak", None)
        if isinstance(leak, int | float) and not isinstance(leak, bool):
            return float(method.eps) / (1.0 + float(method.eps) * float(leak))
    return None


def _noisy(method: Integrator) -> bool:
    return isinstance(method, EulerMaruyama) and method.noisy


def _check_float(name: str, value: Any, *, low: float = 0.0, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    ok = math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, "
                         f"got {value}")
    return float(value)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


# ------------------------------------------------------------------------------------------------
# compare


def compare(
    force: Any,
    z0: Tensor,
    methods: Any = ("euler",),
    reference: ODESolver | None = None,
    *,
    tol: float = 1e-6,
    max_steps: int | None = None,
    reference_steps: int = 400,
    root: Any = "auto",
    root_steps: int | None = None,
    max_extend: int | None = None,
    k: int = 6,
    probe_dtype: torch.dtype | None = None,
    distance_tol: float = 1e-3,
    margin: float | None = None,
    n_probes: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> FidelityReport:
    """Run discrete methods beside the continuous reference and say whose failure it is.

    Args:
        force: F(z) on states (batch, ...) (integrators' protocol; `select` and the leak split
            help but are not required).
        z0: start state (batch, ...), real floating, finite.
        methods: the discrete methods judged: names ("euler" = eps 0.1), `Integrator` instances
            (`ExplicitEuler(eps=0.05)`, `EulerMaruyama(eps=..., sigma=..., seed=...)`, ...),
            (name, options) pairs, or a dict label -> any of these.
        reference: the continuous reference, an `ODESolver` (default `default_reference`:
            dopri5, rtol 1e-8, atol 1e-10 floored for the dtype).
        tol: force-residual tolerance ||F(z)|| / ||z|| of every settle (> 0).
        max_steps: step budget of each discrete method (default: the method's own).
        reference_steps: chunks of the reference (>= 100 so that a cycle can be judged on its
            tail; the automatic chunk schedule resolves rotations with >= 8 chunks per period).
        root: how the fixed point is found where the reference does not settle: "auto" (default,
            the escalation `root_finders()`: Anderson, then pseudo-transient continuation from
            10 and from 1000 relaxation times), one method (a name or an Integrator instance such
            as `ImplicitEuler(eps=10.0)`), a sequence of them (tried in order), or None (the
            reference's end only). Each finder runs from z0 and, where the reference did not
            settle, from the reference's end (inside the attractor the circuit reached); the
            search stops as soon as every sample has a root (a converged finder). The report
            names the finder of each sample's root (`root_source`).
        root_steps: each root-finder's step budget (default its own).
        max_extend: largest total step budget of a method that is still converging when its
            budget ends: its run is continued (same convergence test) when the rate it contracts
            at predicts convergence within this many steps (default `EXTEND_FACTOR` x its
            budget; 0 disables). `report.extra["extended"]` lists what was extended.
        k: eigenvalues per set at z* (clipped to the state size).
        probe_dtype: dtype of the Jacobian products (None: the state's; torch.float64 copies a
            model force to float64).
        distance_tol: largest relative distance ||z_end - z*|| / max(||z*||, ||z0||) of a
            FAITHFUL end (> 0).
        margin: |Re mu| below which an eigenvalue counts as marginal (1/time units); default
            1e-6 (float64 products) or 1e-3 (float32) times max(1, max |mu|).
        n_probes: Hutchinson probes of the asymmetry (>= 1).
        seed: seed of the probes' random starts.
        progress: a tqdm bar per settle (each method, the reference, the root-finder).

    Returns:
        A `FidelityReport` (`.verdict`, `.text()`, `.to_dict()`, `.plot(path)`).
    """
    t0 = time.perf_counter()
    if not callable(force):
        raise TypeError(f"force must be callable F(z) -> dz/dt, got {type(force).__name__}")
    z0 = check_initial_state(z0)
    if z0.is_complex():
        raise TypeError("z0 must be real: the fidelity probes linearize the real force")
    tol = _check_float("tol", tol)
    distance_tol = _check_float("distance_tol", distance_tol)
    reference_steps = _check_int("reference_steps", reference_steps, 100)
    k = _check_int("k", k, 1)
    n_probes = _check_int("n_probes", n_probes, 1)
    if max_steps is not None:
        max_steps = _check_int("max_steps", max_steps, 1)
    if root_steps is not None:
        root_steps = _check_int("root_steps", root_steps, 1)
    if margin is not None:
        margin = _check_float("margin", margin, strict=False)
    if reference is None:
        reference = default_reference(z0.dtype)
    elif not isinstance(reference, ODESolver):
        raise TypeError(f"reference must be an ODESolver (the continuous dynamics) or None, got "
                        f"{type(reference).__name__}")
    resolved = _resolve_methods(methods)

    if max_extend is not None:
        max_extend = _check_int("max_extend", max_extend, 0)
    finders = _resolve_finders(root)

    runs: dict[str, SettleResult] = {}
    extended: dict[str, dict[str, Any]] = {}
    for label, inst in resolved:
        res = settle(force, z0, inst, tol=tol, max_steps=max_steps, progress=progress)
        runs[label], note = _extend(force, inst, res, tol, max_extend, progress)
        if note is not None:
            extended[label] = note
    ref = settle(force, z0, reference, tol=tol, max_steps=reference_steps, progress=progress)
    batch = z0.shape[0]
    ref_conv = [s is Status.CONVERGED for s in ref.sample_status]
    root_tol = min(tol, 1e-10) if z0.dtype == torch.float64 else tol
    search = _search_roots(force, z0, ref, ref_conv, finders, root_tol, root_steps, progress)
    root_res = search.first
    retry = search.retry

    # -- best fixed-point estimate per sample ----------------------------------------------------
    z_star = search.z.to(z0.dtype)
    root_residual = search.residual
    root_found = search.found
    sources = search.sources
    root_status = search.status

    # -- probes at z* -----------------------------------------------------------------------------
    notes: list[str] = []
    n = z0[0].numel()
    kk = min(k, n)
    eigs = euler_sets = ecrit = asym = None
    euler_sets = {}
    finite_state = bool(torch.isfinite(z_star).all())
    cdtype = probe_dtype if probe_dtype is not None else z0.dtype
    if finite_state:
        popts: dict[str, Any] = dict(dtype=probe_dtype, seed=seed)
        eigs = jacobian_eigs(force, z_star, kk, "LR", info=True, **popts)
        steps = {label: euler_step(inst, force) for label, inst in resolved}
        for label, h in steps.items():
            if h is not None:
                euler_sets[label] = jacobian_eigs(force, z_star, kk, "euler", eps=h, info=True,
                                                  **popts)
        known = [torch.where(eigs.converged, eigs.values, complex(math.nan, math.nan))]
        known += [torch.where(e.converged, e.values, complex(math.nan, math.nan)).to(
            eigs.values.dtype) for e in euler_sets.values()]
        ecrit = find_eps_crit(force, z_star, k=kk, known=torch.cat(known, dim=1), **popts)
        asym = asymmetry(force, z_star, n_probes=n_probes, seed=seed, dtype=probe_dtype)
    else:
        notes.append("the best fixed-point estimate is not finite: no spectrum")

    rel = 1e-6 if cdtype == torch.float64 else 1e-3
    stability, margins, pools = [], [], []
    for i in range(batch):
        pool = _sample_pool(eigs, euler_sets, ecrit, i)
        pools.append(pool)
        scale = max(1.0, float(np.abs(pool).max())) if pool.size else 1.0
        m_i = margin if margin is not None else rel * scale
        margins.append(m_i)
        stability.append(_stability(eigs, i, pool, m_i, bool(root_found[i])))
    if eigs is not None and any(eigs.messages):
        notes.append("ARPACK did not converge for some samples: their spectrum may miss a leading "
                     "eigenvalue (raise k)")

    # -- verdicts ---------------------------------------------------------------------------------
    reports: dict[str, MethodReport] = {}
    for label, inst in resolved:
        res = runs[label]
        h = euler_step(inst, force)
        samples = []
        for i in range(batch):
            samples.append(_judge(
                res, inst, i, h, z_star[i], ref, ref_conv[i], bool(root_found[i]),
                float(root_residual[i]), root_status[i], stability[i], pools[i], margins[i],
                ecrit, distance_tol, tol, reference_steps,
                float(torch.linalg.vector_norm(z0[i]))))
        reports[label] = MethodReport(
            label=label, result=res, euler_step=h, samples=tuple(samples),
            step_residual=float(res.trace.step_residual[-1]) if res.trace.step_residual.numel()
            else math.nan,
            step_floor=_tail_median(res.trace.step_residual),
        )
    sample_verdicts = tuple(worst([r.samples[i].verdict for r in reports.values()])
                            for i in range(batch))
    overall = worst(list(sample_verdicts))
    kinds = [s.kind for r in reports.values() for s in r.samples
             if s.verdict is overall and s.kind is not None]
    kind = Instability.HOPF if Instability.HOPF in kinds else (kinds[0] if kinds else None)
    return FidelityReport(
        verdict=overall, kind=kind, sample_verdicts=sample_verdicts, methods=reports,
        reference=ref, root=root_res, z_star=z_star, root_source=tuple(sources),
        root_residual=root_residual, root_found=root_found, eigs=eigs, euler_eigs=euler_sets,
        eps_crit=ecrit, asymmetry=asym, stability=tuple(stability), margin=tuple(margins),
        tol=tol, wall_time=time.perf_counter() - t0, notes=tuple(notes),
        extra={"root_retry": retry, "root_runs": search.runs, "extended": extended},
    )


def _resolve_finders(root: Any) -> list[tuple[str, Integrator]]:
    """(label, instance) per root-finder of the escalation; [] for None."""
    if root is None:
        return []
    if isinstance(root, str) and root == "auto":
        return root_finders()
    if isinstance(root, str | Integrator):
        inst, _ = make_method(root, {})
        return [(root if isinstance(root, str) else inst.name, inst)]
    if isinstance(root, Sequence) and not isinstance(root, str):
        out = []
        for r in root:
            if not isinstance(r, str | Integrator):
                raise TypeError(f"root must list method names or Integrator instances, got "
                                f"{type(r).__name__}")
            inst, _ = make_method(r, {})
            out.append((r if isinstance(r, str) else inst.name, inst))
        if not out:
            raise ValueError("root must name at least one root-finder (or be None)")
        return out
    raise TypeError(f"root must be 'auto', a method name, an Integrator, a sequence of them or "
                    f"None, got {type(root).__name__}")


class _RootSearch:
    """Best fixed-point estimate per sample and where it came from."""

    def __init__(self, ref: SettleResult, ref_conv: list[bool]):
        b = ref.z.shape[0]
        self.z = ref.z.clone()
        self.residual = ref.residual.detach().to("cpu", torch.float64).clone()
        self.found = torch.tensor(ref_conv, dtype=torch.bool)
        self.sources = ["reference" if c else "reference's end (not a root)" for c in ref_conv]
        self.status = list(ref.sample_status)
        self.runs: list[tuple[str, SettleResult]] = []
        self.first: SettleResult | None = None
        self.retry: SettleResult | None = None
        self.best_is_ref = [True] * b

    def offer(self, label: str, res: SettleResult) -> None:
        """Take each sample's root from `res` where it converged and none was found yet; else keep
        its lower-residual point (not a root)."""
        self.runs.append((label, res))
        for i, s in enumerate(res.sample_status):
            if bool(self.found[i]):
                continue
            r = float(res.residual[i])
            converged = s is Status.CONVERGED and bool(torch.isfinite(res.z[i]).all())
            better = r < float(self.residual[i]) or self.best_is_ref[i]
            if converged or better:
                self.z[i] = res.z[i].to(self.z.dtype)
                self.residual[i] = r
                self.status[i] = s
                self.sources[i] = label if converged else f"{label} (best point, not a root)"
                self.best_is_ref[i] = False
                if converged:
                    self.found[i] = True


def _search_roots(force: Any, z0: Tensor, ref: SettleResult, ref_conv: list[bool],
                  finders: list[tuple[str, Integrator]], tol: float,
                  steps: int | None, progress: bool = False) -> _RootSearch:
    """Escalate through `finders` until every sample has a root (`compare`'s root argument).

    A sample whose root is known starts the next finder at it, so it converges at once and costs
    one evaluation; the others start at z0, then (where the reference did not settle) at the
    reference's end.
    """
    search = _RootSearch(ref, ref_conv)
    ref_end_ok = bool(torch.isfinite(ref.z).all())
    for label, inst in finders:
        if bool(search.found.all()):
            break
        keep = search.found.view((-1,) + (1,) * (z0.ndim - 1)).to(z0.device)
        start = torch.where(keep, search.z.to(z0.device, z0.dtype), z0)
        res = settle(force, start, inst, tol=tol, max_steps=steps, progress=progress)
        if search.first is None:
            search.first = res
        search.offer(label, res)
        if bool(search.found.all()) or not ref_end_ok or all(ref_conv):
            continue
        start = torch.where(keep | search.found.view(keep.shape).to(z0.device),
                            search.z.to(z0.device, z0.dtype), ref.z.to(z0.dtype))
        retry = settle(force, start, inst, tol=tol, max_steps=steps, progress=progress)
        if search.retry is None:
            search.retry = retry
        search.offer(f"{label} from the reference's end", retry)
    return search


def _extend(force: Any, inst: Integrator, res: SettleResult, tol: float,
            cap: int | None, progress: bool = False) -> tuple[SettleResult, dict[str, Any] | None]:
    """Continue the samples still converging when the budget ended (`compare(max_extend=...)`).

    Per sample at MAX_STEPS, the rate rho per step is measured on the last quarter of its
    scaled-error trace (at least 20 steps); where rho < 1 and the steps to bring the error to 1,
    ln(err) / -ln(rho), fit within the cap, the run continues from its end with the same
    convergence test (its atol and rate), 1.5 x that many steps. Returns the (chained) result and
    a note of what was done, or None.
    """
    cap = EXTEND_FACTOR * max(res.steps, 1) if cap is None else cap
    err = res.trace.sample_error
    if cap <= res.steps or err is None:
        return res, None
    need = 0
    rows = []
    for i, s in enumerate(res.sample_status):
        if s is not Status.MAX_STEPS:
            continue
        n = int(res.steps_per_sample[i])
        w = max(20, n // 4)
        if n < w:
            continue
        tail = err[n - w:n + 1, i]
        if not bool(torch.isfinite(tail).all()) or float(tail[-1]) <= 0:
            continue
        rho = (float(tail[-1]) / float(tail[0])) ** (1.0 / w)
        if not 0 < rho < 1:
            continue
        more = math.ceil(1.5 * math.log(float(tail[-1])) / -math.log(rho)) + 10
        if res.steps + more <= cap:
            rows.append(i)
            need = max(need, more)
    if not rows:
        return res, None
    index = torch.tensor(rows, dtype=torch.long)
    options: dict[str, Any] = {"atol": res.info["atol"].to(torch.float64)}
    if res.info.get("rate") is not None:
        options["rate"] = res.info["rate"].to(torch.float64)
    start = res.z
    # Samples not extended start at their end too; they are cut out again by `chain`.
    more_res = settle(force, start, inst, tol=tol, max_steps=need, progress=progress, **options)
    sub = np.asarray(rows, dtype=np.int64)
    picked = _subset_result(more_res, index)
    out = chain(res, picked, sub, shared_counter=False)
    out.info["extended"] = out.info.pop("fallback")  # a continuation, not a fallback
    note = {"samples": rows, "extra_steps": int(more_res.steps),
            "statuses": [s.value for s in picked.sample_status], "cap": cap}
    return out, note


def _subset_result(res: SettleResult, index: Tensor) -> SettleResult:
    """The rows `index` of a result, for `chain` (its histories keep the full batch columns
    only for the selected samples)."""
    import dataclasses

    rows = index.tolist()
    tr = res.trace

    def cols(x: Tensor | None) -> Tensor | None:
        return None if x is None else x[:, index]

    trace = dataclasses.replace(
        tr, sample_residual=cols(tr.sample_residual), sample_time=cols(tr.sample_time),
        observed=cols(tr.observed), sample_state_norm=cols(tr.sample_state_norm),
        sample_error=cols(tr.sample_error))
    dev = res.z.device
    return dataclasses.replace(
        res, z=res.z.index_select(0, index.to(dev)),
        residual=res.residual.index_select(0, index.to(res.residual.device)),
        t=None if res.t is None else res.t.index_select(0, index.to(res.t.device)),
        trace=trace, sample_status=tuple(res.sample_status[i] for i in rows),
        nfe_per_sample=None if res.nfe_per_sample is None else res.nfe_per_sample[index],
        steps_per_sample=None if res.steps_per_sample is None else res.steps_per_sample[index],
        cycles=tuple(res.cycles[i] for i in rows) if res.cycles else (),
        error=None if res.error is None else res.error[index],
    )


def _sample_pool(eigs: Any, euler_sets: dict[str, Any], ecrit: Any, i: int) -> np.ndarray:
    sets = []
    if eigs is not None:
        sets.append(eigs.values[i][eigs.converged[i]].cpu().numpy())
    for e in euler_sets.values():
        sets.append(e.values[i][e.converged[i]].cpu().numpy())
    if ecrit is not None:
        lim = complex(ecrit.limiting[i])
        if math.isfinite(lim.real):
            sets.append(np.asarray([lim, lim.conjugate()]))
        sets.append(ecrit.nonnegative[i].cpu().numpy())
    return dedupe(np.concatenate(sets)) if sets else np.zeros(0, dtype=complex)


def _stability(eigs: Any, i: int, pool: np.ndarray, margin: float, root_found: bool) -> str:
    """'stable', 'unstable', 'marginal' or 'unknown' from the eigenvalues at sample i's z*."""
    if eigs is None or not root_found or not bool(eigs.converged[i].any()) or not pool.size:
        return "unknown"
    top = float(pool.real.max())
    if top > margin:
        return "unstable"
    if top < -margin and not eigs.messages[i]:
        return "stable"
    if top < -margin:
        return "unknown"  # ARPACK stopped early: a leading eigenvalue may be missing
    return "marginal"


def _kind(pool: np.ndarray, margin: float) -> Instability:
    bad = pool[pool.real > margin]
    complex_pair = np.abs(bad.imag) > np.maximum(margin, 1e-9 * np.abs(bad))
    return Instability.HOPF if bool(complex_pair.any()) else Instability.REAL


def _tail_median(x: Tensor, fraction: float = 0.2) -> float:
    if x.numel() == 0:
        return math.nan
    m = max(1, int(fraction * x.numel()))
    return float(torch.quantile(x[-m:].double(), 0.5))


def _judge(
    res: SettleResult, inst: Integrator, i: int, h: float | None, z_star: Tensor,
    ref: SettleResult, ref_conv: bool, root_found: bool, root_residual: float,
    root_status: Status, stability: str, pool: np.ndarray, margin: float, ecrit: Any,
    distance_tol: float, tol: float, reference_steps: int, z0_norm: float,
) -> SampleVerdict:
    """The verdict of one method on one sample (module docstring; docs/physics.md section 3).

    Distances are relative to max(||z*||, ||z0||): a fixed point at z* = 0 is measured against
    the start's size."""
    status = res.sample_status[i]
    force_res = float(res.residual[i])
    cyc = res.cycles[i] if res.cycles else None
    floor = force_res if cyc is None else float(cyc.floor)
    zs_norm = float(torch.linalg.vector_norm(z_star))
    dist = float(torch.linalg.vector_norm(res.z[i].to(z_star) - z_star)) / max(zs_norm, z0_norm,
                                                                                 1e-300)
    if not math.isfinite(dist):
        dist = math.nan
    offending: tuple[complex, ...] | None = None
    if h is not None:
        offending = tuple(complex(m) for m in pool if abs(1 + h * m) > 1 + 1e-12)
    stable_off = tuple(m for m in (offending or ()) if m.real < 0)
    eps_c = math.inf if ecrit is None else float(ecrit.eps_crit[i])
    unstable = stability == "unstable"
    kind = _kind(pool, margin) if unstable else None

    # Stochastic methods: a floor at the noise level around a stable fixed point is no cycle.
    noise_floor = None
    settled = status is Status.CONVERGED
    noise_note = ""
    if _noisy(inst):
        info = res.info
        nf = info.get("noise_floor")
        q = info.get("drift_noise_ratio")
        nset = info.get("noise_settled")
        nf_i = float(nf[i]) if nf is not None else math.nan
        q_i = float(q[i]) if q is not None else math.nan
        by_rule = bool(nset[i]) if nset is not None else False
        euler_ok = h is None or not stable_off
        floor_like = (not settled and status in (Status.LIMIT_CYCLE, Status.MAX_STEPS)
                      and stability == "stable" and euler_ok and math.isfinite(q_i)
                      and q_i <= NOISE_RATIO)
        if by_rule or floor_like:
            noise_floor = nf_i if math.isfinite(nf_i) else floor
            settled = True
            noise_note = (f" at its noise floor (time-averaged force residual {noise_floor:.2e}, "
                          f"drift/noise ratio {q_i:.2g}; a noise floor, not a cycle)")
        if noise_floor is not None:
            # the state jitters around z*: distance ~ g / |mu| with g the floor
            mags = np.abs(pool[pool.real < 0]) if pool.size else np.zeros(0)
            mu_min = float(mags.min()) if mags.size else 1.0
            distance_tol = max(distance_tol, 10 * noise_floor / max(mu_min, 1e-300))

    def sv(verdict: Verdict, reason: str, nxt: str | None = None,
           kind_: Instability | None = None) -> SampleVerdict:
        return SampleVerdict(verdict, kind_, status, reason, nxt, force_res, floor, dist,
                             offending, noise_floor)

    ref_txt = f"the continuous reference {ref.sample_status[i].value}"
    if unstable:
        bad = ", ".join(fmt_c(m) for m in pool[pool.real > margin])
        inst_txt = (f"Re mu > 0 at the root (force residual {root_residual:.1e}): {bad} "
                    f"[{kind.value}]")  # type: ignore[union-attr]
    if settled:
        if ref_conv:
            if dist <= distance_tol:
                return sv(Verdict.FAITHFUL, f"settled{noise_note} to the reference's fixed point "
                          f"(relative distance {dist:.1e})")
            return sv(Verdict.NOT_CONVERGED,
                      f"settled{noise_note} to another state than the reference's fixed point "
                      f"(relative distance {dist:.2e} > {distance_tol:g}): the system has several "
                      "fixed points and the method's trajectory ended in another basin than the "
                      "circuit's, so its answer is not the circuit's",
                      "rerun the method with a smaller step (it should then follow the circuit "
                      "into the reference's basin), or compare from a start nearer z*")
        if unstable:
            return sv(Verdict.CONTINUOUS_INSTABILITY,
                      f"{status.value}{noise_note}, but {ref_txt}: {inst_txt}. The method's end is "
                      "a state the circuit does not hold (a root-finder or a damping step "
                      "converges to unstable roots too)", kind_=kind)
        return sv(Verdict.NOT_CONVERGED,
                  f"settled{noise_note} but {ref_txt} within {reference_steps} chunks and the "
                  f"fixed point is {stability}",
                  f"rerun compare with reference_steps > {reference_steps} (the circuit may "
                  "settle slowly)")
    # the method did not settle
    if ref_conv:
        if stability == "stable":
            if h is not None and stable_off:
                return sv(Verdict.DISCRETIZATION_ARTIFACT,
                          f"{status.value} (force floor {floor:.2e}) while the continuous dynamics "
                          f"settle (all Re mu < 0): h = {h:g} > eps_crit = {eps_c:.4g}, so the "
                          "linear map I + h J is unstable there")
            if status in (Status.LIMIT_CYCLE, Status.DIVERGED, Status.STALLED):
                extra = "" if h is None else (f"; h = {h:g} < eps_crit = {eps_c:.4g}: not a linear "
                                              "instability at z*, the method leaves its basin")
                return sv(Verdict.DISCRETIZATION_ARTIFACT,
                          f"{status.value} (force floor {floor:.2e}) while the continuous "
                          f"dynamics settle (all Re mu < 0){extra}")
            return sv(Verdict.NOT_CONVERGED,
                      f"{status.value}: still converging (force residual {force_res:.2e}) and "
                      "stable at its step", _more_steps(res, h, pool, i))
        if stability == "unstable":
            return sv(Verdict.NOT_CONVERGED,
                      f"{status.value}; the reference settled at a point where {inst_txt}",
                      "the reference may have stopped on an unstable manifold: rerun it from a "
                      "perturbed z0")
        return sv(Verdict.NOT_CONVERGED,
                  f"{status.value}; the reference settled but the spectrum there is {stability}",
                  _spectrum_next(stability))
    if unstable:
        return sv(Verdict.CONTINUOUS_INSTABILITY,
                  f"{status.value} (force floor {floor:.2e}) and {ref_txt}: {inst_txt}. No "
                  "integrator can settle it", kind_=kind)
    if stability == "stable":
        return sv(Verdict.NOT_CONVERGED,
                  f"{status.value}; {ref_txt} although the root found is stable (all Re mu < 0)",
                  f"z0 may lie in another attractor, or the horizon is too short: rerun with "
                  f"reference_steps > {reference_steps}, or start from z*")
    if not root_found:
        rs = f" ({root_status.value})"
        hint = ""
        if pool.size:
            top = pool[int(np.argmax(pool.real))]
            hint = (f"; at that best point (not a root) the leading eigenvalue is {fmt_c(top)}"
                    + (": likely a genuine instability, not yet established at a root"
                       if top.real > margin else ""))
        return sv(Verdict.NOT_CONVERGED,
                  f"{status.value}; {ref_txt} and no fixed point was found (best force residual "
                  f"{root_residual:.2e}{rs}){hint}",
                  "find a root with another root-finder, e.g. compare(..., root=ImplicitEuler("
                  "eps=10.0)) (Newton-Krylov steps also converge to unstable roots), or a longer "
                  "root_steps; a root-finder that cannot drive the residual to ~0 is evidence that "
                  "no root exists near z0 (docs/physics.md section 3)")
    return sv(Verdict.NOT_CONVERGED, f"{status.value}; {ref_txt}; the spectrum at the root is "
              f"{stability}", _spectrum_next(stability))


def _spectrum_next(stability: str) -> str:
    if stability == "marginal":
        return ("an eigenvalue sits on the imaginary axis (within the margin): linear analysis is "
                "inconclusive; run the reference longer or probe in float64 (probe_dtype)")
    return "the eigenvalues were not established: raise k, or probe in float64 (probe_dtype)"


def _more_steps(res: SettleResult, h: float | None, pool: np.ndarray, i: int) -> str:
    """The budget to try: from the linear contraction |1 + h mu| at z* and the sample's scaled
    error (the convergence test passes at 1), else just more than was used."""
    err = math.nan if res.error is None else float(res.error[i])
    if h is not None and pool.size:
        rho = float(np.abs(1 + h * pool).max())
        if 0 < rho < 1 and err > 1:
            need = math.ceil(math.log(1.0 / err) / math.log(rho))
            return (f"rerun with max_steps >= {res.steps + need} (linear contraction "
                    f"{rho:.4f} per step needs ~{need} more)")
    return f"rerun with a larger max_steps (> {res.steps})"


__all__ = [
    "compare",
    "default_reference",
    "root_finders",
    "EXTEND_FACTOR",
    "euler_step",
    "Verdict",
    "Instability",
    "SampleVerdict",
    "MethodReport",
    "FidelityReport",
    "eps_sweep",
    "EpsSweep",
    "knockout",
    "KnockoutResult",
    "KNOCKOUT_GROUPS",
    "REFERENCE_RTOL",
    "REFERENCE_ATOL",
]
