"""Tests for analogeq.learning.device_updates.DeviceUpdater.

References are independent of the code under test: hand counts of pulses and of the write energy
(sum over single pulses of v^2 t G at the pulse's mid conductance), the SGD request -lr e x^T,
the analytic fixed point of the soft-bounds step law of `PulseResponse` (up step = down step), and
the device bounds and level grid of the `DeviceModel`.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from analogeq.circuits import DeviceModel, ExpStepResponse, ProgrammingNoise, PulseResponse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analogeq.hardware import HardwareConfig
from analogeq.learning import DeviceUpdater, UpdateReport, outer_factors
from analogeq.model import EquilibriumTransformer, ModelConfig

F64 = torch.float64
CFG = ModelConfig(vocab_size=7, d_model=4, n_heads=2, context=3, dtype=F64)
G_MAX = 25e-6


def device(**pulse) -> DeviceModel:
    p = dict(dw_min=0.01)
    p.update(pulse)
    return DeviceModel(g_min=0.0, g_max=G_MAX, pulse=PulseResponse(**p), name="test")


def chip(dev: DeviceModel, seed: int = 0, n_levels=None) -> EquilibriumTransformer:
    if n_levels is not None:
        dev = dataclasses.replace(dev, n_levels=n_levels)
    hw = HardwareConfig(device=dev, read_noise="off", tau_spread=0.0, seed=seed)
    return EquilibriumTransformer(CFG, hardware=hw, seed=seed)


def weight_step(model, name: str) -> float:
    """Weight change of one nominal pulse at the reference point: dw_min g_range / g_ref."""
    analog = model.crossbars()[name]
    m = analog.device_model
    return m.pulse.dw_min * m.g_range / float(analog.g_ref)


# ------------------------------------------------------------------------------------------------
# hand counts


def test_deterministic_hand_count_pulses_energy_and_sync():
    model = chip(device())  # constant step, no noise
    name = "attn.o"
    layer = model.attn.o
    dw = weight_step(model, name)
    k = torch.tensor([[1, 2, 0, 3], [0, 1, 1, 2], [3, 0, 2, 1], [1, 1, 0, 2]])
    # shrink |W| (unipolar: raise the device of the pair that sits at g_min): no bound is hit
    k = -torch.sign(layer.weight.detach()).to(torch.int64) * k
    g0p, g0m = (t.clone() for t in model.crossbars()[name].conductances())
    w0 = layer.weight.detach().clone()
    lr = 0.5
    grads = {"attn.o.weight": -(k.to(F64) * dw) / lr}
    rep = DeviceUpdater("deterministic", v_write=0.8, t_pulse=50e-9).apply(model, grads, lr)
    assert isinstance(rep, UpdateReport)
    c = rep.crossbars[name]
    assert c.pulses == int(k.abs().sum()) == rep.total_pulses
    assert c.pulses_plus == int(k.clamp_min(0).sum())
    assert c.pulses_minus == int((-k).clamp_min(0).sum())
    # hand energy: each single pulse at its mid conductance (constant step: G0 + (p + 1/2) step)
    step_g = 0.01 * G_MAX
    energy = 0.0
    for (o, i), kk in zip(torch.cartesian_prod(torch.arange(4), torch.arange(4)).tolist(),
                          k.flatten().tolist(), strict=True):
        g0 = float(g0p[o, i]) if kk > 0 else float(g0m[o, i])
        for p in range(abs(kk)):
            energy += 0.8**2 * 50e-9 * (g0 + (p + 0.5) * step_g)
    assert rep.energy_j == pytest.approx(energy, rel=1e-9)
    torch.testing.assert_close(c.realised_dw, k.to(F64) * dw, rtol=1e-9, atol=1e-12)
    assert c.rel_error < 1e-9 and c.clipped_fraction == 0.0
    torch.testing.assert_close(layer.weight.detach() - w0, c.realised_dw)
    assert rep.digital == ()


def test_stochastic_hand_count_with_saturated_probabilities():
    """Factors whose probabilities are exactly 1: every slot of every nonzero pair coincides."""
    model = chip(device())
    name = "attn.v"
    dw = weight_step(model, name)
    lr = 0.25
    x = torch.tensor([[1.0, 0.0, -1.0, 1.0]], dtype=F64)
    c = 5 * dw / lr  # lr * |x| * |e| / dw = 5: a 5-slot train with p = 1
    e = torch.tensor([[c, -c, 0.0, c]], dtype=F64)
    up = DeviceUpdater("stochastic", bl=31, seed=3, pulse_energy_j=2e-12)
    rep = up.apply_factors(name, x, e, lr, model=model)
    cb = rep.crossbars[name]
    assert cb.pulses == 5 * 3 * 3
    assert rep.energy_j == pytest.approx(2e-12 * 45)
    torch.testing.assert_close(cb.realised_dw, -lr * e.T @ x, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cb.requested_dw, -lr * e.T @ x)


# ------------------------------------------------------------------------------------------------
# expectation matches the request for small updates


def test_stochastic_mean_matches_request():
    base = chip(device(cycle_noise=0.5))  # constant step with cycle-to-cycle noise
    name = "attn.q"
    dw = weight_step(base, name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen, dtype=F64)
    e = torch.randn(3, 4, generator=gen, dtype=F64)
    lr = 2 * dw / float(e.abs().max() * x.abs().max())  # a few pulses per entry
    requested = -lr * e.T @ x
    total = torch.zeros_like(requested)
    S = 150
    for s in range(S):
        model = copy.deepcopy(base)
        for t in model.crossbars()[name].tiles:  # fresh cycle-noise streams per copy
            t.plus.generator.manual_seed(1000 + s)
            t.minus.generator.manual_seed(2000 + s)
        rep = DeviceUpdater("stochastic", seed=s).apply_factors(name, x, e, lr, model=model)
        total += rep.crossbars[name].realised_dw
    mean = total / S
    # per-entry std of one update is <= ~ dw sqrt(E n (1 + 0.25)); E n <= 3 * 2 pulses
    tol = 5 * dw * math.sqrt(6 * 1.25 / S)
    assert float((mean - requested).abs().max()) < tol
    assert float((mean - requested).abs().max()) < 0.2 * float(requested.abs().max())


def test_deterministic_mean_matches_request_on_soft_bounds():
    base = chip(device(soft_bound_up=0.6, soft_bound_down=0.4, reference_point=0.4,
                       cycle_noise=0.3))
    name = "ffn.up"
    dw = weight_step(base, name)
    gen = torch.Generator().manual_seed(1)
    request = dw * torch.randint(-6, 7, (16, 4), generator=gen).to(F64) * 1.37
    total = torch.zeros_like(request)
    S = 60
    for s in range(S):
        model = copy.deepcopy(base)
        # different cycle-noise streams per copy: reseed every device array
        for t in model.crossbars()[name].tiles:
            t.plus.generator.manual_seed(1000 + s)
            t.minus.generator.manual_seed(2000 + s)
        rep = DeviceUpdater("deterministic").apply(model, {"ffn.up.weight": -request}, 1.0)
        total += rep.crossbars[name].realised_dw
    mean = total / S
    # rounding to whole pulses: at most half of the largest local step (1 + 0.6 * 0.4 / 0.6) dw
    max_step = dw * (1 + 0.6 * 0.4 / 0.6)
    noise = 5 * 0.3 * max_step * math.sqrt(8 * 1.37 * 1.5 / S)
    assert float((mean - request).abs().max()) < 0.5 * max_step + noise


# ------------------------------------------------------------------------------------------------
# drift of an asymmetric device under symmetric updates


def soft_bounds_fixed_point(p: PulseResponse) -> float:
    """x* where the up step equals the down step (PulseResponse docstring step law):
    dw_up (1 - gu (x - r) / (1 - r)) = dw_down (1 - gd (r - x) / r), with aihwkit's C++ up_down
    convention (PulsedRPUDevice::populate): dw_up = dw_min (1 + min(up_down, 0)),
    dw_down = dw_min (1 - max(up_down, 0))."""
    up = p.dw_min * (1 + min(p.up_down, 0.0))
    dn = p.dw_min * (1 - max(p.up_down, 0.0))
    r, gu, gd = p.reference_point, p.soft_bound_up, p.soft_bound_down
    # up (1 + gu r / (1 - r)) - up gu x / (1 - r) = dn (1 - gd) + dn gd x / r
    a = up * (1 + gu * r / (1 - r)) - dn * (1 - gd)
    b = up * gu / (1 - r) + dn * gd / r
    return a / b


@pytest.mark.parametrize("mode", ["deterministic", "stochastic"])
def test_asymmetric_device_drifts_to_soft_bounds_fixed_point(mode):
    pulse = dict(dw_min=0.02, up_down=0.3, soft_bound_up=1.0, soft_bound_down=1.0,
                 reference_point=0.5)
    model = chip(device(**pulse))
    x_star = soft_bounds_fixed_point(PulseResponse(**pulse))
    assert x_star == pytest.approx(1 / 1.7)  # dw_up / (dw_up + dw_down), full soft bounds, r 0.5
    name = "attn.o"
    tile = model.crossbars()[name].tiles[0]
    x0 = tile.plus.conductance / G_MAX
    assert float((x0 - x_star).abs().max()) > 0.3  # starts far from the fixed point
    dw = weight_step(model, name)
    upd = DeviceUpdater(mode, seed=0, scheme="reference", model_aware=False)
    gen = torch.Generator().manual_seed(0)
    for it in range(400):
        if mode == "deterministic":
            sign = 1.0 if it % 2 == 0 else -1.0  # one naive pulse up, one down
            upd.apply(model, {"attn.o.weight": torch.full((4, 4), -sign * dw)}, 1.0)
        else:  # random zero-mean factors: equal expected up and down coincidences
            x = torch.randn(2, 4, generator=gen, dtype=F64)
            e = torch.randn(2, 4, generator=gen, dtype=F64)
            upd.apply_factors(name, x, e, 0.5 * dw, model=model)
    x_end = tile.plus.conductance / G_MAX
    if mode == "deterministic":
        assert float((x_end - x_star).abs().max()) < 2 * pulse["dw_min"]
    else:
        assert float((x_end.mean() - x_star).abs()) < 0.05
        assert float((x_end - x_star).abs().max()) < 0.2


def test_unipolar_pcm_pair_saturates_as_predicted():
    """Only up pulses (PCM): symmetric +-updates raise both devices toward g_max along the soft
    bound, x_n = 1 - (1 - x_0) (1 - 2 dw)^n (full soft bound, reference point 0.5)."""
    pulse = dict(dw_min=0.01, soft_bound_up=1.0, bidirectional=False)
    model = chip(device(**pulse))
    name = "attn.k"
    tile = model.crossbars()[name].tiles[0]
    x0p, x0m = tile.plus.conductance / G_MAX, tile.minus.conductance / G_MAX
    dw = weight_step(model, name)
    upd = DeviceUpdater("deterministic", model_aware=False)
    n = 40
    for it in range(2 * n):
        sign = 1.0 if it % 2 == 0 else -1.0
        upd.apply(model, {"attn.k.weight": torch.full((4, 4), -sign * dw)}, 1.0)
    decay = (1 - 2 * 0.01) ** n
    torch.testing.assert_close(tile.plus.conductance / G_MAX, 1 - (1 - x0p) * decay)
    torch.testing.assert_close(tile.minus.conductance / G_MAX, 1 - (1 - x0m) * decay)


# ------------------------------------------------------------------------------------------------
# bounds and levels always hold


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["deterministic", "stochastic"]),
    scheme=st.sampled_from(["unipolar", "bipolar", "reference"]),
    n_levels=st.sampled_from([None, 9, 33]),
    sb=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    up_down=st.floats(-0.5, 0.5),
    noise=st.floats(0, 2),
    dtod=st.floats(0, 0.3),
    scale=st.floats(1e-3, 30.0),
    seed=st.integers(0, 2**16),
    law=st.sampled_from(["linear", "exp"]),
)
# Found by hypothesis: a device whose own range is tiny (large d2d spread) had soft-bound B > 1, so
# the closed-form pulse sums went NaN. B is now capped below 1 (the device saturates).
@example(mode="deterministic", scheme="unipolar", n_levels=None, sb=(1.0, 0.0), up_down=0.0,
         noise=0.0, dtod=0.28125, scale=1.0, seed=189, law="linear")
# Also found by hypothesis: the same tiny-range device (B capped near 1) with multiplicative cycle
# noise made the closed-form variance 0 x inf (NaN conductances); it is now computed in a form
# without that product.
@example(mode="stochastic", scheme="unipolar", n_levels=None, sb=(1.0, 0.0), up_down=0.0,
         noise=1.0, dtod=0.28125, scale=1.0, seed=1988, law="linear")
@example(mode="stochastic", scheme="bipolar", n_levels=None, sb=(1.0, 0.0), up_down=0.0,
         noise=1.0, dtod=0.3, scale=1.0, seed=5, law="exp")
def test_bounds_and_levels_hold(mode, scheme, n_levels, sb, up_down, noise, dtod, scale, seed,
                                law):
    # programming clipped to each device's own bounds, so that every device starts inside them
    # (with the default clip at 0 S only a device may start above its own g_max; pulses then
    # never push it further out, tests/test_devices.py)
    if law == "linear":
        pulse = PulseResponse(dw_min=0.02, up_down=up_down, soft_bound_up=sb[0],
                              soft_bound_down=sb[1], cycle_noise=noise, dw_min_dtod=0.2)
    else:  # the exponential step with PCM's shape, bidirectional, with complex cycle noise
        pulse = ExpStepResponse(dw_min=0.02, up_down=up_down, reference_point=0.3 * sb[0],
                                es_a=-1.0, es_b=0.0, es_gamma_up=2.5, es_gamma_down=2.5,
                                es_A_up=-27.235, es_A_down=-2.235, cycle_noise=noise,
                                cycle_noise_add=0.02 * sb[1], cycle_noise_slope=0.1,
                                dw_min_dtod=0.2)
    dev = DeviceModel(g_min=1e-6, g_max=G_MAX, g_max_dtod=dtod, g_min_dtod=dtod, name="h",
                      programming=ProgrammingNoise(clip="device"), pulse=pulse)
    model = chip(dev, seed=seed % 7, n_levels=n_levels)
    gen = torch.Generator().manual_seed(seed)
    grads = {n: scale * torch.randn(p.shape, generator=gen, dtype=F64)
             for n, p in model.named_parameters() if n.startswith(("attn.", "ffn."))}
    nominal = {n: p.detach().clone() for n, p in model.named_parameters()}
    upd = DeviceUpdater(mode, seed=seed, scheme=scheme)
    for _ in range(2):
        rep = upd.apply(model, grads, 0.3)
    step = None if n_levels is None else dev.g_range / (n_levels - 1)
    for analog in model.crossbars().values():
        for t in analog.tiles:
            for arr in (t.plus, t.minus):
                g = arr.conductance
                assert bool((g >= arr.g_min_dev).all()) and bool((g <= arr.g_max_dev).all())
                assert bool(torch.isfinite(g).all())
                if step is not None:
                    k = (g - dev.g_min) / step
                    on_grid = (k - k.round()).abs() < 1e-6
                    at_bound = (g == arr.g_max_dev) | (g == arr.g_min_dev)
                    assert bool((on_grid | at_bound).all())
    for c in rep.crossbars.values():
        assert 0.0 <= c.clipped_fraction <= 1.0 and c.pulses >= 0 and c.energy_j >= 0
    # nominal weights moved by exactly the realised changes (both updates)
    assert set(rep.crossbars) == {"attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down"}
    assert "attn.q.bias" in rep.digital
    torch.testing.assert_close(
        model.attn.q.bias.detach(), nominal["attn.q.bias"] - 2 * 0.3 * grads["attn.q.bias"])


def test_nominal_follows_effective_weight():
    model = chip(device(cycle_noise=0.4, soft_bound_up=0.5, soft_bound_down=0.5))
    analog = model.crossbars()["ffn.down"]
    eff0 = analog.effective_weight(noisy=False, ir_drop=False).clone()
    nom0 = model.ffn.down.weight.detach().clone()
    g = torch.randn(4, 16, generator=torch.Generator().manual_seed(2), dtype=F64)
    for mode in ("deterministic", "stochastic"):
        DeviceUpdater(mode, seed=1).apply(model, {"ffn.down.weight": g}, 0.05)
    d_eff = analog.effective_weight(noisy=False, ir_drop=False) - eff0
    torch.testing.assert_close(model.ffn.down.weight.detach() - nom0, d_eff)
    assert float(d_eff.abs().max()) > 0


# ------------------------------------------------------------------------------------------------
# checkpoints and errors


def test_stochastic_state_dict_round_trip():
    model = chip(device(cycle_noise=0.2))
    g = {"attn.o.weight": torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=F64)}
    a = DeviceUpdater("stochastic", seed=9)
    a.apply(model, g, 0.1)
    state = copy.deepcopy(a.state_dict())
    twin = copy.deepcopy(model)
    ra = a.apply(model, g, 0.1).crossbars["attn.o"]
    b = DeviceUpdater("stochastic", seed=123)
    b.load_state_dict(state)
    rb = b.apply(twin, g, 0.1).crossbars["attn.o"]
    assert ra.pulses == rb.pulses and torch.equal(ra.realised_dw, rb.realised_dw)
    with pytest.raises(ValueError, match="bl"):
        DeviceUpdater("stochastic", bl=7).load_state_dict(state)


def test_bad_arguments():
    digital = EquilibriumTransformer(CFG, seed=0)
    model = chip(device())
    pcm_like = chip(device(bidirectional=False))
    g = {"attn.o.weight": torch.zeros(4, 4, dtype=F64)}
    with pytest.raises(ValueError, match="hardware"):
        DeviceUpdater().apply(digital, g, 0.1)
    with pytest.raises(ValueError, match="mode"):
        DeviceUpdater(mode="sgd")
    with pytest.raises(ValueError, match="scheme"):
        DeviceUpdater(scheme="both")
    with pytest.raises(ValueError, match="bl"):
        DeviceUpdater(bl=0)
    with pytest.raises(ValueError, match="unidirectional"):
        DeviceUpdater(scheme="bipolar").apply(pcm_like, g, 0.1)
    with pytest.raises(ValueError, match="lr"):
        DeviceUpdater().apply(model, g, 0.0)
    with pytest.raises(ValueError, match="not a parameter"):
        DeviceUpdater().apply(model, {"nope": torch.zeros(1)}, 0.1)
    with pytest.raises(ValueError, match="shape"):
        DeviceUpdater().apply(model, {"attn.o.weight": torch.zeros(3, 4, dtype=F64)}, 0.1)
    with pytest.raises(ValueError, match="finite"):
        DeviceUpdater().apply(model, {"attn.o.weight": torch.full((4, 4), math.nan)}, 0.1)
    with pytest.raises(ValueError, match="stochastic"):
        DeviceUpdater().apply_factors("attn.o", torch.zeros(1, 4), torch.zeros(1, 4), 0.1,
                                      model=model)
    st_upd = DeviceUpdater("stochastic")
    with pytest.raises(ValueError, match="no model"):
        st_upd.apply_factors("attn.o", torch.zeros(1, 4), torch.zeros(1, 4), 0.1)
    with pytest.raises(ValueError, match="leading shape"):
        st_upd.apply_factors("attn.o", torch.zeros(2, 4, dtype=F64), torch.zeros(1, 4, dtype=F64),
                             0.1, model=model)
    with pytest.raises(ValueError, match="crossbar map"):
        st_upd.apply_factors("pos", torch.zeros(1, 4), torch.zeros(1, 4), 0.1, model=model)
    with pytest.raises(ValueError, match=r"\(\.\.\., 16\)"):
        st_upd.apply_factors("ffn.down", torch.zeros(1, 4), torch.zeros(1, 4), 0.1, model=model)


def test_outer_factors_reproduce_the_weight_gradient():
    """sum_n e_n x_n^T equals lam^T dF/dW by autograd, for every crossbar map inside F."""
    model = chip(device())
    tok = torch.randint(0, 7, (2, 3), generator=torch.Generator().manual_seed(0))
    z = model.settle(tok, "imex", tol=1e-10, max_steps=3000).z
    lam = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    factors = outer_factors(model, tok, z, lam)
    assert set(factors) == {"attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down"}
    force = model.force(tok)
    names = [f"{n}.weight" for n in factors]
    params = dict(model.named_parameters())
    ref = torch.autograd.grad((force(z) * lam).sum(), [params[n] for n in names])
    for (x, e), g in zip(factors.values(), ref, strict=True):
        torch.testing.assert_close(e.T @ x, g, rtol=1e-9, atol=1e-12)
    upd = DeviceUpdater("stochastic", seed=0)
    rep = upd.apply_factors("attn.o", *factors["attn.o"], 0.01, model=model)
    torch.testing.assert_close(rep.crossbars["attn.o"].requested_dw, -0.01 * ref[names.index(
        "attn.o.weight")])
