"""Tests for analogeq.learning: AsymEP, holomorphic EP, the implicit adjoint, BPTT, the gate.

References are computed here, independently of the code under test:
* the equilibrium gradient from a *dense* implicit adjoint: settle tightly, the full Jacobian of the
  force by torch.autograd.functional.jacobian, lam = torch.linalg.solve(J^T, -dL/dz), then
  dL/dtheta = dL/dtheta|_z + lam^T dF/dtheta by autograd;
* central finite differences of the settled loss along a random parameter direction (no adjoint
  formula at all);
* BPTT: the Euler / IMEX unroll re-written by hand and differentiated by autograd.

Models (float64, tiny): an equilibrium transformer block (d_model 8, 2 heads, 5 tokens, batch 2)
with init_scale 1.0, whose Jacobian is strongly non-symmetric (||A|| / ||S|| ~ 0.4), and a
conservative gradient-flow model F = -grad E (symmetric Jacobian) written below.

The free phase is settled once per model by IMEX relaxation to 1e-12 and handed to the estimators
(`free=`), as a trainer would: the tests judge the estimators, not the free-phase integrator.
`test_defaults_end_to_end` runs everything with the defaults (Anderson free phase).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as Fn
from analogeq.integrators import IMEXEuler, Status, settle
from torch import nn

from analogeq.learning import (
    BPTT,
    AsymEP,
    GradientResult,
    HolomorphicEP,
    ImplicitAdjoint,
    bptt_gradient,
    compare_gradients,
    comparison_table,
    exact_gradient,
)
from analogeq.learning._nudge import Linearization, LossGradient, NudgedForce, complexify
from analogeq.model import EquilibriumTransformer, ModelConfig

F64 = torch.float64


# ------------------------------------------------------------------------------------------------
# models and references


def block(seed: int = 0, **overrides) -> EquilibriumTransformer:
    cfg = dict(vocab_size=11, d_model=8, n_heads=2, context=5, init_scale=1.0, dtype=F64)
    cfg.update(overrides)
    return EquilibriumTransformer(ModelConfig(**cfg), seed=seed)


def batch(B: int = 2, T: int = 5, vocab: int = 11, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, vocab, (B, T), generator=g)
    tgt = torch.randint(0, vocab, (B, T), generator=g)
    return tok, tgt


class _GradientFlowForce:
    """F(z) = -dE/dz = x_in - leak z + (1 - tanh(z)^2) * (tanh(z) W), W symmetric, per token.

    E(z) = leak/2 |z|^2 - x_in . z - 1/2 sum_t tanh(z_t)^T W tanh(z_t): a conservative force, its
    Jacobian is the negative Hessian of E, symmetric. No `select`: exercises the embedding path.
    """

    def __init__(self, model: GradientFlowModel, tokens: torch.Tensor):
        self.model, self.tokens = model, tokens
        self.leak = model.leak

    @property
    def x_in(self) -> torch.Tensor:
        return self.model.embed(self.tokens) + self.model.pos.weight[: self.tokens.shape[1]]

    def nonlinear(self, z: torch.Tensor) -> torch.Tensor:
        s = torch.tanh(z)
        W = self.model.W.to(z.dtype)
        return self.x_in.to(z.dtype) + (1 - s * s) * (s @ W)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(z) - self.leak * z


class GradientFlowModel(nn.Module):
    """A conservative equilibrium model with the estimators' protocol (force, initial_state,
    loss)."""

    def __init__(self, vocab: int = 11, C: int = 8, T: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.leak = 2.0
        self.embed = nn.Embedding(vocab, C, dtype=F64)
        self.pos = nn.Embedding(T, C, dtype=F64)
        self.w_raw = nn.Parameter(torch.randn(C, C, generator=g, dtype=F64) * 0.6)
        self.head = nn.Linear(C, vocab, dtype=F64)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, C, generator=g, dtype=F64))
            self.pos.weight.copy_(torch.randn(T, C, generator=g, dtype=F64) * 0.5)
            self.head.weight.copy_(torch.randn(vocab, C, generator=g, dtype=F64) / math.sqrt(C))

    @property
    def W(self) -> torch.Tensor:
        return (self.w_raw + self.w_raw.T) / 2

    def force(self, tokens: torch.Tensor) -> _GradientFlowForce:
        return _GradientFlowForce(self, tokens)

    def initial_state(self, force: _GradientFlowForce, z0=None) -> torch.Tensor:
        return force.x_in.detach() / force.leak

    def loss(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy; complex z: its holomorphic extension (for holomorphic EP)."""
        if not z.is_complex():
            logits = self.head(z)
            return Fn.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        logits = z @ self.head.weight.T.to(z.dtype) + self.head.bias.to(z.dtype)
        m = logits.real.amax(-1, keepdim=True).detach()
        logp = logits - m - torch.log(torch.exp(logits - m).sum(-1, keepdim=True))
        return -logp.gather(-1, targets[..., None]).mean()


