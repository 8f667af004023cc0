"""The equilibrium transformer block (docs/physics.md section 1): a force, its fixed point, a
readout.

There are no layers to unroll. The block's output is the fixed point z* of

    tau dz/dt = F(z) = x_in - (1 + c) z + Attn(LN_a z) + FFN(LN_f z)

with z, x_in of shape (batch, T, C), time in units of tau and z in the units of the embeddings.
`model.force(inputs)` binds F to its inputs as a force of the integrators' protocol (with the
leak/nonlinear split and `select`), `model.settle` finds z*, `model.readout` maps it to logits.

Weight-bearing linear maps are built in one place, `EquilibriumTransformer._linear` (and
`_embedding` for the lookup tables), under stable names (`attn.q`, `attn.k`, `attn.v`, `attn.o`,
`ffn.up`, `ffn.down`, `embed`, `pos`, `head`) so that a hardware configuration can place each one on
its own crossbar: with `hardware=HardwareConfig(...)` the `_linear` factory builds every linear map
on a crossbar and `force` returns the circuit's force (`analogeq.hardware`); the lookup tables stay
digital (they are the input drive x_in).

Every nonlinearity comes from `analogeq._layers`, so the force also accepts complex states: its
holomorphic extension (conjugation-free norms and softmax, tanh-GELU), which holomorphic EP needs.
Real states go through PyTorch's real kernels unchanged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import integrators
from ._layers import LayerNorm, RMSNorm, apply_linear, gelu_tanh, log_softmax, softmax
from .integrators import SettleResult

_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_POOLS = ("last", "mean")

LinearFactory = Callable[[str, int, int, bool], nn.Module]


# ------------------------------------------------------------------------------------------------
# configuration


def _int_field(name: str, value: Any, low: int, *, none_ok: bool = False, why: str = "") -> None:
    if value is None and none_ok:
        return
    allowed = f"an integer >= {low}" + (" or None" if none_ok else "") + why
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be {allowed}, got {value}")


def _float_field(name: str, value: Any, *, low: float, strict: bool) -> float:
    bound = f"> {low:g}" if strict else f">= {low:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite real number {bound}, got {type(value).__name__}")
    ok = math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{name} must be a finite real number {bound}, got {value}")
    return float(value)


def _bool_field(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and initialisation of an equilibrium transformer block. Validated on construction.

    Required:
        vocab_size: number of token ids (>= 1). Inputs are ids in [0, vocab_size) unless
            `input_dim` is set; the readout is over the vocabulary unless `n_classes` is set. May
            be None only when both `input_dim` and `n_classes` are set (it is then unused).
        d_model: channels C (>= 1, divisible by n_heads).
        n_heads: attention heads H (>= 1); head size C / H.
        context: largest sequence length T (>= 1); sets the size of the position table.

    Model:
        c: extra leak (>= 0): the state decays at rate 1 + c (docs/physics.md section 1: c = 1).
        qk_norm: RMSNorm (with learned gain) on each head's queries and keys: bounds the logits.
        ffn_mult: FFN width as a multiple of C (>= 1; default 4).
        n_classes: None -> language model (logits over the vocabulary); an int >= 2 -> per-token
            classification logits of that size.
        input_dim: None -> token ids through an embedding table; an int >= 1 -> continuous
            per-token features (batch, T, input_dim) through a linear input projection.
        causal: causal attention mask (token t attends to tokens <= t).
        bias: linear maps carry a bias.
        norm_eps: epsilon of every LayerNorm / RMSNorm (> 0).
        pool: how `loss` / `pooled_logits` turn per-token logits into one prediction per sequence
            when the targets have shape (batch,): "last" (the last token's logits: with a causal
            mask it is the only token that sees the whole sequence) or "mean" (over tokens).
        dtype: parameter dtype at construction (float16, bfloat16, float32, float64, or its
            name); `model.to(dtype)` may change it later, forces follow the parameters.

    Initialisation (see `EquilibriumTransformer.reset_parameters`):
        init_scale: gain of the branch output maps attn.o and ffn.down (> 0): weights
            N(0, init_scale^2 / fan_in). Small values make the relaxation contract (docs/physics.md
            section 6); the default is measured to settle fast (tests/test_model.py).
        embed_scale: per-entry std of x_in = token embedding + position embedding (> 0); each
            table starts at std embed_scale / sqrt(2) (and the feature projection maps
            unit-variance features to that std).
        attn_gain: multiplier of the attention logit scale 1 / sqrt(head size) (> 0).

    Contraction by construction (docs/physics.md section 5; `analogeq.contraction`):
        lipschitz_target: None (off, the default) or a bound L with 0 < L < 1 + c. The branch
            output maps attn.o and ffn.down are then rescaled (at initialisation and by
            `model.enforce_lipschitz()`, e.g. after every optimiser step) so that the provable
            global bound `analogeq.contraction.lipschitz_bound(model).L` is <= L: the force
            contracts at rate >= 1 + c - L everywhere. The global bound carries LayerNorm's and
            qk-norm's 1 / sqrt(norm_eps) (no variance floor), so with norm_eps = 1e-5 the
            couplings end up tiny; a larger norm_eps (e.g. 1.0) keeps them useful.
    """

    vocab_size: int | None
    d_model: int
    n_heads: int
    context: int
    c: float = 1.0
    qk_norm: bool = True
    ffn_mult: int = 4
    n_classes: int | None = None
    input_dim: int | None = None
    causal: bool = True
    bias: bool = True
    norm_eps: float = 1e-5
    pool: str = "last"
    init_scale: float = 0.5
    embed_scale: float = 1.0
    attn_gain: float = 1.0
    dtype: torch.dtype = torch.float32
    lipschitz_target: float | None = None

    def __post_init__(self) -> None:
        unused = self.input_dim is not None and self.n_classes is not None
        if self.vocab_size is None and not unused:
            raise ValueError(
                "vocab_size must be an integer >= 1; it may be None only when both input_dim "
                "(feature inputs) and n_classes (classification head) are set"
            )
        _int_field("vocab_size", self.vocab_size, 1, none_ok=unused)
        _int_field("d_model", self.d_model, 1)
        _int_field("n_heads", self.n_heads, 1)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={self.d_model}, "
                f"n_heads={self.n_heads}"
            )
        _int_field("context", self.context, 1)
        object.__setattr__(self, "c", _float_field("c", self.c, low=0.0, strict=False))
        _bool_field("qk_norm", self.qk_norm)
        _int_field("ffn_mult", self.ffn_mult, 1)
        _int_field("n_classes", self.n_classes, 2, none_ok=True)
        _int_field("input_dim", self.input_dim, 1, none_ok=True)
        _bool_field("causal", self.causal)
        _bool_field("bias", self.bias)
        object.__setattr__(
            self, "norm_eps", _float_field("norm_eps", self.norm_eps, low=0.0, strict=True)
        )
        if self.pool not in _POOLS:
            raise ValueError(f"pool must be one of {_POOLS}, got {self.pool!r}")
        for name in ("init_scale", "embed_scale", "attn_gain"):
            value = _float_field(name, getattr(self, name), low=0.0, strict=True)
            object.__setattr__(self, name, value)
        dtype = _DTYPES.get(self.dtype, self.dtype) if isinstance(self.dtype, str) else self.dtype
        if dtype not in _DTYPES.values():
            raise ValueError(
                f"dtype must be a real floating dtype ({', '.join(_DTYPES)}), got {self.dtype!r}"
            )
        object.__setattr__(self, "dtype", dtype)
        if self.lipschitz_target is not None:
            target = _float_field("lipschitz_target", self.lipschitz_target, low=0.0, strict=True)
            if target >= 1.0 + self.c:
                raise ValueError(
                    f"lipschitz_target must be < 1 + c = {1.0 + self.c:g} (a larger bound proves "
                    f"no contraction) or None, got {target}"
                )
            object.__setattr__(self, "lipschitz_target", target)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ffn(self) -> int:
        return self.ffn_mult * self.d_model

    @property
    def n_outputs(self) -> int:
        """Logits per token: n_classes, or vocab_size for a language model."""
        return self.n_classes if self.n_classes is not None else self.vocab_size  # type: ignore[return-value]

    @property
    def leak(self) -> float:
        """The linear decay rate 1 + c of the force."""
        return 1.0 + self.c

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (dtype as its name), e.g. for checkpoints; inverse of `from_dict`."""
        out = asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


# ------------------------------------------------------------------------------------------------
# the two branches


class Attention(nn.Module):
    """Multi-head self-attention with independent WQ, WK, WV, WO (non-conservative by design).

    Shapes: x (batch, T, C) -> (batch, T, C); mask (T, T) bool (True = attend) or None.
    Logits are (q . k) * attn_gain / sqrt(head size), after RMSNorm of q and k when qk_norm.
    """

    def __init__(self, config: ModelConfig, linear: LinearFactory):
        super().__init__()
        C = config.d_model
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.q = linear("q", C, C, config.bias)
        self.k = linear("k", C, C, config.bias)
        self.v = linear("v", C, C, config.bias)
        self.o = linear("o", C, C, config.bias)
        if config.qk_norm:
            self.q_norm: RMSNorm | None = RMSNorm(self.head_dim, config.norm_eps, config.dtype)
            self.k_norm: RMSNorm | None = RMSNorm(self.head_dim, config.norm_eps, config.dtype)
        else:
            self.q_norm = self.k_norm = None
        self.scale = config.attn_gain / math.sqrt(self.head_dim)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, dh)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        B, T, C = x.shape
        q = self._heads(apply_linear(self.q, x))
        k = self._heads(apply_linear(self.k, x))
        v = self._heads(apply_linear(self.v, x))
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # k.transpose, never k.mH: the complex extension must not conjugate.
        p = softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, mask)
        y = torch.matmul(p, v).transpose(1, 2).reshape(B, T, C)
        return apply_linear(self.o, y)


class FeedForward(nn.Module):
    """FFN(x) = W_down gelu_tanh(W_up x): (batch, T, C) -> (batch, T, C), hidden ffn_mult C."""

    def __init__(self, config: ModelConfig, linear: LinearFactory):
        super().__init__()
        self.up = linear("up", config.d_model, config.d_ffn, config.bias)
        self.down = linear("down", config.d_ffn, config.d_model, config.bias)

    def forward(self, x: Tensor) -> Tensor:
        return apply_linear(self.down, gelu_tanh(apply_linear(self.up, x)))


# ------------------------------------------------------------------------------------------------
# the force


class BlockForce:
    """The block's force bound to one batch of inputs: F(z) = -leak z + nonlinear(z).

    * `__call__(z)`: F(z) = x_in - (1 + c) z + Attn(LN_a z) + FFN(LN_f z), z of shape
      (batch, T, C); real z must have the model's dtype, complex z (any complex dtype) evaluates
      the holomorphic extension. Output: same shape and dtype as z, in state units per tau.
    * `leak` = 1 + c (float); `nonlinear(z)` = x_in + Attn(LN_a z) + FFN(LN_f z).
    * `attention(z)`, `ffn(z)`: the two branches; `coupling(z)` = their sum (the
      non-conservative part whose Jacobian regularisers penalise, docs/physics.md section 5).
    * `x_in` (batch, T, C): the input drive, recomputed from the model's current parameters on
      every access (so gradients with respect to the embeddings flow through every evaluation).
    * `select(index)`: the force on the samples `index` (1-D LongTensor).
    """

    def __init__(self, model: EquilibriumTransformer, inputs: Tensor):
        self.model = model
        self.inputs = inputs
        self.leak = model.config.leak
        self.shape = (inputs.shape[0], inputs.shape[1], model.config.d_model)
        self._dtype = model.dtype

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def x_in(self) -> Tensor:
        return self.model.embed_inputs(self.inputs)

    def _check(self, z: Tensor) -> None:
        if not isinstance(z, Tensor):
            raise TypeError(
                f"z must be a torch.Tensor of shape {self.shape}, got {type(z).__name__}"
            )
        if tuple(z.shape) != self.shape:
            raise ValueError(
                f"z must have shape (batch, T, C) = {self.shape}, got {tuple(z.shape)}"
            )
        if not z.is_complex() and z.dtype != self._dtype:
            raise TypeError(
                f"z has dtype {z.dtype}; a real state must have the model's dtype {self._dtype} "
                "(or pass a complex state for the holomorphic extension)"
            )

    def attention(self, z: Tensor) -> Tensor:
        """Attn(LN_a z), shape like z."""
        self._check(z)
        return self.model.attention_branch(z)

    def ffn(self, z: Tensor) -> Tensor:
        """FFN(LN_f z), shape like z."""
        self._check(z)
        return self.model.ffn_branch(z)

    def coupling(self, z: Tensor) -> Tensor:
        """Attn(LN_a z) + FFN(LN_f z) = nonlinear(z) - x_in, shape like z."""
        self._check(z)
        return self.model.attention_branch(z) + self.model.ffn_branch(z)

    def nonlinear(self, z: Tensor) -> Tensor:
        """N(z) = x_in + Attn(LN_a z) + FFN(LN_f z), shape like z."""
        self._check(z)
        return self.x_in + self.model.attention_branch(z) + self.model.ffn_branch(z)

    def __call__(self, z: Tensor) -> Tensor:
        # N - leak z is bit-for-bit -leak z + N (IEEE addition commutes): the split is exact.
        return self.nonlinear(z) - self.leak * z

    def select(self, index: Tensor) -> BlockForce:
        """The same force on the samples `index` (1-D integer tensor into this batch)."""
        return BlockForce(self.model, self.inputs.index_select(0, index.to(self.inputs.device)))

    def __repr__(self) -> str:
        return f"BlockForce(shape={self.shape}, leak={self.leak:g}, dtype={self._dtype})"


# ------------------------------------------------------------------------------------------------
# the model


def _check_hardware(hardware: Any) -> None:
    if hardware is None:
        return
    from .hardware import HardwareConfig  # imported here: hardware.py builds on this module

    if isinstance(hardware, HardwareConfig):
        return
    raise TypeError(
        "hardware must be an analogeq.hardware.HardwareConfig (e.g. HardwareConfig(device='pcm')) "
        f"or None (the ideal digital model), got {type(hardware).__name__} {hardware!r}"
    )


class EquilibriumTransformer(nn.Module):
    """An equilibrium transformer block: embeddings, the force, its fixed point, a readout.

    Args:
        config: a `ModelConfig`.
        hardware: None (the ideal digital model), or an `analogeq.hardware.HardwareConfig`: every
            linear map (or those in its `maps`) is built as a `HardwareLinear` on a crossbar of its
            device, programmed from the nominal weights at construction; the force becomes the
            circuit tau_i dz_i/dt = F_i(z) (`analogeq.hardware` documents every choice). Anything
            else is a TypeError.
        seed: initialise from a private generator seeded with this (an int, or a
            `torch.Generator`); None uses the global RNG. (The chip's random effects have their
            own seed, `HardwareConfig.seed`.)

    Modules (stable names, one crossbar each with hardware): `embed` (token table (vocab, C), or
    the feature projection input_dim -> C), `pos` (table (context, C)), `attn.q`, `attn.k`,
    `attn.v`, `attn.o` (C -> C), `ffn.up` (C -> ffn_mult C), `ffn.down`, `head` (C -> n_outputs);
    the digital norms `ln_attn`, `ln_ffn`, `ln_out`, `attn.q_norm`, `attn.k_norm`. Lookup tables
    stay digital with hardware: they are the input drive x_in.

    With hardware the nominal weights stay `nn.Parameter`s under the same names (training updates
    them); after changing them call `program()` to write them to the crossbars again.
    """

    causal_mask: Tensor

    def __init__(
        self,
        config: ModelConfig,
        hardware: Any = None,
        *,
        seed: int | torch.Generator | None = None,
    ):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        _check_hardware(hardware)
        super().__init__()
        self.config = config
        self.hardware = hardware
        self._hardware_state: Any = None
        if hardware is not None:
            from .hardware import HardwareState

            self._hardware_state = HardwareState(hardware)
        self._linear_names: list[str] = []
        self._embedding_names: list[str] = []
        C, dt, eps = config.d_model, config.dtype, config.norm_eps

        if config.input_dim is None:
            self.embed = self._embedding("embed", config.vocab_size, C)  # type: ignore[arg-type]
        else:
            self.embed = self._linear("embed", config.input_dim, C, config.bias)
        self.pos = self._embedding("pos", config.context, C)
        self.ln_attn = LayerNorm(C, eps, dt)
        self.ln_ffn = LayerNorm(C, eps, dt)
        self.attn = Attention(config, self._scoped("attn"))
        self.ffn = FeedForward(config, self._scoped("ffn"))
        self.ln_out = LayerNorm(C, eps, dt)
        self.head = self._linear("head", C, config.n_outputs, config.bias)
        mask = torch.ones(config.context, config.context, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", mask, persistent=False)
        self.reset_parameters(seed)
        if hardware is not None:
            from .hardware import attach

            attach(self)  # node time constants, then program the crossbars from the weights

    # -- the one place where weight-bearing maps are made -----------------------------------------
    def _linear(self, name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        """A linear map in_features -> out_features registered as `name` (its module path).

        With a `HardwareConfig` that places `name`, an `analogeq.hardware.HardwareLinear` (its
        nominal `weight`/`bias` parameters plus the crossbar); otherwise an `nn.Linear`. The
        returned module maps (..., in) -> (..., out) and exposes `weight` (out, in) and `bias`
        for the complex extension.
        """
        self._linear_names.append(name)
        if self.hardware is not None and self.hardware.places(name):
            from .hardware import make_linear

            return make_linear(self, name, in_features, out_features, bias)
        return nn.Linear(in_features, out_features, bias=bias, dtype=self.config.dtype)

    def _embedding(self, name: str, num: int, dim: int) -> nn.Module:
        """A lookup table (num, dim) registered as `name`: (...) integer ids -> (..., dim)."""
        self._embedding_names.append(name)
        return nn.Embedding(num, dim, dtype=self.config.dtype)

    def _scoped(self, prefix: str) -> LinearFactory:
        return lambda name, i, o, b: self._linear(f"{prefix}.{name}", i, o, b)

    def linear_layers(self) -> dict[str, nn.Module]:
        """The weight-bearing linear maps by stable name, in construction order."""
        return {name: self.get_submodule(name) for name in self._linear_names}

    def embedding_tables(self) -> dict[str, nn.Module]:
        """The lookup tables (`embed` for token inputs, `pos`) by stable name."""
        return {name: self.get_submodule(name) for name in self._embedding_names}

    # -- initialisation --------------------------------------------------------------------------
    def _init_std(self, name: str, fan_in: int) -> float:
        cfg = self.config
        if name in ("attn.o", "ffn.down"):
            gain = cfg.init_scale  # the couplings: small enough that the relaxation contracts
        elif name == "embed":
            gain = cfg.embed_scale / math.sqrt(2.0)  # x_in = embed + pos has std embed_scale
        else:
            gain = 1.0  # q, k, v, up, head: variance-preserving
        return gain / math.sqrt(fan_in)

    def reset_parameters(self, seed: int | torch.Generator | None = None) -> None:
        """(Re)initialise every parameter.

        Scheme (docs/physics.md section 6: start couplings small enough that the relaxation
        contracts):
        * tables `embed`, `pos`: N(0, embed_scale^2 / 2), so x_in has per-entry std embed_scale
          and the decoupled fixed point x_in / (1 + c) is well away from 0 (LayerNorm's Jacobian
          scales like 1 / std(z));
        * feature projection `embed`: N(0, embed_scale^2 / (2 input_dim));
        * `attn.q`, `attn.k`, `attn.v`, `ffn.up`, `head`: N(0, 1 / fan_in);
        * `attn.o`, `ffn.down`: N(0, init_scale^2 / fan_in): the branch gains;
        * biases 0; norm gains 1, norm biases 0.
        """
        if seed is None or isinstance(seed, torch.Generator):
            gen = seed
        elif isinstance(seed, int) and not isinstance(seed, bool):
            gen = torch.Generator(device=self.causal_mask.device).manual_seed(seed)
        else:
            raise TypeError(
                f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}"
            )
        with torch.no_grad():
            for table in self.embedding_tables().values():
                nn.init.normal_(table.weight, 0.0, self.config.embed_scale / math.sqrt(2.0), gen)
            for name, lin in self.linear_layers().items():
                nn.init.normal_(lin.weight, 0.0, self._init_std(name, lin.weight.shape[1]), gen)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            for module in self.modules():
                if isinstance(module, LayerNorm | RMSNorm):
                    nn.init.ones_(module.weight)
                    if isinstance(module, LayerNorm):
                        nn.init.zeros_(module.bias)
        if self.config.lipschitz_target is not None:
            self._project_lipschitz()

    # -- contraction by construction -----------------------------------------------------------
    def lipschitz_bound(self, **options: Any) -> Any:
        """`analogeq.contraction.lipschitz_bound(self, **options)`: a provable bound on Lip(N)."""
        from .contraction import lipschitz_bound

        return lipschitz_bound(self, **options)

    @torch.no_grad()
    def _project_lipschitz(self) -> Any:
        from .contraction import lipschitz_bound

        target = self.config.lipschitz_target
        bound = lipschitz_bound(self, weights="nominal")
        if bound.L > target:  # type: ignore[operator]
            # Both terms of the bound are linear in ||W_o|| resp. ||W_down||: one common factor
            # brings it to the target (with a margin for the rounding of the rescaled weights).
            factor = target / bound.L * (1.0 - 1e-5)  # type: ignore[operator]
            for name in ("attn.o", "ffn.down"):
                self.get_submodule(name).weight.mul_(factor)
            bound = lipschitz_bound(self, weights="nominal")
        return bound

    def enforce_lipschitz(self) -> Any:
        """Contraction by construction: rescale attn.o and ffn.down so that the global bound on
        Lip(N) is <= `config.lipschitz_target` (nothing changes when it already is), reprogram
        the crossbars of a hardware model, and return the nominal-weight `Bound`. Call it after
        every optimiser step. Needs `config.lipschitz_target`."""
        if self.config.lipschitz_target is None:
            raise ValueError(
                "enforce_lipschitz() needs ModelConfig(lipschitz_target=L) with 0 < L < 1 + c"
            )
        bound = self._project_lipschitz()
        if self.hardware is not None:
            self.program()
        return bound

    # -- properties ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The parameters' (real) dtype: states, x_in and logits follow it."""
        return self.ln_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.ln_out.weight.device

    # -- hardware ---------------------------------------------------------------------------------
    def _require_hardware(self, what: str) -> None:
        if self.hardware is None:
            raise ValueError(
                f"{what} needs a hardware model: build it with "
                "EquilibriumTransformer(config, hardware=HardwareConfig(...))"
            )

    @property
    def hardware_seed(self) -> int | None:
        """The seed of the chip's master generator (None for the digital model)."""
        return None if self._hardware_state is None else self._hardware_state.seed

    def crossbars(self) -> dict[str, nn.Module]:
        """The `circuits.AnalogLinear` of every map on a crossbar, by stable name ({} digital)."""
        from .hardware import hardware_layers

        if self.hardware is None:
            return {}
        return {name: layer.analog for name, layer in hardware_layers(self).items()}

    def program(self, calibration: Tensor | None = None) -> None:
        """(Re)program every crossbar from the nominal weights (a new programming event, with new
        programming errors from each crossbar's seeded stream), drift to `drift_time`, and
        calibrate the converter bounds on `calibration` inputs (None: seeded random ones)."""
        self._require_hardware("program()")
        from .hardware import program

        program(self, calibration)

    def drift(self, t_seconds: float) -> None:
        """Read the chip `t_seconds` after programming: every crossbar's conductances drift to
        that age (>= the current one; re-`program` to start over)."""
        self._require_hardware("drift()")
        from .hardware import drift

        drift(self, t_seconds)

    def resample_read_noise(self) -> None:
        """A new frozen ("quenched") or stationary ("ou") read-noise draw on every crossbar."""
        self._require_hardware("resample_read_noise()")
        from .hardware import resample_read_noise

        resample_read_noise(self)

    # -- inputs ----------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Any) -> Tensor:
        cfg = self.config
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
        if cfg.input_dim is None:
            if inputs.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"token ids must be an int64 or int32 tensor, got {inputs.dtype}")
            if inputs.ndim != 2:
                raise ValueError(f"token ids must have shape (batch, T), got {tuple(inputs.shape)}")
        else:
            if not inputs.is_floating_point():
                raise TypeError(f"features must be a real floating tensor, got {inputs.dtype}")
            if inputs.ndim != 3 or inputs.shape[2] != cfg.input_dim:
                raise ValueError(
                    f"features must have shape (batch, T, input_dim={cfg.input_dim}), got "
                    f"{tuple(inputs.shape)}"
                )
        if inputs.shape[0] < 1 or not 1 <= inputs.shape[1] <= cfg.context:
            raise ValueError(
                f"inputs must have batch >= 1 and 1 <= T <= context={cfg.context}, got shape "
                f"{tuple(inputs.shape)}"
            )
        if cfg.input_dim is None:
            inputs = inputs.to(self.device)
            # One host sync per bound force (not per evaluation): ids out of range fail here, by
            # name, rather than as an index error (or a device assert) inside the settle loop.
            if bool(((inputs < 0) | (inputs >= cfg.vocab_size)).any()):  # type: ignore[operator]
                raise ValueError(f"token ids must be in [0, vocab_size={cfg.vocab_size})")
            return inputs
        inputs = inputs.to(device=self.device, dtype=self.dtype)
        if not bool(torch.isfinite(inputs).all()):
            raise ValueError("features must be finite (they hold NaN or inf)")
        return inputs

    def embed_inputs(self, inputs: Tensor) -> Tensor:
        """x_in = embed(inputs) + pos[:T], shape (batch, T, C), the model's dtype.

        `inputs`: token ids (batch, T) or features (batch, T, input_dim), already checked (use
        `force(inputs).x_in` for unchecked inputs).
        """
        # The token table and the feature projection are both called as modules: (..., ) ids or
        # (..., input_dim) features -> (..., C).
        positions = torch.arange(inputs.shape[1], device=inputs.device)
        return self.embed(inputs) + self.pos(positions)

    # -- the force -------------------------------------------------------------------------------
    def attention_branch(self, z: Tensor) -> Tensor:
        """Attn(LN_a z) on z of shape (batch, T, C), real or complex."""
        T = z.shape[1]
        mask = self.causal_mask[:T, :T] if self.config.causal else None
        return self.attn(self.ln_attn(z), mask)

    def ffn_branch(self, z: Tensor) -> Tensor:
        """FFN(LN_f z) on z of shape (batch, T, C), real or complex."""
        return self.ffn(self.ln_ffn(z))

    def force(self, inputs: Tensor) -> BlockForce:
        """The block's force bound to `inputs` (token ids (batch, T), or features
        (batch, T, input_dim) when `config.input_dim` is set); states have shape (batch, T, C).

        With hardware: an `analogeq.hardware.HardwareForce`, F / r in units of the mean tau (the
        per-node time constants r; same fixed points), read through the crossbars."""
        if self.hardware is not None:
            from .hardware import HardwareForce

            return HardwareForce(self, self._check_inputs(inputs))
        return BlockForce(self, self._check_inputs(inputs))

    def initial_state(self, force: BlockForce, z0: Tensor | str | None = None) -> Tensor:
        """The starting state for a settle, shape (batch, T, C).

        * None or "input": x_in / (1 + c), the fixed point of the decoupled block (attention and
          FFN switched off). For the small initial couplings it is already close to z*, and it
          keeps LayerNorm away from z = 0, where its Jacobian ~ 1 / sqrt(norm_eps) is huge and
          the force residual ||F|| / ||z|| is undefined.
        * "zeros": the physical start of a circuit with discharged node capacitors.
        * a tensor of shape (batch, T, C): used as given (real with the model's dtype, or complex).
        """
        if z0 is None or (isinstance(z0, str) and z0 == "input"):
            with torch.no_grad():
                return force.x_in / force.leak
        if isinstance(z0, str) and z0 == "zeros":
            return torch.zeros(force.shape, dtype=force._dtype, device=self.device)
        if isinstance(z0, Tensor):
            force._check(z0)
            return z0
        raise TypeError(
            f"z0 must be None, 'input', 'zeros' or a tensor of shape {force.shape}, got {z0!r}"
        )

    def settle(
        self,
        inputs: Tensor,
        method: str | integrators.Integrator = "anderson",
        z0: Tensor | str | None = None,
        *,
        tol: float = 1e-6,
        max_steps: int | None = None,
        **options: Any,
    ) -> SettleResult:
        """Settle the block on `inputs` to its fixed point with `analogeq.integrators.settle`.

        Args:
            inputs: token ids (batch, T) or features (batch, T, input_dim).
            method: an integrator name or instance (see `analogeq.integrators.settle`).
            z0: starting state (see `initial_state`; default x_in / (1 + c)).
            tol: force-residual tolerance ||F(z)|| / ||z|| per sample (> 0).
            max_steps: loop iterations; default the method's own.
            **options: the method's options (e.g. eps) and the loop's. With hardware also
                `resample_read_noise` (bool, default True: a new frozen / stationary read-noise
                draw before settling); with read_noise "ou" the method must be
                "euler-maruyama" (the hardware force gives its sigma).

        Returns:
            The `SettleResult`; `z` has shape (batch, T, C) and carries no autograd graph. With
            hardware `info` adds `settling_time_s` (batch,) = t * tau (None for root-finders),
            `energy_j` (batch,) joules dissipated in the crossbars during the settle (None for
            root-finders), `power_w` (batch,) at the end, `tau_s`, `read_noise`.
        """
        force = self.force(inputs)
        start = self.initial_state(force, z0)
        if self.hardware is not None:
            from .hardware import settle_on_hardware

            return settle_on_hardware(self, force, start, method, tol=tol,  # type: ignore[arg-type]
                                      max_steps=max_steps, **options)
        return integrators.settle(force, start, method, tol=tol, max_steps=max_steps, **options)

    # -- readout and loss ------------------------------------------------------------------------
    def readout(self, z: Tensor) -> Tensor:
        """Per-token logits W_out LN_out(z): z (batch, T, C) -> (batch, T, n_outputs).

        Real z gives real logits; complex z the holomorphic extension.
        """
        if not isinstance(z, Tensor) or z.ndim != 3 or z.shape[2] != self.config.d_model:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (batch, T, C={self.config.d_model}), got {shape}")
        return apply_linear(self.head, self.ln_out(z))

    def pooled_logits(self, logits: Tensor) -> Tensor:
        """One prediction per sequence, (batch, T, K) -> (batch, K), by `config.pool`."""
        if self.config.pool == "last":
            return logits[:, -1]
        return logits.mean(dim=1)

    def loss(self, z: Tensor, targets: Tensor, *, ignore_index: int = -100) -> Tensor:
        """Mean cross entropy of the readout at state z (a scalar, in nats).

        Args:
            z: state (batch, T, C), normally the settled z*; complex z gives the holomorphic
                extension of the loss (principal log).
            targets: int64 class ids, either (batch, T) per token (the mean runs over every
                non-ignored token of the batch), or (batch,) per sequence, scored on
                `pooled_logits` (config.pool). Values in [0, n_outputs) or `ignore_index`.
            ignore_index: target value that contributes nothing; at least one target must differ.
        """
        logits = self.readout(z)
        if not isinstance(targets, Tensor) or targets.dtype != torch.int64:
            got = targets.dtype if isinstance(targets, Tensor) else type(targets).__name__
            raise TypeError(f"targets must be an int64 tensor, got {got}")
        B, T = logits.shape[:2]
        if tuple(targets.shape) == (B, T):
            logits, targets = logits.reshape(B * T, -1), targets.reshape(B * T)
        elif tuple(targets.shape) == (B,):
            logits = self.pooled_logits(logits)
        else:
            raise ValueError(
                f"targets must have shape (batch, T) = {(B, T)} or (batch,) = {(B,)}, got "
                f"{tuple(targets.shape)}"
            )
        targets = targets.to(logits.device)
        keep = targets != ignore_index
        n_out = self.config.n_outputs
        bad = keep & ((targets < 0) | (targets >= n_out))
        any_bad, none_kept = torch.stack((bad.any(), ~keep.any())).tolist()  # one host sync
        if any_bad:
            raise ValueError(
                f"targets must be in [0, n_outputs={n_out}) or equal ignore_index={ignore_index}"
            )
        if none_kept:
            raise ValueError(
                f"every target equals ignore_index={ignore_index}: the mean is undefined"
            )
        if not logits.is_complex():
            return F.cross_entropy(logits, targets, ignore_index=ignore_index)
        nll = -log_softmax(logits).gather(-1, torch.where(keep, targets, 0)[:, None])[:, 0]
        return torch.where(keep, nll, 0).sum() / keep.sum()

    def forward(
        self,
        inputs: Tensor,
        method: str | integrators.Integrator = "anderson",
        **settle_options: Any,
    ) -> Tensor:
        """settle + readout: logits (batch, T, n_outputs) at the settled state.

        The state carries no graph (gradients reach only the readout). A settle that does not
        converge gives a RuntimeWarning with its status and residual; use `settle` and `readout`
        to see the `SettleResult` itself.
        """
        result = self.settle(inputs, method, **settle_options)
        if not result.converged:
            warnings.warn(
                f"settle did not converge: {result.summary()}", RuntimeWarning, stacklevel=2
            )
        return self.readout(result.z)

    def extra_repr(self) -> str:
        cfg = self.config
        hw = "" if self.hardware is None else f", hardware={self.hardware.device.name!r}"
        return (
            f"C={cfg.d_model}, H={cfg.n_heads}, context={cfg.context}, c={cfg.c:g}, "
            f"dtype={self.dtype}{hw}"
        )


__all__ = ["ModelConfig", "EquilibriumTransformer", "BlockForce", "Attention", "FeedForward"]
