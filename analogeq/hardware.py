"""The equilibrium transformer on analog hardware: crossbars, node time constants, noise, energy.

`HardwareConfig` (a frozen, validated dataclass) describes a chip; `EquilibriumTransformer(config,
hardware=HardwareConfig(...))` builds the block on it. What that means, decision by decision:

Which maps sit on crossbars. Every weight-bearing linear map the model builds through its
`_linear` factory: `attn.q`, `attn.k`, `attn.v`, `attn.o`, `ffn.up`, `ffn.down`, the readout
`head`, and the feature projection `embed` of a model with `input_dim` (`maps` selects a subset).
The token and position *tables* (`embed`, `pos` of a token model) are lookups, not
multiply-accumulates: they stay digital and drive every node with a constant input x_in (an input
current per node, held for the whole settle). Norms, softmax and GELU are digital periphery.

Nominal and programmed weights. Each map is a `HardwareLinear`: its nominal `weight` and `bias`
stay digital `nn.Parameter`s (what training updates and what checkpoints keep; parameter names are
those of the digital model), and the weight is realised on a `circuits.AnalogLinear` programmed from
it (`model.program()`; the bias is added digitally after the ADC). Reads use the crossbar's
effective weight (programming error, drift, IR drop, read noise). Gradients with respect to the
nominal weight are straight-through (dF/dW_nominal := dF/dW_effective, the device error held
fixed), added only when autograd records a graph, so settles pay nothing for them.

Converters and their bounds (`dac_bits`, `adc_bits`; None = ideal, the default). In the
continuous-time circuit the crossbar currents charge the node capacitors directly: no converter
sits in the settling loop. Setting the bits models a hybrid chip whose norms, softmax and GELU are
digital: a DAC on each map's inputs clips to [-input_bound, input_bound] and quantizes, an ADC on
each tile's output (before the digital sum of tiles and the bias) does the same on W x. The force
is then piecewise constant and has no exact zero: measured on the CLI's default model (PCM,
quenched noise, IMEX), the force residual floors at 9e-3 (8-bit DAC and ADC), 3.6e-3 (10 bits),
9e-4 (12), 2.2e-4 (14), 5.6e-5 (16), about 4x lower per 2 bits, and adaptive ODE solvers crawl on
the discontinuities. The bounds are fixed numbers in activation units (`input_bound`,
`output_bound`) or, by default, calibrated per map at programming time (also without converters:
the input bound sets the read voltages of the energy figure): `calibration_sigmas` (4) times the
RMS of the map's inputs (resp. of W x, with the programmed weights) over a calibration batch at the
model's own decoupled operating point x_in / (1 + c), on seeded random tokens (standard-normal
features for a feature model) or on the user's inputs (`model.program(calibration=...)`). 4 sigma
clips ~6e-5 of Gaussian entries; x_in / (1 + c) is within a few per cent of z* for the contracting
initial couplings (docs/physics.md section 6). A tile that covers part of a map's inputs gets its
ADC bound scaled by sqrt(tile inputs / map inputs) (partial sums of independent terms). The DAC's
full scale is the read voltage: V_j = x_j * v_read / input_bound.

Node dynamics and time constants. The block becomes the circuit tau_i dz_i/dt = F_i(z): one node
(capacitor C, leak conductance) per state entry, i.e. each token position has its own node array
(and, for the energy figure, its own copy of every crossbar, all read continuously while settling).
`tau` (seconds) is the time unit of F: tau = node_capacitance / leak_conductance, where
leak_conductance is the conductance that realises a unit coefficient of F (the block's leak 1 + c
is (1 + c) leak_conductance to ground). Give `tau`, or the pair, or all three consistently.
Node-to-node mismatch: tau_i = tau r_i, r_i lognormal with mean 1 and relative std `tau_spread`,
drawn once per node of shape (context, C) (manufacturing). In units of the mean tau the hardware
force is F_hw(z) = F(z) / r with leak (1 + c) / r (a (T, C) tensor) and nonlinear N(z) / r: its
fixed points are exactly F's (F_hw = 0 iff F = 0), but every rate is rescaled per node, so the
stability of the relaxation (and of explicit Euler: the leak alone needs eps < 2 min(r) / (1 + c))
changes. `tau_spread_report` measures both.

Read noise (`read_noise`):
* "off": the device's read noise is removed (the device model's `read` replaced by none);
* "quenched" (default): one draw frozen for a whole settle (`model.settle` draws a new one at its
  start unless `resample_read_noise=False`; `model.resample_read_noise()` draws by hand; the CLI
  draws once so that every method settles the same operator). It works with every integrator. It is
  also the physical limit of PCM's 1/f noise on a microsecond settle: its correlation time is far
  longer than tau.
* "white": a fresh draw on every force evaluation (every read of the chip); any integrator runs,
  but the force is random, so residuals floor at the noise level.
* "ou": an Ornstein-Uhlenbeck process with correlation time `tau_c` seconds. The integrators know
  nothing of circuits, so time reaches the crossbars through the Euler-Maruyama integrator: the
  hardware force exposes `noise(z, t)`, which `model.settle(..., method="euler-maruyama")` passes as
  EM's state-dependent `sigma`. EM calls it once per step with the samples' times t (units of
  tau); it advances every crossbar's OU read noise to t * tau seconds (one host sync per step, not
  per force evaluation: the OU decay exp(-dt / tau_c) is computed on the host) and returns the
  nodes' thermal diffusion (`node_noise`, 0 by default). The force evaluated at the end of a step
  sees the noise of the step's start (a lag of one step, negligible for tau_c >> eps tau). Other
  methods have no stochastic clock, so "ou" with them is a ValueError. With read noise the
  residual floors above a small tol; EM's own noise-floor rule judges only its diffusion (set
  `node_noise` > 0), otherwise the run ends at max_steps: read the floor from `result.cycles`.
A batch is B inputs on the same chip, read at the same instants: they share every read-noise draw.

Accounting (`model.settle` on hardware adds to `result.info`):
* `settling_time_s` (batch,): result.t * tau, the time on the method's own clock (exact for the
  ODE reference, first-order for Euler; an implicit method's large steps are not physical time);
  None for root-finders (Anderson), which have no time. It is the time of the first check at which
  the residual met tol, so it is resolved to one step: pass the ODE method a fixed `chunk` (the CLI
  uses 0.25 tau), whose default chunks grow with its step size and can overshoot by several tau.
* `energy_j` (batch,) float64: E = integral over the settle of sum over crossbar maps, token
  positions, and device pairs of (G_plus + G_minus)_ij V_j^2 dt, joules, by the trapezoid rule on
  the loop's per-step observer (`trace.observed`, the power in watts) and `trace.sample_time`
  times tau. Assumptions: each position's crossbars are read continuously (DC read) during the
  settle; V_j = DAC output * v_read / input_bound; currents use the noise-free, drifted
  conductances without IR-drop attenuation, and the activations of the power probe are computed
  with noise-free weights (read noise changes currents by a zero-mean amount; its effect on the
  energy is second order); the readout `head` is read once after settling and is not counted;
  periphery (DAC, ADC, digital) energy is not modelled. None for root-finders (no time, so no
  physical trajectory to integrate).
* `power_w` (batch,): the power at the final state; `tau_s`; `read_noise`.

Complex states (holomorphic EP): the converters have no holomorphic extension, so a complex state
evaluates the smooth part of the hardware force: the effective weights (with the current read
noise draw of the mode) without DAC/ADC, divided by r. JVPs of the real force see the same
smooth part (the quantizers are straight-through).

Randomness: one master generator per model, seeded by `seed` (None: fresh entropy, recorded in
`model.hardware_seed`); every crossbar, the tau spread and the calibration tokens take child streams
in a fixed order, so a seeded model repeats bit for bit on the CPU. `model.program()` continues
each crossbar's stream (a second programming is a new programming event, with new errors).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import integrators
from .circuits import ADC, DAC, PRESETS, AnalogLinear, DeviceModel, preset
from .circuits.devices import ReadNoise
from .circuits.noise import derive_generator, make_generator
from .integrators import Integrator, SettleResult
from .model import BlockForce

if TYPE_CHECKING:
    from .model import EquilibriumTransformer

__all__ = [
    "HardwareConfig",
    "HardwareLinear",
    "HardwareForce",
    "READ_NOISE_MODES",
    "DEFAULT_TAU",
    "crossbar_power",
    "integrate_energy",
    "lognormal_ratio",
    "settle_on_hardware",
    "tau_spread_report",
    "TauSpreadReport",
    "hardware_summary",
]

READ_NOISE_MODES = ("off", "quenched", "white", "ou")
DEFAULT_TAU = 1e-7
"""100 ns: a 1 pF node with a 10 uS unit conductance (within PCM's 0-25 uS range)."""
_CALIBRATION_BATCH = 8
_TAU_REL_TOL = 1e-6


# ------------------------------------------------------------------------------------------------
# configuration


def _check_bits(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int in [1, 24] or None (ideal), got {type(value).__name__}"
        )
    if not 1 <= value <= 24:
        raise ValueError(f"{name} must be an int in [1, 24] or None (ideal), got {value}")


def _check_real(name: str, value: Any, *, low: float, strict: bool, unit: str = "",
                none_ok: bool = False) -> float | None:
    if value is None and none_ok:
        return None
    bound = f"> {low:g}" if strict else f">= {low:g}"
    suffix = f" ({unit})" if unit else ""
    allowed = f"a finite real number {bound}{suffix}" + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or (v <= low if strict else v < low):
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return v


@dataclass(frozen=True)
class HardwareConfig:
    """An analog chip for the equilibrium transformer. Validated on construction (errors name the
    field and its allowed range). Units: seconds, farads, siemens, volts.

    Devices and periphery:
        device: a `circuits.DeviceModel` or a preset name ("ideal", "pcm", "rram", "ecram");
            default "pcm". Stored resolved (a DeviceModel).
        dac_bits, adc_bits: converter resolution, an int in [1, 24], or None (default: no
            converter in the settling loop, module docstring).
        input_bound, output_bound: converter full scales in activation units (> 0), or None
            (default): calibrated per map at programming time (module docstring).
        calibration_sigmas: calibrated bound = this many RMS of the signal (> 0; default 4).
        ir_drop: r_wire * g_max >= 0 per tile (see `circuits.crossbar`; 0 = ideal wires,
            typical 2.5e-5 for 1 ohm per cell at 25 uS).
        tile_size: largest tile (rows and columns, >= 1); default 256, the 256 x 256 cores of IBM's
            PCM chip (Le Gallo et al., Nat. Electron. 6, 680, 2023).
        maps: names of the linear maps to place on crossbars (a subset of the model's
            `linear_layers()`), or None (default): all of them.

    Nodes:
        tau: time unit of the force, seconds (> 0): tau dz/dt = F(z). Default 1e-7 (100 ns).
        node_capacitance (F, > 0), leak_conductance (S, > 0): tau = node_capacitance /
            leak_conductance (leak_conductance realises a unit coefficient of F). Give tau, or
            both, or one of them with tau (the other is derived), or all three consistent (relative
            tolerance 1e-6).
        tau_spread: relative std of the per-node time constants tau_i = tau r_i, r_i lognormal with
            mean 1 (>= 0; default 0.1, an assumed 10 % node-to-node mismatch of C and G).
        node_noise: stationary std of an isolated node's thermal noise, in units of z (>= 0,
            default 0); only the Euler-Maruyama integrator uses it (`HardwareForce.noise`).

    Reads:
        read_noise: "off" | "quenched" (default) | "white" | "ou" (module docstring).
        tau_c: correlation time of the "ou" read noise, seconds (> 0; required for "ou", None
            otherwise).
        drift_time: seconds after programming at which the chip is read (>= 0; default 0).
        v_read: read voltage at the DAC's full scale, volts (> 0; default 0.2 V, a typical PCM
            read voltage, low enough not to disturb the phase state).
        seed: int in [0, 2^64) for every random effect of the chip, or None (fresh entropy,
            recorded in `model.hardware_seed`).
    """

    device: DeviceModel | str = "pcm"
    dac_bits: int | None = None
    adc_bits: int | None = None
    input_bound: float | None = None
    output_bound: float | None = None
    calibration_sigmas: float = 4.0
    tau: float | None = None
    node_capacitance: float | None = None
    leak_conductance: float | None = None
    tau_spread: float = 0.1
    ir_drop: float = 0.0
    tile_size: int = 256
    read_noise: str = "quenched"
    tau_c: float | None = None
    drift_time: float = 0.0
    v_read: float = 0.2
    node_noise: float = 0.0
    seed: int | None = None
    maps: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        device = self.device
        if isinstance(device, str):
            if device.strip().lower() not in PRESETS:
                raise ValueError(
                    f"device must be a DeviceModel or a preset name, one of {sorted(PRESETS)}; "
                    f"unknown device preset {device!r}"
                )
            device = preset(device)
        elif not isinstance(device, DeviceModel):
            raise TypeError(
                f"device must be a DeviceModel or a preset name ({sorted(PRESETS)}), got "
                f"{type(device).__name__}"
            )
        object.__setattr__(self, "device", device)
        _check_bits("dac_bits", self.dac_bits)
        _check_bits("adc_bits", self.adc_bits)
        for name in ("input_bound", "output_bound"):
            v = _check_real(name, getattr(self, name), low=0.0, strict=True,
                            unit="activation units", none_ok=True)
            object.__setattr__(self, name, v)
        object.__setattr__(self, "calibration_sigmas", _check_real(
            "calibration_sigmas", self.calibration_sigmas, low=0.0, strict=True))
        self._resolve_tau()
        object.__setattr__(self, "tau_spread", _check_real(
            "tau_spread", self.tau_spread, low=0.0, strict=False))
        object.__setattr__(self, "ir_drop", _check_real("ir_drop", self.ir_drop, low=0.0,
                                                        strict=False))
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int):
            raise TypeError(f"tile_size must be an int >= 1, got {type(self.tile_size).__name__}")
        if self.tile_size < 1:
            raise ValueError(f"tile_size must be an int >= 1, got {self.tile_size}")
        if not isinstance(self.read_noise, str) or self.read_noise not in READ_NOISE_MODES:
            raise ValueError(
                f"read_noise must be one of {list(READ_NOISE_MODES)}, got {self.read_noise!r}"
            )
        if self.read_noise == "ou":
            if self.tau_c is None:
                raise ValueError("tau_c (seconds, > 0) is required with read_noise='ou'")
            object.__setattr__(self, "tau_c", _check_real("tau_c", self.tau_c, low=0.0,
                                                          strict=True, unit="seconds"))
        elif self.tau_c is not None:
            raise ValueError(
                f"tau_c is only used with read_noise='ou' (got read_noise={self.read_noise!r}); "
                "leave it None"
            )
        object.__setattr__(self, "drift_time", _check_real(
            "drift_time", self.drift_time, low=0.0, strict=False, unit="seconds"))
        object.__setattr__(self, "v_read", _check_real("v_read", self.v_read, low=0.0,
                                                       strict=True, unit="volts"))
        object.__setattr__(self, "node_noise", _check_real(
            "node_noise", self.node_noise, low=0.0, strict=False, unit="units of z"))
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int):
                raise TypeError(
                    f"seed must be an int in [0, 2**64) or None, got {type(self.seed).__name__}"
                )
            if not 0 <= self.seed < 2**64:
                raise ValueError(f"seed must be an int in [0, 2**64) or None, got {self.seed}")
        if self.maps is not None:
            maps = (self.maps,) if isinstance(self.maps, str) else self.maps
            if not isinstance(maps, tuple | list) or not all(isinstance(m, str) for m in maps):
                raise TypeError(
                    "maps must be None (every linear map) or a tuple of map names such as "
                    f"('attn.q', 'ffn.up'), got {self.maps!r}"
                )
            object.__setattr__(self, "maps", tuple(maps))

    def _resolve_tau(self) -> None:
        tau = _check_real("tau", self.tau, low=0.0, strict=True, unit="seconds", none_ok=True)
        cap = _check_real("node_capacitance", self.node_capacitance, low=0.0, strict=True,
                          unit="farads", none_ok=True)
        g = _check_real("leak_conductance", self.leak_conductance, low=0.0, strict=True,
                        unit="siemens", none_ok=True)
        if cap is not None and g is not None:
            derived = cap / g
            if tau is not None and not math.isclose(tau, derived, rel_tol=_TAU_REL_TOL):
                raise ValueError(
                    f"tau must equal node_capacitance / leak_conductance = {cap:g} F / {g:g} S = "
                    f"{derived:g} s (relative tolerance {_TAU_REL_TOL:g}), got tau={tau:g} s"
                )
            tau = derived
        elif cap is not None:
            if tau is None:
                raise ValueError(
                    "node_capacitance needs leak_conductance or tau (tau = node_capacitance / "
                    "leak_conductance)"
                )
            g = cap / tau
        elif g is not None:
            if tau is None:
                raise ValueError(
                    "leak_conductance needs node_capacitance or tau (tau = node_capacitance / "
                    "leak_conductance)"
                )
            cap = g * tau
        elif tau is None:
            tau = DEFAULT_TAU
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "node_capacitance", cap)
        object.__setattr__(self, "leak_conductance", g)

    # -- derived -----------------------------------------------------------------------------------
    @property
    def device_model(self) -> DeviceModel:
        """The device the crossbars are built of: `device`, without read noise for "off"."""
        assert isinstance(self.device, DeviceModel)
        if self.read_noise == "off":
            return dataclasses.replace(self.device, read=ReadNoise(kind="none"))
        return self.device

    def places(self, name: str) -> bool:
        """Whether the linear map `name` goes on a crossbar."""
        return self.maps is None or name in self.maps

    @classmethod
    def ideal(cls, **overrides: Any) -> HardwareConfig:
        """Ideal hardware: ideal devices, no converters, no read noise, uniform tau, ideal wires.

        It computes the digital model's force up to float rounding (a reference for tests and
        benchmarks); `overrides` change any field.
        """
        base: dict[str, Any] = dict(device="ideal", dac_bits=None, adc_bits=None,
                                    read_noise="off", tau_spread=0.0, ir_drop=0.0)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the device as its name and summary), e.g. for results files."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "device":
                out["device"] = v.name
                out["device_summary"] = v.summary()
            else:
                out[f.name] = v
        return out