def tight_settle(model, tok) -> torch.Tensor:
    """The fixed point to 1e-13 by IMEX relaxation (slow but it never stalls on these models)."""
    force = model.force(tok)
    res = settle(force, model.initial_state(force, None), "imex", tol=1e-13, max_steps=5000)
    assert res.status is Status.CONVERGED, res.summary()
    return res.z


def dense_adjoint_gradient(model, tok, tgt):
    """The equilibrium gradient from a dense Jacobian and torch.linalg.solve; also returns J."""
    z = tight_settle(model, tok)
    force = model.force(tok)
    n = z.numel()
    J = torch.autograd.functional.jacobian(force, z).reshape(n, n)
    zz = z.clone().requires_grad_(True)
    (l,) = torch.autograd.grad(model.loss(zz, tgt), zz)
    lam = torch.linalg.solve(J.T, -l.reshape(n)).reshape(z.shape)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    total = model.loss(z, tgt) + (force(z) * lam).sum()
    grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    out = {
        k: torch.zeros_like(p) if g is None else g
        for (k, p), g in zip(params.items(), grads, strict=True)
    }
    return out, J


def free_settle(model, tok):
    """The free phase as a trainer would hand it over: IMEX to a force residual of 1e-12."""
    force = model.force(tok)
    return settle(force, model.initial_state(force, None), "imex", tol=1e-12, max_steps=5000)


@pytest.fixture(scope="module")
def asym():
    model = block()
    tok, tgt = batch()
    ref, J = dense_adjoint_gradient(model, tok, tgt)
    S, A = (J + J.T) / 2, (J - J.T) / 2
    ratio = float(torch.linalg.matrix_norm(A) / torch.linalg.matrix_norm(S))
    assert ratio > 0.3  # strongly non-conservative
    assert float(torch.linalg.eigvals(J).real.max()) < 0  # a stable fixed point
    return model, tok, tgt, ref, free_settle(model, tok)


@pytest.fixture(scope="module")
def conservative():
    model = GradientFlowModel()
    tok, tgt = batch()
    ref, J = dense_adjoint_gradient(model, tok, tgt)
    assert torch.allclose(J, J.T, atol=1e-12)
    assert float(torch.linalg.eigvalsh(J).max()) < 0
    return model, tok, tgt, ref, free_settle(model, tok)


def cos_ratio(result, ref) -> tuple[float, float]:
    return compare_gradients(result, ref)["overall"]


# ------------------------------------------------------------------------------------------------
# the exact gradient


def test_exact_gradient_matches_dense_adjoint(asym):
    model, tok, tgt, ref, free = asym
    res = exact_gradient(model, tok, tgt, free=free)
    assert isinstance(res, GradientResult) and res.valid, res.summary()
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    assert list(res.grads) == names  # every trainable parameter, readout included, same order
    for k, p in model.named_parameters():
        assert res.grads[k].shape == p.shape and res.grads[k].dtype == p.dtype
    cmp = compare_gradients(res, ref)
    cos, ratio = cmp["overall"]
    assert cos >= 0.9999 and abs(ratio - 1) < 1e-4, comparison_table(cmp)
    for group, (c, _) in cmp.items():
        assert c >= 0.9999, (group, comparison_table(cmp))
    # the adjoint solve itself: tight, per sample
    assert float(res.info["adjoint_residual"].max()) <= 1e-10
    assert res.info["phases"][1].name == "adjoint" and res.info["phases"][1].vjp > 0
    assert res.info["free"].converged


