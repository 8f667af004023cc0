"""Fidelity verdicts on systems whose answer is known analytically (docs/physics.md section 3).

References are independent of analogeq's probes: analytic eigenvalues and eps_crit, numpy matrix
powers for linear Euler trajectories, dense autograd Jacobians with torch.linalg.eigvals, scipy
root finding, and the Ornstein-Uhlenbeck noise floor.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.optimize
import torch
from analogeq.integrators import (
    Anderson,
    EulerMaruyama,
    ExplicitEuler,
    IMEXEuler,
    ODESolver,
    Status,
    settle,
)
from analogeq.integrators.maruyama import ou_noise_floor

from analogeq import EquilibriumTransformer, ModelConfig, systems
from analogeq.fidelity import (
    KNOCKOUT_GROUPS,
    Instability,
    Verdict,
    compare,
    eps_sweep,
    euler_step,
    knockout,
)
from analogeq.scenarios import (
    RealSaddle,
    build_scenario,
    transformer_model,
    transformer_tokens,
)


def analytic_eps_crit(a: float, b: float) -> float:
    return 2 * a / (a * a + b * b)


class LinearFocus:
    """F(z) = R (z - c), R = [[-a, -b], [b, -a]]: eigenvalues -a +- ib, a normal matrix."""

    def __init__(self, a: float, b: float, centre=(1.0, 2.0)):
        self.R = torch.tensor([[-a, -b], [b, -a]], dtype=torch.float64)
        self.c = torch.tensor([centre], dtype=torch.float64)
        self.leak = a

    def __call__(self, z):
        return (z - self.c) @ self.R.T

    def nonlinear(self, z):
        return self(z) + self.leak * z


class OU:
    """F(z) = -a (z - c): the Ornstein-Uhlenbeck drift, one sample of n entries."""

    def __init__(self, a: float, n: int):
        self.a = a
        self.c = torch.linspace(1.0, 2.0, n, dtype=torch.float64)[None]
        self.leak = a

    def __call__(self, z):
        return -self.a * (z - self.c)

    def nonlinear(self, z):
        return self(z) + self.leak * z


# ------------------------------------------------------------------------------------------------
# the saturating rotor: artifact above eps_crit, faithful below


@pytest.mark.parametrize("a,b", [(1.0, 5.0), (0.5, 3.0)])
def test_rotor_artifact_above_eps_crit_faithful_below(a, b):
    rotor = systems.SaturatingRotor(a=a, b=b, batch=1)
    ec = analytic_eps_crit(a, b)
    above, below = ExplicitEuler(eps=1.3 * ec), ExplicitEuler(eps=0.7 * ec)
    rep = compare(rotor, rotor.initial_state(), {"above": above, "below": below},
                  max_steps=3000)
    assert rep.reference.sample_status == (Status.CONVERGED,)
    assert rep.stability == ("stable",)
    assert rep.methods["above"].verdict is Verdict.DISCRETIZATION_ARTIFACT
    assert rep.methods["below"].verdict is Verdict.FAITHFUL
    assert rep.verdict is Verdict.DISCRETIZATION_ARTIFACT and rep.kind is None
    # eps_crit within 1 % of 2a / (a^2 + b^2), limited by the analytic pair -a +- ib
    assert float(rep.eps_crit.eps_crit[0]) == pytest.approx(ec, rel=1e-2)
    lim = complex(rep.eps_crit.limiting[0])
    assert abs(lim.real + a) < 1e-3 and abs(abs(lim.imag) - b) < 1e-3
    # the offending eigenvalues are exactly the pair, |1 + h mu| > 1 by the analytic formula
    off = sorted(rep.methods["above"].samples[0].offending, key=lambda m: m.imag)
    assert len(off) == 2
    for m, sign in zip(off, (-1, 1), strict=True):
        assert abs(m - complex(-a, sign * b)) < 1e-4
    assert rep.methods["below"].samples[0].offending == ()
    assert rep.methods["below"].samples[0].distance < 1e-3
    # the reference's fixed point is the analytic centre
    assert torch.allclose(rep.z_star, rotor.fixed_point, atol=1e-5)


def test_report_renders_text_json_and_figure(tmp_path):
    rotor = systems.SaturatingRotor(a=1.0, b=5.0, batch=2)
    rep = compare(rotor, rotor.initial_state(), ["euler"])
    text = rep.text()
    assert "DISCRETIZATION_ARTIFACT" in text and "force" in text and "step" in text
    assert "eps_crit" in text
    data = json.loads(json.dumps(rep.to_dict(), allow_nan=False))  # JSON-safe, no NaN/inf
    assert data["verdict"] == "discretization_artifact"
    m = data["methods"]["euler(eps=0.1)"]
    assert m["euler_step"] == pytest.approx(0.1)
    for s in m["samples"]:  # both residual kinds per method
        assert s["force_residual"] > 0.1 and "force_floor" in s
    assert m["step_residual"] > 0
    path = rep.plot(tmp_path / "f.png")
    assert path.stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------
# genuine instabilities


def test_hopf_is_a_continuous_instability_even_where_anderson_converges():
    hopf = systems.HopfOscillator(mu=0.5, omega=3.0, batch=1)
    rep = compare(hopf, hopf.initial_state(), ["euler", Anderson()], reference_steps=200)
    assert rep.reference.status is not Status.CONVERGED
    assert rep.root_source == ("anderson",) and bool(rep.root_found[0])
    assert rep.verdict is Verdict.CONTINUOUS_INSTABILITY and rep.kind is Instability.HOPF
    # Anderson converges at the unstable centre: converged is not stable
    anderson = rep.methods["anderson"]
    assert anderson.result.status is Status.CONVERGED
    assert anderson.verdict is Verdict.CONTINUOUS_INSTABILITY
    assert rep.methods["euler(eps=0.1)"].verdict is Verdict.CONTINUOUS_INSTABILITY
    pool = rep.pool(0)
    assert np.min(np.abs(pool - complex(0.5, 3.0))) < 1e-6
    assert np.min(np.abs(pool - complex(0.5, -3.0))) < 1e-6


def test_real_saddle_is_a_real_instability():
    saddle = RealSaddle(lam=0.5, a=1.0, batch=2)
    rep = compare(saddle, saddle.initial_state(), ["euler"], reference_steps=150)
    assert all(s is not Status.CONVERGED for s in rep.reference.sample_status)
    assert rep.verdict is Verdict.CONTINUOUS_INSTABILITY and rep.kind is Instability.REAL
    for i in range(2):
        pool = rep.pool(i)
        assert np.max(pool.real) == pytest.approx(0.5, abs=1e-8)
        assert np.all(np.abs(pool.imag) < 1e-12)
        assert rep.methods["euler(eps=0.1)"].samples[i].kind is Instability.REAL


def test_healthy_system_is_faithful_at_the_scipy_root():
    f = systems.ContractiveTanh(n=6, batch=2, seed=3)
    rep = compare(f, f.initial_state(), ["euler", IMEXEuler(eps=0.5)])
    assert rep.verdict is Verdict.FAITHFUL
    for i in range(2):
        def g(x, i=i):
            z = torch.from_numpy(x)[None]
            return f.select(torch.tensor([i]))(z)[0].numpy()
        root = scipy.optimize.fsolve(g, np.zeros(6), xtol=1e-13)
        assert np.allclose(rep.z_star[i].numpy(), root, atol=1e-5)
    # IMEX's linear map is I + h J with h = eps / (1 + eps leak)
    assert rep.methods["imex(eps=0.5)"].euler_step == pytest.approx(0.5 / (1 + 0.5 * 2.0))


def test_too_few_steps_is_not_converged_with_a_step_budget_to_try():
    rotor = systems.SaturatingRotor(a=1.0, b=5.0, batch=1)
    rep = compare(rotor, rotor.initial_state(), [ExplicitEuler(eps=0.05)], max_steps=60,
                  max_extend=0)
    res = rep.methods["euler(eps=0.05)"].result
    s = rep.methods["euler(eps=0.05)"].samples[0]
    assert s.status is Status.MAX_STEPS and not rep.extra["extended"]
    assert s.verdict is Verdict.NOT_CONVERGED and "max_steps" in s.next_step
    # the suggested budget follows the linear contraction |1 + eps mu| = |0.95 + 0.25j| and the
    # scaled error (the convergence test passes at 1)
    rho = abs(1 + 0.05 * complex(-1, 5))
    need = math.ceil(math.log(1.0 / float(res.error[0])) / math.log(rho))
    assert f">= {60 + need}" in s.next_step


def test_a_run_converging_at_a_measured_rate_gets_its_budget_extended():
    # Euler at half its eps_crit on a stable rotor: a budget of 200 steps ends while it still
    # converges at |1 + eps mu| per step; compare continues it (same convergence test) and gives
    # the verdict. Reference: the same settle with a budget large enough from the start.
    rotor = systems.SaturatingRotor(a=1.0, b=5.0, batch=1)
    euler = ExplicitEuler(eps=0.5 * rotor.eps_crit)
    full = settle(rotor, rotor.initial_state(), euler, max_steps=5000)
    assert full.status is Status.CONVERGED and full.steps > 400
    rep = compare(rotor, rotor.initial_state(), [euler], max_steps=200)
    label = next(iter(rep.methods))
    s = rep.methods[label].samples[0]
    assert s.status is Status.CONVERGED and s.verdict is Verdict.FAITHFUL, s.reason
    note = rep.extra["extended"][label]
    assert note["samples"] == [0] and note["statuses"] == ["converged"]
    # Euler carries no state but z: the continued run is the long run, step for step
    res = rep.methods[label].result
    assert res.steps == full.steps and note["extra_steps"] == full.steps - 200
    torch.testing.assert_close(res.z, full.z)
    # and what the linear contraction at z* predicts from step 200
    rho = abs(1 + euler.eps * complex(-1, 5))
    predicted = math.log(float(res.trace.sample_error[200, 0])) / -math.log(rho)
    assert 0.7 * predicted <= note["extra_steps"] <= 1.3 * predicted
    # with max_extend=0 the same run stays NOT_CONVERGED
    off = compare(rotor, rotor.initial_state(), [euler], max_steps=200, max_extend=0)
    assert next(iter(off.methods.values())).samples[0].verdict is Verdict.NOT_CONVERGED


# ------------------------------------------------------------------------------------------------
# stochastic forces: a noise floor is not a cycle


def test_noise_floor_is_reported_as_noise_not_a_cycle():
    a, sigma, n, eps = 1.0, 0.02, 8, 0.01
    force = OU(a, n)
    z0 = force.c + 0.5
    # the loop's own stop rule disabled: its tail test then calls the noisy floor a cycle
    em = EulerMaruyama(eps=eps, sigma=sigma, seed=0, max_drift_ratio=1e-12)
    rep = compare(force, z0, {"em": em}, max_steps=6000)
    s = rep.methods["em"].samples[0]
    assert s.status in (Status.LIMIT_CYCLE, Status.MAX_STEPS)
    assert s.verdict is Verdict.FAITHFUL and "noise floor" in s.reason
    expected = ou_noise_floor(a, sigma, float(torch.linalg.vector_norm(force.c)), n, eps)
    assert s.noise_floor == pytest.approx(expected, rel=0.25)
    # the same noise with the rule on: converged at its floor, same verdict
    rep2 = compare(force, z0, [EulerMaruyama(eps=eps, sigma=sigma, seed=0)], max_steps=6000)
    s2 = next(iter(rep2.methods.values())).samples[0]
    assert s2.status is Status.CONVERGED and s2.verdict is Verdict.FAITHFUL
    assert s2.noise_floor is not None


def test_noise_on_an_euler_unstable_rotor_is_still_an_artifact():
    rotor = systems.SaturatingRotor(a=1.0, b=5.0, batch=1)
    em = EulerMaruyama(eps=0.1, sigma=0.01, seed=1, max_drift_ratio=1e-12)
    rep = compare(rotor, rotor.initial_state(), [em], max_steps=2000)
    s = next(iter(rep.methods.values())).samples[0]
    assert s.verdict is Verdict.DISCRETIZATION_ARTIFACT and s.noise_floor is None


# ------------------------------------------------------------------------------------------------
# the transformer scenario: Euler at 0.1 cycles, the circuit settles


def test_transformer_scenario_euler_cycles_while_the_circuit_settles():
    sc = build_scenario("transformer")
    # a second sample (the next random tokens) where Euler settles, but in another basin
    model, tokens = transformer_model(0), transformer_tokens(2, 0)
    assert torch.equal(tokens[:1], sc.force.inputs)
    force = model.force(tokens)
    rep = compare(force, model.initial_state(force), sc.methods)
    euler = rep.methods["euler(eps=0.1)"]
    assert euler.result.sample_status[0] is Status.LIMIT_CYCLE
    assert rep.reference.sample_status == (Status.CONVERGED, Status.CONVERGED)
    assert rep.sample_verdicts[0] is Verdict.DISCRETIZATION_ARTIFACT
    assert rep.verdict is Verdict.DISCRETIZATION_ARTIFACT
    # dense autograd Jacobian at the reference's fixed point: stable, eps_crit < 0.1
    z = rep.z_star[:1].detach()
    J = torch.autograd.functional.jacobian(lambda v: sc.force(v.view_as(z)).reshape(-1),
                                           z.reshape(-1))
    mu = torch.linalg.eigvals(J).numpy()
    assert mu.real.max() < 0
    ec = float(np.min(-2 * mu.real / np.abs(mu) ** 2))
    assert ec < 0.1
    assert float(rep.eps_crit.eps_crit[0]) == pytest.approx(ec, rel=1e-2)
    off = euler.samples[0].offending
    assert off and all(abs(1 + 0.1 * m) > 1 and m.real < 0 for m in off)
    # sample 1: Euler converges to a fixed point far from the circuit's: not faithful
    s1 = euler.samples[1]
    assert s1.status is Status.CONVERGED and s1.distance > 0.1
    assert s1.verdict is Verdict.NOT_CONVERGED and "another basin" in s1.reason


def test_a_strongly_coupled_transformer_is_a_genuine_hopf_instability():
    """Found by measurement (benchmarks/results/fidelity.md): c = 1, init_scale 8, attn_gain 4.
    Anderson from z0 cycles; from the reference's end it finds the unstable root."""
    cfg = ModelConfig(vocab_size=16, d_model=16, n_heads=2, context=8, c=1.0, init_scale=8.0,
                      attn_gain=4.0, dtype=torch.float64)
    model = EquilibriumTransformer(cfg, seed=0)
    force = model.force(transformer_tokens(1, 0))
    rep = compare(force, model.initial_state(force), ["euler"], reference_steps=200,
                  max_steps=1000, root_steps=300)
    assert rep.reference.status is Status.LIMIT_CYCLE
    assert rep.root_source == ("anderson from the reference's end",) and bool(rep.root_found[0])
    assert rep.verdict is Verdict.CONTINUOUS_INSTABILITY and rep.kind is Instability.HOPF
    z = rep.z_star.detach()
    J = torch.autograd.functional.jacobian(lambda v: force(v.view_as(z)).reshape(-1),
                                           z.reshape(-1))
    mu = torch.linalg.eigvals(J).numpy()
    lead = mu[np.argmax(mu.real)]
    assert lead.real > 0 and abs(lead.imag) > 0.1  # an unstable complex pair: Hopf
    assert np.min(np.abs(rep.pool(0) - lead)) < 1e-6


