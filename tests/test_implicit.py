"""ImplicitEuler (Newton-Krylov backward Euler) on local analytic systems.

References are independent of analogeq: analytic fixed points (numpy solves), the exact
backward-Euler recurrence computed with numpy, and scipy.optimize.fsolve for nonlinear steps and
fixed points.
Evaluation counts are checked against forces that count their own calls.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.optimize
import torch
import torch.autograd.forward_ad as fwAD
from analogeq.integrators import CountedForce, ExplicitEuler, Status
from analogeq.integrators import settle as _settle
from analogeq.integrators.implicit import ImplicitEuler

# The references here bound ||F|| / ||z||: every settle is judged by that test (rate 1, atol 0).
settle = functools.partial(_settle, rate=1.0, atol=0.0)

F64 = torch.float64


# -- local test systems ----------------------------------------------------------------------------
class Counting:
    """Base of the test forces: counts every call, and separately the calls that carry a tangent
    (forward-mode JVPs); `select` views share the counters."""

    def __init__(self):
        self.counts = {"calls": 0, "jvps": 0}

    def _count(self, z: torch.Tensor) -> None:
        self.counts["calls"] += 1
        if fwAD.unpack_dual(z).tangent is not None:
            self.counts["jvps"] += 1


class Linear(Counting):
    """F(z) = A z + c, rows of c per sample; z* = -A^{-1} c."""

    def __init__(self, A: np.ndarray, c: np.ndarray):
        super().__init__()
        self.A = np.asarray(A)
        self.c = np.asarray(c)

    def __call__(self, z):
        self._count(z)
        A = torch.tensor(self.A).to(z.dtype)
        return z @ A.T + torch.tensor(self.c).to(z.dtype)

    def fixed_point(self) -> np.ndarray:
        return -np.linalg.solve(self.A, self.c.T).T


def stiff_linear() -> Linear:
    """Non-normal upper-triangular A, eigenvalues -1, -10, -100, -1000; three right-hand sides."""
    A = np.array(
        [
            [-1.0, 20.0, -5.0, 30.0],
            [0.0, -10.0, 40.0, 8.0],
            [0.0, 0.0, -100.0, 60.0],
            [0.0, 0.0, 0.0, -1000.0],
        ]
    )
    c = np.array([[1.0, 2.0, -1.0, 0.5], [-3.0, 0.0, 2.0, 1.0], [0.2, -0.4, 1.5, -2.0]])
    return Linear(A, c)


class TanhNet(Counting):
    """F(z) = -leak * z + W tanh(z) + c per sample row; with `split`, exposes leak / nonlinear.

    Shapes: z (k, n); leak scalar or (n,); W (n, n); c (batch, n). `select` restricts c's rows.
    """

    def __init__(self, leak, W, c, split: bool = True, counts=None):
        super().__init__()
        if counts is not None:
            self.counts = counts
        self.leak_np = np.asarray(leak, dtype=float)
        self.W = np.asarray(W)
        self.c = np.asarray(c)
        self.split = split

    def __getattr__(self, name):
        # Only a split force has `leak` and `nonlinear` (has_split checks the attributes).
        if name in ("leak", "nonlinear") and self.__dict__.get("split"):
            return {"leak": self._leak, "nonlinear": self._nonlinear}[name]()
        raise AttributeError(name)

    def _leak(self):
        return float(self.leak_np) if self.leak_np.ndim == 0 else torch.tensor(self.leak_np)

    def _nonlinear(self):
        def n(z):
            self._count(z)
            return self._n(z)

        return n

    def _n(self, z):
        W = torch.tensor(self.W).to(z.dtype)
        return torch.tanh(z) @ W.T + torch.tensor(self.c).to(z.dtype)

    def __call__(self, z):
        self._count(z)
        return -torch.tensor(self.leak_np).to(z.dtype) * z + self._n(z)

    def select(self, index):
        return TanhNet(self.leak_np, self.W, self.c[index.cpu().numpy()], self.split, self.counts)

    def numpy_force(self, z, row):
        return -self.leak_np * z + self.W @ np.tanh(z) + self.c[row]

    def fixed_point(self, z0: np.ndarray) -> np.ndarray:
        out = np.stack(
            [
                scipy.optimize.fsolve(lambda z, i=i: self.numpy_force(z, i), z0[i], xtol=1e-12)
                for i in range(len(z0))
            ]
        )
        assert all(np.linalg.norm(self.numpy_force(out[i], i)) < 1e-11 for i in range(len(z0)))
        return out


def tanh_net(n=5, batch=3, leak=2.0, gain=1.5, seed=0, split=True) -> TanhNet:
    """W scaled to spectral norm `gain` < min(leak): a unique, globally attracting fixed point."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, n))
    W *= gain / np.linalg.norm(W, 2)
    return TanhNet(leak, W, rng.standard_normal((batch, n)), split=split)


