"""Operators for the settle benchmark: the same force objects for every method, ours and the peers'.

Each operator is a force in the integrators' protocol (docs/design.md): callable F(z) -> dz/dt on a
state of shape (batch, ...), with the split F(z) = -leak * z + nonlinear(z) and `select(index)` (so
settled samples stop costing evaluations). They are deliberately defined here, not imported from
`analogeq`, so that the benchmark measures a fixed workload while the model code evolves.

* `TransformerBlock`: a random equilibrium-transformer block (docs/physics.md section 1),
      F(z) = x_in - 2 z + Attn(LN z) + FFN(LN z),
  causal multi-head attention with independent WQ, WK, WV, WO and RMS-normalised q and k
  ("qk-norm"), a 4x FFN with tanh-GELU, one parameter-free LayerNorm feeding both branches. The
  attention output is scaled by `gain` (gain 1: easy; gain 3: a harder but still stable root; see
  `spectrum` and the calibration in BENCHMARKS.md).
* `SaturatingRotor`: F(z) = R tanh(z - c), R = [[-a, -b], [b, -a]], a batch of independent 2-D
  rotors with per-sample centres c. With a = 1, b = 5 Euler's eps_crit = 2a / (a^2 + b^2) = 0.077,
  so explicit Euler at the usual eps 0.1 cycles although the continuous system settles.
* `StiffLinear`: F(z) = A (z - z*), A = -Q diag(lambda) Q^T with lambda log-spaced from 1 to 1000
  (per-sample fixed point z* != 0).

`spectrum(force, z)` estimates the Jacobian's leading eigenvalues of one sample, matrix-free
(central differences in float64 + ARPACK), to calibrate the block's gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as Fn
from torch import Tensor

from analogeq.systems import StiffLinear  # the same stiff operator the CLI and tests use


def _normal(g: torch.Generator, *shape: int, std: float, dtype: torch.dtype) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64).mul_(std).to(dtype)


class TransformerBlock:
    """A random equilibrium-transformer block bound to its inputs x_in; states (batch, T, C).

    Weights (shared by the batch) are Gaussian with fan-in scaling: WQ, WK, WV ~ N(0, 1/C);
    WO ~ N(0, (attn_scale * gain)^2 / C); W1 ~ N(0, 1/C); W2 ~ N(0, ffn_scale^2 / (4C)). x_in is
    Gaussian with unit variance per entry (batch, T, C). leak = 1 + c = 2.

    Args:
        batch, tokens, channels, heads: shape of the state (batch, tokens, channels); channels must
            be divisible by heads.
        gain: attention gain, multiplies WO (the knob that drives Hopf-type instabilities).
        attn_scale, ffn_scale: init scales of the two branches at gain 1.
        seed: seeds weights and x_in (bit-for-bit repeatable on CPU).
        dtype: float32 (default) or float64.
    """

    def __init__(self, batch: int = 8, tokens: int = 64, channels: int = 128, heads: int = 4,
                 gain: float = 1.0, attn_scale: float = 1.0, ffn_scale: float = 1.0,
                 c: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float32):
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        g = torch.Generator().manual_seed(seed)
        C = channels
        self.heads, self.head_dim = heads, C // heads
        self.gain = float(gain)
        self.attn_scale, self.ffn_scale = float(attn_scale), float(ffn_scale)
        # WQ, WK, WV are independent matrices, stored side by side so one matmul computes q, k, v.
        self.w_qkv = _normal(g, C, 3 * C, std=1 / math.sqrt(C), dtype=dtype)
        self.w_o = _normal(g, C, C, std=attn_scale * gain / math.sqrt(C), dtype=dtype)
        self.w_1 = _normal(g, C, 4 * C, std=1 / math.sqrt(C), dtype=dtype)
        self.w_2 = _normal(g, 4 * C, C, std=ffn_scale / math.sqrt(4 * C), dtype=dtype)
        self.x_in = _normal(g, batch, tokens, C, std=1.0, dtype=dtype)
        self.leak = 1.0 + float(c)

    def nonlinear(self, z: Tensor) -> Tensor:
        """N(z) = x_in + Attn(LN z) + FFN(LN z)."""
        B, T, C = z.shape
        h = Fn.layer_norm(z, (C,))
        q, k, v = (h @ self.w_qkv).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = Fn.rms_norm(q, (self.head_dim,))
        k = Fn.rms_norm(k, (self.head_dim,))
        # Written out (not scaled_dot_product_attention): its CPU kernel has no forward-mode AD,
        # which the implicit method's JVPs need; at T = 64 the explicit form costs about the same.
        logits = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
        logits = logits.masked_fill(self._causal(T, z.device), float("-inf"))
        a = torch.softmax(logits, dim=-1) @ v
        attn = a.transpose(1, 2).reshape(B, T, C) @ self.w_o
        ffn = Fn.gelu(h @ self.w_1, approximate="tanh") @ self.w_2
        return self.x_in + attn + ffn

    def _causal(self, T: int, device: torch.device) -> Tensor:
        mask = self.__dict__.get("_mask")
        if mask is None or mask.shape[0] != T or mask.device != device:
            mask = torch.ones(T, T, dtype=torch.bool, device=device).triu(1)
            self._mask = mask
        return mask

    def __call__(self, z: Tensor) -> Tensor:
        return self.nonlinear(z) - self.leak * z

    def select(self, index: Tensor) -> TransformerBlock:
        out = TransformerBlock.__new__(TransformerBlock)
        out.__dict__.update(self.__dict__)
        out.x_in = self.x_in.index_select(0, index.to(self.x_in.device))
        return out

    def to(self, dtype: torch.dtype) -> TransformerBlock:
        out = TransformerBlock.__new__(TransformerBlock)
        out.__dict__.update(self.__dict__)
        for name in ("w_qkv", "w_o", "w_1", "w_2", "x_in"):
            setattr(out, name, getattr(self, name).to(dtype))
        return out

    def initial_state(self) -> Tensor:
        return torch.zeros_like(self.x_in)


class SaturatingRotor:
    """F(z) = R tanh(z - c_i), R = [[-a, -b], [b, -a]], states (batch, 2), float64.

    The Jacobian at the fixed point z* = c_i is R (eigenvalues -a +- ib). Split: leak = a,
    N(z) = F(z) + a z (exact for any leak).
    """

    def __init__(self, batch: int = 256, a: float = 1.0, b: float = 5.0, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = float(a), float(b)
        self.R_T = torch.tensor([[-a, -b], [b, -a]], dtype=dtype).T.contiguous()
        self.centre = (1.0 + torch.rand(batch, 2, generator=g, dtype=torch.float64)).to(dtype)
        self.offset = torch.randn(batch, 2, generator=g, dtype=torch.float64).to(dtype)
        self.leak = self.a

    @property
    def eps_crit(self) -> float:
        return 2 * self.a / (self.a**2 + self.b**2)

    def __call__(self, z: Tensor) -> Tensor:
        return torch.tanh(z - self.centre) @ self.R_T

    def nonlinear(self, z: Tensor) -> Tensor:
        return self(z) + self.leak * z

    def select(self, index: Tensor) -> SaturatingRotor:
        out = SaturatingRotor.__new__(SaturatingRotor)
        out.__dict__.update(self.__dict__)
        out.centre = self.centre.index_select(0, index.to(self.centre.device))
        return out

    def initial_state(self) -> Tensor:
        return self.centre + self.offset


@dataclass
class Operator:
    """A benchmark operator: the force, the initial state and a description for the tables."""

    name: str
    force: Any
    z0: Tensor
    description: str
    params: dict[str, Any] = field(default_factory=dict)


# Branch scales of the block at gain 1, chosen by measurement (BENCHMARKS.md, calibration).
BLOCK_ATTN_SCALE = 0.67
BLOCK_FFN_SCALE = 1.0


def block_operator(gain: float, *, batch: int = 8, tokens: int = 64, channels: int = 128,
                   heads: int = 4, seed: int = 0) -> Operator:
    force = TransformerBlock(batch=batch, tokens=tokens, channels=channels, heads=heads, gain=gain,
                             attn_scale=BLOCK_ATTN_SCALE, ffn_scale=BLOCK_FFN_SCALE, seed=seed)
    params = dict(batch=batch, tokens=tokens, channels=channels, heads=heads, gain=gain,
                  attn_scale=BLOCK_ATTN_SCALE, ffn_scale=BLOCK_FFN_SCALE, leak=force.leak,
                  dtype="float32", seed=seed, z0="zeros")
    desc = f"transformer block B{batch} T{tokens} C{channels} H{heads}, attention gain {gain:g}"
    return Operator(f"block-g{gain:g}", force, force.initial_state(), desc, params)


def rotor_operator(*, batch: int = 256, a: float = 1.0, b: float = 5.0, seed: int = 0) -> Operator:
    force = SaturatingRotor(batch=batch, a=a, b=b, seed=seed)
    params = dict(batch=batch, a=a, b=b, eps_crit=force.eps_crit, leak=force.leak,
                  dtype="float64", seed=seed, z0="centre + N(0, 1)")
    desc = f"saturating rotor x{batch}, a {a:g} b {b:g} (Euler eps_crit {force.eps_crit:.3f})"
    return Operator("rotor", force, force.initial_state(), desc, params)


def stiff_operator(*, batch: int = 8, n: int = 64, stiffness: float = 1000.0,
                   seed: int = 0) -> Operator:
    force = StiffLinear(batch=batch, n=n, stiffness=stiffness, seed=seed)
    params = dict(batch=batch, n=n, eigenvalues=f"-1 .. -{stiffness:g} (log-spaced)",
                  leak=force.leak, dtype="float64", seed=seed, z0="zeros")
    desc = f"stiff linear x{batch}, n {n}, eigenvalues -1 .. -{stiffness:g}"
    return Operator("stiff", force, force.initial_state(), desc, params)


def operators(quick: bool = False) -> list[Operator]:
    """The benchmark's operators; `quick` keeps 2 samples of the block (the first two of the full
    batch: same weights, same x_in rows) and fewer rotors, for debugging (not for reporting)."""
    shape = dict(batch=2) if quick else {}
    return [
        block_operator(1.0, **shape),
        block_operator(3.0, **shape),
        rotor_operator(batch=32 if quick else 256),
        stiff_operator(),
    ]


def spectrum(force: Any, z: Tensor, *, k: int = 6, sample: int = 0) -> dict[str, Any]:
    """Leading Jacobian eigenvalues of one sample at z, matrix-free (float64 central differences).

    Returns the k eigenvalues of largest real part (`LR`) and of largest magnitude (`LM`) of
    J = dF/dz, the spectral radius of the DEQ map z -> N(z)/leak (rho = max |1 + mu/leak|, Picard
    converges iff rho < 1), and explicit Euler's eps_crit = min -2 Re mu / |mu|^2 over the computed
    eigenvalues (an upper bound on the true eps_crit).
    """
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigs

    f64 = force.to(torch.float64) if hasattr(force, "to") else force
    one = f64.select(torch.tensor([sample]))
    z1 = z[sample : sample + 1].to(torch.float64)
    shape, n = z1.shape, z1.numel()
    zn = float(z1.norm())
    leak = float(f64.leak)

    def jv(v: np.ndarray, shift: float = 0.0) -> np.ndarray:
        vt = torch.from_numpy(np.ascontiguousarray(v.real)).view(shape)
        h = 1e-6 * zn / max(float(vt.norm()), 1e-300)
        with torch.no_grad():
            d = (one(z1 + h * vt) - one(z1 - h * vt)) / (2 * h)
        return (d.reshape(-1) + shift * vt.reshape(-1)).numpy()

    def eig(which: str, shift: float = 0.0) -> np.ndarray:
        op = LinearOperator((n, n), matvec=lambda v: jv(v, shift), dtype=np.float64)
        vals = eigs(op, k=k, which=which, ncv=max(4 * k, 40), tol=1e-6, maxiter=5000,
                    return_eigenvectors=False)
        return vals - shift

    lr = eig("LR")
    lm = eig("LM")
    # The DEQ map's Jacobian is I + J/leak; its spectral radius is max |leak + mu| / leak.
    deq = eig("LM", shift=leak)
    everything = np.concatenate([lr, lm, deq])
    stable = everything[everything.real < 0]
    eps_crit = float(np.min(-2 * stable.real / np.abs(stable) ** 2)) if stable.size else 0.0

    def fmt(vals: np.ndarray) -> list[list[float]]:
        vals = sorted(vals, key=lambda c: -c.real)
        return [[round(float(c.real), 4), round(float(c.imag), 4)] for c in vals]

    return {
        "leading_LR": fmt(lr),
        "largest_LM": fmt(sorted(lm, key=lambda c: -abs(c))),
        "max_re": float(np.max(everything.real)),
        "max_abs": float(np.max(np.abs(everything))),
        "deq_map_radius": float(np.max(np.abs(leak + deq)) / leak),
        "euler_eps_crit_bound": eps_crit,
    }
