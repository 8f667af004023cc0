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
from analogeq.circuits import DeviceArray, DeviceModel, ProgrammingNoise, PulseResponse, pcm, rram

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
    m = dataclasses.replace(pcm(), programming=dataclasses.replace(pcm().programming,
                                                                   clip="device"))
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
