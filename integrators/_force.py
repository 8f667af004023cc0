"""The force protocol and the wrapper every integrator calls the force through.

A *force* is any callable `F(z) -> dz/dt` on a tensor `z` of shape (batch, ...). Optional
attributes:

* `leak` (float, or tensor broadcastable to z) and `nonlinear(z)` with F(z) = -leak * z + N(z):
  the split that IMEX and implicit methods use.
* `select(index) -> force`: the same force restricted to the samples `index` (a 1-D LongTensor).
  A force bound to per-sample inputs (a transformer bound to its tokens) implements it, so that
  settled samples stop costing evaluations. Without it the wrapper evaluates the whole batch with
  the finished samples frozen: always correct, but not cheaper.

`CountedForce` wraps a user force once per settle: it counts evaluations (calls on a (sub-)batch,
and per sample), checks the output's shape and dtype on every call, and restricts to sub-batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Force = Callable[[Tensor], Tensor]


def has_split(force: Any) -> bool:
    """True when the force exposes `leak` and `nonlinear` (F = -leak * z + N(z))."""
    return hasattr(force, "leak") and callable(getattr(force, "nonlinear", None))


def force_residual(z: Tensor, f: Tensor) -> Tensor:
    """Force residual ||F(z)|| / ||z|| per sample, shape (batch,), real dtype.

    Zero exactly at a fixed point. It assumes the fixed point is not z* = 0 (docs/physics.md section
    2); ||z|| is floored at the dtype's smallest normal number so that z = 0 gives a huge, finite
    value.
    """
    dims = tuple(range(1, z.ndim))
    fn = torch.linalg.vector_norm(f, dim=dims)
    zn = torch.linalg.vector_norm(z, dim=dims)
    return fn / zn.clamp_min(torch.finfo(zn.dtype).tiny)


def step_residual(z_new: Tensor, z_old: Tensor) -> Tensor:
    """Step residual ||z_new - z_old|| / ||z_old|| per sample, shape (batch,)."""
    dims = tuple(range(1, z_new.ndim))
    dn = torch.linalg.vector_norm(z_new - z_old, dim=dims)
    zn = torch.linalg.vector_norm(z_old, dim=dims)
    return dn / zn.clamp_min(torch.finfo(zn.dtype).tiny)


class CountedForce:
    """A force seen through one settle: counted, checked, restrictable.

    Shapes: called with z of shape (k, *sample_shape) where k is the number of selected samples.
    `calls` counts every evaluation (one per call, whatever k; a JVP through the wrapper counts
    one),
    `per_sample` (batch,) counts evaluations per sample of the full batch.
    """

    def __init__(self, force: Any, z0: Tensor, name: str = "force"):
        if not callable(force):
            raise TypeError(f"{name} must be callable F(z) -> dz/dt, got {type(force).__name__}")
        self._root = force
        self._name = name
        self._sample_shape = tuple(z0.shape[1:])
        self._dtype = z0.dtype
        self._batch = z0.shape[0]
        self._counter = _Counter(z0.shape[0], z0.device)
        self._full_z = z0  # frozen values for the embed path; the loop refreshes it every step
        self._force = force
        self._index: Tensor | None = None  # global sample indices of this view; None = all

    # -- counters ---------------------------------------------------------------------------
    @property
    def calls(self) -> int:
        return self._counter.calls

    @property
    def per_sample(self) -> Tensor:
        return self._counter.per_sample

    @property
    def batch(self) -> int:
        """Number of samples this view evaluates."""
        return self._batch if self._index is None else int(self._index.numel())

    @property
    def index(self) -> Tensor | None:
        return self._index

    # -- the split --------------------------------------------------------------------------
    @property
    def has_split(self) -> bool:
        return has_split(self._force) or (self._index is not None and has_split(self._root))

    @property
    def leak(self) -> Tensor | float:
        """The linear leak of this view (float, or a tensor indexed to this view's samples)."""
        source = self._force if has_split(self._force) else self._root
        if not has_split(source):
            raise TypeError(
                f"{self._name} has no leak/nonlinear split; IMEX and implicit methods need "
                "F(z) = -leak * z + nonlinear(z) (give the force `leak` and `nonlinear`)"
            )
        leak = source.leak
        if (
            isinstance(leak, Tensor)
            and source is self._root
            and self._index is not None
            and leak.ndim == len(self._sample_shape) + 1
            and leak.shape[0] == self._batch
        ):
            leak = leak.index_select(0, self._index)
        return leak

    def nonlinear(self, z: Tensor) -> Tensor:
        """N(z) = F(z) + leak * z on this view's samples; counted as one force evaluation."""
        if has_split(self._force) and (self._force is not self._root or self._index is None):
            return self._checked(self._force.nonlinear(z), z, "nonlinear")
        if not has_split(self._root):
            _ = self.leak  # raises the explanatory TypeError
        return self._embed_call(self._root.nonlinear, z, "nonlinear")

    # -- evaluation -------------------------------------------------------------------------
    def __call__(self, z: Tensor) -> Tensor:
        if self._force is not self._root or self._index is None:
            return self._checked(self._force(z), z, "output")
        return self._embed_call(self._root, z, "output")

    def _embed_call(self, fn: Callable[[Tensor], Tensor], z: Tensor, what: str) -> Tensor:
        """Evaluate a force without `select` on a sub-batch: embed z into the frozen full batch."""
        if self._index is None:
            return self._checked(fn(z), z, what)
        full = self._full_z.to(z.dtype).index_put((self._index,), z)
        out = fn(full)
        self._check_shape(out, full, what)
        self._counter.add(self._index, self._batch)
        return out.index_select(0, self._index)

    def _checked(self, out: Any, z: Tensor, what: str) -> Tensor:
        self._check_shape(out, z, what)
        if self._index is None:
            self._counter.add(None, z.shape[0])
        else:
            self._counter.add(self._index, z.shape[0])
        return out

    def _check_shape(self, out: Any, z: Tensor, what: str) -> None:
        if not isinstance(out, Tensor):
            raise TypeError(f"{self._name} {what} must be a torch.Tensor, got {type(out).__name__}")
        if out.shape != z.shape:
            raise ValueError(
                f"{self._name} {what} has shape {tuple(out.shape)}, expected the state's shape "
                f"{tuple(z.shape)}"
            )
        if out.dtype != z.dtype:
            raise TypeError(f"{self._name} {what} has dtype {out.dtype}, expected {z.dtype}")

    # -- sub-batches ------------------------------------------------------------------------
    def refresh(self, full_z: Tensor) -> None:
        """Give the frozen full-batch state used when the force cannot `select` (loop only)."""
        self._full_z = full_z

    def restrict(self, local_index: Tensor) -> CountedForce:
        """A view on the samples `local_index` (indices into *this* view's samples)."""
        if self._index is None:
            global_index = local_index
        else:
            global_index = self._index.index_select(0, local_index)
        view = CountedForce.__new__(CountedForce)
        view.__dict__.update(self.__dict__)
        view._index = global_index
        if self._index is None and local_index.numel() == self._batch:
            view._index = None  # all samples: no restriction needed
            return view
        selector = getattr(self._root, "select", None)
        view._force = selector(global_index) if callable(selector) else self._root
        return view


class _Counter:
    """Shared evaluation counters of one settle (all views of a CountedForce write here)."""

    def __init__(self, batch: int, device: torch.device):
        self.calls = 0
        self.per_sample = torch.zeros(batch, dtype=torch.long, device=device)

    def add(self, index: Tensor | None, k: int) -> None:
        # Out of place: inside torch.func transforms (jvp/vjp through the force) in-place updates
        # of a captured tensor are refused.
        self.calls += 1
        if index is None:
            self.per_sample = self.per_sample + 1
        else:
            self.per_sample = self.per_sample.index_add(0, index, torch.ones_like(index))
