"""The fidelity verdicts and the report `analogeq.fidelity.compare` returns (text, dict, figure).

Kept apart from the decision logic (`analogeq.fidelity`) so that the report's data layout is one
readable place: what a verdict carries per method and per sample, and how it is rendered.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .integrators import SettleResult, Status
from .probes import AsymmetryResult, EigResult, EulerStep
from .probes import _fmt_c as fmt_c  # shared formatting: one definition
from .probes import _json_safe as json_safe


class Verdict(enum.Enum):
    """What a discrete method's behaviour says about the continuous system.

    See docs/physics.md section 3.

    Ordered by `severity` (the overall verdict is the most severe one).
    """

    FAITHFUL = "faithful"
    """The method settles to the continuous reference's fixed point (distance reported)."""
    NOT_CONVERGED = "not_converged"
    """None of the other verdicts is established (too few steps, no root found, a marginal
    eigenvalue, a different attractor...): the report says what to run next."""
    DISCRETIZATION_ARTIFACT = "discretization_artifact"
    """The continuous reference settles and every Re mu < 0 at its fixed point, but the method
    does not settle: the failure is the discretization's (offending |1 + eps mu| > 1 listed)."""
    CONTINUOUS_INSTABILITY = "continuous_instability"
    """Re mu > 0 at the best root and the continuous reference does not settle: the circuit itself
    does not settle there; no integrator can fix it."""

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def __str__(self) -> str:
        return self.value


_SEVERITY = {
    Verdict.FAITHFUL: 0,
    Verdict.NOT_CONVERGED: 1,
    Verdict.DISCRETIZATION_ARTIFACT: 2,
    Verdict.CONTINUOUS_INSTABILITY: 3,
}


