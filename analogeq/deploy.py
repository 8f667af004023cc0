"""Deployment: a trained model programmed onto analog devices and read as the chip ages.

    from analogeq.deploy import evaluate_deployment
    res = evaluate_deployment("runs/digits-pcm/best.pt", device="pcm", seeds=(0, 1, 2))
    print(res.table())

For each programming seed a fresh chip (`HardwareConfig(device, seed=...)`) is programmed once
from the checkpoint's nominal weights (programming errors and drift exponents drawn then); it is
then read at increasing times after programming (default 1 s, 1 h, 1 day, 1 month, 1 year; PCM's
conductances drift as (t / t0)^-nu and its 1/f read noise grows with log t), each read a full
evaluation of the task's test split (every batch a new quenched read-noise draw). Accuracy and
loss are reported per time as mean +- std over the seeds.

Global drift compensation (`compensation=True`), as IBM aihwkit's code does it
(`GlobalDriftCompensation` in src/aihwkit/inference/compensation/drift.py, applied by
`InferenceTileWithPeriphery.drift_weights`): right after programming each crossbar tile is read
with the one-hot inputs eye(in_size), and the reference is the mean of the absolute outputs,
clamped below at 1e-4 (`readout`: clamp(mean |y|, min=0.0001); for one-hot inputs mean |y| is
the mean |W_oi| over the tile). At time t the tile is read again the same way and its output is
multiplied by alpha = readout(0) / readout(t) (here: the tile's g_ref, siemens per weight unit, is
divided by alpha), which undoes the common-mode conductance decay. It cannot undo the
device-to-device spread of the drift exponents. (aihwkit's docstrings still speak of an all-ones
read; its code has read eye(in_size) since 2022, and the code is what is followed here.)
One difference: aihwkit reads through the tile's noisy forward pass (read noise, periphery);
here the reads are noise-free conductance reads without DAC/ADC, so the compensation draws no
random numbers and a seeded evaluation repeats bit-for-bit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._train_eval import evaluate
from .tasks import Task, get_task

__all__ = [
    "DRIFT_TIMES",
    "DeployResult",
    "drift_baseline",
    "apply_drift_compensation",
    "evaluate_deployment",
    "plot_deployment",
    "parse_times",
    "write_results",
]

DRIFT_TIMES: dict[str, float] = {
    "1s": 1.0, "1h": 3600.0, "1d": 86400.0, "1mo": 86400.0 * 30, "1y": 86400.0 * 365,
}
"""Default read times after programming (seconds), by label."""
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "mo": 86400.0 * 30,
          "y": 86400.0 * 365}


def parse_times(text: str) -> dict[str, float]:
    """'1s,1h,1d,1mo,1y' (or plain seconds '10,3600') -> {label: seconds}."""
    out: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        num = item.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = item[len(num):] or "s"
        if unit not in _UNITS:
            raise ValueError(f"unknown time unit {unit!r} in {item!r}; use {sorted(_UNITS)}")
        try:
            value = float(num) * _UNITS[unit]
        except ValueError:
            raise ValueError(f"cannot read the time {item!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"times must be finite and >= 0 seconds, got {item!r}")
        out[item] = value
    if not out:
        raise ValueError(f"no times in {text!r}")
    if list(out.values()) != sorted(out.values()):
        raise ValueError(f"times must increase (a chip only ages), got {text!r}")
    return out


# ------------------------------------------------------------------------------------------------
# global drift compensation


def _tiles(model: Any) -> list[Any]:
    from .hardware import hardware_layers

    return [tile for layer in hardware_layers(model).values() for tile in layer.analog.tiles]


_READOUT_FLOOR = 1e-4  # aihwkit GlobalDriftCompensation.readout: clamp(..., min=0.0001)


def _reference_read(tile: Any) -> float:
    """clamp(mean |y|, 1e-4) over the outputs y = W e_i of the one-hot inputs e_i = eye(in)."""
    w = tile.effective_weight(noisy=False)
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    y = eye @ w.T  # (in, out): row i is the read of input e_i, as aihwkit's eye(in_size) @ W^T
    return max(float(y.abs().mean()), _READOUT_FLOOR)


@torch.no_grad()
def drift_baseline(model: Any) -> list[tuple[float, float]]:
    """Per crossbar tile (g_ref, reference read) right after programming; call before drifting."""
    return [(float(t.g_ref), _reference_read(t)) for t in _tiles(model)]


@torch.no_grad()
def apply_drift_compensation(model: Any, baseline: list[tuple[float, float]]) -> list[float]:
    """Rescale every tile's output so its one-hot read matches `baseline` (module docstring).

    Returns the per-tile factors alpha = readout(0) / readout(t) (>= 1 for decaying
    conductances). Both reads are floored at 1e-4 as in aihwkit, so a tile with all-zero weights
    gets alpha 1.
    """
    tiles = _tiles(model)
    if len(tiles) != len(baseline):
        raise ValueError(f"baseline has {len(baseline)} tiles, the model {len(tiles)}: take it "
                         "with drift_baseline(model) on the same model")
    alphas = []
    for tile, (g_ref0, ref0) in zip(tiles, baseline, strict=True):
        tile.g_ref.fill_(g_ref0)
        cur = _reference_read(tile)
        alpha = ref0 / cur
        tile.g_ref.fill_(g_ref0 / alpha)
        alphas.append(alpha)
    return alphas


# ------------------------------------------------------------------------------------------------
# evaluation over drift time


@dataclass
class DeployResult:
    """Accuracy / loss of one model at each read time, per programming seed.

    accuracy, loss, residual: (n_seeds, n_times) float tensors; converged: fraction of samples
    whose settle converged, same shape. `labels` / `times` (seconds) name the columns.
    """

    name: str
    device: str
    compensation: bool
    labels: list[str]
    times: list[float]
    seeds: list[int]
    accuracy: Tensor
    loss: Tensor
    residual: Tensor
    converged: Tensor
    digital: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def mean_std(self, what: str = "accuracy") -> tuple[Tensor, Tensor]:
        x = getattr(self, what).double()
        std = x.std(0, unbiased=True) if x.shape[0] > 1 else torch.zeros(x.shape[1])
        return x.mean(0), std

    def table(self) -> str:
        m, s = self.mean_std("accuracy")
        lm, ls = self.mean_std("loss")
        head = (f"{self.name} on {self.device}"
                f"{' + drift compensation' if self.compensation else ''} "
                f"({len(self.seeds)} programming seeds; digital accuracy "
                f"{100 * self.digital['accuracy']:.2f} %)")
        lines = [head, f"{'time':>6} | {'accuracy %':>15} | {'loss':>15} | min converged"]
        for j, lab in enumerate(self.labels):
            lines.append(f"{lab:>6} | {100 * m[j]:7.2f} +- {100 * s[j]:4.2f} | {lm[j]:7.4f} +- "
                         f"{ls[j]:5.4f} | {float(self.converged[:, j].min()):.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        m, s = self.mean_std("accuracy")
        lm, ls = self.mean_std("loss")
        return {
            "name": self.name, "device": self.device, "compensation": self.compensation,
            "labels": self.labels, "times_s": self.times, "seeds": self.seeds,
            "accuracy": self.accuracy.tolist(), "loss": self.loss.tolist(),
            "residual": self.residual.tolist(), "converged": self.converged.tolist(),
            "accuracy_mean": m.tolist(), "accuracy_std": s.tolist(),
            "loss_mean": lm.tolist(), "loss_std": ls.tolist(), "digital": self.digital,
            "info": self.info,
        }


def evaluate_deployment(
    checkpoint: str | os.PathLike | None = None,
    task: Task | str | None = None,
    *,
    device: str = "pcm",
    times: dict[str, float] | None = None,
    seeds: tuple[int, ...] | list[int] = (0, 1, 2),
    compensation: bool = False,
    limit: int | None = None,
    name: str | None = None,
    tol: float = 1e-5,
    max_steps: int = 200,
    **hardware: Any,
) -> DeployResult:
    """Program `checkpoint` onto `device` chips (one per seed) and evaluate it as they age.

    Args:
        checkpoint: a training or model checkpoint (None: the shipped default).
        task: the task (or its name); None: the checkpoint's own task.
        device: a device preset name (default "pcm").
        times: {label: seconds after programming}, increasing (default `DRIFT_TIMES`).
        seeds: programming seeds (one chip each; >= 1 seed).
        compensation: global drift compensation (module docstring).
        limit: evaluation samples (None: the whole test split).
        tol, max_steps: the settle (Anderson) of each evaluation.
        **hardware: further `HardwareConfig` fields (e.g. read_noise="off", tau_spread=0).
    """
    from .hardware import HardwareConfig
    from .train import DEFAULT_CHECKPOINT, checkpoint_info, load_checkpoint

    path = Path(DEFAULT_CHECKPOINT if checkpoint is None else checkpoint)
    info = checkpoint_info(path)
    if task is None:
        task = info["task"]
        if task is None:
            raise ValueError(f"{path} does not record its task: pass task=")
    if isinstance(task, str):
        task = get_task(task)
    times = dict(DRIFT_TIMES if times is None else times)
    if not times or list(times.values()) != sorted(times.values()):
        raise ValueError(f"times must be a non-empty dict of increasing seconds, got {times}")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds}")
    digital = evaluate(load_checkpoint(path), task, limit=limit, tol=tol, max_steps=max_steps)
    shape = (len(seeds), len(times))
    acc, loss, res, conv = (torch.zeros(shape, dtype=torch.float64) for _ in range(4))
    alphas: list[list[float]] = []
    for i, seed in enumerate(seeds):
        hw = HardwareConfig(device=device, seed=seed, **hardware)
        model = load_checkpoint(path, hardware=hw)
        base = drift_baseline(model)
        for j, t in enumerate(times.values()):
            model.drift(t)
            if compensation:
                a = apply_drift_compensation(model, base)
                if i == 0:
                    alphas.append([min(a), max(a)])
            ev = evaluate(model, task, limit=limit, tol=tol, max_steps=max_steps)
            acc[i, j], loss[i, j] = ev["accuracy"], ev["loss"]
            res[i, j], conv[i, j] = ev["residual"], ev["converged"]
    return DeployResult(
        name=name or (path.parent.name if path != DEFAULT_CHECKPOINT else "default"),
        device=device, compensation=compensation, labels=list(times), times=list(times.values()),
        seeds=seeds, accuracy=acc, loss=loss, residual=res, converged=conv, digital=digital,
        info={"checkpoint": str(path), "task": task.name, "hardware": hardware,
              "compensation_alpha_range_seed0": alphas, "train": info.get("train_config")},
    )


def plot_deployment(results: list[DeployResult], out: str | os.PathLike,
                    title: str = "") -> Path:
    """Accuracy (mean +- std over seeds) vs time after programming, one line per result, with
    each model's digital accuracy as a dashed line. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, r in enumerate(results):
        m, s = r.mean_std("accuracy")
        t = [max(x, 1e-1) for x in r.times]
        label = r.name + (" (+comp.)" if r.compensation else "")
        ax.errorbar(t, 100 * m.numpy(), yerr=100 * s.numpy(), marker="o", capsize=3,
                    color=f"C{k}", label=label)
        ax.axhline(100 * r.digital["accuracy"], color=f"C{k}", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="time after programming (s)", ylabel="test accuracy (%)",
           title=title or "accuracy vs drift time (dashed: digital)")
    ticks = [1, 3600, 86400, 86400 * 30, 86400 * 365]
    ax.set_xticks(ticks, ["1 s", "1 h", "1 d", "1 mo", "1 y"])
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_results(results: list[DeployResult], path: str | os.PathLike) -> Path:
    """All results as JSON (atomic)."""
    from ._io import write_json

    return write_json(path, [r.to_dict() for r in results])

