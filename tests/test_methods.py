"""Every settle method against independent references.

Parametrized over all method names; a method whose module has not been written yet is skipped (see
conftest.require_method), so these tests start running as soon as it lands.

Accuracy bounds: at a returned state with ||F(z)|| <= tol ||z||,
* linear F(z) = A (z - z*):             ||z - z*|| <= ||A^{-1}||_2 ||F(z)||;
* contractive F (mu_2(J) <= -(1+c-L)):  ||z - z*|| <= ||F(z)|| / (1 + c - L).
Both use ||F(z)|| recomputed in float64 numpy at the returned z, and z* from numpy/scipy.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from analogeq.integrators import Status
from analogeq.integrators import settle as _settle
from systems import (
    ContractiveTanh,
    HopfOscillator,
    Recorder,
    SaturatingRotor,
    linear_force_np,
    plain,
    rotation,
    rotation_eps_crit,
    saddle,
    stiff_linear,
    to_np,
    well_conditioned,
)

# The references here bound ||F|| / ||z||: every settle is judged by that test (rate 1, atol 0).
settle = functools.partial(_settle, rate=1.0, atol=0.0)

F64 = torch.float64
ALL_METHODS = ["euler", "adaptive", "imex", "implicit", "anderson", "ode"]
TOL = 1e-8
SPLIT_METHODS = {"imex", "implicit"}
# Options every method is known to take (docs/design.md); others run on their defaults.
EULER_EPS = {"euler": 0.2, "imex": 0.3}


def options(name: str, **known) -> dict:
    """Method options for `name`: only the documented ones we rely on (eps for Euler/IMEX)."""
    out = {}
    if name in EULER_EPS:
        out["eps"] = known.get("eps", EULER_EPS[name])
    return out


def check_contract(res, z0, cls, rec=None):
    """Fields every method must fill the same way."""
    assert res.z.shape == z0.shape and res.z.dtype == z0.dtype
    assert res.residual.shape == (z0.shape[0],)
    assert len(res.sample_status) == z0.shape[0]
    assert res.nfe >= res.steps >= 1
    assert int(res.nfe_per_sample.min()) >= 1
    if cls.has_time:
        assert res.t is not None and res.t.shape == (z0.shape[0],)
        assert torch.all(res.t > 0)
    else:
        assert res.t is None
    if rec is not None:
        # every evaluation of the user's force (F, N or a JVP through it) is counted
        assert res.nfe == len(rec.log), (res.nfe, len(rec.log))
        assert int(res.nfe_per_sample.sum()) == sum(rec.log)


class LoggedSplit(Recorder):
    """Recorder that also logs evaluations of the nonlinear part."""

    def __getattr__(self, name):
        if name == "nonlinear":
            inner = self._inner.nonlinear

            def logged(z):
                self.log.append(int(z.shape[0]))
                return inner(z)

            return logged
        return super().__getattr__(name)

    def select(self, index):
        return LoggedSplit(self._inner.select(index), self.log)


# ------------------------------------------------------------------------------------------------
# Every method converges to the analytic / scipy fixed point
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_METHODS)
def test_converges_on_linear_system(name, require_method):
    cls = require_method(name)
    sys = well_conditioned(n=4, seed=11, batch=3)
    z0 = torch.full((3, 4), 0.1, dtype=F64)
    rec = LoggedSplit(sys)
    res = settle(rec, z0, name, tol=TOL, **options(name))
    assert res.status is Status.CONVERGED, res.summary()
    check_contract(res, z0, cls, rec)
    z = to_np(res.z)
    f = linear_force_np(sys)(z)
    assert np.all(np.linalg.norm(f, axis=1) <= TOL * np.linalg.norm(z, axis=1) * (1 + 1e-6))
    zstar = sys.fixed_point()
    err = np.linalg.norm(z - zstar, axis=1)
    bound = sys.inv_norm * np.linalg.norm(f, axis=1) * (1 + 1e-6) + 1e-13 * np.linalg.norm(zstar)
    assert np.all(err <= bound), (err, bound)
    assert np.all(err <= 1.01 * sys.inv_norm * TOL * np.linalg.norm(zstar, axis=1))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_converges_on_contractive_tanh(name, require_method):
    cls = require_method(name)
    sys = ContractiveTanh(c=1.0, L=1.2, n=8, seed=3, batch=2)
    z0 = torch.full((2, 8), 0.1, dtype=F64)
    rec = LoggedSplit(sys)
    res = settle(rec, z0, name, tol=TOL, **options(name))
    assert res.status is Status.CONVERGED, res.summary()
    check_contract(res, z0, cls, rec)
    z = to_np(res.z)
    fn = np.linalg.norm(sys.numpy_force(z), axis=1)
    assert np.all(fn <= TOL * np.linalg.norm(z, axis=1) * (1 + 1e-6))
    zstar = sys.fixed_point()
    err = np.linalg.norm(z - zstar, axis=1)
    assert np.all(err <= fn / sys.monotonicity * (1 + 1e-6) + 1e-13 * np.linalg.norm(zstar))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_settled_samples_stop_costing_evaluations(name, require_method):
    # sample 0 starts next to its fixed point, sample 1 far away: once sample 0 has settled, the
    # force (which can select) is evaluated on sample 1 alone
    require_method(name)
    sys = ContractiveTanh(c=1.0, L=1.0, n=6, seed=2, batch=2)
    zstar = sys.fixed_point()
    z0 = torch.from_numpy(np.stack([zstar[0] * (1 + 1e-6), zstar[1] + 1.0]))
    rec = LoggedSplit(sys)
    res = settle(rec, z0, name, tol=1e-10, **options(name))
    assert res.status is Status.CONVERGED, res.summary()
    nfe = to_np(res.nfe_per_sample)
    assert nfe[0] < nfe[1]
    log = np.array(rec.log)
    assert log.sum() == nfe.sum()  # rows the force received = per-sample counts
    assert np.count_nonzero(log == 1) >= nfe[1] - nfe[0]
    err = np.linalg.norm(to_np(res.z) - zstar, axis=1)
    fn = np.linalg.norm(sys.numpy_force(to_np(res.z)), axis=1)
    assert np.all(err <= fn / sys.monotonicity * (1 + 1e-6) + 1e-13)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_plain_callable_force(name, require_method):
    # no select (and no split for the split-free methods): sub-batches go through the embed path
    require_method(name)
    sys = well_conditioned(n=4, seed=12, batch=3)
    z0 = torch.full((3, 4), 0.1, dtype=F64)
    force = plain(sys) if name not in SPLIT_METHODS else _NoSelectSplit(sys)
    res = settle(force, z0, name, tol=TOL, **options(name))
    assert res.status is Status.CONVERGED, res.summary()
    zstar = sys.fixed_point()
    err = np.linalg.norm(to_np(res.z) - zstar, axis=1)
    assert np.all(err <= 1.01 * sys.inv_norm * TOL * np.linalg.norm(zstar, axis=1))


class _NoSelectSplit:
    def __init__(self, sys):
        self._sys = sys
        self.leak = sys.leak

    def __call__(self, z):
        return self._sys(z)

    def nonlinear(self, z):
        return self._sys.nonlinear(z)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_float32(name, require_method):
    require_method(name)
    sys = ContractiveTanh(c=1.0, L=0.8, n=6, seed=5, batch=2)
    z0 = torch.full((2, 6), 0.1, dtype=torch.float32)
    res = settle(sys, z0, name, tol=1e-5, **options(name))
    assert res.status is Status.CONVERGED, res.summary()
    assert res.z.dtype == torch.float32
    zstar = sys.fixed_point()
    err = np.linalg.norm(to_np(res.z).astype(np.float64) - zstar, axis=1)
    # ||z - z*|| <= tol ||z|| / (1 + c - L); a factor 2 on tol and 1e-6 absolute for the float32
    # rounding of F itself (about 1e-7 ||z||)
    assert np.all(err <= 2e-5 * np.linalg.norm(zstar, axis=1) / sys.monotonicity + 1e-6)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_expanded_initial_state(name, require_method):
    # z0 = one start broadcast over the batch (a stride-0 view) is a valid state
    require_method(name)
    sys = well_conditioned(n=4, seed=15, batch=3)
    z0 = torch.full((1, 4), 0.1, dtype=F64).expand(3, 4)
    res = settle(sys, z0, name, tol=TOL, **options(name))
    assert res.status is Status.CONVERGED, res.summary()
    zstar = sys.fixed_point()
    err = np.linalg.norm(to_np(res.z) - zstar, axis=1)
    assert np.all(err <= 1.01 * sys.inv_norm * TOL * np.linalg.norm(zstar, axis=1))


@pytest.mark.parametrize("name", sorted(SPLIT_METHODS))
@pytest.mark.parametrize("eps", [0.5, 5.0])
def test_split_methods_are_unconditionally_stable_on_a_stiff_leak(name, eps, require_method):
    # eigenvalues -1 .. -1000: explicit Euler needs eps < 0.002; IMEX/implicit do not
    require_method(name)
    sys = stiff_linear(n=6, seed=1, batch=2)
    assert sys.eps_crit == pytest.approx(2e-3, rel=1e-9)
    z0 = torch.full((2, 6), 0.1, dtype=F64)
    res = settle(sys, z0, name, eps=eps, tol=TOL)
    assert res.status is Status.CONVERGED, res.summary()
    z = to_np(res.z)
    f = linear_force_np(sys)(z)
    err = np.linalg.norm(z - sys.fixed_point(), axis=1)
    assert np.all(err <= sys.inv_norm * np.linalg.norm(f, axis=1) * (1 + 1e-6) + 1e-12)


def test_euler_on_the_stiff_leak_diverges():
    sys = stiff_linear(n=6, seed=1, batch=2)
    z0 = torch.full((2, 6), 0.1, dtype=F64)
    res = settle(sys, z0, "euler", eps=0.1, tol=TOL, max_steps=200)
    assert res.status is Status.DIVERGED


# ------------------------------------------------------------------------------------------------
# Euler's stability boundary (docs/physics.md section 3)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [(1.0, 1.0), (1.0, 2.0)])
def test_euler_eps_crit_of_a_rotation_within_two_percent(a, b):
    sys = rotation(a, b, centre=(1.0, 2.0))
    eps_crit = rotation_eps_crit(a, b)
    assert sys.eps_crit == pytest.approx(eps_crit, rel=1e-12)  # numpy eigenvalues agree
    z0 = torch.tensor([[1.5, 1.7]], dtype=F64)
    below = settle(sys, z0, "euler", eps=0.98 * eps_crit, tol=1e-6, max_steps=4000)
    assert below.status is Status.CONVERGED
    np.testing.assert_allclose(to_np(below.z[0]), sys.centre, atol=1e-5)
    above = settle(sys, z0, "euler", eps=1.02 * eps_crit, tol=1e-6, max_steps=4000)
    assert above.status is Status.DIVERGED  # linear: the unstable spiral grows without bound
    assert not above.converged


def test_saturating_rotor_euler_cycles_past_eps_crit():
    rotor = SaturatingRotor(a=1.0, b=2.0, centre=(1.0, 2.0, -1.0, 0.5))
    z0 = torch.tensor([[1.1, 2.05, -0.9, 0.4]], dtype=F64)
    res = settle(rotor, z0, "euler", eps=1.05 * rotor.eps_crit, tol=1e-8, max_steps=2000)
    assert res.status is Status.LIMIT_CYCLE
    below = settle(rotor, z0, "euler", eps=0.95 * rotor.eps_crit, tol=1e-8, max_steps=2000)
    assert below.status is Status.CONVERGED


def test_saturating_rotor_ode_settles(require_method):
    # the same rotor Euler cycles on: the continuous dynamics settle (Re mu = -a < 0)
    require_method("ode")
    rotor = SaturatingRotor(a=1.0, b=2.0, centre=(1.0, 2.0, -1.0, 0.5))
    z0 = torch.tensor([[1.6, 2.05, -0.9, 0.4]], dtype=F64)
    res = settle(rotor, z0, "ode", tol=TOL)
    assert res.status is Status.CONVERGED, res.summary()
    z = to_np(res.z[0])
    # near z*, ||F(z)|| >= sigma_min(R) min sech^2(u) ||u|| with sigma_min(R) = sqrt(a^2 + b^2)
    fn = np.linalg.norm(rotor.numpy_force(z))
    u = z - rotor.centre_np
    assert np.linalg.norm(u) <= fn / (np.sqrt(5.0) * np.min(1 / np.cosh(u) ** 2)) * (1 + 1e-6)
    assert np.linalg.norm(u) <= 1e-6


@pytest.mark.parametrize("centre", [(3.0, 0.0), (1.0, -2.0, 0.5, 2.0)])
def test_hopf_is_never_converged_by_ode(centre, require_method):
    require_method("ode")
    hopf = HopfOscillator(mu=1.0, omega=2.0, centre=centre)
    c = np.asarray(centre)
    z0 = torch.from_numpy(c + 0.05).unsqueeze(0)
    res = settle(hopf, z0, "ode", tol=TOL, max_steps=300)
    assert res.status is not Status.CONVERGED, res.summary()
    assert res.status is Status.LIMIT_CYCLE, res.summary()
    assert float(res.residual.min()) > 1e3 * TOL
    # the continuous flow leaves the unstable focus for the limit cycle |u| = sqrt(mu) of every pair
    u = (to_np(res.z[0]) - c).reshape(-1, 2)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), np.sqrt(hopf.mu), rtol=1e-4)
    # ... where it turns at angular speed omega: the residual's period in time is 2 pi / omega
    assert res.cycles[0].is_cycle


@pytest.mark.parametrize("name", ["euler", "imex", "ode", "adaptive"])
def test_saddle_never_converges_for_dynamics_following_methods(name, require_method):
    # a real unstable eigenvalue: no stable fixed point, the dynamics run away monotonically
    require_method(name)
    sys = saddle()
    z0 = torch.tensor([[1.01, 1.5]], dtype=F64)
    res = settle(sys, z0, name, tol=TOL, max_steps=3000, **options(name, eps=0.1))
    assert res.status is not Status.CONVERGED, res.summary()
    assert res.status is not Status.LIMIT_CYCLE, res.summary()  # a saddle never cycles
    assert torch.isfinite(res.z).all()


# ------------------------------------------------------------------------------------------------
# Euler-Maruyama with zero noise is Euler
# ------------------------------------------------------------------------------------------------
def test_euler_maruyama_without_noise_converges_like_euler(require_method):
    require_method("euler-maruyama")
    sys = well_conditioned(n=4, seed=13, batch=2)
    z0 = torch.full((2, 4), 0.1, dtype=F64)
    euler = settle(sys, z0, "euler", eps=0.2, tol=TOL)
    em = settle(sys, z0, "euler-maruyama", eps=0.2, sigma=0.0, tol=TOL)
    assert euler.status is Status.CONVERGED
    assert em.status is Status.CONVERGED, em.summary()
    zstar = sys.fixed_point()
    err = np.linalg.norm(to_np(em.z) - zstar, axis=1)
    assert np.all(err <= 1.01 * sys.inv_norm * TOL * np.linalg.norm(zstar, axis=1))
    assert abs(em.steps - euler.steps) <= 1
    np.testing.assert_allclose(to_np(em.t), to_np(euler.t), rtol=0.05)


def test_euler_maruyama_seeded_repeat_is_bit_for_bit(require_method):
    # docs/design.md: every random effect takes a seed; a seeded run repeats bit-for-bit on CPU
    require_method("euler-maruyama")
    sys = well_conditioned(n=4, seed=14, batch=2)
    z0 = torch.full((2, 4), 0.1, dtype=F64)
    runs = [settle(sys, z0, "euler-maruyama", eps=0.05, sigma=0.05, seed=s, tol=TOL,
                   max_steps=200) for s in (3, 3, 4)]
    a, b, c = runs
    assert torch.equal(a.z, b.z)
    assert torch.equal(a.trace.sample_residual, b.trace.sample_residual)
    assert a.sample_status == b.sample_status and a.nfe == b.nfe
    assert not torch.equal(a.z, c.z)  # the noise is really there, and the seed selects it
    # with noise the state still hovers around z*: sigma^2 / (2 |Re mu|) per coordinate at most
    zstar = sys.fixed_point()
    assert np.all(np.abs(to_np(a.z) - zstar) < 10 * 0.05 / np.sqrt(2 * 1.0) + 1e-3)