class Instability(enum.Enum):
    """Sub-kind of a continuous instability: which eigenvalues have Re mu > 0 at the root."""

    HOPF = "hopf"
    """A complex pair with Re mu > 0 (an oscillatory, Hopf-type instability: the circuit itself
    oscillates). Reported whenever such a pair exists, also next to unstable real ones."""
    REAL = "real"
    """Only real eigenvalues with Re mu > 0 (saddle-node / real instability: monotone runaway or a
    jump, never a cycle)."""

    def __str__(self) -> str:
        return self.value


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The most severe verdict (FAITHFUL for an empty sequence)."""
    return max(verdicts, key=lambda v: v.severity) if verdicts else Verdict.FAITHFUL


@dataclass(frozen=True)
class SampleVerdict:
    """One method on one sample.

    Residuals are dimensionless: `force_residual` ||F(z)|| / ||z|| at the method's end (the one
    convergence is judged on), `force_floor` the median force residual of the run's tail (equal to
    the final residual for a converged run); `distance` = ||z_end - z*|| / ||z*|| to the best
    fixed-point estimate z* (NaN when none was found). `offending`: eigenvalues mu at z* with
    |1 + h mu| > 1 for the method's Euler step h (None when the method has no fixed Euler step).
    `noise_floor`: the stochastic method's floor (time-averaged force residual) when the verdict
    rests on it, else None.
    """

    verdict: Verdict
    kind: Instability | None
    status: Status
    reason: str
    next_step: str | None
    force_residual: float
    force_floor: float
    distance: float
    offending: tuple[complex, ...] | None
    noise_floor: float | None = None


@dataclass(frozen=True)
class MethodReport:
    """One discrete method: its settle, its Euler step and its verdict per sample.

    * `euler_step`: h such that the method's linear map at z* is I + h J (explicit Euler and
      Euler-Maruyama: eps; IMEX with a scalar leak: eps / (1 + eps leak)); None otherwise.
    * `step_residual`: ||z_{k+1} - z_k|| / ||z_k|| of the last step (largest over the batch);
      `step_floor`: its median over the tail. Never used to judge convergence (docs/physics.md
      section 2).
    """

    label: str
    result: SettleResult
    euler_step: float | None
    samples: tuple[SampleVerdict, ...]
    step_residual: float
    step_floor: float

    @property
    def verdict(self) -> Verdict:
        return worst([s.verdict for s in self.samples])

    @property
    def kind(self) -> Instability | None:
        kinds = [s.kind for s in self.samples if s.verdict is self.verdict and s.kind is not None]
        return Instability.HOPF if Instability.HOPF in kinds else (kinds[0] if kinds else None)


@dataclass(frozen=True)
class FidelityReport:
    """Everything `compare` established. Per-sample tensors are (batch,).

    * `verdict`, `kind`: overall (the most severe over methods and samples); `sample_verdicts`.
    * `methods`: label -> `MethodReport`; `reference`: the continuous reference's `SettleResult`
      (ODESolver); `root`: the root-finder's `SettleResult` (None when not run).
    * `z_star` (batch, ...): best fixed-point estimate per sample; `root_source` per sample
      ("reference" end when the reference settled there, else "root" = the root-finder's best
      point); `root_residual` its force residual; `root_found` (batch,) bool.
    * `eigs`: leading eigenvalues (largest Re) at z*; `euler_eigs`: label -> eigenvalues that
      dominate the method's map I + h J; `eps_crit`: `find_eps_crit` at z* (certified
      where the search closed); `asymmetry` at z*; `stability` per sample: "stable" (all
      Re mu < -margin), "unstable", "marginal" or "unknown" (no root or eigenvalues).
    * `tol`: force-residual tolerance of every settle.
    """

    verdict: Verdict
    kind: Instability | None
    sample_verdicts: tuple[Verdict, ...]
    methods: dict[str, MethodReport]
    reference: SettleResult
    root: SettleResult | None
    z_star: Tensor
    root_source: tuple[str, ...]
    root_residual: Tensor
    root_found: Tensor
    eigs: EigResult | None
    euler_eigs: dict[str, EigResult]
    eps_crit: EulerStep | None
    asymmetry: AsymmetryResult | None
    stability: tuple[str, ...]
    margin: tuple[float, ...]
    tol: float
    wall_time: float
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return len(self.sample_verdicts)

    def pool(self, i: int) -> np.ndarray:
        """Every distinct eigenvalue found at sample i's z* (all sets), complex numpy array."""
        return _pool(self, i)

    # -- rendering -----------------------------------------------------------------------------
    def text(self) -> str:
        """A report a person can read: verdict, reference, fixed point and spectrum, methods."""
        head = f"fidelity verdict: {self.verdict.value.upper()}"
        if self.kind is not None:
            head += f" ({self.kind.value})"
        lines = [
            head,
            "residuals: force g = ||F(z)||/||z|| (convergence is judged on it); "
            "step = ||z_{k+1} - z_k||/||z_k|| (shown, never judged on)",
            f"reference (continuous dynamics): {self.reference.summary()}",
        ]
        if self.root is not None:
            lines.append(f"root-finder: {self.root.summary()}")
        for i in range(self.batch):
            lines.append(
                f"sample {i}: fixed point from {self.root_source[i]} (force residual "
                f"{float(self.root_residual[i]):.2e}"
                f"{'' if bool(self.root_found[i]) else ', NOT a root'}"
                f"); Jacobian there: {self.stability[i]} (margin {self.margin[i]:.1e})"
            )
            if self.eigs is not None:
                vals = self.eigs.values[i][self.eigs.converged[i]]
                lines.append("  leading eigenvalues mu (largest Re, 1/time): "
                             + "  ".join(fmt_c(m) for m in vals))
            if self.eps_crit is not None:
                lines.append("  " + self.eps_crit.text(i).split(": ", 1)[1])
            if self.asymmetry is not None:
                lines.append(f"  asymmetry ||A||_F/||S||_F = {float(self.asymmetry.ratio[i]):.3g}, "
                             f"||Jv - J^T v||/||Jv|| = {float(self.asymmetry.relative[i]):.3g}")
        lines.append("")
        header = (f"{'method':<22} {'smp':>3} {'status':<12} {'verdict':<31} {'force res':>9} "
                  f"{'floor':>9} {'step res':>9} {'distance':>9}")
        lines += [header, "-" * len(header)]
        for label, m in self.methods.items():
            for i, s in enumerate(m.samples):
                verdict = s.verdict.value + (f" ({s.kind.value})" if s.kind else "")
                lines.append(
                    f"{label:<22} {i:>3} {s.status.value:<12} {verdict:<31} "
                    f"{s.force_residual:>9.2e} {s.force_floor:>9.2e} {m.step_residual:>9.2e} "
                    f"{_fmt_f(s.distance):>9}"
                )
        lines.append("")
        for label, m in self.methods.items():
            step = "" if m.euler_step is None else f" (Euler step h = {m.euler_step:g})"
            lines.append(f"{label}{step}: {m.verdict.value}")
            for i, s in enumerate(m.samples):
                lines.append(f"  sample {i}: {s.reason}")
                if s.offending:
                    lines.append("    |1 + h mu| > 1 for: " + ", ".join(
                        f"{fmt_c(mu)} (|1 + h mu| = {abs(1 + m.euler_step * mu):.4f})"
                        for mu in s.offending))
                if s.next_step:
                    lines.append(f"    next: {s.next_step}")
        for note in self.notes:
            lines.append(f"note: {note}")
        lines.append(f"wall {self.wall_time:.2f}s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe): complex numbers as [re, im], non-finite floats as strings."""
        def c_list(vals: Any) -> list[list[float]]:
            return [[float(complex(v).real), float(complex(v).imag)] for v in vals]

        out: dict[str, Any] = {
            "verdict": self.verdict.value,
            "kind": None if self.kind is None else self.kind.value,
            "sample_verdicts": [v.value for v in self.sample_verdicts],
            "tol": self.tol,
            "residual_kinds": {"force": "||F(z)||/||z||", "step": "||z_{k+1}-z_k||/||z_k||"},
            "reference": _result_dict(self.reference),
            "root": None if self.root is None else _result_dict(self.root),
            "root_source": list(self.root_source),
            "root_residual": self.root_residual.cpu().tolist(),
            "root_found": self.root_found.cpu().tolist(),
            "stability": list(self.stability),
            "margin": list(self.margin),
            "eigenvalues": [c_list(self.pool(i)) for i in range(self.batch)],
            "leading_eigenvalues": None if self.eigs is None else [
                c_list(self.eigs.values[i][self.eigs.converged[i]]) for i in range(self.batch)],
            "eps_crit": None if self.eps_crit is None else self.eps_crit.eps_crit.cpu().tolist(),
            "eps_crit_certified": None if self.eps_crit is None or self.eps_crit.certified is None
            else self.eps_crit.certified.cpu().tolist(),
            "eps_crit_limiting": None if self.eps_crit is None
            else c_list(self.eps_crit.limiting.cpu()),
            "asymmetry_ratio": None if self.asymmetry is None
            else self.asymmetry.ratio.cpu().tolist(),
            "asymmetry_relative": None if self.asymmetry is None
            else self.asymmetry.relative.cpu().tolist(),
            "methods": {},
            "notes": list(self.notes),
            "wall_s": self.wall_time,
        }
        for label, m in self.methods.items():
            out["methods"][label] = {
                "verdict": m.verdict.value,
                "kind": None if m.kind is None else m.kind.value,
                "euler_step": m.euler_step,
                "step_residual": m.step_residual,
                "step_floor": m.step_floor,
                "result": _result_dict(m.result),
                "samples": [{
                    "verdict": s.verdict.value,
                    "kind": None if s.kind is None else s.kind.value,
                    "status": s.status.value,
                    "reason": s.reason,
                    "next": s.next_step,
                    "force_residual": s.force_residual,
                    "force_floor": s.force_floor,
                    "distance": s.distance,
                    "offending": None if s.offending is None else c_list(s.offending),
                    "noise_floor": s.noise_floor,
                } for s in m.samples],
            }
        return json_safe(out)

    def plot(self, path: str | Path, *, title: str = "") -> Path:
        """Force residual vs continuous time and vs NFE per method (and the reference), and the
        eigenvalues at z* in the complex plane with each method's Euler stability disk
        |1 + h mu| < 1 (centre -1/h, radius 1/h). Writes a PNG (or any matplotlib format)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_t, ax_n, ax_s) = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
        runs: dict[str, SettleResult] = {f"{k}": m.result for k, m in self.methods.items()}
        runs["reference (ode)"] = self.reference
        if self.root is not None:
            runs["root-finder"] = self.root
        colors: dict[str, Any] = {}
        # Display range: a start at z = 0 has a residual ~1e300 (||z|| floored at the dtype's
        # tiny) and an exact fixed point 0; clip both so that the axes show the dynamics.
        tails = [r.trace.residual[1:] for r in runs.values() if r.trace.residual.numel() > 1]
        finite = [t[torch.isfinite(t)] for t in tails]
        top = max((float(t.max()) for t in finite if t.numel()), default=1.0)
        hi = 10 * min(max(top, self.tol), 1e30)
        for label, res in runs.items():
            y = res.trace.residual.nan_to_num(posinf=hi).clamp(1e-30, hi).numpy()
            (line,) = ax_n.semilogy(res.trace.nfe.numpy(), y, label=f"{label} ({res.status})")
            colors[label] = line.get_color()
            if res.trace.time is not None:
                ax_t.semilogy(res.trace.time.numpy(), y, color=line.get_color(), label=label)
        for ax, xl in ((ax_t, "continuous time (units of tau)"), (ax_n, "force evaluations")):
            ax.axhline(self.tol, color="grey", ls=":", lw=1, label=f"tol {self.tol:g}")
            ax.set_xlabel(xl)
            ax.set_ylabel("force residual ||F(z)|| / ||z|| (max over batch)")
            ax.grid(True, which="both", alpha=0.3)
        ax_t.legend(fontsize=7)
        ax_n.legend(fontsize=7)
        ax_t.set_title("force residual vs time", fontsize=9)
        ax_n.set_title("force residual vs NFE (root-finders have no time)", fontsize=9)

        pts: list[complex] = []
        markers = "ox^sdv"
        for i in range(self.batch):
            vals = self.pool(i)
            pts.extend(vals.tolist())
            ax_s.plot(vals.real, vals.imag, markers[i % len(markers)], mfc="none", color="k",
                      label=f"sample {i}: eigenvalues at z* ({self.stability[i]})")
            for label, m in self.methods.items():
                if m.samples[i].offending:
                    off = np.asarray(m.samples[i].offending, dtype=complex)
                    ax_s.plot(off.real, off.imag, "*", ms=10, color=colors.get(label),
                              label=f"{label}: |1 + h mu| > 1" if i == 0 else None)
        theta = np.linspace(0, 2 * np.pi, 400)
        for label, m in self.methods.items():
            if m.euler_step is None:
                continue
            r = 1.0 / m.euler_step
            ax_s.plot(-r + r * np.cos(theta), r * np.sin(theta), ls=":", color=colors.get(label),
                      label=f"{label}: stable disk (h = {m.euler_step:g})")
        ax_s.axvline(0.0, color="k", lw=1.0)
        ax_s.axhline(0.0, color="grey", lw=0.5)
        arr = np.asarray(pts, dtype=complex)
        arr = arr[np.isfinite(arr)] if arr.size else arr
        if arr.size:
            span = max(np.ptp(arr.real), np.ptp(arr.imag), 1.0)
            pad = 0.25 * span
            ax_s.set_xlim(min(arr.real.min(), 0.0) - pad, max(arr.real.max(), 0.0) + pad)
            ax_s.set_ylim(min(arr.imag.min(), -0.5 * span) - pad,
                          max(arr.imag.max(), 0.5 * span) + pad)
        ax_s.set_aspect("equal", adjustable="box")
        ax_s.set_xlabel("Re mu (1/time)")
        ax_s.set_ylabel("Im mu (1/time)")
        ax_s.set_title("Jacobian eigenvalues at the fixed point", fontsize=9)
        ax_s.legend(fontsize=7, loc="best")
        fig.suptitle(title or f"fidelity: {self.verdict.value}"
                     + (f" ({self.kind.value})" if self.kind else ""))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


# ------------------------------------------------------------------------------------------------
# helpers


def _pool(report: FidelityReport, i: int) -> np.ndarray:
    sets: list[np.ndarray] = []
    if report.eigs is not None:
        sets.append(report.eigs.values[i][report.eigs.converged[i]].cpu().numpy())
    for e in report.euler_eigs.values():
        sets.append(e.values[i][e.converged[i]].cpu().numpy())
    if report.eps_crit is not None:
        lim = complex(report.eps_crit.limiting[i])
        if math.isfinite(lim.real):
            sets.append(np.asarray([lim, lim.conjugate()]))
    return dedupe(np.concatenate(sets) if sets else np.zeros(0, dtype=complex))


def dedupe(vals: np.ndarray, rel: float = 1e-6) -> np.ndarray:
    """Finite eigenvalues without near-duplicates (the same mode from several sets)."""
    vals = np.asarray(vals, dtype=np.complex128).reshape(-1)
    vals = vals[np.isfinite(vals)]
    kept: list[complex] = []
    for v in vals[np.lexsort((vals.imag, vals.real))]:
        if not any(abs(v - w) <= rel * max(1.0, abs(v)) for w in kept):
            kept.append(complex(v))
    return np.asarray(kept, dtype=np.complex128)


def _result_dict(res: SettleResult) -> dict[str, Any]:
    return {
        "method": res.method,
        "status": res.status.value,
        "sample_status": [s.value for s in res.sample_status],
        "force_residual": res.residual.detach().cpu().tolist(),
        "nfe": res.nfe,
        "steps": res.steps,
        "time": None if res.t is None else res.t.detach().cpu().tolist(),
        "wall_s": res.wall_time,
    }


def _fmt_f(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2e}"


__all__ = ["Verdict", "Instability", "SampleVerdict", "MethodReport", "FidelityReport", "worst",
           "dedupe", "fmt_c", "json_safe"]