def test_exact_gradient_matches_finite_differences_of_the_settled_loss(asym):
    """No adjoint formula: perturb every parameter along v, re-settle, central difference."""
    model, tok, tgt, _, free = asym
    res = exact_gradient(model, tok, tgt, free=free)
    g = torch.Generator().manual_seed(7)
    v = {k: torch.randn(p.shape, generator=g, dtype=F64) for k, p in model.named_parameters()}
    predicted = sum(float((res.grads[k] * v[k]).sum()) for k in v)
    h = 1e-5

    def loss_at(sign: float) -> float:
        m = copy.deepcopy(model)
        with torch.no_grad():
            for k, p in m.named_parameters():
                p.add_(sign * h * v[k])
        with torch.no_grad():
            return float(m.loss(tight_settle(m, tok), tgt))

    fd = (loss_at(1.0) - loss_at(-1.0)) / (2 * h)
    assert abs(fd - predicted) <= 1e-6 * max(1.0, abs(fd)), (fd, predicted)


# ------------------------------------------------------------------------------------------------
# AsymEP and vector-field EP


def test_asymep_symmetric_matches_dense_adjoint(asym):
    model, tok, tgt, ref, free = asym
    res = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    assert res.valid, res.summary()
    cmp = compare_gradients(res, ref)
    cos, ratio = cmp["overall"]
    assert cos >= 0.99 and abs(ratio - 1) <= 0.10, comparison_table(cmp)
    # in fact much closer: the nudged phases resolve the nudge to nudged_rtol = 1e-3
    assert cos >= 0.9999 and abs(ratio - 1) <= 5e-3, comparison_table(cmp)
    for group, (c, r) in cmp.items():
        assert c >= 0.999 and abs(r - 1) <= 0.01, (group, comparison_table(cmp))
    info = res.info
    assert [p.name for p in info["phases"]] == ["free", "nudged", "nudged"]
    assert [p.beta for p in info["phases"][1:]] == [1e-3, -1e-3]
    assert all(p.converged for p in info["phases"])
    nudged = info["phases"][1]
    assert nudged.jvp == nudged.vjp > 0 and nudged.nfe > 0
    assert set(info["nfe"]) == {"free", "nudged(0.001)", "nudged(-0.001)"}
    # free was handed over: its wall is reported but is not part of this call's total
    assert info["wall"]["total"] >= info["wall"]["nudged(0.001)"] + info["wall"]["nudged(-0.001)"]
    assert info["nudge_scale"].shape == (2,) and info["valid_samples"].tolist() == [True, True]
    assert info["adjoint"].shape == tuple(tight_settle(model, tok).shape)


def test_asymep_one_sided_and_without_extrapolation(asym):
    model, tok, tgt, ref, free = asym
    one = AsymEP(1e-3, symmetric=False).gradients(model, tok, tgt, free=free)
    assert len(one.info["phases"]) == 2
    cos, ratio = cos_ratio(one, ref)
    assert cos >= 0.999 and abs(ratio - 1) <= 0.01
    cold = AsymEP(1e-3, extrapolate=False).gradients(model, tok, tgt, free=free)
    cos, ratio = cos_ratio(cold, ref)
    assert cos >= 0.9999 and abs(ratio - 1) <= 5e-3
    # the extrapolated warm start needs fewer evaluations in the -beta phase
    warm = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    assert warm.info["phases"][2].nfe < cold.info["phases"][2].nfe


def test_vector_field_ep_is_biased_on_the_asymmetric_block(asym):
    model, tok, tgt, ref, free = asym
    corrected = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    plain = AsymEP(1e-3, asym_correction=False).gradients(model, tok, tgt, free=free)
    assert plain.valid
    c_cos, c_ratio = cos_ratio(corrected, ref)
    p_cos, p_ratio = cos_ratio(plain, ref)
    # measured: plain cos ~0.69, norm ratio ~1.10; corrected cos > 0.9999
    assert p_cos < 0.95 and p_cos < c_cos - 0.05, (p_cos, c_cos)
    assert 1 - p_cos > 100 * (1 - c_cos)
    assert plain.info["phases"][1].jvp == 0  # no correction: no J v products


