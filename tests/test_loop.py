"""The shared settle loop: validation, statuses, masking, the result's fields, dtypes.

Every check is against an independent reference: closed-form or manually iterated Euler in numpy,
-A^{-1} b, residuals recomputed in float64 from the returned state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from analogeq.integrators import (
    ExplicitEuler,
    IMEXEuler,
    SettleResult,
    Status,
    settle,
)
from systems import (
    LinearSystem,
    NaNBeyond,
    NoSelect,
    Recorder,
    SaturatingRotor,
    euler_iterates_np,
    linear_force_np,
    plain,
    residual_np,
    saddle,
    to_np,
    well_conditioned,
)

# rate 1 and atol 0 make the convergence test the force residual ||F|| / ||z|| <= tol, which the
# numpy references below apply by hand
G = {"rate": 1.0, "atol": 0.0}
F64 = torch.float64


def decay_system() -> LinearSystem:
    """A = diag(-2, -0.5), z* = (1, 1): per-sample decay speed set by the excited mode."""
    A = np.diag([-2.0, -0.5])
    return LinearSystem(A, -(A @ np.ones(2)))


def first_below(res: np.ndarray, tol: float) -> int:
    hits = np.nonzero(res <= tol)[0]
    assert hits.size, "reference never reaches tol"
    return int(hits[0])


# ------------------------------------------------------------------------------------------------
# Validation: bad input fails early and names the argument
# ------------------------------------------------------------------------------------------------
LIN = LinearSystem(-np.eye(2), [1.0, 2.0])
Z0 = torch.ones(2, 2, dtype=F64)


@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_eps_is_value_error(eps):
    with pytest.raises(ValueError, match="eps"):
        settle(LIN, Z0, "euler", eps=eps)
    with pytest.raises(ValueError, match="eps"):
        ExplicitEuler(eps=eps)


def test_non_numeric_eps_is_type_error():
    with pytest.raises(TypeError, match="eps"):
        settle(LIN, Z0, "euler", eps="0.1")


@pytest.mark.parametrize("tol", [0.0, -1e-6, float("nan"), float("inf")])
def test_bad_tol(tol):
    with pytest.raises(ValueError, match="tol"):
        settle(LIN, Z0, "euler", tol=tol)


@pytest.mark.parametrize(
    "tol, error",
    [
        (torch.tensor([1e-6, 0.0], dtype=F64), ValueError),  # one sample not > 0
        (torch.tensor([1e-6, float("nan")], dtype=F64), ValueError),
        (torch.tensor([1e-6, float("inf")], dtype=F64), ValueError),
        (torch.tensor([1e-6, 1e-6, 1e-6], dtype=F64), ValueError),  # not one per sample
        (torch.full((2, 1), 1e-6, dtype=F64), TypeError),  # not 1-D
        (torch.tensor([1, 2]), TypeError),  # integer
    ],
)
def test_bad_per_sample_tol(tol, error):
    with pytest.raises(error, match="tol"):
        settle(LIN, Z0, "euler", tol=tol)


@pytest.mark.parametrize("max_steps", [0, -5])
def test_bad_max_steps(max_steps):
    with pytest.raises(ValueError, match="max_steps"):
        settle(LIN, Z0, "euler", max_steps=max_steps)


@pytest.mark.parametrize("max_steps", [1.5, True])
def test_non_integer_max_steps(max_steps):
    with pytest.raises(TypeError, match="max_steps"):
        settle(LIN, Z0, "euler", max_steps=max_steps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_z0(bad):
    z0 = Z0.clone()
    z0[1, 0] = bad
    with pytest.raises(ValueError, match="z0"):
        settle(LIN, z0, "euler")


@pytest.mark.parametrize("z0", [np.ones((2, 2)), [[1.0, 1.0]], 1.0])
def test_z0_not_a_tensor(z0):
    with pytest.raises(TypeError, match="z0"):
        settle(LIN, z0, "euler")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_z0_integer_dtype(dtype):
    with pytest.raises(TypeError, match="z0"):
        settle(LIN, torch.ones(2, 2, dtype=dtype), "euler")


def test_z0_one_dimensional():
    with pytest.raises(ValueError, match="z0"):
        settle(LIN, torch.ones(2, dtype=F64), "euler")


def test_z0_empty_batch():
    with pytest.raises(ValueError, match="z0"):
        settle(LIN, torch.ones(0, 2, dtype=F64), "euler")


def test_force_not_callable():
    with pytest.raises(TypeError, match="callable"):
        settle(42, Z0, "euler")


def test_force_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        settle(lambda z: z[:, :1], Z0, "euler")


def test_force_wrong_dtype():
    with pytest.raises(TypeError, match="dtype"):
        settle(lambda z: LIN(z).float(), Z0, "euler")


def test_force_not_returning_tensor():
    with pytest.raises(TypeError, match="Tensor"):
        settle(lambda z: to_np(LIN(z)), Z0, "euler")


def test_unknown_method_name_lists_choices():
    with pytest.raises(ValueError, match="no-such-method") as info:
        settle(LIN, Z0, "no-such-method")
    assert "euler" in str(info.value) and "imex" in str(info.value)


def test_method_of_wrong_type():
    with pytest.raises(TypeError, match="method"):
        settle(LIN, Z0, ExplicitEuler)  # the class, not an instance
    with pytest.raises(TypeError, match="method"):
        settle(LIN, Z0, 3)


def test_unknown_option_names_it_and_lists_allowed():
    with pytest.raises(TypeError) as info:
        settle(LIN, Z0, "euler", eps=0.1, bogus_option=3)
    msg = str(info.value)
    assert "bogus_option" in msg
    for allowed in ("eps", "blowup", "cycle_min_tail", "progress"):
        assert allowed in msg, f"{allowed!r} missing from {msg!r}"


def test_method_options_with_an_instance_are_rejected():
    with pytest.raises(TypeError, match="eps"):
        settle(LIN, Z0, ExplicitEuler(eps=0.1), eps=0.2)


def test_loop_options_with_an_instance_are_accepted():
    res = settle(LIN, Z0, ExplicitEuler(eps=0.5), tol=1e-10, blowup=1e3, cycle_min_tail=10)
    assert res.status is Status.CONVERGED


@pytest.mark.parametrize("opt", [{"blowup": 0.0}, {"blowup": -1.0}, {"cycle_min_tail": 1},
                                 {"progress": "yes"}])
def test_bad_loop_options(opt):
    with pytest.raises((ValueError, TypeError), match=next(iter(opt))):
        settle(LIN, Z0, "euler", **opt)


def test_imex_without_split_names_what_it_needs():
    rotor = SaturatingRotor(1.0, 2.0)
    with pytest.raises(TypeError, match="leak"):
        settle(rotor, torch.ones(1, 2, dtype=F64), "imex")


# ------------------------------------------------------------------------------------------------
# DIVERGED: a named failure with the last finite state, never an exception or a NaN
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_select", [True, False])
def test_nan_mid_run_is_diverged_with_last_finite_state(with_select):
    # F = -(z - z*), Euler eps = 0.1: z_k[0] = z*[0] - (z*[0] - z0[0]) 0.9^k, monotone upward.
    # Sample 1 heads for z*[0] = 3 and crosses the NaN threshold 2 between steps 10 and 11.
    zstar = np.array([[1.0, 1.0], [3.0, 1.0]])
    sys = LinearSystem(-np.eye(2), zstar)
    force = NaNBeyond(sys, coord=0, threshold=2.0)
    if not with_select:
        force = plain(force)
    z0 = torch.tensor([[0.0, 2.0], [0.0, 1.0]], dtype=F64)
    res = settle(force, z0, "euler", eps=0.1, tol=1e-10, max_steps=500)

    ref = euler_iterates_np(linear_force_np(sys), to_np(z0), 0.1, 40)
    k_last = int(np.nonzero(ref[:, 1, 0] <= 2.0)[0].max())
    assert k_last == 10  # the analytic crossing: 3 - 3 * 0.9^k <= 2 iff k <= 10
    assert res.sample_status == (Status.CONVERGED, Status.DIVERGED)
    assert res.status is Status.DIVERGED
    assert torch.isfinite(res.z).all() and torch.isfinite(res.residual).all()
    np.testing.assert_allclose(to_np(res.z[1]), ref[k_last, 1], rtol=1e-12)
    np.testing.assert_allclose(to_np(res.z[0]), zstar[0], rtol=1e-9)
    # The diverged sample stopped where its next step failed.
    assert int(res.steps_per_sample[1]) == k_last + 1
    g = residual_np(linear_force_np(sys), to_np(res.z))
    np.testing.assert_allclose(to_np(res.residual), g, rtol=1e-8, atol=1e-13)


def test_nan_at_z0_is_diverged_at_once_others_converge():
    sys = LinearSystem(-np.eye(2), [[1.0, 1.0], [1.0, 1.0]])
    force = NaNBeyond(sys, coord=0, threshold=5.0)
    z0 = torch.tensor([[0.5, 0.5], [10.0, 0.5]], dtype=F64)
    res = settle(force, z0, "euler", eps=0.5, tol=1e-10, max_steps=200)
    assert res.sample_status == (Status.CONVERGED, Status.DIVERGED)
    assert torch.equal(res.z[1], z0[1])
    assert int(res.nfe_per_sample[1]) == 1


def test_exploding_state_is_diverged():
    sys = saddle()
    z0 = torch.tensor([[1.0 + 1e-3, 1.5]], dtype=F64)
    blowup = 1e4
    res = settle(sys, z0, "euler", eps=0.1, tol=1e-10, max_steps=2000, blowup=blowup)
    assert res.status is Status.DIVERGED
    assert torch.isfinite(res.z).all()
    # the returned state is the last one inside the blow-up limit, and it had grown close to it
    # the limit is in units of z: ||z0|| plus the initial displacement ||F(z0)|| / leak (leak 2)
    limit = blowup * (np.linalg.norm(to_np(z0)) + np.linalg.norm(to_np(sys(z0))) / 2.0)
    norm = np.linalg.norm(to_np(res.z))
    assert limit / 1.2 < norm <= limit
    # it ran away along the unstable eigenvector (e1), as the analytic solution does
    u = to_np(res.z[0]) - sys.centre
    assert abs(u[0]) > 1e3 * abs(u[1])
    # growth factor (1 + eps) per step: steps to leave the limit, from the closed form
    expected = math.ceil(math.log(limit / 1e-3) / math.log(1.1))
    assert abs(res.steps - expected) <= 2


# ------------------------------------------------------------------------------------------------
# Per-sample masking: settled samples stop costing evaluations
# ------------------------------------------------------------------------------------------------
EPS = 0.1
TOL = 1e-8


def _decay_setup():
    sys = decay_system()
    # sample 0 excites the fast mode (x0.8 per step), sample 1 the slow one (x0.95 per step)
    z0 = torch.tensor([[1.5, 1.0], [1.0, 1.5]], dtype=F64)
    ref = euler_iterates_np(linear_force_np(sys), to_np(z0), EPS, 600)
    res_ref = residual_np(linear_force_np(sys), ref)  # (601, 2)
    k = [first_below(res_ref[:, i], TOL) for i in range(2)]
    return sys, z0, ref, k


def test_masking_with_select_feeds_fewer_rows():
    sys, z0, ref, (k0, k1) = _decay_setup()
    assert k1 > k0 + 100  # the setup really separates the samples
    rec = Recorder(sys)
    res = settle(rec, z0, "euler", eps=EPS, tol=TOL, max_steps=1000, **G)
    assert res.status is Status.CONVERGED
    steps = to_np(res.steps_per_sample)
    assert abs(steps[0] - k0) <= 1 and abs(steps[1] - k1) <= 1
    nfe = to_np(res.nfe_per_sample)
    np.testing.assert_array_equal(nfe, steps + 1)  # Euler: one evaluation per step plus F(z0)
    assert nfe[0] < nfe[1]
    # The force really received fewer rows once sample 0 settled.
    log = np.array(rec.log)
    assert log.sum() == nfe.sum()
    assert np.count_nonzero(log == 2) == nfe[0]
    assert np.count_nonzero(log == 1) == nfe[1] - nfe[0]
    assert res.nfe == len(log)
    for i, ki in enumerate((steps[0], steps[1])):
        np.testing.assert_allclose(to_np(res.z[i]), ref[ki, i], rtol=1e-12)


@pytest.mark.parametrize("wrap", [plain, NoSelect], ids=["plain", "split-no-select"])
def test_masking_without_select_is_still_right(wrap):
    sys, z0, ref, (k0, k1) = _decay_setup()
    rec = Recorder(sys)
    force = wrap(rec)  # hides Recorder.select: the loop must embed sub-batches itself
    assert not hasattr(force, "select")
    res = settle(force, z0, "euler", eps=EPS, tol=TOL, max_steps=1000, **G)
    assert res.status is Status.CONVERGED
    steps = to_np(res.steps_per_sample)
    assert abs(steps[0] - k0) <= 1 and abs(steps[1] - k1) <= 1
    # without select every evaluation sees the whole batch ...
    assert set(rec.log) == {2}
    assert res.nfe == len(rec.log)
    # ... but the settled sample is frozen at its own converged iterate, not moved further
    np.testing.assert_allclose(to_np(res.z[0]), ref[steps[0], 0], rtol=1e-12)
    np.testing.assert_allclose(to_np(res.z[1]), ref[steps[1], 1], rtol=1e-12)
    np.testing.assert_array_equal(to_np(res.nfe_per_sample), steps + 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_sample_tol_stops_each_sample_at_its_own_tolerance(dtype):
    # The fast-decaying sample is asked for 1e-12 and the slow one for 1e-1, so the slow one
    # finishes first (the reverse of a common tolerance): each stops at the first manually
    # iterated Euler step below its own tolerance and then consumes no more evaluations.
    sys, z0, ref, _ = _decay_setup()
    res_ref = residual_np(linear_force_np(sys), ref)
    tight, loose = 1e-12, 1e-1
    k = [first_below(res_ref[:, 0], tight), first_below(res_ref[:, 1], loose)]
    assert k[1] < k[0]
    rec = Recorder(sys)
    tol = torch.tensor([tight, loose], dtype=dtype)  # any real dtype; judged in float64
    res = settle(rec, z0, "euler", eps=EPS, tol=tol, max_steps=2000, **G)
    assert res.status is Status.CONVERGED
    steps = to_np(res.steps_per_sample)
    assert abs(steps[0] - k[0]) <= 1 and abs(steps[1] - k[1]) <= 1
    np.testing.assert_array_equal(to_np(res.nfe_per_sample), steps + 1)
    np.testing.assert_array_equal(np.array(rec.log)[steps[1] + 1:], 1)  # only sample 0 left
    final = residual_np(linear_force_np(sys), to_np(res.z))
    assert final[0] <= tight * (1 + 1e-6) and loose / 10 < final[1] <= loose
    assert isinstance(res.info["tol"], torch.Tensor)
    np.testing.assert_allclose(to_np(res.info["tol"]), [tight, loose], rtol=1e-6)
    # a scalar tolerance is reported as the number it was
    assert settle(sys, z0, "euler", eps=EPS, tol=1e-3, max_steps=2000).info["tol"] == 1e-3


def test_per_sample_tol_already_met_at_z0():
    # a sample whose start already meets its own tolerance costs nothing beyond F(z0)
    sys, z0, ref, _ = _decay_setup()
    r0 = residual_np(linear_force_np(sys), ref[0])
    tol = torch.tensor([2 * r0[0], 1e-8], dtype=F64)
    res = settle(sys, z0, "anderson", tol=tol)
    assert res.sample_status[0] is Status.CONVERGED and int(res.steps_per_sample[0]) == 0
    np.testing.assert_allclose(to_np(res.z[0]), ref[0, 0])
    assert res.sample_status[1] is Status.CONVERGED and to_np(res.residual)[1] <= 1e-8


def test_without_select_finished_samples_are_frozen_at_their_final_state():
    # the embed path evaluates the whole batch; a settled sample's row is its settled state
    sys, z0, ref, _ = _decay_setup()
    inputs: list[np.ndarray] = []

    def force(z):
        inputs.append(to_np(z).copy())
        return sys(z)

    res = settle(force, z0, "euler", eps=EPS, tol=TOL, max_steps=1000, **G)
    k0 = int(res.steps_per_sample[0])
    later = np.stack(inputs[k0 + 1:])  # calls after sample 0 settled (call 0 is F(z0))
    assert later.shape[0] == int(res.steps_per_sample[1]) - k0
    np.testing.assert_array_equal(later[:, 0], np.broadcast_to(to_np(res.z[0]), later[:, 0].shape))


def test_masking_without_select_split_imex():
    # IMEX through a force with a per-sample (batch, n) leak and no select: the loop must index the
    # leak rows itself. Reference: the IMEX recursion in numpy.
    A = np.diag([-2.0, -0.5])
    leak = np.array([[2.0, 0.5], [1.0, 0.25]])  # any split is valid: N = F + leak z
    zstar = np.array([[1.0, 1.0], [2.0, -1.0]])

    class PerSampleLeak:
        def __init__(self):
            self.lin = LinearSystem(A, -(A @ zstar.T).T)
            self.leak = torch.from_numpy(leak)

        def __call__(self, z):
            return self.lin(z)

        def nonlinear(self, z):
            return self.lin(z) + self.leak.to(z.dtype) * z

    z0 = torch.tensor([[1.5, 1.0], [2.0, 0.0]], dtype=F64)
    eps = 0.7
    res = settle(PerSampleLeak(), z0, "imex", eps=eps, tol=TOL, max_steps=500, **G)
    assert res.status is Status.CONVERGED
    f_np = lambda z: z @ A.T - (A @ zstar.T).T  # noqa: E731
    z = to_np(z0)
    zs = [z]
    for _ in range(500):
        z = (z + eps * (f_np(z) + leak * z)) / (1 + eps * leak)
        zs.append(z)
    zs = np.stack(zs)
    rr = residual_np(f_np, zs)
    k = [first_below(rr[:, i], TOL) for i in range(2)]
    assert k[0] != k[1]
    steps = to_np(res.steps_per_sample)
    for i in range(2):
        assert abs(steps[i] - k[i]) <= 1
        np.testing.assert_allclose(to_np(res.z[i]), zs[steps[i], i], rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# SettleResult fields
# ------------------------------------------------------------------------------------------------
def test_result_fields_shapes_and_values():
    sys = well_conditioned(n=4, seed=1, batch=3)
    z0 = torch.zeros(3, 4, dtype=F64) + 0.1
    eps = 0.2
    res = settle(sys, z0, "euler", eps=eps, tol=1e-9, max_steps=5000, **G)
    assert isinstance(res, SettleResult)
    assert res.status is Status.CONVERGED and res.converged
    assert res.z.shape == z0.shape and res.z.dtype == F64
    assert res.residual.shape == (3,) and res.residual.dtype == F64
    assert len(res.sample_status) == 3
    n = res.steps
    tr = res.trace
    assert tr.residual.shape == (n + 1,)
    assert tr.step_residual.shape == (n,)
    assert tr.step_size.shape == (n,)
    assert tr.time.shape == (n + 1,)
    assert tr.sample_residual.shape == (n + 1, 3)
    assert n == int(res.steps_per_sample.max())
    # residual recomputed independently at the returned state
    fnp = linear_force_np(sys)
    np.testing.assert_allclose(to_np(res.residual), residual_np(fnp, to_np(res.z)), rtol=1e-8,
                               atol=1e-13)
    assert float(res.residual.max()) <= 1e-9
    # trace entry 0 is the initial state; the last entry the final residuals
    assert float(tr.residual[0]) == pytest.approx(residual_np(fnp, to_np(z0)).max(), rel=1e-12)
    np.testing.assert_allclose(to_np(tr.sample_residual[-1]), to_np(res.residual), rtol=1e-12)
    # Euler: t is the sum of its step sizes, per sample
    np.testing.assert_allclose(to_np(res.t), eps * to_np(res.steps_per_sample), rtol=1e-12)
    np.testing.assert_allclose(to_np(tr.step_size), eps, rtol=1e-12)
    assert float(tr.time[-1]) == pytest.approx(eps * n, rel=1e-12)
    assert float(tr.time[0]) == 0.0
    # NFE: one per step plus F(z0); the batch count is calls, not rows
    assert res.nfe >= n + 1
    np.testing.assert_array_equal(to_np(res.nfe_per_sample), to_np(res.steps_per_sample) + 1)
    # and the state is the fixed point
    zstar = sys.fixed_point()
    bound = sys.inv_norm * 1e-9 * np.linalg.norm(zstar, axis=1) * 1.01
    assert np.all(np.linalg.norm(to_np(res.z) - zstar, axis=1) <= bound)
    assert "euler" in res.summary()


def test_trace_state_norm_and_cumulative_nfe():
    sys, z0, ref, _ = _decay_setup()
    res = settle(sys, z0, "euler", eps=EPS, tol=TOL, max_steps=1000)
    tr = res.trace
    n = res.steps
    steps = to_np(res.steps_per_sample)
    # ||z|| per sample and step; a finished sample keeps its final norm
    norms = np.linalg.norm(ref, axis=-1)  # (601, 2) from the numpy Euler iterates
    expected = np.stack([norms[np.minimum(np.arange(n + 1), steps[i]), i] for i in range(2)], 1)
    assert tr.sample_state_norm.shape == (n + 1, 2)
    np.testing.assert_allclose(to_np(tr.sample_state_norm), expected, rtol=1e-12)
    # cumulative evaluations: F(z0), then one call per step (on one or two rows)
    assert tr.nfe.shape == (n + 1,)
    np.testing.assert_array_equal(to_np(tr.nfe), np.arange(1, n + 2))
    assert int(tr.nfe[-1]) == res.nfe


def test_observer_sees_the_active_samples_and_costs_no_evaluation():
    sys, z0, ref, _ = _decay_setup()
    seen: list[tuple[int, tuple]] = []

    def energy(z, index):
        seen.append((z.shape[0], None if index is None else tuple(index.tolist())))
        return (z * z).sum(1)

    base = settle(sys, z0, "euler", eps=EPS, tol=TOL, max_steps=1000)
    res = settle(sys, z0, "euler", eps=EPS, tol=TOL, max_steps=1000, observer=energy)
    assert res.nfe == base.nfe and torch.equal(res.z, base.z)
    steps = to_np(res.steps_per_sample)
    n = res.steps
    energies = (ref**2).sum(-1)  # (601, 2)
    expected = np.stack([energies[np.minimum(np.arange(n + 1), steps[i]), i] for i in range(2)], 1)
    np.testing.assert_allclose(to_np(res.trace.observed), expected, rtol=1e-12)
    # after sample 0 settled, the observer got only sample 1, with its batch index
    assert seen[0] == (2, None)
    assert seen[-1] == (1, (1,))


def test_observer_validation():
    with pytest.raises(TypeError, match="observer"):
        settle(LIN, Z0, "euler", observer=3)
    with pytest.raises(ValueError, match="observer"):
        settle(LIN, Z0, "euler", observer=lambda z, index: z)  # (k, n), not (k,)


def test_status_is_the_worst_and_per_sample_status():
    # sample 0 converges fast; sample 1 is far and the budget ends while it still decays
    A = np.diag([-1.0, -0.01])
    sys = LinearSystem(A, -(A @ np.ones(2)))
    z0 = torch.tensor([[1.2, 1.0], [1.0, 5.0]], dtype=F64)
    res = settle(sys, z0, "euler", eps=0.5, tol=1e-8, max_steps=150)
    assert res.sample_status == (Status.CONVERGED, Status.MAX_STEPS)
    assert res.status is Status.MAX_STEPS
    assert res.cycles[0] is None and res.cycles[1] is not None
    assert not res.cycles[1].is_cycle


def test_convergence_is_judged_on_force_not_step_residual():
    # Tiny eps: the step residual eps * g is far below tol, the force residual g is O(1).
    sys = LinearSystem(-np.eye(2), [1.0, 2.0])
    z0 = torch.tensor([[3.0, -1.0]], dtype=F64)
    tol = 1e-3
    res = settle(sys, z0, "euler", eps=1e-6, tol=tol, max_steps=60)
    assert float(res.trace.step_residual.max()) < tol / 100
    g = residual_np(linear_force_np(sys), to_np(res.z))
    assert g[0] > 100 * tol
    assert res.status is Status.MAX_STEPS
    assert not res.converged


@pytest.mark.parametrize("method", ["euler", "imex"])
def test_tol_below_the_precision_floor_is_stalled(method):
    # float64 cannot drive ||F|| / ||z|| below ~1e-16: the tail sits on rounding noise, which is
    # neither a cycle nor a run that needs more steps
    sys = well_conditioned(n=4, seed=1, batch=2)
    z0 = torch.full((2, 4), 0.1, dtype=F64)
    res = settle(sys, z0, method, eps=0.2, tol=1e-20, max_steps=1500)
    assert res.status is Status.STALLED
    assert set(res.sample_status) <= {Status.STALLED, Status.CONVERGED}
    g = residual_np(linear_force_np(sys), to_np(res.z))
    assert np.all(g <= 100 * np.finfo(np.float64).eps)
    zstar = sys.fixed_point()
    np.testing.assert_allclose(to_np(res.z), zstar, rtol=1e-13)


def test_result_is_detached_when_z0_requires_grad():
    # the steps run under no_grad: settle is not differentiable, so its result must not pretend
    # to be (a backward through it would silently give zero gradients)
    sys = well_conditioned(n=4, seed=6, batch=2)
    z0 = torch.full((2, 4), 0.1, dtype=F64, requires_grad=True)
    res = settle(sys, z0, "euler", eps=0.2, tol=1e-9)
    assert res.status is Status.CONVERGED
    assert not res.z.requires_grad
    assert not res.residual.requires_grad


def test_seeded_repeat_is_identical():
    sys = well_conditioned(n=4, seed=3, batch=3)
    z0 = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(7))
    a = settle(sys, z0, "euler", eps=0.2, tol=1e-9)
    b = settle(sys, z0, "euler", eps=0.2, tol=1e-9)
    assert torch.equal(a.z, b.z)
    assert a.nfe == b.nfe and a.steps == b.steps and a.sample_status == b.sample_status
    assert torch.equal(a.trace.sample_residual, b.trace.sample_residual)
    assert torch.equal(a.nfe_per_sample, b.nfe_per_sample)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("method", ["euler", "imex"])
def test_float32_and_float64(dtype, tol, method):
    sys = well_conditioned(n=4, seed=2, batch=2)
    z0 = torch.zeros(2, 4, dtype=dtype) + 0.5
    res = settle(sys, z0, method, eps=0.2, tol=tol, max_steps=5000, **G)
    assert res.status is Status.CONVERGED
    assert res.z.dtype == dtype and res.residual.dtype == dtype
    z = to_np(res.z).astype(np.float64)
    zstar = sys.fixed_point()
    # ||F(z)|| <= tol ||z|| as the library evaluated it, up to the rounding of F in `dtype`
    rounding = 10 * torch.finfo(dtype).eps * np.linalg.norm(sys.A_np, 2)
    bound = sys.inv_norm * (tol + rounding) * np.linalg.norm(z, axis=1) * 1.01
    assert np.all(np.linalg.norm(z - zstar, axis=1) <= bound)


def test_complex_state_euler():
    A = np.array([[-1.0, 0.3], [-0.2, -2.0]])
    zstar = np.array([[1.0 + 2.0j, -0.5j], [0.5, 1.0 - 1.0j]])
    sys = LinearSystem(A, -(A @ zstar.T).T)
    z0 = torch.full((2, 2), 0.5 - 0.5j, dtype=torch.complex128)
    res = settle(sys, z0, "euler", eps=0.2, tol=1e-10, max_steps=2000, **G)
    assert res.status is Status.CONVERGED
    assert res.z.dtype == torch.complex128
    assert res.residual.dtype == F64 and res.t.dtype == F64
    np.testing.assert_allclose(to_np(res.z), zstar, atol=1e-9)
    g = np.linalg.norm(to_np(res.z) @ A.T + sys.b_np, axis=1) / np.linalg.norm(to_np(res.z), axis=1)
    np.testing.assert_allclose(to_np(res.residual), g, rtol=1e-8, atol=1e-13)
    # steps from the closed form: z_k - z* = (I + eps A)^k (z0 - z*)
    ref = euler_iterates_np(lambda z: z @ A.T + sys.b_np, to_np(z0), 0.2, 2000)
    rr = residual_np(lambda z: z @ A.T + sys.b_np, ref)
    for i in range(2):
        assert abs(int(res.steps_per_sample[i]) - first_below(rr[:, i], 1e-10)) <= 1


def test_multidimensional_state():
    # states (batch, tokens, channels): norms and residuals are over all non-batch dimensions
    sys = well_conditioned(n=6, seed=4, batch=2)
    z0 = torch.full((2, 2, 3), 0.3, dtype=F64)
    res = settle(plain(sys), z0, "euler", eps=0.2, tol=1e-9, max_steps=3000)
    assert res.status is Status.CONVERGED
    assert res.z.shape == (2, 2, 3) and res.residual.shape == (2,)
    np.testing.assert_allclose(to_np(res.z).reshape(2, 6), sys.fixed_point(), atol=1e-7)


def test_instance_and_name_agree():
    sys = well_conditioned(n=4, seed=5, batch=2)
    z0 = torch.ones(2, 4, dtype=F64)
    a = settle(sys, z0, "imex", eps=0.3, tol=1e-9)
    b = settle(sys, z0, IMEXEuler(eps=0.3), tol=1e-9)
    assert torch.equal(a.z, b.z) and a.steps == b.steps


# ------------------------------------------------------------------------------------------------
# CountedForce: the wrapper every method evaluates the force through
# ------------------------------------------------------------------------------------------------
def _per_sample_split():
    A = np.array([[-2.0, 0.5], [0.1, -1.0]])
    b = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    return LinearSystem(A, b, leak=1.5), A, b


@pytest.mark.parametrize("wrap", [lambda s: s, NoSelect], ids=["select", "no-select"])
def test_counted_force_restricted_call(wrap):
    from analogeq.integrators import CountedForce

    sys, A, b = _per_sample_split()
    z = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=F64)
    counted = CountedForce(wrap(sys), z)
    counted.refresh(z)
    idx = torch.tensor([0, 2])
    view = counted.restrict(idx)
    out = view(z[idx])
    np.testing.assert_allclose(to_np(out), to_np(z[idx]) @ A.T + b[[0, 2]], rtol=1e-15)
    assert counted.calls == 1
    np.testing.assert_array_equal(to_np(counted.per_sample), [1, 0, 1])


@pytest.mark.parametrize("wrap", [lambda s: s, NoSelect], ids=["select", "no-select"])
def test_counted_force_restricted_nonlinear(wrap):
    from analogeq.integrators import CountedForce

    sys, A, b = _per_sample_split()
    z = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=F64)
    counted = CountedForce(wrap(sys), z)
    counted.refresh(z)
    idx = torch.tensor([0, 2])
    view = counted.restrict(idx)
    assert view.has_split and view.leak == 1.5
    zs = to_np(z[idx])
    expected = zs @ A.T + b[[0, 2]] + 1.5 * zs  # N = F + leak z on the selected rows
    np.testing.assert_allclose(to_np(view.nonlinear(z[idx])), expected, rtol=1e-15)
    assert counted.calls == 1
    np.testing.assert_array_equal(to_np(counted.per_sample), [1, 0, 1])