# ------------------------------------------------------------------------------------------------
# eps sweep


def test_eps_sweep_floors_match_the_linear_prediction():
    a, b = 1.0, 5.0
    f = LinearFocus(a, b)
    z0 = f.c + torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    eps_values, T = [0.1, 0.05, 0.02], 20.0
    sw = eps_sweep(f, z0, eps_values, T, tol=1e-300, tail_fraction=0.1)
    assert float(sw.eps_crit[0]) == pytest.approx(analytic_eps_crit(a, b), rel=1e-2)
    R = f.R.numpy()
    for j, eps in enumerate(eps_values):
        n = round(T / eps)
        assert sw.steps[j] == n
        M = np.eye(2) + eps * R
        u = (z0 - f.c).numpy()[0]
        g = []
        for _ in range(n + 1):
            g.append(np.linalg.norm(R @ u) / np.linalg.norm(f.c.numpy()[0] + u))
            u = M @ u
        g = np.asarray(g)
        m = max(1, int(0.1 * g.size))
        expected = float(np.median(g[-m:]))
        assert float(sw.force_floor[j][0]) == pytest.approx(expected, rel=1e-6)
        # Euler's step residual is eps * g: the same floor scaled by eps
        steps = eps * g[:-1]
        assert sw.step_floor[j] == pytest.approx(float(np.median(steps[-max(1, int(0.1 * n)):])),
                                                 rel=1e-6)
        assert float(sw.rho[j][0]) == pytest.approx(abs(1 + eps * complex(-a, b)), rel=1e-9)
        assert bool(sw.predicted_stable[j][0]) == (eps < analytic_eps_crit(a, b))
    assert "force floor" in sw.text()


