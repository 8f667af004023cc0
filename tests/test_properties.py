"""Property tests on contractive networks F(z) = -(1 + c) z + W tanh(z) + b, ||W||_2 = L < 1 + c.

Theory (docs/physics.md section 5): the fixed point z* is unique; Euler's map contracts with factor
q(eps) = |1 - eps(1 + c)| + eps L for eps < 2 / (1 + c + L); ||z - z*|| <= ||F(z)|| / (1 + c - L).
z* comes from scipy (systems.ContractiveTanh.fixed_point), Euler iterates from a manual numpy loop.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from analogeq.integrators import Status
from analogeq.integrators import settle as _settle
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from systems import ContractiveTanh, euler_iterates_np, method_class, to_np

# The references here bound ||F|| / ||z||: settles are judged by that test (rate 1, atol 0).
settle = functools.partial(_settle, rate=1.0, atol=0.0)

F64 = torch.float64
METHODS = ["euler", "imex", "anderson", "implicit", "ode", "adaptive"]

networks = st.fixed_dictionaries(
    {
        "c": st.floats(0.2, 2.0),
        "frac": st.floats(0.0, 0.9),  # L as a fraction of 1 + c
        "n": st.integers(2, 24),
        "batch": st.integers(1, 4),
        "seed": st.integers(0, 2**31 - 1),
    }
)
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def make(p: dict) -> ContractiveTanh:
    return ContractiveTanh(c=p["c"], L=p["frac"] * (1 + p["c"]), n=p["n"], seed=p["seed"],
                           batch=p["batch"])


def start(sys: ContractiveTanh, zstar: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return zstar + rng.normal(size=zstar.shape)


@PROPERTY
@given(p=networks, eps_frac=st.floats(0.05, 0.95), k=st.integers(1, 40))
@example(p={"c": 1.0, "frac": 0.0, "n": 2, "batch": 1, "seed": 0}, eps_frac=0.5, k=10)  # exact hit
def test_euler_contracts_at_the_predicted_rate(p, eps_frac, k):
    sys = make(p)
    eps = eps_frac * sys.eps_max
    q = sys.q(eps)
    assert q < 1
    zstar = sys.fixed_point()
    z0 = start(sys, zstar, p["seed"])
    scale = 1e-12 * (1 + np.linalg.norm(zstar, axis=-1))  # rounding of z* and of the iterates

    # the theory, on a manual Euler loop: ||z_j - z*|| <= q^j ||z_0 - z*|| at every step
    iterates = euler_iterates_np(sys.numpy_force, z0, eps, k)  # (k + 1, batch, n)
    dist = np.linalg.norm(iterates - zstar, axis=-1)  # (k + 1, batch)
    powers = q ** np.arange(k + 1)[:, None]
    assert np.all(dist <= powers * dist[0] * (1 + 1e-9) + scale)

    # the library after k steps is that iterate. tol is so small that only an exact hit of z*
    # (F(z) = 0, e.g. W = 0 and eps (1 + c) = 1) stops a sample earlier, as CONVERGED.
    res = settle(sys, torch.from_numpy(z0), "euler", eps=eps, tol=1e-300, max_steps=k)
    steps = to_np(res.steps_per_sample)
    for i, s in enumerate(steps):
        assert s == k or res.sample_status[i] is Status.CONVERGED
        np.testing.assert_allclose(to_np(res.z[i]), iterates[s, i], rtol=1e-9, atol=1e-11)
        d = np.linalg.norm(to_np(res.z[i]) - zstar[i])
        assert d <= q**s * dist[0, i] * (1 + 1e-9) + scale[i]
    np.testing.assert_allclose(to_np(res.t), steps * eps, rtol=1e-12)


@PROPERTY
@given(p=networks)
def test_every_method_reaches_the_unique_fixed_point(p):
    sys = make(p)
    zstar = sys.fixed_point()
    z0 = torch.from_numpy(start(sys, zstar, p["seed"]))
    tol = 1e-8
    ran = []
    for name in METHODS:
        if method_class(name) is None:
            continue  # module not written yet
        opts = {}
        if name == "euler":
            opts["eps"] = 1.0 / (sys.leak + sys.L)  # q = 2L / (1 + c + L) <= 0.95
        elif name == "imex":
            opts["eps"] = 2.0  # IMEX map factor (1 + eps L) / (1 + eps (1 + c)) < 1 for any eps
        res = settle(sys, z0, name, tol=tol, **opts)
        assert res.status is Status.CONVERGED, (name, res.summary())
        z = to_np(res.z)
        fn = np.linalg.norm(sys.numpy_force(z), axis=-1)
        assert np.all(fn <= tol * np.linalg.norm(z, axis=-1) * (1 + 1e-6)), name
        err = np.linalg.norm(z - zstar, axis=-1)
        bound = fn / sys.monotonicity * (1 + 1e-6) + 1e-12 * (1 + np.linalg.norm(zstar, axis=-1))
        assert np.all(err <= bound), (name, err, bound)
        ran.append(name)
    assert "euler" in ran and "imex" in ran


@PROPERTY
@given(p=networks)
def test_fixed_point_reference_is_a_root_with_the_predicted_spectrum(p):
    # the reference itself: F(z*) = 0, and every Jacobian eigenvalue has Re mu <= -(1 + c - L)
    sys = make(p)
    zstar = sys.fixed_point()
    f = sys.numpy_force(zstar)
    assert np.all(np.linalg.norm(f, axis=-1) <= 1e-12 * (1 + np.linalg.norm(sys.b_np, axis=-1)))
    for z in zstar:
        eig = np.linalg.eigvals(sys.jacobian(z))
        assert np.all(eig.real <= -sys.monotonicity + 1e-9)
