"""Summarise training runs (runs/<name>/log.jsonl) into a table, JSON and Markdown.

    python benchmarks/training.py digits-asymep-r1 digits-bptt-r1 ...

The runs themselves are started with `analogeq train` (commands in
benchmarks/results/training.md); this script only reads their logs, so it is cheap and can be
re-run while they train. The machine is shared by several agents: absolute walls are noisy.

Columns: steps done, wall (s, training time incl. evaluations), status, rollbacks, gate skips
(estimates the residual gate rejected), median and 95th-percentile NFE per step split into the
free phase and the nudged phases (force evaluations; a nudged evaluation also costs one J v and
one J^T v), the Jacobian-penalty controller weight (last and max), the best test accuracy with
its step and wall, and the best accuracy reached within 900 s (15 min).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from analogeq._train_log import read_log

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
OUT = ROOT / "benchmarks" / "results"
BUDGET_S = 900.0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summarise(name: str) -> dict:
    log = read_log(RUNS / name / "log.jsonl")
    steps = [r for r in log if r["kind"] == "step"]
    evals = [r for r in log if r["kind"] == "eval"]
    events = [r for r in log if r["kind"] == "event"]
    best = max(evals, key=lambda r: r["accuracy"]) if evals else None
    in_budget = [r for r in evals if r["wall"] <= BUDGET_S]
    best15 = max(in_budget, key=lambda r: r["accuracy"]) if in_budget else None
    free = [s["nfe_split"].get("free", 0) for s in steps if s.get("nfe_split")]
    nudged = [sum(v for k, v in s["nfe_split"].items() if k.startswith("nudged"))
              for s in steps if s.get("nfe_split")]
    weights = [s["controller_weight"] for s in steps if s.get("controller_weight") is not None]
    return {
        "run": name,
        "steps": len({r["step"] for r in steps}),
        "wall_s": steps[-1]["wall"] if steps else None,
        "last_train_loss": steps[-1]["loss"] if steps else None,
        "invalid_steps": sum(not r["valid"] for r in steps),
        "free_fallbacks": sum(bool(r.get("free_fallback")) for r in steps),
        "rollbacks": sum(r.get("what") == "rollback" for r in events),
        "status": next((r.get("status") for r in events if r.get("what") == "end"),
                       "no end (stopped)"),
        "nfe_total_median": statistics.median([s["nfe"] for s in steps]) if steps else None,
        "nfe_free_median": statistics.median(free) if free else None,
        "nfe_free_p95": _pct(free, 0.95),
        "nfe_nudged_median": statistics.median(nudged) if nudged else None,
        "nfe_nudged_p95": _pct(nudged, 0.95),
        "step_wall_median_s": statistics.median([s["step_wall"] for s in steps]) if steps else None,
        "controller_last": weights[-1] if weights else None,
        "controller_max": max(weights) if weights else None,
        "best_test_accuracy": best["accuracy"] if best else None,
        "best_at_step": best["step"] if best else None,
        "best_at_wall_s": best["wall"] if best else None,
        "best_within_900s": best15["accuracy"] if best15 else None,
        "evals": [(r["step"], r["accuracy"], r["loss"], r["wall"], r.get("converged"))
                  for r in evals],
    }


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def main(names: list[str]) -> None:
    rows = [summarise(n) for n in names if (RUNS / n / "log.jsonl").is_file()]
    head = ("| run | steps | wall (s) | status | rollbacks | gate skips | NFE/step free "
            "(median / p95) | NFE/step nudged (median / p95) | s/step | controller (last / max) "
            "| best test acc | at step (wall s) | best within 900 s |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        acc = "-" if r["best_test_accuracy"] is None else f"{100 * r['best_test_accuracy']:.2f} %"
        a15 = "-" if r["best_within_900s"] is None else f"{100 * r['best_within_900s']:.2f} %"
        lines.append(
            f"| {r['run']} | {r['steps']} | {_f(r['wall_s'], '.0f')} | {r['status']} | "
            f"{r['rollbacks']} | {r['invalid_steps']} | {_f(r['nfe_free_median'], '.0f')} / "
            f"{_f(r['nfe_free_p95'], '.0f')} | {_f(r['nfe_nudged_median'], '.0f')} / "
            f"{_f(r['nfe_nudged_p95'], '.0f')} | {_f(r['step_wall_median_s'], '.2f')} | "
            f"{_f(r['controller_last'], '.2f')} / {_f(r['controller_max'], '.2f')} | {acc} | "
            f"{r['best_at_step']} ({_f(r['best_at_wall_s'], '.0f')}) | {a15} |")
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "training.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits-asymep-r1", "digits-bptt-r1"])