# ------------------------------------------------------------------------------------------------
# one map on a crossbar


# Maps whose *outputs* the power probe never uses (only their inputs set their power): the last map
# of each branch and the feature projection. The probe skips their matrix product.
_POWER_OUTPUT_UNUSED = ("attn.o", "ffn.down", "embed")


class _Probe:
    """What `HardwareLinear.forward` records while a probe is attached (calibration or power)."""

    def __init__(self, kind: str):
        self.kind = kind  # "calibrate" | "power"
        self.sums: dict[str, list[Any]] = {}  # calibrate: name -> [sum x^2, n x, sum y^2, n y]
        self.power: Tensor | None = None  # power: (k,) watts, summed over the maps

    def add_power(self, p: Tensor) -> None:
        self.power = p if self.power is None else self.power + p


class HardwareLinear(nn.Module):
    """A linear map y = W x + b whose W sits on a `circuits.AnalogLinear`.

    Args:
        name: the map's stable name (e.g. "attn.q"), for messages and results.
        in_features, out_features: sizes.
        bias: a digital bias (nn.Parameter, out_features).
        hardware: the `HardwareConfig` (device, tile size, IR drop, converter bits).
        generator: the crossbar's random stream (a child of the model's hardware generator).
        dtype: of the nominal parameters and the device state.

    Attributes:
        weight: the nominal weight (out_features, in_features), an nn.Parameter (what training
            updates). Inside `serve_effective_weights()` it reads as the crossbar's effective weight
            (the complex path of `_layers.apply_linear` uses `.weight`).
        bias: nominal digital bias or None.
        analog: the `AnalogLinear` (its own bias unused: bias=False).
        dac: input `DAC` or None; `input_bound`, `output_bound`: the converters' full scales in
            activation units (set by `set_bounds`, also used for the energy figure).

    Shapes: x (..., in_features) -> (..., out_features). Real x: DAC -> crossbar read (read noise,
    per-tile ADC) -> + bias. Nothing is synchronised with the host.
    """

    def __init__(
        self,
        name: str,
        in_features: int,
        out_features: int,
        bias: bool,
        hardware: HardwareConfig,
        generator: torch.Generator,
        dtype: torch.dtype,
    ):
        super().__init__()
        self.name = name
        self.in_features = in_features
        self.out_features = out_features
        self.hardware = hardware
        self.register_parameter(
            "weight", nn.Parameter(torch.zeros(out_features, in_features, dtype=dtype))
        )
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.analog = AnalogLinear(
            in_features,
            out_features,
            bias=False,
            device=hardware.device_model,
            tile_size=hardware.tile_size,
            ir_drop=hardware.ir_drop,
            generator=generator,
            dtype=dtype,
        )
        self.dac: DAC | None = None
        self.input_bound = 1.0
        self.output_bound = 1.0
        self._serve_effective = False
        self._probe: _Probe | None = None
        self._colsum_key: tuple[Any, ...] | None = None
        self._colsum: Tensor | None = None

    # The nominal weight is a registered parameter; this property only changes what `.weight`
    # reads inside `serve_effective_weights()` (the complex path), so parameter names, init,
    # optimisers and state dicts see the nominal weight as in the digital model.
    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        params = self.__dict__.get("_parameters")
        if params is None or "weight" not in params:
            raise AttributeError("weight")
        if self.__dict__.get("_serve_effective", False):
            return self.analog.effective_weight(noisy=True)
        return params["weight"]

    # -- layout ------------------------------------------------------------------------------------
    def _input_blocks(self) -> list[tuple[int, int]]:
        ts = self.analog.tile_size
        return [(s, min(s + ts, self.in_features)) for s in range(0, self.in_features, ts)]

    # -- programming -------------------------------------------------------------------------------
    @torch.no_grad()
    def program(self) -> None:
        """Program the nominal weight onto the crossbar (g_ref from max |W|)."""
        self.analog.program(self.weight.detach())
        self._colsum_key = None

    def set_bounds(self, input_bound: float, output_bound: float, dac_bits: int | None,
                   adc_bits: int | None) -> None:
        """Converter full scales (activation units, > 0) and resolutions (None = ideal)."""
        self.input_bound = float(input_bound)
        self.output_bound = float(output_bound)
        self.dac = None if dac_bits is None else DAC(dac_bits, self.input_bound)
        blocks = self._input_blocks()
        rows, cols = self.analog.tile_grid
        for r in range(rows):
            for c in range(cols):
                tile = self.analog.tile(r, c)
                if adc_bits is None:
                    tile.adc = None
                    continue
                width = blocks[c][1] - blocks[c][0]
                # partial sums of independent terms: the RMS scales with sqrt(inputs covered)
                bound = self.output_bound * math.sqrt(width / self.in_features)
                tile.adc = ADC(adc_bits, bound)

    # The converters are rebuilt from their bounds and bits, so a state dict carries the bounds.
    def get_extra_state(self) -> dict[str, Any]:
        return {"input_bound": self.input_bound, "output_bound": self.output_bound,
                "dac_bits": self.hardware.dac_bits, "adc_bits": self.hardware.adc_bits}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.set_bounds(state["input_bound"], state["output_bound"], state["dac_bits"],
                        state["adc_bits"])

    # -- reads -------------------------------------------------------------------------------------
    def column_conductance(self) -> Tensor:
        """sum_i (G_plus + G_minus)_ij per input line j, siemens, shape (in_features,): noise-free,
        drifted; cached until a tile's devices change."""
        g = self.analog.tiles[0].plus.conductance
        key = (g.device, g.dtype,
               *(v for t in self.analog.tiles for v in (t.plus.version, t.minus.version)))
        if self._colsum is None or key != self._colsum_key:
            gp, gm = self.analog.conductances(noisy=False)
            self._colsum = (gp + gm).sum(0)
            self._colsum_key = key
        return self._colsum

    def _noise_free_read(self, xd: Tensor) -> Tensor:
        """y = sum over tiles of ADC(x_tile W_tile^T), with noise-free effective weights: the read
        of the power probe (it draws no random numbers, so accounting never shifts a noise
        stream)."""
        blocks = self._input_blocks()
        rows, cols = self.analog.tile_grid
        outs = []
        for r in range(rows):
            y = None
            for c in range(cols):
                tile = self.analog.tile(r, c)
                w = tile.effective_weight(noisy=False)
                i0, i1 = blocks[c]
                part = F.linear(xd[..., i0:i1], w.to(xd.dtype))
                if tile.amplifier is not None:
                    part = tile.amplifier(part)
                if tile.adc is not None:
                    part = tile.adc(part)
                y = part if y is None else y + part
            outs.append(y)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        probe = self._probe
        if probe is not None and probe.kind == "calibrate":
            return self._calibrate(x, probe)
        xd = self.dac(x) if self.dac is not None else x
        if probe is not None:  # power probe: deterministic read, power of this map
            probe.add_power(self.power(xd))
            if self.name in _POWER_OUTPUT_UNUSED:
                return xd.new_zeros(*xd.shape[:-1], self.out_features)
            y = self._noise_free_read(xd)
        else:
            y = self.analog(xd)
            if torch.is_grad_enabled() and self.weight.requires_grad:
                # Straight-through gradient for the nominal weight: a term that is exactly 0 in
                # value (a - a) and carries d/dW of x W^T; x is detached so the gradient with
                # respect to x stays the crossbar's own.
                xs = xd.detach()
                ste = F.linear(xs, self.weight)
                y = y + (ste - ste.detach())
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def _calibrate(self, x: Tensor, probe: _Probe) -> Tensor:
        """Record the RMS of the inputs and of W x (no converters, noise-free weights)."""
        w = self.analog.effective_weight(noisy=False).to(x.dtype)
        y = F.linear(x, w)
        s = probe.sums.setdefault(self.name, [x.new_zeros(()), 0, x.new_zeros(()), 0])
        s[0] = s[0] + x.detach().square().sum()
        s[1] += x.numel()
        s[2] = s[2] + y.detach().square().sum()
        s[3] += y.numel()
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def power(self, xd: Tensor) -> Tensor:
        """Power (watts) this map dissipates per sample for DAC outputs xd (batch, ..., in):
        sum over positions and devices of (G_plus + G_minus)_ij V_j^2, V = xd v_read / bound.
        Shape (batch,)."""
        return crossbar_power(self.column_conductance(), xd, self.input_bound,
                              self.hardware.v_read)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}, "
            f"device={self.analog.device_model.name!r}, input_bound={self.input_bound:.4g}, "
            f"output_bound={self.output_bound:.4g}"
        )


