"""The `--checkpoint` option shared by the subcommands that work on a model (settle, compare,
fidelity, probe, certify): the shipped digits model by default, a checkpoint written by
`analogeq train`, or none (a randomly initialised model from the command's model options)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

CHOICES_HELP = (
    "the model: 'default' (the shipped digits model, analogeq/data/digits.pt, settled on test "
    "digits), a checkpoint path written by `analogeq train` (settled on its task's test inputs), "
    "or 'none' (a randomly initialised model from the model options, on seeded random tokens)"
)


def add_checkpoint_option(p: argparse.ArgumentParser | Any, default: str = "default") -> None:
    """Add `--checkpoint` (default `default`: the shipped model)."""
    p.add_argument("--checkpoint", default=default, metavar="default|PATH|none",
                   help=f"{CHOICES_HELP} ({default})")


def uses_checkpoint(args: argparse.Namespace) -> bool:
    """True unless `--checkpoint none`."""
    return str(args.checkpoint).strip().lower() != "none"


def load_for_cli(args: argparse.Namespace, hardware: Any = None) -> tuple[Any, torch.Tensor, str]:
    """(model, inputs, description) for `--checkpoint default|PATH`: the checkpoint's model
    (programmed onto `hardware` when given) and the first `args.batch` test inputs of its task.
    Exits with a message naming the option when the checkpoint cannot be read."""
    from ..tasks import get_task
    from ..train import DEFAULT_CHECKPOINT, checkpoint_info, load_checkpoint

    spec = str(args.checkpoint).strip()
    path = DEFAULT_CHECKPOINT if spec.lower() == "default" else Path(spec)
    if not path.is_file():
        raise SystemExit(f"analogeq: --checkpoint {spec!r}: no such file ({path})")
    try:
        info = checkpoint_info(path)
        model = load_checkpoint(path, hardware=hardware)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"analogeq: --checkpoint {spec!r} cannot be loaded: {exc}") from None
    task_name = info.get("task")
    if task_name is None:
        raise SystemExit(f"analogeq: --checkpoint {spec!r} names no task to take inputs from")
    task = get_task(task_name)
    n = task.test_inputs.shape[0]
    if not 1 <= args.batch <= n:
        raise SystemExit(f"analogeq: --batch must be in [1, {n}] for the {task_name} test set, "
                         f"got {args.batch}")
    inputs = task.test_inputs[: args.batch]
    metrics = info.get("metrics") or {}
    acc = metrics.get("accuracy")
    shown = "shipped default" if spec.lower() == "default" else str(path)
    cfg = model.config
    text = (f"model: checkpoint {shown} (task {task_name}"
            + (f", test accuracy {100 * acc:.1f} % digital" if acc is not None else "")
            + f"), d_model {cfg.d_model}, heads {cfg.n_heads}, context {cfg.context}, "
            f"{cfg.dtype}; inputs: the first {args.batch} test samples")
    return model, inputs, text


__all__ = ["add_checkpoint_option", "uses_checkpoint", "load_for_cli"]