def test_vector_field_ep_equals_asymep_on_a_conservative_model(conservative):
    model, tok, tgt, ref, free = conservative
    corrected = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    plain = AsymEP(1e-3, asym_correction=False).gradients(model, tok, tgt, free=free)
    assert corrected.valid and plain.valid
    for res in (corrected, plain):
        cos, ratio = cos_ratio(res, ref)
        assert cos >= 0.9999 and abs(ratio - 1) <= 5e-3
    cos, ratio = compare_gradients(plain, corrected)["overall"]
    assert cos >= 1 - 1e-8 and abs(ratio - 1) <= 1e-5, (cos, ratio)


def test_exact_and_holomorphic_on_the_conservative_model(conservative):
    """The protocol is duck-typed: a force without `select`, a plain module."""
    model, tok, tgt, ref, free = conservative
    cos, ratio = cos_ratio(exact_gradient(model, tok, tgt, free=free), ref)
    assert cos >= 0.9999 and abs(ratio - 1) <= 1e-4
    cos, ratio = cos_ratio(HolomorphicEP(0.5, 4).gradients(model, tok, tgt, free=free), ref)
    assert cos >= 0.999 and abs(ratio - 1) <= 0.01


# ------------------------------------------------------------------------------------------------
# holomorphic EP


def test_holomorphic_ep_matches_dense_adjoint(asym):
    model, tok, tgt, ref, free = asym
    est = HolomorphicEP(0.5, points=4)
    res = est.gradients(model, tok, tgt, free=free)
    assert res.valid, res.summary()
    cos, ratio = cos_ratio(res, ref)
    assert cos >= 0.999 and abs(ratio - 1) <= 0.01, (cos, ratio)
    betas = [p.beta for p in res.info["phases"][1:]]
    # conjugate symmetry: k = 0 .. N/2 only; k = 0 and N/2 are real settles
    assert len(betas) == 3 and betas[0] == 0.5 and betas[2] == -0.5
    assert betas[1] == 0.5j  # exact, not 3e-17 + 0.5j
    # odd N: k = 0 (real) and one complex pair
    res3 = HolomorphicEP(0.5, points=3).gradients(model, tok, tgt, free=free)
    assert len(res3.info["phases"]) == 3
    cos, ratio = cos_ratio(res3, ref)
    assert cos >= 0.999, cos


def test_holomorphic_ep_without_correction_keeps_the_asymmetry_bias(asym):
    model, tok, tgt, ref, free = asym
    est = HolomorphicEP(0.5, points=4, asym_correction=False)
    plain = est.gradients(model, tok, tgt, free=free)
    vf = AsymEP(1e-3, asym_correction=False).gradients(model, tok, tgt, free=free)
    cos, _ = cos_ratio(plain, ref)
    assert cos < 0.95
    # it converges to vector-field EP's J^{-1} l, not to the adjoint: no radius fixes that
    cos, ratio = compare_gradients(plain, vf)["overall"]
    assert cos >= 0.999 and abs(ratio - 1) <= 0.01


def test_holomorphic_error_is_order_r_to_the_n(asym):
    """Aliasing is O(r^N): halving r divides the error by ~2^N; more points, smaller error."""
    model, tok, tgt, ref, free = asym
    ref_norm = math.sqrt(sum(float((g * g).sum()) for g in ref.values()))

    def error(r: float, n: int) -> float:
        res = HolomorphicEP(r, points=n, nudged_rtol=1e-9).gradients(model, tok, tgt, free=free)
        assert res.valid, res.summary()
        diff = sum(float(((res.grads[k] - ref[k]) ** 2).sum()) for k in ref)
        return math.sqrt(diff) / ref_norm

    e2 = {r: error(r, 2) for r in (0.5, 1.0)}
    e4 = {r: error(r, 4) for r in (0.5, 1.0)}
    # measured: N = 2: 4.2x per halving (2^2), N = 4: 17x (2^4); errors 3e-3 and 2e-4 at r = 0.5
    assert 2.0 < e2[1.0] / e2[0.5] < 8.0, e2
    assert 8.0 < e4[1.0] / e4[0.5] < 32.0, e4
    assert e4[0.5] < e2[0.5] / 10, (e2, e4)


