"""Training tasks that ship with the environment (no downloads): digits, text, a synthetic task.

Every task is a `Task`: fixed train/test tensors (or a fixed text split), the `ModelConfig` fields
it needs (`model_fields`), and a stateless batch sampler: `task.batch(step, batch_size, seed)`
returns the same batch for the same (step, batch_size, seed) in every process, so a resumed run
sees exactly the data order of an uninterrupted one (no data-loader state to checkpoint).

* `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, `load_digits`), each image
  as 8 tokens (its rows) of 8 features (pixel intensities 0..16, standardised with the training
  set's mean and std), 10 classes, classified from the settled state (mean over tokens of the
  per-token logits, non-causal attention). Fixed split: a seeded permutation (numpy
  RandomState(0), stable across numpy versions) puts 1437 images in train and 360 in test.
  Optional augmentation of the training batches (`batch(..., augment=True)`): each image shifted
  by a random -1..1 pixels in x and y, blank paper filling in.
* `text`: a character language model on the English documentation that ships with CPython
  (`pydoc_data.topics`, ~465k characters, the topics concatenated in sorted key order), mapped to
  96 symbols (printable ASCII and newline; typographic quotes and dashes folded to ASCII, anything
  else to '?'). Context 64, next-character targets per token (causal). Fixed split: the first 90 %
  of the characters train, the last 10 % validate; the validation set is `n_eval` windows at evenly
  spaced offsets.
* `synthetic`: 4 tokens of 4 features (Gaussian directions on the sphere of radius 2), 3 classes
  given by a fixed random teacher (argmax of a linear map of the token mean); 256 train / 128
  test samples. Small enough for unit tests (a few seconds of training lowers its loss clearly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Task", "TASKS", "get_task", "digits", "text", "synthetic", "TEXT_ALPHABET",
           "shift_images"]

TEXT_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
"""The 96 symbols of the `text` task: newline and printable ASCII (id = index here)."""
_FOLD = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2014": "-",
         "\u2013": "-", "\u2026": "...", "\t": "    "}
_UNKNOWN = "?"


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash())."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h ^= (int(p) + 0x9E3779B97F4A7C15 + ((h << 6) & (2**64 - 1)) + (h >> 2)) & (2**64 - 1)
    return h & (2**63 - 1)


@dataclass
class Task:
    """A dataset with a fixed split and a stateless sampler.

    Attributes:
        name: "digits" | "text" | "synthetic".
        kind: "classify" (targets (batch,), one label per sequence) or "lm" (targets (batch, T),
            one next token per position).
        model_fields: `ModelConfig` keyword arguments the task fixes (vocab_size / input_dim,
            n_classes, context, causal, pool).
        train_inputs, train_targets, test_inputs, test_targets: for "classify", the fixed split
            (inputs (N, T, input_dim) float32, targets (N,) int64). For "lm" the train tensors
            are None and `train_text` / `test_inputs`, `test_targets` (the evenly spaced
            validation windows (n_eval, context) int64) are used.
        train_text: for "lm", the training characters as ids (n,) int64.
        info: provenance (sizes, normalisation, split) for logs and results files.
        augmenter: None, or a map (inputs, generator) -> inputs of the same shape that
            `batch(..., augment=True)` applies to training batches (digits: random shifts).
    """

    name: str
    kind: str
    model_fields: dict[str, Any]
    test_inputs: Tensor
    test_targets: Tensor
    train_inputs: Tensor | None = None
    train_targets: Tensor | None = None
    train_text: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    augmenter: Callable[[Tensor, torch.Generator], Tensor] | None = None

    @property
    def context(self) -> int:
        return int(self.model_fields["context"])

    @property
    def n_train(self) -> int:
        """Training samples (classify) or training characters (lm)."""
        if self.kind == "lm":
            assert self.train_text is not None
            return int(self.train_text.numel())
        assert self.train_inputs is not None
        return int(self.train_inputs.shape[0])

    def batch(self, step: int, batch_size: int, seed: int = 0, *,
              augment: bool = False) -> tuple[Tensor, Tensor]:
        """The training batch of `step` (>= 0): (inputs, targets), a pure function of its
        arguments.

        classify: epochs of a seeded permutation of the training set (epoch e uses the seed
        (seed, e)); batch `step` is the slice [step * batch_size, (step + 1) * batch_size) of the
        concatenated epochs. lm: `batch_size` windows at uniform random offsets drawn from a
        generator seeded by (seed, step). `augment`: apply the task's `augmenter` with a generator
        seeded by (seed, step) (ValueError for a task without one).
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if augment and self.augmenter is None:
            raise ValueError(f"augment=True: task {self.name!r} has no augmentation")
        if self.kind == "lm":
            assert self.train_text is not None
            T = self.context
            gen = torch.Generator().manual_seed(_mix(seed, step, 1))
            starts = torch.randint(0, self.n_train - T - 1, (batch_size,), generator=gen)
            idx = starts[:, None] + torch.arange(T + 1)
            win = self.train_text[idx]
            return win[:, :-1].contiguous(), win[:, 1:].contiguous()
        assert self.train_inputs is not None and self.train_targets is not None
        n = self.n_train
        first, last = step * batch_size, (step + 1) * batch_size
        picks: list[Tensor] = []
        for epoch in range(first // n, (last - 1) // n + 1):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch, 2)))
            lo, hi = max(first - epoch * n, 0), min(last - epoch * n, n)
            picks.append(perm[lo:hi])
        idx = torch.cat(picks)
        x = self.train_inputs[idx]
        if augment:
            assert self.augmenter is not None
            x = self.augmenter(x, torch.Generator().manual_seed(_mix(seed, step, 4)))
        return x, self.train_targets[idx]

    def eval_batches(self, split: str = "test", batch_size: int = 256,
                     limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Fixed evaluation batches of the `split` ("test", or "train" for classify tasks), in
        order; `limit` caps the number of samples."""
        if split == "test":
            x, y = self.test_inputs, self.test_targets
        elif split == "train" and self.kind == "classify":
            assert self.train_inputs is not None and self.train_targets is not None
            x, y = self.train_inputs, self.train_targets
        else:
            raise ValueError(
                f"split must be 'test' (or 'train' for a classify task), got {split!r}")
        n = x.shape[0] if limit is None else min(int(limit), x.shape[0])
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            yield x[lo:hi], y[lo:hi]

    def decode(self, ids: Tensor) -> str:
        """Text of a 1-D id tensor (lm tasks)."""
        if self.kind != "lm":
            raise ValueError(f"decode is for text tasks, {self.name!r} is a {self.kind} task")
        return "".join(TEXT_ALPHABET[int(i)] for i in ids.reshape(-1).tolist())

    def encode(self, s: str) -> Tensor:
        """Ids (n,) int64 of a string (lm tasks; unknown characters fold as in the task)."""
        if self.kind != "lm":
            raise ValueError(f"encode is for text tasks, {self.name!r} is a {self.kind} task")
        return _encode(s)


# ------------------------------------------------------------------------------------------------
# digits


def shift_images(images: Tensor, generator: torch.Generator, background: float,
                 max_shift: int = 1) -> Tensor:
    """Translate each image (N, H, W) by its own random whole-pixel offset (dy, dx), each
    uniform in [-max_shift, max_shift]; uncovered pixels take the `background` value (the
    digits' blank paper, 0 before standardisation). The classic augmentation for small digit
    images: a shifted digit is the same digit. The offsets are drawn on the generator's device
    (the CPU for the trainer's batches) and applied on the images' device."""
    if not isinstance(images, Tensor) or images.ndim != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, H, W), got {got}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    n, h, w = images.shape
    k = max_shift
    dev = images.device
    padded = torch.full((n, h + 2 * k, w + 2 * k), float(background), dtype=images.dtype,
                        device=dev)
    padded[:, k:k + h, k:k + w] = images
    offsets = torch.randint(0, 2 * k + 1, (n, 2), generator=generator).to(dev)
    rows = offsets[:, 0, None] + torch.arange(h, device=dev)  # (n, h) source rows
    cols = offsets[:, 1, None] + torch.arange(w, device=dev)  # (n, w) source columns
    return padded[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]


def digits(test_size: int = 360) -> Task:
    """8x8 digits as 8 tokens of 8 features; fixed split of `test_size` test images (module
    docstring)."""
    from sklearn.datasets import load_digits

    if isinstance(test_size, bool) or not isinstance(test_size, int) or not 1 <= test_size < 1797:
        raise ValueError(f"test_size must be an int in [1, 1796], got {test_size!r}")
    data = load_digits()
    images = np.asarray(data.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    labels = np.asarray(data.target, dtype=np.int64)
    perm = np.random.RandomState(0).permutation(images.shape[0])
    test_idx, train_idx = perm[:test_size], perm[test_size:]
    train = images[train_idx]
    mean, std = float(train.mean()), float(train.std())
    norm = (images - mean) / std
    x = torch.tensor(norm, dtype=torch.float32)
    y = torch.tensor(labels)
    background = (0.0 - mean) / std
    return Task(
        name="digits",
        kind="classify",
        model_fields=dict(vocab_size=None, input_dim=8, n_classes=10, context=8, causal=False,
                          pool="mean"),
        train_inputs=x[train_idx], train_targets=y[train_idx],
        test_inputs=x[test_idx], test_targets=y[test_idx],
        info=dict(source="sklearn.datasets.load_digits", n_train=len(train_idx),
                  n_test=len(test_idx), tokens="8 rows x 8 pixels", pixel_mean=mean,
                  pixel_std=std, split="numpy RandomState(0) permutation, first test_size test",
                  augment="random shift of each image by -1..1 pixels in x and y"),
        augmenter=functools.partial(shift_images, background=background),
    )


# ------------------------------------------------------------------------------------------------
# text


def _encode(s: str) -> Tensor:
    for a, b in _FOLD.items():
        s = s.replace(a, b)
    table = {ch: i for i, ch in enumerate(TEXT_ALPHABET)}
    unknown = table[_UNKNOWN]
    return torch.tensor([table.get(c, unknown) for c in s], dtype=torch.int64)


def _corpus() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


@functools.lru_cache(maxsize=1)
def _corpus_ids() -> Tensor:
    return _encode(_corpus())


def text(context: int = 64, n_eval: int = 256, val_fraction: float = 0.1) -> Task:
    """Character LM on CPython's `pydoc_data.topics` (module docstring)."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be an int >= 1, got {context!r}")
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 1:
        raise ValueError(f"n_eval must be an int >= 1, got {n_eval!r}")
    if not (isinstance(val_fraction, float) and 0.0 < val_fraction < 0.5):
        raise ValueError(f"val_fraction must be a float in (0, 0.5), got {val_fraction!r}")
    ids = _corpus_ids()
    cut = int(math.floor(ids.numel() * (1.0 - val_fraction)))
    train, val = ids[:cut], ids[cut:]
    if val.numel() < context + 2:
        raise ValueError(f"the validation text is shorter than context + 2 = {context + 2}")
    starts = torch.linspace(0, val.numel() - context - 1, n_eval).round().long()
    win = val[starts[:, None] + torch.arange(context + 1)]
    return Task(
        name="text",
        kind="lm",
        model_fields=dict(vocab_size=len(TEXT_ALPHABET), input_dim=None, n_classes=None,
                          context=context, causal=True, pool="last"),
        test_inputs=win[:, :-1].contiguous(), test_targets=win[:, 1:].contiguous(),
        train_text=train,
        info=dict(source="pydoc_data.topics (CPython), topics in sorted key order",
                  n_chars=int(ids.numel()), n_train_chars=int(train.numel()),
                  n_val_chars=int(val.numel()), vocab=len(TEXT_ALPHABET), context=context,
                  n_eval_windows=n_eval, split=f"first {1 - val_fraction:.0%} train, rest val"),
    )


# ------------------------------------------------------------------------------------------------
# synthetic


def synthetic(n_train: int = 256, n_test: int = 128, tokens: int = 4, features: int = 4,
              classes: int = 3, seed: int = 0) -> Task:
    """Gaussian tokens labelled by a fixed random linear teacher on their mean (module
    docstring). Fully determined by the arguments."""
    for name, v, lo in (("n_train", n_train, 1), ("n_test", n_test, 1), ("tokens", tokens, 1),
                        ("features", features, 1), ("classes", classes, 2), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    gen = torch.Generator().manual_seed(_mix(seed, 3))
    teacher = torch.randn(classes, features, generator=gen)
    x = torch.randn(n_train + n_test, tokens, features, generator=gen)
    # every token on the sphere of radius sqrt(features): unit variance per feature on average,
    # and no near-zero token (whose LayerNorm would make the relaxation needlessly stiff)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True) * math.sqrt(features)
    y = (x.mean(1) @ teacher.T).argmax(1)
    return Task(
        name="synthetic",
        kind="classify",
        model_fields=dict(vocab_size=None, input_dim=features, n_classes=classes, context=tokens,
                          causal=False, pool="mean"),
        train_inputs=x[:n_train], train_targets=y[:n_train],
        test_inputs=x[n_train:], test_targets=y[n_train:],
        info=dict(source="synthetic linear teacher", n_train=n_train, n_test=n_test, seed=seed),
    )


TASKS = {"digits": digits, "text": text, "synthetic": synthetic}


def get_task(name: str, **kwargs: Any) -> Task:
    """The task `name` ("digits", "text", "synthetic") built with `kwargs`."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](**kwargs)
