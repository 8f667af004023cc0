"""Crossbar / AnalogLinear: exact ideal reads, tiling, IR drop vs a nodal solve, drift, read-noise
modes, pulses, determinism and validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from analogeq.circuits.crossbar import AnalogLinear, Crossbar, ir_drop_load
from analogeq.circuits.devices import (
    DeviceModel,
    Drift,
    ProgrammingNoise,
    PulseResponse,
    ReadNoise,
    ideal,
    rram,
)
from analogeq.circuits.periphery import ADC, DAC

Z = 5.0
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quiet(model: DeviceModel, **changes) -> DeviceModel:
    base = dataclasses.replace(
        model,
        programming=ProgrammingNoise(),
        read=ReadNoise(),
        drift=Drift(),
        g_max_dtod=0.0,
        g_min_dtod=0.0,
        stuck_at_min=0.0,
        stuck_at_max=0.0,
        pulse=dataclasses.replace(model.pulse, cycle_noise=0.0, dw_min_dtod=0.0, up_down_dtod=0.0),
    )
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------------------------------
# ideal reads and tiling


def test_ideal_device_reproduces_the_linear_layer():
    w = torch.randn(23, 37, generator=_gen(0), dtype=F64)
    b = torch.randn(23, generator=_gen(1), dtype=F64)
    x = torch.randn(4, 5, 37, generator=_gen(2), dtype=F64)
    layer = AnalogLinear(37, 23, device="ideal", seed=0, dtype=F64)
    layer.program(w, b)
    assert torch.allclose(layer(x), x @ w.T + b, rtol=1e-12, atol=1e-12)
    assert torch.allclose(layer.effective_weight(), w, rtol=1e-12, atol=1e-14)
    gp, gm = layer.conductances()
    assert torch.all((gp == 0) | (gm == 0))  # one device of each pair at g_min
    assert layer.g_ref.item() == pytest.approx(25e-6 / w.abs().max().item())


def test_ideal_float32_and_gradient_and_complex_input():
    w = torch.randn(6, 9, generator=_gen(3))
    layer = AnalogLinear(9, 6, bias=False, device=ideal(), seed=0)
    layer.program(w)
    x = torch.randn(3, 9, generator=_gen(4), requires_grad=True)
    y = layer(x)
    assert torch.allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert torch.allclose(x.grad, w.sum(0).expand(3, 9), rtol=1e-5, atol=1e-5)
    xc = torch.randn(2, 9, dtype=torch.complex64, generator=_gen(5))
    assert torch.allclose(layer(xc), xc @ w.T.to(torch.complex64), rtol=1e-5, atol=1e-5)


def test_tiled_matrix_equals_untiled_ideal_result():
    w = torch.randn(1200, 700, generator=_gen(6))
    b = torch.randn(1200, generator=_gen(7))
    x = torch.randn(8, 700, generator=_gen(8))
    tiled = AnalogLinear(700, 1200, device="ideal", tile_size=512, seed=0)
    whole = AnalogLinear(700, 1200, device="ideal", tile_size=1200, seed=0)
    assert tiled.tile_grid == (3, 2) and whole.tile_grid == (1, 1)
    assert tiled.tile(2, 1).shape == (1200 - 1024, 700 - 512)
    tiled.program(w, b)
    whole.program(w, b)
    ref = (x.double() @ w.double().T + b.double()).float()
    scale = float(ref.abs().max())
    assert torch.allclose(tiled(x), whole(x), rtol=0, atol=1e-5 * scale)
    assert torch.allclose(tiled(x), ref, rtol=0, atol=1e-5 * scale)
    assert torch.equal(tiled.effective_weight(), whole.effective_weight())


def test_periphery_in_the_layer():
    w = torch.randn(5, 8, generator=_gen(9), dtype=F64) * 0.3
    x = torch.randn(100, 8, generator=_gen(10), dtype=F64)
    layer = AnalogLinear(
        8, 5, bias=False, device="ideal", dac=DAC(4, 1.0), adc=ADC(6, 2.0), dtype=F64
    )
    layer.program(w)
    # independent reference: the documented level schemes
    dstep = 2.0 / (2**4 - 2)
    xq = torch.round(x.clamp(-1, 1) / dstep) * dstep
    astep = 4.0 / (2**6 - 2)
    ref = torch.round((xq @ w.T).clamp(-2, 2) / astep) * astep
    assert torch.allclose(layer(x), ref, atol=1e-12)


# ------------------------------------------------------------------------------------------
# IR drop


def _nodal_output(g: np.ndarray, v: np.ndarray, r_wire: float) -> np.ndarray:
    """Exact column currents of one resistive array with wire resistance, by nodal analysis.

    g: (out, in) siemens; input i drives row i from the end next to output 0; output o is the
    current into virtual ground at the end of column o next to input in-1.
    """
    n_out, n_in = g.shape
    gw = 1.0 / r_wire
    n = 2 * n_in * n_out
    row = lambda i, o: i * n_out + o  # noqa: E731
    col = lambda i, o: n_in * n_out + i * n_out + o  # noqa: E731
    Y = np.zeros((n, n))
    I = np.zeros(n)

    def link(a, b, c):
        Y[a, a] += c
        Y[b, b] += c
        Y[a, b] -= c
        Y[b, a] -= c

    for i in range(n_in):
        Y[row(i, 0), row(i, 0)] += gw
        I[row(i, 0)] += gw * v[i]
        for o in range(n_out - 1):
            link(row(i, o), row(i, o + 1), gw)
        for o in range(n_out):
            link(row(i, o), col(i, o), g[o, i])
    for o in range(n_out):
        for i in range(n_in - 1):
            link(col(i, o), col(i + 1, o), gw)
        Y[col(n_in - 1, o), col(n_in - 1, o)] += gw
    V = np.linalg.solve(Y, I)
    return np.array([gw * V[col(n_in - 1, o)] for o in range(n_out)])


def test_ir_drop_first_order_model_matches_nodal_solution():
    n_in, n_out, ir = 6, 5, 1e-4
    w = torch.randn(n_out, n_in, generator=_gen(11), dtype=F64)
    v = torch.randn(n_in, generator=_gen(12), dtype=F64)
    xbar = Crossbar(n_in, n_out, "ideal", ir_drop=ir, dtype=F64)
    xbar.program(w)
    y_model = xbar(v).numpy()
    gp, gm = (g.numpy() for g in xbar.conductances())
    r_wire = ir / 25e-6
    g_ref = float(xbar.g_ref)
    y_exact = (_nodal_output(gp, v.numpy(), r_wire) - _nodal_output(gm, v.numpy(), r_wire)) / g_ref
    y_ideal = (w @ v).numpy()
    drop = np.abs(y_ideal - y_exact).max()
    assert drop > 1e-5 * np.abs(y_ideal).max()  # the effect is visible
    assert np.abs(y_model - y_exact).max() < 0.01 * drop  # error is second order in r_wire


def test_ir_drop_load_matches_its_definition():
    g = torch.rand(4, 7, generator=_gen(13), dtype=F64)
    ref = torch.zeros_like(g)
    for o in range(4):
        for i in range(7):
            a = sum((min(o, k) + 1) * g[k, i] for k in range(4))
            d = sum((min(6 - i, 6 - k) + 1) * g[o, k] for k in range(7))
            ref[o, i] = a + d
    assert torch.allclose(ir_drop_load(g), ref, rtol=1e-12)


def test_ir_drop_attenuates_outputs_monotonically():
    w = torch.rand(30, 40, generator=_gen(14), dtype=F64) + 0.05
    x = torch.rand(3, 40, generator=_gen(15), dtype=F64) + 0.05
    outs = []
    for ir in (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3):
        layer = AnalogLinear(40, 30, bias=False, device="ideal", ir_drop=ir, dtype=F64)
        layer.program(w)
        outs.append(layer(x))
    assert torch.allclose(outs[0], x @ w.T, rtol=1e-12)
    for a, b in zip(outs, outs[1:], strict=False):
        assert torch.all(b < a)


# ------------------------------------------------------------------------------------------
# drift, read noise, determinism


def test_pcm_drift_shrinks_weights_and_rejects_bad_times():
    w = torch.randn(20, 30, generator=_gen(16))
    layer = AnalogLinear(30, 20, device="pcm", seed=1)
    layer.program(w)
    w0 = layer.effective_weight().abs().sum()
    layer.drift(86400.0)
    assert layer.effective_weight().abs().sum() < w0
    with pytest.raises(ValueError, match="t_seconds must be in"):
        layer.drift(-5.0)
    with pytest.raises(ValueError, match="time runs forward"):
        layer.drift(10.0)


def _run(seed: int) -> list[torch.Tensor]:
    layer = AnalogLinear(40, 30, device="pcm", tile_size=16, seed=seed)
    layer.program(torch.randn(30, 40, generator=_gen(0)), torch.randn(30, generator=_gen(1)))
    x = torch.randn(4, 40, generator=_gen(2))
    out = [layer(x).detach(), layer(x).detach()]
    layer.drift(3600.0)
    res = layer.apply_pulses(torch.randn(30, 40, generator=_gen(3)) * 0.05)
    out += [layer(x).detach(), res.delta_weight, res.pulses_plus, *layer.conductances()]
    return out


def test_seeded_layers_repeat_bit_for_bit_and_seeds_differ():
    a, b, c = _run(5), _run(5), _run(6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])  # white read noise: every forward draws
    assert not any(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_read_noise_modes_in_the_layer():
    layer = AnalogLinear(20, 10, device="pcm", tile_size=8, seed=0)
    layer.program(torch.randn(10, 20, generator=_gen(0)))
    x = torch.randn(2, 20, generator=_gen(1))
    with layer.quenched_read():
        y1 = layer(x)
        assert torch.equal(y1, layer(x))
    assert not torch.equal(layer(x), layer(x))  # back to white
    layer.set_read_noise("ou", tau_c=1e-3)
    a = layer(x)
    assert torch.equal(a, layer(x))
    layer.advance(1e-4)
    b = layer(x)
    assert not torch.equal(a, b)
    layer.advance(1.0)  # 1000 correlation times: decorrelated
    c = layer(x)
    assert (c - a).abs().mean() > (b - a).abs().mean()


# ------------------------------------------------------------------------------------------
# pulses


@pytest.mark.parametrize("scheme", ["unipolar", "bipolar"])
def test_small_requested_changes_are_realized_within_half_a_step(scheme):
    dw_min = 1e-3
    m = _quiet(ideal(), pulse=PulseResponse(dw_min=dw_min))
    layer = AnalogLinear(30, 20, bias=False, device=m, dtype=F64)
    w = (torch.rand(20, 30, generator=_gen(0), dtype=F64) - 0.5) * 0.8
    w[0, 0] = 0.5  # w_max = 0.5 and no device starts near g_max
    layer.program(w)
    req = (torch.rand(20, 30, generator=_gen(1), dtype=F64) - 0.5) * 0.04
    req[0, 0] = 0.0
    res = layer.apply_pulses(req, scheme=scheme)
    step = dw_min * layer.w_max  # one pulse in weight units
    assert (res.delta_weight - req).abs().max() <= 0.5 * step * (1 + 1e-9)
    assert torch.allclose(layer.effective_weight() - w, res.delta_weight, atol=1e-12)
    counts = layer.pulse_counts()
    assert int(sum(c.sum() for c in counts.values())) == int(res.total_pulses)
    if scheme == "unipolar":
        assert int(counts["plus_down"].sum()) == 0 and int(counts["minus_down"].sum()) == 0


def test_noisy_pulses_realize_requests_in_expectation():
    # rram response without device-to-device spread: cycle noise 3.75 (additive), soft bounds
    m = dataclasses.replace(
        _quiet(rram()), pulse=dataclasses.replace(rram().pulse, dw_min_dtod=0.0, up_down_dtod=0.0)
    )
    n_out, n_in = 100, 100
    layer = AnalogLinear(n_in, n_out, bias=False, device=m, seed=3, dtype=F64)
    w = torch.full((n_out, n_in), 0.2, dtype=F64)
    w[0, 0] = 1.0
    layer.program(w)
    req = torch.full((n_out, n_in), 0.03, dtype=F64)
    req[0, 0] = 0.0
    res = layer.apply_pulses(req)  # unipolar: all on G_plus from x = 0.2
    d = res.delta_weight.flatten()[1:].numpy()
    # controller rounding error: at most half of the largest nominal step on the way (at x = 0.2,
    # soft bound up with x_ref = 0.375: dw_min (1 - (x - x_ref) / (1 - x_ref)))
    x_ref = 0.375
    max_step = 0.001 * (1 - (0.2 - x_ref) / (1 - x_ref))
    half_step = 0.5 * max_step * layer.w_max
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert abs(d.mean() - 0.03) < half_step + Z * se
    assert d.std() > 0  # the noise is there


def test_bounds_levels_and_stuck_devices_hold_under_pulses():
    m = dataclasses.replace(
        rram(),
        n_levels=33,
        programming=ProgrammingNoise(),
        g_max_dtod=0.0,
        g_min_dtod=0.0,
        stuck_at_min=0.1,
        stuck_at_max=0.1,
    )
    layer = AnalogLinear(40, 30, bias=False, device=m, tile_size=16, seed=2, dtype=F64)
    layer.program(torch.randn(30, 40, generator=_gen(0), dtype=F64))
    gp0, gm0 = (g.clone() for g in layer.conductances())
    stuck_p = (
        torch.cat(
            [torch.cat([layer.tile(r, c).plus.stuck for c in range(3)], 1) for r in range(2)], 0
        )
        != 0
    )
    step = m.g_range / 32
    for k in range(10):
        layer.apply_pulses(torch.randn(30, 40, generator=_gen(10 + k), dtype=F64), scheme="bipolar")
        gp, gm = layer.conductances()
        for g in (gp, gm):
            assert (g >= m.g_min).all() and (g <= m.g_max).all()
            frac = (g - m.g_min) / step
            assert torch.allclose(frac, torch.round(frac), atol=1e-6)
        assert torch.equal(gp[stuck_p], gp0[stuck_p])
    assert stuck_p.any()


def test_asymmetric_pairs_drift_in_the_predicted_direction():
    # up/down pulse pairs on the active device: each pair moves it by (dw_up - dw_down)
    for up_down, sign in ((0.3, 1.0), (-0.3, -1.0)):
        m = _quiet(ideal(), pulse=PulseResponse(dw_min=1e-3, up_down=up_down))
        xbar = Crossbar(8, 4, m, g_ref=25e-6, dtype=F64)  # w_max = 1: no device near a bound
        w = torch.full((4, 8), 0.5, dtype=F64)
        xbar.program(w)
        ones = torch.ones(4, 8, dtype=torch.int64)
        zeros = torch.zeros(4, 8, dtype=torch.int64)
        for _ in range(20):
            xbar.pulse(ones, zeros)
            xbar.pulse(-ones, zeros)
        drift = xbar.effective_weight() - w
        # aihwkit's C++ up_down convention: dw_up - dw_down = up_down dw_min
        expected = 20 * up_down * 1e-3 * xbar.w_max
        assert torch.allclose(drift, torch.full_like(drift, expected), rtol=1e-9)
        assert math.copysign(1.0, expected) == sign


def test_unidirectional_pcm_uses_unipolar_pulses():
    layer = AnalogLinear(6, 4, bias=False, device="pcm", seed=0)
    layer.program(torch.randn(4, 6, generator=_gen(0)))
    res = layer.apply_pulses(torch.randn(4, 6, generator=_gen(1)) * 0.1)
    assert (res.pulses_plus >= 0).all() and (res.pulses_minus >= 0).all()
    with pytest.raises(ValueError, match="unidirectional"):
        layer.apply_pulses(torch.zeros(4, 6), scheme="bipolar")


# ------------------------------------------------------------------------------------------
# validation


def test_bad_inputs_raise():
    layer = AnalogLinear(5, 3, device="ideal")
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 5\)"):
        layer.program(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="finite"):
        layer.program(torch.full((3, 5), float("nan")))
    with pytest.raises(ValueError, match=r"input must have shape \(\.\.\., 5\)"):
        layer(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="scheme must be one of"):
        layer.apply_pulses(torch.zeros(3, 5), scheme="tripolar")
    with pytest.raises(ValueError, match="tile_size must be >= 1"):
        AnalogLinear(5, 3, tile_size=0)
    with pytest.raises(ValueError, match="ir_drop must be finite and >= 0"):
        AnalogLinear(5, 3, ir_drop=-1e-3)
    with pytest.raises(ValueError, match="g_ref must be finite and > 0"):
        AnalogLinear(5, 3, g_ref=0.0)
    with pytest.raises(ValueError, match="unknown device preset"):
        AnalogLinear(5, 3, device="sram")
    with pytest.raises(TypeError, match="in_features must be an int"):
        AnalogLinear(5.0, 3)
    with pytest.raises(TypeError, match="dac must be a callable"):
        AnalogLinear(5, 3, dac=4)


def test_fixed_g_ref_saturates_large_weights():
    layer = AnalogLinear(2, 1, bias=False, device="ideal", g_ref=25e-6, dtype=F64)  # w_max = 1
    layer.program(torch.tensor([[0.5, 3.0]], dtype=F64))
    assert torch.allclose(layer.effective_weight(), torch.tensor([[0.5, 1.0]], dtype=F64))