def test_conjugate_nudge_gives_the_conjugate_state(asym):
    """z_{conj(beta)} = conj(z_beta) for a real force: the symmetry that halves the work."""
    model, tok, tgt, _, free = asym
    force = model.force(tok)
    z0 = tight_settle(model, tok)
    lin = Linearization(force, z0, jvp=True)
    lg = LossGradient(model, tgt, z0)
    beta = 0.3 * complex(math.cos(1.0), math.sin(1.0))
    zs = []
    for b in (beta, beta.conjugate()):
        nf = NudgedForce(force, lg, b, z0, lin)
        res = settle(nf, complexify(z0), "anderson", tol=1e-12, max_steps=500)
        assert res.converged, res.summary()
        zs.append(res.z)
    assert torch.allclose(zs[1], zs[0].conj(), atol=1e-10)


# ------------------------------------------------------------------------------------------------
# the nudged force


def test_nudged_force_linearization_and_select(asym):
    """Jacobian of F_beta at z0 is J^T (AsymEP), J without the correction; select = slicing."""
    model, tok, tgt, _, free = asym
    force = model.force(tok)
    z0 = tight_settle(model, tok)
    n = z0.numel()
    J = torch.autograd.functional.jacobian(force, z0).reshape(n, n)
    lin = Linearization(force, z0, jvp=True)
    lg = LossGradient(model, tgt, z0)
    w = torch.randn((4, *z0.shape), generator=torch.Generator().manual_seed(4), dtype=F64)
    for correction, expected in ((True, J.T), (False, J)):
        nf = NudgedForce(force, lg, 0.0, z0, lin if correction else None)
        # Forward mode (the path of the integrators' JVPs, e.g. ImplicitEuler's Newton-Krylov).
        for wi in w:
            with fwAD.dual_level():
                jw = fwAD.unpack_dual(nf(fwAD.make_dual(z0, wi))).tangent
            assert torch.allclose(jw.reshape(n), expected @ wi.reshape(n), atol=1e-12)
    nf = NudgedForce(force, lg, 0.2, z0, lin)
    z = z0 + 0.1 * torch.randn(z0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    idx = torch.tensor([1])
    assert torch.allclose(nf.select(idx)(z[idx]), nf(z)[idx], atol=1e-14)
    assert torch.allclose(nf.select(idx).nonlinear(z[idx]), nf.nonlinear(z)[idx], atol=1e-14)
    assert torch.allclose(nf(z), nf.nonlinear(z) - nf.leak * z, atol=1e-14)


@pytest.mark.parametrize(
    "method", ["euler", "imex", "adaptive", pytest.param("implicit", marks=pytest.mark.slow)]
)
def test_any_integrator_runs_the_nudged_phases(asym, method):
    model, tok, tgt, ref, free = asym
    est = AsymEP(1e-3, nudged_method=method, nudged_max_steps=3000)
    res = est.gradients(model, tok, tgt, free=free)
    assert res.valid, res.summary()
    cos, ratio = cos_ratio(res, ref)
    assert cos >= 0.9999 and abs(ratio - 1) <= 5e-3, (method, cos, ratio)
    assert res.info["phases"][1].method == method


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "imex", "implicit", "adaptive", "ode"])
def test_any_integrator_runs_complex_nudged_phases(asym, method):
    model, tok, tgt, ref, free = asym
    est = HolomorphicEP(0.5, 4, nudged_method=method, nudged_max_steps=5000)
    res = est.gradients(model, tok, tgt, free=free)
    assert res.valid, res.summary()
    cos, _ = cos_ratio(res, ref)
    assert cos >= 0.999, (method, cos)


# ------------------------------------------------------------------------------------------------
# the validity gate


