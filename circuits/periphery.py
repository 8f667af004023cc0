"""Periphery of a crossbar: DAC on the inputs, amplifier and ADC on the outputs.

All three are torch modules acting elementwise on tensors of any shape (a leading batch dimension
is kept as is). They work on normalized signals: a DAC's input and an ADC's output are in the units
of the layer's inputs and outputs (W x), with `bound` the full-scale value; the physical scale
(volts per unit input, amperes per unit output) is a fixed factor that cancels and is not modelled.

Level scheme (DAC and ADC): L = max(2^bits - 1, 2) uniformly spaced levels over [-bound, bound],
step = 2 bound / (L - 1).
* bits >= 2: L = 2^bits - 1 is odd, the levels are symmetric and include 0 exactly (the sign-
  magnitude code of a b-bit converter: one of the 2^bits codes, "-0", is unused), step =
  bound / (2^(bits-1) - 1).
* bits = 1: L = 2, the levels are {-bound, +bound} (a sign quantizer).
Inputs are clipped to [-bound, bound] first (saturation); inside the range the nearest-rounding
error is at most step / 2. Stochastic rounding rounds up with probability equal to the fractional
position between the two neighbouring levels, so E[q(x)] = x exactly inside the range.

Gradients: quantizers use the straight-through estimator (identity inside the range, 0 where
clipped), so probes and learning rules can take JVPs/VJPs through a quantized crossbar.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .noise import make_generator, rand, randn

__all__ = ["Quantizer", "DAC", "ADC", "Amplifier", "ROUNDING_MODES"]

ROUNDING_MODES = ("nearest", "stochastic")
_MAX_BITS = 24  # float32 holds every integer level index exactly up to 2^24


def _check_bits(bits: object, name: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an int in [1, {_MAX_BITS}], got {type(bits).__name__}")
    if not 1 <= bits <= _MAX_BITS:
        raise ValueError(f"{name} must be in [1, {_MAX_BITS}], got {bits}")
    return bits


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number > 0, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return v


def _check_real(value: object, name: str, lo: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < lo:
        raise ValueError(f"{name} must be finite and >= {lo}, got {value}")
    return v


class Quantizer(nn.Module):
    """Uniform symmetric quantizer with saturation (the common core of `DAC` and `ADC`).

    Args:
        bits: resolution, an int in [1, 24]; L = max(2^bits - 1, 2) levels (module docstring).
        bound: full scale (> 0): inputs are clipped to [-bound, bound].
        rounding: "nearest" or "stochastic" (unbiased: E[q(x)] = x inside the range).
        generator / seed: random stream of stochastic rounding (unused for "nearest").

    Shapes: any; the output has the input's shape, dtype and device.
    """

    def __init__(
        self,
        bits: int,
        bound: float,
        rounding: str = "nearest",
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        self.bits = _check_bits(bits)
        self.bound = _check_positive(bound, "bound")
        if not isinstance(rounding, str) or rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {list(ROUNDING_MODES)}, got {rounding!r}")
        self.rounding = rounding
        self.n_levels = max(2**self.bits - 1, 2)
        self.step = 2.0 * self.bound / (self.n_levels - 1)
        self._center = (self.n_levels - 1) / 2.0  # level index of 0 (a half-integer when L = 2)
        self.generator = make_generator(generator, seed) if rounding == "stochastic" else None

    def levels(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """The output levels, shape (n_levels,), ascending."""
        k = torch.arange(self.n_levels, dtype=dtype, device=device)
        return (k - self._center) * self.step

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} needs a real floating input, got {x.dtype}")
        xc = x.clamp(-self.bound, self.bound)
        t = xc / self.step + self._center  # position in level units, in [0, L - 1]
        if self.rounding == "nearest":
            k = torch.round(t)
        else:
            lo = torch.floor(t)
            assert self.generator is not None
            u = rand(x.shape, self.generator, dtype=x.dtype, device=x.device)
            k = lo + (u < (t - lo)).to(x.dtype)
        k = k.clamp(0, self.n_levels - 1)
        q = (k - self._center) * self.step
        # straight-through estimator: forward value q, gradient of the clip
        return xc + (q - xc).detach()

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, bound={self.bound}, rounding={self.rounding!r}, "
            f"levels={self.n_levels}, step={self.step:.6g}"
        )


class DAC(Quantizer):
    """Digital-to-analog converter on the crossbar inputs: clip to [-bound, bound] and quantize to
    max(2^bits - 1, 2) symmetric levels, with nearest or stochastic (unbiased) rounding."""

    def __init__(
        self,
        bits: int,
        bound: float = 1.0,
        rounding: str = "nearest",
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        super().__init__(bits, bound, rounding, generator=generator, seed=seed)


class ADC(Quantizer):
    """Analog-to-digital converter on the crossbar outputs: saturate at +-bound and quantize to
    max(2^bits - 1, 2) symmetric levels (nearest rounding)."""

    def __init__(self, bits: int, bound: float = 1.0):
        super().__init__(bits, bound, "nearest")


class Amplifier(nn.Module):
    """Sense amplifier (transimpedance stage) between a crossbar column and its ADC:

        y = clip((1 + gain_error) x + offset + noise_std N(0, 1), -saturation, saturation)

    Args:
        gain_error: systematic relative gain error (> -1).
        offset: systematic output offset (output units).
        saturation: output swing limit (> 0), None = no saturation.
        noise_std: additive output noise std per call (output units, >= 0), drawn from the
            amplifier's own generator.
        generator / seed: the noise stream.

    Shapes: any; output has the input's shape.
    """

    def __init__(
        self,
        gain_error: float = 0.0,
        offset: float = 0.0,
        saturation: float | None = None,
        noise_std: float = 0.0,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        self.gain_error = _check_real(gain_error, "gain_error")
        if self.gain_error <= -1.0:
            raise ValueError(f"gain_error must be > -1 (gain 1 + gain_error > 0), got {gain_error}")
        self.offset = _check_real(offset, "offset")
        self.saturation = None if saturation is None else _check_positive(saturation, "saturation")
        self.noise_std = _check_real(noise_std, "noise_std", lo=0.0)
        self.generator = make_generator(generator, seed) if self.noise_std > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        y = x * (1.0 + self.gain_error) if self.gain_error != 0.0 else x
        if self.offset != 0.0:
            y = y + self.offset
        if self.noise_std > 0.0:
            assert self.generator is not None
            y = y + self.noise_std * randn(x.shape, self.generator, dtype=x.dtype, device=x.device)
        if self.saturation is not None:
            y = y.clamp(-self.saturation, self.saturation)
        return y

    def extra_repr(self) -> str:
        return (
            f"gain_error={self.gain_error}, offset={self.offset}, saturation={self.saturation}, "
            f"noise_std={self.noise_std}"
        )
