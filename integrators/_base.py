"""The integrator protocol: a small object with `init` and `step`; the loop lives once, in `_loop`.

A method never sees the whole batch unless every sample is still running: the loop hands `step` the
state of the active samples and a force restricted to them. Everything per-sample therefore lives
in `StepState` tensors with a leading batch dimension, so the loop can select and write back rows.
A method object holds only its configuration; it is reusable and shareable across settles.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._force import CountedForce

# Below this many machine epsilons (of the state's real dtype) a force-residual floor is rounding
# noise, not dynamics: the loop calls such a floor STALLED, controllers treat it as noise.
PRECISION_FLOOR_EPS = 16


@dataclass
class StepState:
    """Per-sample state of a run. Every tensor has a leading batch dimension.

    * `z` (b, ...): current state; `f` (b, ...): F(z) at that state (methods return it so the loop
      judges the force residual without another evaluation).
    * `t` (b,): continuous time reached (real dtype); root-finders leave it at 0.
    * `eps` (b,): the step size the next step will try (time units).
    * `rejected` (b,) long: steps rejected so far (adaptive methods).
    * `stalled` (b,) bool: set by a method that cannot make progress on a sample (e.g. Anderson);
      the loop ends that sample with Status.STALLED.
    * `settled` (b,) bool: set by a stochastic method whose time-averaged residual reached its noise
      floor; the loop ends that sample as CONVERGED although the instantaneous residual is above
      tol.
    * `extra`: method-specific tensors, each with leading batch dimension (histories, best iterate).
    """

    z: Tensor
    f: Tensor
    t: Tensor
    eps: Tensor
    rejected: Tensor
    stalled: Tensor
    settled: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def start(cls, z: Tensor, f: Tensor, eps: float | Tensor, **extra: Tensor) -> StepState:
        b = z.shape[0]
        real = z.real.dtype if z.is_complex() else z.dtype
        eps_t = torch.as_tensor(eps, dtype=real, device=z.device).expand(b).clone()
        return cls(
            z=z,
            f=f,
            t=torch.zeros(b, dtype=real, device=z.device),
            eps=eps_t,
            rejected=torch.zeros(b, dtype=torch.long, device=z.device),
            stalled=torch.zeros(b, dtype=torch.bool, device=z.device),
            settled=torch.zeros(b, dtype=torch.bool, device=z.device),
            extra=dict(extra),
        )

    def _tensors(self) -> dict[str, Tensor]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update({f"extra.{k}": v for k, v in self.extra.items()})
        return out

    def _rebuild(self, values: dict[str, Tensor]) -> StepState:
        extra = {k[6:]: v for k, v in values.items() if k.startswith("extra.")}
        base = {k: v for k, v in values.items() if not k.startswith("extra.")}
        return StepState(**base, extra=extra)

    def replace(self, **changes: Tensor | dict[str, Tensor]) -> StepState:
        """A copy with some fields changed (e.g. `state.replace(z=z, f=f, t=t)`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return StepState(**values)

    def take(self, index: Tensor) -> StepState:
        """The rows `index` of every tensor."""
        return self._rebuild({k: v.index_select(0, index) for k, v in self._tensors().items()})

    def merge(self, new: StepState, keep: Tensor) -> StepState:
        """`new` for the whole batch, except rows where `keep` (b,) is True: those stay old."""
        mine, theirs = self._tensors(), new._tensors()
        if mine.keys() != theirs.keys():
            raise RuntimeError(f"state fields changed during a step: {mine.keys() ^ theirs.keys()}")
        out = {}
        for k, old in mine.items():
            mask = keep.view(-1, *([1] * (old.ndim - 1)))
            out[k] = torch.where(mask, old, theirs[k].to(old.dtype))
        return self._rebuild(out)

    def put(self, index: Tensor, sub: StepState, keep: Tensor | None = None) -> StepState:
        """Write `sub` into rows `index`; rows where `keep` (k,) is True keep their old values.

        `sub` must carry the same fields (and `extra` keys) as this state.
        """
        mine, theirs = self._tensors(), sub._tensors()
        if mine.keys() != theirs.keys():
            raise RuntimeError(f"state fields changed during a step: {mine.keys() ^ theirs.keys()}")
        out = {}
        for k, full in mine.items():
            new = theirs[k]
            if keep is not None:
                old = full.index_select(0, index)
                mask = keep.view(-1, *([1] * (new.ndim - 1)))
                new = torch.where(mask, old, new)
            out[k] = full.index_copy(0, index, new.to(full.dtype))
        return self._rebuild(out)


class Integrator:
    """Base class of the settle methods.

    Subclasses set `name`, `default_max_steps`, `has_time` and implement `init` and `step`;
    `finalize` may pick the returned state (Anderson returns its best iterate).
    """

    name: ClassVar[str] = "integrator"
    default_max_steps: ClassVar[int] = 1000
    has_time: ClassVar[bool] = True
    """False for root-finders: they have no continuous time (`SettleResult.t` is None)."""
    needs_split: ClassVar[bool] = False
    """True when the method requires the force's leak/nonlinear split."""
    fallback: Integrator | None = None
    """A method that takes over the samples this one leaves STALLED, LIMIT_CYCLE or DIVERGED with
    a finite force, from the state this one returns, with the rest of the budget (the loop does
    it; `SettleResult.info["fallback"]` reports it)."""

    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        """State before the first step. `f0 = force(z0)` is already evaluated by the loop."""
        return StepState.start(z0, f0, getattr(self, "eps", math.nan))

    def step(self, force: CountedForce, state: StepState) -> StepState:
        """Advance every sample of `state` by one step; return the new state with `f = F(z)`."""
        raise NotImplementedError

    def finalize(self, state: StepState) -> tuple[Tensor, Tensor]:
        """The (z, F(z)) to report at the end of a run (all samples)."""
        return state.z, state.f

    def info(self, state: StepState) -> dict[str, Any]:
        """Method-specific figures to put in `SettleResult.info`."""
        return {}

    def __repr__(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        shown = [f"{p}={getattr(self, p)!r}" for p in params if p != "self" and hasattr(self, p)]
        return f"{type(self).__name__}({', '.join(shown)})"


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """A finite positive real number, or a clear error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_range(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> Any:
    """A number in [low, high] (an int when `integer`), or a clear error naming the argument."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a real number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if not (low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value if integer else float(value)