def test_eps_sweep_step_residual_shrinks_while_the_force_floor_stays():
    """docs/physics.md section 2: a Hopf cycle 'converges' only on the step residual."""
    hopf = systems.HopfOscillator(mu=0.5, omega=3.0)
    sw = eps_sweep(hopf, hopf.initial_state(), [0.1, 0.03, 0.01], 30.0)
    force = [float(f.max()) for f in sw.force_floor]
    assert min(force) > 0.3  # the force residual floors high at every eps
    assert sw.step_floor[0] > 3 * sw.step_floor[1] > 9 * sw.step_floor[2]
    assert not any(bool(p.any()) for p in sw.predicted_stable)  # Re mu > 0: never stable


# ------------------------------------------------------------------------------------------------
# knockout


def _tiny_model() -> tuple[EquilibriumTransformer, torch.Tensor]:
    # default init_scale: the block contracts, so its fixed point is unique (Newton and the
    # root-finder must find the same one)
    cfg = ModelConfig(vocab_size=7, d_model=8, n_heads=2, context=4, dtype=torch.float64)
    model = EquilibriumTransformer(cfg, seed=1)
    tokens = torch.randint(0, 7, (1, 4), generator=torch.Generator().manual_seed(2))
    return model, tokens


def _dense_leading(model, tokens, k: int) -> np.ndarray:
    """Leading eigenvalues at the fixed point from Newton's method on the dense autograd
    Jacobian (float64), independent of analogeq's settle and probes."""
    force = model.force(tokens)
    z = model.initial_state(force).reshape(-1).clone()
    shape = model.initial_state(force).shape

    def fun(v):
        return force(v.view(shape)).reshape(-1)

    for _ in range(50):
        J = torch.autograd.functional.jacobian(fun, z)
        with torch.no_grad():
            f = fun(z)
            if float(f.norm()) < 1e-12:
                break
            z = z - torch.linalg.solve(J, f)
    with torch.no_grad():
        assert float(fun(z).norm()) < 1e-10
    J = torch.autograd.functional.jacobian(fun, z)
    mu = torch.linalg.eigvals(J).numpy()
    return mu[np.lexsort((-mu.imag, -mu.real))][:k]


