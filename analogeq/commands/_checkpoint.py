"""Checkpoints on the command line: the `--checkpoint` option shared by the subcommands that work
on a model (settle, compare, fidelity, probe, certify) and one loader for every checkpoint a
subcommand reads (also `generate`'s and `evaluate`'s positional files, `train --init-from`).

A file that cannot be used (missing, empty, truncated, random bytes, text, a plain pickle, a torch
file of something else, no `model_config`, weights of the wrong shape, NaN weights) ends the
command before any work with one line naming the option, the file and what is wrong (`CLIError`,
exit status 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ._options import CLIError

CHOICES_HELP = (
    "the model: 'default' (the shipped digits model, analogeq/data/digits.pt, settled on test "
    "digits), a checkpoint path written by `analogeq train` (settled on its task's test inputs), "
    "or 'none' (a randomly initialised model from the model options, on seeded random tokens)"
)


def add_checkpoint_option(p: argparse.ArgumentParser | Any, default: str = "default") -> None:
    """Add `--checkpoint` (default `default`: the shipped model)."""
    p.add_argument("--checkpoint", default=default, metavar="default|PATH|none",
                   help=CHOICES_HELP)


def uses_checkpoint(args: argparse.Namespace) -> bool:
    """True unless `--checkpoint none`."""
    return str(args.checkpoint).strip().lower() != "none"


def checkpoint_path(spec: str) -> Path:
    """The file of a `--checkpoint` value other than none ('default': the shipped model)."""
    from ..train import DEFAULT_CHECKPOINT

    text = str(spec).strip()
    return DEFAULT_CHECKPOINT if text.lower() == "default" else Path(text)


def load_model_file(path: Path, option: str, hardware: Any = None,
                    dtype: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(model, provenance) of the checkpoint at `path` (`analogeq.train.load_checkpoint` and
    `checkpoint_info`), or a `CLIError` naming `option` and the file."""
    from ..train import CheckpointError, checkpoint_info, load_checkpoint

    if not path.exists():
        raise CLIError(f"{option} {path}: no such file")
    try:
        info = checkpoint_info(path)
        model = load_checkpoint(path, hardware=hardware, dtype=dtype)
    except CheckpointError as exc:
        raise CLIError(f"{option}: {exc}") from None
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot be read: {exc.strerror or exc}") from None
    return model, info


def load_for_cli(args: argparse.Namespace, hardware: Any = None,
                 dtype: str | None = None) -> tuple[Any, torch.Tensor, str]:
    """(model, inputs, description) for `--checkpoint default|PATH`: the checkpoint's model
    (programmed onto `hardware` when given, built in `dtype` when given) and the first
    `args.batch` test inputs of its task. Exits with a one-line message naming the option when
    the checkpoint cannot be used."""
    from ..tasks import TASKS, get_task

    spec = str(args.checkpoint).strip()
    path = checkpoint_path(spec)
    model, info = load_model_file(path, "--checkpoint", hardware, dtype)
    task_name = info.get("task")
    if task_name not in TASKS:
        raise CLIError(f"--checkpoint: {path} names no known task to take inputs from "
                       f"(task {task_name!r}; known: {sorted(TASKS)})")
    task = get_task(task_name)
    n = task.test_inputs.shape[0]
    if not 1 <= args.batch <= n:
        raise CLIError(f"--batch must be in [1, {n}] for the {task_name} test set, "
                       f"got {args.batch}")
    inputs = task.test_inputs[: args.batch]
    metrics = info.get("metrics") or {}
    acc = metrics.get("accuracy") if isinstance(metrics, dict) else None
    shown = "shipped default" if spec.lower() == "default" else str(path)
    cfg = model.config
    text = (f"model: checkpoint {shown} (task {task_name}"
            + (f", test accuracy {100 * acc:.1f} % digital" if isinstance(acc, float) else "")
            + f"), d_model {cfg.d_model}, heads {cfg.n_heads}, context {cfg.context}, "
            f"{cfg.dtype}; inputs: the first {args.batch} test samples")
    return model, inputs, text


__all__ = ["add_checkpoint_option", "uses_checkpoint", "checkpoint_path", "load_model_file",
           "load_for_cli"]
