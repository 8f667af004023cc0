"""Device models (configuration as data) and the state of one array of devices.

A `DeviceModel` is a frozen dataclass that describes a memory technology: conductance range,
levels, programming noise, read noise, drift, device-to-device spread, stuck-at faults and the
pulse response used by in-situ updates. It holds no state and no callables, only numbers, so it can
be printed, compared, saved and swept. Presets `ideal()`, `pcm()`, `rram()`, `ecram()` cite the
source of every number; `preset(name)` looks one up by name.

A `DeviceArray` is the state of one physical array of such devices (e.g. the G_plus half of a
crossbar tile). A device keeps its own history: every random property is drawn once and stored:

* at construction (manufacturing): the per-device bounds (device-to-device spread of both, about
  the pulse response's reference point), the per-device pulse step scales and up/down bias, and
  the stuck-at faults;
* at `program` (a programming event): the programming error and the drift exponent nu;
* only read noise is drawn at read time (it is a read-time process), from the array's own stream,
  white (fresh each read), quenched (frozen for a settle) or time-correlated (`OUProcess`);
* pulses draw their cycle-to-cycle noise from the array's stream when they are applied.

The manufacturing and programming draws are always made, in a fixed order, whatever the model's
parameters, so two arrays built with the same seed see the same underlying random numbers under
different device models (common random numbers: an ablation changes one effect, not the whole
noise pattern). Pulses are the exception: the linear step draws once per call, the exponential
step once per pulse slot.

How a pulse moves a device is the job of its pulse response (`circuits.pulses`:
`PulseResponse`, the linear step; `ExpStepResponse`, the exponential step); `DeviceArray` only
keeps the per-device parameters, the bounds and the bookkeeping.

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

from ._checks import _in_range, _kind, _real, _real_tuple
from .noise import OUProcess, derive_generator, make_generator, rand, randn
from .pulses import PULSE_LAWS, ExpStepResponse, PulseDevices, PulseResponse

__all__ = [
    "DeviceModel",
    "ProgrammingNoise",
    "ReadNoise",
    "Drift",
    "PulseResponse",
    "ExpStepResponse",
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


_COMPONENTS = {
    "programming": ProgrammingNoise,
    "read": ReadNoise,
    "drift": Drift,
    "pulse": PULSE_LAWS,
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
        g_max_dtod, g_min_dtod: device-to-device spreads of each device's upper and lower
            bound (aihwkit's `w_max_dtod`, `w_min_dtod`): relative std of the distance from the
            pulse response's reference point (where aihwkit's weight is 0,
            g_min + pulse.reference_point (g_max - g_min)) to the nominal g_max / g_min. Drawn
            once per device at construction (`DeviceArray.g_max_dev`, `.g_min_dev`); pulses keep
            a device inside its own bounds, programming does so only with
            `programming.clip="device"`. A lower bound below 0 S stops at 0 S.
        stuck_at_min, stuck_at_max: fault rates in [0, 1] with sum <= 1: the fraction of devices
            stuck at their own lower / upper bound (drawn once; they ignore programming and
            pulses).
        pulse: `PulseResponse` (linear step) or `ExpStepResponse` (exponential step): the
            response to update pulses (`circuits.pulses`).
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
    g_min_dtod: float = 0.0
    stuck_at_min: float = 0.0
    stuck_at_max: float = 0.0
    pulse: PulseResponse | ExpStepResponse = field(default_factory=PulseResponse)
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
                want = " or ".join(c.__name__ for c in cls) if isinstance(cls, tuple) else (
                    cls.__name__)
                raise TypeError(f"{name} must be a {want}, got {got}")
        object.__setattr__(self, "t0", _in_range(self.t0, "t0", 0, math.inf, lo_open=True))
        for name in ("g_max_dtod", "g_min_dtod"):
            object.__setattr__(self, name, _in_range(getattr(self, name), name, 0, math.inf))
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

    @property
    def g_w0(self) -> float:
        """Conductance (siemens) of the pulse response's reference point, where aihwkit's device
        weight is 0: g_min + pulse.reference_point (g_max - g_min)."""
        return self.g_min + self.pulse.reference_point * self.g_range

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

    * g_min = 0, g_max = 25 uS: no source; the range of `pcm()`, so that presets compare
      directly (an ideal crossbar is scale-free, W = (G_plus - G_minus) / g_ref).
    * pulse response: constant step dw_min = 1e-4 of the range, symmetric, noise-free: the step
      of aihwkit's `IdealizedPresetDevice` (src/aihwkit/simulator/presets/devices.py; dw_min =
      0.0002 on the weight range [-1, 1], i.e. 1e-4 of the range, "10000 states"; after Gokmen &
      Vlasov, Front. Neurosci. 2016, and Rasch, Gokmen & Haensch, IEEE Design & Test 2019), with
      its reference point w = 0 at mid-range (reference_point 0.5) and with its device-to-device
      and cycle-to-cycle spreads (0.3 each in the preset) set to 0: this preset is ideal.
    * t0 = 20 s: the `DeviceModel` default; unused (no drift, no 1/f noise).
    """
    return DeviceModel(
        g_min=0.0,
        g_max=25e-6,
        pulse=PulseResponse(dw_min=1e-4, reference_point=0.5),
        name="ideal",
    )


