"""Pulse responses: what one update pulse does to a device (aihwkit's "update once").

A pulse response is a frozen dataclass of numbers (it lives in `DeviceModel.pulse`) and the law
that turns them into conductance changes. Two laws, one class each, with the same four methods
that `DeviceArray` calls (so nothing else needs to know which law a device follows):

* `PulseResponse`: the linear step (aihwkit's `LinearStepDevice`, `SoftBoundsDevice`,
  `SoftBoundsReferenceDevice`, `ConstantStepDevice`): the step is affine in the position, so n
  pulses compose in closed form.
* `ExpStepResponse`: the exponential step (aihwkit's `ExpStepDevice`, used by its
  `PCMPresetDevice`), with its "complex" cycle-to-cycle noise; applied pulse by pulse.

Methods: `mean_step(w, up, dev)` (expected size of one noise-free pulse), `advance(w0, n, up, dev,
lo, hi, generator)` (n pulses with cycle noise, clipped to [lo, hi]), `count(w0, wt, up, dev, lo,
hi, cap)` (pulses the noise-free device `dev` needs from w0 to wt, fractional) and
`weight_granularity` (aihwkit's `calcWeightGranularity`: the size of one nominal pulse that
stochastic updates are scaled with).

Coordinates. A device's state is its position

    w = (G - g_w0) / (g_max - g_min),      g_w0 = g_min + reference_point (g_max - g_min),

the conductance measured from g_w0, the point where aihwkit's device weight is 0, in units of
the nominal conductance range. aihwkit's weights, steps and bounds map onto w by dividing by the
width of its weight range, w_max - w_min (e.g. 2 for PCMPresetDevice's [0, 2]), and
`reference_point` = -w_min / (w_max - w_min). Steps are in units of the nominal range too, so a
device's step does not change with its own range, as in aihwkit.

Per device (`PulseDevices`, drawn once by `DeviceArray` in the order of aihwkit's
`PulsedRPUDevice<T>::populate`, src/rpucuda/rpu_pulsed_device.cpp: upper bound, lower bound, gain,
up/down spread):

    w_max = |(1 - reference_point) (1 + g_max_dtod xi_1)|      upper bound
    w_min = -|reference_point (1 + g_min_dtod xi_2)|            lower bound
    gain = 1 + dw_min_dtod xi_3,   r = up_down_dtod xi_4
    scale_up   = dw_min |min(up_down, 0) + gain + r|
    scale_down = dw_min |-max(up_down, 0) + gain - r|           (0 if not bidirectional)

(the absolute values are aihwkit's `enforce_consistency`, its default). Both bounds spread about
the fixed point w = 0, as in aihwkit; the conductances they stand for are clipped at 0 S by
`DeviceArray` (a lower bound below 0 S cannot be reached), the law keeps aihwkit's bound.

The up_down sign convention is the one of aihwkit's C++ (`populate` above), which is what aihwkit
simulates: up_down > 0 makes the up step the larger one, with the up step keeping dw_min gain and
the down step losing up_down dw_min (up_down < 0: the up step loses |up_down| dw_min), and the
device-to-device part r is added to the up and subtracted from the down step without the gain
factor. The docstring of aihwkit's Python `PulsedDevice.up_down` writes the steps as
d dw_min (1 + d beta + sigma xi) for the direction d = +-1 instead (up dw_min (1 + up_down), down
dw_min (1 - up_down): twice the asymmetry); that is not what its simulator does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import _in_range, _kind, _real
from .noise import randn

__all__ = ["PulseResponse", "ExpStepResponse", "PulseDevices", "PULSE_LAWS"]

# Largest per-pulse soft-bound coefficient B of the linear step (see `PulseResponse.advance`).
_B_MAX = 1.0 - 1e-9
# Largest exponent of the exponential step (exp(80) ~ 5.5e34 is finite in float32).
_EXP_MAX = 80.0
# Largest size of one pulse of the exponential step, in nominal ranges (nothing moves further:
# positions are clipped to the device's bounds; this keeps inf out of the noise term).
_STEP_MAX = 2.0


class PulseDevices(NamedTuple):
    """Per-device parameters of a pulse law, tensors of one shape (units of the nominal range).

    scale_up, scale_down: step scales of an up / a down pulse (aihwkit `w_scale_up_`,
    `w_scale_down_`); w_min <= 0 <= w_max: the device's bounds relative to w = 0 (aihwkit
    `w_min_bound_`, `w_max_bound_`), which the soft bounds and the exponential step refer to.
    """

    scale_up: Tensor
    scale_down: Tensor
    w_min: Tensor
    w_max: Tensor


@dataclass(frozen=True)
class _PulsedDevice:
    """Parameters every pulsed device has (aihwkit's `PulsedDevice`); see the module docstring.

    dw_min: step scale, fraction of the nominal range (aihwkit dw_min / weight-range width).
    up_down: systematic up/down asymmetry in (-1, 1), aihwkit's C++ convention.
    dw_min_dtod, up_down_dtod: device-to-device spreads of the gain and of the asymmetry.
    cycle_noise: cycle-to-cycle noise of a step (aihwkit dw_min_std), relative to the step.
    reference_point: position of w = 0 in the nominal range, in [0, 1) (aihwkit
        -w_min / (w_max - w_min)).
    bidirectional: False for a device that only takes up (potentiating) pulses, e.g. PCM.
    """

    dw_min: float = 1e-3
    up_down: float = 0.0
    dw_min_dtod: float = 0.0
    up_down_dtod: float = 0.0
    cycle_noise: float = 0.0
    reference_point: float = 0.5
    bidirectional: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "dw_min", _in_range(self.dw_min, "pulse.dw_min", 0, 0.5, lo_open=True)
        )
        v = _in_range(self.up_down, "pulse.up_down", -1, 1, lo_open=True, hi_open=True)
        object.__setattr__(self, "up_down", v)
        for name in ("cycle_noise", "dw_min_dtod", "up_down_dtod"):
            object.__setattr__(
                self, name, _in_range(getattr(self, name), f"pulse.{name}", 0, math.inf)
            )
        v = _in_range(self.reference_point, "pulse.reference_point", 0, 1, hi_open=True)
        object.__setattr__(self, "reference_point", v)
        if not isinstance(self.bidirectional, bool):
            raise TypeError(
                f"pulse.bidirectional must be a bool, got {type(self.bidirectional).__name__}"
            )

    # -- shared: the devices ------------------------------------------------------------------
    def scales(self, xi_gain: Tensor, xi_r: Tensor) -> tuple[Tensor, Tensor]:
        """Per-device (scale_up, scale_down) from standard normal draws (module docstring)."""
        gain = 1.0 + self.dw_min_dtod * xi_gain
        r = self.up_down_dtod * xi_r
        up_bias = min(self.up_down, 0.0)
        down_bias = -max(self.up_down, 0.0)
        up = self.dw_min * (up_bias + gain + r).abs()
        down = self.dw_min * (down_bias + gain - r).abs()
        if not self.bidirectional:
            down = torch.zeros_like(down)
        return up, down

    def nominal(self, like: Tensor) -> PulseDevices:
        """The nominal device (no spread) as `PulseDevices` shaped like `like`."""
        up_bias = min(self.up_down, 0.0)
        down_bias = -max(self.up_down, 0.0)
        up = self.dw_min * (1.0 + up_bias)
        down = self.dw_min * (1.0 + down_bias) if self.bidirectional else 0.0
        r = self.reference_point
        return PulseDevices(
            torch.full_like(like, up), torch.full_like(like, down),
            torch.full_like(like, -r), torch.full_like(like, 1.0 - r),
        )

    # -- per law --------------------------------------------------------------------------------
    @property
    def weight_granularity(self) -> float:
        """Size of one nominal pulse (fraction of the nominal range) that stochastic updates are
        scaled with (aihwkit `calcWeightGranularity`)."""
        raise NotImplementedError

    def mean_step(self, w: Tensor, up: Tensor, dev: PulseDevices) -> Tensor:
        """Size (>= 0) of one noise-free pulse at positions w; `up` (bool) picks the direction."""
        raise NotImplementedError

    def advance(self, w0: Tensor, n: Tensor, up: Tensor, dev: PulseDevices, lo: Tensor,
                hi: Tensor, generator: torch.Generator) -> Tensor:
        """Positions after n (>= 0) pulses in the direction `up` (bool), with cycle noise from
        `generator`, clipped to [lo, hi] (the caller's bounds)."""
        raise NotImplementedError

    def count(self, w0: Tensor, wt: Tensor, up: Tensor, dev: PulseDevices, lo: Tensor,
              hi: Tensor, cap: int) -> Tensor:
        """Fractional number of noise-free pulses that take `dev` from w0 to wt (between
        consecutive pulses: linearly interpolated); `cap` where wt cannot be reached."""
        raise NotImplementedError


def _pulse_sums(b: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """S = sum_{k<n} (1-b)^k = (1 - (1-b)^n) / b and Q = sum_{k<n} (1-b)^{2k}, elementwise; both
    tend to n as b -> 0 (computed with expm1/log1p so small b loses no precision)."""
    small = b < 1e-12
    bs = torch.where(small, torch.ones_like(b), b)
    log1m = torch.log1p(-bs)
    s = -torch.expm1(n * log1m) / bs
    q = -torch.expm1(2.0 * n * log1m) / (-torch.expm1(2.0 * log1m))
    return torch.where(small, n, s), torch.where(small, n, q)


@dataclass(frozen=True)
class PulseResponse(_PulsedDevice):
    """The linear step: aihwkit's `LinearStepDevice` (src/rpucuda/rpu_linearstep_device.cpp),
    with its special cases `SoftBoundsDevice` / `SoftBoundsReferenceDevice` (soft_bound = 1,
    rpu_softbounds_reference_device.cpp) and `ConstantStepDevice` (soft_bound = 0).

    One pulse at position w (module docstring) moves the device by

        up:   scale_up   (1 - soft_bound_up   w / W_up)
        down: scale_down (1 - soft_bound_down (-w) / W_down)

    with W_up = w_max, W_down = -w_min the device's own bounds (aihwkit SoftBounds and
    LinearStep with mean_bound_reference=False) or the nominal ones, W_up = 1 - reference_point,
    W_down = reference_point (`mean_bound_reference=True`, aihwkit's LinearStep default, e.g.
    `EcRamPresetDevice`). So the step is scale_up / scale_down at w = 0 and falls linearly to
    (1 - soft_bound) of it at the bound it moves toward: soft_bound 1 is the soft-bounds device
    (the step vanishes at the bound), 0 a constant step with hard bounds.
    Cycle-to-cycle noise: each step is multiplied by (1 + cycle_noise xi) ("multiplicative",
    aihwkit `mult_noise=True`) or gets cycle_noise * scale xi added ("additive",
    `mult_noise=False`). In the distance-travelled coordinate u (u = w up, u = -w down) one pulse
    moves u by A - B u, so n pulses compose in closed form in mean and variance (`advance`).
    soft_bound_down > 0 needs reference_point > 0 (a lower bound to refer to).
    """

    soft_bound_up: float = 0.0
    soft_bound_down: float = 0.0
    mean_bound_reference: bool = False
    cycle_noise_kind: str = "multiplicative"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("soft_bound_up", "soft_bound_down"):
            object.__setattr__(self, name, _in_range(getattr(self, name), f"pulse.{name}", 0, 1))
        if self.soft_bound_down > 0 and self.reference_point == 0:
            raise ValueError(
                "pulse.soft_bound_down > 0 needs pulse.reference_point in (0, 1): with the "
                "reference at the lower bound there is no distance to soften the down step over"
            )
        if not isinstance(self.mean_bound_reference, bool):
            raise TypeError("pulse.mean_bound_reference must be a bool, got "
                            f"{type(self.mean_bound_reference).__name__}")
        _kind(self.cycle_noise_kind, "pulse.cycle_noise_kind", ("multiplicative", "additive"))

    @property
    def weight_granularity(self) -> float:
        # rpu_linearstep_device.h / rpu_softbounds_reference_device.h /
        # rpu_constantstep_device.h: "return this->dw_min"
        return self.dw_min

    def _affine(self, up: Tensor, dev: PulseDevices) -> tuple[Tensor, Tensor]:
        """(A, B) of one pulse in the distance-travelled coordinate, per device."""
        if self.mean_bound_reference:
            w_up = torch.full_like(dev.w_max, 1.0 - self.reference_point)
            w_down = torch.full_like(dev.w_min, self.reference_point)
        else:
            w_up, w_down = dev.w_max, -dev.w_min
        b_up = dev.scale_up * (self.soft_bound_up / w_up.clamp_min(1e-30))
        if self.soft_bound_down == 0.0:
            b_down = torch.zeros_like(dev.scale_down)
        else:
            b_down = dev.scale_down * (self.soft_bound_down / w_down.clamp_min(1e-30))
        a = torch.where(up, dev.scale_up, dev.scale_down)
        # B >= 1 (a device whose own bound sits very close to w = 0) would make one pulse
        # overshoot the soft bound and (1 - B)^n oscillate (NaN in the closed forms): such a
        # device saturates, so B is capped just below 1
        return a, torch.where(up, b_up, b_down).clamp(max=_B_MAX)

    def mean_step(self, w: Tensor, up: Tensor, dev: PulseDevices) -> Tensor:
        a, b = self._affine(up, dev)
        u = torch.where(up, w, -w)
        return (a - b * u).clamp_min(0.0)

    def advance(self, w0: Tensor, n: Tensor, up: Tensor, dev: PulseDevices, lo: Tensor,
                hi: Tensor, generator: torch.Generator) -> Tensor:
        """Closed form: the mean path u_n = u0 + (A - B u0)(1 - (1 - B)^n) / B, and the
        cycle-to-cycle noise with variance (A - B u0)^2 / B^2 [((1 - B)^2 + B^2 s^2)^n -
        (1 - B)^(2n)] (multiplicative, s = cycle_noise) or (s scale)^2 (1 - (1 - B)^(2n)) /
        (1 - (1 - B)^2) (additive); the result is drawn Gaussian with those moments (one draw
        per device and call, whatever n) and clipped to [lo, hi] once, at the end."""
        dtype = w0.dtype
        xi = randn(w0.shape, generator, dtype=dtype, device=w0.device)
        cnt = n.to(dtype)
        a, b = self._affine(up, dev)
        u0 = torch.where(up, w0, -w0)
        rate = a - b * u0
        s_sum, q_sum = _pulse_sums(b, cnt)
        mean = u0 + rate * s_sum
        s = self.cycle_noise
        if s == 0.0:
            var = torch.zeros_like(mean)
        elif self.cycle_noise_kind == "additive":
            var = (s * a) ** 2 * q_sum
        else:
            one_b = 1.0 - b
            c = one_b * one_b
            d = (b * s) ** 2
            # (c + d)^n - c^n = (c + d)^n (1 - exp(-n log1p(d / c))); divided by B^2 via
            # d / B^2 = s^2. Written so that neither factor is 0 x inf: with B capped near 1
            # (c ~ 0) the form c^n expm1(n log1p(d / c)) underflowed to 0 times an overflow
            # (NaN conductances, found by hypothesis); the first factor overflows only when the
            # variance really is huge, and the cap below keeps it finite (the result is clipped
            # to the device's range anyway).
            c_safe = c.clamp_min(1e-30)
            ratio = torch.where(b < 1e-12, torch.zeros_like(b), d / c_safe)
            grow = torch.exp(cnt * torch.log(c_safe + d)) * -torch.expm1(-cnt * torch.log1p(ratio))
            b_safe = torch.where(b < 1e-12, torch.ones_like(b), b)
            var_soft = torch.where(rate == 0, 0.0, rate**2 * grow / b_safe**2)
            var_soft = var_soft.clamp(max=torch.finfo(dtype).max)
            var = torch.where(b < 1e-12, rate**2 * s**2 * cnt, var_soft)
        u_n = mean + var.clamp_min(0.0).sqrt() * xi
        w_n = torch.where(up, u_n, -u_n)
        return torch.minimum(torch.maximum(w_n, lo), hi)

    def count(self, w0: Tensor, wt: Tensor, up: Tensor, dev: PulseDevices, lo: Tensor,
              hi: Tensor, cap: int) -> Tensor:
        """n = ln(1 - B du / (A - B u0)) / ln(1 - B) (du / A for B = 0), inverted from the mean
        path of `advance`; `cap` where the soft bound lies short of the target."""
        a, b = self._affine(up, dev)
        u0 = torch.where(up, w0, -w0)
        du = (wt - w0).abs()
        rate = (a - b * u0).clamp_min(1e-30)  # mean step at u0
        arg = 1.0 - b * du / rate
        small = b < 1e-12
        b_safe = torch.where(small, torch.ones_like(b), b)
        n_soft = torch.log(arg.clamp_min(1e-30)) / torch.log1p(-b_safe)
        n_soft = torch.where(arg <= 0, torch.full_like(n_soft, float(cap)), n_soft)
        return torch.where(small, du / a.clamp_min(1e-30), n_soft)


@dataclass(frozen=True)
class ExpStepResponse(_PulsedDevice):
    """The exponential step of aihwkit's `ExpStepDevice` (src/rpucuda/rpu_expstep_device.cpp,
    `update_once` and `update_once_complex_noise`; parameters named as its C++ `es_*`).

    One pulse at position w (module docstring), on a device with bounds w_min <= 0 <= w_max:

        z = 2 es_a w / (w_max - w_min) + es_b
        up:   dw = +scale_up   max(1 - es_A_up   exp( es_gamma_up   z), 0)
        down: dw = -scale_down max(1 - es_A_down exp(-es_gamma_down z), 0)

    then, with s = cycle_noise (aihwkit dw_min_std):

    * "complex" noise (s > 0 and cycle_noise_add or cycle_noise_slope nonzero):
      w <- w + dw + s (|dw| + cycle_noise_add + cycle_noise_slope |w|) xi
      (aihwkit dw_min_std_add, in units of the nominal range here: aihwkit's value / the width of
      its weight range; dw_min_std_slope is dimensionless and keeps its value);
    * otherwise: w <- w + dw (1 + s xi),

    and w is clipped to the bounds after every pulse. n pulses are applied one by one, with a
    fresh normal draw per device and pulse slot (max n draws per call).
    """

    es_a: float = 0.244
    es_b: float = 0.2425
    es_A_up: float = 0.00081
    es_A_down: float = 0.36833
    es_gamma_up: float = 12.44625
    es_gamma_down: float = 12.78785
    cycle_noise_add: float = 0.0
    cycle_noise_slope: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("es_a", "es_b", "es_A_up", "es_A_down", "es_gamma_up", "es_gamma_down"):
            object.__setattr__(self, name, _real(getattr(self, name), f"pulse.{name}"))
        for name in ("cycle_noise_add", "cycle_noise_slope"):
            object.__setattr__(
                self, name, _in_range(getattr(self, name), f"pulse.{name}", 0, math.inf)
            )

    @property
    def complex_noise(self) -> bool:
        """aihwkit `hasComplexNoise`: dw_min_std > 0 and (dw_min_std_slope or _add nonzero)."""
        return self.cycle_noise > 0 and (self.cycle_noise_slope != 0 or self.cycle_noise_add != 0)

    @property
    def weight_granularity(self) -> float:
        # rpu_expstep_device.h, calc weight granularity body: the nominal steps at w = 0 (z = b),
        # then "MAX((dw_down + dw_down) / 2, 0)" (the down step twice, as written there), or
        # dw_min if that is not > 0
        scale_down = self.dw_min * (1.0 - max(self.up_down, 0.0))
        y_down = max(1.0 - self.es_A_down * math.exp(-self.es_gamma_down * self.es_b), 0.0)
        g = scale_down * y_down
        return g if g > 0 else self.dw_min

    def _step(self, w: Tensor, up: Tensor, dev: PulseDevices) -> Tensor:
        span = (dev.w_max - dev.w_min).clamp_min(1e-30)
        z = (2.0 * self.es_a) * w / span + self.es_b
        y_up = 1.0 - self.es_A_up * torch.exp((self.es_gamma_up * z).clamp(max=_EXP_MAX))
        y_down = 1.0 - self.es_A_down * torch.exp((-self.es_gamma_down * z).clamp(max=_EXP_MAX))
        step = torch.where(up, dev.scale_up * y_up.clamp_min(0.0),
                           dev.scale_down * y_down.clamp_min(0.0))
        return step.clamp(max=_STEP_MAX)

    def mean_step(self, w: Tensor, up: Tensor, dev: PulseDevices) -> Tensor:
        return self._step(w, up, dev)

    def advance(self, w0: Tensor, n: Tensor, up: Tensor, dev: PulseDevices, lo: Tensor,
                hi: Tensor, generator: torch.Generator) -> Tensor:
        w = w0
        n_max = int(n.max()) if n.numel() else 0
        s = self.cycle_noise
        for k in range(n_max):
            dw = self._step(w, up, dev)
            dw = torch.where(up, dw, -dw)
            if s > 0:
                xi = randn(w.shape, generator, dtype=w.dtype, device=w.device)
                if self.complex_noise:
                    std = s * (dw.abs() + self.cycle_noise_add + self.cycle_noise_slope * w.abs())
                    w_new = w + dw + std * xi
                else:
                    w_new = w + dw * (1.0 + s * xi)
            else:
                w_new = w + dw
            w_new = torch.minimum(torch.maximum(w_new, lo), hi)
            w = torch.where(n > k, w_new, w)
        return w

    def count(self, w0: Tensor, wt: Tensor, up: Tensor, dev: PulseDevices, lo: Tensor,
              hi: Tensor, cap: int) -> Tensor:
        """Iterates the noise-free map (monotone in the pulse count) until every device has
        passed its target, a bound or `cap` pulses; between the last two positions the count
        is interpolated linearly."""

        def reached(w: Tensor) -> Tensor:
            return torch.where(up, w >= wt, w <= wt)

        n = torch.zeros_like(w0)
        done = reached(w0)
        w = w0
        for k in range(cap):
            if bool(done.all()):
                break
            step = self._step(w, up, dev)
            w_next = torch.minimum(torch.maximum(w + torch.where(up, step, -step), lo), hi)
            moved = w_next - w
            cross = ~done & reached(w_next)
            frac = ((wt - w) / torch.where(moved == 0, torch.ones_like(moved), moved)).clamp(0, 1)
            n = torch.where(cross, k + frac, n)
            stuck = ~done & ~cross & (moved == 0)  # no progress: the target is out of reach
            n = torch.where(stuck, torch.full_like(n, float(cap)), n)
            done = done | cross | stuck
            w = torch.where(done, w, w_next)
        return torch.where(done, n, torch.full_like(n, float(cap)))


PULSE_LAWS = (PulseResponse, ExpStepResponse)
"""The pulse responses a `DeviceModel.pulse` may be."""