def test_knockout_changes_eigenvalues_as_the_dense_jacobian_predicts():
    model, tokens = _tiny_model()
    before = {n: p.clone() for n, p in model.named_parameters()}
    res = knockout(model, tokens, {"attention_out": 0.2, "ffn_out": 2.0}, k=4)
    for n, p in model.named_parameters():  # the caller's model is untouched
        assert torch.equal(p, before[n])
    assert set(res.parameters) == {"attn.o.weight", "attn.o.bias", "ffn.down.weight",
                                   "ffn.down.bias"}
    # reference: the same scaling by hand on an independent copy
    ref_model, _ = _tiny_model()
    with torch.no_grad():
        ref_model.attn.o.weight.mul_(0.2)
        ref_model.attn.o.bias.mul_(0.2)
        ref_model.ffn.down.weight.mul_(2.0)
        ref_model.ffn.down.bias.mul_(2.0)
    want_knocked = _dense_leading(ref_model, tokens, 4)
    want_base = _dense_leading(model, tokens, 4)
    got_knocked = res.knocked.eigs.values[0].numpy()
    got_base = res.baseline.eigs.values[0].numpy()
    assert np.allclose(got_knocked, want_knocked, atol=1e-6)
    assert np.allclose(got_base, want_base, atol=1e-6)
    assert np.max(np.abs(want_knocked - want_base)) > 1e-2  # the knockout did change them
    assert "knockout" in res.text()
    json.dumps(res.to_dict(), allow_nan=False)