class Atan(Counting):
    """F(z) = -atan(z - z*) per sample, optionally NaN where |z - z*| > nan_beyond.

    Newton on y - z_n + eps atan(y - z*) = 0 from far away (|z_n - z*| = 10) with eps = 100
    overshoots and oscillates (atan's Newton basin is |x| < 1.39); small eps makes it easy.
    """

    def __init__(self, centres, nan_beyond=None):
        super().__init__()
        self.centres = torch.tensor(centres, dtype=F64)[:, None]
        self.nan_beyond = nan_beyond

    def __call__(self, z):
        self._count(z)
        x = z - self.centres.to(z.dtype)
        out = -torch.atan(x)
        if self.nan_beyond is not None:
            out = torch.where(x.abs() > self.nan_beyond, torch.full_like(out, math.nan), out)
        return out


def plain(force):
    """A bare function: no select, no split (exercises the loop's embed path)."""
    return lambda z: force(z)


class SplitNoSelect:
    """The leak/nonlinear split of a per-sample force, without `select` (embed path with split)."""

    def __init__(self, force):
        self._force = force
        self.leak = force.leak

    def __call__(self, z):
        return self._force(z)

    def nonlinear(self, z):
        return self._force.nonlinear(z)


def backward_euler_steps(A, c, z0, eps, tol) -> int:
    """Steps the exact backward-Euler recurrence needs until every sample's ||F||/||z|| <= tol."""
    M = np.eye(A.shape[0]) - eps * A
    steps = np.zeros(len(z0), dtype=int)
    for i in range(len(z0)):
        z = z0[i].copy()
        while np.linalg.norm(A @ z + c[i]) / np.linalg.norm(z) > tol:
            z = np.linalg.solve(M, z + eps * c[i])
            steps[i] += 1
    return int(steps.max())


# -- the stiff linear system -----------------------------------------------------------------------
@pytest.mark.parametrize("eps", [1.0, 1000.0])
def test_stiff_linear_converges_with_large_steps(eps):
    sys = stiff_linear()
    z0 = torch.ones(3, 4, dtype=F64)
    res = settle(sys, z0, method="implicit", eps=eps, tol=1e-9)
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.z.numpy(), sys.fixed_point(), atol=1e-9 * 10, rtol=1e-8)
    # Same number of steps as the exact backward-Euler recurrence (Newton error may shift one).
    expected = backward_euler_steps(sys.A, sys.c, z0.numpy(), eps, 1e-9)
    assert abs(res.steps - expected) <= 1
    if eps >= 1000:
        assert res.steps <= 5
    # Linear system: after the first step, one Newton iteration per sample-step suffices.
    assert res.info["newton_iterations"] <= int(res.steps_per_sample.sum()) + 3
    assert res.info["eps_fallbacks"] == 0


def test_explicit_euler_needs_tiny_steps_on_the_stiff_system():
    sys = stiff_linear()
    eigs = np.linalg.eigvals(sys.A)
    eps_crit = float(np.min(-2 * eigs.real / np.abs(eigs) ** 2))
    assert eps_crit == pytest.approx(2 / 1000)
    z0 = torch.ones(3, 4, dtype=F64)
    res = settle(sys, z0, method=ExplicitEuler(eps=0.01), tol=1e-9, max_steps=500)
    assert res.status is not Status.CONVERGED
    imp = settle(sys, z0, method="implicit", eps=1.0, tol=1e-9)
    # Explicit Euler stable at eps < eps_crit contracts the slow mode (mu = -1) by (1 - eps) per
    # step: it needs at least log(1e-9) / log(1 - eps_crit) steps, implicit Euler ~30.
    assert imp.steps * 100 < math.log(1e-9) / math.log(1 - eps_crit)


# -- one nonlinear step against scipy --------------------------------------------------------------
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("eps", [0.5, 3.0, 50.0])
def test_one_step_solves_the_backward_euler_equation(eps, split):
    sys = tanh_net(split=split)
    rng = np.random.default_rng(1)
    z0 = 2.0 * rng.standard_normal((3, 5))
    method = ImplicitEuler(eps=eps, newton_tol=1e-13)
    res = settle(sys, torch.tensor(z0), method=method, tol=1e-15, max_steps=1)
    assert res.steps == 1 and res.info["eps_fallbacks"] == 0
    for i in range(3):

        def G(y, i=i):
            return y - z0[i] - eps * sys.numpy_force(y, i)

        ref = scipy.optimize.fsolve(G, z0[i], xtol=1e-12)
        assert np.linalg.norm(G(ref)) < 1e-10
        np.testing.assert_allclose(res.z[i].numpy(), ref, atol=1e-8, rtol=0)
        # The returned f is F(z_new): the residual the loop judges matches numpy's.
        r = np.linalg.norm(sys.numpy_force(ref, i)) / np.linalg.norm(ref)
        assert float(res.residual[i]) == pytest.approx(r, rel=1e-6)
    assert float(res.t[0]) == eps


