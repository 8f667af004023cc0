"""Summarise training runs (runs/<name>/log.jsonl) into a table, JSON and Markdown.

    python benchmarks/training.py digits-asymep digits-bptt-g2 digits-asymep-pcm

The runs themselves are started with `analogeq train` (commands in
benchmarks/results/training.md); this script only reads their logs, so it is cheap and can be
re-run while they train. The machine is shared by several agents: absolute walls are noisy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analogeq._train_log import read_log

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
OUT = ROOT / "benchmarks" / "results"


def summarise(name: str) -> dict:
    log = read_log(RUNS / name / "log.jsonl")
    steps = [r for r in log if r["kind"] == "step"]
    evals = [r for r in log if r["kind"] == "eval"]
    events = [r for r in log if r["kind"] == "event"]
    best = max(evals, key=lambda r: r["accuracy"]) if evals else None
    return {
        "run": name,
        "steps": len({r["step"] for r in steps}),
        "wall_s": steps[-1]["wall"] if steps else None,
        "last_train_loss": steps[-1]["loss"] if steps else None,
        "invalid_steps": sum(not r["valid"] for r in steps),
        "rollbacks": sum(r.get("what") == "rollback" for r in events),
        "status": next((r.get("status") for r in events if r.get("what") == "end"), "running"),
        "best_test_accuracy": best["accuracy"] if best else None,
        "best_at_step": best["step"] if best else None,
        "best_at_wall_s": best["wall"] if best else None,
        "evals": [(r["step"], r["accuracy"], r["loss"], r["wall"]) for r in evals],
    }


def main(names: list[str]) -> None:
    rows = [summarise(n) for n in names if (RUNS / n / "log.jsonl").is_file()]
    head = ("| run | steps | wall (s) | status | rollbacks | invalid steps | best test acc "
            "| at step |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        acc = "-" if r["best_test_accuracy"] is None else f"{100 * r['best_test_accuracy']:.2f} %"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        lines.append(f"| {r['run']} | {r['steps']} | {wall} | {r['status']} | {r['rollbacks']} | "
                     f"{r['invalid_steps']} | {acc} | {r['best_at_step']} |")
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "training.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits-asymep", "digits-bptt", "digits-bptt-g2", "digits-asymep-pcm"])
