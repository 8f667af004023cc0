"""Per-sample vs batch-wide tolerance of AsymEP's nudged phases, on the shipped digits model.

    .venv/bin/python benchmarks/nudged_tolerance.py [--batches 3,7,11]

The nudged phases stop where each sample's force residual is `nudged_rtol` times its own nudge
scale s_i = |beta| ||dL/dz_i|| / ||z_i|| (per-sample `tol`, the estimator's rule since session 4),
or, as before, where every sample is below `nudged_rtol * min_i s_i` ("batch-min"). Both are run on
the same training batches of the digits task with the shipped model (`analogeq.train.
default_model()`, d_model 48) cast to float64 and the training recipe's estimator (beta 0.01, free
tol 1e-6, Anderson nudges of at most 100 iterations, nudged_rtol 1e-2). Reference: the implicit
adjoint gradient (`ImplicitAdjoint`, free tol 1e-10). Columns: nudge-scale spread, nudged force
calls (both phases), nudged wall, cos and norm ratio to the reference. Prints a table and writes
benchmarks/results/nudged_tolerance.json. Walls depend on the machine's load; the counts do not.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from analogeq.learning import AsymEP, ImplicitAdjoint, _ep
from analogeq.tasks import get_task
from analogeq.train import default_model

OUT = Path(__file__).resolve().parent / "results" / "nudged_tolerance.json"
PER_SAMPLE = _ep._EquilibriumPropagation._nudged_tol


def batch_min(self: Any, scale: torch.Tensor, dtype: torch.dtype, free_tol: Any):
    """The rule before session 4: one tolerance for the batch, from its smallest nudge scale."""
    tol, warn = PER_SAMPLE(self, scale, dtype, free_tol)
    return torch.full_like(tol, float(tol.min())), warn


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([grads[k].flatten() for k in sorted(grads)])


def measure(batches: list[int], batch_size: int) -> list[dict[str, Any]]:
    model = default_model().double()
    task = get_task("digits")
    rows = []
    for step in batches:
        x, y = task.batch(step, batch_size, 0)
        ref = flat(ImplicitAdjoint(tol=1e-10, max_steps=2000).gradients(model, x, y).grads)
        for mode, rule in (("batch-min", batch_min), ("per-sample", PER_SAMPLE)):
            _ep._EquilibriumPropagation._nudged_tol = rule
            try:
                est = AsymEP(beta=0.01, free_tol=1e-6, nudged_method="anderson",
                             nudged_max_steps=100, nudged_rtol=1e-2)
                t0 = time.perf_counter()
                res = est.gradients(model, x, y)
                wall = time.perf_counter() - t0
            finally:
                _ep._EquilibriumPropagation._nudged_tol = PER_SAMPLE
            g = flat(res.grads)
            info = res.info
            scale, tol = info["nudge_scale"], info["nudged_tol"]
            rows.append({
                "batch": step, "mode": mode, "valid": res.valid,
                "scale_min": float(scale.min()), "scale_median": float(scale.median()),
                "scale_max": float(scale.max()),
                "tol_min": float(tol.min()), "tol_max": float(tol.max()),
                "nudged_calls": sum(v for k, v in info["nfe"].items() if k.startswith("nudged")),
                "nudged_wall": sum(v for k, v in info["wall"].items() if k.startswith("nudged")),
                "free_calls": info["nfe"]["free"], "total_wall": wall,
                "cos": float(g @ ref / (g.norm() * ref.norm())),
                "ratio": float(g.norm() / ref.norm()),
            })
            r = rows[-1]
            print(f"batch {step:3d} {mode:10s} s {r['scale_min']:.1e}..{r['scale_max']:.1e} "
                  f"(median {r['scale_median']:.1e})  nudged calls {r['nudged_calls']:3d}  "
                  f"nudged wall {r['nudged_wall']:.2f} s  cos {r['cos']:.6f}  ratio "
                  f"{r['ratio']:.4f}  valid {r['valid']}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="3,7,11", help="training-batch indices (comma-separated)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = measure([int(b) for b in args.batches.split(",")], args.batch_size)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    payload = {"command": "benchmarks/nudged_tolerance.py --batches " + args.batches,
               "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
               "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