def test_gate_fires_on_a_free_phase_that_did_not_converge(asym):
    model, tok, tgt, _, free = asym
    for est in (AsymEP(1e-3, free_max_steps=3), HolomorphicEP(0.5, free_max_steps=3),
                ImplicitAdjoint(max_steps=3)):
        res = est.gradients(model, tok, tgt)  # the estimator's own (too short) free phase
        assert not res.valid
        assert "free phase max_steps" in res.info["reason"]
        assert res.info["free"].status is Status.MAX_STEPS
        assert res.info["valid_samples"].tolist() == [False, False]
        assert set(res.grads) == {k for k, _ in model.named_parameters()}  # still reported


def test_gate_fires_on_a_residual_above_the_threshold(asym):
    """A settle that 'converged' to a loose tolerance is still not a stationary state."""
    model, tok, tgt, _, free = asym
    loose = model.settle(tok, "anderson", tol=1e-1)
    assert loose.converged and float(loose.residual.max()) > 1e-3
    res = AsymEP(1e-3).gradients(model, tok, tgt, free=loose)
    assert not res.valid and "gate" in res.info["reason"]
    ok = AsymEP(1e-3, gate_residual=0.5).gradients(model, tok, tgt, free=loose)
    assert ok.valid  # the threshold is the user's


def test_gate_on_a_genuinely_unstable_block():
    """init_scale 1.5: the fixed point has Re mu > 0 and the free settle cannot converge."""
    model = block(init_scale=1.5)
    tok, tgt = batch()
    res = AsymEP(1e-3, free_max_steps=200, nudged_max_steps=50).gradients(model, tok, tgt)
    assert not res.valid and res.info["free"].status is not Status.CONVERGED


def test_reusing_the_trainers_free_phase(asym):
    model, tok, tgt, _, free = asym
    a = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    b = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    assert a.info["free"].nfe == free.nfe
    for k in a.grads:
        assert torch.equal(a.grads[k], b.grads[k])  # deterministic


def test_defaults_end_to_end():
    """Every estimator with its defaults (Anderson free and nudged phases) on a block at a milder
    init (init_scale 0.75: ||A|| / ||S|| ~ 0.35), against its own dense adjoint."""
    model = block(init_scale=0.75)
    tok, tgt = batch()
    ref, _ = dense_adjoint_gradient(model, tok, tgt)
    exact = exact_gradient(model, tok, tgt)
    asym_ep = AsymEP(1e-3).gradients(model, tok, tgt)
    holo = HolomorphicEP(0.5).gradients(model, tok, tgt)
    plain = AsymEP(1e-3, asym_correction=False).gradients(model, tok, tgt)
    for res, bound in ((exact, 0.9999), (asym_ep, 0.999), (holo, 0.999)):
        assert res.valid, res.summary()
        assert res.info["free"].method == "anderson"
        cos, ratio = cos_ratio(res, ref)
        assert cos >= bound and abs(ratio - 1) <= 0.01, (res.info["estimator"], cos, ratio)
    assert cos_ratio(plain, ref)[0] < 0.98


# ------------------------------------------------------------------------------------------------
# BPTT


def _manual_unroll_grads(model, tok, tgt, steps, step):
    force = model.force(tok)
    z = force.x_in / force.leak
    for _ in range(steps):
        z = step(force, z)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(model.loss(z, tgt), list(params.values()), allow_unused=True)
    return {
        k: torch.zeros_like(p) if g is None else g
        for (k, p), g in zip(params.items(), grads, strict=True)
    }


def test_bptt_equals_a_hand_written_unroll(asym):
    model, tok, tgt, _, free = asym
    res = bptt_gradient(model, tok, tgt, steps=20)
    ref = _manual_unroll_grads(model, tok, tgt, 20, lambda f, z: z + 0.1 * f(z))
    for k in ref:
        assert torch.allclose(res.grads[k], ref[k], atol=1e-13, rtol=1e-11), k
    assert res.info["phases"][0].nfe == 21 and res.info["steps"] == 20
    imex = BPTT(10, IMEXEuler(eps=0.5)).gradients(model, tok, tgt)
    ref = _manual_unroll_grads(
        model, tok, tgt, 10, lambda f, z: (z + 0.5 * f.nonlinear(z)) / (1 + 0.5 * f.leak)
    )
    for k in ref:
        assert torch.allclose(imex.grads[k], ref[k], atol=1e-13, rtol=1e-11), k