# -- evaluation counts -----------------------------------------------------------------------------
def test_jvp_through_counted_force_counts_one_evaluation():
    sys = tanh_net(batch=2)
    z = torch.randn(2, 5, dtype=F64)
    v = torch.randn(2, 5, dtype=F64)
    counted = CountedForce(sys, z)
    with torch.no_grad(), fwAD.dual_level():
        tangent = fwAD.unpack_dual(counted(fwAD.make_dual(z, v))).tangent
    assert counted.calls == 1 and sys.counts == {"calls": 1, "jvps": 1}
    expected = -2.0 * v + (v / torch.cosh(z) ** 2) @ torch.tensor(sys.W).T
    torch.testing.assert_close(tangent, expected)


@pytest.mark.parametrize("kind", ["select+split", "select", "plain", "split, no select"])
def test_nfe_counts_every_force_and_jvp_evaluation(kind):
    sys = tanh_net(batch=3, split="split" in kind, seed=2)
    force = {"plain": plain, "split, no select": SplitNoSelect}.get(kind, lambda f: f)(sys)
    rng = np.random.default_rng(3)
    # Different distances from the fixed point: samples finish at different steps.
    z0 = torch.tensor(rng.standard_normal((3, 5)) * np.array([[0.1], [1.0], [5.0]]))
    res = settle(force, z0, method="implicit", eps=2.0, tol=1e-10)
    assert res.status is Status.CONVERGED
    assert len(set(res.steps_per_sample.tolist())) > 1
    assert res.nfe == sys.counts["calls"]
    assert sys.counts["jvps"] > 0
    np.testing.assert_allclose(res.z.numpy(), sys.fixed_point(z0.numpy()), atol=1e-9)


def test_nfe_decomposes_into_newton_evaluations_and_jvps():
    """Batch of one: NFE = 1 (initial F) + one F per Newton iteration + one per JVP."""
    sys = tanh_net(batch=1, seed=4)
    z0 = torch.tensor(np.random.default_rng(5).standard_normal((1, 5)))
    res = settle(sys, z0, method=ImplicitEuler(eps=5.0), tol=1e-10)
    assert res.status is Status.CONVERGED
    assert res.nfe == sys.counts["calls"]
    assert sys.counts["jvps"] == res.info["jvp_evaluations"]
    assert res.nfe == 1 + res.info["newton_iterations"] + res.info["jvp_evaluations"]
    np.testing.assert_allclose(res.z.numpy(), sys.fixed_point(z0.numpy()), atol=1e-9)


# -- fallback: eps halving -------------------------------------------------------------------------
@pytest.mark.parametrize("nan_beyond", [None, 100.0])
def test_newton_failure_halves_eps_and_still_converges(nan_beyond):
    sys = Atan([1.0, -2.0], nan_beyond=nan_beyond)
    z0 = torch.tensor([[11.0], [-1.9]], dtype=F64)  # far (Newton fails at eps 100), near (easy)
    res = settle(sys, z0, method=ImplicitEuler(eps=100.0), tol=1e-10)
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.z.numpy().ravel(), [1.0, -2.0], atol=1e-9)
    assert (
        res.info["rejected_steps"] > 0 and res.info["eps_fallbacks"] == res.info["rejected_steps"]
    )
    assert res.info["min_eps_used"] < 100.0
    # The near sample never fell back: its time is a whole number of full steps.
    t_near = float(res.t[1])
    assert t_near == 100.0 * int(res.steps_per_sample[1])
    assert float(res.t[0]) < 100.0 * int(res.steps_per_sample[0])
    assert res.nfe == sys.counts["calls"]


def test_fallback_below_min_eps_is_reported_stalled():
    sys = Atan([1.0, -2.0])
    z0 = torch.tensor([[11.0], [-1.9]], dtype=F64)
    res = settle(sys, z0, method=ImplicitEuler(eps=100.0, min_eps=60.0), tol=1e-10)
    assert res.sample_status == (Status.STALLED, Status.CONVERGED)
    assert res.status is Status.STALLED
    assert float(res.z[0, 0]) == 11.0  # the stalled sample keeps its last accepted state
    assert res.info["rejected_steps"] == 1


