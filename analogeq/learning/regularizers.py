"""Regularisers of the relaxation: Jacobian penalty, Jacobian homeostasis, residual penalty.

docs/physics.md section 5 ("Regularisers"). Each regulariser follows one protocol,
which the trainer (`analogeq.train`) relies on:

    result = reg.gradients(model, inputs, z0, task_grads=None)   # -> RegularizerResult
    reg.observe(free_residual)                                    # controller step (or no-op)
    reg.state_dict() / reg.load_state_dict(state)                 # controller + RNG, checkpoints

* `z0` is the free-phase settled state (batch, T, C), detached; `inputs` the token ids / features
  it was settled on.
* `result.value` is the weighted penalty (a detached 0-d tensor), `result.grads` the gradients of
  weight * penalty keyed like `model.named_parameters()` (only the parameters the penalty touches),
  `result.info` diagnostics (the unweighted penalty, the weight, a "status").
* A non-finite penalty or gradient is never returned as numbers: `info["status"]` is then
  "non-finite", `value` is NaN and `grads` is empty (the trainer skips it).

Normalisation of the Jacobian penalties. With n = T C state entries per sample, B samples and K
probe vectors v (Rademacher, +-1 entries), the penalty is

    P = 1 / (K B n) sum_k sum_b ||M_b v_{k,b}||^2,      E[P] = 1 / (B n) sum_b ||M_b||_F^2

(M_b the sample's Jacobian block; Hutchinson: E[v v^T] = I). P is the mean squared singular value,
independent of T, C and B, so one weight works across model sizes.

Hardware models. A `HardwareLinear` gives its nominal weight a straight-through gradient whose
input is detached, so a derivative of the Jacobian with respect to the nominal weights would be 0.
While a regulariser runs, every crossbar map reads as
y = x W_st^T + (y_chip - x W_st^T).detach(), W_st = W_nom + (W_read - W_nom).detach(): the value is
the chip's own read (converters, noise), the Jacobian in z is the crossbar's read weight W_read,
and its derivative with respect to W_nom is that of a digital weight (the device error held fixed,
the same straight-through rule, one order up). With "white" read noise W_read is a separate draw
from the read's own (the Jacobian then sees another sample of the same noise).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Regularizer",
    "RegularizerResult",
    "JacobianPenalty",
    "JacobianHomeostasis",
    "ResidualPenalty",
    "DEFAULT_UP",
    "DEFAULT_DOWN",
]

DEFAULT_UP = 1.25
"""Growth factor of the adaptive Jacobian-penalty weight per observation above target. From the
floor 0.1 to the cap 16 (a factor 160) takes ln 160 / ln 1.25 = 23 observations: fast enough to
catch a relaxation that runs away within a few dozen steps (docs/physics.md section 6)."""
DEFAULT_DOWN = 0.97
"""Shrink factor per observation at or below target: cap to floor in ln 160 / -ln 0.97 = 167
observations, about 7x slower than the growth, so the weight does not oscillate across the target
every other step (an asymmetric, dead-beat-free multiplicative controller)."""


# ------------------------------------------------------------------------------------------------
# checks


def _real(name: str, value: Any, *, low: float, strict: bool, high: float | None = None) -> float:
    bound = f"> {low:g}" if strict else f">= {low:g}"
    if high is not None:
        bound += f" and <= {high:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite real number {bound}, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if strict else v >= low) and (high is None or v <= high)
    if not ok:
        raise ValueError(f"{name} must be a finite real number {bound}, got {value}")
    return v


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


def _check_state(z0: Any, force: Any) -> Tensor:
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a torch.Tensor (batch, T, C), got {type(z0).__name__}")
    shape = getattr(force, "shape", None)
    if shape is not None and tuple(z0.shape) != tuple(shape):
        raise ValueError(
            f"z0 must have the force's state shape (batch, T, C) = {tuple(shape)}, got "
            f"{tuple(z0.shape)}"
        )
    if z0.is_complex() or not z0.is_floating_point():
        raise TypeError(f"z0 must be a real floating state, got {z0.dtype}")
    return z0.detach()


def _check_residual(free_residual: Any) -> Tensor:
    if not isinstance(free_residual, Tensor):
        raise TypeError(
            "free_residual must be a tensor of per-sample force residuals (batch,), got "
            f"{type(free_residual).__name__}"
        )
    if free_residual.ndim != 1 or free_residual.numel() == 0:
        raise ValueError(
            "free_residual must have shape (batch,) with batch >= 1, got "
            f"{tuple(free_residual.shape)}"
        )
    return free_residual.detach()


# ------------------------------------------------------------------------------------------------
# results and protocol


@dataclass(frozen=True)
class RegularizerResult:
    """What one `Regularizer.gradients` call returns.

    value: 0-d tensor, weight * penalty, detached (NaN when info["status"] is "non-finite").
    grads: {parameter name: d(weight * penalty)/d(parameter)} for the parameters it touches.
    info: "penalty" (float, unweighted), "weight" (float), "status" ("ok" | "non-finite"), and
        regulariser-specific keys.
    """

    value: Tensor
    grads: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.info.get("status", "ok") == "ok"


class Regularizer:
    """Base class of the protocol in the module docstring."""

    name: ClassVar[str] = "regularizer"
    weight: float

    def gradients(self, model: Any, inputs: Tensor, z0: Tensor,
                  task_grads: dict[str, Tensor] | None = None) -> RegularizerResult:
        raise NotImplementedError

    def observe(self, free_residual: Tensor) -> None:
        """Controller step from the per-sample free-phase force residual (batch,); no-op here."""
        _check_residual(free_residual)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_name(self.name, state)
        self.weight = float(state["weight"])


def _check_name(name: str, state: Any) -> None:
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
    if state.get("name") != name:
        raise ValueError(
            f"state belongs to regulariser {state.get('name')!r}, not {name!r}"
        )


def _finish(weight: float, penalty: Tensor, raw: dict[str, Tensor], info: dict[str, Any],
            scale: float | None = None) -> RegularizerResult:
    """Weight the penalty and its gradients; flag non-finite results (one host sync)."""
    s = weight if scale is None else scale
    grads = {k: s * g for k, g in raw.items()}
    checks = [penalty.detach().reshape(1)]
    checks += [g.detach().abs().sum().reshape(1) for g in grads.values()]
    finite = bool(torch.isfinite(torch.cat([c.to(penalty.dtype) for c in checks])).all())
    info = {"penalty": float(penalty), "weight": weight, "status": "ok", **info}
    if not finite:
        info["status"] = "non-finite"
        return RegularizerResult(torch.full((), math.nan, dtype=penalty.dtype), {}, info)
    return RegularizerResult((s * penalty).detach(), grads, info)


def _param_grads(model: Any, total: Tensor) -> dict[str, Tensor]:
    """d total / d parameter for every trainable parameter it depends on."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    return {n: g for n, g in zip(params, grads, strict=True) if g is not None}