def test_bptt_differs_from_the_equilibrium_gradient_until_the_unroll_settles(asym):
    model, tok, tgt, ref, free = asym
    short = bptt_gradient(model, tok, tgt, steps=5)
    long = bptt_gradient(model, tok, tgt, steps=400)
    s_cos, _ = cos_ratio(short, ref)
    l_cos, l_ratio = cos_ratio(long, ref)
    assert l_cos >= 0.9999 and abs(l_ratio - 1) <= 1e-3  # z_T = z* to many digits
    assert s_cos < l_cos - 0.01  # the 5-step block is a different function of theta
    assert short.info["phases"][0].status is Status.MAX_STEPS  # z_5 is far from a fixed point


# ------------------------------------------------------------------------------------------------
# dtype, diagnostics, errors


def test_float32_model_gives_float32_gradients(asym):
    model64, tok, tgt, ref, free = asym
    model = copy.deepcopy(model64).to(torch.float32)
    # beta scaled for float32 (AsymEP docstring); the free phase settled in float32 by IMEX
    res = AsymEP(1.0, free_method="imex", free_max_steps=5000).gradients(model, tok, tgt)
    assert res.valid, res.summary()
    assert all(g.dtype == torch.float32 for g in res.grads.values())
    cos, ratio = cos_ratio(res, ref)
    assert cos >= 0.99 and abs(ratio - 1) <= 0.1, (cos, ratio)
    with pytest.warns(RuntimeWarning, match="too small"):
        AsymEP(1e-4, free_method="imex", free_max_steps=5000).gradients(model, tok, tgt)


def test_compare_gradients_groups_and_edge_cases():
    a = {"x.weight": torch.tensor([1.0, 0.0]), "x.bias": torch.tensor([0.0]),
         "y": torch.tensor([2.0, 2.0])}
    b = {"x.weight": torch.tensor([1.0, 1.0]), "x.bias": torch.tensor([0.0]),
         "y": torch.tensor([0.0, 0.0])}
    cmp = compare_gradients(a, b)
    assert list(cmp) == ["x", "y", "overall"]
    assert cmp["x"][0] == pytest.approx(1 / math.sqrt(2)) and cmp["x"][1] == pytest.approx(
        1 / math.sqrt(2)
    )
    assert cmp["y"] == (0.0, math.inf)
    assert compare_gradients({"z": torch.zeros(2)}, {"z": torch.zeros(2)})["z"] == (1.0, 1.0)
    assert "overall" in comparison_table(cmp)
    with pytest.raises(ValueError, match="shape"):
        compare_gradients({"z": torch.zeros(2)}, {"z": torch.zeros(3)})
    with pytest.raises(ValueError, match="only in a"):
        compare_gradients({"z": torch.zeros(2), "w": torch.zeros(1)}, {"z": torch.zeros(2)})
    with pytest.raises(TypeError, match="GradientResult"):
        compare_gradients([1], {})


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: AsymEP(0.0), ValueError, "beta must be a finite real number > 0"),
        (lambda: AsymEP(-1e-3), ValueError, "beta"),
        (lambda: AsymEP(float("nan")), ValueError, "beta"),
        (lambda: AsymEP("0.1"), TypeError, "beta"),
        (lambda: AsymEP(1e-3, symmetric=1), TypeError, "symmetric"),
        (lambda: AsymEP(1e-3, nudged_rtol=2.0), ValueError, "nudged_rtol"),
        (lambda: AsymEP(1e-3, nudged_method="nope"), ValueError, "nudged_method"),
        (lambda: AsymEP(1e-3, free_options={"bogus": 1}), TypeError, "free_method"),
        (lambda: AsymEP(1e-3, free_max_steps=0), ValueError, "free_max_steps"),
        (lambda: HolomorphicEP(0.1, points=1), ValueError, "points must be an integer >= 2"),
        (lambda: HolomorphicEP(0.1, points=2.5), TypeError, "points"),
        (lambda: HolomorphicEP(0.0), ValueError, "radius"),
        (lambda: ImplicitAdjoint(rtol=1.5), ValueError, "rtol"),
        (lambda: ImplicitAdjoint(restart=0), ValueError, "restart"),
        (lambda: BPTT(steps=0), ValueError, "steps"),
        (lambda: BPTT(10, method="anderson"), TypeError, "method"),
    ],
)
def test_bad_arguments_are_named_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_holomorphic_needs_a_float32_or_float64_model():
    model = block(dtype=torch.bfloat16)
    tok, tgt = batch()
    with pytest.raises(TypeError, match="float32 or float64"):
        HolomorphicEP(0.5).gradients(model, tok, tgt)


