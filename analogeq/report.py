"""Tables and figures for settle results: what `analogeq settle` and `analogeq compare` show.

`result_row` / `SETTLE_COLUMNS` for any force; `hardware_row` / `HARDWARE_COLUMNS` add the physical
figures of a settle on analog hardware (`analogeq.hardware`: settling time and crossbar energy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .integrators import SettleResult


def result_row(label: str, result: SettleResult) -> dict[str, Any]:
    """The figures of one settle as a flat, JSON-friendly dict."""
    t = None if result.t is None else float(result.t.max())
    return {
        "method": label,
        "status": str(result.status),
        "nfe": result.nfe,
        "steps": result.steps,
        "force_residual": float(result.residual.max()),
        # the convergence test's scaled error (converged iff <= 1), max over the batch
        "error": None if result.error is None else float(result.error.max()),
        "time": t,
        "wall_s": result.wall_time,
        "sample_status": [str(s) for s in result.sample_status],
    }


def hardware_row(label: str, result: SettleResult) -> dict[str, Any]:
    """`result_row` plus the physical figures of a settle on hardware (`result.info`):

    * `settle_us`: settling time t * tau in microseconds, max over the batch, for a converged
      run; None when it did not converge (it never settled) or the method has no time.
    * `sim_time_us`: the time the run covered (max over the batch), converged or not; None
      without time.
    * `energy_nj`: crossbar energy per sample in nanojoules, mean over the batch; None for
      root-finders (no trajectory in time) or the digital model.
    """
    row = result_row(label, result)
    t = result.info.get("settling_time_s")
    e = result.info.get("energy_j")
    row["sim_time_us"] = None if t is None else float(t.max()) * 1e6
    row["settle_us"] = row["sim_time_us"] if result.converged else None
    row["energy_nj"] = None if e is None else float(e.mean()) * 1e9
    row["energy_nj_per_sample"] = None if e is None else [float(v) * 1e9 for v in e]
    return row


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Render rows as an aligned text table. `columns`: (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                line.append("-")
            else:
                line.append(format(value, spec))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = []
    for k, r in enumerate(cells):
        out.append(
            "  ".join(
                c.rjust(w) if k and i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


SETTLE_COLUMNS = (
    ("method", "method", "s"),
    ("status", "status", "s"),
    ("nfe", "NFE", "d"),
    ("steps", "steps", "d"),
    ("force_residual", "force residual", ".2e"),
    ("error", "error/tol", ".2g"),
    ("time", "time (tau)", ".3g"),
    ("wall_s", "wall (s)", ".3f"),
)


HARDWARE_COLUMNS = (
    ("method", "method", "s"),
    ("status", "status", "s"),
    ("nfe", "NFE", "d"),
    ("force_residual", "force residual", ".2e"),
    ("error", "error/tol", ".2g"),
    ("settle_us", "settle (us)", ".3g"),
    ("energy_nj", "energy (nJ)", ".3g"),
    ("wall_s", "wall (s)", ".3f"),
)


def plot_residuals(
    results: dict[str, SettleResult],
    path: str | Path,
    title: str = "",
    *,
    time_scale: float = 1.0,
    time_label: str = "continuous time (units of tau)",
) -> Path:
    """Force residual (max over the batch) vs force evaluations, and vs continuous time.

    Two panels because root-finders have no time: NFE is the axis every method shares.
    `time_scale` multiplies the time axis (e.g. tau in microseconds for physical time on
    hardware), labelled `time_label`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_nfe, ax_t) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for label, res in results.items():
        y = res.trace.residual.clamp_min(1e-300).numpy()
        (line,) = ax_nfe.semilogy(res.trace.nfe.numpy(), y, label=f"{label} ({res.status})")
        if res.trace.time is not None:
            # same colour in both panels (root-finders are missing here, the cycle would shift)
            ax_t.semilogy(res.trace.time.numpy() * time_scale, y, label=label,
                          color=line.get_color())
    # the tightest tolerance of any sample (a per-sample tolerance is a tensor)
    tol = min((_smallest(r.info.get("tol", math.nan)) for r in results.values()), default=math.nan)
    for ax, xlabel in ((ax_nfe, "force evaluations"), (ax_t, time_label)):
        if not math.isnan(tol):
            ax.axhline(tol, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("force residual ||F(z)|| / ||z||")
        ax.grid(True, which="both", alpha=0.3)
    ax_nfe.legend(fontsize=8)
    ax_t.set_title("methods with continuous time", fontsize=9)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _smallest(tol: Any) -> float:
    """A tolerance as one number: itself, or the smallest of a per-sample tensor."""
    if isinstance(tol, torch.Tensor):
        return float(tol.min()) if tol.numel() else math.nan
    return float(tol)
