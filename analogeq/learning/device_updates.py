"""Per-device updates: turn a gradient into conductance changes the way a chip would.

    updater = DeviceUpdater(mode="deterministic" | "stochastic", bl=31, seed=0)
    report = updater.apply(model, grads, lr)          # -> UpdateReport
    report = updater.apply_factors(name, x, e, lr)    # stochastic mode, outer-product factors

`model` must be built on hardware (`EquilibriumTransformer(config, hardware=HardwareConfig(...))`).
For every crossbar map (`model.crossbars()`, e.g. "attn.o") the requested change of its weight is
the SGD step dW = -lr dL/dW; it is realised by pulses on the devices of the differential pairs
W = (G_plus - G_minus) / g_ref, with the device's pulse response (`circuits.pulses`: the linear
step `PulseResponse` or the exponential step `ExpStepResponse`, with their up/down asymmetry,
soft bounds, cycle-to-cycle and device-to-device variation, bounds, levels). Every other
parameter in `grads` (biases, norms, embedding tables, maps kept digital) is digital and gets
the plain SGD step p -= lr g.

Modes.
* "deterministic": pulse counts computed from the requested dW per device (`Crossbar.apply_pulses`,
  `DeviceArray.pulses_for`): with model_aware=True the nominal response is inverted at each
  device's conductance (a nominal device lands within half a step of the request); False is the
  naive n = round(|dW| / dw) that ignores soft bounds and asymmetry. Needs the full dW at the
  array (a digital computation of the outer product, or a per-device controller).
* "stochastic": stochastic pulse trains of length BL with coincidence, as aihwkit's pulsed SGD
  (Gokmen & Vlasov, Front. Neurosci. 2016; aihwkit `PulseType.STOCHASTIC_COMPRESSED` with
  `update_bl_management` and `update_management`): for each sample n of the outer product
  grad_W = sum_n e_n x_n^T, row line i fires a pulse in each of bl_n slots with probability
  p_x = A |x_{n,i}|, column line j with p_e = B |e_{n,j}|; a device receives a pulse where the two
  coincide, in the direction -sign(x e). E[pulses] = bl A B |x e| and A B = lr / (dw bl), so
  E[dW] = -lr e x^T at the reference point of the device's response. bl_n = min(BL,
  ceil(lr max|x_n| max|e_n| / dw)) (BL management: the shortest train that needs no probability
  above 1) and A / B = sqrt(max|e_n| / max|x_n|) (update management: balanced probabilities).
  dw = granularity (g_max - g_min) / g_ref is the weight change of one nominal pulse, with the
  pulse response's `weight_granularity` (aihwkit's `calcWeightGranularity`: dw_min for a linear
  step, the nominal down step at w = 0 for the exponential step of PCM). Probabilities
  are clipped at 1 only when the request needs more than BL pulses (counted as clipped); then,
  as aihwkit's `PulsedUpdateMetaParameter::performUpdateManagement`
  (src/rpucuda/rpu_pulsed_meta_parameter.cpp) does under update management, max|e_n| is scaled
  by BL / k (k = lr max|x_n| max|e_n| / dw) before the ratio is taken: the largest x keeps
  probability 1 exactly and all of the clipping falls on the e (aihwkit's d) side, whose
  largest probability is k / BL.
  `apply(model, grads, lr)` in this mode factorises each dense gradient by an SVD (grad = sum_k
  s_k u_k v_k^T, factors sqrt(s_k) u_k and sqrt(s_k) v_k, rank up to the numerical rank): the
  gradient was computed digitally anyway; the local path is `apply_factors` with the factors the
  circuit has (below).

Schemes (which device of a pair moves).
* "unipolar" (default; the only one for devices without down pulses, such as PCM): dW > 0 raises
  G_plus, dW < 0 raises G_minus (both only go up; the pair drifts up in common mode until it is
  re-programmed).
* "bipolar": as `Crossbar.apply_pulses`: each change goes to the device whose nominal step in that
  direction is larger. In stochastic mode a device may get both up and down coincidences in one
  update; its up pulses are applied before its down pulses (the device model composes pulses of
  one sign exactly; the order of a mixed train is an approximation at O(dw) per update).
* "reference": every change goes to G_plus (up for dW > 0, down for dW < 0); G_minus is a fixed
  reference (aihwkit's one device per weight with a reference device). Needs down pulses.

Locality: where the factors x and e are physically available. The crossbar sees its input x on
its row lines (the DAC output of the map's input) in every scheme. The error e = dL/dy at its
output columns is local exactly for the node-to-node crossbars whose outputs are node currents:
`attn.o` and `ffn.down` (and a feature projection `embed`), where e = lam / r, the adjoint at the
nodes scaled by the node time-constant ratio; equilibrium propagation holds lam as the nudged
node displacement -(z_beta - z0) / beta, so e is a voltage difference on the node itself. For
`attn.q`, `attn.k`, `attn.v` and `ffn.up` the error must travel back through the periphery
(softmax and the q.k products, GELU) to the map's outputs: a signal routed through the circuit,
not local. For the readout `head`, e = dL/dlogits is the output error of the loss.

Energy (`UpdateReport.energy_j`). One pulse of amplitude v_write and length t_pulse into a device
of conductance G dissipates v_write^2 G t_pulse; the conductance during a pulse is taken as the
mean of the device's conductance before and after it, so n pulses of one device cost
n v_write^2 t_pulse (G_before + G_after) / 2 (exact for a constant step, the trapezoid rule
otherwise). v_write = 1 V and t_pulse = 100 ns are ASSUMED round numbers of the order of the
gradual SET / RESET pulses reported for PCM and RRAM, not measured values: set them for a device
(or a fixed `pulse_energy_j` per pulse). Periphery energy (pulse drivers, coincidence logic) is
not modelled. Pulses sent to stuck devices are counted and cost energy.

Nominal weights. The nominal digital weight of a crossbar map is what training updates and
checkpoints keep (`analogeq.hardware`); after the pulses it is moved by the *realised* change of
the crossbar's noise-free weight (G_plus - G_minus) / g_ref, not the requested one. The offset
between nominal and effective weights (programming error, drift) is left as it was: the device
error the straight-through gradient holds fixed, and a later `model.program()` rewrites the
weights the chip actually learned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["DeviceUpdater", "UpdateReport", "CrossbarUpdate", "outer_factors", "MODES", "SCHEMES"]

MODES = ("deterministic", "stochastic")
SCHEMES = ("unipolar", "bipolar", "reference")
_SVD_RTOL = 1e-7  # singular values below this fraction of the largest are dropped


# ------------------------------------------------------------------------------------------------
# checks


def _pos(name: str, value: Any, *, none_ok: bool = False) -> float | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite real number > 0, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite real number > 0, got {value}")
    return v


def _int(name: str, value: Any, low: int, *, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class CrossbarUpdate:
    """One crossbar map's update.

    pulses, pulses_plus, pulses_minus: pulses sent (total, to G_plus, to G_minus devices).
    energy_j: write energy, joules (module docstring).
    clipped_fraction: fraction of the weight entries with a nonzero request whose request could
        not be realised in full: beyond the room left to the devices' bounds, or (stochastic)
        needing more than BL coincidences in a sample.
    requested_dw, realised_dw: (out, in) weight changes (weight units); realised is the change of
        the noise-free weight (G_plus - G_minus) / g_ref without IR drop.
    rel_error: ||realised - requested|| / ||requested|| (0 when nothing was requested).
    """

    name: str
    pulses: int
    pulses_plus: int
    pulses_minus: int
    energy_j: float
    clipped_fraction: float
    requested_dw: Tensor
    realised_dw: Tensor
    rel_error: float


@dataclass(frozen=True)
class UpdateReport:
    """What `DeviceUpdater.apply` did: per crossbar (`crossbars`), totals, digital parameters."""

    mode: str
    scheme: str
    lr: float
    crossbars: dict[str, CrossbarUpdate] = field(default_factory=dict)
    digital: tuple[str, ...] = ()

    @property
    def pulses(self) -> dict[str, int]:
        """Pulses sent per crossbar map."""
        return {k: c.pulses for k, c in self.crossbars.items()}

    @property
    def total_pulses(self) -> int:
        return sum(c.pulses for c in self.crossbars.values())

    @property
    def energy_j(self) -> float:
        return sum(c.energy_j for c in self.crossbars.values())

    @property
    def clipped_fraction(self) -> float:
        """Clipped fraction over all crossbar weight entries (entry-weighted)."""
        n = sum(c.requested_dw.numel() for c in self.crossbars.values())
        if n == 0:
            return 0.0
        return sum(c.clipped_fraction * c.requested_dw.numel() for c in self.crossbars.values()) / n

    @property
    def rel_error(self) -> float:
        """||realised - requested|| / ||requested|| over all crossbar entries (0 if none)."""
        num = sum(float((c.realised_dw - c.requested_dw).square().sum())
                  for c in self.crossbars.values())
        den = sum(float(c.requested_dw.square().sum()) for c in self.crossbars.values())
        return math.sqrt(num / den) if den > 0 else 0.0

    def summary(self) -> str:
        lines = [f"{self.mode} update ({self.scheme}), lr {self.lr:g}: {self.total_pulses} pulses, "
                 f"{self.energy_j:.3e} J, clipped {self.clipped_fraction:.2%}, realised vs "
                 f"requested error {self.rel_error:.3g}"]
        for c in self.crossbars.values():
            lines.append(f"  {c.name}: {c.pulses} pulses ({c.pulses_plus} G+, {c.pulses_minus} G-),"
                         f" {c.energy_j:.3e} J, clipped {c.clipped_fraction:.2%}, error "
                         f"{c.rel_error:.3g}")
        if self.digital:
            lines.append(f"  digital SGD: {', '.join(self.digital)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# helpers on an AnalogLinear


def _tiles(analog: Any) -> Iterator[tuple[Any, slice, slice]]:
    """(tile, output slice, input slice) for every tile of an AnalogLinear."""
    rows, cols = analog.tile_grid
    o0 = 0
    for r in range(rows):
        i0 = 0
        o1 = o0 + analog.tile(r, 0).out_features
        for c in range(cols):
            tile = analog.tile(r, c)
            i1 = i0 + tile.in_features
            yield tile, slice(o0, o1), slice(i0, i1)
            i0 = i1
        o0 = o1


def _room(tile: Any, dg: Tensor, scheme: str) -> Tensor:
    """Conductance change (siemens, >= 0) the pair can still make in the direction of dg."""
    gp, gm = tile.plus.conductance, tile.minus.conductance
    up_p = (tile.plus.g_max_dev - gp).clamp_min(0.0)
    up_m = (tile.minus.g_max_dev - gm).clamp_min(0.0)
    dn_p = (gp - tile.plus.g_min_dev).clamp_min(0.0)
    dn_m = (gm - tile.minus.g_min_dev).clamp_min(0.0)
    if scheme == "unipolar":
        return torch.where(dg >= 0, up_p, up_m)
    if scheme == "reference":
        return torch.where(dg >= 0, up_p, dn_p)
    return torch.where(dg >= 0, up_p + dn_m, dn_p + up_m)


def _energy(n: Tensor, g0: Tensor, g1: Tensor, per_pulse: float | None, v2t: float) -> float:
    count = n.abs().to(torch.float64)
    if per_pulse is not None:
        return per_pulse * float(count.sum())
    return v2t * float((count * 0.5 * (g0 + g1).to(torch.float64)).sum())


# ------------------------------------------------------------------------------------------------
# the updater


class DeviceUpdater:
    """Realise SGD steps on a hardware model's crossbars with device pulses (module docstring).

    Args:
        mode: "deterministic" or "stochastic".
        bl: longest stochastic pulse train (>= 1; aihwkit's default desired_bl 31).
        seed: of the stochastic trains (>= 0). Device responses (cycle noise) use each device
            array's own seeded stream.
        scheme: "unipolar" (default), "bipolar" or "reference" (module docstring).
        model_aware: deterministic mode: invert the nominal response (True) or naive counts.
        max_pulses: deterministic mode: cap per device and update (None: 4 / dw_min).
        bl_management, update_management: stochastic mode, aihwkit's options (both default True).
        v_write (volts, > 0), t_pulse (seconds, > 0): pulse amplitude and length for the energy
            (assumed defaults 1 V, 100 ns), or pulse_energy_j (joules per pulse, > 0) instead.
        model: optionally bind a model now (`apply` binds its model; `apply_factors` uses it).
    """

    def __init__(
        self,
        mode: str = "deterministic",
        bl: int = 31,
        seed: int = 0,
        *,
        scheme: str = "unipolar",
        model_aware: bool = True,
        max_pulses: int | None = None,
        bl_management: bool = True,
        update_management: bool = True,
        v_write: float = 1.0,
        t_pulse: float = 100e-9,
        pulse_energy_j: float | None = None,
        model: Any = None,
    ):
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if not isinstance(scheme, str) or scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
        self.mode = mode
        self.scheme = scheme
        self.bl = _int("bl", bl, 1)
        self.seed = _int("seed", seed, 0)
        self.model_aware = _bool("model_aware", model_aware)
        self.max_pulses = _int("max_pulses", max_pulses, 0, none_ok=True)
        self.bl_management = _bool("bl_management", bl_management)
        self.update_management = _bool("update_management", update_management)
        self.v_write = _pos("v_write", v_write)
        self.t_pulse = _pos("t_pulse", t_pulse)
        self.pulse_energy_j = _pos("pulse_energy_j", pulse_energy_j, none_ok=True)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.model: Any = None
        if model is not None:
            self.bind(model)

    # -- binding -----------------------------------------------------------------------------------
    def bind(self, model: Any) -> None:
        """Use `model` (a hardware EquilibriumTransformer) for `apply_factors`."""
        if getattr(model, "hardware", None) is None or not hasattr(model, "crossbars"):
            raise ValueError(
                "DeviceUpdater needs a model on hardware: build it with "
                "EquilibriumTransformer(config, hardware=HardwareConfig(...)); the digital model "
                "has no devices to pulse"
            )
        bidir = model.hardware.device_model.pulse.bidirectional
        if self.scheme != "unipolar" and not bidir:
            raise ValueError(
                f"scheme {self.scheme!r} needs down pulses, but device "
                f"{model.hardware.device_model.name!r} is unidirectional (only up pulses): use "
                "scheme='unipolar'"
            )
        self.model = model

    def _layers(self) -> dict[str, Any]:
        from ..hardware import hardware_layers

        return hardware_layers(self.model)

    @property
    def _v2t(self) -> float:
        return self.v_write**2 * self.t_pulse

    # -- the trainer's entry point -----------------------------------------------------------------
    def apply(self, model: Any, grads: dict[str, Tensor], lr: float) -> UpdateReport:
        """Apply -lr * grads: pulses on the crossbar maps' devices, SGD on digital parameters.

        Args:
            model: a hardware model (ValueError otherwise); bound for later `apply_factors`.
            grads: {parameter name: gradient} keyed like `model.named_parameters()` (any subset;
                finite, shapes of the parameters).
            lr: learning rate (> 0).
        Returns: the `UpdateReport`; the nominal weights follow the realised conductances.
        """
        self.bind(model)
        lr = _pos("lr", lr)
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict {{parameter name: tensor}}, got "
                            f"{type(grads).__name__}")
        params = dict(model.named_parameters())
        for name, g in grads.items():
            if name not in params:
                raise ValueError(f"grads has {name!r}, which is not a parameter of the model")
            if not isinstance(g, Tensor) or tuple(g.shape) != tuple(params[name].shape):
                got = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
                raise ValueError(f"grads[{name!r}] must have shape {tuple(params[name].shape)}, "
                                 f"got {got}")
        bad = [n for n, g in grads.items() if not bool(torch.isfinite(g).all())]
        if bad:
            raise ValueError(f"grads must be finite; non-finite entries in {bad}")
        layers = self._layers()
        weight_names = {f"{n}.weight": n for n in layers}
        reports: dict[str, CrossbarUpdate] = {}
        digital = []
        for pname, g in grads.items():
            if pname in weight_names:
                name = weight_names[pname]
                if self.mode == "deterministic":
                    reports[name] = self._deterministic(name, layers[name], -lr * g.detach())
                else:
                    e, x = _factorise(g.detach())
                    reports[name] = self._stochastic(name, layers[name], x, e, lr)
            else:
                with torch.no_grad():
                    params[pname].sub_(lr * g.to(params[pname].dtype))
                digital.append(pname)
        return UpdateReport(self.mode, self.scheme, lr, reports, tuple(digital))

    def apply_factors(self, name: str, x: Tensor, e: Tensor, lr: float, *,
                      model: Any = None) -> UpdateReport:
        """Stochastic-mode update of one crossbar map from its outer-product factors.

        grad_W = sum_n e_n x_n^T; the step is -lr grad_W (module docstring, locality).
        Args:
            name: the map (a key of `model.crossbars()`, e.g. "attn.o").
            x: (..., in_features) the map's inputs (DAC outputs), one row per sample/position.
            e: (..., out_features) dL/dy at its outputs, same leading shape as x.
            lr: > 0. model: the hardware model (default: the one bound by `apply` / `bind`).
        """
        if self.mode != "stochastic":
            raise ValueError("apply_factors needs mode='stochastic' (coincidence pulse trains)")
        if model is not None:
            self.bind(model)
        if self.model is None:
            raise ValueError(
                "no model bound: pass model=... or call apply(model, ...) / bind(model) first"
            )
        lr = _pos("lr", lr)
        layers = self._layers()
        if name not in layers:
            raise ValueError(f"name must be a crossbar map of the model, one of {list(layers)}, "
                             f"got {name!r}")
        layer = layers[name]
        for label, t, width in (("x", x, layer.in_features), ("e", e, layer.out_features)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{label} must be a real floating tensor")
            if t.ndim < 1 or t.shape[-1] != width:
                raise ValueError(f"{label} must have shape (..., {width}), got {tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{label} must be finite")
        if tuple(x.shape[:-1]) != tuple(e.shape[:-1]):
            raise ValueError(f"x and e must have the same leading shape, got {tuple(x.shape)} "
                             f"and {tuple(e.shape)}")
        x2 = x.detach().reshape(-1, layer.in_features)
        e2 = e.detach().reshape(-1, layer.out_features)
        report = self._stochastic(name, layer, x2, e2, lr)
        return UpdateReport(self.mode, self.scheme, lr, {name: report}, ())

    # -- deterministic -----------------------------------------------------------------------------
    @torch.no_grad()
    def _deterministic(self, name: str, layer: Any, dw: Tensor) -> CrossbarUpdate:
        analog = layer.analog
        dtype = analog.g_ref.dtype
        dw = dw.to(device=analog.g_ref.device, dtype=dtype)
        realised = torch.zeros_like(dw)
        clipped = torch.zeros(dw.shape, dtype=torch.bool, device=dw.device)
        n_p_tot = n_m_tot = 0
        energy = 0.0
        for tile, so, si in _tiles(analog):
            block = dw[so, si]
            dg = block * tile.g_ref
            clipped[so, si] = (dg != 0) & (dg.abs() > _room(tile, dg, self.scheme) * (1 + 1e-9))
            g0p, g0m = tile.plus.conductance.clone(), tile.minus.conductance.clone()
            if self.scheme == "reference":
                n_p = tile.plus.pulses_for(dg, model_aware=self.model_aware,
                                           max_pulses=self.max_pulses)
                n_m = torch.zeros_like(n_p)
                realised[so, si] = tile.pulse(n_p, n_m)
            else:
                res = tile.apply_pulses(block, scheme=self.scheme, model_aware=self.model_aware,
                                        max_pulses=self.max_pulses)
                n_p, n_m = res.pulses_plus, res.pulses_minus
                realised[so, si] = res.delta_weight
            energy += _energy(n_p, g0p, tile.plus.conductance, self.pulse_energy_j, self._v2t)
            energy += _energy(n_m, g0m, tile.minus.conductance, self.pulse_energy_j, self._v2t)
            n_p_tot += int(n_p.abs().sum())
            n_m_tot += int(n_m.abs().sum())
        return self._finish(name, layer, dw, realised, clipped, n_p_tot, n_m_tot, energy)

    # -- stochastic --------------------------------------------------------------------------------
    @torch.no_grad()
    def _coincidences(self, x: Tensor, e: Tensor, lr: float, dw: float
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """Pulse counts (float64, (out, in)) for increases and decreases of W, and the entries
        whose trains were clipped (probability > 1), from factors x (N, in) and e (N, out)."""
        x = x.to(torch.float64).cpu()
        e = e.to(torch.float64).cpu()
        N = x.shape[0]
        mx = x.abs().amax(dim=1)
        me = e.abs().amax(dim=1)
        active = (mx > 0) & (me > 0)
        need = lr * mx * me / dw  # expected pulses of the largest entry of each sample
        if self.bl_management:
            bl_n = torch.ceil(need - 1e-12).clamp(1, self.bl)
        else:
            bl_n = torch.full_like(need, float(self.bl))
        base = torch.sqrt(lr / (dw * bl_n))
        if self.update_management:
            # aihwkit performUpdateManagement: "if (k_val > max_BL) d_val *= max_BL / k_val"
            # (avoid clipping of x): every probability above 1 is then on the e side
            d_val = torch.where(need > self.bl, me * (self.bl / need.clamp_min(1e-300)), me)
            ratio = torch.where(active, torch.sqrt(d_val / mx.clamp_min(1e-300)),
                                torch.ones_like(mx))
        else:
            ratio = torch.ones_like(mx)
        a = torch.where(active, base * ratio, torch.zeros_like(base))
        b = torch.where(active, base / ratio, torch.zeros_like(base))
        px_raw = a[:, None] * x.abs()
        pe_raw = b[:, None] * e.abs()
        clip_x, clip_e = px_raw > 1.0, pe_raw > 1.0
        px, pe = px_raw.clamp_max(1.0), pe_raw.clamp_max(1.0)
        slots = torch.arange(self.bl, dtype=torch.float64)[None, :] < bl_n[:, None]  # (N, BL)
        ux = torch.rand((N, self.bl, x.shape[1]), generator=self.generator, dtype=torch.float64)
        ue = torch.rand((N, self.bl, e.shape[1]), generator=self.generator, dtype=torch.float64)
        bx = (ux < px[:, None, :]) & slots[:, :, None]
        be = (ue < pe[:, None, :]) & slots[:, :, None]
        xp = (bx & (x > 0)[:, None, :]).reshape(-1, x.shape[1]).to(torch.float64)
        xm = (bx & (x < 0)[:, None, :]).reshape(-1, x.shape[1]).to(torch.float64)
        ep = (be & (e > 0)[:, None, :]).reshape(-1, e.shape[1]).to(torch.float64)
        em = (be & (e < 0)[:, None, :]).reshape(-1, e.shape[1]).to(torch.float64)
        # SGD: dW = -lr e x^T rises where sign(e) sign(x) < 0
        n_inc = ep.T @ xm + em.T @ xp
        n_dec = ep.T @ xp + em.T @ xm
        nz_x, nz_e = (x != 0).to(torch.float64), (e != 0).to(torch.float64)
        clipped = (clip_e.to(torch.float64).T @ nz_x + nz_e.T @ clip_x.to(torch.float64)) > 0
        return n_inc, n_dec, clipped

    @torch.no_grad()
    def _stochastic(self, name: str, layer: Any, x: Tensor, e: Tensor, lr: float
                    ) -> CrossbarUpdate:
        analog = layer.analog
        dtype, device = analog.g_ref.dtype, analog.g_ref.device
        m = analog.device_model
        dw = m.pulse.weight_granularity * m.g_range / float(analog.g_ref)
        requested = (-lr * e.to(torch.float64).T @ x.to(torch.float64)).to(dtype=dtype,
                                                                           device=device)
        n_inc, n_dec, clip_train = self._coincidences(x, e, lr, dw)
        n_inc = n_inc.round().to(torch.int64).to(device)
        n_dec = n_dec.round().to(torch.int64).to(device)
        realised = torch.zeros_like(requested)
        clipped = clip_train.to(device)
        n_p_tot = n_m_tot = 0
        energy = 0.0
        for tile, so, si in _tiles(analog):
            inc, dec = n_inc[so, si], n_dec[so, si]
            dg = requested[so, si] * tile.g_ref
            clipped[so, si] |= (dg != 0) & (dg.abs() > _room(tile, dg, self.scheme) * (1 + 1e-9))
            zero = torch.zeros_like(inc)
            if self.scheme == "unipolar":
                trains = [(inc, dec)]
            elif self.scheme == "reference":
                trains = [(inc, zero), (-dec, zero)]
            else:
                lower_m = tile.minus.nominal_step(up=False) >= tile.plus.nominal_step(up=True)
                lower_p = tile.plus.nominal_step(up=False) >= tile.minus.nominal_step(up=True)
                up_p = torch.where(lower_m, zero, inc)
                dn_m = torch.where(lower_m, inc, zero)
                dn_p = torch.where(lower_p, dec, zero)
                up_m = torch.where(lower_p, zero, dec)
                trains = [(up_p, up_m), (-dn_p, -dn_m)]
            for n_p, n_m in trains:
                g0p, g0m = tile.plus.conductance.clone(), tile.minus.conductance.clone()
                realised[so, si] += tile.pulse(n_p, n_m)
                energy += _energy(n_p, g0p, tile.plus.conductance, self.pulse_energy_j,
                                  self._v2t)
                energy += _energy(n_m, g0m, tile.minus.conductance, self.pulse_energy_j,
                                  self._v2t)
                n_p_tot += int(n_p.abs().sum())
                n_m_tot += int(n_m.abs().sum())
        return self._finish(name, layer, requested, realised, clipped, n_p_tot, n_m_tot, energy)

    # -- bookkeeping -------------------------------------------------------------------------------
    @torch.no_grad()
    def _finish(self, name: str, layer: Any, requested: Tensor, realised: Tensor, clipped: Tensor,
                n_plus: int, n_minus: int, energy: float) -> CrossbarUpdate:
        w = layer._parameters["weight"]
        w.add_(realised.to(dtype=w.dtype, device=w.device))  # nominal follows the devices
        layer._colsum_key = None
        nz = requested != 0
        n_req = int(nz.sum())
        frac = float((clipped & nz).sum()) / n_req if n_req else 0.0
        den = float(requested.square().sum())
        err = math.sqrt(float((realised - requested).square().sum()) / den) if den > 0 else 0.0
        return CrossbarUpdate(name, n_plus + n_minus, n_plus, n_minus, energy, frac,
                              requested.detach().clone(), realised.detach().clone(), err)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The stochastic trains' RNG state and the settings (for checkpoints)."""
        return {"mode": self.mode, "scheme": self.scheme, "bl": self.bl, "seed": self.seed,
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "rng" not in state:
            raise TypeError("state must be a dict from DeviceUpdater.state_dict()")
        for key in ("mode", "scheme", "bl"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]!r}, this updater "
                                 f"{key}={getattr(self, key)!r}")
        self.generator.set_state(state["rng"])

    def __repr__(self) -> str:
        extra = f", bl={self.bl}" if self.mode == "stochastic" else \
            f", model_aware={self.model_aware}"
        return f"DeviceUpdater(mode={self.mode!r}, scheme={self.scheme!r}{extra})"