def crossbar_power(column_conductance: Tensor, x: Tensor, input_bound: float,
                   v_read: float) -> Tensor:
    """DC power (watts) of crossbar reads, per sample: sum_{positions, i, j} G_ij V_j^2.

    Args:
        column_conductance: sum_i (G_plus + G_minus)_ij, siemens, shape (in_features,).
        x: DAC outputs in activation units, shape (batch, ..., in_features) (one crossbar copy
            per position of the middle dimensions).
        input_bound: DAC full scale in activation units (> 0): V_j = x_j v_read / input_bound.
        v_read: read voltage at full scale, volts.

    Returns: (batch,) watts, x's real dtype.
    """
    scale = (v_read / input_bound) ** 2
    sq = x.square()
    if sq.ndim > 2:
        sq = sq.flatten(1, -2).sum(1)
    return scale * (sq @ column_conductance.to(sq.dtype))


def integrate_energy(power: Tensor, time: Tensor, tau: float) -> Tensor:
    """Trapezoid integral of a power trace over physical time, joules per sample.

    Args:
        power: (n + 1, batch) watts at the recorded steps (`trace.observed`).
        time: (n + 1, batch) time in units of tau (`trace.sample_time`; a finished sample's time
            stops, so it adds nothing after it settled).
        tau: seconds per time unit.

    Returns: (batch,) float64 joules.
    """
    p, t = power.to(torch.float64), time.to(torch.float64)
    if p.shape[0] < 2:
        return torch.zeros(p.shape[1:], dtype=torch.float64)
    return tau * (0.5 * (p[1:] + p[:-1]) * (t[1:] - t[:-1])).sum(0)


