"""Device models, device-array state and the OU read-noise process, against published formulas.

Statistical tests use explicit tolerances from the sampling distribution (Z = 5 standard errors
unless stated): the standard error of a sample mean is s / sqrt(n), of a sample std about
s / sqrt(2 (n - 1)) for near-Gaussian data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from analogeq.circuits.devices import (
    DeviceArray,
    DeviceModel,
    Drift,
    ProgrammingNoise,
    PulseResponse,
    ReadNoise,
    ecram,
    ideal,
    max_age,
    pcm,
    preset,
    rram,
)
from analogeq.circuits.noise import OUProcess
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

Z = 5.0
US = 1e-6
F64 = torch.float64


def _pcm_sigma_prog(g: float) -> float:
    """Published PCM programming-noise std (siemens), Nandakumar 2019 / aihwkit prog_coeff."""
    gr = max(g / 25e-6, 0.0)
    return (0.26348 + 1.9650 * gr - 1.1731 * gr**2) * US


def _pcm_nu_params(gr: float) -> tuple[float, float]:
    mu = min(max(-0.0155 * math.log(gr) + 0.0244, 0.049), 0.1)
    sig = min(max(-0.0125 * math.log(gr) - 0.0059, 0.008), 0.045)
    return mu, sig


def _quiet(model: DeviceModel, **changes) -> DeviceModel:
    """The model with every random effect switched off, then `changes` applied."""
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
# presets and validation


def test_presets_by_name():
    for name, fn in (("ideal", ideal), ("pcm", pcm), ("rram", rram), ("ecram", ecram)):
        assert preset(name) == fn()
        assert preset(name.upper()).name == name
    with pytest.raises(ValueError, match=r"unknown device preset 'flash'.*ecram.*ideal.*pcm.*rram"):
        preset("flash")
    with pytest.raises(TypeError):
        preset(3)


def test_preset_numbers_match_sources():
    m = pcm()
    assert m.g_max == pytest.approx(25e-6) and m.g_min == 0.0 and m.t0 == 20.0
    for g in (0.0, 5e-6, 12.5e-6, 25e-6):
        got = float(m.programming.sigma(torch.tensor([g], dtype=F64), m.g_max)[0])
        assert got == pytest.approx(_pcm_sigma_prog(g), rel=1e-9)
    assert (m.read.q_coeff, m.read.q_exponent, m.read.q_max, m.read.t_read) == (
        0.0088,
        0.65,
        0.2,
        250e-9,
    )
    # rram: Wan 2022 polynomial (aihwkit ReRamWan2022NoiseModel, t = 1 s, uS at g_max = 40 uS)
    r = rram()
    for gr in (0.1, 0.5, 1.0):
        ref = (0.348 + 16.030 * gr - 43.853 * gr**2 + 45.393 * gr**3 - 16.815 * gr**4) * US
        got = float(r.programming.sigma(torch.tensor([gr * 40e-6], dtype=F64), r.g_max)[0])
        assert got == pytest.approx(ref, rel=1e-9)
    # rram pulse response = aihwkit ReRamSBPresetDevice on [-0.75, 1.25]: steps at the bounds' ends
    p = r.pulse
    assert p.reference_point == pytest.approx(0.375) and p.dw_min == pytest.approx(0.001)
    e = ecram().pulse
    assert (e.soft_bound_up, e.soft_bound_down) == (0.1153, 0.5085)
    assert e.reference_point == pytest.approx(0.4138)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"g_min": 25e-6, "g_max": 25e-6}, "g_min must be < g_max"),
        ({"g_min": 30e-6, "g_max": 25e-6}, "g_min must be < g_max"),
        ({"g_min": -1e-6}, "g_min must be >= 0"),
        ({"stuck_at_min": -0.1}, r"stuck_at_min must be in \[0"),
        ({"stuck_at_max": 1.5}, r"stuck_at_max must be in \[0"),
        ({"stuck_at_min": 0.6, "stuck_at_max": 0.5}, "must be <= 1"),
        ({"n_levels": 1}, "n_levels must be >= 2"),
        ({"t0": 0.0}, r"t0 must be in \(0"),
        ({"g_max_dtod": -0.1}, "g_max_dtod"),
    ],
)
def test_bad_device_model_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeviceModel(**kwargs)


def test_bad_components_raise():
    with pytest.raises(TypeError, match="n_levels"):
        DeviceModel(n_levels=2.5)
    with pytest.raises(TypeError, match="read must be a ReadNoise"):
        DeviceModel(read="gaussian")
    with pytest.raises(ValueError, match="read.kind must be one of"):
        ReadNoise(kind="telegraph")
    with pytest.raises(ValueError, match="pulse.dw_min"):
        PulseResponse(dw_min=0.0)
    with pytest.raises(ValueError, match="pulse.up_down"):
        PulseResponse(up_down=1.0)
    with pytest.raises(ValueError, match="soft_bound_up"):
        PulseResponse(soft_bound_up=1.5)
    with pytest.raises(ValueError, match="programming.coeffs"):
        ProgrammingNoise(kind="polynomial")
    with pytest.raises(ValueError, match="drift.mu_clip"):
        Drift(kind="pcm", mu_clip=(0.2, 0.1))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_ages_beyond_the_drift_law_are_rejected_not_nan(dtype):
    """Issue 14: PCM drift(1e60) used to be accepted and every read came back NaN (the age
    overflowed the float32 state to inf; 0 S x inf read noise). Ages the state cannot hold are a
    ValueError that names the argument and the allowed range; the array is left untouched."""
    arr = DeviceArray((8, 8), pcm(), seed=0, dtype=dtype)
    arr.program(torch.linspace(0.0, 25e-6, 64, dtype=dtype).reshape(8, 8))
    arr.drift(3600.0)
    before = arr.conductance.clone()
    limit = arr.max_time
    assert math.isfinite(limit) and limit > 86400.0 * 365 * 1e6
    too_old = 1e60 if dtype == torch.float32 else 1e308
    with pytest.raises(ValueError, match=r"t_seconds must be in \[0.0, .*\] s .*got 1e\+"):
        arr.drift(too_old)
    assert arr.time == 3600.0 and torch.equal(arr.conductance, before)
    arr.drift(limit)  # the largest accepted age is finite everywhere
    for t in (arr.conductance, arr.read_sigma, arr.read()):
        assert bool(torch.isfinite(t).all())


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from([torch.float32, F64]),
    frac=st.floats(0.0, 1.0),
    pulse_frac=st.floats(0.0, 1.0),
    t0=st.sampled_from([1e-3, 0.5, 20.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_every_accepted_age_gives_finite_conductances(dtype, frac, pulse_frac, t0, seed):
    """Any age in [0, max_age] (log-uniform over the dtype's range), with or without a pulse
    in between (pulsed devices restart their clock), gives finite conductances, read-noise stds
    and reads."""
    limit = max_age(dtype)
    t = 0.0 if frac == 0.0 else math.exp(frac * math.log(limit))
    t_pulse = pulse_frac * t
    m = dataclasses.replace(pcm(), t0=t0)
    arr = DeviceArray((6, 5), m, seed=seed, dtype=dtype)
    arr.program(torch.linspace(0.0, 25e-6, 30, dtype=dtype).reshape(6, 5))
    arr.drift(t_pulse)
    arr.pulse(torch.arange(30).reshape(6, 5) % 3)
    arr.drift(min(t, limit))
    for x in (arr.conductance, arr.read_sigma, arr.read()):
        assert bool(torch.isfinite(x).all())
    assert bool((arr.conductance >= 0).all())


def test_model_drift_rejects_unrepresentable_ages():
    from analogeq.hardware import HardwareConfig
    from analogeq.model import EquilibriumTransformer, ModelConfig

    cfg = ModelConfig(vocab_size=8, d_model=8, n_heads=2, context=4)
    model = EquilibriumTransformer(cfg, hardware=HardwareConfig(device="pcm", seed=0), seed=0)
    with pytest.raises(ValueError, match="t_seconds must be in"):
        model.drift(1e60)
    model.drift(86400.0 * 365 * 1e3)  # a thousand years: representable, finite
    for analog in model.crossbars().values():
        for tile in analog.tiles:
            for arr in (tile.plus, tile.minus):
                assert bool(torch.isfinite(arr.read()).all())


def test_bad_times_raise():
    arr = DeviceArray((4,), pcm(), seed=0)
    arr.program(torch.full((4,), 10e-6))
    with pytest.raises(ValueError, match="t_seconds must be in"):
        arr.drift(-1.0)
    with pytest.raises(ValueError, match="t_seconds must be finite"):
        arr.drift(float("nan"))
    with pytest.raises(TypeError, match="t_seconds"):
        arr.drift("1 h")
    arr.drift(100.0)
    with pytest.raises(ValueError, match="time runs forward"):
        arr.drift(10.0)


# ------------------------------------------------------------------------------------------
# PCM statistics vs the published formulas


@pytest.mark.parametrize("g_us", [2.5, 7.5, 12.5, 20.0])
def test_pcm_programming_noise_std_matches_formula(g_us):
    n_side = 200
    n = n_side * n_side
    arr = DeviceArray((n_side, n_side), pcm(), seed=11, dtype=F64)
    g = g_us * US
    arr.program(torch.full((n_side, n_side), g, dtype=F64))
    err = (arr.g_prog - g).flatten().numpy()
    sigma = _pcm_sigma_prog(g)
    assert abs(err.mean()) < Z * sigma / math.sqrt(n)
    assert abs(err.std(ddof=1) - sigma) < Z * sigma / math.sqrt(2 * (n - 1))
    assert torch.equal(arr.prog_error, arr.g_prog - arr.g_target)


def test_pcm_drift_follows_power_law_per_device():
    torch.manual_seed(0)  # test data only; the library never uses the global RNG
    arr = DeviceArray((64, 64), pcm(), seed=5, dtype=F64)
    arr.program(torch.empty(64, 64, dtype=F64).uniform_(1e-6, 25e-6))
    times = [0.0, 60.0, 3600.0, 86400.0, 3e7]
    logs = []
    for t in times:
        arr.drift(t)
        logs.append(torch.log(arr.conductance))
    y = torch.stack(logs).reshape(len(times), -1)
    x = torch.log(torch.tensor([(t + 20.0) / 20.0 for t in times], dtype=F64))
    xc = x - x.mean()
    slope = (xc[:, None] * (y - y.mean(0))).sum(0) / (xc**2).sum()
    ok = arr.g_prog.flatten() > 0
    assert torch.allclose(slope[ok], -arr.nu.flatten()[ok], atol=1e-9)
    # the drift law itself at one time, against the formula
    expected = arr.g_prog * ((3e7 + 20.0) / 20.0) ** (-arr.nu)
    assert torch.allclose(arr.conductance, expected, rtol=1e-12)


@pytest.mark.parametrize("gr", [0.02, 0.1, 0.4, 1.0])
def test_pcm_nu_distribution_matches_formula(gr):
    n_side = 200
    n = n_side * n_side
    m = dataclasses.replace(pcm(), programming=ProgrammingNoise())
    arr = DeviceArray((n_side, n_side), m, seed=21, dtype=F64)
    arr.program(torch.full((n_side, n_side), gr * 25e-6, dtype=F64))
    nu = arr.nu.flatten().numpy()
    mu, sig = _pcm_nu_params(gr)
    folded = stats.foldnorm(c=mu / sig, scale=sig)  # nu = |N(mu, sig)|
    assert abs(nu.mean() - folded.mean()) < Z * folded.std() / math.sqrt(n)
    assert abs(nu.std(ddof=1) - folded.std()) < Z * folded.std() / math.sqrt(2 * (n - 1))
    assert (nu >= 0).all()


@pytest.mark.parametrize("t", [0.0, 1e4])
def test_pcm_read_noise_matches_1f_formula(t):
    n_side = 200
    n = n_side * n_side
    m = dataclasses.replace(pcm(), programming=ProgrammingNoise())  # g_prog = target exactly
    arr = DeviceArray((n_side, n_side), m, seed=3, dtype=F64)
    g = 10e-6
    arr.program(torch.full((n_side, n_side), g, dtype=F64))
    arr.drift(t)
    rel = ((arr.read() - arr.conductance) / arr.conductance).flatten().numpy()
    q = min(0.0088 / max((g / 25e-6) ** 0.65, 1e-3), 0.2)
    t_read = 250e-9
    sigma = q * math.sqrt(math.log((t + 20.0 + t_read) / (2 * t_read)))
    assert abs(rel.mean()) < Z * sigma / math.sqrt(n)
    assert abs(rel.std(ddof=1) - sigma) < Z * sigma / math.sqrt(2 * (n - 1))


def test_gaussian_read_noise_and_none():
    m = _quiet(rram(), read=ReadNoise(kind="gaussian", std=0.02))
    arr = DeviceArray((200, 200), m, seed=1, dtype=F64)
    arr.program(torch.full((200, 200), 20e-6, dtype=F64))
    d = (arr.read() - arr.conductance).flatten().numpy()
    sigma = 0.02 * m.g_max
    assert abs(d.std(ddof=1) - sigma) < Z * sigma / math.sqrt(2 * (d.size - 1))
    quiet = DeviceArray((3, 3), ideal(), seed=1)
    quiet.program(torch.full((3, 3), 5e-6))
    assert torch.equal(quiet.read(), quiet.conductance)


# ------------------------------------------------------------------------------------------
# levels, bounds, faults


def test_programmed_conductances_sit_on_the_level_grid():
    m = DeviceModel(g_min=2e-6, g_max=30e-6, n_levels=16, name="mlc")
    arr = DeviceArray((50, 40), m, seed=2, dtype=F64)
    target = torch.linspace(0.0, 35e-6, 2000, dtype=F64).reshape(50, 40)
    arr.program(target)
    step = (30e-6 - 2e-6) / 15
    grid = 2e-6 + step * np.arange(16)
    g = arr.g_prog.flatten().numpy()
    dist = np.abs(g[:, None] - grid[None, :]).min(1)
    assert dist.max() < 1e-9 * step
    # nearest level of the clipped target, computed independently
    t = np.clip(target.flatten().numpy(), 2e-6, 30e-6)
    nearest = grid[np.abs(t[:, None] - grid[None, :]).argmin(1)]
    assert np.allclose(g, nearest, rtol=0, atol=1e-9 * step)


def test_stuck_devices_sit_at_their_bound_and_ignore_everything():
    m = dataclasses.replace(
        rram(),
        stuck_at_min=0.1,
        stuck_at_max=0.05,
        drift=Drift(kind="constant", nu_mean=0.05, nu_std=0.01),
    )
    shape = (100, 100)
    n = 100 * 100
    arr = DeviceArray(shape, m, seed=8, dtype=F64)
    smin = arr.stuck == 1
    smax = arr.stuck == 2
    for mask, p in ((smin, 0.1), (smax, 0.05)):
        frac = mask.double().mean().item()
        assert abs(frac - p) < Z * math.sqrt(p * (1 - p) / n)

    def check():
        assert torch.equal(arr.conductance[smin], arr.g_min_dev[smin])
        assert torch.equal(arr.conductance[smax], arr.g_max_dev[smax])

    check()
    arr.program(
        torch.empty(shape, dtype=F64).uniform_(0, 40e-6, generator=torch.Generator().manual_seed(0))
    )
    check()
    arr.pulse(torch.full(shape, 7))
    arr.pulse(torch.full(shape, -3))
    check()
    arr.drift(1e5)
    check()
    assert (arr.pulses_up[smin] == 7).all()  # pulses were sent (and counted) but had no effect


# ------------------------------------------------------------------------------------------
# pulse response


def _iterate_pulses(x0: np.ndarray, n: int, *, dw_up, dw_down, gu, gd, r, sign: int) -> np.ndarray:
    """Pulse-by-pulse reference of aihwkit's linear-step rule in normalized position x."""
    x = x0.copy()
    for _ in range(n):
        if sign > 0:
            x = x + dw_up * (1 - gu * (x - r) / (1 - r))
        else:
            x = x - dw_down * (1 - gd * (r - x) / r)
        x = np.clip(x, 0.0, 1.0)
    return x


def test_constant_step_pulses_are_exact_and_hard_bounded():
    m = _quiet(ideal(), pulse=PulseResponse(dw_min=0.01))
    arr = DeviceArray((5,), m, seed=0, dtype=F64)
    arr.program(torch.full((5,), 5e-6, dtype=F64))
    dg = arr.pulse(torch.tensor([0, 1, 10, -3, -1000]))
    expected = torch.tensor([0, 1, 10, -3, 0], dtype=F64) * 0.01 * 25e-6
    expected[4] = -5e-6  # hard bound at g_min
    assert torch.allclose(dg, expected, rtol=1e-12, atol=1e-18)
    assert arr.pulses_up.tolist() == [0, 1, 10, 0, 0]
    assert arr.pulses_down.tolist() == [0, 0, 0, 3, 1000]


@pytest.mark.parametrize("sign", [1, -1])
def test_soft_bound_pulses_match_pulse_by_pulse_rule(sign):
    p = PulseResponse(
        dw_min=0.02, up_down=0.1, soft_bound_up=1.0, soft_bound_down=0.5, reference_point=0.4
    )
    m = _quiet(ideal(), pulse=p)
    x0 = np.linspace(0.0, 1.0, 11)
    arr = DeviceArray((11,), m, seed=0, dtype=F64)
    arr.program(torch.tensor(x0 * 25e-6))
    n = 37
    arr.pulse(torch.full((11,), sign * n))
    # aihwkit's C++ up_down convention (PulsedRPUDevice::populate): up_down = 0.1 > 0 keeps the
    # up step at dw_min and takes 0.1 dw_min off the down step
    ref = _iterate_pulses(
        x0, n, dw_up=0.02, dw_down=0.02 * 0.9, gu=1.0, gd=0.5, r=0.4, sign=sign
    )
    assert np.allclose(arr.conductance.numpy() / 25e-6, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["multiplicative", "additive"])
def test_cycle_noise_moments_match_pulse_by_pulse_simulation(kind):
    """n pulses applied at once have the mean and std of n noisy pulses applied one by one."""
    s, n, x0, n_dev = 0.8, 25, 0.3, 40000
    p = PulseResponse(
        dw_min=0.01, soft_bound_up=1.0, reference_point=0.5, cycle_noise=s, cycle_noise_kind=kind
    )
    m = _quiet(ideal(), pulse=p)
    m = dataclasses.replace(m, pulse=p)
    arr = DeviceArray((n_dev,), m, seed=4, dtype=F64)
    arr.program(torch.full((n_dev,), x0 * 25e-6, dtype=F64))
    arr.pulse(torch.full((n_dev,), n))
    got = arr.conductance.numpy() / 25e-6
    rng = np.random.default_rng(0)
    x = np.full(n_dev, x0)
    for _ in range(n):
        step = 0.01 * (1 - (x - 0.5) / 0.5)
        xi = rng.standard_normal(n_dev)
        x = x + (step * (1 + s * xi) if kind == "multiplicative" else step + s * 0.01 * xi)
    # no clipping is reached here (the test checks it), so both are unbounded random walks
    assert x.max() < 1 and got.max() < 1 and x.min() > 0
    se_mean = math.sqrt((got.var() + x.var()) / n_dev)
    assert abs(got.mean() - x.mean()) < Z * se_mean
    se_std = math.sqrt(got.var() / (2 * n_dev) + x.var() / (2 * n_dev))
    assert abs(got.std() - x.std()) < Z * se_std


def test_asymmetric_device_drifts_under_symmetric_pulse_pairs():
    # constant step, up_down = +-0.2: each up/down pair moves by (dw_up - dw_down) = +-0.2 dw_min
    # (aihwkit's C++ convention: the weaker direction loses |up_down| dw_min, PulsedRPUDevice::
    # populate; the Python docstring's dw_min (1 +- up_down) would give +-0.4 dw_min)
    for up_down in (0.2, -0.2):
        m = _quiet(ideal(), pulse=PulseResponse(dw_min=0.001, up_down=up_down))
        arr = DeviceArray((1,), m, seed=0, dtype=F64)
        arr.program(torch.full((1,), 12.5e-6, dtype=F64))
        for _ in range(50):
            arr.pulse(torch.tensor([1]))
            arr.pulse(torch.tensor([-1]))
        moved = (float(arr.conductance[0]) - 12.5e-6) / 25e-6
        assert moved == pytest.approx(50 * up_down * 0.001, rel=1e-9)
    # symmetric soft bounds: pairs pull every device toward the fixed point of the pair map
    p = PulseResponse(dw_min=0.01, soft_bound_up=1.0, soft_bound_down=1.0, reference_point=0.3)
    m = _quiet(ideal(), pulse=p)
    x0 = np.array([0.05, 0.15, 0.6, 0.95])
    arr = DeviceArray((4,), m, seed=0, dtype=F64)
    arr.program(torch.tensor(x0 * 25e-6))
    for _ in range(2000):
        arr.pulse(torch.ones(4, dtype=torch.int64))
        arr.pulse(-torch.ones(4, dtype=torch.int64))
    x = arr.conductance.numpy() / 25e-6

    def pair(v):
        return _iterate_pulses(
            _iterate_pulses(np.array([v]), 1, dw_up=0.01, dw_down=0.01, gu=1, gd=1, r=0.3, sign=1),
            1,
            dw_up=0.01,
            dw_down=0.01,
            gu=1,
            gd=1,
            r=0.3,
            sign=-1,
        )[0]

    lo, hi = 0.0, 1.0  # bisection for the fixed point of the pair map
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if pair(mid) > mid else (lo, mid)
    x_star = 0.5 * (lo + hi)
    assert np.all(np.sign(x - x0) == np.sign(x_star - x0))  # predicted direction
    assert np.allclose(x, x_star, atol=1e-6)


def test_bounds_and_levels_hold_under_random_pulses():
    # programming noise off: it is added after quantization, so it would put devices off-grid;
    # programming clipped to each device's own bounds, so that every device starts inside them
    m = dataclasses.replace(rram(), n_levels=33, programming=ProgrammingNoise(clip="device"))
    arr = DeviceArray((60, 60), m, seed=9, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    arr.program(torch.rand(60, 60, generator=gen, dtype=F64) * 40e-6)
    step = m.g_range / 32
    for _ in range(20):
        arr.pulse(torch.randint(-300, 300, (60, 60), generator=gen))
        g = arr.conductance
        assert (g >= arr.g_min_dev).all() and (g <= arr.g_max_dev).all()
        on_grid = torch.remainder((g - m.g_min) / step + 0.5, 1.0) - 0.5
        at_own_bound = (g == arr.g_max_dev) | (g == arr.g_min_dev)
        assert ((on_grid.abs() < 1e-6) | at_own_bound).all()


def test_pulses_for_realizes_requests_on_the_nominal_device():
    p = PulseResponse(
        dw_min=0.002, up_down=0.1, soft_bound_up=0.7, soft_bound_down=1.0, reference_point=0.45
    )
    m = _quiet(ecram(), pulse=p)
    arr = DeviceArray((400,), m, seed=0, dtype=F64)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(400, generator=gen, dtype=F64) * 0.8 + 0.1
    arr.program(x0 * 25e-6)
    dg = (torch.rand(400, generator=gen, dtype=F64) - 0.5) * 0.1 * 25e-6
    n = arr.pulses_for(dg)
    realized = arr.pulse(n)
    # at most half of the largest single step (the up step at x = 0 here)
    max_step = 0.002 * 1.1 * (1 + 0.7 * 0.45 / 0.55) * 25e-6
    assert (realized - dg).abs().max() <= 0.5 * max_step * (1 + 1e-9)


@pytest.mark.parametrize("device", [pcm, rram])
def test_pulses_never_push_a_device_further_beyond_its_own_bound(device):
    """Programming clamps at 0 S only (aihwkit), so a device programmed to g_max can sit above
    its own upper bound g_max_dev. An up pulse leaves it there (aihwkit clips every pulse to the
    bound; a pulse never moves a device against its direction); down pulses move it down, and
    devices inside their bounds stay inside."""
    m = dataclasses.replace(device(), programming=ProgrammingNoise())
    n = 2000
    arr = DeviceArray((n,), m, seed=3, dtype=F64)
    arr.program(torch.full((n,), m.g_max, dtype=F64))
    g0 = arr.conductance.clone()
    above = g0 > arr.g_max_dev
    assert 0.2 < float(above.double().mean()) < 0.8  # the spread puts many below g_max
    arr.pulse(torch.full((n,), 5, dtype=torch.int64))
    g1 = arr.conductance
    assert torch.equal(g1[above], g0[above])
    assert bool((g1[~above] <= arr.g_max_dev[~above]).all())
    if m.pulse.bidirectional:
        arr.pulse(torch.full((n,), -5, dtype=torch.int64))
        # never up (RRAM's additive cycle noise can undo 5 steps; the clip holds it at g0)
        assert bool((arr.conductance[above] <= g0[above]).all())
        assert float((g0 - arr.conductance)[above].mean()) > 2 * m.pulse.dw_min * m.g_range
        arr.pulse(torch.full((n,), -3000, dtype=torch.int64))
        assert bool((arr.conductance <= arr.g_max_dev).all())
        assert bool((arr.conductance >= arr.g_min_dev).all())


def test_unidirectional_device_rejects_down_pulses():
    arr = DeviceArray((3,), pcm(), seed=0)
    arr.program(torch.full((3,), 5e-6))
    with pytest.raises(ValueError, match="only up pulses"):
        arr.pulse(torch.tensor([1, -1, 0]))
    with pytest.raises(TypeError, match="integer"):
        arr.pulse(torch.tensor([1.0, 0.0, 0.0]))


# ------------------------------------------------------------------------------------------
# determinism


def _history(seed: int) -> list[torch.Tensor]:
    arr = DeviceArray(
        (30, 20), dataclasses.replace(pcm(), g_max_dtod=0.1, stuck_at_min=0.05), seed=seed
    )
    arr.program(torch.linspace(0, 25e-6, 600).reshape(30, 20))
    out = [arr.g_prog.clone(), arr.nu.clone(), arr.read().clone()]
    arr.drift(1e3)
    arr.pulse(torch.arange(600).reshape(30, 20) % 7)
    out += [arr.conductance.clone(), arr.read().clone(), arr.g_max_dev.clone()]
    return out


def test_seeded_arrays_repeat_bit_for_bit_and_seeds_differ():
    a, b, c = _history(123), _history(123), _history(124)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(not torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_read_noise_modes():
    arr = DeviceArray((50, 50), pcm(), seed=0, dtype=F64)
    arr.program(torch.full((50, 50), 10e-6, dtype=F64))
    assert not torch.equal(arr.read(), arr.read())  # white: a fresh draw per read
    arr.set_read_noise("quenched")
    r1 = arr.read()
    assert torch.equal(r1, arr.read())
    arr.advance(1.0)  # no effect on a frozen draw
    assert torch.equal(r1, arr.read())
    arr.resample_read_noise()
    assert not torch.equal(r1, arr.read())
    arr.set_read_noise("ou", tau_c=1.0)
    a = arr.read()
    assert torch.equal(a, arr.read())
    arr.advance(0.01)
    b = arr.read()
    xa = ((a - arr.conductance) / arr.read_sigma).flatten()
    xb = ((b - arr.conductance) / arr.read_sigma).flatten()
    rho = float(torch.corrcoef(torch.stack([xa, xb]))[0, 1])
    assert rho == pytest.approx(math.exp(-0.01), abs=Z / math.sqrt(2500))
    with pytest.raises(ValueError, match="tau_c"):
        arr.set_read_noise("ou")
    with pytest.raises(ValueError, match="mode must be one of"):
        arr.set_read_noise("pink")


# ------------------------------------------------------------------------------------------
# Ornstein-Uhlenbeck read noise


def test_ou_stationary_variance_and_autocorrelation():
    n, sigma, tau, dt, steps = 40000, 0.7, 2.0, 0.5, 8
    ou = OUProcess((n,), sigma=sigma, tau_c=tau, seed=0, dtype=F64)
    path = [ou.value.clone()]
    for _ in range(steps):
        path.append(ou.step(dt).clone())
    x = torch.stack(path).numpy()
    var_se = sigma**2 * math.sqrt(2.0 / n)
    for k in range(steps + 1):
        assert abs(x[k].var() - sigma**2) < Z * var_se  # stationary at every step
    for lag in range(1, steps + 1):
        rho = math.exp(-lag * dt / tau)
        cov = float(np.mean(x[0] * x[lag]))
        se = sigma**2 * math.sqrt((1 + rho**2) / n)  # Var[x0 x_k] = sigma^4 (1 + rho^2)
        assert abs(cov - sigma**2 * rho) < Z * se
        assert ou.autocorrelation(lag * dt) == pytest.approx(sigma**2 * rho)


def test_ou_limits_and_validation():
    q = OUProcess((1000,), tau_c=math.inf, seed=1)
    v = q.value.clone()
    q.step(10.0)
    assert torch.equal(v, q.value)
    q2 = OUProcess((1000,), tau_c=5.0, quenched=True, seed=1)
    q2.step(1.0)
    assert torch.equal(q2.value, v)  # same seed, same frozen draw
    w = OUProcess((20000,), tau_c=0.0, seed=2, dtype=F64)
    a = w.value.clone()
    b = w.step(1e-9).clone()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < Z / math.sqrt(20000)
    with pytest.raises(ValueError, match="tau_c"):
        OUProcess((3,), tau_c=-1.0)
    with pytest.raises(ValueError, match="dt"):
        w.step(-0.1)
    with pytest.raises(ValueError, match="sigma"):
        OUProcess((3,), sigma=-1.0)
    with pytest.raises(ValueError, match="either generator or seed"):
        OUProcess((3,), seed=1, generator=torch.Generator())
