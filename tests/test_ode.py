"""ODESolver (torchdiffeq, chunked) against independent references.

References: the matrix exponential (scipy.linalg.expm) for linear flows, numpy linear solves for
fixed points, scipy.integrate.solve_ivp (RK45, rtol 1e-12) for a nonlinear flow, the analytic limit
cycle |u| = sqrt(mu) of the Hopf normal form, and an instrumented force for the evaluation count.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch
from analogeq.integrators import ExplicitEuler, Status
from analogeq.integrators import settle as _settle
from analogeq.integrators.ode import ODESolver, solver_names

# The references here bound ||F|| / ||z||: every settle is judged by that test (rate 1, atol 0).
settle = functools.partial(_settle, rate=1.0, atol=0.0)

F64 = torch.float64
CENTRE = (1.0, 2.0)


def affine(A: np.ndarray, zstar: np.ndarray):
    """F(z) = A (z - z*) on (batch, n); A (n, n), z* (n,)."""
    At, ct = torch.from_numpy(A), torch.from_numpy(zstar)

    def F(z: torch.Tensor) -> torch.Tensor:
        return (z - ct.to(z)) @ At.to(z).T

    return F


def rotor(a: float, b: float):
    """F(z) = R tanh(z - c), R = [[-a, -b], [b, -a]]: a stable focus that saturates."""
    R = torch.tensor([[-a, -b], [b, -a]], dtype=F64)
    c = torch.tensor(CENTRE, dtype=F64)
    return lambda z: torch.tanh(z - c.to(z)) @ R.to(z).T


def hopf(mu: float, omega: float):
    """F = (mu - |u|^2) u + omega J u, u = z - c: unstable focus at c, cycle |u| = sqrt(mu)."""
    c = torch.tensor(CENTRE, dtype=F64)

    def F(z: torch.Tensor) -> torch.Tensor:
        u = z - c.to(z)
        r2 = (u * u).sum(-1, keepdim=True)
        ju = torch.stack((-u[:, 1], u[:, 0]), dim=-1)
        return (mu - r2) * u + omega * ju

    return F


class Counting:
    """Wraps a force; counts calls and rows independently of the library. Optional `select`."""

    def __init__(self, force, rows: list[int] | None = None, per_sample=None):
        self.force = force
        self.rows = [] if rows is None else rows
        self.per_sample = per_sample  # (batch,) array of row counts, or None

    def __call__(self, z):
        self.rows.append(int(z.shape[0]))
        return self.force(z)


A3 = np.array([[-1.0, 2.0, 0.3], [-2.0, -1.0, 0.5], [0.2, -0.4, -0.7]])  # eigs ~ -1 +- 2i, -0.7
ZSTAR3 = np.array([1.0, -0.5, 2.0])


# ------------------------------------------------------------------------------------------------
# Accuracy of the trajectory
# ------------------------------------------------------------------------------------------------
def test_linear_state_at_chunk_end_matches_matrix_exponential():
    assert np.all(np.linalg.eigvals(A3).real < 0)
    z0 = np.array([[2.0, 1.0, -1.0], [0.5, 0.0, 3.0]])
    # 8 chunks of 0.25 end exactly at t = 2; a tol no state reaches keeps every sample running
    res = settle(affine(A3, ZSTAR3), torch.from_numpy(z0), ODESolver(chunk=0.25), tol=1e-300,
                 max_steps=8)
    assert res.status is Status.MAX_STEPS
    assert torch.equal(res.t, torch.full((2,), 2.0, dtype=F64))
    exact = ZSTAR3 + (z0 - ZSTAR3) @ scipy.linalg.expm(2.0 * A3).T
    np.testing.assert_allclose(res.z.numpy(), exact, rtol=0, atol=1e-7)
    # the trace's time axis is the chunk grid
    np.testing.assert_allclose(res.trace.time.numpy(), 0.25 * np.arange(9), atol=1e-15)


def test_fixed_step_rk4_matches_matrix_exponential():
    z0 = np.array([[2.0, 1.0, -1.0]])
    res = settle(affine(A3, ZSTAR3), torch.from_numpy(z0),
                 ODESolver("rk4", chunk=0.5, options={"step_size": 0.01}), tol=1e-300, max_steps=4)
    assert float(res.t[0]) == pytest.approx(2.0, abs=1e-14)
    exact = ZSTAR3 + (z0 - ZSTAR3) @ scipy.linalg.expm(2.0 * A3).T
    np.testing.assert_allclose(res.z.numpy(), exact, rtol=0, atol=1e-8)  # rk4: O(h^4) = 1e-8


def test_nonlinear_trajectory_matches_solve_ivp():
    rng = np.random.default_rng(4)
    W = 1.5 * rng.normal(size=(3, 3)) / math.sqrt(3)
    bias = rng.normal(size=3)

    def f_np(_t, z):
        return -z + W @ np.tanh(z) + bias

    Wt, bt = torch.from_numpy(W), torch.from_numpy(bias)

    def F(z):
        return -z + torch.tanh(z) @ Wt.T + bt

    z0 = np.array([[0.3, -1.0, 2.0], [1.5, 0.2, -0.4]])
    res = settle(F, torch.from_numpy(z0), ODESolver(chunk=0.5), tol=1e-300, max_steps=6)
    for i in range(2):
        ref = scipy.integrate.solve_ivp(f_np, (0.0, 3.0), z0[i], method="RK45", rtol=1e-12,
                                        atol=1e-14)
        assert ref.success
        np.testing.assert_allclose(res.z[i].numpy(), ref.y[:, -1], rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Settling: fixed points, the discretization artifact, the genuine cycle
# ------------------------------------------------------------------------------------------------
def test_reaches_the_analytic_fixed_point_to_tol():
    # F = A z + b, z* = -A^{-1} b; accuracy bound ||z - z*|| <= ||A^{-1}||_2 ||F(z)||
    A = A3
    b = -A @ ZSTAR3
    z0 = torch.tensor([[0.0, 0.0, 0.0], [5.0, -5.0, 1.0]], dtype=F64)
    At, bt = torch.from_numpy(A), torch.from_numpy(b)
    tol = 1e-10
    res = settle(lambda z: z @ At.T + bt, z0, "ode", tol=tol)
    assert res.status is Status.CONVERGED, res.summary()
    zstar = np.linalg.solve(A, -b)
    z = res.z.numpy()
    fn = np.linalg.norm(z @ A.T + b, axis=1)
    assert np.all(fn <= tol * np.linalg.norm(z, axis=1))
    inv_norm = np.linalg.norm(np.linalg.inv(A), 2)
    err = np.linalg.norm(z - zstar, axis=1)
    assert np.all(err <= inv_norm * fn * (1 + 1e-6) + 1e-14)
    assert np.all(err <= 1e-9)
    assert np.all(res.t.numpy() > 0)


def test_saturating_rotor_cycles_under_euler_and_settles_under_ode():
    a, b = 0.5, 5.0  # eigenvalues -a +- ib; Euler's eps_crit = 2a / (a^2 + b^2) = 0.0396 < 0.1
    F = rotor(a, b)
    z0 = torch.tensor([CENTRE], dtype=F64) + 1.0
    euler = settle(F, z0, ExplicitEuler(eps=0.1), tol=1e-8)
    assert euler.status is Status.LIMIT_CYCLE, euler.summary()
    res = settle(F, z0, ODESolver(), tol=1e-8)
    assert res.status is Status.CONVERGED, res.summary()
    # near z*, ||F|| = sqrt(a^2 + b^2) |tanh u| >= sqrt(a^2 + b^2) sech^2 |u|_inf |u|
    u = res.z[0].numpy() - np.array(CENTRE)
    assert np.linalg.norm(u) <= 1e-8 * np.linalg.norm(res.z[0].numpy()) / math.hypot(a, b) * 1.01


def test_hopf_oscillator_is_a_limit_cycle_never_converged():
    mu, omega = 0.25, 2.0  # period pi; cycle radius 0.5 around the unstable focus c
    F = hopf(mu, omega)
    c = np.array(CENTRE)
    # one start inside the cycle (near the unstable focus), one outside
    z0 = torch.from_numpy(np.stack([c + 0.01, c + 1.0]))
    res = settle(F, z0, ODESolver(), tol=1e-8, max_steps=400)
    assert res.sample_status == (Status.LIMIT_CYCLE, Status.LIMIT_CYCLE), res.summary()
    radius = np.linalg.norm(res.z.numpy() - c, axis=1)
    np.testing.assert_allclose(radius, math.sqrt(mu), rtol=1e-6)
    # the automatic chunk resolves the oscillation: >= 4 trace entries per period
    spacing = np.diff(res.trace.sample_time.numpy(), axis=0)[-100:]
    assert spacing.max() <= math.pi / 4 * (1 + 1e-9)
    for report in res.cycles:
        assert report is not None and report.is_cycle
        assert 4 <= report.period <= 32


def test_hopf_loose_tolerance_still_resolved_by_the_turn_bound():
    # at rtol 1e-4 dopri5 takes ~3 steps per period: the step bound alone would alias the cycle
    res = settle(hopf(0.25, 2.0), torch.tensor([CENTRE], dtype=F64) + 1.0,
                 ODESolver(rtol=1e-4, atol=1e-6), tol=1e-8, max_steps=300)
    assert res.status is Status.LIMIT_CYCLE, res.summary()
    assert float(res.info["step_size"][0]) * 8 > math.pi  # chunk_steps * dt would exceed a period
    assert np.diff(res.trace.time.numpy())[-100:].max() <= math.pi / 4 * (1 + 1e-9)


# ------------------------------------------------------------------------------------------------
# Counting, sub-batches, failures
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "solver",
    [
        ODESolver(),  # FSAL: the chunk's end state and F there are the last stage
        ODESolver("bosh3"),
        ODESolver("fehlberg2", rtol=1e-5, atol=1e-7),  # not FSAL: one evaluation per chunk
        ODESolver("rk4", options={"step_size": 0.05}),  # fixed step
    ],
    ids=["dopri5", "bosh3", "fehlberg2", "rk4"],
)
def test_nfe_equals_an_independent_count(solver):
    # three samples that reach tol at different chunks: exercises the sub-batch path (no select)
    z0 = torch.from_numpy(ZSTAR3 + np.array([[1e-7], [1.0], [100.0]]))
    force = Counting(affine(A3, ZSTAR3))
    res = settle(force, z0, solver, tol=1e-8)
    assert res.status is Status.CONVERGED, res.summary()
    assert res.nfe == len(force.rows)
    # without select, every evaluation is on the full batch (finished samples frozen)
    assert set(force.rows) == {3}
    assert len(set(res.steps_per_sample.tolist())) == 3  # they finished at different chunks
    assert torch.equal(res.nfe_per_sample, torch.tensor([len(force.rows[:k]) for k in
                       _finish_calls(res)]))


def _finish_calls(res) -> list[int]:
    """Evaluations each sample took part in: the trace's cumulative count at its last step."""
    return [int(res.trace.nfe[int(s)]) for s in res.steps_per_sample]


