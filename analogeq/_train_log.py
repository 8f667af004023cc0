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
import warnings
from pathlib import Path
from typing import Any

from ._io import atomic_write

__all__ = ["JsonlLog", "LogWarning", "read_log", "parse_log", "plot_training"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / inf
    return v


class JsonlLog:
    """Append-only JSONL file (line-buffered, flushed per record).

    Something other than a regular file in the log's place (e.g. a directory) is moved aside to
    `<log>.quarantined` with a warning, and a fresh log starts."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.path.is_file():
            aside = _free_name(self.path.with_name(self.path.name + ".quarantined"))
            self.path.rename(aside)
            warnings.warn(f"{self.path} was not a file: moved it to {aside} and started a new log",
                          LogWarning, stacklevel=2)
        self._fh = self._open()

    def _open(self) -> Any:
        try:
            return open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the run
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def truncate_after(self, step: int) -> None:
        """Keep what a run stopped after `step` completed steps had written: "step" records of
        steps < `step` (a step record carries the index of the step it ran), other records of
        steps <= `step` (atomically rewrites the file). Lines that are not records (hand edits,
        a line cut by a killed writer, bytes that are not UTF-8) are appended to `<log>.bad`
        with a warning instead of stopping the resume."""
        self._fh.close()
        records, bad = parse_log(self.path)
        keep = [r for r in records if r.get("step", 0) < step + (r.get("kind") != "step")]
        if bad:
            aside = self.path.with_name(self.path.name + ".bad")
            with open(aside, "ab") as fh:
                fh.write(b"".join(raw + b"\n" for _, raw in bad))
            first = bad[0][0]
            warnings.warn(f"{self.path}: skipped {len(bad)} line(s) that are not log records "
                          f"(first: line {first}); kept them in {aside}", LogWarning,
                          stacklevel=2)
        atomic_write(self.path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in keep)))
        self._fh = self._open()

    def close(self) -> None:
        self._fh.close()


class LogWarning(UserWarning):
    """A training log that had to be repaired (bad lines skipped, a non-file moved aside)."""


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _is_record(value: Any) -> bool:
    """A log record: a dict with a string "kind" and, if it has one, an int "step" >= 0."""
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        return False
    step = value.get("step", 0)
    return isinstance(step, int) and not isinstance(step, bool) and step >= 0


def parse_log(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[tuple[int, bytes]]]:
    """(records, bad lines) of a JSONL log: every line that is a record (`_is_record`), and the
    (1-based line number, raw bytes) of every other non-empty line. No file: ([], [])."""
    path = Path(path)
    if not path.is_file():
        return [], []
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, bytes]] = []
    for i, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if _is_record(value):
            records.append(value)
        else:
            bad.append((i, raw))
    return records, bad


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL log; lines that are not records (a truncated last line from a
    killed writer, hand edits) are skipped (`parse_log`)."""
    return parse_log(path)[0]


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
    s = [r.get("step", 0) for r in steps]
    ax = axes[0]
    ax.plot(s, [_num(r.get("loss")) for r in steps], lw=0.6, color="C0", label="train batch")
    if evals:
        ax.plot([r.get("step", 0) for r in evals], [_num(r.get("loss")) for r in evals], "o-",
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
        ax.axvline(e.get("step", 0), color="k", ls=":", lw=1)
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
