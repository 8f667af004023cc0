"""The device models against IBM aihwkit, formula by formula.

Every reference here is re-derived from aihwkit's source (the file and function are cited next to
each one) and written independently of analogeq in numpy; nothing of aihwkit is imported or
copied. Paths are relative to the aihwkit repository: `src/aihwkit/...` (Python) and
`src/rpucuda/...` (the C++ simulator that runs the pulsed updates).

Distributions are compared on 100k draws: means and standard deviations within 2 %, single-pulse
step responses within 1 % (they are deterministic, so they agree to rounding). Where a reference
distribution is heavy-tailed (the symmetry point divides by a device gain that can be near 0),
quantiles are compared instead of the standard deviation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from analogeq.circuits import (
    DeviceArray,
    DeviceModel,
    ProgrammingNoise,
    PulseResponse,
    ecram,
    pcm,
    rram,
)

from analogeq.deploy import apply_drift_compensation, drift_baseline
from analogeq.hardware import HardwareConfig
from analogeq.learning import DeviceUpdater
from analogeq.model import EquilibriumTransformer, ModelConfig

F64 = torch.float64
N = 100_000
REL = 0.02  # distributions
REL_STEP = 0.01  # step responses


def _close(got: float, ref: float, rel: float = REL, what: str = "") -> None:
    assert abs(got - ref) <= rel * abs(ref), f"{what}: got {got}, aihwkit {ref}"


# ------------------------------------------------------------------------------------------------
# inference: programming noise, drift, 1/f read noise


def _aihwkit_program(g_target_us: np.ndarray, coeffs_us: list[float], g_max_ref: float,
                     g_max: float, rng: np.random.Generator) -> np.ndarray:
    """src/aihwkit/inference/noise/pcm.py `PCMLikeNoiseModel.apply_programming_noise_to_conductance`
    (and reram.py `ReRamWan2022NoiseModel._apply_poly`, the same code): sig_prog =
    sum_i c_i (g_t / g_max)^i, times g_max / prog_coeff_g_max_reference; g_prog = g_t +
    sig_prog randn; g_prog.clamp_(min=0.0). Conductances in uS."""
    mat = 1.0
    sig = np.full_like(g_target_us, coeffs_us[0])
    for c in coeffs_us[1:]:
        mat = mat * g_target_us / g_max
        sig = sig + mat * c
    sig = sig * g_max / g_max_ref
    return np.maximum(g_target_us + sig * rng.standard_normal(g_target_us.shape), 0.0)


@pytest.mark.parametrize("device, coeffs, g_max", [
    (pcm, [0.26348, 1.9650, -1.1731], 25.0),  # PCMLikeNoiseModel default prog_coeff
    (rram, [0.348, 16.030, -43.853, 45.393, -16.815], 40.0),  # ReRamWan2022 coeff_dic[1.0]
])
@pytest.mark.parametrize("g_rel", [0.0, 0.25, 0.5, 1.0])
def test_programming_noise_is_clamped_at_zero_only(device, coeffs, g_max, g_rel):
    """At g_target = g_max the PCM error keeps its full std (1.055 uS, mean 0): the device's
    own bound does not clip it (the old clip at g_max gave 0.62 uS and a -0.42 uS bias)."""
    m = dataclasses.replace(device(), stuck_at_min=0.0, stuck_at_max=0.0)
    arr = DeviceArray((N,), m, seed=1, dtype=F64)
    g_t = g_rel * g_max
    arr.program(torch.full((N,), g_t * 1e-6, dtype=F64))
    got = arr.g_prog.numpy() * 1e6
    ref = _aihwkit_program(np.full(N, g_t), coeffs, g_max, g_max, np.random.default_rng(0))
    sig = abs(sum(c * g_rel**i for i, c in enumerate(coeffs)))
    # means compared within 2 % of the larger of the mean and the noise (a mean of 0 uS has no
    # relative error); stds within 2 %
    assert abs(got.mean() - ref.mean()) <= REL * max(abs(ref.mean()), sig)
    _close(got.std(), ref.std(), what=f"std at g/g_max = {g_rel}")
    assert got.min() >= 0.0


def test_clip_to_the_device_bound_is_an_option():
    m = dataclasses.replace(pcm(), g_max_dtod=0.0, programming=dataclasses.replace(
        pcm().programming, clip="device"))
    arr = DeviceArray((N,), m, seed=1, dtype=F64)
    arr.program(torch.full((N,), 25e-6, dtype=F64))
    err = arr.g_prog.numpy() * 1e6 - 25.0
    # a normal N(0, 1.055) folded at its mean: mean -sigma / sqrt(2 pi), std sigma sqrt(1/2 - 1/2pi)
    sigma = 0.26348 + 1.9650 - 1.1731
    _close(err.mean(), -sigma / math.sqrt(2 * math.pi), what="clipped mean")
    _close(err.std(), sigma * math.sqrt(0.5 - 0.5 / math.pi), what="clipped std")
    with pytest.raises(ValueError, match="programming.clip"):
        ProgrammingNoise(clip="gmax")


def _aihwkit_drift_and_read(g_target_us: np.ndarray, t_inference: float,
                            rng: np.random.Generator) -> np.ndarray:
    """pcm.py `PCMLikeNoiseModel` end to end, g_max 25 uS, t_0 20 s, t_read 250 ns:
    `apply_programming_noise_to_conductance`, `generate_drift_coefficients`
        g_relative = clamp(|g_target / g_max|, min=1e-7)
        mu = clamp(-0.0155 ln g_r + 0.0244, 0.049, 0.1)
        sig = clamp(-0.0125 ln g_r - 0.0059, 0.008, 0.045)
        nu = |mu + sig randn|
    and `apply_drift_noise_to_conductance`
        t = t_inference + t_0; g_drift = g_prog (t / t_0)^-nu   (if t > t_0)
        q_s = clamp(0.0088 / clamp((|g_prog| / g_max)^0.65, min=1e-3), max=0.2)
        sig_noise = q_s sqrt(ln((t + t_read) / (2 t_read)))
        g_final = clamp(g_drift + |g_drift| sig_noise randn, min=0)."""
    g_max, t0, t_read = 25.0, 20.0, 250e-9
    g_prog = _aihwkit_program(g_target_us, [0.26348, 1.9650, -1.1731], 25.0, g_max, rng)
    g_r = np.maximum(np.abs(g_target_us / g_max), 1e-7)
    mu = np.clip(-0.0155 * np.log(g_r) + 0.0244, 0.049, 0.1)
    sig = np.clip(-0.0125 * np.log(g_r) - 0.0059, 0.008, 0.045)
    nu = np.abs(mu + sig * rng.standard_normal(g_r.shape))
    t = t_inference + t0
    g_drift = g_prog * (t / t0) ** (-nu) if t > t0 else g_prog
    q_s = np.minimum(0.0088 / np.maximum((np.abs(g_prog) / g_max) ** 0.65, 1e-3), 0.2)
    sig_noise = q_s * np.sqrt(np.log((t + t_read) / (2 * t_read)))
    return np.maximum(g_drift + np.abs(g_drift) * sig_noise * rng.standard_normal(g_r.shape), 0)


@pytest.mark.parametrize("g_rel", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("t", [1.0, 86400.0, 86400.0 * 365])
def test_pcm_drift_and_read_noise(g_rel, t):
    arr = DeviceArray((N,), pcm(), seed=2, dtype=F64)
    arr.program(torch.full((N,), g_rel * 25e-6, dtype=F64))
    arr.drift(t)
    got = arr.read().numpy() * 1e6
    ref = _aihwkit_drift_and_read(np.full(N, g_rel * 25.0), t, np.random.default_rng(1))
    _close(got.mean(), ref.mean(), what="mean of a read")
    _close(got.std(), ref.std(), what="std of a read")


# ------------------------------------------------------------------------------------------------
# stochastic pulse trains: update management and BL management


def _aihwkit_probabilities(lr: float, dw: float, desired_bl: int, x_max: float, d_max: float):
    """(BL, scale of x, scale of d) as aihwkit computes them with update_bl_management and
    update_management on. src/rpucuda/rpu_pulsed_meta_parameter.cpp,
    `PulsedUpdateMetaParameter::calculateBlAB` and `::performUpdateManagement`:

        BL = desired_BL; A = B = sqrt(lr / (dw BL))          (calculateBlAB, UBLM branch)
        d_val = d_abs_max (um_grad_scale 1); k = lr x_max d_val / dw
        BL = min(ceil(k), desired_BL); A = B = sqrt(lr / (dw BL))
        if k > BL: d_val *= BL / k                             ("avoid clipping of x")
        A *= sqrt(x_val / d_val); B *= sqrt(d_val / x_val)
    and, from the comment there, prob(x) = B x, prob(d) = A d.
    """
    d_val = d_max
    k = lr * x_max * d_val / dw
    bl = min(math.ceil(k), desired_bl)
    a = b = math.sqrt(lr / (dw * bl))
    if k > bl:
        d_val *= bl / k
    a *= math.sqrt(x_max / d_val)
    b *= math.sqrt(d_val / x_max)
    return bl, b, a  # BL, p_x / |x|, p_d / |d|


def test_clipped_pulse_trains_put_all_clipping_on_the_d_side():
    """A request of k = 2 BL pulses: x keeps probability 1 at its largest entry, d takes the
    clipping (probability k / BL = 2, clipped to 1). Splitting it (both sqrt(2)) would give the
    half-size entries 0.71 BL coincidences on both sides instead of 0.5 BL / 1.0 BL."""
    cfg = ModelConfig(vocab_size=7, d_model=4, n_heads=2, context=3, dtype=F64)
    dev = DeviceModel(g_max=25e-6, pulse=PulseResponse(dw_min=1e-6), name="const")
    model = EquilibriumTransformer(cfg, hardware=HardwareConfig(
        device=dev, read_noise="off", tau_spread=0.0, seed=0), seed=0)
    analog = model.crossbars()["attn.o"]
    analog.program(torch.zeros(4, 4, dtype=F64))  # every device at g_min: no bound is reached
    dw = 1e-6 * dev.g_range / float(analog.g_ref)
    lr, bl, n_samples = 0.5, 31, 2000
    x_row = torch.tensor([1.0, 0.5, 1.0, 0.5], dtype=F64)
    c = 2 * bl * dw / lr  # k = lr * 1 * c / dw = 2 BL
    e_row = torch.tensor([c, c / 2, c, c / 2], dtype=F64)
    x, e = x_row.repeat(n_samples, 1), e_row.repeat(n_samples, 1)
    upd = DeviceUpdater("stochastic", bl=bl, seed=0)
    rep = upd.apply_factors("attn.o", x, e, lr, model=model).crossbars["attn.o"]
    counts = (-rep.realised_dw / dw).numpy()  # dW = -lr e x^T < 0: one pulse = -dw each
    bl_a, sx, sd = _aihwkit_probabilities(lr, dw, bl, 1.0, c)
    px = np.minimum(sx * x_row.numpy(), 1.0)
    pd = np.minimum(sd * e_row.numpy(), 1.0)
    expected = n_samples * bl_a * np.outer(pd, px)
    assert bl_a == bl
    np.testing.assert_allclose(px, [1.0, 0.5, 1.0, 0.5], rtol=1e-12)
    np.testing.assert_allclose(pd, [1.0] * 4, rtol=1e-12)
    np.testing.assert_allclose(counts, expected, rtol=REL)
    # the rows with |e| = c ask for 2 BL (x = 1) or BL (x = 0.5) pulses, lr |x e| / dw: their
    # trains are clipped; the rows with c / 2 ask for at most BL and are not
    assert rep.clipped_fraction == 0.5


# ------------------------------------------------------------------------------------------------
# global drift compensation


def test_global_drift_compensation_alpha():
    """src/aihwkit/inference/compensation/drift.py `GlobalDriftCompensation`: readout tensor
    eye(in_size), readout(out) = clamp(mean |out|, min=0.0001); base.py
    `BaseDriftCompensation.apply`: alpha = readout(baseline) / readout(now)."""
    cfg = ModelConfig(vocab_size=8, d_model=8, n_heads=2, context=4, dtype=F64)
    model = EquilibriumTransformer(cfg, hardware=HardwareConfig(
        device="pcm", read_noise="off", tau_spread=0.0, seed=3), seed=3)

    def readouts() -> list[float]:
        out = []
        for analog in model.crossbars().values():
            for tile in analog.tiles:
                gp, gm = (g.numpy() for g in tile.conductances())
                w = (gp - gm) / float(tile.g_ref)
                y = np.eye(w.shape[1]) @ w.T
                out.append(max(np.abs(y).mean(), 1e-4))
        return out

    ref = readouts()
    base = drift_baseline(model)
    model.drift(86400.0 * 30)
    now = readouts()
    alphas = apply_drift_compensation(model, base)
    np.testing.assert_allclose(alphas, np.array(ref) / np.array(now), rtol=1e-9)
    np.testing.assert_allclose(readouts(), ref, rtol=1e-9)


# ------------------------------------------------------------------------------------------------
# pulsed devices: device-to-device parameters (PulsedRPUDevice::populate)


def _aihwkit_populate(rng: np.random.Generator, n: int, *, dw_min: float, up_down: float,
                      dw_min_dtod: float, up_down_dtod: float, w_max: float, w_min: float,
                      w_max_dtod: float, w_min_dtod: float) -> dict[str, np.ndarray]:
    """src/rpucuda/rpu_pulsed_device.cpp `PulsedRPUDevice<T>::populate` (enforce_consistency on,
    its default; no log-normal gain, no adjust_bounds_with_up_down, no corrupt devices):

        up_bias = up_down > 0 ? 0 : up_down;  down_bias = up_down > 0 ? -up_down : 0
        w_max_bound = w_max (1 + w_max_dtod xi);  w_min_bound = w_min (1 + w_min_dtod xi)
        gain = 1 + dw_min_dtod xi;  r = up_down_dtod xi
        w_scale_up = (up_bias + gain + r) dw_min;  w_scale_down = (down_bias + gain - r) dw_min
        enforce_consistency: |scales|; swap bounds if min > max; max = |max|, min = -|min|
    Weight units (the caller divides by the width of the weight range)."""
    up_bias = 0.0 if up_down > 0 else up_down
    down_bias = -up_down if up_down > 0 else 0.0
    b_max = w_max * (1 + w_max_dtod * rng.standard_normal(n))
    b_min = w_min * (1 + w_min_dtod * rng.standard_normal(n))
    gain = 1 + dw_min_dtod * rng.standard_normal(n)
    r = up_down_dtod * rng.standard_normal(n)
    up = np.abs((up_bias + gain + r) * dw_min)
    down = np.abs((down_bias + gain - r) * dw_min)
    swap = b_min > b_max
    b_min, b_max = np.where(swap, b_max, b_min), np.where(swap, b_min, b_max)
    return {"up": up, "down": down, "b_max": np.abs(b_max), "b_min": -np.abs(b_min)}


def _noise_free(m: DeviceModel, **pulse) -> DeviceModel:
    """`m` with programming exact, no read noise, no drift, no cycle noise (and `pulse`
    overrides): a pulse then shows the law and the device-to-device parameters only."""
    return dataclasses.replace(
        m, programming=ProgrammingNoise(), read=dataclasses.replace(m.read, kind="none"),
        drift=dataclasses.replace(m.drift, kind="none"),
        pulse=dataclasses.replace(m.pulse, **{"cycle_noise": 0.0, **pulse}))


def _one_pulse(m: DeviceModel, x: float | np.ndarray, sign: int, *, seed: int = 0,
               n: int = N) -> tuple[np.ndarray, DeviceArray]:
    """Position change (fraction of the nominal range) of one pulse from x = (G - g_min) /
    (g_max - g_min), on n devices."""
    arr = DeviceArray((n,), m, seed=seed, dtype=F64)
    g = m.g_min + torch.as_tensor(x, dtype=F64).expand(n).clone() * m.g_range
    arr.program(g)
    dg = arr.pulse(torch.full((n,), sign, dtype=torch.int64))
    return dg.numpy() / m.g_range, arr


@pytest.mark.parametrize("up_down", [0.3, -0.3])
def test_up_down_follows_the_cpp_convention(up_down):
    """aihwkit's C++ (`populate` above): up_down > 0 keeps the up step at dw_min gain and takes
    up_down dw_min off the down step. The Python docstring's d dw_min (1 + d beta + ...) would
    give means dw_min (1 + up_down) up and dw_min (1 - up_down) down instead."""
    pulse = PulseResponse(dw_min=0.001, up_down=up_down, dw_min_dtod=0.1, up_down_dtod=0.05)
    m = _noise_free(DeviceModel(g_max=25e-6, name="const", pulse=pulse))
    up, _ = _one_pulse(m, 0.5, +1, seed=3)
    down, _ = _one_pulse(m, 0.5, -1, seed=3)  # the same devices (same manufacturing draws)
    ref = _aihwkit_populate(np.random.default_rng(4), N, dw_min=0.001, up_down=up_down,
                            dw_min_dtod=0.1, up_down_dtod=0.05, w_max=1, w_min=-1,
                            w_max_dtod=0, w_min_dtod=0)
    _close(up.mean(), ref["up"].mean(), what="mean up step")
    _close(up.std(), ref["up"].std(), what="std of the up step")
    _close(-down.mean(), ref["down"].mean(), what="mean down step")
    _close(down.std(), ref["down"].std(), what="std of the down step")
    assert (up.mean() > -down.mean()) == (up_down > 0)
    # not the Python docstring's: the stronger direction is 0.3 dw_min short of it
    doc_up, doc_down = 0.001 * (1 + up_down), 0.001 * (1 - up_down)
    assert max(abs(up.mean() - doc_up), abs(-down.mean() - doc_down)) > 0.25 * 0.001


# ------------------------------------------------------------------------------------------------
# the exponential step (ExpStepDevice) and the PCM preset


def _aihwkit_exp_step(w, b_max, b_min, scale_up, scale_down, sign, *, a, b, A_up, A_down,
                      gamma_up, gamma_down):
    """src/rpucuda/rpu_expstep_device.cpp `update_once`, the noise-free part (weight units):

        z = 2 w / (max_bound - min_bound) a + b
        sign > 0 (a decrease): y_down = max(1 - A_down exp(gamma_down (-z)), 0);
                               w -= y_down scale_down
        otherwise:             y_up = max(1 - A_up exp(gamma_up z), 0); w += y_up scale_up
    `sign` here is the direction of the change (+1 up), the opposite of aihwkit's pulse sign."""
    z = 2.0 * w / (b_max - b_min) * a + b
    if sign > 0:
        return np.maximum(1 - A_up * np.exp(gamma_up * z), 0.0) * scale_up
    return -np.maximum(1 - A_down * np.exp(gamma_down * (-z)), 0.0) * scale_down


