"""AdaptiveEuler with the Overshoot and PI controllers, against independent references.

References: analytic fixed points z* of linear forces F(z) = A (z - z*) and the bound
||z - z*|| <= ||A^{-1}||_2 ||F(z)|| (numpy, float64); Euler's critical step from numpy eigenvalues,
eps_crit = min over eigenvalues mu of -2 Re(mu) / |mu|^2; the PI controller's stationary step on a
scalar mode (closed form); force evaluations counted by a recorder wrapped around the force, apart
from the library's counters. All systems are local to this file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from analogeq.integrators import ExplicitEuler, Status
from analogeq.integrators import settle as _settle
from analogeq.integrators.adaptive import AdaptiveEuler
from analogeq.integrators.controllers import (
    PI,
    PRESETS,
    Controller,
    Decision,
    Overshoot,
    Trial,
)
from torch import Tensor

F64 = torch.float64
TOL = 1e-8
# Every settle here is judged by the force residual ||F|| / ||z|| <= tol (rate 1, atol 0), the bound
# the references below are written for.
settle = functools.partial(_settle, rate=1.0, atol=0.0)


# ------------------------------------------------------------------------------------------------
# Local test systems
# ------------------------------------------------------------------------------------------------
class Linear:
    """F(z) = A_i (z_i - z*_i) per sample i, on states of shape (b, *shape) with n = prod(shape).

    `A` is (n, n) (shared) or (b, n, n) (per sample); `zstar` is (b, n). Implements `select`, and
    logs the batch size of every evaluation in `log` (shared by all selected views), so the tests
    count force evaluations independently of the library.
    """

    def __init__(
        self,
        A: np.ndarray,
        zstar: np.ndarray,
        shape: tuple[int, ...] | None = None,
        log: list[int] | None = None,
        noise: float = 0.0,
        seed: int = 0,
    ):
        self.A_np = np.asarray(A)
        self.zstar_np = np.asarray(zstar)
        n = self.zstar_np.shape[1]
        self.shape = shape or (n,)
        self.log = [] if log is None else log
        self.noise = noise
        self._gen = torch.Generator().manual_seed(seed)

    def _tensors(self, z: Tensor) -> tuple[Tensor, Tensor]:
        A = torch.as_tensor(self.A_np).to(z.dtype)
        zs = torch.as_tensor(self.zstar_np).to(z.dtype)
        return A, zs

    def __call__(self, z: Tensor) -> Tensor:
        self.log.append(int(z.shape[0]))
        A, zs = self._tensors(z)
        d = z.reshape(z.shape[0], -1) - zs
        f = torch.einsum("bij,bj->bi", A, d) if A.ndim == 3 else d @ A.T
        if self.noise:
            f = f + self.noise * torch.randn(f.shape, generator=self._gen, dtype=f.dtype)
        return f.reshape(z.shape)

    def select(self, index: Tensor) -> Linear:
        idx = index.cpu().numpy()
        A = self.A_np[idx] if self.A_np.ndim == 3 else self.A_np
        out = Linear(A, self.zstar_np[idx], self.shape, self.log, self.noise)
        out._gen = self._gen
        return out

    # numpy references --------------------------------------------------------------------------
    def eigs(self, i: int = 0) -> np.ndarray:
        A = self.A_np[i] if self.A_np.ndim == 3 else self.A_np
        return np.linalg.eigvals(A)

    def eps_crit(self, i: int = 0) -> float:
        mu = self.eigs(i)
        assert np.all(mu.real < 0)
        return float(np.min(-2 * mu.real / np.abs(mu) ** 2))

    def inv_norm(self, i: int = 0) -> float:
        A = self.A_np[i] if self.A_np.ndim == 3 else self.A_np
        return float(np.linalg.norm(np.linalg.inv(A), 2))

    def force_np(self, z: np.ndarray) -> np.ndarray:
        d = z.reshape(z.shape[0], -1) - self.zstar_np
        if self.A_np.ndim == 3:
            return np.einsum("bij,bj->bi", self.A_np, d)
        return d @ self.A_np.T

    def z0(self, dtype: torch.dtype = F64, value: float = 0.1) -> Tensor:
        b = self.zstar_np.shape[0]
        return torch.full((b, *self.shape), value, dtype=dtype)

    def z0_near(self, offset: float = 0.1, dtype: torch.dtype = F64) -> Tensor:
        """z* + offset (every entry): a start near the fixed point, where ||z|| barely changes."""
        z = self.zstar_np + offset
        return torch.as_tensor(z, dtype=dtype).reshape(z.shape[0], *self.shape)


def well_conditioned(n: int = 6, batch: int = 2, seed: int = 0) -> Linear:
    """Non-normal A with eigenvalues' real parts in about [-3, -1]; z* random, away from 0."""
    rng = np.random.default_rng(seed)
    A = -np.diag(np.linspace(1.0, 3.0, n)) + 0.2 * rng.normal(size=(n, n))
    assert np.all(np.linalg.eigvals(A).real < -0.5)
    return Linear(A, rng.normal(size=(batch, n)) + 1.0, shape=(2, n // 2))


def stiff_rotation(a: float = 2.0, b: float = 10.0, seed: int = 0) -> Linear:
    """Normal 4x4 A: eigenvalues -a +- ib (a stiff rotating pair), -1 and -3, in a random basis."""
    rng = np.random.default_rng(seed)
    D = np.zeros((4, 4))
    D[:2, :2] = [[-a, -b], [b, -a]]
    D[2, 2], D[3, 3] = -1.0, -3.0
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    return Linear(Q @ D @ Q.T, rng.normal(size=(1, 4)) + 1.0)


def slow_contraction(seed: int = 0) -> Linear:
    """Eigenvalues ~ -0.1: Euler at eps 0.1 contracts by ~0.99 a step (docs/physics.md, 4)."""
    rng = np.random.default_rng(seed)
    A = -0.1 * np.eye(4) + 0.01 * rng.normal(size=(4, 4))
    return Linear(A, rng.normal(size=(1, 4)) + 1.0)


def assert_at_fixed_point(sys: Linear, res, tol: float = TOL) -> None:
    z = res.z.detach().cpu().numpy().astype(np.complex128 if res.z.is_complex() else np.float64)
    z = z.reshape(z.shape[0], -1)
    f = sys.force_np(z)
    fn, zn = np.linalg.norm(f, axis=1), np.linalg.norm(z, axis=1)
    assert np.all(fn <= tol * zn * (1 + 1e-6)), (fn / zn, tol)
    err = np.linalg.norm(z - sys.zstar_np, axis=1)
    for i in range(z.shape[0]):
        bound = sys.inv_norm(i) * fn[i] * (1 + 1e-6) + 1e-13 * np.linalg.norm(sys.zstar_np[i])
        assert err[i] <= bound, (i, err[i], bound)


def cost(ctl: Controller) -> int:
    """Force evaluations per attempt (independent of AdaptiveEuler.cost)."""
    return 2 if ctl.estimate == "doubling" else 1


CONTROLLERS = {
    "overshoot": lambda **kw: Overshoot(**kw),
    "pi": lambda **kw: PI(**kw),
    "pi-doubling": lambda **kw: PI(estimate="doubling", **kw),
}


@dataclass(frozen=True)
class Naive(Controller):
    """The naive controller of docs/physics.md section 4: shrink unless g falls by 2 % a step.

    Written against the public Controller interface (it also checks that the interface suffices).
    """

    shrink: float = 0.5
    grow: float = 1.05
    eps_min: float = 1e-4
    eps_max: float = 1.0
    can_reject: ClassVar[bool] = False

    def init(self, z: Tensor, f: Tensor) -> dict[str, Tensor]:
        return {}

    def propose(self, trial: Trial, state: dict[str, Tensor]) -> Decision:
        dims = tuple(range(1, trial.z.ndim))

        def g(z, f):
            return torch.linalg.vector_norm(f, dim=dims) / torch.linalg.vector_norm(z, dim=dims)

        slow = g(trial.z_new, trial.f_new) > 0.98 * g(trial.z, trial.f)
        eps = torch.where(slow, trial.eps * self.shrink, trial.eps * self.grow)
        return Decision(torch.ones_like(slow), eps.clamp(self.eps_min, self.eps_max), {})


# ------------------------------------------------------------------------------------------------
# Convergence to analytic fixed points
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_converges_to_the_analytic_fixed_point(kind):
    sys = well_conditioned(n=6, batch=2, seed=1)
    res = settle(sys, sys.z0(), AdaptiveEuler(CONTROLLERS[kind](), eps=0.1), tol=TOL)
    assert res.status is Status.CONVERGED, res.summary()
    assert res.method == "adaptive"
    assert res.z.shape == (2, 2, 3) and res.z.dtype == F64
    assert_at_fixed_point(sys, res)
    assert torch.all(res.t > 0)


@pytest.mark.parametrize("controller", ["overshoot", "pi"])
def test_settle_by_name_through_the_registry(controller):
    sys = well_conditioned(n=4, batch=1, seed=2)
    res = settle(sys, sys.z0(), "adaptive", tol=TOL, controller=controller, eps=0.05)
    assert res.status is Status.CONVERGED, res.summary()
    assert res.method == "adaptive"
    expected = Overshoot() if controller == "overshoot" else PI()
    assert res.info["controller"] == repr(expected)
    assert_at_fixed_point(sys, res)


@pytest.mark.parametrize("kind", ["overshoot", "pi"])
def test_complex_state(kind):
    # Holomorphic EP settles complex states: F(z) = A (z - z*) with complex z*, real A.
    rng = np.random.default_rng(4)
    A = -np.diag([1.0, 1.5, 2.0, 2.5]) + 0.2 * rng.normal(size=(4, 4))
    zstar = rng.normal(size=(2, 4)) + 1j * rng.normal(size=(2, 4)) + 1.0
    sys = Linear(A.astype(np.complex128), zstar)
    z0 = torch.full((2, 4), 0.1 + 0.1j, dtype=torch.complex128)
    res = settle(sys, z0, AdaptiveEuler(CONTROLLERS[kind](), eps=0.1), tol=TOL)
    assert res.status is Status.CONVERGED, res.summary()
    assert res.z.dtype == torch.complex128 and res.info["eps"].dtype == F64
    assert_at_fixed_point(sys, res)


@pytest.mark.parametrize("kind", ["overshoot", "pi"])
def test_float32_default_dtype(kind):
    sys = well_conditioned(n=4, batch=2, seed=3)
    res = settle(sys, sys.z0(torch.float32), AdaptiveEuler(CONTROLLERS[kind](), eps=0.1), tol=1e-5)
    assert res.status is Status.CONVERGED, res.summary()
    assert res.z.dtype == torch.float32 and res.info["eps"].dtype == torch.float32
    assert_at_fixed_point(sys, res, tol=1e-5)


# ------------------------------------------------------------------------------------------------
# Stiff rotation: fixed Euler fails above eps_crit, adaptive Euler settles
# ------------------------------------------------------------------------------------------------
STIFF_A, STIFF_B = 2.0, 10.0


def test_stiff_rotation_eps_crit_and_fixed_euler_fails():
    sys = stiff_rotation(STIFF_A, STIFF_B)
    eps_crit = sys.eps_crit()
    assert eps_crit == pytest.approx(2 * STIFF_A / (STIFF_A**2 + STIFF_B**2), rel=1e-9)
    # the digital default eps = 0.1 is 2.6x eps_crit: |1 + eps mu| = 1.28 on the rotating pair
    res = settle(sys, sys.z0(), ExplicitEuler(eps=0.1), tol=TOL, max_steps=3000)
    assert res.status is not Status.CONVERGED, res.summary()
    assert res.status is Status.DIVERGED


@functools.cache
def best_fixed_euler_nfe() -> int:
    """NFE of fixed Euler at eps_crit / 2, the step that contracts the rotating pair fastest."""
    sys = stiff_rotation(STIFF_A, STIFF_B)
    res = settle(sys, sys.z0(), ExplicitEuler(eps=sys.eps_crit() / 2), tol=TOL, max_steps=6000)
    assert res.status is Status.CONVERGED, res.summary()
    return res.nfe


@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_stiff_rotation_converges_with_eps_near_or_below_eps_crit(kind):
    sys = stiff_rotation(STIFF_A, STIFF_B)
    eps_crit = sys.eps_crit()
    assert 0.1 > 2 * eps_crit  # the start is far inside the unstable range
    ctl = CONTROLLERS[kind]()
    res = settle(sys, sys.z0(), AdaptiveEuler(ctl, eps=0.1), tol=TOL, max_steps=6000)
    assert res.status is Status.CONVERGED, res.summary()
    assert_at_fixed_point(sys, res)
    # Doubling advances by two Euler steps of eps/2: that is the step Euler's stability sees.
    h = 0.5 if ctl.estimate == "doubling" else 1.0
    assert h * float(res.info["eps"][0]) <= 1.25 * eps_crit
    # the steps taken sit mostly in Euler's contracting band eps < eps_crit ...
    eps_used = h * res.trace.step_size.numpy()
    assert np.mean(eps_used[10:] < eps_crit) > 0.8
    # ... and cost at most 2x the evaluations of the best fixed Euler step
    assert res.nfe <= 2 * best_fixed_euler_nfe(), (res.nfe, best_fixed_euler_nfe())


# ------------------------------------------------------------------------------------------------
# Slow contraction: the naive controller's failure, fixed
# ------------------------------------------------------------------------------------------------
def test_genuine_rise_of_the_flow_does_not_park_eps_at_the_floor():
    # A non-normal linear system: along the exact flow ||F|| ~ e^{-t/50} |1 - t/50| first falls to
    # ~0 at t = 50, then rises ~10x until t = 100 (checked with scipy below), with a fast mode that
    # sets eps_crit = 0.2. A rise that shrinking eps does not change is the flow's own: the
    # Overshoot controller must not chase it down to eps_min (the previous one parked there for
    # ~6000 steps and hit max_steps).
    from scipy.linalg import expm

    A = np.array([[-0.02, 1.0, 0.0], [0.0, -0.02, 0.0], [0.0, 0.0, -10.0]])
    zstar = np.ones((1, 3))
    d0 = np.array([0.0, 1.0, 0.5])
    flow_f = [np.linalg.norm(A @ expm(A * t) @ d0) for t in (52.0, 100.0)]
    assert flow_f[1] > 5 * flow_f[0]  # the continuous flow itself rises
    sys = Linear(A, zstar)
    assert sys.eps_crit() == pytest.approx(0.2)
    z0 = torch.as_tensor(zstar + d0)
    res = settle(sys, z0, AdaptiveEuler(Overshoot()), tol=1e-6, max_steps=20000)
    assert res.status is Status.CONVERGED, res.summary()
    np.testing.assert_allclose(res.z.numpy(), zstar, atol=1e-4)
    assert int(res.info["floor_steps"][0]) == 0
    assert float(res.info["eps_low"][0]) > 0.01
    euler = settle(sys, z0, ExplicitEuler(eps=0.1), tol=1e-6, max_steps=20000)
    assert euler.status is Status.CONVERGED
    assert res.steps < 0.25 * euler.steps


def test_naive_controller_parks_eps_at_the_floor_on_slow_contraction():
    # Sanity check of the test system: this is the failure the controllers must avoid
    # (docs/physics.md section 4).
    sys = slow_contraction()
    res = settle(sys, sys.z0_near(), AdaptiveEuler(Naive(), eps=0.1), tol=TOL, max_steps=300)
    assert res.status is not Status.CONVERGED
    assert float(res.info["eps"][0]) == pytest.approx(1e-4)
    assert int(res.info["floor_steps"][0]) > 200


@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_slow_contraction_does_not_park_eps_and_beats_fixed_euler(kind):
    sys = slow_contraction()
    rho = np.max(np.abs(1 + 0.1 * sys.eigs()))
    assert 0.985 < rho < 0.995  # Euler at the initial eps contracts by ~0.99 a step
    ctl = CONTROLLERS[kind]()
    res = settle(sys, sys.z0_near(), AdaptiveEuler(ctl, eps=0.1), tol=TOL, max_steps=3000)
    assert res.status is Status.CONVERGED, res.summary()
    assert_at_fixed_point(sys, res)
    assert int(res.info["floor_steps"][0]) == 0
    assert float(res.info["eps_low"][0]) >= 0.1 * (1 - 1e-6)  # never shrank below the start
    assert float(res.info["eps"][0]) >= 5 * 0.1
    fixed = settle(sys, sys.z0_near(), ExplicitEuler(eps=0.1), tol=TOL, max_steps=3000)
    assert fixed.status is Status.CONVERGED
    assert res.nfe * 4 < fixed.nfe, (res.nfe, fixed.nfe)


# ------------------------------------------------------------------------------------------------
# Noise floor (Overshoot: the tolerance is relative to the residual's own fluctuation)
# ------------------------------------------------------------------------------------------------
def _noisy_run(ctl: Controller):
    rng = np.random.default_rng(0)
    A = -np.diag(np.linspace(0.3, 1.5, 6)) + 0.1 * rng.normal(size=(6, 6))
    assert Linear(A, np.zeros((1, 6))).eps_crit() > 1.0  # the cap 1.0 is stable
    # read noise 1e-7 on every evaluation: g floors near 1e-7 and fluctuates by O(1) there
    sys = Linear(A, rng.normal(size=(1, 6)) + 1.0, noise=1e-7, seed=5)
    res = settle(sys, sys.z0(), AdaptiveEuler(ctl, eps=0.1), tol=1e-12, max_steps=800)
    trace = res.trace.residual.numpy()
    k = int(np.argmax(trace < 1e-5))  # the floor phase starts here
    assert 0 < k < 300
    return res.trace.step_size.numpy()[k:]


def test_overshoot_ignores_float_noise_at_the_floor():
    eps = _noisy_run(Overshoot())
    assert np.median(eps) >= 0.5 and eps.min() >= 0.1


def test_strict_overshoot_without_noise_term_collapses_at_the_floor():
    # noise=0 is the strict tolerance (docs/physics.md section 4): it shrinks on every noisy rise
    # and parks at the floor
    eps = _noisy_run(Overshoot(noise=0.0))
    assert np.median(eps) <= 1e-3


def test_pi_with_atol_at_the_noise_level_holds_eps():
    eps = _noisy_run(PI(atol=1e-6))
    assert np.median(eps) >= 0.5


# ------------------------------------------------------------------------------------------------
# Bounds, counters, per-sample step sizes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(CONTROLLERS))
def test_eps_within_floor_and_cap_and_nfe_counts_every_attempt(kind):
    sys = stiff_rotation(STIFF_A, STIFF_B)
    ctl = CONTROLLERS[kind](eps_min=0.004, eps_max=0.2)
    res = settle(sys, sys.z0(), AdaptiveEuler(ctl, eps=0.2), tol=1e-6, max_steps=6000)
    assert res.status is Status.CONVERGED, res.summary()
    eps = res.trace.step_size.numpy()
    assert eps.min() >= 0.004 * (1 - 1e-12) and eps.max() <= 0.2 * (1 + 1e-12)
    assert float(res.info["eps_low"][0]) >= 0.004 * (1 - 1e-12)
    assert float(res.info["eps_high"][0]) <= 0.2 * (1 + 1e-12)
    accepted, rejected = int(res.info["accepted"][0]), res.info["rejected_steps"]
    if kind.startswith("pi"):
        assert rejected > 0  # eps = 0.2 is 5x eps_crit: the first attempts are rejected
    else:
        assert rejected == 0  # Overshoot never rejects
    attempts = accepted + rejected
    # one evaluation at z0, then `cost` per attempt; the recorder saw exactly these calls
    assert res.nfe == 1 + cost(ctl) * attempts == len(sys.log)
    assert int(res.nfe_per_sample[0]) == res.nfe
    assert int(res.info["rejected"][0]) == rejected
    # a loop step accepts once or exhausts its retries; nfe counts at least one call per step
    assert res.nfe >= res.steps >= accepted


def test_step_doubling_costs_more_evaluations_per_step_than_embedded():
    sys = well_conditioned(n=4, batch=1, seed=6)
    emb = settle(sys, sys.z0(), AdaptiveEuler(PI(), eps=0.1), tol=TOL)
    dbl = settle(sys, sys.z0(), AdaptiveEuler(PI(estimate="doubling"), eps=0.1), tol=TOL)
    assert emb.status is dbl.status is Status.CONVERGED
    assert (dbl.nfe - 1) / dbl.steps > 1.9 > 1.1 > (emb.nfe - 1) / emb.steps >= 1.0


def test_batch_with_per_sample_stiffness_gets_per_sample_eps():
    # three samples, the same shape of spectrum scaled by 2, 8, 32: eps_crit 0.5, 0.125, 0.031
    rng = np.random.default_rng(7)
    base = -np.diag([1.0, 1.5, 2.0]) + 0.1 * rng.normal(size=(3, 3))
    scales = [2.0, 8.0, 32.0]
    A = np.stack([s * base for s in scales])
    log: list[int] = []
    sys = Linear(A, rng.normal(size=(3, 3)) + 1.0, log=log)
    crit = [sys.eps_crit(i) for i in range(3)]
    assert crit[0] > crit[1] > crit[2]
    for kind in ("overshoot", "pi"):
        log.clear()
        ctl = CONTROLLERS[kind]()
        res = settle(sys, sys.z0(), AdaptiveEuler(ctl, eps=0.02), tol=TOL, max_steps=3000)
        assert res.status is Status.CONVERGED, (kind, res.summary())
        assert_at_fixed_point(sys, res)
        eps = res.info["eps"].numpy()
        assert eps[0] > 2 * eps[1] > 4 * eps[2], (kind, eps, crit)
        assert np.all(eps <= 1.5 * np.array(crit)), (kind, eps, crit)
        # per sample: one evaluation at z0 plus one per attempt, nothing while others retry
        attempts = res.info["accepted"] + res.info["rejected"]
        assert torch.equal(res.nfe_per_sample, 1 + cost(ctl) * attempts)
        assert res.nfe == len(log) and int(res.nfe_per_sample.sum()) == sum(log)


def test_max_retries_zero_retries_on_the_next_loop_step():
    sys = stiff_rotation(STIFF_A, STIFF_B)
    res = settle(
        sys, sys.z0(), AdaptiveEuler(PI(), eps=0.2, max_retries=0), tol=1e-6, max_steps=6000
    )
    assert res.status is Status.CONVERGED, res.summary()
    accepted, rejected = int(res.info["accepted"][0]), res.info["rejected_steps"]
    assert rejected > 0
    assert res.steps == accepted + rejected  # each rejection took a loop step of its own
    assert res.nfe == 1 + accepted + rejected == len(sys.log)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("estimate, k", [("embedded", 2.0), ("doubling", 4.0)])
def test_pi_stationary_step_on_a_scalar_mode(preset, estimate, k):
    # F = -lam z in 1-D: err = eps lam / (k rtol) exactly (k = 2 embedded, 4 doubling, atol = 0),
    # so every preset must settle at err = safety, i.e. eps* = k safety rtol / lam. (z* = 0 keeps
    # F free of the cancellation in z - z*, which would spoil "exactly" once F is tiny; the loop
    # never calls it converged since ||F|| / ||z|| = lam, which is fine here.)
    lam, rtol, safety = 0.5, 0.05, 0.9
    sys = Linear(np.array([[-lam]]), np.array([[0.0]]))
    ctl = PI(rtol=rtol, atol=0.0, safety=safety, coefficients=preset, estimate=estimate)
    res = settle(sys, sys.z0(value=-5.0), AdaptiveEuler(ctl, eps=0.01), tol=1e-12, max_steps=150)
    expected = k * safety * rtol / lam
    assert float(res.info["eps"][0]) == pytest.approx(expected, rel=1e-6)
    assert res.info["rejected_steps"] == 0


def test_custom_coefficients_tuple_matches_preset():
    sys = well_conditioned(n=4, batch=1, seed=8)
    a = settle(sys, sys.z0(), AdaptiveEuler(PI(coefficients="PI3040"), eps=0.1), tol=TOL)
    b = settle(sys, sys.z0(), AdaptiveEuler(PI(coefficients=(0.7, -0.4)), eps=0.1), tol=TOL)
    assert a.steps == b.steps and torch.equal(a.z, b.z)


# ------------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, exc, name",
    [
        (lambda: Overshoot(shrink=1.5), ValueError, "shrink"),
        (lambda: Overshoot(shrink=0.0), ValueError, "shrink"),
        (lambda: Overshoot(grow=0.9), ValueError, "grow"),
        (lambda: Overshoot(relax=0.5), ValueError, "relax"),
        (lambda: Overshoot(rise=0.99), ValueError, "rise"),
        (lambda: Overshoot(noise=-1.0), ValueError, "noise"),
        (lambda: Overshoot(smoothing=1.5), ValueError, "smoothing"),
        (lambda: Overshoot(smoothing="0.2"), TypeError, "smoothing"),
        (lambda: Overshoot(eps_min=0.0), ValueError, "eps_min"),
        (lambda: Overshoot(eps_min=0.5, eps_max=0.1), ValueError, "eps_max"),
        (lambda: PI(rtol=0.0), ValueError, "rtol"),
        (lambda: PI(rtol=1.5), ValueError, "rtol"),
        (lambda: PI(atol=-1e-9), ValueError, "atol"),
        (lambda: PI(estimate="richardson"), ValueError, "estimate"),
        (lambda: PI(coefficients="H999"), ValueError, "coefficients"),
        (lambda: PI(coefficients=(0.7,)), TypeError, "coefficients"),
        (lambda: PI(coefficients=(-0.1, 0.2)), ValueError, "coefficients"),
        (lambda: PI(safety=1.2), ValueError, "safety"),
        (lambda: PI(min_factor=1.0), ValueError, "min_factor"),
        (lambda: PI(max_factor=0.5), ValueError, "max_factor"),
        (lambda: PI(eps_max=float("nan")), ValueError, "eps_max"),
        (lambda: AdaptiveEuler(controller=3), TypeError, "controller"),
        (lambda: AdaptiveEuler(controller="naive"), ValueError, "controller"),
        (lambda: AdaptiveEuler(eps=2.0), ValueError, "eps"),
        (lambda: AdaptiveEuler(PI(eps_min=0.01), eps=0.001), ValueError, "eps"),
        (lambda: AdaptiveEuler(eps=True), TypeError, "eps"),
        (lambda: AdaptiveEuler(max_retries=-1), ValueError, "max_retries"),
        (lambda: AdaptiveEuler(max_retries=1.5), TypeError, "max_retries"),
    ],
)
def test_bad_arguments_name_the_argument(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


def test_unknown_settle_option_is_reported():
    sys = well_conditioned(n=4, batch=1)
    with pytest.raises(TypeError, match="safety"):
        settle(sys, sys.z0(), "adaptive", safety=0.5)  # safety belongs to PI, not AdaptiveEuler
