"""Training logs: one JSON object per line (steps, evaluations, events) and the end-of-run plots.

Record kinds (the "kind" key):
* "step": step, loss, accuracy (training batch, None when not measured), free_residual and
  nudged_residual (max over the batch), nfe (force evaluations of the step, all phases),
  controller_weight (None without a Jacobian penalty), lr, valid, updated, wall (seconds since the
  run started, summed over resumes), step_wall;
* "eval": step, split, loss, accuracy, residual, converged (fraction), wall;
* "event": step, what ("rollback", "resume", "skip", "stop", ...) and details.
On resume the log is cut back to the checkpoint's step (records of steps the resumed run redoes
are dropped), so a resumed log reads like an uninterrupted one, plus a "resume" event.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ._io import atomic_write

__all__ = ["JsonlLog", "read_log", "plot_training"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / inf
    return v


class JsonlLog:
    """Append-only JSONL file (line-buffered, flushed per record)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the run

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._fh.flush()

    def truncate_after(self, step: int) -> None:
        """Keep what a run stopped after `step` completed steps had written: "step" records of
        steps < `step` (a step record carries the index of the step it ran), other records of
        steps <= `step` (atomically rewrites the file)."""
        self._fh.close()
        keep = [r for r in read_log(self.path)
                if int(r.get("step", 0)) < step + (r.get("kind") != "step")]
        atomic_write(self.path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in keep)))
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL log (a truncated last line, from a killed writer, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def plot_training(log_path: str | os.PathLike, out: str | os.PathLike, title: str = "") -> Path:
    """Three panels from a run's log: loss (train steps, eval points), free/nudged residual (log
    scale, with rollbacks marked), and the Jacobian-penalty controller weight. Returns the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(log_path)
    steps = [r for r in recs if r.get("kind") == "step"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    events = [r for r in recs if r.get("kind") == "event" and r.get("what") == "rollback"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    s = [r["step"] for r in steps]
    ax = axes[0]
    ax.plot(s, [_num(r.get("loss")) for r in steps], lw=0.6, color="C0", label="train batch")
    if evals:
        ax.plot([r["step"] for r in evals], [_num(r.get("loss")) for r in evals], "o-",
                color="C3", label="eval")
    ax.set(xlabel="step", ylabel="loss (nats)", title="loss")
    ax.legend()
    ax = axes[1]
    ax.semilogy(s, [max(_num(r.get("free_residual")), 1e-12) for r in steps], lw=0.6,
                label="free")
    nud = [_num(r.get("nudged_residual")) for r in steps]
    if any(math.isfinite(v) for v in nud):
        ax.semilogy(s, [max(v, 1e-12) for v in nud], lw=0.6, label="nudged / adjoint")
    for e in events:
        ax.axvline(e["step"], color="k", ls=":", lw=1)
    ax.set(xlabel="step", ylabel="force residual ||F|| / ||z||", title="residual (max over batch)")
    ax.legend()
    ax = axes[2]
    w = [_num(r.get("controller_weight")) for r in steps]
    if any(math.isfinite(v) for v in w):
        ax.plot(s, w, color="C2")
    else:
        ax.text(0.5, 0.5, "no Jacobian penalty", ha="center", va="center",
                transform=ax.transAxes)
    ax.set(xlabel="step", ylabel="weight", title="Jacobian-penalty controller")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
