"""EulerMaruyama against independent references.

References: ExplicitEuler's trajectory (sigma = 0 must reproduce it bit for bit), the analytic
stationary law of the Euler-Maruyama Ornstein-Uhlenbeck chain
u <- (1 - a eps) u + sqrt(eps) sigma xi (Gaussian with variance sigma^2 / (a (2 - a eps)) per
coordinate, so ||u|| has a chi mean), computed here from the formula, and the Hopf normal form's
deterministic cycle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from analogeq.integrators import ExplicitEuler, Status, settle
from analogeq.integrators.maruyama import EulerMaruyama, ou_noise_floor, ou_stationary_variance

F64 = torch.float64
CENTRE = torch.tensor([1.0, 2.0], dtype=F64)


def ou(a: float, centre: torch.Tensor = CENTRE):
    """F(z) = -a (z - z*) (broadcast over a batch)."""
    return lambda z: -a * (z - centre.to(z))


def rotor(a: float, b: float):
    R = torch.tensor([[-a, -b], [b, -a]], dtype=F64)
    return lambda z: torch.tanh(z - CENTRE.to(z)) @ R.to(z).T


def hopf(mu: float, omega: float):
    def F(z):
        u = z - CENTRE.to(z)
        r2 = (u * u).sum(-1, keepdim=True)
        return (mu - r2) * u + omega * torch.stack((-u[:, 1], u[:, 0]), dim=-1)

    return F


def chi_mean(n: int) -> float:
    """E||xi|| for xi ~ N(0, I_n)."""
    return math.sqrt(2.0) * math.gamma((n + 1) / 2) / math.gamma(n / 2)


# ------------------------------------------------------------------------------------------------
# sigma = 0 is explicit Euler
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a,b,eps,expected",
    [(1.0, 2.0, 0.2, Status.CONVERGED),  # eps_crit = 2a / (a^2 + b^2) = 0.4
     (0.5, 5.0, 0.1, Status.LIMIT_CYCLE)],  # eps_crit = 0.0396: Euler's discretization cycle
)
def test_zero_noise_is_explicit_euler_bit_for_bit(a, b, eps, expected):
    F = rotor(a, b)
    z0 = CENTRE + torch.tensor([[0.3, -0.2], [1.0, 1.0], [-2.0, 0.5]], dtype=F64)
    euler = settle(F, z0, ExplicitEuler(eps=eps), tol=1e-9)
    em = settle(F, z0, EulerMaruyama(eps=eps, sigma=0.0), tol=1e-9, max_steps=euler.steps)
    assert torch.equal(em.z, euler.z)
    assert torch.equal(em.t, euler.t)
    assert torch.equal(em.trace.sample_residual, euler.trace.sample_residual)
    assert em.sample_status == euler.sample_status
    assert torch.equal(em.steps_per_sample, euler.steps_per_sample)
    assert em.nfe == euler.nfe
    assert em.status is expected, em.summary()
    if expected is Status.CONVERGED:  # the samples left the batch at different steps
        assert len(set(em.steps_per_sample.tolist())) > 1
    assert not bool(em.info["noise_settled"].any())


def test_per_sample_sigma_row_of_zeros_follows_euler_exactly():
    # row 0 has no noise: it must be Euler's trajectory although row 1 is noisy and runs longer
    F = ou(1.0)
    z0 = (CENTRE + 0.5).expand(2, 2).clone()
    sigma = torch.tensor([[0.0, 0.0], [0.1, 0.1]], dtype=F64)
    em = settle(F, z0, EulerMaruyama(eps=0.05, sigma=sigma, seed=0, window=100), tol=1e-9)
    euler = settle(F, z0[:1], ExplicitEuler(eps=0.05), tol=1e-9)
    assert torch.equal(em.z[0], euler.z[0])
    assert int(em.steps_per_sample[0]) == euler.steps
    assert em.sample_status == (Status.CONVERGED, Status.CONVERGED)
    assert em.info["noise_settled"].tolist() == [False, True]


# ------------------------------------------------------------------------------------------------
# Randomness: seeded and repeatable, never the global RNG
# ------------------------------------------------------------------------------------------------
def test_seeded_runs_repeat_bit_for_bit_and_seeds_differ():
    F = ou(1.0)
    z0 = (CENTRE + 0.5).expand(4, 2).clone()

    def run(**kw):
        return settle(F, z0, EulerMaruyama(eps=0.05, sigma=0.1, window=100, **kw), tol=1e-9,
                      max_steps=400)

    global_state = torch.get_rng_state()
    first, again, other = run(seed=7), run(seed=7), run(seed=8)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is untouched
    assert torch.equal(first.z, again.z)
    assert torch.equal(first.trace.sample_residual, again.trace.sample_residual)
    assert not torch.equal(first.z, other.z)
    # a caller's generator: same seed, same run; an unseeded run reports its seed and replays
    gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(run(generator=gen[0]).z, run(generator=gen[1]).z)
    free = run()
    assert isinstance(free.info["seed"], int)
    assert torch.equal(run(seed=free.info["seed"]).z, free.z)


def test_one_instance_runs_nested_settles_without_sharing_their_streams():
    # Per-run state lives in the run's StepState: a settle started with the same instance inside
    # a force call of another (re-entrant use) must leave the outer run bit-for-bit unchanged, and
    # the inner run must be the same as a run of its own.
    F = ou(1.0)
    z0 = (CENTRE + 0.5).expand(4, 2).clone()
    z0_inner = (CENTRE - 0.3).expand(3, 2).clone()
    em = EulerMaruyama(eps=0.05, sigma=0.1, seed=7, window=100)
    inner, calls = [], []

    def nesting(z):
        calls.append(z.shape[0])
        if len(calls) == 3:  # during the outer run's second step, after its init
            inner.append(settle(F, z0_inner, em, tol=1e-9, max_steps=60))
        return F(z)

    nested = settle(nesting, z0, em, tol=1e-9, max_steps=200)
    alone = settle(F, z0, EulerMaruyama(eps=0.05, sigma=0.1, seed=7, window=100), tol=1e-9,
                   max_steps=200)
    assert len(inner) == 1 and inner[0].steps == 60
    assert torch.equal(nested.z, alone.z)
    assert torch.equal(nested.trace.sample_residual, alone.trace.sample_residual)
    assert nested.info["seed"] == alone.info["seed"] == 7
    inner_alone = settle(F, z0_inner, EulerMaruyama(eps=0.05, sigma=0.1, seed=7, window=100),
                         tol=1e-9, max_steps=60)
    assert torch.equal(inner[0].z, inner_alone.z)


# ------------------------------------------------------------------------------------------------
# Ornstein-Uhlenbeck: stationary law and the noise floor
# ------------------------------------------------------------------------------------------------
def test_ou_stationary_variance_matches_the_euler_maruyama_law():
    # 2000 samples x 16 coordinates = 32000 draws: the variance's relative standard error is
    # sqrt(2 / 32000) = 0.8 %; the discretization correction 1 / (1 - a eps / 2) is 11 % here
    a, sigma, eps = 1.0, 0.2, 0.2
    n, batch, steps = 16, 2000, 120  # (1 - a eps)^(2 * 120) = 6e-24: the start is forgotten
    centre = torch.linspace(-1.0, 2.0, n, dtype=F64)
    z0 = (centre + 0.5).expand(batch, n).clone()
    res = settle(ou(a, centre), z0, EulerMaruyama(eps=eps, sigma=sigma, seed=11, window=10**6),
                 tol=1e-300, max_steps=steps)
    u = (res.z - centre).numpy()
    exact = sigma**2 / (a * (2.0 - a * eps))
    continuous = sigma**2 / (2.0 * a)
    assert abs(u.mean()) < 4 * math.sqrt(exact / u.size)
    assert u.var() == pytest.approx(exact, rel=0.03)
    assert abs(u.var() / continuous - 1) > 0.06  # the correction is resolved, not just allowed
    assert ou_stationary_variance(a, sigma, eps) == pytest.approx(exact, rel=1e-14)
    assert ou_stationary_variance(a, sigma) == pytest.approx(continuous, rel=1e-14)


def test_ou_run_settles_on_its_noise_floor():
    a, sigma, eps, batch = 1.0, 0.1, 0.05, 128
    z0 = (CENTRE + 1.0).expand(batch, 2).clone()
    tol = 1e-8
    res = settle(ou(a), z0, EulerMaruyama(eps=eps, sigma=sigma, seed=5, window=100), tol=tol)
    assert res.status is Status.CONVERGED, res.summary()
    assert Status.LIMIT_CYCLE not in res.sample_status
    assert bool(res.info["noise_settled"].all())
    assert float(res.residual.min()) > 100 * tol  # the floor rule ended the run, not tol
    # analytic floor: a sqrt(v) chi_2 / ||z*|| (first order in sqrt(v) / ||z*|| = 0.03)
    v = sigma**2 / (a * (2.0 - a * eps))
    predicted = a * math.sqrt(v) * chi_mean(2) / float(CENTRE.norm())
    floor = res.info["noise_floor"].numpy()
    assert np.all(np.isfinite(floor))
    # per-sample floors scatter ~17 %: the batch mean has a standard error of ~1.5 %
    assert floor.mean() == pytest.approx(predicted, rel=0.06)
    assert ou_noise_floor(a, sigma, float(CENTRE.norm()), 2, eps) == pytest.approx(predicted,
                                                                                   rel=1e-12)
    # drift/noise power ratio of the stationary chain: a eps / (2 - a eps)
    ratio = res.info["drift_noise_ratio"].numpy()
    assert ratio.mean() == pytest.approx(a * eps / (2 - a * eps), rel=0.1)
    # it settled within a few windows of the transient (relaxation e^{-t}, 5 time units a window)
    assert int(res.steps_per_sample.max()) <= 10 * 100


def test_multiplicative_noise_vanishing_at_the_fixed_point_converges_on_tol():
    # sigma(z) = s (z - z*): geometric Brownian motion around z*, which contracts when a > s^2 / 2
    def noise(z, t):
        assert t.shape == (z.shape[0],)
        return 0.3 * (z - CENTRE.to(z))

    z0 = (CENTRE + 1.0).expand(3, 2).clone()
    res = settle(ou(1.0), z0, EulerMaruyama(eps=0.05, sigma=noise, seed=2), tol=1e-9)
    assert res.status is Status.CONVERGED, res.summary()
    assert not bool(res.info["noise_settled"].any())  # converged on tol, not on a floor
    np.testing.assert_allclose(res.z.numpy(), CENTRE.expand(3, 2).numpy(), atol=1e-8)


def test_noisy_limit_cycle_is_not_reported_converged():
    # Hopf cycle |u| = 0.5 at angular speed 2: drift/noise ratio eps w^2 r^2 / (sigma^2 n) = 12.5
    z0 = (CENTRE + 0.3).expand(8, 2).clone()
    res = settle(hopf(0.25, 2.0), z0, EulerMaruyama(eps=0.01, sigma=0.02, seed=4, window=200),
                 tol=1e-8, max_steps=3000)
    assert Status.CONVERGED not in res.sample_status, res.summary()
    assert res.status is Status.LIMIT_CYCLE, res.summary()
    assert not bool(res.info["noise_settled"].any())
    assert float(res.info["drift_noise_ratio"].min()) > 5.0
    radius = (res.z - CENTRE).norm(dim=1).numpy()
    np.testing.assert_allclose(radius, 0.5, atol=0.1)  # still on the cycle


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
        ({"sigma": -0.1}, ValueError, "sigma must be a finite number >= 0"),
        ({"sigma": math.nan}, ValueError, "sigma must be a finite number >= 0"),
        ({"sigma": "0.1"}, TypeError, "sigma must be a real number"),
        ({"sigma": True}, TypeError, "sigma must be a real number"),
        ({"sigma": torch.tensor([0.1, -0.1])}, ValueError, "sigma must be finite and >= 0"),
        ({"sigma": torch.tensor([1, 2])}, TypeError, "sigma must be a real floating tensor"),
        ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
        ({"seed": -1}, ValueError, "seed must be in"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"seed": 1, "generator": torch.Generator()}, ValueError, "either generator or seed"),
        ({"window": 10}, ValueError, r"window must be in \[20, "),
        ({"rel_change": 0.0}, ValueError, r"rel_change must be in \(0, 1\]"),
        ({"rel_change": 2.0}, ValueError, r"rel_change must be in \[0.0, 1.0\]"),
        ({"max_drift_ratio": 0.0}, ValueError, "max_drift_ratio must be a finite number > 0"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        EulerMaruyama(**kwargs)


def test_bad_sigma_shapes_fail_at_settle():
    z0 = (CENTRE + 1.0).expand(2, 2).clone()
    with pytest.raises(ValueError, match=r"sigma of shape \(3,\) does not broadcast"):
        settle(ou(1.0), z0, EulerMaruyama(sigma=torch.ones(3, dtype=F64)), max_steps=5)
    with pytest.raises(ValueError, match=r"sigma\(z, t\) returned shape \(5,\)"):
        settle(ou(1.0), z0, EulerMaruyama(sigma=lambda z, t: torch.ones(5, dtype=F64)),
               max_steps=5)
    with pytest.raises(TypeError, match="needs a real state"):
        settle(ou(1.0), z0.to(torch.complex128), EulerMaruyama(sigma=0.1), max_steps=5)
