"""Crossbars: a weight matrix realized as differential conductance pairs on arrays of devices.

`Crossbar` is one physical tile: two `DeviceArray`s of shape (out_features, in_features), G_plus
and G_minus, read as

    W = (G_plus - G_minus) / g_ref,

with the periphery around it (DAC on the inputs, amplifier and ADC on the outputs).
`AnalogLinear` is a linear layer y = W x + b made of a grid of tiles of at most tile_size x
tile_size devices; each tile has its own arrays, amplifier and ADC, and the tiles' digitized
partial outputs are summed digitally (the bias is digital too).

Weight mapping (`program`): g_ref = (g_max - g_min) / w_max maps the largest |weight| to the full
conductance range (w_max = max |W| of the matrix programmed, unless g_ref is fixed), the mapping of
aihwkit's `SinglePairConductanceConverter`. A positive weight is G_plus = g_min + W g_ref with
G_minus = g_min, a negative one the mirror image; so one device of each pair sits at g_min.

Reads (`forward`): the effective weight uses the devices' current conductances (drift applied)
plus their read noise: white (a fresh draw every forward, default), quenched (one draw frozen, e.g.
for a whole settle) or an Ornstein-Uhlenbeck process advanced by `advance(dt)` (`set_read_noise`).

IR drop (first-order model, `ir_drop` = r_wire * g_max, the resistance of one wire segment between
neighbouring cells times the maximum conductance; dimensionless). Geometry: the inputs drive the
rows (one per input feature) from the end next to output 0, the outputs are sensed at virtual
ground at the end of each column next to input in_features - 1; G_plus and G_minus are two arrays
with their own wires. To first order in r_wire, the current of cell (o, i) sees its row voltage
lowered by r_wire times the currents through the row segments between the driver and the cell,
and its column node raised by the currents through the column segments between the cell and the
sense end. Summed over a column, both terms are linear in the inputs and reduce to an attenuation
of each conductance:

    g_eff[o, i] = g[o, i] / (1 + ir_drop * (A[o, i] + D[o, i]) / g_max),
    A[o, i] = sum_o' (min(o, o') + 1) g[o', i],    D[o, i] = sum_i' (min(p_i, p_i') + 1) g[o, i'],

with p_i = in_features - 1 - i the cell's distance from the sense end. Its first-order expansion
g (1 - r_wire (A + D)) is the linearized nodal solution of the resistive network; the rational
form keeps every conductance positive and strictly decreasing in ir_drop for large loads. The
attenuation is computed from the noise-free conductances (a first-order correction) and cached
until they change. Typical values: r_wire ~ 1 ohm per cell and g_max = 25 uS give ir_drop ~ 2.5e-5.

Updates (`apply_pulses`): a requested weight change becomes per-device pulse counts (see
`DeviceArray.pulses_for`) and the device's pulse response (`circuits.pulses`: linear or
exponential step, asymmetry, soft bounds, cycle noise, device-to-device spread) is applied by
`DeviceArray.pulse`. Schemes:
* "unipolar" (default; the only one for devices without down pulses, e.g. PCM): dW > 0
  potentiates G_plus, dW < 0 potentiates G_minus (up pulses only; a pair drifts up in common mode
  until it is re-programmed).
* "bipolar" (bidirectional devices): a change dW > 0 can raise G_plus or lower G_minus (dW < 0:
  lower G_plus or raise G_minus). Each device pair takes it on the device whose nominal step in
  that direction, at its current conductance and limited by the room to its bound, is larger; on
  a tie the device is lowered (so one device of a pair keeps sitting near g_min). A lowering
  larger than the room to the device's own lower bound continues as a raise of the other device.
  With soft bounds a device near its lower bound has tiny down steps, so changes then go to
  raising the other device: the more effective and more precise choice.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .devices import DeviceArray, DeviceModel, preset
from .noise import derive_generator, make_generator

__all__ = ["Crossbar", "AnalogLinear", "PulseResult", "PULSE_SCHEMES", "ir_drop_load"]

PULSE_SCHEMES = ("unipolar", "bipolar")


@dataclass
class PulseResult:
    """Outcome of `apply_pulses`. All tensors have the weight's shape (out_features, in_features).

    pulses_plus, pulses_minus: int64 signed pulse counts sent to G_plus / G_minus (+ = up).
    delta_weight: realized change of the noise-free effective weight (no IR drop), weight units.
    """

    pulses_plus: Tensor
    pulses_minus: Tensor
    delta_weight: Tensor

    @property
    def total_pulses(self) -> Tensor:
        """Number of pulses sent (int64 scalar tensor)."""
        return self.pulses_plus.abs().sum() + self.pulses_minus.abs().sum()


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_int(value: object, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {lo}, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def _check_nonneg(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return v


def _check_g_ref(value: object) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"g_ref must be a real number > 0 (siemens per weight unit), got {type(value).__name__}"
        )
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"g_ref must be finite and > 0 (siemens per weight unit), got {value}")
    return v


def _as_model(device: DeviceModel | str) -> DeviceModel:
    if isinstance(device, str):
        return preset(device)
    if not isinstance(device, DeviceModel):
        raise TypeError(
            f"device must be a DeviceModel or a preset name, got {type(device).__name__}"
        )
    return device


def _check_periphery(obj: object, name: str) -> None:
    if obj is not None and not callable(obj):
        raise TypeError(
            f"{name} must be a callable (e.g. a torch module) or None, got {type(obj).__name__}"
        )


def _check_weight(w: object, shape: tuple[int, int], name: str = "weight") -> Tensor:
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor, got {w.dtype}")
    if tuple(w.shape) != shape:
        raise ValueError(
            f"{name} must have shape {shape} (out_features, in_features), got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must be finite (no NaN/inf)")
    return w


# --------------------------------------------------------------------------------------------
# IR drop


def _line_load(g: Tensor, dim: int) -> Tensor:
    """L[j] = sum_m (min(j, m) + 1) g[m] along `dim` (position 0 next to the line's driver/sense):
    the conductance-weighted number of wire segments a cell shares with the others, in O(n)."""
    n = g.shape[dim]
    shape = [1] * g.ndim
    shape[dim] = n
    pos = torch.arange(1, n + 1, dtype=g.dtype, device=g.device).reshape(shape)
    c1 = torch.cumsum(pos * g, dim)  # sum_{m <= j} (m + 1) g[m]
    c0 = torch.cumsum(g, dim)
    total = c0.narrow(dim, n - 1, 1)
    return c1 + pos * (total - c0)  # + (j + 1) sum_{m > j} g[m]


def ir_drop_load(g: Tensor) -> Tensor:
    """A + D of the module docstring for one array g of shape (out_features, in_features), siemens:
    the row term along the outputs (driver next to output 0) plus the column term along the inputs
    (sense end next to the last input)."""
    rows = _line_load(g, 0)
    cols = _line_load(g.flip(1), 1).flip(1)
    return rows + cols


# --------------------------------------------------------------------------------------------
# one tile



def _check_input(x: object, in_features: int) -> None:
    """A read's input must be a tensor of shape (..., in_features)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"input must have shape (..., {in_features}), got {tuple(x.shape)}")

class Crossbar(nn.Module):
    """One crossbar tile: W = (G_plus - G_minus) / g_ref on two device arrays, with periphery.

    Args:
        in_features, out_features: the tile's inputs (rows) and outputs (columns).
        device: a `DeviceModel` or preset name ("ideal", "pcm", "rram", "ecram").
        dac: input converter (e.g. `DAC`), applied to x; None = ideal.
        adc: output converter (e.g. `ADC`); None = ideal.
        amplifier: output amplifier (e.g. `Amplifier`), before the ADC; None = ideal.
        ir_drop: r_wire * g_max >= 0 (module docstring); 0 = ideal wires.
        g_ref: siemens per weight unit; None = chosen at each `program` from max |W|.
        generator / seed: random stream; each array derives its own child stream from it.
        dtype: floating dtype of the device state.

    Shapes: forward maps x (..., in_features) to y (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        device: DeviceModel | str = "ideal",
        *,
        dac: nn.Module | None = None,
        adc: nn.Module | None = None,
        amplifier: nn.Module | None = None,
        ir_drop: float = 0.0,
        g_ref: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.in_features = _check_int(in_features, "in_features")
        self.out_features = _check_int(out_features, "out_features")
        self.device_model = _as_model(device)
        for obj, name in ((dac, "dac"), (adc, "adc"), (amplifier, "amplifier")):
            _check_periphery(obj, name)
        self.dac = dac
        self.adc = adc
        self.amplifier = amplifier
        self.ir_drop = _check_nonneg(ir_drop, "ir_drop")
        gen = make_generator(generator, seed)
        shape = (self.out_features, self.in_features)
        self.plus = DeviceArray(
            shape, self.device_model, generator=derive_generator(gen), dtype=dtype
        )
        self.minus = DeviceArray(
            shape, self.device_model, generator=derive_generator(gen), dtype=dtype
        )
        self._g_ref_fixed = g_ref is not None
        g0 = _check_g_ref(g_ref) if g_ref is not None else self.device_model.g_range  # w_max = 1
        self.register_buffer("g_ref", torch.tensor(g0, dtype=dtype))
        self._ir_cache: tuple[int, int, Tensor, Tensor] | None = None

    # -- mapping -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def w_max(self) -> float:
        """Largest representable |weight|: (g_max - g_min) / g_ref."""
        return self.device_model.g_range / float(self.g_ref)

    def default_g_ref(self, weight: Tensor) -> float:
        """g_ref = (g_max - g_min) / max |W| (max |W| = 1 for an all-zero matrix)."""
        w_max = float(weight.detach().abs().max())
        return self.device_model.g_range / (w_max if w_max > 0 else 1.0)

    @torch.no_grad()
    def program(self, weight: Tensor, *, g_ref: float | None = None) -> None:
        """Program W (out_features, in_features) onto the pairs; restarts the drift clock.

        g_ref: siemens per weight unit for this programming; default the one fixed at construction,
        else (g_max - g_min) / max |W|. Weights beyond w_max saturate at g_max.
        """
        w = _check_weight(weight, self.shape).to(device=self.g_ref.device, dtype=self.g_ref.dtype)
        if g_ref is not None:
            ref = _check_g_ref(g_ref)
        elif self._g_ref_fixed:
            ref = float(self.g_ref)
        else:
            ref = self.default_g_ref(w)
        self.g_ref.fill_(ref)
        g_min = self.device_model.g_min
        self.plus.program(g_min + w.clamp_min(0.0) * ref)
        self.minus.program(g_min + (-w).clamp_min(0.0) * ref)

    # -- reads -----------------------------------------------------------------------------------
    def _attenuation(self) -> tuple[Tensor, Tensor]:
        key = (self.plus.version, self.minus.version)
        c = self._ir_cache
        if c is None or (c[0], c[1]) != key or c[2].device != self.g_ref.device:
            k = self.ir_drop / self.device_model.g_max
            att_p = 1.0 / (1.0 + k * ir_drop_load(self.plus.conductance))
            att_m = 1.0 / (1.0 + k * ir_drop_load(self.minus.conductance))
            c = (key[0], key[1], att_p, att_m)
            self._ir_cache = c
        return c[2], c[3]

    def conductances(self, *, noisy: bool = False) -> tuple[Tensor, Tensor]:
        """(G_plus, G_minus) in siemens, each (out_features, in_features): current noise-free
        conductances, or one read of them (read noise, advancing nothing) if `noisy`."""
        if noisy:
            return self.plus.read(), self.minus.read()
        return self.plus.conductance, self.minus.conductance

    def effective_weight(self, *, noisy: bool = False, ir_drop: bool = True) -> Tensor:
        """(G_plus - G_minus) / g_ref, shape (out_features, in_features), weight units.

        noisy: include one draw of read noise (what a forward sees); ir_drop: fold in the IR-drop
        attenuation (input-independent in the first-order model). Periphery is not included.
        """
        gp, gm = self.conductances(noisy=noisy)
        if ir_drop and self.ir_drop > 0.0:
            att_p, att_m = self._attenuation()
            gp, gm = gp * att_p, gm * att_m
        return (gp - gm) / self.g_ref

    def forward(self, x: Tensor) -> Tensor:
        """y = ADC(amplifier(DAC(x) @ W_read^T)), x (..., in_features) -> y (..., out_features)."""
        _check_input(x, self.in_features)
        if self.dac is not None:
            x = self.dac(x)
        w = self.effective_weight(noisy=True)
        if w.dtype != x.dtype:
            w = w.to(x.dtype)  # e.g. a complex input for holomorphic probes
        y = F.linear(x, w)
        if self.amplifier is not None:
            y = self.amplifier(y)
        if self.adc is not None:
            y = self.adc(y)
        return y

    # -- read-noise process ----------------------------------------------------------------------
    def set_read_noise(self, mode: str = "white", tau_c: float | None = None) -> None:
        """Read-noise evolution of both arrays: "white", "quenched" or "ou" with `tau_c` seconds."""
        self.plus.set_read_noise(mode, tau_c)
        self.minus.set_read_noise(mode, tau_c)

    def advance(self, dt: float) -> None:
        """Advance the OU read noise by `dt` seconds (no effect in the other modes)."""
        self.plus.advance(dt)
        self.minus.advance(dt)

    def resample_read_noise(self) -> None:
        """New frozen draw (quenched) / new stationary state (ou)."""
        self.plus.resample_read_noise()
        self.minus.resample_read_noise()

    @contextlib.contextmanager
    def quenched_read(self) -> Iterator[Crossbar]:
        """Within the block every forward sees one frozen read-noise draw; the previous mode is
        restored on exit (a white or OU process then continues with fresh draws)."""
        prev = (self.plus.read_mode, self.plus._ou.tau_c if self.plus._ou is not None else None)
        self.set_read_noise("quenched")
        try:
            yield self
        finally:
            self.set_read_noise(prev[0], prev[1] if prev[0] == "ou" else None)

    # -- time ------------------------------------------------------------------------------------
    def drift(self, t_seconds: float) -> None:
        """Advance both arrays to `t_seconds` after the last `program` (conductances follow the
        drift law from their programmed values)."""
        self.plus.drift(t_seconds)
        self.minus.drift(t_seconds)

    # -- updates ---------------------------------------------------------------------------------
    @torch.no_grad()
    def pulse(self, n_plus: Tensor, n_minus: Tensor) -> Tensor:
        """Send signed pulse counts (int, (out_features, in_features)) to G_plus and G_minus;
        returns the realized change of the noise-free weight (no IR drop)."""
        before = self.effective_weight(ir_drop=False)
        self.plus.pulse(n_plus)
        self.minus.pulse(n_minus)
        return self.effective_weight(ir_drop=False) - before

    @torch.no_grad()
    def apply_pulses(
        self,
        delta_weight: Tensor,
        *,
        scheme: str | None = None,
        model_aware: bool = True,
        max_pulses: int | None = None,
    ) -> PulseResult:
        """Realize `delta_weight` (out_features, in_features; weight units) with pulses.

        scheme: "unipolar" (default) or "bipolar" (module docstring). model_aware / max_pulses:
        see `DeviceArray.pulses_for`.
        Conductances stay within each device's bounds; stuck devices do not move.
        """
        dw = _check_weight(delta_weight, self.shape, "delta_weight")
        dw = dw.to(device=self.g_ref.device, dtype=self.g_ref.dtype)
        bidir = self.device_model.pulse.bidirectional
        if scheme is None:
            scheme = "unipolar"
        if not isinstance(scheme, str) or scheme not in PULSE_SCHEMES:
            raise ValueError(f"scheme must be one of {list(PULSE_SCHEMES)}, got {scheme!r}")
        if scheme == "bipolar" and not bidir:
            raise ValueError(
                f"scheme 'bipolar' needs down pulses, but device {self.device_model.name!r} is "
                "unidirectional (pulse.bidirectional=False): use scheme='unipolar'"
            )
        dg = dw * self.g_ref
        inc = dg.clamp_min(0.0)
        dec = (-dg).clamp_min(0.0)
        if scheme == "unipolar":
            d_plus, d_minus = inc, dec
        else:
            room_minus = (self.minus.conductance - self.minus.g_min_dev).clamp_min(0.0)
            room_plus = (self.plus.conductance - self.plus.g_min_dev).clamp_min(0.0)
            # dW > 0: lower G_minus where its down step is at least G_plus's up step
            lower_m = self.minus.nominal_step(up=False) >= self.plus.nominal_step(up=True)
            lower_minus = torch.where(
                lower_m, torch.minimum(inc, room_minus), torch.zeros_like(inc)
            )
            # dW < 0: lower G_plus where its down step is at least G_minus's up step
            lower_p = self.plus.nominal_step(up=False) >= self.minus.nominal_step(up=True)
            lower_plus = torch.where(lower_p, torch.minimum(dec, room_plus), torch.zeros_like(dec))
            d_plus = (inc - lower_minus) - lower_plus
            d_minus = (dec - lower_plus) - lower_minus
        kw = {"model_aware": model_aware, "max_pulses": max_pulses}
        n_plus = self.plus.pulses_for(d_plus, **kw)
        n_minus = self.minus.pulses_for(d_minus, **kw)
        realized = self.pulse(n_plus, n_minus)
        return PulseResult(n_plus, n_minus, realized)

    def pulse_counts(self) -> dict[str, Tensor]:
        """Cumulative pulses sent per device: plus_up, plus_down, minus_up, minus_down (int64)."""
        return {
            "plus_up": self.plus.pulses_up,
            "plus_down": self.plus.pulses_down,
            "minus_up": self.minus.pulses_up,
            "minus_down": self.minus.pulses_down,
        }

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"device={self.device_model.name!r}, ir_drop={self.ir_drop}"
        )


# --------------------------------------------------------------------------------------------
# a layer of tiles


def _splits(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class AnalogLinear(nn.Module):
    """y = W x + b with W on crossbar tiles of at most tile_size x tile_size device pairs.

    Args:
        in_features, out_features: layer size.
        bias: add a digital bias b (an nn.Parameter, out_features).
        device: a `DeviceModel` or preset name.
        dac: input converter, one per input line (shared by the tiles of a tile row).
        adc, amplifier: output periphery, applied to every tile's partial output before the
            digital sum (each tile has its own ADC; a stateless module is shared).
        tile_size: maximum tile rows and columns (>= 1).
        ir_drop: per-tile IR drop (see module docstring).
        g_ref: siemens per weight unit shared by all tiles; None = (g_max - g_min) / max |W| at
            each `program`.
        generator / seed: random stream; each tile derives its own child stream in order. With
            neither, a fresh seed is drawn and recorded in `self.seed`.
        dtype: floating dtype of the device state and the bias.

    Before the first `program` every device sits at g_min (W = 0).
    Shapes: x (..., in_features) -> y (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: DeviceModel | str = "ideal",
        *,
        dac: nn.Module | None = None,
        adc: nn.Module | None = None,
        amplifier: nn.Module | None = None,
        tile_size: int = 512,
        ir_drop: float = 0.0,
        g_ref: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.in_features = _check_int(in_features, "in_features")
        self.out_features = _check_int(out_features, "out_features")
        self.tile_size = _check_int(tile_size, "tile_size")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.device_model = _as_model(device)
        for obj, name in ((dac, "dac"), (adc, "adc"), (amplifier, "amplifier")):
            _check_periphery(obj, name)
        self.dac = dac
        self._g_ref_fixed = g_ref is not None
        if g_ref is not None:
            g_ref = _check_g_ref(g_ref)
        gen = make_generator(generator, seed)
        self.seed = gen.initial_seed()
        self._in_splits = _splits(self.in_features, self.tile_size)
        self._out_splits = _splits(self.out_features, self.tile_size)
        tiles = []
        for o0, o1 in self._out_splits:
            for i0, i1 in self._in_splits:
                tiles.append(
                    Crossbar(
                        i1 - i0,
                        o1 - o0,
                        self.device_model,
                        adc=adc,
                        amplifier=amplifier,
                        ir_drop=ir_drop,
                        g_ref=g_ref,
                        generator=derive_generator(gen),
                        dtype=dtype,
                    )
                )
        self.tiles = nn.ModuleList(tiles)
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    # -- layout ----------------------------------------------------------------------------------
    @property
    def tile_grid(self) -> tuple[int, int]:
        """(tile rows along the outputs, tile columns along the inputs)."""
        return len(self._out_splits), len(self._in_splits)

    def tile(self, r: int, c: int) -> Crossbar:
        """The tile covering output block r and input block c."""
        return self.tiles[r * len(self._in_splits) + c]

    def _blocks(self, w: Tensor) -> Iterator[tuple[Crossbar, Tensor]]:
        for r, (o0, o1) in enumerate(self._out_splits):
            for c, (i0, i1) in enumerate(self._in_splits):
                yield self.tile(r, c), w[o0:o1, i0:i1]

    def _assemble(self, parts: list[Tensor]) -> Tensor:
        """Parts in tile order (row-major: output blocks outer, input blocks inner) -> matrix."""
        nc = len(self._in_splits)
        rows = [
            torch.cat(parts[r * nc : (r + 1) * nc], dim=1) for r in range(len(self._out_splits))
        ]
        return torch.cat(rows, dim=0)

    @property
    def g_ref(self) -> Tensor:
        """Siemens per weight unit (shared by all tiles)."""
        return self.tiles[0].g_ref

    @property
    def w_max(self) -> float:
        """Largest representable |weight|: (g_max - g_min) / g_ref."""
        return self.tiles[0].w_max

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    # -- programming ------------------------------------------------------------------------------
    @torch.no_grad()
    def program(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Program W (out_features, in_features) onto the tiles (one g_ref for all of them) and
        set the digital bias if given (out_features,). Restarts every tile's drift clock."""
        w = _check_weight(weight, self.shape)
        if self._g_ref_fixed:
            ref = float(self.g_ref)
        else:
            ref = self.tiles[0].default_g_ref(w)
        for tile, block in self._blocks(w):
            tile.program(block, g_ref=ref)
        if bias is not None:
            if self.bias is None:
                raise ValueError("bias given, but the layer was built with bias=False")
            if not isinstance(bias, Tensor) or tuple(bias.shape) != (self.out_features,):
                got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
                raise ValueError(
                    f"bias must be a tensor of shape ({self.out_features},), got {got}"
                )
            self.bias.copy_(bias)

    # -- reads -----------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features)
        if self.dac is not None:
            x = self.dac(x)
        xs = [x[..., i0:i1] for i0, i1 in self._in_splits]
        outs = []
        for r in range(len(self._out_splits)):
            y = self.tile(r, 0)(xs[0])
            for c in range(1, len(self._in_splits)):
                y = y + self.tile(r, c)(xs[c])  # digital sum of the tiles' ADC outputs
            outs.append(y)
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        if self.bias is not None:
            y = y + (self.bias if self.bias.dtype == y.dtype else self.bias.to(y.dtype))
        return y

    def effective_weight(self, *, noisy: bool = False, ir_drop: bool = True) -> Tensor:
        """The assembled (out_features, in_features) weight, see `Crossbar.effective_weight`."""
        return self._assemble(
            [t.effective_weight(noisy=noisy, ir_drop=ir_drop) for t in self.tiles]
        )

    def conductances(self, *, noisy: bool = False) -> tuple[Tensor, Tensor]:
        """Assembled (G_plus, G_minus), siemens, each (out_features, in_features)."""
        pairs = [t.conductances(noisy=noisy) for t in self.tiles]
        return self._assemble([p for p, _ in pairs]), self._assemble([m for _, m in pairs])

    # -- read noise, time --------------------------------------------------------------------------
    def set_read_noise(self, mode: str = "white", tau_c: float | None = None) -> None:
        """Read-noise evolution of every tile: "white", "quenched" or "ou" (with `tau_c`, s)."""
        for t in self.tiles:
            t.set_read_noise(mode, tau_c)

    def advance(self, dt: float) -> None:
        """Advance every tile's OU read noise by `dt` seconds."""
        for t in self.tiles:
            t.advance(dt)

    def resample_read_noise(self) -> None:
        for t in self.tiles:
            t.resample_read_noise()

    @contextlib.contextmanager
    def quenched_read(self) -> Iterator[AnalogLinear]:
        """Every forward inside the block sees one frozen read-noise draw per tile."""
        with contextlib.ExitStack() as stack:
            for t in self.tiles:
                stack.enter_context(t.quenched_read())
            yield self

    def drift(self, t_seconds: float) -> None:
        """Advance every tile to `t_seconds` after the last `program`."""
        for t in self.tiles:
            t.drift(t_seconds)

    # -- updates ---------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_pulses(
        self,
        delta_weight: Tensor,
        *,
        scheme: str | None = None,
        model_aware: bool = True,
        max_pulses: int | None = None,
    ) -> PulseResult:
        """Realize `delta_weight` (out_features, in_features) with pulses, tile by tile
        (see `Crossbar.apply_pulses`)."""
        dw = _check_weight(delta_weight, self.shape, "delta_weight")
        results = [
            tile.apply_pulses(block, scheme=scheme, model_aware=model_aware, max_pulses=max_pulses)
            for tile, block in self._blocks(dw)
        ]
        return PulseResult(
            self._assemble([r.pulses_plus for r in results]),
            self._assemble([r.pulses_minus for r in results]),
            self._assemble([r.delta_weight for r in results]),
        )

    @torch.no_grad()
    def pulse(self, n_plus: Tensor, n_minus: Tensor) -> Tensor:
        """Send signed pulse counts (int, (out_features, in_features)) to G_plus / G_minus;
        returns the realized weight change."""
        for name, n in (("n_plus", n_plus), ("n_minus", n_minus)):
            if not isinstance(n, Tensor) or tuple(n.shape) != self.shape:
                got = tuple(n.shape) if isinstance(n, Tensor) else type(n).__name__
                raise ValueError(f"{name} must be a tensor of shape {self.shape}, got {got}")
        parts = []
        for r, (o0, o1) in enumerate(self._out_splits):
            for c, (i0, i1) in enumerate(self._in_splits):
                parts.append(self.tile(r, c).pulse(n_plus[o0:o1, i0:i1], n_minus[o0:o1, i0:i1]))
        return self._assemble(parts)

    def pulse_counts(self) -> dict[str, Tensor]:
        """Cumulative pulses per device, assembled: plus_up, plus_down, minus_up, minus_down."""
        per_tile = [t.pulse_counts() for t in self.tiles]
        return {k: self._assemble([d[k] for d in per_tile]) for k in per_tile[0]}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, device={self.device_model.name!r}, "
            f"tile_size={self.tile_size}, tiles={self.tile_grid}"
        )