# -- the leak split --------------------------------------------------------------------------------
def test_split_and_unsplit_reach_the_same_fixed_point():
    """Per-node leaks from 1 to 1000 (stiff); the split preconditions the Krylov solve."""
    n = 20
    leak = np.logspace(0, 3, n)
    with_split = tanh_net(n=n, batch=2, leak=leak, gain=0.5, seed=6, split=True)
    without = tanh_net(n=n, batch=2, leak=leak, gain=0.5, seed=6, split=False)
    z0 = torch.ones(2, n, dtype=F64)
    ref = with_split.fixed_point(z0.numpy())
    np.testing.assert_allclose(without.numpy_force(ref[0], 0), 0, atol=1e-12)
    results = {}
    for name, sys in (("split", with_split), ("plain", without)):
        res = settle(sys, z0, method=ImplicitEuler(eps=10.0), tol=1e-11)
        assert res.status is Status.CONVERGED
        np.testing.assert_allclose(res.z.numpy(), ref, atol=1e-10, rtol=0)
        results[name] = res
    np.testing.assert_allclose(results["split"].z.numpy(), results["plain"].z.numpy(), atol=1e-10)
    # D^{-1} removes the leak's spread from GMRES: far fewer Krylov iterations.
    assert (
        results["split"].info["krylov_iterations"] * 2 <= results["plain"].info["krylov_iterations"]
    )


# -- variants: forcing, finite-difference JVPs, dtypes ---------------------------------------------
@pytest.mark.parametrize(
    "options",
    [{"forcing": 0.1}, {"jvp": "difference"}, {"krylov_restart": 2, "krylov_max_iter": 6}],
)
def test_variants_reach_the_fixed_point(options):
    sys = tanh_net(seed=7)
    z0 = torch.tensor(np.random.default_rng(8).standard_normal((3, 5)))
    res = settle(sys, z0, method=ImplicitEuler(eps=4.0, **options), tol=1e-10)
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.z.numpy(), sys.fixed_point(z0.numpy()), atol=1e-9)
    assert res.nfe == sys.counts["calls"]


def test_float32_state():
    sys = tanh_net(seed=9)
    z0 = np.random.default_rng(10).standard_normal((3, 5))
    res = settle(sys, torch.tensor(z0, dtype=torch.float32), method="implicit", eps=3.0, tol=1e-5)
    assert res.status is Status.CONVERGED and res.z.dtype == torch.float32
    np.testing.assert_allclose(res.z.numpy(), sys.fixed_point(z0), atol=1e-4)


def test_complex_linear_system():
    """A holomorphic force on complex states: eigenvalues -1 +- 8i (rotating) and -300."""
    A = np.array([[-1.0, 8.0, 0.0], [-8.0, -1.0, 5.0], [0.0, 0.0, -300.0]]) + 0.3j * np.eye(3)
    c = np.array([[1.0 + 1.0j, -2.0, 0.5j], [0.3, 1.0 - 1.0j, 2.0]])
    sys = Linear(A, c)
    res = settle(
        sys, torch.ones(2, 3, dtype=torch.complex128), method="implicit", eps=20.0, tol=1e-10
    )
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.z.numpy(), sys.fixed_point(), atol=1e-9)


# -- arguments -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"eps": "1"}, TypeError, "eps"),
        ({"newton_tol": 0.0}, ValueError, "newton_tol"),
        ({"newton_tol": 1.5}, ValueError, "newton_tol"),
        ({"max_newton": 0}, ValueError, "max_newton"),
        ({"max_newton": 2.0}, TypeError, "max_newton"),
        ({"forcing": "kelley"}, ValueError, "forcing"),
        ({"forcing": 1.0}, ValueError, "forcing"),
        ({"forcing": 0.0}, ValueError, "forcing"),
        ({"krylov_restart": 0}, ValueError, "krylov_restart"),
        ({"krylov_max_iter": 0}, ValueError, "krylov_max_iter"),
        ({"min_eps": 0.0}, ValueError, "min_eps"),
        ({"eps": 1.0, "min_eps": 2.0}, ValueError, "min_eps"),
        ({"jvp": "reverse"}, ValueError, "jvp"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ImplicitEuler(**kwargs)


def test_settle_by_name_and_option_checks():
    sys = stiff_linear()
    z0 = torch.ones(3, 4, dtype=F64)
    res = settle(sys, z0, method="implicit", eps=50.0, max_newton=5, tol=1e-9)
    assert res.method == "implicit" and res.status is Status.CONVERGED
    assert "ImplicitEuler(eps=50.0" in repr(ImplicitEuler(eps=50.0))
    with pytest.raises(ValueError, match="eps"):
        settle(sys, z0, method="implicit", eps=-1.0)
    with pytest.raises(TypeError, match="newton_tols"):
        settle(sys, z0, method="implicit", newton_tols=1e-3)
