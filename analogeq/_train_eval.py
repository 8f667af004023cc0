"""Evaluation of a model on a task's fixed split: loss, accuracy and how well the block settled."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .integrators import Status
from .tasks import Task

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: Any,
    task: Task,
    split: str = "test",
    *,
    batch_size: int = 256,
    method: str = "anderson",
    tol: float = 1e-5,
    max_steps: int | None = 200,
    limit: int | None = None,
    fallback_steps: int = 0,
    **settle_options: Any,
) -> dict[str, Any]:
    """Settle every evaluation batch and score the readout at the settled state.

    Args:
        model: an `EquilibriumTransformer` (digital or on hardware; on hardware every batch is
            a new quenched read-noise draw unless `resample_read_noise=False` is passed).
        task: the `Task`; split "test" (or "train" for classify tasks); `limit` caps the samples.
        method, tol, max_steps, settle_options: the settle (`model.settle`).
        fallback_steps: when the settle leaves samples unconverged, continue them from where it
            ended with IMEX for up to this many steps (0 = off; the trainer's
            `free_fallback_steps`).

    Returns:
        {"loss": mean cross entropy (nats; per sequence for classify, per character for lm),
         "accuracy": fraction correct (per sequence / per next character), "residual": max force
         residual over the split, "converged": fraction of samples whose settle CONVERGED, "n":
         samples}. Non-finite logits are counted as wrong and make "loss" inf (never NaN-silent).
    """
    total_loss = 0.0
    correct = 0.0
    count = 0
    tokens = 0
    worst = 0.0
    converged = 0
    for x, y in task.eval_batches(split, batch_size, limit):
        res = model.settle(x, method, tol=tol, max_steps=max_steps, **settle_options)
        if fallback_steps and res.status is not Status.CONVERGED:
            # the same chip read (no new read-noise draw) continues the same relaxation
            extra = ({"resample_read_noise": False} if getattr(model, "hardware", None)
                     is not None else {})
            res = model.settle(x, "imex", z0=res.z, tol=tol, max_steps=fallback_steps,
                               **{**settle_options, **extra})
        logits = model.readout(res.z)
        if task.kind == "classify":
            logits = model.pooled_logits(logits)
            flat, target = logits, y
        else:
            flat, target = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        finite = torch.isfinite(flat).all(dim=-1)
        nll = F.cross_entropy(torch.where(finite[:, None], flat, 0.0), target, reduction="none")
        nll = torch.where(finite, nll, torch.inf)
        total_loss += float(nll.sum())
        correct += float(((flat.argmax(-1) == target) & finite).sum())
        tokens += int(target.numel())
        count += int(x.shape[0])
        r = res.residual
        worst = max(worst, float(torch.nan_to_num(r, nan=torch.inf).max()))
        sample_status = res.sample_status or (res.status,) * x.shape[0]
        converged += sum(s is Status.CONVERGED for s in sample_status)
    if count == 0:
        raise ValueError(f"split {split!r} of task {task.name!r} is empty")
    return {
        "loss": total_loss / tokens,
        "accuracy": correct / tokens,
        "residual": worst,
        "converged": converged / count,
        "n": count,
    }
