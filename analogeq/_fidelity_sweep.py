"""Two fidelity experiments: the eps sweep done right, and the parameter-group knockout.

* `eps_sweep(force, z0, eps_values, total_time)`: explicit Euler at several step sizes, each for
  the same continuous time eps * N = total_time, reporting per eps the *force*-residual floor
  beside the *step*-residual floor and the prediction from the spectrum at the fixed point
  (eps_crit, the per-step contraction max |1 + eps mu|). docs/physics.md section 2: a sweep once
  "converged at eps = 0.01" because the step residual eps * g shrank with eps while the force
  residual g floored high; here both are printed side by side and only g is judged.
* `knockout(model, tokens, scale={"attention_out": alpha})`: the block with a parameter group
  scaled (on a deep copy), settled and re-probed beside the original: the knockout experiment of
  docs/physics.md section 3 where scaling W_O by 0.2 restored a true fixed point (attention drove
  the instability).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._fidelity_report import dedupe, fmt_c, json_safe
from .integrators import ExplicitEuler, SettleResult, Status, settle
from .integrators._loop import check_initial_state
from .probes import ProbeReport, find_eps_crit, jacobian_eigs, probe_report

# ------------------------------------------------------------------------------------------------
# eps sweep


@dataclass(frozen=True)
class EpsSweep:
    """Explicit Euler at each eps for the same continuous time (`eps_sweep`).

    Per eps (lists in the order of `eps`): `steps` N = round(total_time / eps), `status` (worst
    over the batch), `force_floor` (batch,) the per-sample median force residual
    ||F(z)|| / ||z|| over the last `tail_fraction` of the run (the final residual for a sample
    that converged), `step_floor` the median over the same tail of the step residual
    ||z_{k+1} - z_k|| / ||z_k|| (largest over the batch; for Euler it equals eps * g),
    `rho` (batch,) the predicted per-step amplification max |1 + eps mu| over the eigenvalues at
    the fixed point, `predicted_stable` (batch,) rho < 1 (eps < eps_crit and no Re mu >= 0).

    `eps_crit` (batch,): Euler's critical step at the fixed point `z_star` (`find_eps_crit`);
    `root_residual` (batch,): the force residual at z_star (the prediction is a linear statement
    at a fixed point, meaningful only where this is ~0).
    """

    eps: tuple[float, ...]
    total_time: float
    steps: tuple[int, ...]
    status: tuple[Status, ...]
    force_floor: tuple[Tensor, ...]
    step_floor: tuple[float, ...]
    rho: tuple[Tensor, ...]
    predicted_stable: tuple[Tensor, ...]
    eps_crit: Tensor
    eps_crit_certified: Tensor | None
    eigenvalues: tuple[np.ndarray, ...]
    z_star: Tensor
    root_residual: Tensor
    results: tuple[SettleResult, ...]
    tol: float
    wall_time: float

    def text(self) -> str:
        ec = ", ".join(f"{float(e):.4g}" for e in self.eps_crit)
        lines = [
            f"eps sweep of explicit Euler at fixed eps * N = {self.total_time:g} (time units)",
            f"predicted eps_crit at the fixed point (per sample): {ec}; force residual there "
            f"{float(self.root_residual.max()):.1e}",
            "force floor = median ||F(z)||/||z|| over the tail (judged); step floor = median "
            "||z_{k+1}-z_k||/||z_k|| (= eps * g for Euler: it shrinks with eps, never judge on it)",
            f"{'eps':>8} {'N':>7} {'status':<12} {'force floor':>11} {'step floor':>11} "
            f"{'max|1+eps mu|':>13} {'predicted':>10}",
        ]
        for j, eps in enumerate(self.eps):
            pred = "stable" if bool(self.predicted_stable[j].all()) else (
                "unstable" if not bool(self.predicted_stable[j].any()) else "mixed")
            lines.append(
                f"{eps:>8.4g} {self.steps[j]:>7d} {self.status[j].value:<12} "
                f"{float(self.force_floor[j].max()):>11.3e} {self.step_floor[j]:>11.3e} "
                f"{float(self.rho[j].max()):>13.5f} {pred:>10}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "eps": list(self.eps),
            "total_time": self.total_time,
            "steps": list(self.steps),
            "status": [s.value for s in self.status],
            "force_floor": [f.tolist() for f in self.force_floor],
            "step_floor": list(self.step_floor),
            "rho": [r.tolist() for r in self.rho],
            "predicted_stable": [p.tolist() for p in self.predicted_stable],
            "eps_crit": self.eps_crit.tolist(),
            "root_residual": self.root_residual.tolist(),
            "tol": self.tol,
            "wall_s": self.wall_time,
        })

    def plot(self, path: str | Path, *, title: str = "") -> Path:
        """Force and step floors vs eps (log-log), with the predicted eps_crit."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
        eps = np.asarray(self.eps)
        force = np.asarray([float(f.max()) for f in self.force_floor])
        step = np.asarray(self.step_floor)
        ax.loglog(eps, np.maximum(force, 1e-300), "o-", label="force residual floor (judged)")
        ax.loglog(eps, np.maximum(step, 1e-300), "s--", label="step residual floor (= eps g)")
        for e in sorted({float(x) for x in self.eps_crit if math.isfinite(float(x))}):
            ax.axvline(e, color="tab:red", ls=":", label=f"predicted eps_crit {e:.3g}")
        ax.axhline(self.tol, color="grey", ls=":", lw=1, label=f"tol {self.tol:g}")
        ax.set_xlabel("eps (time units)")
        ax.set_ylabel("residual floor over the tail")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(title or f"explicit Euler at fixed eps*N = {self.total_time:g}", fontsize=10)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def eps_sweep(
    force: Any,
    z0: Tensor,
    eps_values: Sequence[float],
    total_time: float,
    *,
    tol: float = 1e-10,
    z_star: Tensor | None = None,
    tail_fraction: float = 0.1,
    k: int = 6,
    probe_dtype: torch.dtype | None = None,
    seed: int = 0,
    max_total_steps: int = 10**7,
) -> EpsSweep:
    """Explicit Euler at each eps in `eps_values` for N = round(total_time / eps) steps.

    Args:
        force, z0: the force and the start state (batch, ...), real.
        eps_values: step sizes (time units, each > 0), at least one.
        total_time: continuous time eps * N of every run (> 0).
        tol: force-residual tolerance (> 0); a run stops early once every sample reaches it
            (default 1e-10: the floors are measured, not cut at a loose tol).
        z_star: the fixed point to predict from (batch, ...); default: Anderson's root from z0.
        tail_fraction: the fraction of each run whose median is the floor, in (0, 1].
        k: eigenvalues per set for the prediction; probe_dtype, seed: as in `compare`.
        max_total_steps: refuse sweeps whose runs would take more steps than this in total.

    Returns:
        An `EpsSweep` with `.text()`, `.to_dict()` and `.plot(path)`.
    """
    t0 = time.perf_counter()
    if not callable(force):
        raise TypeError(f"force must be callable F(z) -> dz/dt, got {type(force).__name__}")
    z0 = check_initial_state(z0)
    if isinstance(eps_values, str | bytes) or not isinstance(eps_values, Sequence | np.ndarray):
        raise TypeError("eps_values must be a sequence of positive step sizes")
    if len(eps_values) == 0:
        raise ValueError("eps_values must hold at least one step size")
    eps_list = []
    for e in eps_values:
        if isinstance(e, bool) or not isinstance(e, int | float | np.floating):
            raise TypeError(f"eps_values must hold real numbers, got {type(e).__name__}")
        if not (math.isfinite(float(e)) and float(e) > 0):
            raise ValueError(f"eps_values must be finite and > 0, got {e}")
        eps_list.append(float(e))
    if isinstance(total_time, bool) or not isinstance(total_time, int | float) \
            or not (math.isfinite(total_time) and total_time > 0):
        raise ValueError(f"total_time must be a finite number > 0, got {total_time!r}")
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    if isinstance(tail_fraction, bool) or not isinstance(tail_fraction, int | float) \
            or not 0 < tail_fraction <= 1:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction!r}")
    steps = [max(1, round(total_time / e)) for e in eps_list]
    if sum(steps) > max_total_steps:
        raise ValueError(f"the sweep needs {sum(steps)} Euler steps in total, more than "
                         f"max_total_steps = {max_total_steps}: raise it or shorten total_time")

    if z_star is None:
        root = settle(force, z0, "anderson", tol=1e-10 if z0.dtype == torch.float64 else tol)
        z_star = root.z
    else:
        z_star = check_initial_state(z_star)
        if z_star.shape != z0.shape:
            raise ValueError(f"z_star must have z0's shape {tuple(z0.shape)}, got "
                             f"{tuple(z_star.shape)}")
    with torch.no_grad():
        f_star = force(z_star)
    dims = tuple(range(1, z0.ndim))
    root_residual = (torch.linalg.vector_norm(f_star, dim=dims)
                     / torch.linalg.vector_norm(z_star, dim=dims)).double().cpu()
    kk = min(k, z0[0].numel())
    eigs = jacobian_eigs(force, z_star, kk, "LR", info=True, dtype=probe_dtype, seed=seed)
    known = torch.where(eigs.converged, eigs.values, complex(math.nan, math.nan))
    ecrit = find_eps_crit(force, z_star, k=kk, known=known, dtype=probe_dtype, seed=seed)
    batch = z0.shape[0]
    pools = []
    for i in range(batch):
        sets = [eigs.values[i][eigs.converged[i]].cpu().numpy(), ecrit.nonnegative[i].cpu().numpy()]
        lim = complex(ecrit.limiting[i])
        if math.isfinite(lim.real):
            sets.append(np.asarray([lim, lim.conjugate()]))
        pools.append(dedupe(np.concatenate(sets)))

    results, statuses, force_floors, step_floors, rhos, preds = [], [], [], [], [], []
    eps_crit = ecrit.eps_crit.double().cpu()
    for eps, n in zip(eps_list, steps, strict=True):
        res = settle(force, z0, ExplicitEuler(eps=eps), tol=tol, max_steps=n)
        results.append(res)
        statuses.append(res.status)
        floors = []
        for i in range(batch):
            n_i = int(res.steps_per_sample[i]) + 1 if res.steps_per_sample is not None \
                else res.trace.sample_residual.shape[0]
            hist = res.trace.sample_residual[:n_i, i]
            if res.sample_status[i] is Status.CONVERGED:
                floors.append(float(res.residual[i]))
            else:
                m = max(1, int(tail_fraction * hist.numel()))
                floors.append(float(torch.quantile(hist[-m:], 0.5)))
        force_floors.append(torch.tensor(floors, dtype=torch.float64))
        sr = res.trace.step_residual
        m = max(1, int(tail_fraction * sr.numel()))
        step_floors.append(float(torch.quantile(sr[-m:], 0.5)) if sr.numel() else math.nan)
        rho = torch.tensor([float(np.abs(1 + eps * p).max()) if p.size else math.nan
                            for p in pools], dtype=torch.float64)
        rhos.append(rho)
        preds.append(rho < 1)  # every mode contracts under I + eps J (eps < eps_crit, no Re >= 0)
    return EpsSweep(
        eps=tuple(eps_list), total_time=float(total_time), steps=tuple(steps),
        status=tuple(statuses), force_floor=tuple(force_floors), step_floor=tuple(step_floors),
        rho=tuple(rhos), predicted_stable=tuple(preds), eps_crit=eps_crit,
        eps_crit_certified=None if ecrit.certified is None else ecrit.certified.cpu(),
        eigenvalues=tuple(pools), z_star=z_star, root_residual=root_residual,
        results=tuple(results), tol=float(tol), wall_time=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------------
# knockout

KNOCKOUT_GROUPS: dict[str, tuple[str, ...]] = {
    "attention_out": ("attn.o",),
    "attention_value": ("attn.v",),
    "attention_query": ("attn.q",),
    "attention_key": ("attn.k",),
    "ffn_in": ("ffn.up",),
    "ffn_out": ("ffn.down",),
    "input": ("embed", "pos"),
}
"""Parameter groups `knockout` can scale -> the model's stable module names. Each map's weight and
bias are both multiplied, so "attention_out" by alpha multiplies the attention branch's output by
alpha exactly (docs/physics.md section 3: W_O x 0.2), "ffn_out" the FFN branch's, "input" the drive
x_in. With qk_norm (the default) "attention_query"/"attention_key" scale only the pre-norm q/k,
which RMSNorm removes (up to its epsilon)."""


@dataclass(frozen=True)
class KnockoutResult:
    """The block before and after scaling parameter groups (`knockout`).

    * `scale`: group -> factor; `parameters`: the parameter names scaled.
    * `baseline`, `knocked`: `ProbeReport`s at each model's fixed point (eigenvalues, eps_crit,
      log-norm, asymmetry); `baseline_root`, `knocked_root`: the root-finder's settles;
      `baseline_euler`, `knocked_euler`: explicit Euler at `eps` (None when not run).
    * `model`: the knocked-out deep copy (the caller's model is untouched).
    """

    scale: dict[str, float]
    parameters: tuple[str, ...]
    baseline: ProbeReport
    knocked: ProbeReport
    baseline_root: SettleResult
    knocked_root: SettleResult
    baseline_euler: SettleResult | None
    knocked_euler: SettleResult | None
    eps: float
    model: Any
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        groups = ", ".join(f"{g} x {a:g}" for g, a in self.scale.items())
        lines = [f"knockout: {groups} (parameters: {', '.join(self.parameters)})"]
        for name, rep, root, eul in (("baseline", self.baseline, self.baseline_root,
                                      self.baseline_euler),
                                     ("knocked ", self.knocked, self.knocked_root,
                                      self.knocked_euler)):
            for i in range(rep.residual.numel()):
                vals = rep.eigs.values[i][rep.eigs.converged[i]]
                lead = "  ".join(fmt_c(m) for m in vals[:4])
                eul_txt = "" if eul is None else (
                    f"; Euler(eps={self.eps:g}) {eul.sample_status[i].value}, force residual "
                    f"{float(eul.residual[i]):.2e}")
                lines.append(
                    f"{name} sample {i}: root {root.sample_status[i].value} (force residual "
                    f"{float(root.residual[i]):.1e}); leading mu {lead}; eps_crit "
                    f"{float(rep.euler.eps_crit[i]):.4g}; log-norm "
                    f"{float(rep.lognorm.value[i]):.4g}{eul_txt}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = {"scale": dict(self.scale), "parameters": list(self.parameters), "eps": self.eps,
               "baseline": self.baseline.to_dict(), "knocked": self.knocked.to_dict(),
               "baseline_root_status": [s.value for s in self.baseline_root.sample_status],
               "knocked_root_status": [s.value for s in self.knocked_root.sample_status],
               "wall_s": self.wall_time}
        for name, res in (("baseline_euler", self.baseline_euler),
                          ("knocked_euler", self.knocked_euler)):
            out[name] = None if res is None else {
                "status": [s.value for s in res.sample_status],
                "force_residual": res.residual.cpu().tolist()}
        return json_safe(out)

    def plot(self, path: str | Path, *, title: str = "") -> Path:
        """Both spectra in the complex plane, with Euler's stability disk at eps."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 5), constrained_layout=True)
        for rep, label, marker in ((self.baseline, "baseline", "o"),
                                   (self.knocked, "knocked out", "x")):
            for i in range(rep.residual.numel()):
                v = rep.eigs.values[i][rep.eigs.converged[i]].cpu().numpy()
                ax.plot(v.real, v.imag, marker, mfc="none",
                        label=f"{label}, sample {i}" if i < 3 else None)
        r = 1.0 / self.eps
        th = np.linspace(0, 2 * np.pi, 400)
        ax.plot(-r + r * np.cos(th), r * np.sin(th), ":", color="tab:red",
                label=f"Euler stable disk, eps = {self.eps:g}")
        ax.axvline(0.0, color="k", lw=1)
        ax.set_xlabel("Re mu (1/time)")
        ax.set_ylabel("Im mu (1/time)")
        ax.legend(fontsize=7)
        groups = ", ".join(f"{g} x {a:g}" for g, a in self.scale.items())
        ax.set_title(title or f"knockout {groups}: leading eigenvalues", fontsize=10)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _check_scale(scale: Any) -> dict[str, float]:
    if not isinstance(scale, Mapping) or not scale:
        raise TypeError(f"scale must be a non-empty dict group -> factor, groups "
                        f"{sorted(KNOCKOUT_GROUPS)}; got {scale!r}")
    out = {}
    for g, a in scale.items():
        if g not in KNOCKOUT_GROUPS:
            raise ValueError(f"unknown parameter group {g!r}; choose from "
                             f"{sorted(KNOCKOUT_GROUPS)}")
        if isinstance(a, bool) or not isinstance(a, int | float) or not (math.isfinite(a)
                                                                          and a >= 0):
            raise ValueError(f"scale[{g!r}] must be a finite number >= 0, got {a!r}")
        out[g] = float(a)
    return out


def scaled_copy(model: Any, scale: Mapping[str, float]) -> tuple[Any, tuple[str, ...]]:
    """A deep copy of `model` with every parameter of each group multiplied by its factor."""
    scale = _check_scale(scale)
    knocked = copy.deepcopy(model)
    names = []
    with torch.no_grad():
        for group, alpha in scale.items():
            for module_name in KNOCKOUT_GROUPS[group]:
                module = knocked.get_submodule(module_name)
                for pname, p in module.named_parameters(recurse=False):
                    p.mul_(alpha)
                    names.append(f"{module_name}.{pname}")
    return knocked, tuple(names)


def knockout(
    model: Any,
    tokens: Tensor,
    scale: Mapping[str, float],
    *,
    eps: float = 0.1,
    k: int = 6,
    tol: float = 1e-6,
    method: str = "anderson",
    euler_steps: int | None = 1000,
    probe_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> KnockoutResult:
    """Scale parameter groups of an equilibrium transformer and re-probe its fixed point.

    Args:
        model: a digital `EquilibriumTransformer` (hardware models: knock out the nominal model
            and program it again; refused here, since re-programming redraws device errors).
        tokens: its inputs (token ids (batch, T), or features).
        scale: group -> factor >= 0, groups from `KNOCKOUT_GROUPS` (e.g.
            {"attention_out": 0.2}).
        eps: the Euler step whose stability is probed (and run, see euler_steps), > 0.
        k: eigenvalues per set; tol: force-residual tolerance of the settles.
        method: the root-finder for each model's fixed point.
        euler_steps: steps of explicit Euler at eps on both models (None: not run).
        probe_dtype, seed: as in `compare`.

    Returns:
        A `KnockoutResult` (`.text()`, `.to_dict()`, `.plot(path)`); the caller's model is not
        modified (the knocked-out copy is `result.model`).
    """
    from .model import EquilibriumTransformer

    t0 = time.perf_counter()
    if not isinstance(model, EquilibriumTransformer):
        raise TypeError(f"model must be an EquilibriumTransformer, got {type(model).__name__}")
    if model.hardware is not None:
        raise ValueError("knockout works on the digital model (hardware=None): scaling the "
                         "nominal weights of a chip needs a new programming event")
    scale = _check_scale(scale)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps)
                                                                          and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if euler_steps is not None and (isinstance(euler_steps, bool)
                                    or not isinstance(euler_steps, int) or euler_steps < 1):
        raise ValueError(f"euler_steps must be an integer >= 1 or None, got {euler_steps!r}")
    knocked, names = scaled_copy(model, scale)
    out = {}
    for tag, m in (("baseline", model), ("knocked", knocked)):
        root = m.settle(tokens, method, tol=tol)
        force = m.force(tokens)
        rep = probe_report(force, root.z, k=k, eps=float(eps), dtype=probe_dtype, seed=seed)
        eul = None if euler_steps is None else m.settle(
            tokens, ExplicitEuler(eps=float(eps)), tol=tol, max_steps=euler_steps)
        out[tag] = (root, rep, eul)
    return KnockoutResult(
        scale=scale, parameters=names, baseline=out["baseline"][1], knocked=out["knocked"][1],
        baseline_root=out["baseline"][0], knocked_root=out["knocked"][0],
        baseline_euler=out["baseline"][2], knocked_euler=out["knocked"][2], eps=float(eps),
        model=knocked, wall_time=time.perf_counter() - t0,
    )


__all__ = ["EpsSweep", "eps_sweep", "KNOCKOUT_GROUPS", "KnockoutResult", "knockout",
           "scaled_copy"]