_PCM_ES = dict(a=-1.0, b=0.0, A_up=-27.235, A_down=-2.235, gamma_up=2.5, gamma_down=2.5)
_DEFAULT_ES = dict(a=0.244, b=0.2425, A_up=0.00081, A_down=0.36833, gamma_up=12.44625,
                   gamma_down=12.78785)  # aihwkit ExpStepDevice defaults


@pytest.mark.parametrize("x", [0.0, 0.1, 0.25, 0.5, 0.75, 0.95])
def test_pcm_exp_step_single_pulse(x):
    """PCMPresetDevice (presets/devices.py: dw_min 0.01 on [0, 2], a -1, b 0, gamma 2.5,
    A_up -27.235): at x = 0.25 one up pulse moves 0.044 of the range (the old soft bound with
    reference point 0.5 moved 0.0075)."""
    m = _noise_free(pcm(), dw_min_dtod=0.0, up_down_dtod=0.0)
    m = dataclasses.replace(m, g_max_dtod=0.0)
    got, _ = _one_pulse(m, x, +1, n=8)
    ref = _aihwkit_exp_step(2.0 * x, 2.0, 0.0, 0.01, 0.01, +1, **_PCM_ES) / 2.0
    np.testing.assert_allclose(got, ref, rtol=REL_STEP)
    if x == 0.25:
        assert got[0] == pytest.approx(0.044, abs=5e-4)


