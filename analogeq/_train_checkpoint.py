"""Checkpoints of a training run: atomic writes and every random state needed to resume exactly.

A checkpoint is one `torch.save`d dict written through `analogeq._io.atomic_write` (a temp file
in the run directory, fsync, `os.replace`): a reader (or a resumed run) sees the previous file or
the new one, never a truncated one, even if the process dies mid-write. The dict is serialised in
memory first, so a full disk fails in the plain file write (an `OSError` naming the checkpoint)
and leaves the previous checkpoint in place.

Reading is defensive (`read_checkpoint`): a file that is empty, truncated, random bytes, text, a
plain pickle, a torch file of something else, a checkpoint without its `model_config` or
`nominal` weights, or one holding NaN / inf weights raises a `CheckpointError` whose one-line
message names the file and what is wrong; nothing non-finite is ever loaded into a model.

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

import io
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

__all__ = ["FORMAT", "MODEL_FORMAT", "CheckpointError", "save_checkpoint", "read_checkpoint",
           "check_payload", "check_weights", "check_shapes", "capture_rng", "restore_rng",
           "model_generators"]

# entries every checkpoint of each format must hold
_REQUIRED = {
    FORMAT: ("config", "model_config", "step", "model", "nominal", "optimizer", "rng", "guard",
             "elapsed"),
    MODEL_FORMAT: ("model_config", "nominal"),
}


class CheckpointError(ValueError):
    """A file that cannot be used as an analogeq checkpoint; the message (one line) names the
    file and says what is wrong with it."""


def _one_line(text: Any, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
    """Write `payload` to `path` atomically (temp file in the same directory, fsync, rename).

    The payload is serialised in memory first: a full disk or an unwritable directory then
    fails in a plain file write, as an `OSError` naming `path`, and the previous file stays."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write(path, lambda fh: fh.write(buf.getbuffer()), mode="wb")


def _what_it_is(head: bytes) -> str:
    """What the first bytes of an unreadable file look like (for the error message)."""
    if head.startswith(b"PK"):
        return "a zip archive torch cannot read (truncated or corrupt)"
    if head[:1] == b"\x80":
        return "a pickle torch cannot read (a plain pickle, or a corrupt legacy torch file)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised bytes, not a torch file"
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "a text file, not a torch file"
    return "unrecognised bytes, not a torch file"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict written by `save_checkpoint` (CPU tensors), checked.

    Raises `FileNotFoundError` when there is no file, and a `CheckpointError` naming the file
    when it is not a complete analogeq checkpoint (module docstring) or holds non-finite
    weights. `weights_only=False`: checkpoints hold numpy / python RNG states; load only files
    you trust.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises EOFError, OSError, RuntimeError, UnpicklingError...
        what = _what_it_is(head)
        detail = f" ({_one_line(exc, 80)})" if what.startswith(("a zip", "unrecognised")) else ""
        raise CheckpointError(f"{path} is not a readable checkpoint: {what}{detail}") from None
    return check_payload(data, path)


def check_payload(data: Any, path: str | os.PathLike) -> dict[str, Any]:
    """`data` if it is a complete checkpoint of a known format with finite weights, else a
    `CheckpointError` naming `path` (one line)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not an analogeq checkpoint "
                              "(a dict written by `analogeq train` or `save_model`)")
    fmt = data.get("format")
    if fmt not in _REQUIRED:
        hint = (" (a plain state dict? save it with analogeq.train.save_model)"
                if data and all(isinstance(v, torch.Tensor) for v in data.values()) else "")
        raise CheckpointError(f"{path} is not an analogeq checkpoint: its 'format' entry is "
                              f"{fmt!r}, expected {FORMAT!r} or {MODEL_FORMAT!r}{hint}")
    missing = [k for k in _REQUIRED[fmt] if k not in data]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(map(repr, missing))}")
    if not isinstance(data["model_config"], dict):
        raise CheckpointError(f"{path}: 'model_config' is a {type(data['model_config']).__name__},"
                              " not a dict")
    check_weights(data["nominal"], path, "nominal")
    if fmt == FORMAT:  # a module state dict: tensors, and extra states (dicts) of some modules
        check_weights(data["model"], path, "model", tensors_only=False)
    return data


def check_weights(weights: Any, path: str | os.PathLike, entry: str, *,
                  tensors_only: bool = True) -> None:
    """A `CheckpointError` unless `weights` is a dict whose tensors hold finite values (and, with
    `tensors_only`, holds nothing but tensors)."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: '{entry}' is a {type(weights).__name__}, not a dict of "
                              "tensors")
    for name, value in weights.items():
        if not isinstance(value, torch.Tensor):
            if not tensors_only:
                continue
            raise CheckpointError(f"{path}: '{entry}' entry {name!r} is a "
                                  f"{type(value).__name__}, not a tensor")
        if value.is_floating_point() or value.is_complex():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
                raise CheckpointError(
                    f"{path}: weight {name!r} holds {int(bad.sum())} non-finite ({kind}) "
                    f"value(s) of {value.numel()}: refusing to load it")


def check_shapes(expected: dict[str, torch.Size | None], weights: dict[str, Any],
                 path: str | os.PathLike, what: str = "its model_config") -> None:
    """A `CheckpointError` when the names or shapes of `weights` differ from `expected` (entries
    that are not tensors, such as a module's extra state, are compared by name only)."""
    absent = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if absent or unexpected:
        parts = ([f"missing {absent[:4]}" + (" ..." if len(absent) > 4 else "")] if absent
                 else []) + ([f"unexpected {unexpected[:4]}" + (" ..." if len(unexpected) > 4
                                                                 else "")] if unexpected else [])
        raise CheckpointError(f"{path}: its weights do not match {what}: {', '.join(parts)}")
    for name, shape in expected.items():
        if shape is None or not isinstance(weights[name], torch.Tensor):
            continue
        got = tuple(weights[name].shape)
        if got != tuple(shape):
            raise CheckpointError(f"{path}: weight {name!r} has shape {got}, {what} needs "
                                  f"{tuple(shape)}")
