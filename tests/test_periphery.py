"""DAC, ADC and amplifier: clipping, level scheme, rounding bias, noise, validation."""

from __future__ import annotations

import math

import pytest
import torch
from analogeq.circuits.periphery import ADC, DAC, Amplifier

Z = 5.0
F64 = torch.float64


def _reference_levels(bits: int, bound: float) -> torch.Tensor:
    """The documented scheme: max(2^bits - 1, 2) uniform levels spanning [-bound, bound]."""
    n = max(2**bits - 1, 2)
    return torch.linspace(-bound, bound, n, dtype=F64)


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_dac_levels_are_symmetric_and_counted(bits):
    dac = DAC(bits, bound=1.5)
    ref = _reference_levels(bits, 1.5)
    assert dac.n_levels == ref.numel()
    assert torch.allclose(dac.levels(dtype=F64), ref, atol=1e-12)
    if bits >= 2:
        assert float(dac.levels(dtype=F64)[dac.n_levels // 2]) == 0.0  # zero is a level, exactly
    x = torch.linspace(-3.0, 3.0, 20001, dtype=F64)
    q = dac(x)
    assert torch.isin(q, dac.levels(dtype=F64)).all()  # only levels come out


@pytest.mark.parametrize("bits", [1, 4, 7])
def test_dac_nearest_clips_and_errs_at_most_half_a_level(bits):
    bound = 0.8
    dac = DAC(bits, bound=bound)
    step = 2 * bound / (max(2**bits - 1, 2) - 1)
    x = torch.linspace(-2.0, 2.0, 40001, dtype=F64)
    q = dac(x)
    inside = x.abs() <= bound
    assert (q[inside] - x[inside]).abs().max() <= step / 2 + 1e-12
    assert torch.all(q[x > bound] == bound) and torch.all(q[x < -bound] == -bound)
    assert q.abs().max() <= bound + 1e-12


def test_stochastic_rounding_is_unbiased():
    bits, bound, n = 3, 1.0, 200_000
    step = 2 * bound / (2**bits - 2)
    dac = DAC(bits, bound=bound, rounding="stochastic", seed=0)
    for x0 in (0.123, -0.77, 0.5 * step, 0.999):
        x = torch.full((n,), x0, dtype=F64)
        q = dac(x)
        lo = math.floor(x0 / step) * step
        neighbours = torch.tensor([lo, lo + step], dtype=F64)
        assert (torch.cdist(q[:, None], neighbours[:, None]).min(1).values < 1e-12).all()
        p = (x0 - lo) / step  # probability of rounding up
        se = step * math.sqrt(p * (1 - p) / n)
        assert abs(float(q.mean()) - x0) < Z * se + 1e-12
    # nearest rounding of the same point is biased (checks that the test can fail)
    near = DAC(bits, bound=bound)(torch.full((10,), 0.123, dtype=F64))
    assert abs(float(near.mean()) - 0.123) > 0.05


def test_stochastic_rounding_is_seeded():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = DAC(4, 1.0, "stochastic", seed=7)(x)
    b = DAC(4, 1.0, "stochastic", seed=7)(x)
    c = DAC(4, 1.0, "stochastic", seed=8)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_adc_saturates_and_quantizes():
    adc = ADC(6, bound=4.0)
    step = 8.0 / (2**6 - 2)
    y = torch.linspace(-10, 10, 10001, dtype=F64)
    q = adc(y)
    assert q.max() == pytest.approx(4.0) and q.min() == pytest.approx(-4.0)
    inside = y.abs() <= 4.0
    assert (q[inside] - y[inside]).abs().max() <= step / 2 + 1e-12
    assert torch.isin(q, adc.levels(dtype=F64)).all()


def test_quantizer_gradient_is_straight_through_inside_the_range():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.41, 2.0], requires_grad=True)
    DAC(4, 1.0)(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_amplifier_gain_offset_saturation_and_noise():
    amp = Amplifier(gain_error=0.05, offset=-0.1, saturation=2.0)
    x = torch.tensor([-5.0, 0.0, 1.0, 5.0], dtype=F64)
    assert torch.allclose(amp(x), torch.tensor([-2.0, -0.1, 0.95, 2.0], dtype=F64))
    n, s = 100_000, 0.3
    noisy = Amplifier(noise_std=s, seed=0)
    y = noisy(torch.zeros(n, dtype=F64))
    assert abs(float(y.mean())) < Z * s / math.sqrt(n)
    assert abs(float(y.std()) - s) < Z * s / math.sqrt(2 * (n - 1))
    assert torch.equal(Amplifier(noise_std=s, seed=3)(x), Amplifier(noise_std=s, seed=3)(x))


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: DAC(0, 1.0), ValueError, r"bits must be in \[1, 24\]"),
        (lambda: DAC(25, 1.0), ValueError, r"bits must be in \[1, 24\]"),
        (lambda: DAC(2.5, 1.0), TypeError, "bits must be an int"),
        (lambda: DAC(True, 1.0), TypeError, "bits must be an int"),
        (lambda: DAC(4, 0.0), ValueError, "bound must be finite and > 0"),
        (lambda: ADC(4, -1.0), ValueError, "bound must be finite and > 0"),
        (lambda: ADC(4, float("inf")), ValueError, "bound must be finite and > 0"),
        (lambda: DAC(4, 1.0, rounding="up"), ValueError, "rounding must be one of"),
        (lambda: Amplifier(gain_error=-1.0), ValueError, "gain_error must be > -1"),
        (lambda: Amplifier(noise_std=-0.1), ValueError, "noise_std must be finite and >= 0"),
        (lambda: Amplifier(saturation=0.0), ValueError, "saturation must be finite and > 0"),
    ],
)
def test_bad_periphery_config_raises(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_quantizer_rejects_integer_and_complex_inputs():
    with pytest.raises(TypeError, match="real floating"):
        DAC(4, 1.0)(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="real floating"):
        ADC(4, 1.0)(torch.tensor([1 + 1j]))
