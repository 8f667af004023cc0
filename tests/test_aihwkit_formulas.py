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

import math

import numpy as np
import torch
from analogeq.circuits import DeviceModel, PulseResponse

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
