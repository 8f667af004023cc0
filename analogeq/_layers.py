"""Holomorphic-safe building blocks: one function per operation, for real and complex tensors.

Holomorphic EP (docs/physics.md section 5) evaluates the force at complex states, so every operation
of the block needs its *holomorphic extension*: the unique complex-analytic function that agrees
with the real one on real inputs. That rules out anything that conjugates or takes a modulus:

* LayerNorm / RMSNorm: mean of z, variance as mean((z - mu)^2) (not |z - mu|^2), principal sqrt;
* softmax: exp(x - m) / sum exp(x - m) with m = max(Re x), a real constant that cancels exactly
  (it only keeps exp from overflowing), so the result stays holomorphic in x;
* GELU in its tanh form (entire; erf-GELU would be a different function, docs/physics.md section 1);
* linear maps with real weights: x @ W^T with W cast to the complex dtype, never W^H.

Dispatch, and why. Each function takes PyTorch's own real kernel for real inputs (F.layer_norm,
F.rms_norm, torch.softmax, F.gelu(approximate="tanh"), the module's own forward) and the
conjugation-free formula for complex inputs. Real results are therefore bit-identical to the
standard real path (the extension changes nothing on the real line), the real path keeps the fused
kernels and their forward/double-backward rules that JVP-based estimators rely on, and the complex
formulas are checked against the real path by complex-step derivatives (tests/test_model.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm over the last dimension; holomorphic for complex x.

    Shapes: x (..., C); weight, bias (C,) real or None. Output like x.
    """
    if not x.is_complex():
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    mu = x.mean(dim=-1, keepdim=True)
    d = x - mu
    var = (d * d).mean(dim=-1, keepdim=True)  # (z - mu)^2, not |z - mu|^2: no conjugate
    y = d / torch.sqrt(var + eps)  # principal branch; equals the real sqrt on the real line
    if weight is not None:
        y = y * weight.to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """RMSNorm over the last dimension, x / sqrt(mean(x^2) + eps) * weight; holomorphic in x.

    Shapes: x (..., D); weight (D,) real or None. Output like x.
    """
    if not x.is_complex():
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    y = x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(x.dtype)
    return y


def softmax(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last dimension, entries where `mask` is False get probability exactly 0.

    Shapes: x (..., S); mask bool broadcastable to x (True = attend) or None. Every row must keep
    at least one entry (a causal mask always keeps the diagonal).
    """
    if not x.is_complex():
        if mask is not None:
            x = x.masked_fill(~mask, float("-inf"))
        return torch.softmax(x, dim=-1)
    re = x.real if mask is None else x.real.masked_fill(~mask, float("-inf"))
    # The shift cancels exactly in the ratio: detach it so no derivative flows through max(Re x),
    # which is not holomorphic (its contribution would be zero anyway).
    m = re.amax(dim=-1, keepdim=True).detach()
    if mask is None:
        e = torch.exp(x - m)
    else:
        # Masked entries are zeroed before exp (so they cannot overflow) and after (exactly 0).
        e = torch.where(mask, torch.exp(torch.where(mask, x - m, 0)), 0)
    return e / e.sum(dim=-1, keepdim=True)


def log_softmax(x: Tensor) -> Tensor:
    """log softmax over the last dimension: x - m - log(sum exp(x - m)); holomorphic for complex x.

    Shapes: x (..., K). Uses the principal branch of log for complex x.
    """
    if not x.is_complex():
        return torch.log_softmax(x, dim=-1)
    m = x.real.amax(dim=-1, keepdim=True).detach()
    s = x - m
    return s - torch.log(torch.exp(s).sum(dim=-1, keepdim=True))


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); entire, so holomorphic."""
    if not x.is_complex():
        return F.gelu(x, approximate="tanh")
    return 0.5 * x * (1 + torch.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x))))


def apply_linear(module: nn.Module, x: Tensor) -> Tensor:
    """Apply a linear map: the module's own forward for real x, x W^T + b for complex x.

    The complex path needs the effective real weights as `module.weight` (out, in) and
    `module.bias` (out,) or None (the nn.Linear convention). Shapes: x (..., in) -> (..., out).
    """
    if not x.is_complex():
        return module(x)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"{type(module).__name__} has no `weight` tensor: the complex (holomorphic) extension "
            "needs the effective weights of every linear map as `weight` (out, in) and `bias`"
        )
    bias = getattr(module, "bias", None)
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension (size `dim`), learned gain and bias; see `layer_norm`."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension (size `dim`) with a learned gain; see `rms_norm`."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


__all__ = [
    "layer_norm",
    "rms_norm",
    "softmax",
    "log_softmax",
    "gelu_tanh",
    "apply_linear",
    "LayerNorm",
    "RMSNorm",
]
