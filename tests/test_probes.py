"""analogeq.probes against independent references: dense autograd Jacobians with
torch.linalg.eigvals / eigvalsh, and analytic spectra (analogeq.systems and the rotor bank below,
whose Jacobian at its centre is Q R Q^T with R block-diagonal rotations)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from analogeq.integrators import CycleReport, Status, settle

from analogeq import EquilibriumTransformer, ModelConfig, probes, systems

F64 = torch.float64


# ------------------------------------------------------------------------------------------------
# references and fixtures


def dense_jacobian(force, z, i):
    """(n, n) Jacobian of sample i by torch.autograd.functional.jacobian (float64 if z is)."""
    shape = z[i : i + 1].shape
    one = force.select(torch.tensor([i])) if hasattr(force, "select") else None

    def f(v):
        if one is not None:
            return one(v.view(shape)).reshape(-1)
        full = torch.cat((z[:i], v.view(shape), z[i + 1 :]))
        return force(full)[i].reshape(-1)

    return torch.autograd.functional.jacobian(f, z[i].reshape(-1))


def criterion(vals, which, eps=None):
    """Larger is better, as in ARPACK's selections."""
    vals = np.asarray(vals, dtype=complex)
    return {
        "LR": vals.real,
        "SR": -vals.real,
        "LM": np.abs(vals),
        "LI": np.abs(vals.imag),
        "euler": np.abs(1 + (eps or 0.0) * vals),
    }[which]


def assert_leading(got, dense, which, eps=None, atol=1e-7):
    """`got` are genuine eigenvalues of `dense` and carry its k best criterion values."""
    got = np.asarray(got, dtype=complex)
    dense = np.asarray(dense, dtype=complex)
    assert np.all(np.isfinite(got))
    dist = np.abs(got[:, None] - dense[None, :]).min(axis=1)
    assert dist.max() < atol, (got, dense)
    top = np.sort(criterion(dense, which, eps))[::-1][: got.size]
    np.testing.assert_allclose(np.sort(criterion(got, which, eps))[::-1], top, atol=atol)
    # sorted best first
    c = criterion(got, which, eps)
    assert np.all(np.diff(c) <= atol)


def make_block(dtype=F64, batch=2, T=6, C=16, H=2, seed=0, settle_it=True):
    cfg = ModelConfig(vocab_size=40, d_model=C, n_heads=H, context=T, dtype=dtype,
                      init_scale=1.5)
    model = EquilibriumTransformer(cfg, seed=seed)
    toks = torch.randint(0, 40, (batch, T), generator=torch.Generator().manual_seed(seed + 1))
    force = model.force(toks)
    z = model.settle(toks, tol=1e-9 if dtype == F64 else 1e-5).z if settle_it else \
        model.initial_state(force)
    return model, force, z


@pytest.fixture(scope="module")
def block():
    return make_block()