# ------------------------------------------------------------------------------------------------
# second-order straight-through on crossbars


@contextlib.contextmanager
def differentiable_crossbars(model: Any) -> Iterator[None]:
    """Within the block, crossbar maps give second-order derivatives to their nominal weights
    (module docstring, Hardware models). No effect on a digital model."""
    if getattr(model, "hardware", None) is None:
        yield
        return
    from ..hardware import hardware_layers

    layers = list(hardware_layers(model).values())

    def make(layer: Any) -> Any:
        def forward(x: Tensor) -> Tensor:
            xd = layer.dac(x) if layer.dac is not None else x
            y_chip = layer.analog(xd)
            w_nom = layer._parameters["weight"]
            w_read = layer.analog.effective_weight(noisy=True).to(w_nom.dtype)
            w_st = w_nom + (w_read - w_nom).detach()
            y_lin = F.linear(xd, w_st.to(xd.dtype))
            y = y_lin + (y_chip - y_lin).detach()
            return y if layer.bias is None else y + layer.bias.to(y.dtype)
        return forward

    try:
        for layer in layers:
            layer.forward = make(layer)  # instance attribute: nn.Module.__call__ uses it
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


# ------------------------------------------------------------------------------------------------
# Hutchinson probes


class _Probes:
    """Seeded Rademacher probe vectors; the generator state is part of the checkpoint."""

    def __init__(self, probes: int, seed: int):
        self.probes = _int("probes", probes, 1)
        self.seed = _int("seed", seed, 0)
        self.generator = torch.Generator().manual_seed(self.seed)

    def draw(self, like: Tensor) -> Tensor:
        """(probes, *like.shape) entries +-1, like's dtype and device (drawn on the CPU)."""
        bits = torch.randint(0, 2, (self.probes, *like.shape), generator=self.generator)
        return (2 * bits - 1).to(dtype=like.dtype, device=like.device)

    def state(self) -> dict[str, Any]:
        return {"probes": self.probes, "seed": self.seed, "rng": self.generator.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        if int(state["probes"]) != self.probes:
            raise ValueError(
                f"state has probes={state['probes']}, this regulariser probes={self.probes}"
            )
        self.generator.set_state(state["rng"])


def _coupling_graph(force: Any, z0: Tensor) -> tuple[Tensor, Tensor]:
    """(z with grad, coupling(z) with its graph to z and the parameters)."""
    if not hasattr(force, "coupling"):
        raise TypeError(
            "the model's force has no coupling(z) (the non-conservative part Attn + FFN); the "
            "Jacobian regularisers need the model's BlockForce"
        )
    z = z0.clone().requires_grad_(True)
    return z, force.coupling(z)


class _JacobianRegularizer(Regularizer):
    """Shared machinery: K probes, a penalty sum_k ||M v_k||^2 / (K B n), its parameter gradient."""

    def __init__(self, weight: float, probes: int, seed: int):
        self.weight = _real("weight", weight, low=0.0, strict=False)
        self._probes = _Probes(probes, seed)

    @property
    def probes(self) -> int:
        return self._probes.probes

    def _products(self, out: Tensor, z: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def gradients(self, model: Any, inputs: Tensor, z0: Tensor,
                  task_grads: dict[str, Tensor] | None = None) -> RegularizerResult:
        """Weighted penalty at the free state z0 (batch, T, C) and its parameter gradients."""
        with differentiable_crossbars(model), torch.enable_grad():
            force = model.force(inputs)
            z0 = _check_state(z0, force)
            v = self._probes.draw(z0)
            z, out = _coupling_graph(force, z0)
            n = z0.numel()  # B * T * C
            total = out.new_zeros(())
            for k in range(self.probes):
                mv = self._products(out, z, v[k])
                total = total + mv.square().sum()
            penalty = total / (self.probes * n)
            raw = _param_grads(model, penalty) if self.weight > 0 else {}
        return _finish(self.weight, penalty.detach(), raw, {"probes": self.probes})

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "probes": self._probes.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_name(self.name, state)
        self._probes.load(state["probes"])
        self.weight = float(state["weight"])


def _jvp(out: Tensor, z: Tensor, v: Tensor) -> Tensor:
    """J v of out(z), differentiable (double backward: J v = d/du (J^T u) . v)."""
    u = torch.zeros_like(out, requires_grad=True)
    (jtu,) = torch.autograd.grad(out, z, u, create_graph=True)
    (jv,) = torch.autograd.grad(jtu, u, v, create_graph=True)
    return jv


class JacobianPenalty(_JacobianRegularizer):
    """||J_nc v||^2, J_nc = d(Attn + FFN)/dz at z0 (`force.coupling`), with an adaptive weight.

    Args:
        weight: initial weight (>= 0; with adaptive=True within [floor, cap]).
        adaptive: grow the weight by `up` after an observation whose free-phase residual (the
            batch maximum, the worst sample, as the validity gate) exceeds `target_residual`, shrink
            it by `down` otherwise, clamped to [floor, cap] (docs/physics.md sections 5 and 6). A
            non-finite residual counts as above target. False: a fixed weight (`observe` no-op).
        target_residual: free-phase force residual target (> 0; default 1e-3, docs/physics.md 5).
        up (> 1), down (in (0, 1)): multiplicative factors, see `DEFAULT_UP`, `DEFAULT_DOWN`.
        floor, cap: weight bounds, 0 < floor <= cap (defaults 0.1 and 16, docs/physics.md section
        5). probes: Rademacher probe vectors per call (>= 1).
        seed: of the probe generator (>= 0).

    Cost per call: one forward of Attn + FFN with its graph, per probe one double-backward J v,
    then one backward to the parameters through it (third order in the block's ops).
    `info` adds "probes".
    """

    name = "jacobian_penalty"

    def __init__(self, weight: float = 0.1, adaptive: bool = True, target_residual: float = 1e-3,
                 up: float = DEFAULT_UP, down: float = DEFAULT_DOWN, floor: float = 0.1,
                 cap: float = 16.0, probes: int = 1, seed: int = 0):
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be a bool, got {type(adaptive).__name__}")
        super().__init__(weight, probes, seed)
        self.adaptive = adaptive
        self.target_residual = _real("target_residual", target_residual, low=0.0, strict=True)
        self.up = _real("up", up, low=1.0, strict=True)
        self.down = _real("down", down, low=0.0, strict=True)
        if self.down >= 1.0:
            raise ValueError(f"down must be a finite real number in (0, 1), got {down}")
        self.floor = _real("floor", floor, low=0.0, strict=True)
        self.cap = _real("cap", cap, low=0.0, strict=True)
        if self.floor > self.cap:
            raise ValueError(f"floor must be <= cap, got floor={floor}, cap={cap}")
        if adaptive and not self.floor <= self.weight <= self.cap:
            raise ValueError(
                f"weight must be in [floor, cap] = [{self.floor:g}, {self.cap:g}] with "
                f"adaptive=True, got {weight}"
            )
        self.observations = 0
        self.grown = 0

    def _products(self, out: Tensor, z: Tensor, v: Tensor) -> Tensor:
        return _jvp(out, z, v)

    def observe(self, free_residual: Tensor) -> None:
        """One controller step (module docstring of the class); no-op when not adaptive."""
        r = _check_residual(free_residual)
        if not self.adaptive:
            return
        worst = float(r.max())  # NaN max -> NaN
        above = not worst <= self.target_residual  # NaN / inf count as above
        factor = self.up if above else self.down
        self.weight = min(self.cap, max(self.floor, self.weight * factor))
        self.observations += 1
        self.grown += int(above)

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out.update(observations=self.observations, grown=self.grown)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.observations = int(state.get("observations", 0))
        self.grown = int(state.get("grown", 0))

    def __repr__(self) -> str:
        ctrl = (f", target={self.target_residual:g}, up={self.up:g}, down={self.down:g}, "
                f"[{self.floor:g}, {self.cap:g}]") if self.adaptive else ""
        return f"JacobianPenalty(weight={self.weight:g}, adaptive={self.adaptive}{ctrl})"


class JacobianHomeostasis(_JacobianRegularizer):
    """||(J - J^T) v||^2 at z0 (Laborieux & Zenke 2024): penalises the antisymmetric part.

    J is the Jacobian of the full force; its leak is diagonal (also with per-node time constants),
    so J - J^T = J_nc - J_nc^T and the coupling's graph suffices. Per probe one J v (double
    backward) and one J^T v (backward), normalised as in the module docstring; fixed weight.

    Args: weight (>= 0), probes (>= 1), seed (>= 0).
    """

    name = "jacobian_homeostasis"

    def __init__(self, weight: float = 0.1, probes: int = 1, seed: int = 0):
        super().__init__(weight, probes, seed)

    def _products(self, out: Tensor, z: Tensor, v: Tensor) -> Tensor:
        (jtv,) = torch.autograd.grad(out, z, v, create_graph=True)
        return _jvp(out, z, v) - jtv

    def __repr__(self) -> str:
        return f"JacobianHomeostasis(weight={self.weight:g}, probes={self.probes})"


# ------------------------------------------------------------------------------------------------
# residual penalty

_STARTS = ("free", "input")


class ResidualPenalty(Regularizer):
    """(eps ||F(z_T)|| / ||z_T||)^2 at the deployed state z_T, mean over samples, with its
    gradient rescaled to `fraction` of the task-gradient norm (docs/physics.md section 5, "resreg").

    The deployed state. z_T is `steps` explicit-Euler steps z <- z + eps F(z) (the digital
    deployment of docs/physics.md section 1) from a start:
    * start="free" (default): the free-phase state z0 plus a short unroll (default 10 steps). At
      an Euler-stable fixed point the residual stays at z0's; near a fixed point that Euler cannot
      hold (eps > eps_crit, a stiff rotating mode) it grows like |1 + eps mu|^steps, so the
      penalty sees the discretization instability that the free settle (e.g. Anderson) hides.
      The gradient flows through the unroll; z0 itself is a constant.
    * start="input": the model's deployed start x_in / (1 + c) (with its graph to the embeddings,
      as BPTT), so steps = 150 is exactly the deployed T1 unroll (memory grows with steps).

    Scaling. With g_res the gradient of the unweighted penalty and g_task the trainer's task
    gradient (`task_grads`, required), the returned gradient is s g_res with
    s = fraction ||g_task|| / ||g_res|| (global 2-norms over all entries), so the penalty never
    dominates nor vanishes against the task: a constraint, not a competing objective. `weight`
    is the s of the last call (0 before the first), `value` = s * penalty; a zero g_res gives s = 0.

    Args: fraction (> 0), eps (> 0, the deployed Euler step), steps (>= 0), start.
    `info` adds "residual" ((batch,) force residual ||F(z_T)|| / ||z_T||), "scale", "raw_norm",
    "task_norm", "steps", "start".
    """

    name = "residual_penalty"

    def __init__(self, fraction: float = 0.1, eps: float = 0.1, steps: int = 10,
                 start: str = "free"):
        self.fraction = _real("fraction", fraction, low=0.0, strict=True)
        self.eps = _real("eps", eps, low=0.0, strict=True)
        self.steps = _int("steps", steps, 0)
        if not isinstance(start, str) or start not in _STARTS:
            raise ValueError(f"start must be one of {list(_STARTS)}, got {start!r}")
        self.start = start
        self.weight = 0.0

    def gradients(self, model: Any, inputs: Tensor, z0: Tensor,
                  task_grads: dict[str, Tensor] | None = None) -> RegularizerResult:
        if task_grads is None:
            raise ValueError(
                "ResidualPenalty needs task_grads (the task gradient dict): its gradient is "
                "rescaled to a fraction of the task-gradient norm"
            )
        if not isinstance(task_grads, dict) or not all(
                isinstance(g, Tensor) for g in task_grads.values()):
            raise TypeError("task_grads must be a dict {parameter name: gradient tensor}")
        with torch.enable_grad():
            force = model.force(inputs)
            z0 = _check_state(z0, force)
            z = force.x_in / force.leak if self.start == "input" else z0
            for _ in range(self.steps):
                z = z + self.eps * force(z)
            f = force(z)
            dims = tuple(range(1, z.ndim))
            g = torch.linalg.vector_norm(f, dim=dims) / torch.linalg.vector_norm(z, dim=dims)
            penalty = (self.eps * g).square().mean()
            raw = _param_grads(model, penalty)
        raw_norm = torch.sqrt(sum((r.detach().square().sum() for r in raw.values()),
                                  penalty.new_zeros(())))
        task_norm = torch.sqrt(sum((t.detach().to(penalty.dtype).square().sum()
                                    for t in task_grads.values()), penalty.new_zeros(())))
        rn, tn = float(raw_norm), float(task_norm)
        scale = self.fraction * tn / rn if rn > 0 and math.isfinite(rn) else 0.0
        if not math.isfinite(rn):
            scale = math.nan
        self.weight = scale
        info = {"residual": g.detach(), "scale": scale, "raw_norm": rn, "task_norm": tn,
                "steps": self.steps, "start": self.start}
        return _finish(scale, penalty.detach(), {k: r.detach() for k, r in raw.items()}, info)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}

    def __repr__(self) -> str:
        return (f"ResidualPenalty(fraction={self.fraction:g}, eps={self.eps:g}, "
                f"steps={self.steps}, start={self.start!r})")