_PCM_PROG_COEFFS_US = (0.26348, 1.9650, -1.1731)  # uS, for g_max = 25 uS (aihwkit prog_coeff)
_PCM_G_MAX = 25e-6
_PCM_W_RANGE = 2.0  # aihwkit PCMPresetDevice weight range [w_min, w_max] = [0, 2]


def pcm() -> DeviceModel:
    """Phase-change memory, every number from IBM aihwkit's source.

    Inference (programming, drift, read): the statistical model of Nandakumar et al. (ICECS 2019)
    and Joshi et al. (Nat. Commun. 11, 2473, 2020) as implemented in aihwkit's
    `PCMLikeNoiseModel` (src/aihwkit/inference/noise/pcm.py):

    * g_min = 0, g_max = 25 uS: aihwkit's default `SinglePairConductanceConverter(g_max=25,
      g_min=0)` and the g_max the PCM fits are referenced to (`prog_coeff_g_max_reference = 25`).
    * programming noise sigma = (0.26348 + 1.9650 g_r - 1.1731 g_r^2) uS, g_r = g_target / g_max
      (`prog_coeff = [0.26348, 1.9650, -1.1731]`), stored relative to g_max (coefficients /
      25 uS); the written conductance is clamped at 0 S only (`apply_programming_noise_to_
      conductance`: `g_prog.clamp_(min=0.0)`).
    * drift g(t) = g_prog ((t + t0) / t0)^(-nu), t0 = 20 s (`t_0 = 20`), nu = |N(mu, sigma)|
      drawn once per device, mu = clip(-0.0155 ln g_r + 0.0244, 0.049, 0.1),
      sigma = clip(-0.0125 ln g_r - 0.0059, 0.008, 0.045), g_r floored at 1e-7
      (`generate_drift_coefficients`, `_ZERO_CLIP = 1e-7`).
    * 1/f read noise q = min(0.0088 / max(g_r^0.65, 1e-3), 0.2), sigma_read = q sqrt(ln((t + t_read)
      / (2 t_read))), t_read = 250 ns, applied as g(t) + |g(t)| sigma_read N(0, 1) with t the time
      since programming plus t0 (`apply_drift_noise_to_conductance`).
    * n_levels None (continuous), no stuck-at faults: the noise model has no levels and gives
      no fault rate (set `stuck_at_*` for fault studies).

    Update pulses: aihwkit's `PCMPresetDevice` (src/aihwkit/simulator/presets/devices.py; an
    `ExpStepDevice` fit to Nandakumar et al., Front. Neurosci. 2020), its weight range [0, 2]
    mapped onto [g_min, g_max] (the mapping is ours: the pulse fit is in weight units):

    * `ExpStepResponse` with es_a = -1, es_b = 0, es_gamma_up = es_gamma_down = 2.5,
      es_A_up = -27.235, es_A_down = -2.235 (preset `a`, `b`, `gamma_*`, `A_*`): one up pulse
      at x = G / g_max moves dw_min (1 + 27.235 exp(-5 x)) of the range, 0.141 at x = 0, 0.044 at
      x = 0.25, 0.0059 at x = 1.
    * dw_min = 0.01 on the width-2 range -> 0.005; up_down = 0; reference_point = 0 (w_min = 0).
    * device-to-device: dw_min_dtod 0.2, up_down_dtod 0.05, w_max_dtod 0.1 -> g_max_dtod 0.1,
      w_min_dtod 0 -> g_min_dtod 0.
    * cycle-to-cycle: dw_min_std 0.6 -> cycle_noise 0.6, with the complex noise
      dw_min_std_add 0.042 -> cycle_noise_add 0.042 / 2 = 0.021 and dw_min_std_slope 0.108 ->
      cycle_noise_slope 0.108.
    * unidirectional (bidirectional=False): aihwkit uses the preset inside a one-sided unit
      cell (`PCMPresetUnitCell`), gradual SET only, so a pair is updated by potentiating G_plus
      or G_minus. The preset's write noise (0) is not needed; its reset (`reset` 0.01,
      `reset_dtod` 0.02) is not modelled: devices are re-programmed, not reset.
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
        g_max_dtod=0.1,
        g_min_dtod=0.0,
        pulse=ExpStepResponse(
            dw_min=0.01 / _PCM_W_RANGE,
            up_down=0.0,
            reference_point=0.0,
            es_a=-1.0,
            es_b=0.0,
            es_gamma_up=2.5,
            es_gamma_down=2.5,
            es_A_up=-27.235,
            es_A_down=-2.235,
            dw_min_dtod=0.2,
            up_down_dtod=0.05,
            cycle_noise=0.6,
            cycle_noise_add=0.042 / _PCM_W_RANGE,
            cycle_noise_slope=0.108,
            bidirectional=False,
        ),
        name="pcm",
    )


# aihwkit ReRamWan2022NoiseModel, t = 1 s fit, uS at g_max = 40 uS, ascending powers of g_r
_RRAM_PROG_COEFFS_US = (0.348, 16.030, -43.853, 45.393, -16.815)
_RRAM_G_MAX = 40e-6


def rram() -> DeviceModel:
    """Resistive RAM (HfO2-type filamentary), from two published fits used by IBM aihwkit.

    Programming and reading (inference), aihwkit's `ReRamWan2022NoiseModel`
    (src/aihwkit/inference/noise/reram.py; Wan et al., Nature 608, 504, 2022):

    * g_max = 40 uS: the g_max the polynomial is referenced to; g_min = 0 (aihwkit's
      `SinglePairConductanceConverter` default).
    * programming noise sigma = (0.348 + 16.030 g_r - 43.853 g_r^2 + 45.393 g_r^3 - 16.815 g_r^4) uS
      (the t = 1 s fit of the model), stored relative to g_max (coefficients / 40 uS); clamped at
      0 S only (`_apply_poly`).
    * read noise: additive Gaussian with std 1 % of g_max, the "short-term read noise (about 1%)"
      that the model's docstring tells users to add (`w_noise = 0.01`, additive constant).
    * no drift (ReRAM "does not show drift in the usual sense", same docstring; the model's 1-day
      and 2-day polynomials of long-term variation are not modelled), so t0 = 20 s (the
      `DeviceModel` default) is unused. n_levels None and no fault rate: the source gives none
      (aihwkit's `ReRamArrayOMPresetDevice` cites 13.5 % corrupt devices for one measured array,
      but leaves them off by default, as here).

    Update pulses, aihwkit's `ReRamSBPresetDevice` (src/aihwkit/simulator/presets/devices.py; a
    `SoftBoundsReferenceDevice` fit to Gong et al., Nat. Commun. 9, 2102, 2018), its weight range
    [-0.75, 1.25] (width 2) mapped onto [g_min, g_max]:

    * dw_min = 0.002 -> 0.001 of the range; up_down = 0; w = 0 at reference_point
      0.75 / 2 = 0.375 (15 uS).
    * full soft bounds toward each device's own bounds (soft_bound_up = soft_bound_down = 1,
      mean_bound_reference=False: `update_once_mult/add` in rpu_softbounds_reference_device.cpp
      divide by the device's max_bound / min_bound).
    * device-to-device: dw_min_dtod 0.3, up_down_dtod 0.01, w_max_dtod 0.3 / 1.25 -> g_max_dtod
      0.24, w_min_dtod 0.3 / 0.75 -> g_min_dtod 0.4 (both bounds spread about w = 0: the
      symmetry point (scale_up - scale_down) / (scale_up / w_max - scale_down / w_min) spreads
      with the up/down asymmetry only, 0.0046 of the range between its 16 % and 84 %
      quantiles / 2). A lower bound below 0 S (half of the devices: 0.375 (1 + 0.4 xi) of the
      range below 15 uS) stops at 0 S; the soft bound keeps aihwkit's.
    * cycle-to-cycle: dw_min_std 3.75, additive (`mult_noise = False`).
    * not modelled: the write noise `write_noise_std` 56 and the reference device (the preset
      leaves `reference_mean`, `reference_std` 0 and `subtract_symmetry_point` False).
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
        g_max_dtod=0.3 / 1.25,
        g_min_dtod=0.3 / 0.75,
        pulse=PulseResponse(
            dw_min=0.002 / 2.0,
            up_down=0.0,
            soft_bound_up=1.0,
            soft_bound_down=1.0,
            mean_bound_reference=False,
            reference_point=0.75 / 2.0,
            cycle_noise=3.75,
            cycle_noise_kind="additive",
            dw_min_dtod=0.3,
            up_down_dtod=0.01,
            bidirectional=True,
        ),
        name="rram",
    )


