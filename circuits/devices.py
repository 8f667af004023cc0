"""Device models (configuration as data) and the state of one array of devices.

A `DeviceModel` is a frozen dataclass that describes a memory technology: conductance range,
levels, programming noise, read noise, drift, device-to-device spread, stuck-at faults and the
pulse response used by in-situ updates. It holds no state and no callables, only numbers, so it can
be printed, compared, saved and swept. Presets `ideal()`, `pcm()`, `rram()`, `ecram()` cite the
source of every number; `preset(name)` looks one up by name.

A `DeviceArray` is the state of one physical array of such devices (e.g. the G_plus half of a
crossbar tile). Following STYLE.md ("a device keeps its own history"), every random property is
drawn once and stored:

* at construction (manufacturing): the per-device maximum conductance (device-to-device spread),
  the per-device pulse step sizes and up/down bias, and the stuck-at faults;
* at `program` (a programming event): the programming error and the drift exponent nu;
* only read noise is drawn at read time (it is a read-time process), from the array's own stream,
  white (fresh each read), quenched (frozen for a settle) or time-correlated (`OUProcess`).

The draws are always made, in a fixed order, whatever the model's parameters, so two arrays built
with the same seed see the same underlying random numbers under different device models (common
random numbers: an ablation changes one effect, not the whole noise pattern).

Units: conductances in siemens, times in seconds. Pulse step sizes are fractions of the nominal
conductance range g_max - g_min.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from .noise import OUProcess, derive_generator, make_generator, rand, randn

__all__ = [
    "DeviceModel",
    "ProgrammingNoise",
    "ReadNoise",
    "Drift",
    "PulseResponse",
    "DeviceArray",
    "ideal",
    "pcm",
    "rram",
    "ecram",
    "preset",
    "PRESETS",
    "READ_NOISE_MODES",
    "check_time",
    "max_age",
]

READ_NOISE_MODES = ("white", "quenched", "ou")

# --------------------------------------------------------------------------------------------
# validation helpers


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    return v


def _in_range(
    value: Any, name: str, lo: float, hi: float, *, lo_open=False, hi_open=False
) -> float:
    v = _real(value, name)
    bad_lo = v <= lo if lo_open else v < lo
    bad_hi = v >= hi if hi_open else v > hi
    if bad_lo or bad_hi:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value}")
    return v


def _kind(value: Any, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a string, one of {list(allowed)}, got {type(value).__name__}"
        )
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _real_tuple(value: Any, name: str, length: int | None = None) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of real numbers, got {type(value).__name__}")
    out = tuple(_real(v, f"{name}[{i}]") for i, v in enumerate(value))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)}")
    return out


def check_time(value: Any, name: str = "t_seconds", high: float = math.inf) -> float:
    """A time in seconds: a finite real number in [0, high] (ValueError / TypeError otherwise)."""
    v = _in_range(value, name, 0.0, math.inf)
    if v > high:
        raise ValueError(
            f"{name} must be in [0.0, {high:.6g}] s (the oldest age the drift law and the 1/f "
            f"noise can represent in this device state's dtype), got {value}"
        )
    return v


def max_age(dtype: torch.dtype) -> float:
    """The oldest age (seconds) a device state of `dtype` represents: finfo(dtype).max / 4.

    Ages are held in the state's dtype; the drift law and the 1/f read noise evaluate
    log(age + t0) and log(age + t0 + t_read), which stay finite below this bound (float32:
    8.5e37 s, float64: 4.5e307 s). `DeviceArray.drift` rejects anything older.
    """
    return float(torch.finfo(dtype).max) / 4.0


# --------------------------------------------------------------------------------------------
# the model: data only


@dataclass(frozen=True)
class ProgrammingNoise:
    """Error of one programming (program-and-verify) event, drawn once and kept by the device.

    g_prog = clip(g_target + sigma(g_r) N(0, 1)),  g_r = max(g_target / g_max, 0), with

    * kind "none": sigma = 0;
    * kind "polynomial": sigma = scale * g_max * |sum_k coeffs[k] g_r^k| (siemens). The
      coefficients are dimensionless (relative to g_max), so a model keeps its shape when g_max is
      changed; this is the rescaling aihwkit's PCMLikeNoiseModel applies with
      `prog_coeff_g_max_reference`. (aihwkit multiplies N(0, 1) by the polynomial itself, so a
      fit that dips below 0 acts with its absolute value; so does this one.)

    The target is first put on the level grid within [g_min, g_max] (`DeviceModel.quantize`).
    `clip` says what bounds the written conductance:

    * "zero" (default): clamped at 0 S only, as aihwkit's
      `PCMLikeNoiseModel.apply_programming_noise_to_conductance` (`g_prog.clamp_(min=0.0)`) and
      `ReRamWan2022NoiseModel._apply_poly`: a device near g_max keeps the whole error (PCM at
      g_target = g_max: std 1.055 uS, no bias), and the error can take it above g_max or its own
      pulse bound (pulses never push it further out, `DeviceArray.pulse`).
    * "device": the target and the result are clipped to the device's own bounds
      [g_min_dev, g_max_dev] (a program-and-verify loop that cannot write a device beyond the
      range it reaches under pulses). Truncates the error near the bounds (PCM at g_max: std
      0.62 uS and a -0.42 uS bias with g_max_dtod = 0).
    """

    kind: str = "none"
    coeffs: tuple[float, ...] = ()
    scale: float = 1.0
    clip: str = "zero"

    def __post_init__(self) -> None:
        _kind(self.kind, "programming.kind", ("none", "polynomial"))
        _kind(self.clip, "programming.clip", ("zero", "device"))
        object.__setattr__(self, "coeffs", _real_tuple(self.coeffs, "programming.coeffs"))
        if self.kind == "polynomial" and not self.coeffs:
            raise ValueError(
                "programming.coeffs must have at least one entry for kind 'polynomial'"
            )
        object.__setattr__(self, "scale", _in_range(self.scale, "programming.scale", 0.0, math.inf))

    def sigma(self, g_target: Tensor, g_max: float) -> Tensor:
        """Std (siemens) of the programming error at g_target (siemens); same shape."""
        if self.kind == "none" or self.scale == 0.0:
            return torch.zeros_like(g_target)
        g_r = (g_target / g_max).clamp_min(0.0)
        poly = torch.zeros_like(g_target)
        for c in reversed(self.coeffs):  # Horner
            poly = poly * g_r + c
        # aihwkit draws sig * randn: a fit that dips below 0 acts with |sig|
        return (self.scale * g_max) * poly.abs()


@dataclass(frozen=True)
class ReadNoise:
    """Noise of a read (a multiply-accumulate), drawn per read from the array's own stream.

    * kind "none": reads return the conductance.
    * kind "gaussian": additive, state-independent: g_read = g + scale * std * g_max * N(0, 1).
    * kind "pcm_1f": the accumulated 1/f noise of PCM (Nandakumar et al., ICECS 2019), exactly as
      aihwkit's `PCMLikeNoiseModel.apply_drift_noise_to_conductance` applies it:
      q = min(q_coeff / max((|g_prog| / g_max)^q_exponent, q_floor), q_max),
      sigma_rel = q sqrt(ln((t + t_read) / (2 t_read))), t = age + t0 (seconds since programming
      plus the drift reference t0, as aihwkit counts it), and
      g_read = g(t) + scale * |g(t)| * sigma_rel * N(0, 1),
      i.e. q comes from the programmed conductance, the noise multiplies the drifted one.

    Reads are clamped at 0 (a conductance is never negative), as in aihwkit.
    """

    kind: str = "none"
    std: float = 0.0
    q_coeff: float = 0.0088
    q_exponent: float = 0.65
    q_floor: float = 1e-3
    q_max: float = 0.2
    t_read: float = 250e-9
    scale: float = 1.0

    def __post_init__(self) -> None:
        _kind(self.kind, "read.kind", ("none", "gaussian", "pcm_1f"))
        for name in ("std", "q_coeff", "q_exponent", "q_max", "scale"):
            object.__setattr__(
                self, name, _in_range(getattr(self, name), f"read.{name}", 0, math.inf)
            )
        for name in ("q_floor", "t_read"):
            v = _in_range(getattr(self, name), f"read.{name}", 0, math.inf, lo_open=True)
            object.__setattr__(self, name, v)

    @property
    def active(self) -> bool:
        if self.kind == "none" or self.scale == 0.0:
            return False
        return not (self.kind == "gaussian" and self.std == 0.0)

    def sigma(self, g: Tensor, g_prog: Tensor, age: Tensor, t0: float, g_max: float) -> Tensor:
        """Per-device read-noise std (siemens) given the current conductance g, the programmed one
        g_prog (both siemens, same shape) and the age (seconds since the device was written)."""
        if not self.active:
            return torch.zeros_like(g)
        if self.kind == "gaussian":
            return torch.full_like(g, self.scale * self.std * g_max)
        q = self.q_coeff / ((g_prog.abs() / g_max) ** self.q_exponent).clamp_min(self.q_floor)
        q = q.clamp_max(self.q_max)
        t = age + t0
        # ln((t + t_read) / (2 t_read)) written as a difference of logs: the quotient overflows
        # for very old devices (t / 5e-7 s), the difference stays finite for every age
        # `max_time` admits. < 0 only for t < t_read (sub-microsecond ages with t0 ~ 0): no noise
        # has built up.
        log_term = (torch.log(t + self.t_read) - math.log(2.0 * self.t_read)).clamp_min(0.0)
        return self.scale * g.abs() * q * torch.sqrt(log_term)


@dataclass(frozen=True)
class Drift:
    """Conductance drift g(t) = g_prog ((t + t0) / t0)^(-nu), t = seconds since the device was
    written; nu is drawn once per device at programming, nu = scale * |N(mu, sigma)|.

    * kind "none": no drift (nu = 0).
    * kind "constant": mu = nu_mean, sigma = nu_std for every device.
    * kind "pcm": state-dependent, as fitted by Nandakumar et al. (ICECS 2019) and used in aihwkit's
      `PCMLikeNoiseModel.generate_drift_coefficients`, g_r = max(|g_target| / g_max, g_r_floor):
      mu = clip(mu_coeffs[0] ln g_r + mu_coeffs[1], *mu_clip),
      sigma = clip(sigma_coeffs[0] ln g_r + sigma_coeffs[1], *sigma_clip).
    """

    kind: str = "none"
    nu_mean: float = 0.0
    nu_std: float = 0.0
    mu_coeffs: tuple[float, float] = (-0.0155, 0.0244)
    mu_clip: tuple[float, float] = (0.049, 0.1)
    sigma_coeffs: tuple[float, float] = (-0.0125, -0.0059)
    sigma_clip: tuple[float, float] = (0.008, 0.045)
    g_r_floor: float = 1e-7
    scale: float = 1.0

    def __post_init__(self) -> None:
        _kind(self.kind, "drift.kind", ("none", "constant", "pcm"))
        object.__setattr__(self, "nu_mean", _real(self.nu_mean, "drift.nu_mean"))
        object.__setattr__(self, "nu_std", _in_range(self.nu_std, "drift.nu_std", 0, math.inf))
        for name in ("mu_coeffs", "mu_clip", "sigma_coeffs", "sigma_clip"):
            object.__setattr__(self, name, _real_tuple(getattr(self, name), f"drift.{name}", 2))
        for name in ("mu_clip", "sigma_clip"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(
                    f"drift.{name} must be (low, high) with low <= high, got {(lo, hi)}"
                )
        if self.sigma_clip[0] < 0:
            raise ValueError(f"drift.sigma_clip must be >= 0, got {self.sigma_clip}")
        v = _in_range(self.g_r_floor, "drift.g_r_floor", 0, 1, lo_open=True)
        object.__setattr__(self, "g_r_floor", v)
        object.__setattr__(self, "scale", _in_range(self.scale, "drift.scale", 0, math.inf))

    def nu_stats(self, g_target: Tensor, g_max: float) -> tuple[Tensor, Tensor]:
        """(mu, sigma) of the Gaussian that nu is folded from, per device (shape of g_target)."""
        if self.kind == "none":
            z = torch.zeros_like(g_target)
            return z, z
        if self.kind == "constant":
            return torch.full_like(g_target, self.nu_mean), torch.full_like(g_target, self.nu_std)
        ln_g = torch.log((g_target.abs() / g_max).clamp_min(self.g_r_floor))
        mu = (self.mu_coeffs[0] * ln_g + self.mu_coeffs[1]).clamp(*self.mu_clip)
        sig = (self.sigma_coeffs[0] * ln_g + self.sigma_coeffs[1]).clamp(*self.sigma_clip)
        return mu, sig

    def draw(self, g_target: Tensor, g_max: float, xi: Tensor) -> Tensor:
        """nu = scale * |mu + sigma xi| from standard normal draws xi (same shape as g_target)."""
        mu, sig = self.nu_stats(g_target, g_max)
        return self.scale * (mu + sig * xi).abs()


@dataclass(frozen=True)
class PulseResponse:
    """Response of a device to one update pulse (the "update once" of aihwkit's pulsed devices).

    Positions are normalized to each device's own range, x = (G - g_min) / (g_max_dev - g_min), and
    steps are fractions of the nominal range g_max - g_min. Per device (drawn once):
    dw = dw_min (1 + dw_min_dtod xi), beta = up_down + up_down_dtod xi',
    dw_up = dw (1 + beta), dw_down = dw (1 - beta) (aihwkit's `PulsedDevice.up_down` convention).
    The step of one pulse at position x, in the linear-step form of aihwkit's `LinearStepDevice`:

        up:   dw_up   (1 - soft_bound_up   (x - x_ref) / (1 - x_ref))
        down: dw_down (1 - soft_bound_down (x_ref - x) / x_ref)

    with x_ref = `reference_point`: the step equals dw_up / dw_down at x_ref and shrinks linearly
    toward the bound it moves to, to (1 - soft_bound) of that value at the bound. soft_bound = 0 is
    a constant step with hard bounds, soft_bound = 1 is the soft-bounds device (the step vanishes at
    the bound). Cycle-to-cycle noise: each pulse's step is multiplied by (1 + cycle_noise xi)
    ("multiplicative") or gets cycle_noise * dw_dir * xi added ("additive", aihwkit's
    `mult_noise=False`). Conductances are clipped to [g_min, g_max_dev] after every update.
    `bidirectional=False` marks a device that only accepts up (potentiating) pulses, such as PCM
    (gradual SET, abrupt RESET).
    """

    dw_min: float = 1e-3
    up_down: float = 0.0
    soft_bound_up: float = 0.0
    soft_bound_down: float = 0.0
    reference_point: float = 0.5
    cycle_noise: float = 0.0
    cycle_noise_kind: str = "multiplicative"
    dw_min_dtod: float = 0.0
    up_down_dtod: float = 0.0
    bidirectional: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "dw_min", _in_range(self.dw_min, "pulse.dw_min", 0, 0.5, lo_open=True)
        )
        v = _in_range(self.up_down, "pulse.up_down", -1, 1, lo_open=True, hi_open=True)
        object.__setattr__(self, "up_down", v)
        for name in ("soft_bound_up", "soft_bound_down"):
            object.__setattr__(self, name, _in_range(getattr(self, name), f"pulse.{name}", 0, 1))
        v = _in_range(
            self.reference_point, "pulse.reference_point", 0, 1, lo_open=True, hi_open=True
        )
        object.__setattr__(self, "reference_point", v)
        for name in ("cycle_noise", "dw_min_dtod", "up_down_dtod"):
            object.__setattr__(
                self, name, _in_range(getattr(self, name), f"pulse.{name}", 0, math.inf)
            )
        _kind(self.cycle_noise_kind, "pulse.cycle_noise_kind", ("multiplicative", "additive"))
        if not isinstance(self.bidirectional, bool):
            raise TypeError(
                f"pulse.bidirectional must be a bool, got {type(self.bidirectional).__name__}"
            )

    def linear_coeffs(
        self, dw_up: Tensor, dw_down: Tensor, k: Tensor | float
    ) -> tuple[Tensor, ...]:
        """Coefficients of the step as an affine function of the distance-to-travel coordinate.

        Up pulses act on u = x, down pulses on u = 1 - x; in both cases one pulse moves u by
        A - B u (units of the device's own range; `k` = nominal range / device range converts the
        nominal-range step sizes). Returns (A_up, B_up, A_down, B_down).
        """
        r = self.reference_point
        gu, gd = self.soft_bound_up, self.soft_bound_down
        a_up = dw_up * k * (1.0 + gu * r / (1.0 - r))
        b_up = dw_up * k * (gu / (1.0 - r))
        a_dn = dw_down * k * (1.0 - gd + gd / r)
        b_dn = dw_down * k * (gd / r)
        return a_up, b_up, a_dn, b_dn


_COMPONENTS = {
    "programming": ProgrammingNoise,
    "read": ReadNoise,
    "drift": Drift,
    "pulse": PulseResponse,
}


@dataclass(frozen=True)
class DeviceModel:
    """A memory technology as data. Units: siemens and seconds.

    Attributes:
        g_min, g_max: nominal conductance range (siemens), 0 <= g_min < g_max.
        n_levels: number of programmable levels on the uniform grid
            g_min + k (g_max - g_min) / (n_levels - 1); None = continuous.
        programming: `ProgrammingNoise` (error of a programming event, drawn once).
        read: `ReadNoise` (per read).
        drift: `Drift` (power law in time, nu drawn once per programming).
        t0: reference time (seconds) of the drift law and the 1/f noise: the first read after
            programming (aihwkit's `t_0`), > 0.
        g_max_dtod: device-to-device spread of the maximum conductance, relative std of g_max
            (drawn once per device at construction; a device cannot be set above its own g_max).
        stuck_at_min, stuck_at_max: fault rates in [0, 1] with sum <= 1: the fraction of devices
            stuck at g_min / at their g_max (drawn once; they ignore programming and pulses).
        pulse: `PulseResponse` (update pulses).
        name: label.
    """

    g_min: float = 0.0
    g_max: float = 25e-6
    n_levels: int | None = None
    programming: ProgrammingNoise = field(default_factory=ProgrammingNoise)
    read: ReadNoise = field(default_factory=ReadNoise)
    drift: Drift = field(default_factory=Drift)
    t0: float = 20.0
    g_max_dtod: float = 0.0
    stuck_at_min: float = 0.0
    stuck_at_max: float = 0.0
    pulse: PulseResponse = field(default_factory=PulseResponse)
    name: str = "custom"

    def __post_init__(self) -> None:
        g_min = _real(self.g_min, "g_min")
        g_max = _real(self.g_max, "g_max")
        if g_min < 0:
            raise ValueError(f"g_min must be >= 0 siemens, got {g_min}")
        if not g_min < g_max:
            raise ValueError(f"g_min must be < g_max (siemens), got g_min={g_min}, g_max={g_max}")
        object.__setattr__(self, "g_min", g_min)
        object.__setattr__(self, "g_max", g_max)
        if self.n_levels is not None:
            if isinstance(self.n_levels, bool) or not isinstance(self.n_levels, int):
                raise TypeError(
                    f"n_levels must be an int >= 2 or None, got {type(self.n_levels).__name__}"
                )
            if self.n_levels < 2:
                raise ValueError(f"n_levels must be >= 2 or None (continuous), got {self.n_levels}")
        for name, cls in _COMPONENTS.items():
            if not isinstance(getattr(self, name), cls):
                got = type(getattr(self, name)).__name__
                raise TypeError(f"{name} must be a {cls.__name__}, got {got}")
        object.__setattr__(self, "t0", _in_range(self.t0, "t0", 0, math.inf, lo_open=True))
        object.__setattr__(
            self, "g_max_dtod", _in_range(self.g_max_dtod, "g_max_dtod", 0, math.inf)
        )
        smin = _in_range(self.stuck_at_min, "stuck_at_min", 0, 1)
        smax = _in_range(self.stuck_at_max, "stuck_at_max", 0, 1)
        if smin + smax > 1:
            raise ValueError(f"stuck_at_min + stuck_at_max must be <= 1, got {smin} + {smax}")
        object.__setattr__(self, "stuck_at_min", smin)
        object.__setattr__(self, "stuck_at_max", smax)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")

    @property
    def g_range(self) -> float:
        """Nominal conductance range g_max - g_min (siemens)."""
        return self.g_max - self.g_min

    def level_grid(self, dtype: torch.dtype = torch.float64) -> Tensor | None:
        """The programmable levels (siemens), shape (n_levels,), or None for a continuous device."""
        if self.n_levels is None:
            return None
        k = torch.arange(self.n_levels, dtype=dtype)
        return self.g_min + k * (self.g_range / (self.n_levels - 1))

    def quantize(self, g: Tensor) -> Tensor:
        """Nearest level of the grid (identity if continuous), clipped to [g_min, g_max]."""
        g = g.clamp(self.g_min, self.g_max)
        if self.n_levels is None:
            return g
        step = self.g_range / (self.n_levels - 1)
        return self.g_min + torch.round((g - self.g_min) / step) * step

    def summary(self) -> dict[str, Any]:
        """Flat dict of every parameter (for logs and reports)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _COMPONENTS:
                for g in fields(v):
                    out[f"{f.name}.{g.name}"] = getattr(v, g.name)
            else:
                out[f.name] = v
        return out


# --------------------------------------------------------------------------------------------
# presets


def ideal() -> DeviceModel:
    """An ideal device: exact programming, no noise, drift, spread or faults; continuous levels.

    Conductance scale g_max = 25 uS, g_min = 0: the same range as `pcm()` (so presets compare
    directly); an ideal crossbar is scale-free, W = (G_plus - G_minus) / g_ref.
    Pulse response: constant step dw_min = 1e-4 of the range, symmetric, noise-free. This is the
    step of aihwkit's `IdealizedPresetDevice` (dw_min = 0.0002 on the weight range [-1, 1], i.e.
    1e-4 of the range, "10000 states"; after Gokmen & Vlasov, Front. Neurosci. 2016, and Rasch,
    Gokmen & Haensch, IEEE Design & Test 2019), with its device-to-device and cycle-to-cycle
    spreads at 0.
    """
    return DeviceModel(
        g_min=0.0,
        g_max=25e-6,
        pulse=PulseResponse(dw_min=1e-4),
        name="ideal",
    )


_PCM_PROG_COEFFS_US = (0.26348, 1.9650, -1.1731)  # uS, for g_max = 25 uS (aihwkit prog_coeff)
_PCM_G_MAX = 25e-6


def pcm() -> DeviceModel:
    """Phase-change memory: the statistical model of Nandakumar et al. (ICECS 2019) and Joshi et al.
    (Nat. Commun. 11, 2473, 2020), as implemented in IBM aihwkit's `PCMLikeNoiseModel`
    (aihwkit/inference/noise/pcm.py), mirrored number for number:

    * g_min = 0, g_max = 25 uS: aihwkit's default
      `SinglePairConductanceConverter(g_max=25, g_min=0)`
      and the g_max the PCM fits are referenced to (`prog_coeff_g_max_reference = 25`).
    * programming noise sigma = (0.26348 + 1.9650 g_r - 1.1731 g_r^2) uS, g_r = g_target / g_max
      (aihwkit `prog_coeff = [0.26348, 1.9650, -1.1731]`); stored relative to g_max (coefficients
      / 25 uS).
    * drift g(t) = g_prog ((t + t0) / t0)^(-nu), t0 = 20 s (aihwkit `t_0 = 20`), nu = |N(mu, sigma)|
      drawn once per device, mu = clip(-0.0155 ln g_r + 0.0244, 0.049, 0.1),
      sigma = clip(-0.0125 ln g_r - 0.0059, 0.008, 0.045), g_r floored at 1e-7 (aihwkit
      `generate_drift_coefficients`, `_ZERO_CLIP = 1e-7`).
    * 1/f read noise q = min(0.0088 / max(g_r^0.65, 1e-3), 0.2), sigma_read = q sqrt(ln((t + t_read)
      / (2 t_read))), t_read = 250 ns, applied as g(t) + |g(t)| sigma_read N(0, 1) with t the time
      since programming plus t0 (aihwkit `apply_drift_noise_to_conductance`).
    * g_max_dtod = 0 and no stuck-at faults: the programming-noise fit was measured after iterative
      program-and-verify on ~1M devices, so device-to-device differences are already inside sigma;
      the sources give no fault rate (set `stuck_at_*` for fault studies).
    * pulse response (in-situ updates), from aihwkit's `PCMPresetDevice` (an `ExpStepDevice` fit to
      Nandakumar et al., Front. Neurosci. 2020): dw_min = 0.01 on the weight range [0, 2], i.e.
      0.005 of the range; device-to-device spread of dw_min 0.2, up/down spread 0.05, cycle-to-cycle
      noise 0.6 (relative, multiplicative); unidirectional (only gradual SET pulses, so a pair is
      updated by potentiating G_plus or G_minus). The exponential saturation of the SET step is
      approximated here by a full soft bound toward g_max (reference point mid-range).
    """
    return DeviceModel(
        g_min=0.0,
        g_max=_PCM_G_MAX,
        programming=ProgrammingNoise(
            kind="polynomial", coeffs=tuple(c * 1e-6 / _PCM_G_MAX for c in _PCM_PROG_COEFFS_US)
        ),
        read=ReadNoise(
            kind="pcm_1f", q_coeff=0.0088, q_exponent=0.65, q_floor=1e-3, q_max=0.2, t_read=250e-9
        ),
        drift=Drift(
            kind="pcm",
            mu_coeffs=(-0.0155, 0.0244),
            mu_clip=(0.049, 0.1),
            sigma_coeffs=(-0.0125, -0.0059),
            sigma_clip=(0.008, 0.045),
            g_r_floor=1e-7,
        ),
        t0=20.0,
        g_max_dtod=0.0,
        pulse=PulseResponse(
            dw_min=0.005,
            soft_bound_up=1.0,
            soft_bound_down=0.0,
            reference_point=0.5,
            cycle_noise=0.6,
            cycle_noise_kind="multiplicative",
            dw_min_dtod=0.2,
            up_down_dtod=0.05,
            bidirectional=False,
        ),
        name="pcm",
    )


# aihwkit ReRamWan2022NoiseModel, t = 1 s fit, uS at g_max = 40 uS, ascending powers of g_r
_RRAM_PROG_COEFFS_US = (0.348, 16.030, -43.853, 45.393, -16.815)
_RRAM_G_MAX = 40e-6


def rram() -> DeviceModel:
    """Resistive RAM (HfO2-type filamentary), from two published fits used by IBM aihwkit:

    Programming and reading (inference), aihwkit's `ReRamWan2022NoiseModel`
    (aihwkit/inference/noise/reram.py; Wan et al., Nature 608, 504, 2022):
    * g_max = 40 uS: the g_max the polynomial is referenced to; g_min = 0 (aihwkit's
      `SinglePairConductanceConverter` default).
    * programming noise sigma = (0.348 + 16.030 g_r - 43.853 g_r^2 + 45.393 g_r^3 - 16.815 g_r^4) uS
      (the t = 1 s fit of the model), stored relative to g_max (coefficients / 40 uS).
    * read noise: additive Gaussian with std 1 % of g_max, the "short-term read noise (about 1%)"
      that the model's docstring tells users to add (`w_noise = 0.01`, additive constant).
    * no drift (ReRAM "does not show drift in the usual sense", same docstring); no fault rate.

    Pulse response (in-situ updates), aihwkit's `ReRamSBPresetDevice` (a `SoftBoundsReferenceDevice`
    fit to Gong et al., Nat. Commun. 9, 2102, 2018), mapped onto `PulseResponse`:
    * weight range [-0.75, 1.25] (width 2): dw_min = 0.002 -> 0.001 of the range; the symmetry point
      w = 0 sits at x_ref = 0.75 / 2 = 0.375; full soft bounds both ways (soft_bound = 1);
      up_down = 0.
    * dw_min_dtod = 0.3, up_down_dtod = 0.01, cycle-to-cycle dw_min_std = 3.75 (additive:
      `mult_noise = False`).
    * w_max_dtod = 0.3 / 1.25 (relative to w_max = 1.25, i.e. 0.3 in weight units) -> 0.3 / 2 = 0.15
      of the range: g_max_dtod = 0.15. (The preset's spread of the lower bound and its write noise
      `write_noise_std` are not modelled.)
    """
    return DeviceModel(
        g_min=0.0,
        g_max=_RRAM_G_MAX,
        programming=ProgrammingNoise(
            kind="polynomial", coeffs=tuple(c * 1e-6 / _RRAM_G_MAX for c in _RRAM_PROG_COEFFS_US)
        ),
        read=ReadNoise(kind="gaussian", std=0.01),
        drift=Drift(kind="none"),
        t0=20.0,
        g_max_dtod=0.15,
        pulse=PulseResponse(
            dw_min=0.001,
            up_down=0.0,
            soft_bound_up=1.0,
            soft_bound_down=1.0,
            reference_point=0.375,
            cycle_noise=3.75,
            cycle_noise_kind="additive",
            dw_min_dtod=0.3,
            up_down_dtod=0.01,
            bidirectional=True,
        ),
        name="rram",
    )


def ecram() -> DeviceModel:
    """Lithium-based electrochemical RAM, from aihwkit's `EcRamPresetDevice` (a `LinearStepDevice`
    fit to Tang et al., IEDM 2018, "ECRAM as scalable synaptic cell for high-speed, low-power
    neuromorphic computing"), mapped onto `PulseResponse`:

    * weight range [-0.8276, 1.1724] (width 2): dw_min = 0.002 -> 0.001 of the range; the zero
      weight (where the preset's steps equal dw_min) sits at x_ref = 0.8276 / 2 = 0.4138;
    * linear step slopes gamma_up = 0.1153, gamma_down = 0.5085 -> soft_bound_up / soft_bound_down
      (the step at the upper / lower bound is (1 - gamma) of its value at x_ref: aihwkit's
      `LinearStepDevice` rule); up_down = 0 (the preset is "shifted onto range").
    * dw_min_dtod = 0.1, up_down_dtod = 0.01, cycle-to-cycle dw_min_std = 0.3 multiplicative
      (`mult_noise = True`).
    * w_max_dtod = 0.05 relative to w_max = 1.1724 -> 0.05 * 1.1724 / 2 = 0.0293 of the range:
      g_max_dtod = 0.0293. (The spreads of gamma and of the lower bound are not modelled.)
    * no programming noise, read noise, drift or fault rate is given by the source: all off.
    * conductance scale: the pulse fit is in normalized weight units and gives no conductance
      range; g_min = 0, g_max = 25 uS is chosen equal to `pcm()` so presets compare directly. Every
      effect modelled here is relative to the range, so the scale only sets absolute currents.
    """
    return DeviceModel(
        g_min=0.0,
        g_max=25e-6,
        g_max_dtod=0.05 * 1.1724 / 2.0,
        pulse=PulseResponse(
            dw_min=0.001,
            up_down=0.0,
            soft_bound_up=0.1153,
            soft_bound_down=0.5085,
            reference_point=0.8276 / 2.0,
            cycle_noise=0.3,
            cycle_noise_kind="multiplicative",
            dw_min_dtod=0.1,
            up_down_dtod=0.01,
            bidirectional=True,
        ),
        name="ecram",
    )


PRESETS = {"ideal": ideal, "pcm": pcm, "rram": rram, "ecram": ecram}


def preset(name: str) -> DeviceModel:
    """The preset `DeviceModel` called `name` (one of `PRESETS`: ideal, pcm, rram, ecram)."""
    if not isinstance(name, str):
        raise TypeError(
            f"preset name must be a string, one of {sorted(PRESETS)}, got {type(name).__name__}"
        )
    key = name.strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown device preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[key]()


# --------------------------------------------------------------------------------------------
# the state of one array of devices

_NOT_STUCK, _STUCK_MIN, _STUCK_MAX = 0, 1, 2


# Largest per-pulse soft-bound coefficient B (see `DeviceArray.pulse`).
_B_MAX = 1.0 - 1e-9


def _pulse_sums(b: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """S = sum_{k<n} (1-b)^k = (1 - (1-b)^n) / b and Q = sum_{k<n} (1-b)^{2k}, elementwise; both
    tend to n as b -> 0 (computed with expm1/log1p so small b loses no precision)."""
    small = b < 1e-12
    bs = torch.where(small, torch.ones_like(b), b)
    log1m = torch.log1p(-bs)
    s = -torch.expm1(n * log1m) / bs
    q = -torch.expm1(2.0 * n * log1m) / (-torch.expm1(2.0 * log1m))
    return torch.where(small, n, s), torch.where(small, n, q)


class DeviceArray(nn.Module):
    """State of one array of devices of a `DeviceModel` (tensors of shape `shape`, in siemens/s).

    Buffers (all of shape `shape` unless noted):
        g_target: the conductance last asked for (after level quantization and the device bound).
        g_prog: the conductance as written (target + programming error, or after pulses).
        prog_error: g_prog - g_target of the last programming event.
        nu: drift exponent (drawn at programming).
        t_prog: array-clock time (s) the device was last written (program or pulse).
        g_max_dev: the device's own maximum conductance (device-to-device spread).
        dw_up, dw_down: the device's pulse steps at the reference point (fractions of the range).
        stuck: int8 code, 0 = working, 1 = stuck at g_min, 2 = stuck at g_max_dev.
        pulses_up, pulses_down: int64 counts of pulses sent since construction.
        conductance: current noise-free conductance g(t) (drift applied); read_sigma: per-device
            read-noise std (siemens) at the current age. Both refreshed on every state change.

    The array clock (`time`, seconds) restarts at 0 on every `program`; `drift(t)` moves it forward.
    `version` counts state changes (owners cache things derived from the conductances).

    Args:
        shape: array shape, e.g. (out_features, in_features).
        model: the `DeviceModel`.
        generator / seed: the array's random stream for manufacturing, programming and pulses; read
            noise uses a child stream derived from it at construction.
        dtype: floating dtype of the state.
    """

    def __init__(
        self,
        shape: Sequence[int],
        model: DeviceModel,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if not isinstance(model, DeviceModel):
            raise TypeError(f"model must be a DeviceModel, got {type(model).__name__}")
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"shape must be a non-empty tuple of ints >= 1, got {shape}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype}")
        if model.t0 + model.read.t_read > max_age(dtype):
            raise ValueError(
                f"model.t0 = {model.t0} s is too large for a {dtype} device state (t0 + t_read "
                f"must be <= {max_age(dtype):.6g} s)"
            )
        self.model = model
        self.shape = shape
        self.generator = make_generator(generator, seed)
        self.read_generator = derive_generator(self.generator)
        self._time = 0.0
        self.version = 0
        self._read_mode = "white"
        self._ou: OUProcess | None = None

        m, p = model, model.pulse
        kw = {"dtype": dtype}
        # Manufacturing draws, always in this order (common random numbers across models).
        xi_gmax = randn(shape, self.generator, **kw)
        xi_dw = randn(shape, self.generator, **kw)
        xi_ud = randn(shape, self.generator, **kw)
        u_stuck = rand(shape, self.generator, **kw)

        # a device keeps at least 1 % of the nominal range, so positions x stay well defined
        g_max_dev = (m.g_max * (1.0 + m.g_max_dtod * xi_gmax)).clamp_min(m.g_min + 0.01 * m.g_range)
        dw = (p.dw_min * (1.0 + p.dw_min_dtod * xi_dw)).clamp_min(0.0)
        beta = (p.up_down + p.up_down_dtod * xi_ud).clamp(-1.0, 1.0)
        dw_up = dw * (1.0 + beta)
        dw_down = dw * (1.0 - beta) if p.bidirectional else torch.zeros_like(dw)
        stuck = torch.zeros(shape, dtype=torch.int8)
        stuck[u_stuck < m.stuck_at_min] = _STUCK_MIN
        stuck[(u_stuck >= m.stuck_at_min) & (u_stuck < m.stuck_at_min + m.stuck_at_max)] = (
            _STUCK_MAX
        )

        g0 = torch.full(shape, m.g_min, **kw)
        self.register_buffer("g_max_dev", g_max_dev)
        self.register_buffer("dw_up", dw_up)
        self.register_buffer("dw_down", dw_down)
        self.register_buffer("stuck", stuck)
        self.register_buffer("g_target", g0.clone())
        self.register_buffer("g_prog", self._apply_stuck(g0.clone(), stuck, g_max_dev))
        self.register_buffer("prog_error", torch.zeros(shape, **kw))
        self.register_buffer("nu", torch.zeros(shape, **kw))
        self.register_buffer("t_prog", torch.zeros(shape, **kw))
        self.register_buffer("pulses_up", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("pulses_down", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("conductance", self.g_prog.clone())
        self.register_buffer("read_sigma", torch.zeros(shape, **kw))
        self._refresh()

    # -- small helpers -------------------------------------------------------------------------
    def _apply_stuck(self, g: Tensor, stuck: Tensor | None = None, g_max_dev: Tensor | None = None):
        stuck = self.stuck if stuck is None else stuck
        g_max_dev = self.g_max_dev if g_max_dev is None else g_max_dev
        g = torch.where(stuck == _STUCK_MIN, torch.full_like(g, self.model.g_min), g)
        return torch.where(stuck == _STUCK_MAX, g_max_dev, g)

    def _clip(self, g: Tensor) -> Tensor:
        """Clip to each device's bounds [g_min, g_max_dev]."""
        return torch.minimum(g.clamp_min(self.model.g_min), self.g_max_dev)

    def _draw(self, gen: torch.Generator) -> Tensor:
        return randn(self.shape, gen, dtype=self.g_prog.dtype, device=self.g_prog.device)

    def _check_tensor(self, t: Tensor, name: str) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != self.shape:
            raise ValueError(f"{name} must have shape {self.shape}, got {tuple(t.shape)}")
        return t.to(device=self.g_prog.device)

    @property
    def stuck_mask(self) -> Tensor:
        """Bool mask of stuck devices."""
        return self.stuck != _NOT_STUCK

    @property
    def stuck_value(self) -> Tensor:
        """Conductance a stuck device sits at (g_min or its g_max_dev); arbitrary elsewhere."""
        return torch.where(
            self.stuck == _STUCK_MIN,
            torch.full_like(self.g_max_dev, self.model.g_min),
            self.g_max_dev,
        )

    @property
    def time(self) -> float:
        """Array clock (seconds since the last `program`)."""
        return self._time

    @property
    def age(self) -> Tensor:
        """Seconds since each device was last written (program or pulse)."""
        return (self._time - self.t_prog).clamp_min(0.0)

    def get_extra_state(self) -> dict[str, Any]:
        return {"time": self._time, "version": self.version}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._time = float(state["time"])
        self.version = int(state.get("version", 0)) + 1
        self._refresh()

    # -- state updates -------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute the current conductance and read-noise std from the stored history."""
        m = self.model
        age = self.age
        g = self.g_prog
        if m.drift.kind != "none":
            # ((age + t0) / t0)^-nu as exp(-nu ln(1 + age / t0)); for t0 < 4 s the quotient can
            # overflow at ages near `max_time`, where ln(age) - ln(t0) is the same number
            log_age = torch.log1p(age / m.t0)
            log_age = torch.where(
                torch.isfinite(log_age), log_age, torch.log(age) - math.log(m.t0)
            )
            g = g * torch.exp(-(self.nu * log_age))
        # no clip: g_prog is >= 0 (programming clamps, pulses clip to the device's bounds) and
        # drift only lowers it
        g = self._apply_stuck(g)
        self.conductance = g
        self.read_sigma = m.read.sigma(g, self.g_prog, age, m.t0, m.g_max)
        self.version += 1

    @torch.no_grad()
    def program(self, g_target: Tensor) -> None:
        """Program every working device to `g_target` (siemens, shape `shape`); restarts the clock.

        The target is clipped to [g_min, g_max] and put on the level grid (`n_levels`); the
        programming error (`ProgrammingNoise`) and the drift exponent nu are drawn now and kept.
        The written conductance is clamped at 0 S (`programming.clip` "zero", aihwkit's rule) or
        clipped, target and result, to the device's own bounds ("device"). Stuck devices keep
        their stuck value (and do not drift).
        """
        g_target = self._check_tensor(g_target, "g_target")
        if not bool(torch.isfinite(g_target).all()):
            raise ValueError("g_target must be finite")
        m = self.model
        xi_prog = self._draw(self.generator)
        xi_nu = self._draw(self.generator)
        g_t = m.quantize(g_target.to(self.g_prog.dtype))
        by_device = m.programming.clip == "device"
        if by_device:
            g_t = self._clip(g_t)
        sigma = m.programming.sigma(g_t, m.g_max)
        g_p = g_t + sigma * xi_prog
        g_p = self._clip(g_p) if by_device else g_p.clamp_min(0.0)
        g_p = self._apply_stuck(g_p)
        nu = m.drift.draw(g_t, m.g_max, xi_nu)
        self.g_target = g_t
        self.g_prog = g_p
        self.prog_error = g_p - g_t
        self.nu = torch.where(self.stuck_mask, torch.zeros_like(nu), nu)
        self._time = 0.0
        self.t_prog = torch.zeros_like(self.t_prog)
        self._refresh()

    @property
    def max_time(self) -> float:
        """The oldest array time (seconds) `drift` accepts: `max_age` of the state's dtype."""
        return max_age(self.g_prog.dtype)

    @torch.no_grad()
    def drift(self, t_seconds: float) -> None:
        """Advance the array clock to `t_seconds` after the last `program` (>= the current time,
        <= `max_time`: older ages cannot be represented in the state's dtype)."""
        t = check_time(t_seconds, "t_seconds", self.max_time)
        if t < self._time:
            raise ValueError(
                f"t_seconds must be >= the current array time {self._time} s (time runs forward; "
                f"re-program to start over), got {t_seconds}"
            )
        self._time = t
        self._refresh()

    def _nominal_coeffs(self) -> tuple[float, float, float, float]:
        p = self.model.pulse
        up = p.dw_min * (1.0 + p.up_down)
        down = p.dw_min * (1.0 - p.up_down) if p.bidirectional else 0.0
        a_up, b_up, a_dn, b_dn = p.linear_coeffs(torch.tensor(up), torch.tensor(down), 1.0)
        return float(a_up), float(b_up), float(a_dn), float(b_dn)

    def nominal_step(self, up: bool) -> Tensor:
        """Expected conductance change (siemens, >= 0) of one up (or down) pulse of the nominal
        device at each device's current conductance, limited by the room left to that bound."""
        m = self.model
        g = self.conductance
        x = ((g - m.g_min) / m.g_range).clamp(0.0, 1.0)
        a_up, b_up, a_dn, b_dn = self._nominal_coeffs()
        if up:
            step = (a_up - b_up * x).clamp_min(0.0) * m.g_range
            room = (self.g_max_dev - g).clamp_min(0.0)
        else:
            step = (a_dn - b_dn * (1.0 - x)).clamp_min(0.0) * m.g_range
            room = (g - m.g_min).clamp_min(0.0)
        return torch.minimum(step, room)

    @torch.no_grad()
    def pulses_for(
        self, delta_g: Tensor, *, model_aware: bool = True, max_pulses: int | None = None
    ) -> Tensor:
        """Signed pulse counts (int64, + up, - down) that realize `delta_g` (siemens) per device.

        model_aware=True inverts the nominal response (no device-to-device spread, no cycle noise)
        at each device's current conductance: n = ln(1 - B du / (A - B u0)) / ln(1 - B), rounded, so
        a device with the nominal response realizes the request in expectation to within half a
        step. model_aware=False is the naive controller n = round(|delta_g| / (dw_min (g_max -
        g_min))) that ignores soft bounds and asymmetry (they then show up as systematic errors).
        Requests beyond a bound are cut at the bound, and a request that reaches a bound (within
        1 % of dw_min) is rounded up instead of to nearest: the bound clips the overshoot, so the
        device lands exactly on it. Counts are capped at `max_pulses` (default: 4 / dw_min, four
        sweeps of the range at the nominal step).
        """
        delta_g = self._check_tensor(delta_g, "delta_g").to(self.g_prog.dtype)
        if not bool(torch.isfinite(delta_g).all()):
            raise ValueError("delta_g must be finite")
        p, m = self.model.pulse, self.model
        if not p.bidirectional and bool((delta_g < 0).any()):
            raise ValueError(
                f"device {m.name!r} accepts only up pulses (pulse.bidirectional=False): "
                "delta_g must be >= 0"
            )
        if max_pulses is None:
            cap = int(math.ceil(4.0 / p.dw_min))
        else:
            if isinstance(max_pulses, bool) or not isinstance(max_pulses, int) or max_pulses < 0:
                raise ValueError(f"max_pulses must be an int >= 0 or None, got {max_pulses}")
            cap = max_pulses
        x0 = (self.conductance - m.g_min) / m.g_range
        xt = x0 + delta_g / m.g_range
        tol = 0.01 * p.dw_min
        to_bound = (xt <= tol) | (xt >= 1.0 - tol)
        xt = xt.clamp(0.0, 1.0)
        up = xt >= x0
        if not model_aware:
            n = (xt - x0).abs() / p.dw_min
        else:
            a_up, b_up, a_dn, b_dn = self._nominal_coeffs()
            a = torch.where(up, torch.full_like(x0, a_up), torch.full_like(x0, a_dn))
            b = torch.where(up, torch.full_like(x0, b_up), torch.full_like(x0, b_dn))
            b = b.clamp(max=_B_MAX)  # as in `pulse`
            u0 = torch.where(up, x0, 1.0 - x0)
            du = (xt - x0).abs()
            rate = (a - b * u0).clamp_min(1e-30)  # mean step at u0
            arg = 1.0 - b * du / rate
            small = b < 1e-12
            b_safe = torch.where(small, torch.ones_like(b), b)
            n_soft = torch.log(arg.clamp_min(1e-30)) / torch.log1p(-b_safe)
            n_soft = torch.where(arg <= 0, torch.full_like(n_soft, float(cap)), n_soft)
            n = torch.where(small, du / a.clamp_min(1e-30), n_soft)
        n = torch.where(to_bound, torch.ceil(n - 1e-9), torch.round(n))
        n = n.clamp(0, cap).to(torch.int64)
        return torch.where(up, n, -n)

    @torch.no_grad()
    def pulse(self, n: Tensor) -> Tensor:
        """Apply `n` pulses per device (int tensor of shape `shape`; + = up, - = down) and return
        the conductance change (siemens).

        The n pulses of a device compose exactly in mean and variance: with the step A - B u of
        `PulseResponse.linear_coeffs` (u = distance travelled coordinate), the mean path is
        u_n = u0 + (A - B u0)(1 - (1 - B)^n) / B, and the cycle-to-cycle noise accumulates with
        variance (A - B u0)^2 / B^2 [((1 - B)^2 + B^2 s^2)^n - (1 - B)^(2n)] (multiplicative, s =
        cycle_noise) or (s dw)^2 (1 - (1 - B)^(2n)) / (1 - (1 - B)^2) (additive); the result is
        drawn Gaussian with those moments, then clipped to [g_min, g_max_dev] and put on the level
        grid (a multi-level device holds only its levels: a change under half a level is lost).
        Pulsed devices restart their drift from the new value (g_prog, t_prog = now). Stuck devices
        do not move; their pulses are still counted (they were sent).
        """
        n = self._check_tensor(n, "n")
        if n.dtype.is_floating_point or n.dtype.is_complex or n.dtype == torch.bool:
            raise TypeError(f"n must be an integer tensor of pulse counts, got {n.dtype}")
        m, p = self.model, self.model.pulse
        if not p.bidirectional and bool((n < 0).any()):
            raise ValueError(f"device {m.name!r} accepts only up pulses: n must be >= 0")
        dtype = self.g_prog.dtype
        xi = self._draw(self.generator)  # always drawn: the stream does not depend on n
        cnt = n.abs().to(dtype)
        up = n > 0
        r_dev = self.g_max_dev - m.g_min
        k = m.g_range / r_dev
        a_up, b_up, a_dn, b_dn = p.linear_coeffs(self.dw_up, self.dw_down, k)
        a = torch.where(up, a_up, a_dn)
        # B >= 1 (a device whose own range is tiny next to the nominal one: k = range / own range
        # is large) would make one pulse overshoot the soft bound and (1 - B)^n oscillate (NaN in
        # the closed forms): such a device saturates, so B is capped just below 1.
        b = torch.where(up, b_up, b_dn).clamp(max=_B_MAX)
        g0 = self.conductance
        x0 = ((g0 - m.g_min) / r_dev).clamp(0.0, 1.0)
        u0 = torch.where(up, x0, 1.0 - x0)
        rate = a - b * u0
        s_sum, q_sum = _pulse_sums(b, cnt)
        mean = u0 + rate * s_sum
        if p.cycle_noise == 0.0:
            var = torch.zeros_like(mean)
        elif p.cycle_noise_kind == "additive":
            dw_dir = torch.where(up, self.dw_up, self.dw_down) * k
            var = (p.cycle_noise * dw_dir) ** 2 * q_sum
        else:
            one_b = 1.0 - b
            c = one_b * one_b
            d = (b * p.cycle_noise) ** 2
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
            var = torch.where(b < 1e-12, rate**2 * p.cycle_noise**2 * cnt, var_soft)
        u_n = (mean + var.clamp_min(0.0).sqrt() * xi).clamp(0.0, 1.0)
        x_n = torch.where(up, u_n, 1.0 - u_n)
        g_new = m.g_min + x_n * r_dev
        if m.n_levels is not None:
            g_new = m.quantize(g_new)
        g_new = self._clip(g_new)
        moved = (n != 0) & ~self.stuck_mask
        g_new = torch.where(moved, g_new, g0)
        self.g_prog = torch.where(moved, g_new, self.g_prog)
        self.t_prog = torch.where(moved, torch.full_like(self.t_prog, self._time), self.t_prog)
        self.pulses_up = self.pulses_up + n.clamp_min(0).to(torch.int64)
        self.pulses_down = self.pulses_down + (-n).clamp_min(0).to(torch.int64)
        self._refresh()
        return self.conductance - g0

    # -- reads ------------------------------------------------------------------------------------
    @property
    def read_mode(self) -> str:
        """How read noise evolves between reads: "white", "quenched" or "ou"."""
        return self._read_mode

    def set_read_noise(self, mode: str = "white", tau_c: float | None = None) -> None:
        """Choose how read noise evolves between reads.

        * "white": a fresh draw on every read (default).
        * "quenched": one draw, frozen until `resample_read_noise()` (e.g. for one whole settle).
        * "ou": an Ornstein-Uhlenbeck process with correlation time `tau_c` (seconds), advanced by
          `advance(dt)`; reads see its current value (`OUProcess`).
        The noise is standardized; each device scales it by its `read_sigma`.
        """
        _kind(mode, "mode", READ_NOISE_MODES)
        if mode == "ou":
            if tau_c is None:
                raise ValueError("tau_c (seconds, >= 0) is required for mode 'ou'")
        elif tau_c is not None:
            raise ValueError(f"tau_c is only used with mode 'ou', got mode {mode!r}")
        self._read_mode = mode
        if mode == "white":
            self._ou = None
            return
        self._ou = OUProcess(
            self.shape,
            sigma=1.0,
            tau_c=math.inf if mode == "quenched" else tau_c,
            quenched=mode == "quenched",
            generator=self.read_generator,
            dtype=self.g_prog.dtype,
            device=self.g_prog.device,
        )

    def resample_read_noise(self) -> None:
        """Draw a new frozen / stationary read-noise state (quenched and OU modes)."""
        if self._ou is not None:
            self._ou.reset()

    def advance(self, dt: float) -> None:
        """Advance the read-noise process by `dt` seconds (OU mode; no effect otherwise)."""
        if self._ou is not None:
            self._ou.step(dt)

    def read(self) -> Tensor:
        """Conductances seen by one read (siemens, shape `shape`): g(t) + read_sigma xi, >= 0."""
        if not self.model.read.active:
            return self.conductance
        g = self.conductance
        if self._ou is None:
            xi = randn(self.shape, self.read_generator, dtype=g.dtype, device=g.device)
        else:
            xi = self._ou.value
            if xi.device != g.device or xi.dtype != g.dtype:
                self._ou.to(device=g.device, dtype=g.dtype)
                xi = self._ou.value
        return (g + self.read_sigma * xi).clamp_min(0.0)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, model={self.model.name!r}, time={self._time}"