def test_knockout_validates_groups_and_factors():
    model, tokens = _tiny_model()
    with pytest.raises(ValueError, match="attention_out"):
        knockout(model, tokens, {"attn": 0.2})
    with pytest.raises(ValueError, match=">= 0"):
        knockout(model, tokens, {"attention_out": -1.0})
    with pytest.raises(TypeError, match="non-empty"):
        knockout(model, tokens, {})
    with pytest.raises(TypeError, match="EquilibriumTransformer"):
        knockout(lambda z: z, tokens, {"attention_out": 0.2})
    assert "attention_out" in KNOCKOUT_GROUPS


# ------------------------------------------------------------------------------------------------
# bad inputs


def test_compare_rejects_bad_inputs():
    rotor = systems.SaturatingRotor(batch=1)
    z0 = rotor.initial_state()
    with pytest.raises(ValueError, match="at least one"):
        compare(rotor, z0, [])
    with pytest.raises(TypeError, match="method"):
        compare(rotor, z0, [42])
    with pytest.raises(ValueError, match="unknown method"):
        compare(rotor, z0, ["bogus"])
    with pytest.raises(TypeError, match="ODESolver"):
        compare(rotor, z0, ["euler"], reference="ode")
    with pytest.raises(ValueError, match="tol"):
        compare(rotor, z0, ["euler"], tol=-1.0)
    with pytest.raises(ValueError, match="reference_steps"):
        compare(rotor, z0, ["euler"], reference_steps=10)
    with pytest.raises(TypeError, match="real"):
        compare(rotor, z0.to(torch.complex128), ["euler"])
    with pytest.raises(TypeError, match="callable"):
        compare("rotor", z0, ["euler"])