@pytest.mark.parametrize("x", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("sign", [1, -1])
def test_default_exp_step_both_directions(x, sign):
    """ExpStepDevice with aihwkit's default parameters on its default range [-0.6, 0.6]
    (reference point 0.5), up_down 0.2: up and down steps."""
    from analogeq.circuits import ExpStepResponse

    p = ExpStepResponse(dw_min=0.001 / 1.2, up_down=0.2, reference_point=0.5, es_a=0.244,
                        es_b=0.2425, es_A_up=0.00081, es_A_down=0.36833,
                        es_gamma_up=12.44625, es_gamma_down=12.78785)
    m = DeviceModel(g_max=25e-6, name="es", pulse=p)
    got, _ = _one_pulse(m, x, sign, n=8)
    w = (x - 0.5) * 1.2
    # up_down 0.2 > 0: scale_up = dw_min, scale_down = 0.8 dw_min (populate)
    ref = _aihwkit_exp_step(w, 0.6, -0.6, 0.001, 0.0008, sign, **_DEFAULT_ES) / 1.2
    np.testing.assert_allclose(got, ref, rtol=REL_STEP)


def test_pcm_exp_step_pulse_train_and_inversion():
    """40 pulses from x = 0 follow update_once pulse by pulse; pulses_for inverts the law."""
    m = dataclasses.replace(_noise_free(pcm(), dw_min_dtod=0.0, up_down_dtod=0.0),
                            g_max_dtod=0.0)
    arr = DeviceArray((1,), m, seed=0, dtype=F64)
    arr.program(torch.zeros(1, dtype=F64))
    path, w = [], 0.0
    for _ in range(40):
        arr.pulse(torch.ones(1, dtype=torch.int64))
        path.append(float(arr.conductance[0]) / m.g_range)
        w = min(w + _aihwkit_exp_step(w, 2.0, 0.0, 0.01, 0.01, +1, **_PCM_ES), 2.0)
        assert path[-1] == pytest.approx(w / 2.0, rel=REL_STEP)
    arr40 = DeviceArray((1,), m, seed=0, dtype=F64)
    arr40.program(torch.zeros(1, dtype=F64))
    arr40.pulse(torch.full((1,), 40, dtype=torch.int64))  # one call, the same path
    assert float(arr40.conductance[0]) / m.g_range == pytest.approx(path[-1], rel=1e-12)
    # model-aware counts on the nominal device: within half of the largest step on the way
    x0 = torch.linspace(0.02, 0.9, 200, dtype=F64)
    req = torch.linspace(0.0, 0.3, 200, dtype=F64).flip(0)
    many = DeviceArray((200,), m, seed=0, dtype=F64)
    many.program(x0 * m.g_range)
    n = many.pulses_for(req * m.g_range)
    realised = many.pulse(n) / m.g_range
    first_step = torch.tensor(_aihwkit_exp_step(2.0 * x0.numpy(), 2.0, 0.0, 0.01, 0.01, +1,
                                                **_PCM_ES) / 2.0)
    reachable = x0 + req <= 1.0
    err = (realised - req).abs()[reachable]
    assert bool((err <= 0.5 * first_step[reachable] * (1 + 1e-9)).all())


def _aihwkit_complex_noise_path(w0: np.ndarray, n_pulses: int, b_max: np.ndarray, rng,
                                s=0.6, add=0.042, slope=0.108) -> np.ndarray:
    """`update_once_complex_noise` (rpu_expstep_device.cpp), up pulses, PCM preset, weight
    units: dw = y_up scale_up; dw_std = dw_min_std (|dw| + dw_min_std_add + dw_min_std_slope |w|);
    w += dw + dw_std randn; w clipped to [min_bound, max_bound] after every pulse."""
    w = w0.copy()
    for _ in range(n_pulses):
        dw = _aihwkit_exp_step(w, b_max, 0.0, 0.01, 0.01, +1, **_PCM_ES)
        std = s * (np.abs(dw) + add + slope * np.abs(w))
        w = np.clip(w + dw + std * rng.standard_normal(w.shape), 0.0, b_max)
    return w


@pytest.mark.parametrize("x, n_pulses", [(0.1, 1), (0.5, 1), (0.9, 1), (0.2, 10)])
def test_pcm_exp_step_cycle_noise(x, n_pulses):
    """The complex cycle noise (dw_min_std 0.6, dw_min_std_add 0.042, dw_min_std_slope 0.108):
    distribution after n pulses, clipped to the device's bounds after each one."""
    m = dataclasses.replace(
        _noise_free(pcm(), cycle_noise=0.6, dw_min_dtod=0.0, up_down_dtod=0.0),
        g_max_dtod=0.0)
    arr = DeviceArray((N,), m, seed=5, dtype=F64)
    arr.program(torch.full((N,), x * m.g_range, dtype=F64))
    arr.pulse(torch.full((N,), n_pulses, dtype=torch.int64))
    got = arr.conductance.numpy() / m.g_range
    ref = _aihwkit_complex_noise_path(np.full(N, 2.0 * x), n_pulses, np.full(N, 2.0),
                                      np.random.default_rng(6)) / 2.0
    _close(got.mean(), ref.mean(), what="mean position")
    _close(got.std(), ref.std(), what="std of the position")


def test_pcm_device_to_device_spread():
    """PCMPresetDevice dw_min_dtod 0.2, up_down_dtod 0.05, w_max_dtod 0.1 (w_min 0, no spread):
    the step at w = 0 (z = b, independent of the bound) and the upper bound, and the step at
    x = 0.5, which depends on the device's own bound through z = 2 a w / (b_max - b_min)."""
    m = _noise_free(pcm())
    ref = _aihwkit_populate(np.random.default_rng(7), N, dw_min=0.01, up_down=0.0,
                            dw_min_dtod=0.2, up_down_dtod=0.05, w_max=2.0, w_min=0.0,
                            w_max_dtod=0.1, w_min_dtod=0.0)
    got0, arr = _one_pulse(m, 0.0, +1, seed=8)
    ref0 = _aihwkit_exp_step(0.0, ref["b_max"], ref["b_min"], ref["up"], ref["down"], +1,
                             **_PCM_ES) / 2.0
    _close(got0.mean(), ref0.mean(), what="mean step at w = 0")
    _close(got0.std(), ref0.std(), what="std of the step at w = 0")
    bound = arr.g_max_dev.numpy() / m.g_range
    _close(bound.mean(), ref["b_max"].mean() / 2.0, what="mean upper bound")
    _close(bound.std(), ref["b_max"].std() / 2.0, what="std of the upper bound")
    assert np.all(arr.g_min_dev.numpy() == 0.0)
    half, _ = _one_pulse(dataclasses.replace(m, pulse=dataclasses.replace(
        m.pulse, dw_min_dtod=0.0, up_down_dtod=0.0)), 0.5, +1, seed=8)
    ref_half = _aihwkit_exp_step(1.0, ref["b_max"], ref["b_min"], 0.01, 0.01, +1, **_PCM_ES)
    ref_half = np.minimum(ref_half, np.maximum(ref["b_max"] - 1.0, 0.0)) / 2.0  # clip at bound
    _close(half.mean(), ref_half.mean(), what="mean step at x = 0.5")
    _close(half.std(), ref_half.std(), what="std of the step at x = 0.5")


# ------------------------------------------------------------------------------------------------
# soft bounds with both bounds spread about w = 0: RRAM and ECRAM


def test_rram_symmetry_point_spread():
    """ReRamSBPresetDevice (SoftBoundsReferenceDevice, rpu_softbounds_reference_device.cpp):
    up steps scale_up (1 - w / max_bound), down steps scale_down (1 - w / min_bound), with the
    bounds spread about w = 0 (w_max 1.25, w_max_dtod 0.24; w_min -0.75, w_min_dtod 0.4), so the
    symmetry point (its `populate`: (scale_up - scale_down) / (scale_up / w_max - scale_down /
    w_min)) moves with the up/down asymmetry only: about 0.0046 of the range (quantiles), where
    the old reference point scaled with each device's own range spread it by 0.0565.

    Measured through the public API: the up and the down step of each device at w = 0 and at
    w = 0.005 (the law is affine in w), then the root of up - down. Heavy-tailed (the gain can
    be near 0), so quantiles are compared."""
    m = _noise_free(rram())
    r = m.pulse.reference_point
    steps = {}
    for w in (0.0, 0.005):
        for sign in (+1, -1):
            d, _ = _one_pulse(m, r + w, sign, seed=9)
            steps[w, sign] = np.abs(d)
    f0 = steps[0.0, 1] - steps[0.0, -1]
    f1 = steps[0.005, 1] - steps[0.005, -1]
    sp = -f0 * 0.005 / (f1 - f0)
    ref = _aihwkit_populate(np.random.default_rng(10), N, dw_min=0.002, up_down=0.0,
                            dw_min_dtod=0.3, up_down_dtod=0.01, w_max=1.25, w_min=-0.75,
                            w_max_dtod=0.3 / 1.25, w_min_dtod=0.3 / 0.75)
    ref_sp = (ref["up"] - ref["down"]) / (ref["up"] / ref["b_max"] - ref["down"] / ref["b_min"])
    ref_sp = ref_sp / 2.0  # weight range width 2
    qs = [0.05, 0.16, 0.5, 0.84, 0.95]
    got_q, ref_q = np.quantile(sp, qs), np.quantile(ref_sp, qs)
    spread = 0.5 * (ref_q[3] - ref_q[1])
    assert spread == pytest.approx(0.0046, abs=2e-4)
    np.testing.assert_allclose(got_q, ref_q, rtol=0, atol=REL * spread)


def test_rram_and_ecram_bounds_spread_about_w0():
    """Both bounds spread about w = 0 (populate); in conductance the lower one stops at 0 S."""
    for device, w_max, w_min, d_max, d_min in ((rram, 1.25, -0.75, 0.3 / 1.25, 0.3 / 0.75),
                                               (ecram, 1.1724, -0.8276, 0.05, 0.05)):
        m = device()
        arr = DeviceArray((N,), m, seed=11, dtype=F64)
        ref = _aihwkit_populate(np.random.default_rng(12), N, dw_min=0.002, up_down=0.0,
                                dw_min_dtod=0.0, up_down_dtod=0.0, w_max=w_max, w_min=w_min,
                                w_max_dtod=d_max, w_min_dtod=d_min)
        g_w0 = m.g_min + m.pulse.reference_point * m.g_range
        hi = (arr.g_max_dev.numpy() - g_w0) / m.g_range
        _close(hi.mean(), ref["b_max"].mean() / 2.0, what=f"{m.name}: mean upper bound")
        _close(hi.std(), ref["b_max"].std() / 2.0, what=f"{m.name}: std of the upper bound")
        lo = arr.g_min_dev.numpy()
        ref_lo = np.maximum(g_w0 + ref["b_min"] / 2.0 * m.g_range, 0.0)
        _close(lo.mean(), ref_lo.mean(), what=f"{m.name}: mean lower bound (>= 0 S)")
        _close(lo.std(), ref_lo.std(), what=f"{m.name}: std of the lower bound (>= 0 S)")


def test_soft_bound_references():
    """The soft bound of RRAM refers to each device's own bound (SoftBoundsReference
    `update_once_*`: a = w / max_bound), the linear step of ECRAM to the nominal one
    (LinearStepDevice with mean_bound_reference: gamma_up / w_max)."""
    w_weight = 0.6
    m = _noise_free(rram(), dw_min_dtod=0.0, up_down_dtod=0.0)
    got, _ = _one_pulse(m, m.pulse.reference_point + w_weight / 2.0, +1, seed=13)
    ref = _aihwkit_populate(np.random.default_rng(14), N, dw_min=0.002, up_down=0.0,
                            dw_min_dtod=0.0, up_down_dtod=0.0, w_max=1.25, w_min=-0.75,
                            w_max_dtod=0.24, w_min_dtod=0.4)
    ref_step = 0.002 * (1 - w_weight / ref["b_max"])  # clipped at the device's own bound:
    ref_step = np.clip(ref_step, 0.0, np.maximum(ref["b_max"] - w_weight, 0.0)) / 2.0
    _close(got.mean(), ref_step.mean(), what="rram: mean up step at w = 0.6")
    _close(got.std(), ref_step.std(), what="rram: std of the up step at w = 0.6")
    e = _noise_free(ecram(), dw_min_dtod=0.0, up_down_dtod=0.0)
    for w, sign, gamma, bound in ((0.9, +1, 0.1153, 1.1724), (-0.6, -1, 0.5085, 0.8276)):
        got, _ = _one_pulse(e, e.pulse.reference_point + w / 2.0, sign, seed=15, n=8)
        ref_step = sign * 0.002 * (1 - gamma * abs(w) / bound) / 2.0
        np.testing.assert_allclose(got, ref_step, rtol=REL_STEP)