def _factorise(g: Tensor) -> tuple[Tensor, Tensor]:
    """grad (out, in) = e^T x with e (k, out), x (k, in) from an SVD (numerical rank k)."""
    g64 = g.to(torch.float64).cpu()
    u, s, vh = torch.linalg.svd(g64, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return g64.new_zeros(1, g.shape[0]), g64.new_zeros(1, g.shape[1])
    keep = s > _SVD_RTOL * s[0]
    r = torch.sqrt(s[keep])
    e = (u[:, keep] * r).T
    x = vh[keep] * r[:, None]
    return e, x


def outer_factors(model: Any, inputs: Tensor, z: Tensor, lam: Tensor
                  ) -> dict[str, tuple[Tensor, Tensor]]:
    """The outer-product factors (x, e) of every crossbar map of the equilibrium gradient.

    The force part of the gradient is lam^T dF/dtheta at the state z (`_common.assemble_gradients`);
    for a map y = W x inside F that is sum_n e_n x_n^T with x_n its inputs (DAC outputs) and
    e_n = d(lam . F)/dy_n, n over batch and token positions. Feed them to
    `DeviceUpdater.apply_factors(name, x, e, lr)` (module docstring, locality: e is local for
    attn.o / ffn.down, routed through the periphery for q, k, v, ffn.up). The readout `head`
    does not enter F; its gradient comes from the loss (e = dL/dlogits), not from here.

    Args:
        model: a hardware model; inputs: token ids / features; z (batch, T, C) the state (z0);
        lam (batch, T, C): the adjoint (exact, or an EP estimate: info["adjoint"] of a
            `GradientResult`).
    Returns: {name: (x (N, in_features), e (N, out_features))}, N = batch * T, detached.
    """
    if getattr(model, "hardware", None) is None:
        raise ValueError("outer_factors needs a model on hardware (HardwareConfig)")
    from ..hardware import hardware_layers

    force = model.force(inputs)
    if not isinstance(z, Tensor) or not isinstance(lam, Tensor) or z.shape != lam.shape:
        raise ValueError("z and lam must be tensors of the same shape (batch, T, C)")
    layers = hardware_layers(model)
    seen: dict[str, tuple[Tensor, Tensor]] = {}
    handles = []

    def hook(name: str, layer: Any) -> Any:
        def fn(module: Any, args: tuple[Tensor, ...], out: Tensor) -> None:
            x = args[0]
            xd = layer.dac(x) if layer.dac is not None else x
            out.retain_grad()
            seen[name] = (xd.detach(), out)
        return fn

    try:
        for name, layer in layers.items():
            handles.append(layer.register_forward_hook(hook(name, layer)))
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            total = (force(zz) * lam.detach()).sum()
        outs = [o for _, o in seen.values()]
        grads = torch.autograd.grad(total, outs, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    result = {}
    for (name, (x, _)), g in zip(seen.items(), grads, strict=True):
        if g is None:
            continue
        lay = layers[name]
        result[name] = (x.reshape(-1, lay.in_features), g.detach().reshape(-1, lay.out_features))
    return result
