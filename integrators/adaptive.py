"""Adaptive explicit Euler: z <- z + eps_i F(z) with a per-sample step size chosen by a controller.

The method makes attempts; the controller (`controllers.py`) judges them. Per step of the loop:

1. Attempt every sample with its own eps (shape (b,)): z_new = z + eps F(z), and F(z_new). With
   `PI(estimate="doubling")` the attempt is two half steps instead (F(z + eps/2 F(z)) and F(z_2)).
2. The controller accepts or rejects each sample and proposes its next eps.
3. Rejected samples retry at once, from the same z with the smaller eps, on a force restricted to
   them (`CountedForce.restrict`), so accepted samples wait at no cost. At most `max_retries`
   retries per step; a sample still rejected after that keeps its z, F(z) and its shrunk eps and
   tries again on the next loop step (the loop then sees an unchanged residual for it).

Every accepted sample returns f = F(z_new), so the loop judges the force residual without another
evaluation. Every force evaluation goes through the CountedForce: NFE counts rejected attempts and
the half steps of step doubling. Per sample, exactly
    nfe_per_sample = 1 + cost * (accepted + rejected),  cost = 1 (embedded / none) or 2 (doubling),
with `accepted` in `SettleResult.info["accepted"]` and `rejected` the state's counter.

Host syncs: none beyond the loop's when the controller cannot reject (`Overshoot`). A controller
that can reject costs one more sync per attempt round that has a rejection to look for (finding
the rejected rows needs their count on the host); `max_retries=0` removes it, at the price of
retrying on the next loop step instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Integrator, StepState, check_range
from ._force import CountedForce
from .controllers import ESTIMATES, Controller, Trial, make_controller

_CTL = "ctl."  # prefix of the controller's tensors in StepState.extra


class AdaptiveEuler(Integrator):
    """Explicit Euler with a per-sample step size from a step-size controller.

    Args:
        controller: a `Controller` (`Overshoot(...)`, `PI(...)`) or its name ("overshoot", "pi"
            with default options). Default `Overshoot()`: fast settling at the edge of Euler's
            stability; `PI()` follows the continuous relaxation to a local accuracy instead.
        eps: initial step size in time units, within the controller's [eps_min, eps_max].
            Default 0.1, the digital baseline of docs/physics.md section 1.
        max_retries: retries of a rejected sample inside one step (0 to 100). Default 4: a
            rejection shrinks eps by at least the controller's min_factor (PI: 0.2), so 4 retries
            span a factor 625, more than any single jump in stiffness between two steps needs; the
            bound keeps one step's cost predictable.

    `SettleResult.info` gets per-sample tensors (b,): `eps` (the next step size), `eps_low` and
    `eps_high` (smallest and largest step size proposed during the run), `accepted` and
    `rejected` (attempts), `floor_steps` (accepted steps taken at the controller's eps_min), and the
    scalars `controller` (its repr) and `nfe_per_attempt`.
    """

    name = "adaptive"
    default_max_steps = 2000

    def __init__(
        self, controller: Controller | str | None = None, eps: float = 0.1, max_retries: int = 4
    ):
        self.controller = make_controller(controller)
        if self.controller.estimate not in ESTIMATES:
            raise ValueError(
                f"controller.estimate must be one of {ESTIMATES}, got {self.controller.estimate!r}"
            )
        lo, hi = self.controller.eps_min, self.controller.eps_max
        try:
            self.eps = check_range("eps", eps, lo, hi)
        except ValueError:
            raise ValueError(
                f"eps must be in the controller's [eps_min, eps_max] = [{lo}, {hi}], got {eps}"
            ) from None
        self.max_retries = check_range("max_retries", max_retries, 0, 100, integer=True)

    @property
    def cost(self) -> int:
        """Force evaluations per attempt: 2 for step doubling, else 1."""
        return 2 if self.controller.estimate == "doubling" else 1

    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        b = z0.shape[0]
        extra = {_CTL + k: v for k, v in self.controller.init(z0, f0).items()}
        state = StepState.start(z0, f0, self.eps, **extra)
        zeros = torch.zeros(b, dtype=torch.long, device=z0.device)
        state.extra.update(
            accepted=zeros,
            floor_steps=zeros.clone(),
            eps_low=state.eps.clone(),
            eps_high=state.eps.clone(),
        )
        return state

    def step(self, force: CountedForce, state: StepState) -> StepState:
        ctl = self.controller
        ex = state.extra
        # Outputs for every row of this view; each round writes the rows it attempted.
        out = {
            "z": state.z,
            "f": state.f,
            "t": state.t,
            "eps": state.eps,
            "rejected": state.rejected,
            "accepted": ex["accepted"],
            "floor_steps": ex["floor_steps"],
            "eps_low": ex["eps_low"],
            "eps_high": ex["eps_high"],
        }
        ctl_state = {k[len(_CTL) :]: v for k, v in ex.items() if k.startswith(_CTL)}
        out.update({_CTL + k: v for k, v in ctl_state.items()})

        rows: Tensor | None = None  # rows of this view in the current round; None = all
        view = force
        z, f, t, eps = state.z, state.f, state.t, state.eps
        retry = torch.zeros_like(state.stalled)
        for round_ in range(self.max_retries + 1):
            trial = self._attempt(view, z, f, eps, retry)
            dec = ctl.propose(trial, ctl_state)
            acc = dec.accept
            mask = acc.view(-1, *([1] * (z.ndim - 1)))
            new = {
                "z": torch.where(mask, trial.z_new, z),
                "f": torch.where(mask, trial.f_new, f),
                "t": torch.where(acc, t + eps, t),
                "eps": dec.eps,
                "rejected": _pick(out["rejected"], rows) + (~acc).long(),
                "accepted": _pick(out["accepted"], rows) + acc.long(),
                "floor_steps": _pick(out["floor_steps"], rows)
                + (acc & (eps <= ctl.eps_min)).long(),
                "eps_low": torch.minimum(_pick(out["eps_low"], rows), dec.eps),
                "eps_high": torch.maximum(_pick(out["eps_high"], rows), dec.eps),
            }
            new.update({_CTL + k: v for k, v in dec.state.items()})
            for k, v in new.items():
                out[k] = v if rows is None else out[k].index_copy(0, rows, v.to(out[k].dtype))
            if not ctl.can_reject or round_ == self.max_retries:
                break
            again = (~acc).nonzero().squeeze(1)  # host sync: which rows retry (see module doc)
            if again.numel() == 0:
                break
            rows = again if rows is None else rows.index_select(0, again)
            view = view.restrict(again)
            z, f, t = z.index_select(0, again), f.index_select(0, again), t.index_select(0, again)
            eps = dec.eps.index_select(0, again)
            ctl_state = {k: v.index_select(0, again) for k, v in dec.state.items()}
            retry = torch.ones_like(again, dtype=torch.bool)

        extra = {k: v for k, v in out.items() if k not in ("z", "f", "t", "eps", "rejected")}
        return state.replace(
            z=out["z"],
            f=out["f"],
            t=out["t"],
            eps=out["eps"],
            rejected=out["rejected"],
            extra=extra,
        )

    def _attempt(
        self, force: CountedForce, z: Tensor, f: Tensor, eps: Tensor, retry: Tensor
    ) -> Trial:
        """One attempt on the rows of `force` (k samples); shapes as in `Trial`."""
        h = eps.view(-1, *([1] * (z.ndim - 1))).to(z.dtype)
        estimate = self.controller.estimate
        if estimate == "doubling":
            z_half = z + 0.5 * h * f
            f_half = force(z_half)
            z_new = z_half + 0.5 * h * f_half
            # = z_new - (z + h f): the error of z_new, to leading order (Richardson, order 1)
            error = 0.5 * h * (f_half - f)
            f_new = force(z_new)
        else:
            z_new = z + h * f
            f_new = force(z_new)
            # Heun minus Euler: the free embedded estimate of Euler's local error.
            error = 0.5 * h * (f_new - f) if estimate == "embedded" else None
        return Trial(eps=eps, z=z, f=f, z_new=z_new, f_new=f_new, error=error, retry=retry)

    def info(self, state: StepState) -> dict[str, Any]:
        ex = state.extra
        return {
            "controller": repr(self.controller),
            "nfe_per_attempt": self.cost,
            "eps": state.eps,
            "eps_low": ex["eps_low"],
            "eps_high": ex["eps_high"],
            "accepted": ex["accepted"],
            "rejected": state.rejected,
            "floor_steps": ex["floor_steps"],
        }


def _pick(x: Tensor, rows: Tensor | None) -> Tensor:
    return x if rows is None else x.index_select(0, rows)


__all__ = ["AdaptiveEuler"]