def test_eps_sweep_rejects_bad_inputs():
    rotor = systems.SaturatingRotor(batch=1)
    z0 = rotor.initial_state()
    with pytest.raises(ValueError, match="at least one"):
        eps_sweep(rotor, z0, [], 10.0)
    with pytest.raises(ValueError, match="> 0"):
        eps_sweep(rotor, z0, [0.1, 0.0], 10.0)
    with pytest.raises(ValueError, match="total_time"):
        eps_sweep(rotor, z0, [0.1], 0.0)
    with pytest.raises(ValueError, match="max_total_steps"):
        eps_sweep(rotor, z0, [1e-7], 10.0)


def test_euler_step_of_each_method():
    f = systems.ContractiveTanh(batch=1)
    assert euler_step(ExplicitEuler(eps=0.2), f) == 0.2
    assert euler_step(EulerMaruyama(eps=0.01, sigma=0.1), f) == 0.01
    assert euler_step(IMEXEuler(eps=1.0), f) == pytest.approx(1.0 / 3.0)
    assert euler_step(ODESolver(), f) is None and euler_step(Anderson(), f) is None


def test_reference_tolerances_follow_the_dtype():
    rotor = systems.SaturatingRotor(a=1.0, b=5.0, batch=1, dtype=torch.float32)
    rep = compare(rotor, rotor.initial_state(), ["euler"])
    assert rep.reference.info["tol"] == 1e-6 and rep.z_star.dtype == torch.float32
    assert rep.verdict is Verdict.DISCRETIZATION_ARTIFACT
    assert rep.reference.status is Status.CONVERGED