def lognormal_ratio(spread: float, shape: tuple[int, ...], generator: torch.Generator,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """r = exp(s xi - s^2 / 2), s^2 = ln(1 + spread^2): lognormal, E[r] = 1, std(r) = spread.

    Drawn from `generator` (xi standard normal of `shape`); spread 0 gives exactly ones.
    """
    xi = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    s2 = math.log1p(spread * spread)
    return torch.exp(math.sqrt(s2) * xi - 0.5 * s2).to(dtype=dtype, device="cpu")


# ------------------------------------------------------------------------------------------------
# model plumbing (called by EquilibriumTransformer)


class HardwareState:
    """The chip-level state of a hardware model that is not a tensor: the master generator."""

    def __init__(self, hardware: HardwareConfig):
        self.generator = make_generator(seed=hardware.seed)
        self.seed = self.generator.initial_seed()

    def child(self) -> torch.Generator:
        return derive_generator(self.generator)


def make_linear(model: EquilibriumTransformer, name: str, in_features: int, out_features: int,
                bias: bool) -> HardwareLinear:
    """The `_linear` factory's hardware branch: a `HardwareLinear` on the next child stream."""
    state: HardwareState = model._hardware_state
    return HardwareLinear(name, in_features, out_features, bias, model.hardware,
                          generator=state.child(), dtype=model.config.dtype)


def hardware_layers(model: EquilibriumTransformer) -> dict[str, HardwareLinear]:
    """The model's maps that sit on crossbars, by stable name, in construction order."""
    return {n: m for n, m in model.linear_layers().items() if isinstance(m, HardwareLinear)}


def attach(model: EquilibriumTransformer) -> None:
    """Finish building a hardware model: check `maps`, draw the node time constants, program."""
    hw: HardwareConfig = model.hardware
    names = list(model.linear_layers())
    if hw.maps is not None:
        unknown = sorted(set(hw.maps) - set(names))
        if unknown:
            raise ValueError(f"maps names unknown map(s) {unknown}; this model's maps: {names}")
    state: HardwareState = model._hardware_state
    ratio = lognormal_ratio(hw.tau_spread, (model.config.context, model.config.d_model),
                            state.child(), dtype=model.config.dtype)
    model.register_buffer("node_tau_ratio", ratio.to(model.device))
    program(model)


@contextlib.contextmanager
def _attached(model: EquilibriumTransformer, probe: _Probe | None = None,
              effective: bool = False) -> Iterator[None]:
    layers = list(hardware_layers(model).values())
    try:
        for layer in layers:
            layer._probe = probe
            layer._serve_effective = effective
        yield
    finally:
        for layer in layers:
            layer._probe = None
            layer._serve_effective = False


def serve_effective_weights(model: EquilibriumTransformer) -> contextlib.AbstractContextManager:
    """Within the block, each crossbar map's `.weight` reads as its effective weight."""
    return _attached(model, effective=True)


def calibration_inputs(model: EquilibriumTransformer, generator: torch.Generator) -> Tensor:
    """Seeded calibration inputs: random token ids (batch 8, T = context), or standard-normal
    features for a feature model (the unit-variance features ModelConfig's init assumes)."""
    cfg = model.config
    shape = (_CALIBRATION_BATCH, cfg.context)
    if cfg.input_dim is None:
        return torch.randint(0, cfg.vocab_size, shape, generator=generator)  # type: ignore[arg-type]
    return torch.randn(*shape, cfg.input_dim, generator=generator, dtype=model.dtype)


@torch.no_grad()
def program(model: EquilibriumTransformer, calibration: Tensor | None = None) -> None:
    """(Re)program every crossbar from the nominal weights, set the read-noise mode, drift to
    `drift_time`, and calibrate the converter bounds (module docstring).

    `calibration`: inputs (token ids or features) for the bound calibration; None: seeded random
    ones. The calibration runs at the decoupled operating point z = x_in / (1 + c).
    """
    hw: HardwareConfig = model.hardware
    layers = hardware_layers(model)
    for layer in layers.values():
        layer.program()
        if hw.read_noise == "quenched":
            layer.analog.set_read_noise("quenched")
        elif hw.read_noise == "ou":
            layer.analog.set_read_noise("ou", hw.tau_c)
        else:
            layer.analog.set_read_noise("white")
        if hw.drift_time > 0:
            layer.analog.drift(hw.drift_time)
    state: HardwareState = model._hardware_state
    gen = state.child()  # drawn even when unused: the stream does not depend on `calibration`
    inputs = calibration_inputs(model, gen) if calibration is None else calibration
    inputs = model._check_inputs(inputs)
    probe = _Probe("calibrate")
    with _attached(model, probe):
        force = BlockForce(model, inputs)  # the plain force: the probe needs no tau ratios
        z = force.x_in / model.config.leak
        model.attention_branch(z)
        model.ffn_branch(z)
        model.readout(z)
    k = hw.calibration_sigmas
    for name, layer in layers.items():
        sums = probe.sums.get(name)
        rms_in = rms_out = 0.0
        if sums is not None:
            rms_in = math.sqrt(float(sums[0]) / max(sums[1], 1))
            rms_out = math.sqrt(float(sums[2]) / max(sums[3], 1))
        # an all-zero signal (a zero weight matrix) has no scale: fall back to 1 activation unit
        in_b = hw.input_bound if hw.input_bound is not None else (k * rms_in if rms_in > 0 else 1.0)
        out_b = hw.output_bound if hw.output_bound is not None else (
            k * rms_out if rms_out > 0 else 1.0)
        layer.set_bounds(in_b, out_b, hw.dac_bits, hw.adc_bits)


def drift(model: EquilibriumTransformer, t_seconds: float) -> None:
    """Advance every crossbar to `t_seconds` after its last programming (>= its current time)."""
    for layer in hardware_layers(model).values():
        layer.analog.drift(t_seconds)


def resample_read_noise(model: EquilibriumTransformer) -> None:
    """A new frozen draw ("quenched") or stationary state ("ou") on every crossbar."""
    for layer in hardware_layers(model).values():
        layer.analog.resample_read_noise()


_resample = resample_read_noise  # settle_on_hardware's argument of the same name shadows it


# ------------------------------------------------------------------------------------------------
# the force on hardware


class HardwareForce(BlockForce):
    """The block's force on hardware, in units of the mean time constant tau:

        F_hw(z) = F(z) / r = x_in / r - ((1 + c) / r) z + (Attn(LN_a z) + FFN(LN_f z)) / r,

    r (T, C) the per-node time-constant ratios (broadcast over the batch; None = uniform nodes,
    then F_hw = F with the crossbar maps). Everything of `BlockForce` holds with the hardware
    scaling: `leak` = (1 + c) / r (a (T, C) tensor, or the float 1 + c when uniform), `x_in` =
    raw drive / r, `nonlinear`, `attention`, `ffn`, `coupling` divided by r. Fixed points are those
    of F. Shapes: z (batch, T, C) -> same; units of z per tau.

    Extras: `noise(z, t)` (the Euler-Maruyama clock of "ou" read noise), `power(z, index)` (watts
    per sample, the settle's observer), `tau` (seconds), `ratio`.
    """

    def __init__(self, model: EquilibriumTransformer, inputs: Tensor,
                 ratio: Tensor | None | str = "model"):
        super().__init__(model, inputs)
        hw: HardwareConfig = model.hardware
        self.tau = float(hw.tau)  # type: ignore[arg-type]
        T = inputs.shape[1]
        if isinstance(ratio, str):
            ratio = None if hw.tau_spread == 0 else model.node_tau_ratio[:T]
        self.ratio = ratio
        if ratio is not None:
            self.leak = model.config.leak / ratio
        self._clock = 0.0  # seconds the "ou" read noise has been advanced in this settle

    def _scaled(self, x: Tensor) -> Tensor:
        return x if self.ratio is None else x / self.ratio

    def _context(self, z: Tensor) -> contextlib.AbstractContextManager:
        # complex states read `.weight` (apply_linear): serve the effective weights then
        return serve_effective_weights(self.model) if z.is_complex() else contextlib.nullcontext()

    @property
    def x_in(self) -> Tensor:
        return self._scaled(self.model.embed_inputs(self.inputs))

    def attention(self, z: Tensor) -> Tensor:
        self._check(z)
        with self._context(z):
            return self._scaled(self.model.attention_branch(z))

    def ffn(self, z: Tensor) -> Tensor:
        self._check(z)
        with self._context(z):
            return self._scaled(self.model.ffn_branch(z))

    def coupling(self, z: Tensor) -> Tensor:
        self._check(z)
        with self._context(z):
            return self._scaled(self.model.attention_branch(z) + self.model.ffn_branch(z))

    def nonlinear(self, z: Tensor) -> Tensor:
        self._check(z)
        with self._context(z):
            raw = (self.model.embed_inputs(self.inputs) + self.model.attention_branch(z)
                   + self.model.ffn_branch(z))
        return self._scaled(raw)

    def select(self, index: Tensor) -> HardwareForce:
        sub = HardwareForce(self.model, self.inputs.index_select(0, index.to(self.inputs.device)),
                            self.ratio)
        sub._clock = self._clock
        return sub

    # -- Euler-Maruyama clock ----------------------------------------------------------------------
    def noise(self, z: Tensor, t: Tensor) -> Tensor:
        """EM's sigma(z, t): advance "ou" read noise to time t and return the node diffusion.

        Args: z (k, T, C) the active samples' states; t (k,) their times in units of tau.
        Returns: sigma = node_noise sqrt(2 leak) (units of z / sqrt(tau)), a (T, C) or 0-dim
        tensor on z's device: the stationary std of an isolated node is then node_noise.
        One host sync per call (the OU step is computed on the host); EM calls it once per step.
        """
        hw: HardwareConfig = self.model.hardware
        if hw.read_noise == "ou":
            now = float(t.detach().max()) * self.tau
            dt = now - self._clock
            if dt > 0:
                for layer in hardware_layers(self.model).values():
                    layer.analog.advance(dt)
                self._clock = now
        real = z.real.dtype if z.is_complex() else z.dtype
        leak = self.leak
        if isinstance(leak, Tensor):
            return hw.node_noise * torch.sqrt(2.0 * leak.to(device=z.device, dtype=real))
        return torch.tensor(hw.node_noise * math.sqrt(2.0 * leak), dtype=real, device=z.device)

    # -- accounting --------------------------------------------------------------------------------
    @torch.no_grad()
    def power(self, z: Tensor, index: Tensor | None = None) -> Tensor:
        """Power (watts) the crossbars dissipate at state z, per sample: shape (k,).

        z (k, T, C) holds the samples `index` of this force's batch (None: all). Reads are
        noise-free and draw no random numbers (module docstring, Accounting); the `head` is not
        read during a settle, a feature projection `embed` on a crossbar is (its inputs are held).
        """
        force = self if index is None else self.select(index)
        model = self.model
        probe = _Probe("power")
        with _attached(model, probe):
            model.attention_branch(z)
            model.ffn_branch(z)
            if isinstance(getattr(model, "embed", None), HardwareLinear):
                model.embed_inputs(force.inputs)
        if probe.power is None:  # no crossbar map is read during a settle
            real = z.real.dtype if z.is_complex() else z.dtype
            return torch.zeros(z.shape[0], dtype=real, device=z.device)
        return probe.power

    def leak_euler_limit(self) -> float:
        """2 min(r) / (1 + c): the largest explicit-Euler step the leak alone allows (the
        couplings lower it further). One host sync."""
        r_min = 1.0 if self.ratio is None else float(self.ratio.min())
        return 2.0 * r_min / self.model.config.leak

    def __repr__(self) -> str:
        spread = "uniform" if self.ratio is None else f"r in [{float(self.ratio.min()):.3g}, " \
            f"{float(self.ratio.max()):.3g}]"
        return (f"HardwareForce(shape={self.shape}, tau={self.tau:g} s, {spread}, "
                f"dtype={self._dtype})")


# ------------------------------------------------------------------------------------------------
# settle with accounting


def _is_maruyama(method: str | Integrator) -> bool:
    if isinstance(method, str):
        return method == "euler-maruyama"
    return type(method).__name__ == "EulerMaruyama"


def settle_on_hardware(
    model: EquilibriumTransformer,
    force: HardwareForce,
    start: Tensor,
    method: str | Integrator,
    *,
    tol: float,
    max_steps: int | None,
    resample_read_noise: bool = True,
    **options: Any,
) -> SettleResult:
    """`integrators.settle` on a hardware force, with the noise mode's clock and the accounting.

    `resample_read_noise`: draw a new frozen ("quenched") / stationary ("ou") read-noise state
    before settling (default True; False continues the current one, e.g. to settle twice on the
    same noise). Method "euler-maruyama" (by name) without a `sigma` option gets the force's
    `noise` as its sigma with read_noise "ou" (required: it is the clock) or node_noise > 0.
    Returns the `SettleResult` with `info` extended by `settling_time_s`, `energy_j`,
    `power_w`, `tau_s`, `read_noise` (module docstring, Accounting).
    """
    hw: HardwareConfig = model.hardware
    if not isinstance(resample_read_noise, bool):
        raise TypeError(
            f"resample_read_noise must be a bool, got {type(resample_read_noise).__name__}"
        )
    if (_is_maruyama(method) and isinstance(method, str) and "sigma" not in options
            and hw.read_noise != "ou" and hw.node_noise > 0):
        options["sigma"] = force.noise  # the nodes' thermal noise (no read-noise clock needed)
    if hw.read_noise == "ou":
        if not _is_maruyama(method) or not isinstance(method, str):
            raise ValueError(
                "read_noise='ou' needs method='euler-maruyama' (by name): its time steps advance "
                f"the OU read noise; got method {method!r}. Use read_noise='quenched' (one frozen "
                "draw per settle) with other methods"
            )
        if "sigma" in options:
            raise ValueError(
                "sigma is set by the hardware force with read_noise='ou' (its noise(z, t) "
                "advances the read noise); give the node noise as HardwareConfig.node_noise"
            )
        options["sigma"] = force.noise
    if resample_read_noise and hw.read_noise in ("quenched", "ou"):
        _resample(model)
    user_observer = options.pop("observer", None)
    observer = force.power if user_observer is None else user_observer
    result = integrators.settle(force, start, method, tol=tol, max_steps=max_steps,
                                observer=observer, **options)
    info = dict(result.info)
    info["tau_s"] = force.tau
    info["read_noise"] = hw.read_noise
    trace = result.trace
    if result.t is None:
        info["settling_time_s"] = None
        info["energy_j"] = None
    else:
        info["settling_time_s"] = result.t.detach().to(torch.float64) * force.tau
        if user_observer is None and trace.observed is not None and trace.sample_time is not None:
            info["energy_j"] = integrate_energy(trace.observed, trace.sample_time, force.tau)
        else:
            info["energy_j"] = None  # the caller's observer replaced the power probe
    if user_observer is None and trace.observed is not None:
        info["power_w"] = trace.observed[-1].clone()
    else:
        info["power_w"] = None
    return dataclasses.replace(result, info=info)


# ------------------------------------------------------------------------------------------------
# heterogeneous time constants: same fixed point, different dynamics


@dataclass(frozen=True)
class TauSpreadReport:
    """What a node time-constant spread does, measured on one batch (same chip, same noise draw).

    spread: tau_spread; ratio_min, ratio_max: extremes of r = tau_i / tau over the nodes used.
    fixed_point_shift: max over samples of ||z*_spread - z*_uniform|| / ||z*_uniform||: ~0 (at
        the settle tolerance) whenever both converge, as F_hw = F / r has F's zeros.
    euler_limit_uniform, euler_limit_spread: 2 min(r) / (1 + c), the leak-only explicit-Euler
        stability limit (time units of tau), uniform (r = 1) and with the spread.
    nfe_uniform, nfe_spread; status_uniform, status_spread; settle_uniform_s, settle_spread_s
        (max over the batch, seconds; None for a root-finder); method.
    """

    spread: float
    ratio_min: float
    ratio_max: float
    fixed_point_shift: float
    euler_limit_uniform: float
    euler_limit_spread: float
    nfe_uniform: int
    nfe_spread: int
    status_uniform: str
    status_spread: str
    settle_uniform_s: float | None
    settle_spread_s: float | None
    method: str

    def summary(self) -> str:
        def us(v: float | None) -> str:
            return "-" if v is None else f"{v * 1e6:.3g} us"

        return (
            f"node tau spread {self.spread:g} (tau_i / tau in [{self.ratio_min:.3g}, "
            f"{self.ratio_max:.3g}]): fixed point moved by {self.fixed_point_shift:.1e} "
            f"(relative; {self.method} {self.status_uniform} -> {self.status_spread}); "
            f"{self.method} NFE {self.nfe_uniform} -> {self.nfe_spread}, settling "
            f"{us(self.settle_uniform_s)} -> {us(self.settle_spread_s)}; leak-only Euler limit "
            f"eps < {self.euler_limit_uniform:.3g} -> {self.euler_limit_spread:.3g} tau"
        )


def tau_spread_report(model: EquilibriumTransformer, inputs: Tensor, method: str = "imex", *,
                      tol: float = 1e-6, max_steps: int | None = None,
                      **options: Any) -> TauSpreadReport:
    """Settle `inputs` on the model's chip with its node time constants and with uniform ones
    (same crossbars, same frozen read-noise draw) and compare fixed points and dynamics.

    Needs read_noise "off" or "quenched" (a fresh draw per evaluation has no sharp fixed point).
    `options` go to both settles (the same for both).
    """
    hw: HardwareConfig | None = model.hardware
    if hw is None:
        raise ValueError("tau_spread_report needs a hardware model (hardware=HardwareConfig(...))")
    if hw.read_noise not in ("off", "quenched"):
        raise ValueError(
            f"tau_spread_report needs read_noise 'off' or 'quenched', got {hw.read_noise!r}: with "
            "fresh noise per evaluation there is no sharp fixed point to compare"
        )
    spread_force = model.force(inputs)
    assert isinstance(spread_force, HardwareForce)
    uniform = HardwareForce(model, spread_force.inputs, ratio=None)
    z0 = model.initial_state(uniform)
    if hw.read_noise == "quenched":
        _resample(model)  # one new draw, shared by both settles
    res_u = settle_on_hardware(model, uniform, z0, method, tol=tol, max_steps=max_steps,
                               resample_read_noise=False, **options)
    res_s = settle_on_hardware(model, spread_force, z0.clone(), method, tol=tol,
                               max_steps=max_steps,
                               resample_read_noise=False, **options)
    dims = tuple(range(1, z0.ndim))
    shift = torch.linalg.vector_norm(res_s.z - res_u.z, dim=dims) / torch.linalg.vector_norm(
        res_u.z, dim=dims)
    r = spread_force.ratio

    def settle_max(res: SettleResult) -> float | None:
        t = res.info.get("settling_time_s")
        return None if t is None else float(t.max())

    return TauSpreadReport(
        spread=hw.tau_spread,
        ratio_min=1.0 if r is None else float(r.min()),
        ratio_max=1.0 if r is None else float(r.max()),
        fixed_point_shift=float(shift.max()),
        euler_limit_uniform=uniform.leak_euler_limit(),
        euler_limit_spread=spread_force.leak_euler_limit(),
        nfe_uniform=res_u.nfe,
        nfe_spread=res_s.nfe,
        status_uniform=str(res_u.status),
        status_spread=str(res_s.status),
        settle_uniform_s=settle_max(res_u),
        settle_spread_s=settle_max(res_s),
        method=res_s.method,
    )


def hardware_summary(model: EquilibriumTransformer) -> dict[str, Any]:
    """Plain-data description of a hardware model's chip: config, devices, per-map bounds."""
    hw: HardwareConfig | None = model.hardware
    if hw is None:
        return {"hardware": None}
    layers = hardware_layers(model)
    maps = {}
    for name, layer in layers.items():
        maps[name] = {
            "shape": [layer.out_features, layer.in_features],
            "tiles": list(layer.analog.tile_grid),
            "input_bound": layer.input_bound,
            "output_bound": layer.output_bound,
            "g_ref_s": float(layer.analog.g_ref),
        }
    r = model.node_tau_ratio
    return {
        "hardware": hw.to_dict(),
        "seed_used": model.hardware_seed,
        "devices": 2 * sum(lay.in_features * lay.out_features for lay in layers.values()),
        "tau_ratio_min": float(r.min()),
        "tau_ratio_max": float(r.max()),
        "maps": maps,
    }
