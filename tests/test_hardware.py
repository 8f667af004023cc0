"""Tests for the model on analog hardware (analogeq.hardware).

References are independent of the code under test: the digital model (hardware=None) with the same
nominal weights, the block re-written with PyTorch's functional ops, the published PCM programming
noise polynomial (aihwkit's prog_coeff, in uS) with the truncated-Gaussian moments worked out by
hand, the lognormal and Ornstein-Uhlenbeck moments, the drift power law, and sum G V^2 T by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from analogeq.circuits import AnalogLinear
from analogeq.integrators import Status, settle

from analogeq.hardware import (
    HardwareConfig,
    HardwareForce,
    HardwareLinear,
    crossbar_power,
    integrate_energy,
    lognormal_ratio,
    tau_spread_report,
)
from analogeq.model import EquilibriumTransformer, ModelConfig

F64 = torch.float64


def config(**overrides) -> ModelConfig:
    base = dict(vocab_size=11, d_model=16, n_heads=2, context=8)
    base.update(overrides)
    return ModelConfig(**base)


def tokens(batch: int, T: int, vocab: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, T), generator=torch.Generator().manual_seed(seed))


def pair(hw: HardwareConfig, seed: int = 0, **cfg):
    """The digital model and the hardware model with the same nominal weights."""
    c = config(**cfg)
    return EquilibriumTransformer(c, seed=seed), EquilibriumTransformer(c, hw, seed=seed)


def effective_weights(model) -> dict[str, torch.Tensor]:
    return {n: x.effective_weight(noisy=False) for n, x in model.crossbars().items()}


# ------------------------------------------------------------------------------------------------
# ideal hardware is the digital model


def test_ideal_hardware_reproduces_the_digital_force_fixed_point_and_readout():
    digital, hw = pair(HardwareConfig.ideal(seed=3), dtype=F64)
    assert set(hw.crossbars()) == {"attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down",
                                   "head"}
    for (n, p), (n2, p2) in zip(digital.named_parameters(), hw.named_parameters(), strict=True):
        assert n == n2 and torch.equal(p, p2), n  # same parameter names and nominal values
    tok = tokens(3, 7)
    fd, fh = digital.force(tok), hw.force(tok)
    assert isinstance(fh, HardwareForce) and fh.leak == 2.0
    z = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(5), dtype=F64)
    tight = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fh(z), fd(z), **tight)
    torch.testing.assert_close(fh.nonlinear(z), fd.nonlinear(z), **tight)
    torch.testing.assert_close(hw.readout(z), digital.readout(z), **tight)
    index = torch.tensor([2, 0])
    torch.testing.assert_close(fh.select(index)(z[index]), fd(z)[index], **tight)
    rd = digital.settle(tok, "imex", tol=1e-12, max_steps=3000)
    rh = hw.settle(tok, "imex", tol=1e-12, max_steps=3000)
    assert rd.status is rh.status is Status.CONVERGED
    torch.testing.assert_close(rh.z, rd.z, rtol=1e-10, atol=1e-10)


def test_ideal_hardware_feature_model_puts_the_projection_on_a_crossbar():
    cfg = ModelConfig(None, d_model=16, n_heads=2, context=8, input_dim=8, n_classes=10,
                      dtype=F64)
    digital = EquilibriumTransformer(cfg, seed=0)
    hw = EquilibriumTransformer(cfg, HardwareConfig.ideal(seed=0), seed=0)
    assert isinstance(hw.embed, HardwareLinear) and "embed" in hw.crossbars()
    x = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(hw.force(x)(z), digital.force(x)(z), rtol=1e-12, atol=1e-12)
    # the projection is read while settling: its power is counted
    assert float(hw.force(x).power(z).min()) > 0


def test_ideal_hardware_gradients_reach_the_nominal_weights():
    digital, hw = pair(HardwareConfig.ideal(seed=0), dtype=F64)
    tok = tokens(2, 5)
    z = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2), dtype=F64)
    for model in (digital, hw):
        (model.force(tok)(z) ** 2).sum().backward()
    reached = 0
    for (n, p), (n2, p2) in zip(digital.named_parameters(), hw.named_parameters(), strict=True):
        assert n == n2
        if p.grad is None:  # the readout's parameters play no part in the force
            assert p2.grad is None, n
            continue
        reached += 1
        torch.testing.assert_close(p2.grad, p.grad, rtol=1e-10, atol=1e-12)
    assert hw.attn.q.weight.grad is not None and reached >= 14
    # and the Jacobian with respect to the state is the digital one
    v = torch.randn_like(z)
    _, jd = torch.func.jvp(digital.force(tok), (z,), (v,))
    _, jh = torch.func.jvp(hw.force(tok), (z,), (v,))
    torch.testing.assert_close(jh, jd, rtol=1e-10, atol=1e-12)


def test_complex_states_evaluate_the_effective_weights():
    """On the real line the holomorphic extension equals the real hardware force (PCM, one
    frozen read-noise draw, no converters), and it differs from the digital model's."""
    digital, hw = pair(HardwareConfig(seed=0, tau_spread=0.3), dtype=F64)
    tok = tokens(2, 6)
    z = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(3), dtype=F64)
    force = hw.force(tok)
    fc = force(z.to(torch.complex128))
    torch.testing.assert_close(fc.real, force(z), rtol=1e-12, atol=1e-12)
    assert float(fc.imag.detach().abs().max()) == 0.0
    assert not torch.allclose(force(z), digital.force(tok)(z), atol=1e-3)
    assert torch.equal(hw.attn.q.weight, digital.attn.q.weight)  # outside: the nominal parameter