def test_scenarios_reach_their_expected_verdicts():
    for name in ("healthy", "artifact", "hopf", "real"):
        sc = build_scenario(name)
        rep = compare(sc.force, sc.z0, sc.methods, **sc.options)
        assert rep.verdict.value == sc.expected, name
        assert (rep.kind.value if rep.kind else None) == sc.kind, name
    with pytest.raises(ValueError, match="scenario"):
        build_scenario("nope")
    # the start state matters: settle() on the saddle from its fixed point stays there
    saddle = RealSaddle()
    assert settle(saddle, saddle.fixed_point, "euler", max_steps=10).converged


# ------------------------------------------------------------------------------------------------
# the root search escalates until a root is found


class _TanhHopf:
    """F = -z + (1.5 I + R) tanh(z) + b, R a rotation (angular speed 2) on pairs of nodes: the root
    near 0 has Jacobian -I + (1.5 I + R) sech^2, eigenvalues ~ 0.5 +- 2j: a Hopf instability."""

    leak = 1.0

    def __init__(self, n: int, bias: bool, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        R = torch.zeros(n, n, dtype=torch.float64)
        for i in range(0, n - 1, 2):
            R[i, i + 1], R[i + 1, i] = 2.0, -2.0
        self.W = 1.5 * torch.eye(n, dtype=torch.float64) + R
        self.b = (0.3 * torch.randn(n, generator=g, dtype=torch.float64) if bias
                  else torch.zeros(n, dtype=torch.float64))

    def nonlinear(self, z):
        return torch.tanh(z) @ self.W.T + self.b

    def __call__(self, z):
        return -z + self.nonlinear(z)


@pytest.mark.parametrize("bias", [True, False])
def test_a_tanh_hopf_oscillator_is_a_continuous_instability(bias):
    force = _TanhHopf(6, bias)
    z0 = torch.tensor([[0.3] * 6, [-0.6] * 6], dtype=torch.float64)
    rep = compare(force, z0, ["euler"])
    assert rep.verdict is Verdict.CONTINUOUS_INSTABILITY and rep.kind is Instability.HOPF
    assert bool(rep.root_found.all())
    # the root is a root: F(z*) = 0, solved independently by scipy from the found point
    for i in range(2):
        zi = rep.z_star[i].numpy()
        sol = scipy.optimize.root(lambda z: force(torch.from_numpy(z)[None])[0].numpy(), zi,
                                  tol=1e-14)
        np.testing.assert_allclose(zi, sol.x, atol=1e-7)
        # and it is unstable: the dense Jacobian there has a complex pair with Re mu > 0
        J = torch.autograd.functional.jacobian(lambda z: force(z[None])[0],
                                               torch.from_numpy(sol.x))
        ev = np.linalg.eigvals(J.numpy())
        assert (ev.real > 0).any() and (np.abs(ev.imag[ev.real > 0]) > 0.1).all()


def test_the_root_search_escalates_past_a_failed_finder_and_names_the_one_that_found_it():
    force = _TanhHopf(6, bias=True)
    z0 = torch.tensor([[0.3] * 6, [-0.6] * 6], dtype=torch.float64)
    # Anderson alone finds no root here (the reference cycles around it): not_converged
    alone = compare(force, z0, ["euler"], root=Anderson(fallback=None))
    assert not bool(alone.root_found.any()) and alone.verdict is Verdict.NOT_CONVERGED
    # the default escalation goes on to pseudo-transient continuation, which finds it
    rep = compare(force, z0, ["euler"])
    assert bool(rep.root_found.all())
    assert all(src.startswith("ptc(") for src in rep.root_source), rep.root_source
    assert [label for label, _ in rep.extra["root_runs"]][0] == "anderson"