def ecram() -> DeviceModel:
    """Lithium-based electrochemical RAM, from aihwkit's `EcRamPresetDevice`
    (src/aihwkit/simulator/presets/devices.py; a `LinearStepDevice` fit to Tang et al., IEDM
    2018, "ECRAM as scalable synaptic cell for high-speed, low-power neuromorphic computing"),
    its weight range [-0.8276, 1.1724] (width 2) mapped onto [g_min, g_max]:

    * dw_min = 0.002 -> 0.001 of the range; up_down = 0 (the preset is "shifted onto range");
      w = 0 at reference_point 0.8276 / 2 = 0.4138.
    * linear step slopes gamma_up = 0.1153, gamma_down = 0.5085 -> soft_bound_up /
      soft_bound_down, relative to the nominal bounds (`mean_bound_reference = True`): the step
      at the upper / lower bound is (1 - gamma) of its value at w = 0.
    * device-to-device: dw_min_dtod 0.1, up_down_dtod 0.01, w_max_dtod 0.05 -> g_max_dtod 0.05,
      w_min_dtod 0.05 -> g_min_dtod 0.05 (both bounds spread about w = 0; a lower bound below
      0 S stops at 0 S). Not modelled: the spreads of gamma (`gamma_*_dtod` 0.05).
    * cycle-to-cycle: dw_min_std 0.3, multiplicative (`mult_noise = True`); write noise 0.
    * no programming noise, read noise, drift, levels or fault rate is given by the source: all
      off (t0 = 20 s, the `DeviceModel` default, is unused).
    * conductance scale: no source (the pulse fit is in weight units); g_min = 0, g_max = 25 uS
      is chosen equal to `pcm()` so presets compare directly. Every effect modelled here is
      relative to the range, so the scale only sets absolute currents.
    """
    return DeviceModel(
        g_min=0.0,
        g_max=25e-6,
        g_max_dtod=0.05,
        g_min_dtod=0.05,
        pulse=PulseResponse(
            dw_min=0.002 / 2.0,
            up_down=0.0,
            soft_bound_up=0.1153,
            soft_bound_down=0.5085,
            mean_bound_reference=True,
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


class DeviceArray(nn.Module):
    """State of one array of devices of a `DeviceModel` (tensors of shape `shape`, in siemens/s).

    Buffers (all of shape `shape` unless noted):
        g_target: the conductance last asked for (after level quantization, and the device's
            bounds with `programming.clip="device"`).
        g_prog: the conductance as written (target + programming error, or after pulses).
        prog_error: g_prog - g_target of the last programming event.
        nu: drift exponent (drawn at programming).
        t_prog: array-clock time (s) the device was last written (program or pulse).
        g_min_dev, g_max_dev: the device's own bounds (siemens; device-to-device spread,
            `DeviceModel.g_min_dtod` / `g_max_dtod`; g_min_dev >= 0).
        w_min_bound, w_max_bound: the same bounds as the pulse law sees them, relative to the
            reference point in units of the nominal range (aihwkit's `w_min_bound_`,
            `w_max_bound_`; w_min_bound may lie below 0 S, where g_min_dev stops).
        dw_up, dw_down: the device's pulse step scales (aihwkit `w_scale_up_`, `w_scale_down_`;
            fractions of the nominal range; `circuits.pulses`).
        stuck: int8 code, 0 = working, 1 = stuck at g_min_dev, 2 = stuck at g_max_dev.
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
        # Manufacturing draws, always in this order (common random numbers across models), the
        # order of aihwkit's PulsedRPUDevice<T>::populate: upper bound, lower bound, gain,
        # up/down spread; then the faults.
        xi_gmax = randn(shape, self.generator, **kw)
        xi_gmin = randn(shape, self.generator, **kw)
        xi_dw = randn(shape, self.generator, **kw)
        xi_ud = randn(shape, self.generator, **kw)
        u_stuck = rand(shape, self.generator, **kw)

        ref = p.reference_point
        w_max = ((1.0 - ref) * (1.0 + m.g_max_dtod * xi_gmax)).abs()
        w_min = -(ref * (1.0 + m.g_min_dtod * xi_gmin)).abs()
        # a device keeps at least 1 % of the nominal range, so its positions stay well defined
        w_max = torch.maximum(w_max, w_min + 0.01)
        g_max_dev = m.g_w0 + w_max * m.g_range
        g_min_dev = (m.g_w0 + w_min * m.g_range).clamp_min(0.0)  # a conductance is >= 0 S
        dw_up, dw_down = p.scales(xi_dw, xi_ud)
        stuck = torch.zeros(shape, dtype=torch.int8)
        stuck[u_stuck < m.stuck_at_min] = _STUCK_MIN
        stuck[(u_stuck >= m.stuck_at_min) & (u_stuck < m.stuck_at_min + m.stuck_at_max)] = (
            _STUCK_MAX
        )

        g0 = torch.full(shape, m.g_min, **kw)
        self.register_buffer("g_min_dev", g_min_dev)
        self.register_buffer("g_max_dev", g_max_dev)
        self.register_buffer("w_min_bound", w_min)
        self.register_buffer("w_max_bound", w_max)
        self.register_buffer("dw_up", dw_up)
        self.register_buffer("dw_down", dw_down)
        self.register_buffer("stuck", stuck)
        self.register_buffer("g_target", g0.clone())
        self.register_buffer("g_prog", g0.clone())
        self.g_prog = self._apply_stuck(self.g_prog)
        self.register_buffer("prog_error", torch.zeros(shape, **kw))
        self.register_buffer("nu", torch.zeros(shape, **kw))
        self.register_buffer("t_prog", torch.zeros(shape, **kw))
        self.register_buffer("pulses_up", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("pulses_down", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("conductance", self.g_prog.clone())
        self.register_buffer("read_sigma", torch.zeros(shape, **kw))
        self._refresh()

    # -- small helpers -------------------------------------------------------------------------
    def _apply_stuck(self, g: Tensor) -> Tensor:
        g = torch.where(self.stuck == _STUCK_MIN, self.g_min_dev, g)
        return torch.where(self.stuck == _STUCK_MAX, self.g_max_dev, g)

    def _clip(self, g: Tensor) -> Tensor:
        """Clip to each device's bounds [g_min_dev, g_max_dev]."""
        return torch.minimum(torch.maximum(g, self.g_min_dev), self.g_max_dev)

    def _position(self, g: Tensor) -> Tensor:
        """Position w = (g - g_w0) / (g_max - g_min) of the pulse law (`circuits.pulses`)."""
        m = self.model
        return (g - m.g_w0) / m.g_range

    def _devices(self) -> PulseDevices:
        return PulseDevices(self.dw_up, self.dw_down, self.w_min_bound, self.w_max_bound)

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
        """Conductance a stuck device sits at (its g_min_dev or g_max_dev); arbitrary elsewhere."""
        return torch.where(self.stuck == _STUCK_MIN, self.g_min_dev, self.g_max_dev)

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

    def nominal_step(self, up: bool) -> Tensor:
        """Expected conductance change (siemens, >= 0) of one up (or down) pulse of the nominal
        device at each device's current conductance, limited by the room left to that bound."""
        m = self.model
        g = self.conductance
        w = self._position(g)
        direction = torch.full(self.shape, bool(up), device=g.device)
        step = m.pulse.mean_step(w, direction, m.pulse.nominal(w)) * m.g_range
        if up:
            room = (self.g_max_dev - g).clamp_min(0.0)
        else:
            room = (g - self.g_min_dev).clamp_min(0.0)
        return torch.minimum(step, room)

    @torch.no_grad()
    def pulses_for(
        self, delta_g: Tensor, *, model_aware: bool = True, max_pulses: int | None = None
    ) -> Tensor:
        """Signed pulse counts (int64, + up, - down) that realize `delta_g` (siemens) per device.

        The direction is the sign of delta_g. model_aware=True inverts the nominal response (no
        device-to-device spread, no cycle noise; `PulseResponse.count` /
        `ExpStepResponse.count`) at each device's current conductance, so a device with the
        nominal response realizes the request in expectation to within half a step.
        model_aware=False is the naive controller n = round(|delta_g| / (granularity (g_max -
        g_min))) with the response's `weight_granularity` (dw_min for a linear step), which
        ignores the shape of the response (it then shows up as a systematic error). Requests
        beyond the nominal range [g_min, g_max] are cut at it (a device already beyond it gets
        no pulses toward it), and a request that reaches a bound (within 1 % of dw_min) is
        rounded up instead of to nearest: the bound clips the overshoot, so the device lands
        exactly on it. Counts are capped at `max_pulses` (default: 4 / dw_min, four sweeps of the
        range at the nominal step scale).
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
        w0 = self._position(self.conductance)
        nominal = p.nominal(w0)
        lo, hi = nominal.w_min, nominal.w_max  # the nominal range in positions
        up = delta_g >= 0
        wt = w0 + delta_g / m.g_range
        tol = 0.01 * p.dw_min
        to_bound = (wt <= lo + tol) | (wt >= hi - tol)
        # cut at the nominal range; never past the start (a device beyond it stays)
        wt = torch.where(up, torch.maximum(torch.minimum(wt, hi), w0),
                         torch.minimum(torch.maximum(wt, lo), w0))
        if not model_aware:
            n = (wt - w0).abs() / p.weight_granularity
        else:
            n = p.count(w0, wt, up, nominal, torch.minimum(lo, w0), torch.maximum(hi, w0), cap)
        n = torch.where(to_bound, torch.ceil(n - 1e-9), torch.round(n))
        n = n.clamp(0, cap).to(torch.int64)
        return torch.where(up, n, -n)

    @torch.no_grad()
    def pulse(self, n: Tensor) -> Tensor:
        """Apply `n` pulses per device (int tensor of shape `shape`; + = up, - = down) and return
        the conductance change (siemens).

        The device's pulse law (`DeviceModel.pulse`: `PulseResponse`, the linear step, composes
        the n pulses in closed form; `ExpStepResponse` applies them one by one) moves each
        device's position with its own step scales and bounds and with cycle-to-cycle noise from
        the array's stream. Positions stay within the device's own bounds [g_min_dev,
        g_max_dev], and a pulse never pushes a device further beyond a bound it already lies
        beyond (programming clamps at 0 S only, so a programmed device may start past its own
        g_max_dev: up pulses then leave it where it is, down pulses move it down). Results are
        put on the level grid (a multi-level device holds only its levels: a change under half
        a level is lost). Pulsed devices restart their drift from the new value (g_prog, t_prog
        = now). Stuck devices do not move; their pulses are still counted (they were sent).
        """
        n = self._check_tensor(n, "n")
        if n.dtype.is_floating_point or n.dtype.is_complex or n.dtype == torch.bool:
            raise TypeError(f"n must be an integer tensor of pulse counts, got {n.dtype}")
        m, p = self.model, self.model.pulse
        if not p.bidirectional and bool((n < 0).any()):
            raise ValueError(f"device {m.name!r} accepts only up pulses: n must be >= 0")
        g0 = self.conductance
        w0 = self._position(g0)
        up = n > 0
        lo, hi = self._position(self.g_min_dev), self._position(self.g_max_dev)
        beyond = torch.where(up, w0 > hi, w0 < lo)  # past the bound it is pushed toward
        w_n = p.advance(w0, n.abs(), up, self._devices(), torch.minimum(lo, w0),
                        torch.maximum(hi, w0), self.generator)
        g_new = m.g_w0 + w_n * m.g_range
        if m.n_levels is not None:
            g_new = m.quantize(g_new)
        g_new = torch.minimum(torch.maximum(g_new, torch.minimum(self.g_min_dev, g0)),
                              torch.maximum(self.g_max_dev, g0))
        moved = (n != 0) & ~self.stuck_mask & ~beyond
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