def test_mismatched_shapes_fail_before_any_settle(asym):
    model, tok, tgt, _, free = asym
    for est in (AsymEP(1e-3), HolomorphicEP(0.5), ImplicitAdjoint(), BPTT(5)):
        with pytest.raises(ValueError, match="targets must have shape"):
            est.gradients(model, tok, tgt[:1])
        with pytest.raises(ValueError, match="targets must have shape"):
            est.gradients(model, tok, tgt[:, :3])
    with pytest.raises(TypeError, match="targets"):
        AsymEP(1e-3).gradients(model, tok, tgt.tolist())
    with pytest.raises(ValueError, match="targets must be in"):
        AsymEP(1e-3).gradients(model, tok, tgt + 100)
    wrong = model.settle(tok[:, :3], "anderson")
    with pytest.raises(ValueError, match="free.z has shape"):
        AsymEP(1e-3).gradients(model, tok, tgt, free=wrong)


def test_asymep_nudged_tolerance_is_per_sample(asym):
    # Each sample's nudged phases stop at nudged_rtol times its own nudge scale, and each
    # sample's adjoint estimate is accurate to that: per-sample error against a dense solve.
    model, tok, tgt, ref, free = asym
    res = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    assert res.valid, res.summary()
    info = res.info
    tol, scale = info["nudged_tol"], info["nudge_scale"]
    assert tol.shape == scale.shape == (2,)
    assert float(scale.max() / scale.min()) > 1.2  # the samples really differ
    torch.testing.assert_close(tol, 1e-3 * scale)  # far above the float64 rounding floor
    for phase in info["phases"][1:]:
        assert bool((phase.residual <= tol).all()), phase.summary()
        assert ".." in phase.summary()  # the summary shows the per-sample range
    z = tight_settle(model, tok)
    n = z.numel()
    J = torch.autograd.functional.jacobian(model.force(tok), z).reshape(n, n)
    zz = z.clone().requires_grad_(True)
    (l,) = torch.autograd.grad(model.loss(zz, tgt), zz)
    lam_ref = torch.linalg.solve(J.T, -l.reshape(n)).reshape(z.shape)
    lam = info["adjoint"]
    for i in range(2):
        err = torch.linalg.vector_norm(lam[i] - lam_ref[i]) / torch.linalg.vector_norm(lam_ref[i])
        assert float(err) <= 1e-2, (i, float(err))


def test_asymep_accepts_a_free_phase_settled_with_per_sample_tolerances(asym):
    # a free phase handed over with a (batch,) tolerance: its PhaseInfo keeps the tensor and the
    # estimate is as accurate as with a scalar one
    model, tok, tgt, ref, _ = asym
    force = model.force(tok)
    tol = torch.tensor([1e-12, 1e-11], dtype=torch.float64)
    free = settle(force, model.initial_state(force, None), "imex", tol=tol, max_steps=5000)
    assert free.status is Status.CONVERGED
    res = AsymEP(1e-3).gradients(model, tok, tgt, free=free)
    assert res.valid, res.summary()
    torch.testing.assert_close(res.info["free"].tol, tol)
    assert "1.0e-12..1.0e-11" in res.info["free"].summary()
    cos, ratio = cos_ratio(res, ref)
    assert cos >= 0.9999 and abs(ratio - 1) <= 5e-3