class RotorBank:
    """F(z) = Q R tanh(Q^T (z - c)), R block-diagonal; states (batch, 2m).

    A pair (a, b) with b > 0 is a rotation block [[-a, -b], [b, -a]] (eigenvalues -a +- i b); with
    b < 0 it is the real block diag(-a, b) (eigenvalues -a and b: two distinct real modes, since a
    Krylov method sees a repeated eigenvalue only once). At z = c the Jacobian is Q R Q^T
    (tanh'(0) = 1): the spectrum is analytic, and so is Euler's eps_crit.
    """

    def __init__(self, pairs, batch=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        m = len(pairs)
        R = torch.zeros(2 * m, 2 * m, dtype=F64)
        for j, (a, b) in enumerate(pairs):
            block = [[-a, -b], [b, -a]] if b > 0 else [[-a, 0.0], [0.0, b]]
            R[2 * j : 2 * j + 2, 2 * j : 2 * j + 2] = torch.tensor(block, dtype=F64)
        Q, _ = torch.linalg.qr(torch.randn(2 * m, 2 * m, generator=g, dtype=F64))
        self.Q, self.R, self.pairs = Q, R, pairs
        self.c = 1.0 + torch.rand(batch, 2 * m, generator=g, dtype=F64)

    def __call__(self, z):
        u = torch.tanh((z - self.c.to(z)) @ self.Q.to(z))
        return u @ self.R.to(z).T @ self.Q.to(z).T

    def select(self, index):
        out = copy.copy(self)
        out.c = self.c.index_select(0, index)
        return out

    @property
    def eigenvalues(self):
        vals = []
        for a, b in self.pairs:
            vals += [complex(-a, b), complex(-a, -b)] if b > 0 else [complex(-a), complex(b)]
        return np.array(vals)

    @property
    def eps_crit(self):
        mu = self.eigenvalues
        return float(np.min(-2 * mu.real / np.abs(mu) ** 2))


# Slow modes lead in real part, a stiff real mode leads in magnitude, but Euler is limited by the
# rotating mode -1 +- 6i (eps_crit 2/37 = 0.054 < 2/20 = 0.1 of the stiff one).
BANK_PAIRS = [(0.1, -0.12), (0.15, 0.3), (0.2, -0.25), (0.3, 0.5), (0.5, -0.55), (0.7, 1.0),
              (1.0, 6.0), (2.0, -2.5), (3.0, 1.0), (4.0, -4.5), (6.0, 2.0), (20.0, -0.6)] + [
    (0.4 + 0.1 * j, 0.2 * (j + 1)) for j in range(8)]


@pytest.fixture(scope="module")
def bank():
    return RotorBank(BANK_PAIRS)


# ------------------------------------------------------------------------------------------------
# jacobian_eigs vs dense eigvals


@pytest.mark.parametrize("which", ["LR", "LM", "SR", "LI"])
def test_arpack_eigs_match_dense_eigvals_on_a_block(block, which):
    _, force, z = block
    vals = probes.jacobian_eigs(force, z, k=6, which=which, method="arpack")
    assert vals.shape == (2, 6) and vals.dtype == torch.complex128
    for i in range(2):
        dense = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
        assert_leading(vals[i].numpy(), dense, which, atol=1e-6)


def test_euler_dominant_eigs_match_dense(block):
    _, force, z = block
    eps = 0.3
    res = probes.jacobian_eigs(force, z, k=5, which="euler", eps=eps, method="arpack", info=True)
    assert res.which == "euler" and res.eps == eps and res.all_converged
    for i in range(2):
        dense = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
        assert_leading(res.values[i].numpy(), dense, "euler", eps, atol=1e-6)
        rho = np.abs(1 + eps * dense).max()
        assert float(res.euler_factor(eps)[i, 0]) == pytest.approx(rho, rel=1e-8)


@pytest.mark.parametrize("ad", ["reverse", "forward"])
def test_both_jvp_modes_and_the_no_select_path_agree_with_dense(block, ad):
    _, force, z = block

    def plain(v):  # no select: every product runs on the whole batch with the others frozen
        return force(v)

    # forward mode runs the force's forward pass on every product: only the select path
    for f in (force, plain) if ad == "reverse" else (force,):
        res = probes.jacobian_eigs(f, z, k=4, method="arpack", ad=ad, info=True)
        assert res.all_converged
        assert bool((res.n_matvec > 0).all())
        for i in range(2):
            dense = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
            assert_leading(res.values[i].numpy(), dense, "LR", atol=1e-6)


def test_dense_method_and_auto_agree_with_dense(block):
    _, force, z = block
    for method in ("dense", "auto"):
        res = probes.jacobian_eigs(force, z, k=7, method=method, info=True)
        assert res.method == "dense"
        for i in range(2):
            dense = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
            assert_leading(res.values[i].numpy(), dense, "LR", atol=1e-9)


def test_float64_option_on_a_float32_model_leaves_the_model_alone():
    model, force, z = make_block(dtype=torch.float32, settle_it=False)
    ref_model = copy.deepcopy(model).to(F64)
    ref_force = ref_model.force(force.inputs)
    z64 = z.to(F64)
    res = probes.jacobian_eigs(force, z, k=4, method="arpack", dtype=F64, info=True)
    assert res.values.dtype == torch.complex128 and res.dtype == F64
    assert model.dtype == torch.float32
    assert all(p.grad is None for p in model.parameters())
    for i in range(2):
        dense = torch.linalg.eigvals(dense_jacobian(ref_force, z64, i)).numpy()
        assert_leading(res.values[i].numpy(), dense, "LR", atol=1e-7)
    # float32 products, default tolerance: still accurate to ~1e-5 relative
    v32 = probes.jacobian_eigs(force, z, k=4, method="arpack")
    assert v32.dtype == torch.complex64
    np.testing.assert_allclose(v32.numpy(), res.values.numpy(), atol=1e-4)


def test_non_convergence_returns_what_converged_and_says_so():
    # an isolated leading pair (-0.05 +- 1i) that converges fast, then a tight cluster of 24
    # pairs near -1 that a small restart budget cannot resolve
    bank = RotorBank([(0.05, 1.0)] + [(1.0 + 0.002 * j, 0.1 + 0.05 * j) for j in range(24)])
    opts = dict(k=6, which="LR", method="arpack", ncv=10, guard=0, maxiter=12, tol=1e-10)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        vals = probes.jacobian_eigs(bank, bank.c, **opts)
    res = probes.jacobian_eigs(bank, bank.c, info=True, **opts)
    assert not res.all_converged and all(res.messages)
    assert res.converged.tolist() == [[True, True, False, False, False, False]] * 2
    np.testing.assert_array_equal(torch.isnan(vals.real).numpy(), (~res.converged).numpy())
    np.testing.assert_allclose(res.values[:, :2].numpy(), [[-0.05 + 1j, -0.05 - 1j]] * 2,
                               atol=1e-8)
    # with the default budget everything converges
    assert probes.jacobian_eigs(bank, bank.c, k=6, method="arpack", info=True).all_converged


def test_rotor_bank_leading_eigs_are_analytic(bank):
    z = bank.c
    vals = probes.jacobian_eigs(bank, z, k=6, which="LR", method="arpack")
    ref = bank.eigenvalues
    for i in range(2):
        assert_leading(vals[i].numpy(), ref, "LR", atol=1e-8)
    lm = probes.jacobian_eigs(bank, z, k=2, which="LM", method="arpack")
    assert complex(lm[0, 0]) == pytest.approx(-20.0, abs=1e-8)


def test_stiff_linear_spectrum_lognorm_and_symmetry():
    s = systems.StiffLinear(n=40, stiffness=1e3, batch=2, seed=3)
    z = s.fixed_point
    vals = probes.jacobian_eigs(s, z, k=3, which="LM", method="arpack")
    np.testing.assert_allclose(vals.real.numpy(), -np.tile(s.lambdas.numpy()[::-1][:3], (2, 1)),
                               rtol=1e-8)
    np.testing.assert_allclose(vals.imag.numpy(), 0.0, atol=1e-8)
    # A is symmetric: mu_2 = max eigenvalue = -1, and no antisymmetric part at all
    ln = probes.lognorm(s, z, method="arpack")
    np.testing.assert_allclose(ln.numpy(), -1.0, rtol=1e-8)
    asym = probes.asymmetry(s, z, n_probes=4)
    assert float(asym.ratio.max()) < 1e-12


# ------------------------------------------------------------------------------------------------
# lognorm


@pytest.mark.parametrize("method", ["arpack", "dense"])
def test_lognorm_matches_dense_eigvalsh(block, method):
    _, force, z = block
    res = probes.lognorm(force, z, method=method, info=True)
    assert res.value.shape == (2,) and res.value.dtype == F64 and bool(res.converged.all())
    for i in range(2):
        J = dense_jacobian(force, z, i)
        ref = float(torch.linalg.eigvalsh(0.5 * (J + J.T)).max())
        assert float(res.value[i]) == pytest.approx(ref, abs=1e-7)
    # the log-norm bounds every eigenvalue's real part
    lr = probes.jacobian_eigs(force, z, k=1)
    assert bool((lr[:, 0].real <= res.value + 1e-9).all())


def test_lognorm_float64_option_on_float32_model():
    model, force, z = make_block(dtype=torch.float32, settle_it=False)
    ref_force = copy.deepcopy(model).to(F64).force(force.inputs)
    val = probes.lognorm(force, z, method="arpack", dtype=F64)
    assert val.dtype == F64
    for i in range(2):
        J = dense_jacobian(ref_force, z.to(F64), i)
        assert float(val[i]) == pytest.approx(float(torch.linalg.eigvalsh(0.5 * (J + J.T)).max()),
                                              abs=1e-8)


# ------------------------------------------------------------------------------------------------
# Euler's critical step


def test_euler_critical_step_of_the_saturating_rotor_is_analytic():
    rotor = systems.SaturatingRotor(a=0.7, b=3.0, batch=3)
    eigs = probes.jacobian_eigs(rotor, rotor.fixed_point, k=2)
    step = probes.euler_critical_step(eigs)
    np.testing.assert_allclose(step.eps_crit.numpy(), rotor.eps_crit, rtol=1e-2)
    np.testing.assert_allclose(step.eps_crit.numpy(), 2 * 0.7 / (0.7**2 + 9.0), rtol=1e-10)
    assert not bool(step.unstable.any()) and all(v.numel() == 0 for v in step.nonnegative)
    mu = complex(step.limiting[0])
    assert abs(1 + float(step.eps_crit[0]) * mu) == pytest.approx(1.0, abs=1e-12)


def test_find_eps_crit_finds_the_rotating_mode_that_limits_euler(bank):
    z = bank.c
    lr = probes.jacobian_eigs(bank, z, k=6, which="LR", method="arpack")
    bound = probes.euler_critical_step(lr)
    # the leading real parts say nothing about Euler's limit: a loose upper bound
    assert float(bound.eps_crit.min()) > 2 * bank.eps_crit
    found = probes.find_eps_crit(bank, z, k=6, known=lr, method="arpack")
    np.testing.assert_allclose(found.eps_crit.numpy(), bank.eps_crit, rtol=1e-2)
    assert bool(found.certified.all())
    np.testing.assert_allclose(found.limiting.numpy().real, -1.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(found.limiting.numpy().imag), 6.0, atol=1e-6)


def test_find_eps_crit_matches_dense_on_a_block(block):
    _, force, z = block
    found = probes.find_eps_crit(force, z, method="arpack")
    for i in range(2):
        ev = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
        ref = np.min(-2 * ev.real / np.abs(ev) ** 2)
        assert float(found.eps_crit[i]) == pytest.approx(ref, rel=1e-2)
    assert bool(found.certified.all())


def test_euler_critical_step_flags_and_edge_cases():
    nan = complex(math.nan, math.nan)
    eigs = torch.tensor([[complex(-1, 2), complex(0.5, 3), complex(0.5, -3), nan],
                         [complex(0.0, 1.0), complex(-2, 0), nan, nan],
                         [complex(1, 0), complex(0.2, 0), nan, nan]], dtype=torch.complex128)
    step = probes.euler_critical_step(eigs)
    assert float(step.eps_crit[0]) == pytest.approx(2 / 5)
    assert float(step.eps_crit[1]) == pytest.approx(1.0)
    assert math.isinf(float(step.eps_crit[2])) and math.isnan(float(step.limiting[2].real))
    assert step.unstable.tolist() == [True, False, True]
    assert step.any_nonnegative.tolist() == [True, True, True]
    assert [v.numel() for v in step.nonnegative] == [2, 1, 2]
    assert step.n_eigs.tolist() == [3, 2, 2]
    assert "UNSTABLE" in step.text(0) and "marginal" in step.text(1)
    # a single sample's set, as a 1-D array
    one = probes.euler_critical_step(np.array([-1 + 1j, -3 + 0j]))
    assert float(one.eps_crit[0]) == pytest.approx(min(1.0, 2 / 3))


def test_euler_critical_step_of_unknown_eigenvalues_is_never_safe():
    # no finite eigenvalue: the step limit is unknown (NaN), not "any step is safe" (inf)
    nan = complex(math.nan, math.nan)
    step = probes.euler_critical_step(torch.tensor([[nan, nan], [complex(-1, 0), nan]]))
    assert math.isnan(float(step.eps_crit[0])) and not bool(step.unstable[0])
    assert math.isnan(float(step.limiting[0].real))
    assert float(step.eps_crit[1]) == pytest.approx(2.0)
    assert step.n_eigs.tolist() == [0, 1]
    # infinite eigenvalues are an error, not a verdict
    for bad in (complex(-math.inf, 0), complex(-1, math.inf), complex(math.inf, 0)):
        with pytest.raises(ValueError, match="eigs must be finite"):
            probes.euler_critical_step(np.array([bad, -1 + 0j]))


# ------------------------------------------------------------------------------------------------
# asymmetry


def test_asymmetry_of_the_rotor_is_exact_for_every_probe():
    a, b = 0.5, 2.0
    rotor = systems.SaturatingRotor(a=a, b=b, batch=3)
    res = probes.asymmetry(rotor, rotor.fixed_point, n_probes=5, seed=1)
    # J = [[-a, -b], [b, -a]]: S = -a I, A = b [[0, -1], [1, 0]], so ||A v|| / ||S v|| = b / a
    np.testing.assert_allclose(res.ratio.numpy(), b / a, rtol=1e-12)
    np.testing.assert_allclose(res.relative_probes.numpy(), 2 * b / math.hypot(a, b), rtol=1e-12)


def test_asymmetry_matches_dense_frobenius_ratio(block):
    _, force, z = block
    res = probes.asymmetry(force, z, n_probes=400, seed=0)
    for i in range(2):
        J = dense_jacobian(force, z, i)
        S, A = 0.5 * (J + J.T), 0.5 * (J - J.T)
        ref = float(torch.linalg.matrix_norm(A) / torch.linalg.matrix_norm(S))
        assert float(res.ratio[i]) == pytest.approx(ref, rel=0.08)
        assert abs(float(res.ratio[i]) - ref) < 5 * float(res.ratio_stderr[i])
    again = probes.asymmetry(force, z, n_probes=400, seed=0)
    assert torch.equal(again.ratio, res.ratio)  # seeded: repeatable bit for bit


# ------------------------------------------------------------------------------------------------
# detect_cycle re-export


def test_detect_cycle_accepts_a_settle_result_and_its_trace():
    rotor = systems.SaturatingRotor(a=1.0, b=4.0, batch=2)
    z0 = rotor.initial_state()
    cycling = settle(rotor, z0, "euler", eps=1.5 * rotor.eps_crit, max_steps=3000, tol=1e-10)
    assert cycling.status is Status.LIMIT_CYCLE
    for rep in (probes.detect_cycle(cycling), probes.detect_cycle(cycling.trace),
                probes.detect_cycle(cycling, sample=1)):
        assert isinstance(rep, CycleReport) and rep.is_cycle and not rep.monotone
    settling = settle(rotor, z0, "euler", eps=0.5 * rotor.eps_crit, max_steps=3000, tol=1e-10)
    assert not probes.detect_cycle(settling).is_cycle
    # a short trace is a transient, never a cycle
    assert not probes.detect_cycle(cycling.trace.residual[:40].numpy(), min_tail=50).is_cycle
    with pytest.raises(ValueError, match="sample"):
        probes.detect_cycle([1.0, 2.0], sample=0)
    with pytest.raises(ValueError, match="sample"):
        probes.detect_cycle(cycling, sample=2)


# ------------------------------------------------------------------------------------------------
# finite-time Lyapunov exponents


def test_ftle_at_a_fixed_point_euler_vs_continuous():
    # leading mode -0.2 +- 2i, well separated from the rest (the tangent aligns in ~100 steps)
    bank = RotorBank([(0.2, 2.0), (1.0, -1.5), (2.0, 1.0), (3.0, 8.0)], seed=2)
    z = bank.c
    mu = bank.eigenvalues
    eps = 0.05
    res = probes.ftle(bank, z, eps=eps, steps=600, transient=150, method="euler")
    ref = np.max(np.log(np.abs(1 + eps * mu))) / eps
    np.testing.assert_allclose(res.exponent.numpy(), ref, rtol=1e-3)
    np.testing.assert_allclose(res.multiplier.numpy(), np.max(np.abs(1 + eps * mu)), rtol=1e-4)
    cont = probes.ftle(bank, z, eps=0.1, steps=300, transient=75, method="rk4")
    np.testing.assert_allclose(cont.exponent.numpy(), np.max(mu.real), rtol=1e-3)
    assert not bool(res.diverged.any())
    assert res.history.shape == (450, 2)


def test_ftle_tells_an_euler_artifact_from_the_continuous_dynamics():
    rotor = systems.SaturatingRotor(a=1.0, b=4.0, batch=2)
    z = rotor.fixed_point
    mu = complex(-1.0, 4.0)
    eps = 1.5 * rotor.eps_crit
    euler = probes.ftle(rotor, z, eps=eps, steps=200, transient=10)
    np.testing.assert_allclose(euler.exponent.numpy(), math.log(abs(1 + eps * mu)) / eps,
                               rtol=1e-6)
    assert bool((euler.exponent > 0).all())
    # J = R is normal with one |Re mu| for both modes: every tangent grows at rate -1 at once
    cont = probes.ftle(rotor, z, eps=0.02, steps=100, method="rk4")
    np.testing.assert_allclose(cont.exponent.numpy(), -1.0, rtol=1e-3)


def test_ftle_on_the_hopf_limit_cycle_is_zero():
    hopf = systems.HopfOscillator(mu=0.5, omega=3.0, batch=2)
    u = torch.tensor([[math.sqrt(0.5), 0.0], [0.0, -math.sqrt(0.5)]], dtype=F64)
    # the radial direction contracts at rate 2 mu = 1: after t = 10 the tangent lies along the flow
    res = probes.ftle(hopf, hopf.centre + u, eps=0.05, steps=600, transient=200, method="rk4")
    assert float(res.exponent.abs().max()) < 0.01
    # and the centre is an unstable focus: exponent = mu
    centre = probes.ftle(hopf, hopf.centre, eps=0.05, steps=100, method="rk4")
    np.testing.assert_allclose(centre.exponent.numpy(), 0.5, rtol=1e-3)


def test_ftle_along_a_given_trajectory():
    a, b = 1.0, 4.0
    rotor = systems.SaturatingRotor(a=a, b=b, batch=2)
    eps = 0.1
    traj = rotor.fixed_point.expand(301, 2, 2).clone()  # sitting at the fixed point
    res = probes.ftle_along(rotor, traj, eps, transient=20)
    ref = math.log(abs(1 + eps * complex(-a, b))) / eps
    np.testing.assert_allclose(res.exponent.numpy(), ref, rtol=1e-6)
    steps = torch.full((300,), eps, dtype=F64)
    res2 = probes.ftle_along(rotor, list(traj), steps, transient=20)
    np.testing.assert_allclose(res2.exponent.numpy(), ref, rtol=1e-6)
    assert res2.eps is None and res.eps == eps


def test_ftle_flags_divergence():
    def explode(z):
        return 1000.0 * z

    z0 = torch.ones(2, 3, dtype=F64)
    res = probes.ftle(explode, z0, eps=1.0, steps=200)
    assert bool(res.diverged.all())
    np.testing.assert_allclose(res.exponent.numpy(), math.log(1001.0), rtol=1e-9)
    assert bool(torch.isfinite(res.z).all())


# ------------------------------------------------------------------------------------------------
# probe_report


def test_probe_report_text_plot_and_dict(block, tmp_path):
    _, force, z = block
    rep = probes.probe_report(force, z, k=4, eps=0.1, n_probes=8)
    text = rep.text()
    for word in ("force residual", "log-norm", "eps_crit", "asymmetry", "Euler-dominant"):
        assert word in text
    assert "NOT certified" not in text
    path = rep.plot(tmp_path / "spectrum.png")
    assert path.exists() and path.stat().st_size > 1000
    data = json.loads(json.dumps(rep.to_dict()))
    assert len(data["eigs"]["values"]) == 2 and len(data["eps_crit"]) == 2
    for i in range(2):
        ev = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
        ref = np.min(-2 * ev.real / np.abs(ev) ** 2)
        assert float(rep.euler.eps_crit[i]) == pytest.approx(ref, rel=1e-2)


def test_probe_report_without_eps_or_search_reports_a_bound(block, tmp_path):
    _, force, z = block
    rep = probes.probe_report(force, z, k=4, eps=None, n_probes=4, search_eps_crit=False)
    assert rep.euler_eigs is None and rep.spectral_radius is None
    text = rep.text()
    assert "Euler-dominant" not in text and "bound from the eigenvalues given" in text
    # the bound from the leading eigenvalues is never below the true eps_crit
    for i in range(2):
        ev = torch.linalg.eigvals(dense_jacobian(force, z, i)).numpy()
        assert float(rep.euler.eps_crit[i]) >= np.min(-2 * ev.real / np.abs(ev) ** 2) - 1e-12
    assert rep.plot(tmp_path / "s.svg").exists()


# ------------------------------------------------------------------------------------------------
# the forward-mode fallback


class _Cube(torch.autograd.Function):
    """x^3 with a once-differentiable backward (no double-backward rule) and a forward rule."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 3 * x * x * t


def test_auto_falls_back_to_forward_mode_without_double_backward():
    W = torch.randn(12, 12, generator=torch.Generator().manual_seed(0), dtype=F64) / 4

    def force(z):
        return -z + _Cube.apply(z) @ W.T

    z = 0.5 + torch.rand(1, 12, generator=torch.Generator().manual_seed(1), dtype=F64)
    J = torch.diag(torch.full((12,), -1.0, dtype=F64)) + W * (3 * z[0] ** 2)[None, :]
    dense = torch.linalg.eigvals(J).numpy()
    vals = probes.jacobian_eigs(force, z, k=4, method="arpack", ad="auto")
    assert_leading(vals[0].numpy(), dense, "LR", atol=1e-8)
    with pytest.raises(RuntimeError):
        probes.jacobian_eigs(force, z, k=4, method="arpack", ad="reverse")


def test_host_blas_threads_are_restored_after_arpack(bank):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
        probes.jacobian_eigs(bank, bank.c, k=2, method="arpack")
        probes.lognorm(bank, bank.c, method="arpack")
        after = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    assert after == before


# ------------------------------------------------------------------------------------------------
# input validation


def test_bad_inputs_name_the_argument(block):
    _, force, z = block
    cases = [
        (lambda: probes.jacobian_eigs(force, z, k=0), ValueError, "k must"),
        (lambda: probes.jacobian_eigs(force, z, k=1000), ValueError, "k must"),
        (lambda: probes.jacobian_eigs(force, z, k=95, method="arpack"), ValueError, "k must"),
        (lambda: probes.jacobian_eigs(force, z, k=2.0), TypeError, "k must"),
        (lambda: probes.jacobian_eigs(force, z, which="XX"), ValueError, "which must"),
        (lambda: probes.jacobian_eigs(force, z, which="euler"), ValueError, "eps must"),
        (lambda: probes.jacobian_eigs(force, z, eps=0.1), ValueError, "eps is only"),
        (lambda: probes.jacobian_eigs(force, z, which="euler", eps=-1.0), ValueError, "eps must"),
        (lambda: probes.jacobian_eigs(force, z, method="lapack"), ValueError, "method must"),
        (lambda: probes.jacobian_eigs(force, z, ad="sideways"), ValueError, "ad must"),
        (lambda: probes.jacobian_eigs(force, z, method="arpack", ncv=3), ValueError, "ncv must"),
        (lambda: probes.jacobian_eigs(force, z, method="arpack", guard=-1), ValueError,
         "guard must"),
        (lambda: probes.jacobian_eigs(force, z, method="arpack", tol=0.0), ValueError, "tol must"),
        (lambda: probes.jacobian_eigs(force, z, method="dense", tol=1e-3), ValueError, "tol is"),
        (lambda: probes.jacobian_eigs(force, z, dtype=torch.float16), TypeError, "dtype must"),
        (lambda: probes.jacobian_eigs(force, z.half()), TypeError, "dtype"),
        (lambda: probes.jacobian_eigs(force, z[0]), ValueError, "z must"),
        (lambda: probes.jacobian_eigs(force, z.numpy()), TypeError, "z must"),
        (lambda: probes.jacobian_eigs(force, z * math.nan), ValueError, "z must be finite"),
        (lambda: probes.jacobian_eigs(42, z), TypeError, "force must"),
        (lambda: probes.jacobian_eigs(lambda v: v[:, :1], z), ValueError, "shape"),
        (lambda: probes.jacobian_eigs(force, z, seed="a"), TypeError, "seed must"),
        (lambda: probes.lognorm(force, z, method="arpack", ncv=1), ValueError, "ncv must"),
        (lambda: probes.asymmetry(force, z, n_probes=0), ValueError, "n_probes must"),
        (lambda: probes.ftle(force, z, steps=0), ValueError, "steps must"),
        (lambda: probes.ftle(force, z, steps=5, transient=5), ValueError, "transient must"),
        (lambda: probes.ftle(force, z, method="rk45"), ValueError, "method must"),
        (lambda: probes.ftle_along(force, z[:, 0, :], 0.1), ValueError, "trajectory must"),
        (lambda: probes.ftle_along(force, z.expand(3, *z.shape), torch.ones(5)), ValueError,
         "dt must"),
        (lambda: probes.euler_critical_step(torch.zeros(2, 2, 2, dtype=torch.complex64)),
         ValueError, "eigs must"),
        (lambda: probes.euler_critical_step("x"), TypeError, "eigs must"),
        (lambda: probes.find_eps_crit(force, z, rtol=0.0), ValueError, "rtol must"),
        (lambda: probes.find_eps_crit(force, z, known=torch.zeros(3, 2)), ValueError, "known"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
