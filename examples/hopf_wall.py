"""The instability wall, reproduced (issue 6; docs/physics.md sections 3 and 6).

Two training runs of the same small equilibrium transformer that differ only in the Jacobian
penalty's controller:

* "frozen":   `JacobianPenalty` with a fixed weak weight (`--frozen-weight`, default 0.1,
  `adaptive=False`);
* "adaptive": the same initial weight with the adaptive controller (weight x1.25 after a step
  whose free-phase residual exceeds 1e-3, x0.97 otherwise, within [0.1, 16]).

Every `--probe-every` steps both runs are probed on a fixed batch of training samples:

1. the physical free phase: explicit Euler (`--probe-eps`, default 0.1: the digital deployment)
   from the model's start x_in / (1 + c) for `--probe-steps` steps; each sample ends
   converged / limit_cycle / max_steps / diverged;
2. the equilibrium: Anderson started from Euler's end (a root-finder finds the root next to where
   the relaxation went, also an unstable one: there is no other way to get at it);
3. the leading Jacobian eigenvalues there, `jacobian_eigs(force, z, k, which="LR")` per sample;
   the "leading pair" of the probe is the eigenvalue with the largest real part over the probe
   samples (its Im says whether it is a complex pair: a Hopf-type instability when Re > 0, a real
   / saddle-node one when Im = 0, docs/physics.md section 3);
4. where that sample's Re mu > 0 or its Euler relaxation did not converge: the continuous
   dynamics (dopri5, the circuit) from the same start, and `detect_cycle` on both tails.

The training itself is the trainer's (`analogeq.train.Trainer.train_step`: free phase, rule's
gradient, regularisers with their controller, guard, gate, clipped Adam); this script only drives
the loop (rather than `Trainer.run(callback)`) because a guard trip must end the run where
`run` would roll back and go on. A guard trip
(free residual above `guard_residual`, or a non-finite loss) ends a run: that is the wall as the
trainer sees it.

Outputs under `--out` (default runs/hopf-wall/): `hopf_wall.json` (configs, per-probe records,
per-step losses, crossing steps, walls), `hopf_wall.png` (Re and Im of the leading eigenvalue and
the loss vs step for both runs), `probes.jsonl` (one line per probe as it happens) and each
run's trainer directory (`frozen/`, `adaptive/`: config.json, checkpoint.pt at the end).

    OMP_NUM_THREADS=1 .venv/bin/python examples/hopf_wall.py            # both runs, defaults
    .venv/bin/python examples/hopf_wall.py --steps 20 --probe-every 10 --runs frozen  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from analogeq import integrators
from analogeq.probes import detect_cycle, jacobian_eigs
from analogeq.train import TrainConfig, Trainer

__all__ = ["probe", "run_one", "main", "build_parser", "RUNS"]

RUNS = ("frozen", "adaptive")
_IMAG_TOL = 1e-6  # |Im mu| below this (1/time units) counts as a real eigenvalue


# ------------------------------------------------------------------------------------------------
# the probe


def _status_counts(statuses: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in statuses:
        out[s.value] = out.get(s.value, 0) + 1
    return out


def _cycle_dict(report: Any) -> dict[str, Any]:
    return {"is_cycle": bool(report.is_cycle), "floor": float(report.floor),
            "amplitude": float(report.amplitude),
            "period": None if report.period is None else float(report.period),
            "reason": str(report.reason)}


def probe(model: Any, inputs: torch.Tensor, *, k: int = 6, eps: float = 0.1,
          euler_steps: int = 1500, tol: float = 1e-5, ode: bool = True,
          seed: int = 0) -> dict[str, Any]:
    """Physical free phase, equilibrium and leading Jacobian eigenvalues on `inputs`.

    Args:
        model: an `EquilibriumTransformer`.
        inputs: a batch of task inputs, (batch, T) ids or (batch, T, input_dim) features.
        k: eigenvalues per sample (which="LR"), integer >= 1.
        eps: explicit-Euler step of the relaxation (time units, > 0).
        euler_steps: Euler steps (>= 1).
        tol: force-residual tolerance ||F(z)|| / ||z|| of the relaxation and the root (> 0).
        ode: also run the continuous dynamics (dopri5) on the worst sample when it is unstable
            or did not settle under Euler.
        seed: ARPACK start vectors.

    Returns:
        A JSON-ready dict: "lead_re", "lead_im" (1/time) of the eigenvalue with the largest real
        part over the samples, "lead_sample", "lead_kind" ("complex" | "real"), "root_residual"
        of that sample, "median_lead_re" over samples, "n_unstable" (samples whose leading
        Re mu > 0), "n_unstable_complex" (of those, complex pairs), "euler" (status counts),
        "euler_cycle" and "ode" (on the worst sample, when checked), "eigs" (the worst sample's
        k eigenvalues as [re, im] pairs), "status" ("ok" | "no-eigenvalues"), "wall" (s).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if isinstance(euler_steps, bool) or not isinstance(euler_steps, int) or euler_steps < 1:
        raise ValueError(f"euler_steps must be an integer >= 1, got {euler_steps!r}")
    t0 = time.perf_counter()
    with torch.no_grad():
        force = model.force(inputs)
        start = model.initial_state(force)
        eu = integrators.settle(force, start, "euler", eps=float(eps), tol=tol,
                                max_steps=euler_steps)
        root = integrators.settle(force, eu.z, "anderson", tol=tol, max_steps=200)
    eigs = jacobian_eigs(force, root.z, k=k, which="LR", seed=seed).to(torch.complex128)
    lead = eigs[:, 0]
    re = torch.nan_to_num(lead.real, nan=-math.inf)
    out: dict[str, Any] = {"euler": _status_counts(eu.sample_status)}
    if not bool(torch.isfinite(re).any()):
        out.update(status="no-eigenvalues", wall=time.perf_counter() - t0)
        return out
    i = int(torch.argmax(re))
    mu = complex(lead[i])
    unstable = re > 0
    cpx = lead.imag.abs() > _IMAG_TOL
    out.update(
        status="ok", lead_re=mu.real, lead_im=abs(mu.imag), lead_sample=i,
        lead_kind="complex" if abs(mu.imag) > _IMAG_TOL else "real",
        root_residual=float(root.residual[i]), root_status=root.sample_status[i].value,
        median_lead_re=float(lead.real[torch.isfinite(lead.real)].median()),
        n_unstable=int(unstable.sum()), n_unstable_complex=int((unstable & cpx).sum()),
        samples=int(lead.numel()),
        eigs=[[float(v.real), float(v.imag)] for v in eigs[i].tolist()],
        euler_sample=eu.sample_status[i].value,
    )
    if mu.real > 0 or eu.sample_status[i] is not integrators.Status.CONVERGED:
        out["euler_cycle"] = _cycle_dict(detect_cycle(eu, sample=i))
        if ode:
            idx = torch.tensor([i])
            with torch.no_grad():
                od = integrators.settle(force.select(idx), start[i:i + 1], "ode", tol=tol,
                                        max_steps=400)
            out["ode"] = {"status": od.status.value, "residual": float(od.residual[0]),
                          "t": None if od.t is None else float(od.t[0]),
                          "cycle": _cycle_dict(detect_cycle(od, sample=0))}
    out["wall"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------
# one training run, probed between steps


def run_one(label: str, config: TrainConfig, probe_inputs: torch.Tensor, *, every: int,
            probe_options: dict[str, Any],
            stop_after_wall: int | None = None,
            max_minutes: float | None = None, log: Any = None,
            echo: bool = True) -> dict[str, Any]:
    """Train `config` with `Trainer.train_step`, probing every `every` steps (and at the end).

    Stops at `config.steps`, at a guard trip (the trainer's wall), `stop_after_wall` probes
    after the first probe with a complex leading pair at Re mu > 0 (on any probe sample), or
    after `max_minutes` of wall time. Returns a JSON-ready dict: "label", "status",
    "steps_done", "probes" (`probe` dicts with "step", "controller_weight", "recent_loss"),
    "steps" (per-step loss, accuracy, free residual, controller weight, valid),
    "first_unstable_step" (first probe with a sample whose leading Re mu > 0),
    "first_hopf_step" (first probe with a sample whose leading eigenvalue is a complex pair at
    Re mu > 0), "first_euler_failure_step", "guard", "wall" (s), "probe_wall" (s).
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    trainer = Trainer(config)
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    (trainer.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    t0 = time.perf_counter()
    probe_wall = 0.0
    probes: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    out: dict[str, Any] = {"label": label, "status": "completed", "guard": None,
                           "first_unstable_step": None, "first_hopf_step": None,
                           "first_euler_failure_step": None}
    weight = float(config.jacobian_penalty)
    after_wall = None
    while True:
        step = trainer.step
        if step % every == 0 or step == config.steps:
            p = probe(trainer.model, probe_inputs, **probe_options)
            recent = steps[-every:]
            losses = [r["loss"] for r in recent if r["loss"] is not None
                      and math.isfinite(r["loss"])]
            p.update(step=step, controller_weight=weight,
                     recent_loss=sum(losses) / len(losses) if losses else None,
                     recent_skipped=sum(not r["valid"] for r in recent),
                     elapsed=time.perf_counter() - t0)
            probe_wall += p["wall"]
            probes.append(p)
            if log is not None:
                log.write(json.dumps({"run": label, **p}) + "\n")
                log.flush()
            if p["status"] == "ok":
                if p["lead_re"] > 0 and out["first_unstable_step"] is None:
                    out["first_unstable_step"] = step
                if p["n_unstable_complex"] > 0 and out["first_hopf_step"] is None:
                    out["first_hopf_step"] = step
                    after_wall = 0
            if p["euler"].get("converged", 0) < sum(p["euler"].values()) and out[
                    "first_euler_failure_step"] is None:
                out["first_euler_failure_step"] = step
            if echo:
                print(_probe_line(label, p), flush=True)
            if after_wall is not None:
                if stop_after_wall is not None and after_wall >= stop_after_wall:
                    out["status"] = f"stopped {stop_after_wall} probes after the Hopf crossing"
                    break
                after_wall += 1
        if step >= config.steps:
            break
        if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
            out["status"] = f"time budget ({max_minutes:g} min) spent"
            break
        rec = trainer.train_step()
        if "guard" in rec:
            out["status"] = "guard"
            out["guard"] = {"step": rec["step"], "reason": rec["guard"],
                            "free_residual": rec["free_residual"]}
            if echo:
                print(f"[{label}] guard at step {rec['step']}: {rec['guard']}", flush=True)
            if not probes or probes[-1]["step"] != step:  # the model the guard refused
                p = probe(trainer.model, probe_inputs, **probe_options)
                p.update(step=step, controller_weight=weight, recent_loss=None,
                         recent_skipped=0, elapsed=time.perf_counter() - t0, at_guard=True)
                probe_wall += p["wall"]
                probes.append(p)
                if log is not None:
                    log.write(json.dumps({"run": label, **p}) + "\n")
                    log.flush()
                if echo:
                    print(_probe_line(label, p), flush=True)
            break
        if rec.get("controller_weight") is not None:
            weight = float(trainer.regularizers[0].weight)  # after this step's observation
        steps.append({k: rec.get(k) for k in ("step", "loss", "accuracy", "free_residual",
                                              "controller_weight", "valid", "nfe",
                                              "step_wall")})
    out.update(steps_done=trainer.step, probes=probes, steps=steps,
               wall=time.perf_counter() - t0, probe_wall=probe_wall,
               run_dir=str(trainer.run_dir), skipped=trainer.skipped)
    trainer.save()
    return out


def _probe_line(label: str, p: dict[str, Any]) -> str:
    if p["status"] != "ok":
        return f"[{label}] step {p['step']}: {p['status']} (euler {p['euler']})"
    s = (f"[{label}] step {p['step']:5d}: leading mu = {p['lead_re']:+.3f} +- {p['lead_im']:.3f}j "
         f"({p['lead_kind']}), median Re {p['median_lead_re']:+.3f}, unstable "
         f"{p['n_unstable']}/{p['samples']} ({p['n_unstable_complex']} complex), euler "
         f"{p['euler']}, weight {p['controller_weight']:.3g}, loss "
         f"{p['recent_loss'] or math.nan:.3f}, skipped {p['recent_skipped']}, probe "
         f"{p['wall']:.1f}s, t {p['elapsed']:.0f}s")
    if "ode" in p:
        s += f", ode {p['ode']['status']} (res {p['ode']['residual']:.1e})"
    return s


# ------------------------------------------------------------------------------------------------
# plot


def plot(result: dict[str, Any], path: Path) -> Path:
    """Re and Im of the leading eigenvalue and the loss vs step, both runs (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7.5, 8.5), sharex=True)
    colors = {"frozen": "tab:red", "adaptive": "tab:blue"}
    for run in result["runs"]:
        c = colors.get(run["label"], None)
        ok = [p for p in run["probes"] if p["status"] == "ok"]
        st = [p["step"] for p in ok]
        axes[0].plot(st, [p["lead_re"] for p in ok], "o-", color=c, ms=3, label=run["label"])
        axes[0].plot(st, [p["median_lead_re"] for p in ok], ":", color=c, lw=1,
                     label=f"{run['label']} (median over samples)")
        axes[1].plot(st, [p["lead_im"] for p in ok], "o-", color=c, ms=3, label=run["label"])
        steps = [s for s in run["steps"] if s["loss"] is not None and math.isfinite(s["loss"])]
        if steps:
            xs = [s["step"] for s in steps]
            ys = [s["loss"] for s in steps]
            w = max(1, len(ys) // 50)
            smooth = [sum(ys[max(0, j - w + 1):j + 1]) / len(ys[max(0, j - w + 1):j + 1])
                      for j in range(len(ys))]
            axes[2].plot(xs, ys, color=c, alpha=0.25, lw=0.8)
            axes[2].plot(xs, smooth, color=c, label=run["label"])
        if run.get("first_hopf_step") is not None:
            for ax in axes:
                ax.axvline(run["first_hopf_step"], color=c, ls="--", lw=0.8)
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set_ylabel("Re mu (leading, 1/tau)")
    axes[0].set_title("leading Jacobian eigenvalue at the free equilibrium (max over probe "
                      "samples)", fontsize=9)
    axes[1].set_ylabel("|Im mu| of that eigenvalue")
    axes[2].set_ylabel("training loss (CE)")
    axes[2].set_xlabel("training step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(result.get("title", "instability wall"), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train with a frozen weak vs an adaptive Jacobian penalty and probe the "
                    "leading Jacobian eigenvalues at the free equilibrium (issue 6).")
    p.add_argument("--out", default="runs/hopf-wall", help="output directory (default %(default)s)")
    p.add_argument("--runs", default="frozen,adaptive",
                   help="comma-separated subset of frozen,adaptive (default %(default)s)")
    p.add_argument("--task", default="digits", choices=("digits", "synthetic", "text"))
    p.add_argument("--rule", default="bptt", choices=("asymep", "holomorphic", "adjoint",
                                                          "bptt"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--schedule", default="constant", choices=("constant", "cosine"))
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--init-scale", type=float, default=1.0)
    p.add_argument("--attn-gain", type=float, default=3.0,
                   help="attention logit gain (TrainConfig.attn_gain; default %(default)s)")
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--free-max-steps", type=int, default=200)
    p.add_argument("--bptt-steps", type=int, default=10, help="BPTT unroll (Euler steps)")
    p.add_argument("--bptt-eps", type=float, default=0.3, help="BPTT unroll step")
    p.add_argument("--gate-residual", type=float, default=0.3,
                   help="trainer's residual gate (default %(default)s: only a free phase that "
                        "ran away skips the update)")
    p.add_argument("--guard-residual", type=float, default=0.3)
    p.add_argument("--frozen-weight", type=float, default=0.1)
    p.add_argument("--adaptive-weight", type=float, default=0.1)
    p.add_argument("--probe-every", type=int, default=5)
    p.add_argument("--probe-samples", type=int, default=32)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--probe-eps", type=float, default=0.1)
    p.add_argument("--probe-steps", type=int, default=1500)
    p.add_argument("--no-ode", action="store_true", help="skip the dopri5 check")
    p.add_argument("--stop-after-wall", type=int, default=-1,
                   help="probes to keep training after the first Hopf crossing (-1: never stop)")
    p.add_argument("--max-minutes", type=float, default=7.0, help="wall budget per run")
    p.add_argument("--quiet", action="store_true")
    return p


def _config(args: argparse.Namespace, label: str, out: Path) -> TrainConfig:
    adaptive = label == "adaptive"
    return TrainConfig(
        task=args.task, name=f"hopf-wall-{label}", out=str(out / label), steps=args.steps,
        batch_size=args.batch_size, seed=args.seed, overwrite=True, progress=False, plots=False,
        d_model=args.d_model, init_scale=args.init_scale, rule=args.rule, lr=args.lr,
        schedule=args.schedule, warmup_steps=args.warmup_steps,
        free_max_steps=args.free_max_steps, bptt_steps=args.bptt_steps,
        bptt_eps=args.bptt_eps, gate_residual=args.gate_residual,
        guard_residual=args.guard_residual,
        jacobian_penalty=args.adaptive_weight if adaptive else args.frozen_weight,
        adaptive=adaptive, attn_gain=args.attn_gain,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    labels = [s.strip() for s in args.runs.split(",") if s.strip()]
    bad = [s for s in labels if s not in RUNS]
    if bad or not labels:
        raise SystemExit(f"--runs must be a comma-separated subset of {','.join(RUNS)}, got "
                         f"{args.runs!r}")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe_options = {"k": args.k, "eps": args.probe_eps, "euler_steps": args.probe_steps,
                     "ode": not args.no_ode}
    result: dict[str, Any] = {
        "command": "python examples/hopf_wall.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv),
        "args": vars(args), "runs": [],
        "title": (f"{args.task}, {args.rule}, init_scale {args.init_scale:g}, attn_gain "
                  f"{args.attn_gain:g}, lr {args.lr:g}: "
                  f"frozen weight {args.frozen_weight:g} vs adaptive"),
    }
    t0 = time.perf_counter()
    with open(out / "probes.jsonl", "w") as log:
        for label in labels:
            config = _config(args, label, out)
            trainer_task = Trainer(config).task  # the probe batch: fixed training samples
            probe_inputs, _ = trainer_task.batch(10**6, args.probe_samples, args.seed + 1)
            run = run_one(label, config, probe_inputs, every=args.probe_every,
                          probe_options=probe_options,
                          stop_after_wall=None if args.stop_after_wall < 0
                          else args.stop_after_wall,
                          max_minutes=args.max_minutes, log=log, echo=not args.quiet)
            run["config"] = config.to_dict()
            result["runs"].append(run)
    result["wall"] = time.perf_counter() - t0
    (out / "hopf_wall.json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, out / "hopf_wall.png")
    if not args.quiet:
        for run in result["runs"]:
            ok = [p for p in run["probes"] if p["status"] == "ok"]
            top = max(ok, key=lambda p: p["lead_re"]) if ok else None
            print(f"{run['label']}: {run['status']} after {run['steps_done']} steps, "
                  f"{run['wall']:.0f} s; first Re mu > 0 at step {run['first_unstable_step']}, "
                  f"first complex pair with Re mu > 0 at {run['first_hopf_step']}; largest "
                  + (f"Re mu {top['lead_re']:+.3f} +- {top['lead_im']:.3f}j at step "
                     f"{top['step']}" if top else "n/a"))
        print(f"wrote {out / 'hopf_wall.json'} and {out / 'hopf_wall.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