def test_failure_is_retried_per_sample_and_a_nan_force_is_diverged():
    # F = -z (z - 2)(z + 2) / 4: stable points -2 and 2; F is NaN on (1.9, 2.1), so a sample heading
    # to 2 cannot be integrated (torchdiffeq: "underflow in dt"), one heading to -2 can. The failed
    # sample met a non-finite force: DIVERGED, as explicit Euler says on the same force, with its
    # last accepted (finite) state.
    def F(z):
        f = -z * (z - 2) * (z + 2) / 4
        return torch.where((z > 1.9) & (z < 2.1), torch.full_like(z, math.nan), f)

    z0 = torch.tensor([[1.0], [-1.0]], dtype=F64)
    with pytest.warns(RuntimeWarning, match="underflow in dt"):
        res = settle(F, z0, "ode", tol=1e-10)
    assert res.sample_status == (Status.DIVERGED, Status.CONVERGED), res.summary()
    assert settle(F, z0[:1], "euler", eps=0.1).status is Status.DIVERGED
    assert torch.isfinite(res.z).all()
    assert 1.0 < float(res.z[0, 0]) <= 1.9
    assert float(res.z[1, 0]) == pytest.approx(-2.0, abs=1e-9)


def test_float32_warns_about_tolerances_and_converges():
    F = rotor(1.0, 2.0)
    z0 = torch.tensor([CENTRE], dtype=torch.float32) + 0.5
    with pytest.warns(RuntimeWarning, match="below the resolution of torch.float32"):
        res = settle(F, z0, ODESolver(), tol=1e-5)
    assert res.status is Status.CONVERGED, res.summary()
    assert res.z.dtype == torch.float32
    assert res.info["rtol"] == pytest.approx(10 * torch.finfo(torch.float32).eps)
    np.testing.assert_allclose(res.z[0].double().numpy(), CENTRE, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float64: the tolerances are used as given
        settle(F, z0.double(), ODESolver(), tol=1e-5)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def test_method_names_and_options_are_validated():
    assert "dopri5" in solver_names() and "rk4" in solver_names()
    assert "scipy_solver" not in solver_names()
    with pytest.raises(ValueError, match="unknown method 'dopri7'.*dopri5"):
        ODESolver("dopri7")
    with pytest.raises(ValueError, match="not supported"):
        ODESolver("scipy_solver")
    with pytest.raises(TypeError, match="method must be"):
        ODESolver(5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\].*max_step"):
        ODESolver(options={"bogus": 1})
    with pytest.raises(ValueError, match="step_t.*reserved"):
        ODESolver(options={"step_t": torch.tensor([1.0])})
    with pytest.raises(ValueError, match="step_size"):
        ODESolver("rk4")
    with pytest.raises(ValueError, match="step_size.*> 0"):
        ODESolver("rk4", options={"step_size": 0.0})
    with pytest.raises(ValueError, match="first_step.*> 0"):
        ODESolver(options={"first_step": -1.0})
    with pytest.raises(TypeError, match="options must be a dict"):
        ODESolver(options=[("max_step", 1.0)])


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"rtol": 0.0}, ValueError, "rtol must be a finite number > 0"),
        ({"atol": -1.0}, ValueError, "atol must be a finite number > 0"),
        ({"rtol": "1e-7"}, TypeError, "rtol must be a real number"),
        ({"chunk": 0.0}, ValueError, "chunk must be a finite number > 0"),
        ({"chunk": math.inf}, ValueError, "chunk must be a finite number > 0"),
        ({"chunk_steps": 0}, ValueError, r"chunk_steps must be in \[1, "),
        ({"chunk_steps": 2.5}, TypeError, "chunk_steps must be an integer"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ODESolver(**kwargs)
