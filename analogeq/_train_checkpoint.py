"""Checkpoints of a training run: atomic writes and every random state needed to resume exactly.

A checkpoint is one `torch.save`d dict written through `analogeq._io.atomic_write` (a temp file
in the run directory, fsync, `os.replace`): a reader (or a resumed run) sees the previous file or
the new one, never a truncated one, even if the process dies mid-write.

Random states captured (`capture_rng` / `restore_rng`):
* torch's global CPU generator (`torch.get_rng_state`), numpy's legacy global state, python's
  `random` state: nothing in the trainer draws from them, but user code (or a library) might;
* every `torch.Generator` owned by a module of the model (the crossbars' programming and
  read-noise streams, found by walking `model.modules()` in registration order) and the hardware
  master generator (`model._hardware_state.generator`): the programming noise re-drawn at every
  step continues its stream after a resume exactly as without the interruption;
* the trainer's own generators (drift-age draws), passed by name.
The data order needs no state: `Task.batch` is a pure function of (seed, step).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._io import atomic_write

FORMAT = "analogeq.train/1"
"""The `format` entry of a training checkpoint."""
MODEL_FORMAT = "analogeq.model/1"
"""The `format` entry of a model-only checkpoint (nominal weights and configs, e.g. shipped)."""

__all__ = ["FORMAT", "MODEL_FORMAT", "save_checkpoint", "read_checkpoint", "capture_rng",
           "restore_rng", "model_generators"]


def model_generators(model: nn.Module) -> list[torch.Generator]:
    """Every torch.Generator the model owns, in a fixed order (deduplicated by identity)."""
    seen: set[int] = set()
    out: list[torch.Generator] = []

    def add(g: Any) -> None:
        if isinstance(g, torch.Generator) and id(g) not in seen:
            seen.add(id(g))
            out.append(g)

    state = getattr(model, "_hardware_state", None)
    if state is not None:
        add(getattr(state, "generator", None))
    for module in model.modules():
        for value in vars(module).values():
            add(value)
            # OU read-noise processes hold a generator one level down
            if hasattr(value, "generator") and not isinstance(value, nn.Module):
                add(value.generator)
    return out


def capture_rng(model: nn.Module, trainer_generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """All random states (module docstring) as plain tensors / tuples."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "model": [g.get_state() for g in model_generators(model)],
        "trainer": {k: g.get_state() for k, g in trainer_generators.items()},
    }


def restore_rng(state: dict[str, Any], model: nn.Module,
                trainer_generators: dict[str, torch.Generator]) -> None:
    """Inverse of `capture_rng` (the model must be built like the one captured)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    gens = model_generators(model)
    if len(gens) != len(state["model"]):
        raise ValueError(
            f"checkpoint holds {len(state['model'])} model generator states but the model has "
            f"{len(gens)} generators: it was built with a different hardware configuration"
        )
    for g, s in zip(gens, state["model"], strict=True):
        g.set_state(s)
    for k, g in trainer_generators.items():
        if k in state["trainer"]:
            g.set_state(state["trainer"][k])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically (temp file in the same directory, fsync, rename)."""
    return atomic_write(path, lambda fh: torch.save(payload, fh), mode="wb")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict written by `save_checkpoint` (CPU tensors).

    `weights_only=False`: checkpoints hold numpy / python RNG states; load only files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, MODEL_FORMAT):
        raise ValueError(f"{path} is not an analogeq checkpoint (format {FORMAT} or "
                         f"{MODEL_FORMAT})")
    return data