# ------------------------------------------------------------------------------------------------
# programming


def _expected_sq_error(a: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[(max(a + sigma xi, 0) - a)^2], xi ~ N(0, 1): sigma^2 (Phi(u) - u phi(u)) + a^2 Phi(-u),
    u = a / sigma (the programming error of a device clipped at g_min = 0)."""
    u = a / sigma
    phi = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(u / math.sqrt(2)))
    return sigma**2 * (cdf - u * phi) + a**2 * (1 - cdf)


def test_pcm_programming_error_matches_the_published_noise_polynomial():
    hw = HardwareConfig(device="pcm", read_noise="off", tau_spread=0.0, seed=11)
    model = EquilibriumTransformer(config(d_model=32, vocab_size=40, context=4, dtype=F64), hw,
                                   seed=0)
    layer = model.ffn.up  # 128 x 32 pairs
    w = layer.weight.detach()
    g_max = 25e-6
    g_ref = g_max / float(w.abs().max())  # the largest |weight| maps to the full range
    # aihwkit PCMLikeNoiseModel prog_coeff, in uS, for g_max = 25 uS
    c0, c1, c2 = 0.26348e-6, 1.9650e-6, -1.1731e-6

    def sigma(g):
        r = g / g_max
        return c0 + c1 * r + c2 * r * r

    g_on = w.abs() * g_ref
    expected = (_expected_sq_error(g_on, sigma(g_on))
                + _expected_sq_error(torch.zeros_like(g_on), sigma(torch.zeros_like(g_on))))
    expected_rel = math.sqrt(float(expected.sum())) / g_ref / float(w.norm())
    error = layer.analog.effective_weight(noisy=False) - w
    measured_rel = float(error.norm() / w.norm())
    assert 0.05 < expected_rel < 0.2  # PCM: a programming error of ~10 % of the weight norm
    assert abs(measured_rel / expected_rel - 1) < 0.08


def test_seeded_programming_is_bit_identical_and_seeds_differ():
    def build(seed):
        return EquilibriumTransformer(config(), HardwareConfig(seed=seed), seed=0)

    a, b, c = build(5), build(5), build(6)
    wa, wb, wc = effective_weights(a), effective_weights(b), effective_weights(c)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
        assert not torch.equal(wa[name], wc[name]), name
    assert torch.equal(a.node_tau_ratio, b.node_tau_ratio)
    assert not torch.equal(a.node_tau_ratio, c.node_tau_ratio)
    # re-programming is a new programming event (new errors), repeated in step by a twin model
    a.program()
    b.program()
    wa2, wb2 = effective_weights(a), effective_weights(b)
    for name in wa:
        assert torch.equal(wa2[name], wb2[name]) and not torch.equal(wa2[name], wa[name]), name
    assert a.hardware_seed == 5 and EquilibriumTransformer(config()).hardware_seed is None


def test_converters_quantize_inputs_and_tile_outputs_by_hand():
    bits = 3
    hw = HardwareConfig(device="ideal", dac_bits=bits, adc_bits=bits, read_noise="off",
                        tau_spread=0.0, input_bound=1.5, output_bound=2.0, tile_size=8, seed=0)
    model = EquilibriumTransformer(config(dtype=F64), hw, seed=0)
    layer = model.ffn.up  # 16 -> 64 on a 8 x 2 grid of 8 x 8 tiles
    assert layer.analog.tile_grid == (8, 2)
    x = 2 * torch.randn(5, 16, generator=torch.Generator().manual_seed(0), dtype=F64)

    def quantize(v, bound):  # 2^bits - 1 = 7 symmetric levels on [-bound, bound], nearest
        step = 2 * bound / 6
        return torch.round(v.clamp(-bound, bound) / step) * step

    w = layer.weight.detach()
    xq = quantize(x, 1.5)
    tile_bound = 2.0 * math.sqrt(8 / 16)  # each tile covers half of the inputs
    y = quantize(xq[:, :8] @ w[:, :8].T, tile_bound) + quantize(xq[:, 8:] @ w[:, 8:].T, tile_bound)
    torch.testing.assert_close(layer(x), y + layer.bias, rtol=1e-12, atol=1e-12)


def test_calibrated_bounds_are_sigmas_times_rms_at_the_decoupled_point():
    digital, hw = pair(HardwareConfig.ideal(seed=0, calibration_sigmas=3.0), dtype=F64)
    tok = tokens(4, 8)
    hw.program(calibration=tok)
    z = digital.force(tok).x_in.detach() / 2  # x_in / (1 + c)
    ln = F.layer_norm(z, (16,), digital.ln_attn.weight, digital.ln_attn.bias, 1e-5)
    q = F.linear(ln, digital.attn.q.weight)  # W x without the bias
    assert hw.attn.q.input_bound == pytest.approx(3 * float(ln.square().mean().sqrt()), rel=1e-9)
    assert hw.attn.q.output_bound == pytest.approx(3 * float(q.square().mean().sqrt()), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# read noise


def test_read_noise_modes():
    tok = tokens(2, 6)
    z = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(4))

    def model(mode, **kw):
        return EquilibriumTransformer(config(), HardwareConfig(seed=0, read_noise=mode, **kw),
                                      seed=0)

    quenched = model("quenched")
    f = quenched.force(tok)
    first = f(z)
    assert torch.equal(f(z), first)  # one frozen draw: the same force on every call
    quenched.resample_read_noise()  # what every settle does first
    assert not torch.equal(f(z), first)
    white = model("white").force(tok)
    assert not torch.equal(white(z), white(z))  # a fresh draw per evaluation
    off = model("off")
    g = off.force(tok)
    assert torch.equal(g(z), g(z))
    # off reads the noise-free effective weights; quenched reads differ from them
    for layer in off.crossbars().values():
        assert torch.equal(layer.effective_weight(noisy=True), layer.effective_weight())
    noisy = quenched.crossbars()["attn.q"]
    assert not torch.equal(noisy.effective_weight(noisy=True), noisy.effective_weight())


def test_ou_read_noise_advances_with_the_euler_maruyama_clock():
    """Advancing by dt = 1 tau with tau_c = tau keeps a correlation exp(-1) of the noise."""
    tau = 1e-7
    hw = HardwareConfig(seed=0, read_noise="ou", tau_c=tau, tau=tau, tau_spread=0.0)
    model = EquilibriumTransformer(config(d_model=32, context=4), hw, seed=0)
    force = model.force(tokens(1, 4))
    z = torch.zeros(1, 4, 32)

    def standardized():
        out = []
        for layer in model.crossbars().values():
            for tile in layer.tiles:
                for arr in (tile.plus, tile.minus):
                    s = arr.read_sigma
                    keep = (s > 0) & (s < 0.2 * arr.conductance)  # no clamp at 0 in reach
                    out.append(((arr.read() - arr.conductance) / s)[keep])
        return torch.cat(out)

    x0 = standardized()
    force.noise(z, torch.tensor([0.0]))
    assert torch.equal(standardized(), x0)  # t = 0: nothing advanced
    force.noise(z, torch.tensor([1.0]))  # one tau later
    x1 = standardized()
    n = x0.numel()
    corr = float((x0 * x1).mean() / (x0.std() * x1.std()))
    assert n > 5000 and abs(corr - math.exp(-1)) < 4 / math.sqrt(n)
    assert abs(float(x1.std()) - 1) < 0.05  # stationary


def test_ou_needs_euler_maruyama_and_seeded_runs_repeat():
    def run(seed):
        hw = HardwareConfig(seed=seed, read_noise="ou", tau_c=1e-6, node_noise=1e-3)
        model = EquilibriumTransformer(config(), hw, seed=0)
        return model.settle(tokens(2, 6), "euler-maruyama", eps=0.1, seed=1, max_steps=40)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.z, b.z) and torch.equal(a.info["energy_j"], b.info["energy_j"])
    assert not torch.equal(a.z, c.z)
    model = EquilibriumTransformer(config(), HardwareConfig(seed=0, read_noise="ou", tau_c=1e-6),
                                   seed=0)
    with pytest.raises(ValueError, match="euler-maruyama"):
        model.settle(tokens(2, 6), "euler")
    with pytest.raises(ValueError, match="sigma"):
        model.settle(tokens(2, 6), "euler-maruyama", sigma=0.1)


def test_seeded_settles_repeat_bit_for_bit_with_white_noise():
    def run(hw_seed):
        model = EquilibriumTransformer(config(), HardwareConfig(seed=hw_seed, read_noise="white"),
                                       seed=0)
        return model.settle(tokens(2, 6), "euler", max_steps=30)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.z, b.z) and torch.equal(a.info["energy_j"], b.info["energy_j"])
    assert not torch.equal(a.z, c.z)


# ------------------------------------------------------------------------------------------------
# node time constants


def test_lognormal_ratio_has_mean_one_and_the_given_spread():
    r = lognormal_ratio(0.5, (200_000,), torch.Generator().manual_seed(0), dtype=F64)
    # lognormal: mean 1, std 0.5; the sample mean's standard error is 0.5 / sqrt(n) ~ 1.1e-3
    assert abs(float(r.mean()) - 1) < 5e-3 and abs(float(r.std()) - 0.5) < 1e-2
    assert float(r.min()) > 0
    assert torch.equal(lognormal_ratio(0.0, (7,), torch.Generator().manual_seed(0)),
                       torch.ones(7))


def test_tau_spread_keeps_the_fixed_point_and_changes_euler_stability():
    spread = 1.0
    hw = HardwareConfig(seed=0, tau_spread=spread)
    model = EquilibriumTransformer(config(dtype=F64), hw, seed=0)
    tok = tokens(2, 8)
    force = model.force(tok)
    r = model.node_tau_ratio[:8]
    assert force.leak.shape == (8, 16)
    torch.testing.assert_close(force.leak, 2.0 / r, rtol=0, atol=0)
    report = tau_spread_report(model, tok, "imex", tol=1e-11, max_steps=5000)
    assert report.status_uniform == report.status_spread == "converged"
    assert report.fixed_point_shift < 1e-9
    assert report.nfe_spread != report.nfe_uniform  # the dynamics changed
    # The leak alone makes explicit Euler unstable for eps > 2 min(r) / (1 + c) (the couplings can
    # only lower that limit): at the usual eps 0.1 uniform nodes settle, the spread chip does not,
    # although its circuit settles (IMEX above): a discretization artifact made by the spread.
    limit = 2 * float(r.min()) / 2.0
    assert report.euler_limit_spread == pytest.approx(limit) and limit < 0.1
    assert report.euler_limit_uniform == 1.0
    uniform = HardwareForce(model, force.inputs, ratio=None)
    z0 = model.initial_state(uniform)
    assert settle(uniform, z0, "euler", eps=0.1).status is Status.CONVERGED
    assert model.settle(tok, "euler", eps=0.1, max_steps=500).status is not Status.CONVERGED
    assert model.settle(tok, "euler", eps=0.5 * limit, max_steps=3000).converged


# ------------------------------------------------------------------------------------------------
# accounting


def test_settling_time_is_t_times_tau_and_none_for_root_finders(require_method):
    hw = HardwareConfig(seed=0, tau=2.5e-8)
    model = EquilibriumTransformer(config(), hw, seed=0)
    tok = tokens(2, 6)
    res = model.settle(tok, "euler", eps=0.1)
    assert res.converged
    torch.testing.assert_close(res.info["settling_time_s"], res.t.double() * 2.5e-8,
                               rtol=0, atol=0)
    assert res.info["tau_s"] == 2.5e-8 and res.info["energy_j"].shape == (2,)
    require_method("anderson")
    res = model.settle(tok, "anderson")
    assert res.info["settling_time_s"] is None and res.info["energy_j"] is None


def test_tau_from_capacitance_and_leak_conductance():
    hw = HardwareConfig(node_capacitance=1e-12, leak_conductance=1e-5)
    assert hw.tau == pytest.approx(1e-7)
    hw = HardwareConfig(node_capacitance=2e-12, tau=1e-7)
    assert hw.leak_conductance == pytest.approx(2e-5)
    assert HardwareConfig().tau == 1e-7


def test_energy_of_a_tiny_crossbar_with_constant_inputs_by_hand():
    w = torch.tensor([[0.5, -1.0, 0.0], [0.25, 0.75, -0.5]], dtype=F64)
    layer = AnalogLinear(3, 2, bias=False, device="ideal", dtype=F64, seed=0)
    layer.program(w)
    g_ref = 25e-6 / 1.0  # max |w| = 1 -> full range
    # each pair: one device at |w| g_ref, the other at g_min = 0; both see V_j
    g_pairs = w.abs() * g_ref
    gp, gm = layer.conductances()
    torch.testing.assert_close(gp + gm, g_pairs, rtol=1e-12, atol=0)
    x = torch.tensor([[1.0, -0.5, 2.0]], dtype=F64)  # one sample, held constant
    bound, v_read, tau = 2.0, 0.3, 1e-7
    v = x[0] * v_read / bound  # volts: [0.15, -0.075, 0.3]
    p_hand = sum(float(g_pairs[i, j]) * float(v[j]) ** 2 for i in range(2) for j in range(3))
    p = crossbar_power((gp + gm).sum(0), x, bound, v_read)
    assert p.shape == (1,) and float(p[0]) == pytest.approx(p_hand, rel=1e-12)
    # constant power over T = 7.5 tau, on an uneven time grid: E = P T
    t = torch.tensor([[0.0], [0.5], [2.0], [7.5]], dtype=F64)
    energy = integrate_energy(p.expand(4, 1), t, tau)
    assert float(energy[0]) == pytest.approx(p_hand * 7.5 * tau, rel=1e-12)


def _reference_map_inputs(model, z):
    """The inputs of q/k/v, o, up, down at state z, re-written with built-in ops (digital)."""
    cfg = model.config
    B, T, C = z.shape
    H, dh = cfg.n_heads, C // cfg.n_heads

    def heads(x):
        return x.view(B, T, H, dh).transpose(1, 2)

    def lin(m, x):
        return F.linear(x, m.weight, m.bias)

    a = F.layer_norm(z, (C,), model.ln_attn.weight, model.ln_attn.bias, cfg.norm_eps)
    q, k, v = heads(lin(model.attn.q, a)), heads(lin(model.attn.k, a)), heads(lin(model.attn.v, a))
    q = F.rms_norm(q, (dh,), model.attn.q_norm.weight, cfg.norm_eps)
    k = F.rms_norm(k, (dh,), model.attn.k_norm.weight, cfg.norm_eps)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, C)
    f = F.layer_norm(z, (C,), model.ln_ffn.weight, model.ln_ffn.bias, cfg.norm_eps)
    h = F.gelu(lin(model.ffn.up, f), approximate="tanh")
    return {"attn.q": a, "attn.k": a, "attn.v": a, "attn.o": y, "ffn.up": f, "ffn.down": h}


def test_energy_of_a_settle_against_a_hand_recomputation():
    """Ideal devices, fixed DAC scale: E = tau * trapezoid of sum_maps,positions G V^2 along the
    Euler trajectory, all recomputed from the digital model."""
    bound, v_read, tau, eps, n = 2.0, 0.2, 1e-7, 0.1, 6
    digital, hw = pair(HardwareConfig.ideal(seed=0, input_bound=bound, v_read=v_read, tau=tau),
                       dtype=F64)
    tok = tokens(2, 8)
    res = hw.settle(tok, "euler", eps=eps, tol=1e-14, max_steps=n)
    assert res.steps == n
    force = digital.force(tok)
    z = force.x_in / 2
    powers = []
    for k in range(n + 1):
        p = torch.zeros(2, dtype=F64)
        for name, x in _reference_map_inputs(digital, z).items():
            w = digital.get_submodule(name).weight.detach()
            colsum = (w.abs() * (25e-6 / w.abs().max())).sum(0)  # G_plus + G_minus per input
            p += (v_read / bound) ** 2 * (x.square().sum(1) @ colsum)
        powers.append(p)
        if k < n:
            z = z + eps * force(z)
    energy = tau * sum(0.5 * (powers[k] + powers[k + 1]) * eps for k in range(n))
    torch.testing.assert_close(res.info["energy_j"], energy.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(res.info["power_w"], powers[-1].detach(), rtol=1e-10, atol=0)


def test_drift_lowers_pcm_conductances_as_a_power_law():
    hw = HardwareConfig(seed=0, read_noise="off")
    model = EquilibriumTransformer(config(dtype=F64), hw, seed=0)
    tile = model.crossbars()["ffn.up"].tiles[0]
    g0 = tile.plus.conductance.clone()
    w0 = model.crossbars()["ffn.up"].effective_weight().abs().mean()
    t, t0 = 3600.0, 20.0  # one hour; PCM's drift reference time t0 = 20 s
    model.drift(t)
    g1 = tile.plus.conductance
    on = g0 > 0
    expect = g0 * ((t + t0) / t0) ** (-tile.plus.nu)
    torch.testing.assert_close(g1, expect, rtol=1e-12, atol=0)
    assert bool((g1[on] < g0[on]).all())
    nu = tile.plus.nu[on]
    assert 0.04 < float(nu.mean()) < 0.12  # PCM drift exponents ~0.05-0.1
    assert float(model.crossbars()["ffn.up"].effective_weight().abs().mean()) < float(w0)
    with pytest.raises(ValueError, match="t_seconds"):
        model.drift(10.0)  # time runs forward


# ------------------------------------------------------------------------------------------------
# configuration errors


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("dac_bits", 0, ValueError),
        ("adc_bits", 0, ValueError),
        ("dac_bits", 25, ValueError),
        ("adc_bits", 8.0, TypeError),
        ("tau", -1e-7, ValueError),
        ("tau", 0.0, ValueError),
        ("tau", "fast", TypeError),
        ("node_capacitance", -1e-12, ValueError),
        ("leak_conductance", 0.0, ValueError),
        ("tau_spread", -0.1, ValueError),
        ("tau_spread", float("nan"), ValueError),
        ("ir_drop", -1e-5, ValueError),
        ("tile_size", 0, ValueError),
        ("tile_size", 2.5, TypeError),
        ("read_noise", "pink", ValueError),
        ("drift_time", -1.0, ValueError),
        ("v_read", 0.0, ValueError),
        ("node_noise", -1.0, ValueError),
        ("input_bound", 0.0, ValueError),
        ("output_bound", -2.0, ValueError),
        ("calibration_sigmas", 0.0, ValueError),
        ("seed", -1, ValueError),
        ("seed", 1.5, TypeError),
        ("device", 3, TypeError),
        ("maps", 3, TypeError),
    ],
)
def test_bad_config_names_the_field(field, value, error):
    with pytest.raises(error, match=field):
        HardwareConfig(**{field: value})


def test_bad_config_combinations_are_explained():
    with pytest.raises(ValueError, match="unknown device preset 'pcmx'"):
        HardwareConfig(device="pcmx")
    with pytest.raises(ValueError, match="tau_c"):
        HardwareConfig(read_noise="ou")
    with pytest.raises(ValueError, match="tau_c"):
        HardwareConfig(read_noise="quenched", tau_c=1e-6)
    with pytest.raises(ValueError, match="node_capacitance / leak_conductance"):
        HardwareConfig(tau=1e-6, node_capacitance=1e-12, leak_conductance=1e-5)
    with pytest.raises(ValueError, match="leak_conductance or tau"):
        HardwareConfig(node_capacitance=1e-12)
    with pytest.raises(ValueError, match="maps"):
        EquilibriumTransformer(config(), HardwareConfig(maps=("attn.q", "attn.z")))
    with pytest.raises(TypeError, match="HardwareConfig"):
        EquilibriumTransformer(config(), hardware="pcm")
    with pytest.raises(ValueError, match="hardware model"):
        EquilibriumTransformer(config()).program()


def test_maps_subset_places_only_those_maps():
    model = EquilibriumTransformer(config(), HardwareConfig(seed=0, maps=("attn.q", "ffn.up")),
                                   seed=0)
    assert set(model.crossbars()) == {"attn.q", "ffn.up"}
    assert isinstance(model.attn.q, HardwareLinear)
    assert isinstance(model.attn.k, torch.nn.Linear)
