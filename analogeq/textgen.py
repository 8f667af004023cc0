"""Sample text from a character language model trained on the `text` task.

Each new character costs one settle: the last `context` characters (the model's position table
size) are the inputs, the block relaxes to its fixed point, and the next character is drawn from
the readout at the last position (softmax at `temperature`; 0 = greedy argmax). While the window
is still growing (a prompt shorter than the context), the settle starts from the previous fixed
point with the new position appended at its decoupled start x_in / (1 + c): with causal attention
a position's force depends only on the positions before it, so the old rows are already at their
fixed point and only the new one has to relax. Once the window slides every position sees a new
context (and a new position embedding), so the settle starts cold.

A character whose settle did not converge is still drawn (from the best state the settle
returned) and counted in `Generated.unsettled`, so a sample from a model that does not settle is
visible as such rather than silently trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .integrators import Status
from .tasks import TEXT_ALPHABET, _encode

__all__ = ["Generated", "generate"]


@dataclass
class Generated:
    """A text sample.

    Attributes:
        prompt: the prompt as the model saw it (unknown characters folded, see `analogeq.tasks`).
        text: the generated characters (without the prompt).
        unsettled: characters drawn from a settle that did not converge (0 for a healthy model).
        nfe: force evaluations over all settles.
        statuses: the settle status of every generated character, in order.
    """

    prompt: str
    text: str
    unsettled: int
    nfe: int
    statuses: list[Status] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "unsettled": self.unsettled,
                "nfe": self.nfe, "chars": len(self.text)}


def _check_model(model: Any) -> None:
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(model, "settle") or not hasattr(model, "readout"):
        raise TypeError(f"model must be an EquilibriumTransformer, got {type(model).__name__}")
    if cfg.input_dim is not None or cfg.n_classes is not None:
        raise ValueError("model must be a character language model (input_dim and n_classes "
                         f"None), got input_dim={cfg.input_dim}, n_classes={cfg.n_classes}")
    if cfg.vocab_size != len(TEXT_ALPHABET):
        raise ValueError(f"model's vocab_size must be {len(TEXT_ALPHABET)} (the text task's "
                         f"alphabet), got {cfg.vocab_size}")
    if not cfg.causal:
        raise ValueError("model must use causal attention (a language model), got causal=False")


@torch.no_grad()
def generate(
    model: Any,
    prompt: str,
    n_chars: int = 200,
    *,
    temperature: float = 0.8,
    seed: int = 0,
    method: str = "anderson",
    tol: float = 1e-5,
    max_steps: int = 200,
    fallback_steps: int = 300,
    progress: bool = False,
) -> Generated:
    """Generate `n_chars` characters after `prompt` (module docstring).

    Args:
        model: an `EquilibriumTransformer` trained on the `text` task (vocabulary of 96
            symbols, causal), digital or on hardware.
        prompt: at least one character; only its last `context` characters are used.
        n_chars: characters to generate (>= 1).
        temperature: softmax temperature (>= 0; 0 = greedy argmax).
        seed: seed of the sampling generator (reproducible samples).
        method, tol, max_steps: the settle of each step (`model.settle`).
        fallback_steps: IMEX continuation of a settle that did not converge (0 = off).
        progress: show a tqdm bar (one tick per character, with the count of unsettled ones).

    Returns:
        `Generated` (text, unsettled count, NFE, statuses).
    """
    _check_model(model)
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < 1:
        raise ValueError(f"n_chars must be an int >= 1, got {n_chars!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature >= 0.0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    context = int(model.config.context)
    device = model.causal_mask.device
    ids = _encode(prompt).to(device)
    folded = "".join(TEXT_ALPHABET[int(i)] for i in ids.tolist())
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[int] = []
    statuses: list[Status] = []
    nfe = 0
    prev_z: torch.Tensor | None = None
    prev_len = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chars, desc="generate", unit="char", leave=False)
    try:
        for _ in range(n_chars):
            nxt, prev_z, status, used = _next_char(model, ids, context, prev_z, prev_len, method,
                                                   tol, max_steps, fallback_steps, temperature,
                                                   gen, len(out))
            nfe += used
            statuses.append(status)
            out.append(nxt)
            prev_len = min(ids.numel(), context)
            ids = torch.cat([ids, torch.tensor([nxt], dtype=ids.dtype, device=device)])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(unsettled=sum(s is not Status.CONVERGED for s in statuses))
    finally:
        if bar is not None:
            bar.close()
    text = "".join(TEXT_ALPHABET[i] for i in out)
    unsettled = sum(s is not Status.CONVERGED for s in statuses)
    return Generated(prompt=folded, text=text, unsettled=unsettled, nfe=nfe, statuses=statuses)


def _next_char(model: Any, ids: torch.Tensor, context: int, prev_z: torch.Tensor | None,
               prev_len: int, method: str, tol: float, max_steps: int, fallback_steps: int,
               temperature: float, gen: torch.Generator, index: int
               ) -> tuple[int, torch.Tensor, Status, int]:
    """One character: settle the window (warm-started from the previous window's fixed point
    when it grew by one), continue with IMEX if needed, draw from the last position's logits.
    Returns (the character id, the settled state, its status, force evaluations used)."""
    window = ids[-context:][None, :]
    z0: torch.Tensor | None = None
    if prev_z is not None and window.shape[1] == prev_len + 1:
        # growing window, causal attention: the old rows are at their fixed point already
        force = model.force(window)
        start = model.initial_state(force)
        z0 = torch.cat([prev_z, start[:, -1:]], dim=1)
    res = model.settle(window, method, z0=z0, tol=tol, max_steps=max_steps)
    nfe = int(res.nfe)
    if res.status is not Status.CONVERGED and fallback_steps:
        res = model.settle(window, "imex", z0=res.z, tol=tol, max_steps=fallback_steps)
        nfe += int(res.nfe)
    logits = model.readout(res.z)[0, -1].to(torch.float64)
    if not torch.isfinite(logits).all():
        raise FloatingPointError(f"non-finite logits after a settle with status "
                                 f"{res.status.value} at character {index}")
    if temperature == 0:
        nxt = int(logits.argmax())
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        nxt = int(torch.multinomial(probs, 1, generator=gen))
    return nxt, res.z, res.status, nfe
