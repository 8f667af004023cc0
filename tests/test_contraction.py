"""Contraction certificates: the bound against dense autograd Jacobians, the certificate's claims
against independent measurements (manual Euler loops, dense log-norms, every integrator), hardware
faults, invariances, and contraction by construction.

References are computed here, independently of analogeq.contraction: dense Jacobians by
torch.autograd.functional.jacobian in float64, log-norms by eigvalsh of the dense symmetric part,
Euler iterates by a plain loop, column sums of softmax matrices by brute force.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from analogeq.circuits import preset
from analogeq.integrators import ExplicitEuler, Status
from analogeq.integrators import settle as _settle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analogeq import EquilibriumTransformer, HardwareConfig, ModelConfig
from analogeq.contraction import (
    GELU_TANH_SLOPE,
    Verdict,
    attention_kappa,
    certify,
    lipschitz_bound,
)
from analogeq.systems import ContractiveTanh
from analogeq.testing import assert_contracts, assert_settles, model_configs, states, tokens

# The references here bound ||F|| / ||z||: settles are judged by that test (rate 1, atol 0).
settle = functools.partial(_settle, rate=1.0, atol=0.0)

F64 = torch.float64
FAST = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def dense_jacobian(fn, z1: torch.Tensor) -> torch.Tensor:
    """(n, n) Jacobian of fn at a single-sample state z1 (1, ...), float64 autograd."""
    n = z1.numel()
    J = torch.autograd.functional.jacobian(lambda v: fn(v.view(z1.shape)).reshape(-1),
                                           z1.reshape(-1))
    return J.reshape(n, n)


def dense_norm_and_lognorm(force, z: torch.Tensor) -> tuple[float, float]:
    """max over samples of ||dN/dz||_2 and of mu_2(dF/dz), from dense Jacobians."""
    norms, mus = [], []
    for i in range(z.shape[0]):
        f = force.select(torch.tensor([i]))
        zi = z[i : i + 1].detach()
        JN = dense_jacobian(f.nonlinear, zi)
        JF = dense_jacobian(f, zi)
        norms.append(float(torch.linalg.matrix_norm(JN, ord=2)))
        mus.append(float(torch.linalg.eigvalsh(0.5 * (JF + JF.T)).max()))
    return max(norms), max(mus)


def randomize_norms(model: EquilibriumTransformer, seed: int) -> None:
    """Non-trivial LayerNorm / RMSNorm gains and biases and linear biases (the bound uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name.startswith("ln_"):
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def make(cfg: ModelConfig, seed: int = 0, randomize: bool = True) -> EquilibriumTransformer:
    model = EquilibriumTransformer(cfg, seed=seed)
    if randomize:
        randomize_norms(model, seed)
        if cfg.lipschitz_target is not None:
            model.enforce_lipschitz()
    return model


TINY = dict(vocab_size=12, d_model=8, n_heads=2, context=4, dtype=F64)


def certified_model(seed: int = 0, frac: float = 0.6, **kw) -> EquilibriumTransformer:
    cfg = ModelConfig(**{**TINY, "norm_eps": 0.5, "lipschitz_target": frac * 2.0, **kw})
    return EquilibriumTransformer(cfg, seed=seed)


# ------------------------------------------------------------------------------------------------
# constants


def test_gelu_slope_is_the_maximum_of_the_derivative():
    x = torch.linspace(-12, 12, 2_400_001, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(torch.nn.functional.gelu(x, approximate="tanh").sum(), x)
    top = float(g.abs().max())
    assert top <= GELU_TANH_SLOPE
    assert GELU_TANH_SLOPE - top < 1e-7


@given(A=st.floats(0.0, 6.0), T=st.integers(1, 9), causal=st.booleans(),
       seed=st.integers(0, 10_000))
@FAST
def test_attention_kappa_bounds_every_column_sum_and_is_attained(A, T, causal, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.rand(64, T, T, generator=g, dtype=F64) - 1) * A
    # the extreme pattern: column 0 at +A, the rest at -A
    extreme = torch.full((T, T), -A, dtype=F64)
    extreme[:, 0] = A
    logits = torch.cat([logits, extreme[None]])
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        logits = logits.masked_fill(~mask, -math.inf)
    p = torch.softmax(logits, dim=-1)
    col = p.sum(dim=-2)  # (.., T) column sums
    kappa = attention_kappa(A, T, causal)
    assert float(col.max()) <= kappa * (1 + 1e-12)
    assert float(col[-1, 0]) == pytest.approx(kappa, rel=1e-9)  # the bound is sharp


# ------------------------------------------------------------------------------------------------
# the bound against dense Jacobians


def check_bound_against_dense(cfg: ModelConfig, x: torch.Tensor, z: torch.Tensor, seed: int):
    model = make(cfg, seed)
    T = x.shape[1]
    force = model.force(x)
    z = z[:, :T] if z.shape[1] >= T else None
    zs = [force.x_in / force.leak]
    if z is not None and z.shape[0] == x.shape[0]:
        zs.append(z)
    for zz in zs:
        jn, mu = dense_norm_and_lognorm(force, zz)
        b = lipschitz_bound(model, T=T)
        assert jn <= b.L * (1 + 1e-9), (jn, b.text())
        assert mu <= -cfg.leak + b.L + 1e-9
        # the region bound at these very states (floors measured here, independently)
        var = float(zz.detach().var(dim=-1, unbiased=False).min())
        qk = 0.0
        if cfg.qk_norm:
            ln = model.ln_attn
            h = torch.nn.functional.layer_norm(zz, (cfg.d_model,), ln.weight, ln.bias,
                                               cfg.norm_eps)
            ms = []
            for lin in (model.attn.q, model.attn.k):
                u = lin(h).view(*h.shape[:-1], cfg.n_heads, cfg.head_dim)
                ms.append(float(u.square().mean(-1).min()))
            qk = min(ms)
        loc = lipschitz_bound(model, T=T, var_floor=var, qk_floor=qk)
        assert loc.L <= b.L * (1 + 1e-12)
        assert jn <= loc.L * (1 + 1e-9), (jn, loc.text())


@given(cfg=model_configs(max_heads=2, max_head_dim=3, max_context=3), data=st.data(),
       seed=st.integers(0, 1000))
@FAST
def test_bound_dominates_the_dense_jacobian(cfg, data, seed):
    x = data.draw(tokens(cfg, batch=2))
    z = data.draw(states(cfg, batch=2, T=x.shape[1]))
    check_bound_against_dense(cfg, x, z, seed)


@pytest.mark.slow
@given(cfg=model_configs(max_heads=3, max_head_dim=4, max_context=5), data=st.data(),
       seed=st.integers(0, 1000))
@SLOW
def test_bound_dominates_the_dense_jacobian_slow(cfg, data, seed):
    x = data.draw(tokens(cfg, batch=2))
    z = data.draw(states(cfg, batch=2, T=x.shape[1], scale=10.0))
    check_bound_against_dense(cfg, x, z, seed)


def test_bound_validates_its_arguments():
    model = EquilibriumTransformer(ModelConfig(**TINY), seed=0)
    with pytest.raises(ValueError, match="T must"):
        lipschitz_bound(model, T=99)
    with pytest.raises(ValueError, match="var_floor"):
        lipschitz_bound(model, var_floor=-1.0)
    with pytest.raises(ValueError, match="weights"):
        lipschitz_bound(model, weights="realized")  # digital model
    with pytest.raises(TypeError, match="model"):
        lipschitz_bound(object())  # type: ignore[arg-type]


def test_default_model_is_vacuous_and_says_so():
    model = EquilibriumTransformer(ModelConfig(**TINY), seed=0)
    cert = certify(model, samples=1)
    assert cert.verdict is Verdict.VACUOUS
    assert cert.lipschitz >= 2.0 and not cert.contracts and cert.eps_safe is None
    assert "proves nothing" in cert.text()
    assert cert.to_dict()["verdict"] == "vacuous"
    # the default norm_eps puts 1/sqrt(1e-5) into each LayerNorm factor
    assert cert.bound.factors["ln_attn"] == pytest.approx(1 / math.sqrt(1e-5))


# ------------------------------------------------------------------------------------------------
# contraction by construction


def test_lipschitz_target_off_changes_nothing():
    a = EquilibriumTransformer(ModelConfig(**TINY), seed=3)
    b = EquilibriumTransformer(ModelConfig(**TINY, lipschitz_target=None), seed=3)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    with pytest.raises(ValueError, match="enforce_lipschitz"):
        a.enforce_lipschitz()


@pytest.mark.parametrize("bad", [2.0, 3.0, 0.0, -1.0, math.inf, math.nan])
def test_lipschitz_target_is_validated(bad):
    with pytest.raises(ValueError, match="lipschitz_target"):
        ModelConfig(**TINY, lipschitz_target=bad)


@pytest.mark.parametrize("frac", [0.3, 0.9])
def test_construction_reports_its_certificate(frac):
    model = certified_model(seed=1, frac=frac)
    bound = model.lipschitz_bound()
    assert bound.L <= frac * 2.0 and bound.L >= 0.99 * frac * 2.0  # rescaled to the target
    cert = assert_contracts(model, samples=2)
    assert cert.verdict is Verdict.CERTIFIED
    assert cert.lipschitz == pytest.approx(bound.L, rel=1e-12)
    assert cert.rate == pytest.approx(2.0 - bound.L)
    assert cert.eps_safe == pytest.approx(2 / (2.0 + bound.L))
    # after a "training step" that inflates the couplings the projection restores the bound
    with torch.no_grad():
        model.attn.o.weight.mul_(50.0)
    assert model.lipschitz_bound().L > 2.0
    assert model.enforce_lipschitz().L <= frac * 2.0


# ------------------------------------------------------------------------------------------------
# what a certificate promises, checked by independent measurements


METHODS = ["euler", "imex", "anderson", "implicit", "ode", "adaptive"]


@given(seed=st.integers(0, 10_000), frac=st.floats(0.1, 0.95), c=st.floats(0.0, 1.5))
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_integrator_reaches_the_one_fixed_point(seed, frac, c):
    model = EquilibriumTransformer(ModelConfig(**{**TINY, "c": c, "norm_eps": 0.5,
                                                  "lipschitz_target": frac * (1 + c)}), seed=seed)
    b = model.lipschitz_bound()
    assert b.contracts
    x = torch.randint(0, 12, (2, 4), generator=torch.Generator().manual_seed(seed))
    methods = [ExplicitEuler(eps=0.9 * b.eps_safe)] + METHODS[1:]
    tol = 1e-9
    res = assert_settles(model, x, methods=methods, tol=tol, agree=1.0)
    # every converged point is within ||F|| / rate of the unique fixed point, and the convergence
    # test (displacement ||F|| / (leak sqrt(n)) <= atol + tol rms(z)) bounds ||F|| by
    # leak (sqrt(n) atol + tol ||z||): so two converged points are within the sum of those bounds
    leak, n = 1 + c, 4 * 8

    def bound(r):
        f_bound = leak * (math.sqrt(n) * r.info["atol"] + tol * torch.linalg.vector_norm(
            r.z, dim=(1, 2)))
        return f_bound / b.rate

    first = next(iter(res.values()))
    for r in list(res.values())[1:]:
        dist = torch.linalg.vector_norm(r.z - first.z, dim=(1, 2))
        assert torch.all(dist <= (bound(r) + bound(first)) * (1 + 1e-6) + 1e-12)
    # and from a far-away start too
    far = settle(model.force(x), 10 * torch.randn(2, 4, 8, dtype=F64,
                                                   generator=torch.Generator().manual_seed(1)),
                 "anderson", tol=tol)
    assert far.status is Status.CONVERGED
    assert torch.allclose(far.z, first.z, atol=1e-6)


@given(seed=st.integers(0, 10_000), frac=st.floats(0.1, 0.95), eps_frac=st.floats(0.05, 0.99))
@FAST
def test_euler_below_the_certified_step_decays_at_the_certified_rate(seed, frac, eps_frac):
    model = certified_model(seed=seed, frac=frac)
    b = model.lipschitz_bound()
    eps = eps_frac * b.eps_safe
    q = abs(1 - eps * b.leak) + eps * b.L
    assert q < 1
    x = torch.randint(0, 12, (2, 4), generator=torch.Generator().manual_seed(seed))
    force = model.force(x)
    z = 3 * torch.randn(2, 4, 8, dtype=F64, generator=torch.Generator().manual_seed(seed + 1))
    norms = []
    with torch.no_grad():
        for _ in range(40):  # manual Euler loop, ||F(z_k)|| per sample
            f = force(z)
            norms.append(torch.linalg.vector_norm(f, dim=(1, 2)))
            z = z + eps * f
    norms = torch.stack(norms)
    live = norms[:-1] > 1e-12
    ratios = (norms[1:] / norms[:-1])[live]
    assert float(ratios.max()) <= q * (1 + 1e-9)
    # the continuous rate: -log(q) / eps >= rate - O(eps) (q = 1 - eps rate for eps (1+c) <= 1)
    if eps * b.leak <= 1:
        assert q == pytest.approx(1 - eps * b.rate)
    # the library's Euler agrees with the loop and with the certificate's own measurement
    res = settle(force, 3 * torch.randn(2, 4, 8, dtype=F64,
                                        generator=torch.Generator().manual_seed(seed + 1)),
                 ExplicitEuler(eps=eps), tol=1e-300, max_steps=39)
    tr = res.trace
    lib = (tr.sample_residual * tr.sample_state_norm).to(F64)
    k = lib.shape[0]  # the loop may stop early at the dtype's precision floor (stalled)
    assert k >= 5
    assert torch.allclose(lib, norms[:k], rtol=1e-9, atol=1e-13)


@given(data=st.data(), seed=st.integers(0, 1000), frac=st.floats(0.1, 0.95))
@FAST
def test_measured_lognorms_never_exceed_the_certified_bound(data, seed, frac):
    from analogeq.probes import lognorm

    model = certified_model(seed=seed, frac=frac)
    randomize_norms(model, seed)
    model.enforce_lipschitz()
    b = model.lipschitz_bound()
    x = data.draw(tokens(model.config, batch=2))
    z = data.draw(states(model.config, batch=2, T=x.shape[1], scale=5.0))
    force = model.force(x)
    mu = lognorm(force, z)  # the library's probe ...
    assert float(mu.max()) <= -b.rate + 1e-9
    _, mu_dense = dense_norm_and_lognorm(force, z)  # ... and the dense reference
    assert mu_dense <= -b.rate + 1e-9


def test_a_false_claim_on_a_plain_force_is_caught():
    sys = ContractiveTanh(n=6, c=1.0, L=1.8, batch=3, seed=0)
    z = torch.randn(3, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    good = certify(sys, lipschitz=1.8, states=z)
    assert good.verdict is Verdict.CERTIFIED, good.text()
    assert good.jacobian_norm_max <= 1.8 + 1e-9
    assert good.euler_factor_max <= good.euler_factor_bound + 1e-9
    bad = certify(sys, lipschitz=0.2, states=z)  # the true Lip is ~1.8 near z = 0
    assert bad.verdict is Verdict.VIOLATED
    assert any("Lip(N)" in v for v in bad.violations)
    assert "VIOLATION" in bad.text()
    with pytest.raises(ValueError, match="lipschitz"):
        certify(sys, states=z)


# ------------------------------------------------------------------------------------------------
# hardware


def hw_model(stuck: float, seed: int = 0, frac: float = 0.8, spread: float = 0.0):
    dev = dataclasses.replace(preset("ideal"), stuck_at_max=stuck)
    hw = HardwareConfig(device=dev, read_noise="off", tau_spread=spread, seed=seed)
    cfg = ModelConfig(**{**TINY, "norm_eps": 0.5, "lipschitz_target": frac * 2.0})
    return EquilibriumTransformer(cfg, hardware=hw, seed=seed)


def test_ideal_hardware_keeps_the_certificate():
    model = hw_model(0.0)
    nominal = lipschitz_bound(model, weights="nominal")
    realized = lipschitz_bound(model, weights="realized")
    assert realized.L == pytest.approx(nominal.L, rel=1e-5)
    cert = assert_contracts(model, samples=1)
    assert cert.bound.weights == "realized"


@pytest.mark.parametrize("stuck", [0.02, 0.1, 0.4])
def test_stuck_devices_keep_or_break_the_certificate_as_predicted(stuck):
    model = hw_model(stuck, seed=2, frac=0.8)
    realized = lipschitz_bound(model, weights="realized")
    nominal = lipschitz_bound(model, weights="nominal")
    x = torch.randint(0, 12, (2, 4), generator=torch.Generator().manual_seed(0))
    force = model.force(x)
    z = force.x_in / force.leak
    # the prediction is a valid bound on the chip actually built (dense reference) ...
    jn, mu = dense_norm_and_lognorm(force, z)
    assert jn <= realized.L * (1 + 1e-6)
    assert mu <= -2.0 + realized.L + 1e-6
    cert = certify(model, x, samples=1)
    assert cert.verdict is not Verdict.VIOLATED, cert.text()
    # ... and it is what decides the verdict: faults raise the bound, a high rate breaks it
    assert realized.L > nominal.L
    if realized.contracts:
        assert cert.verdict is Verdict.CERTIFIED
        assert_settles(model, x, methods=("imex", "anderson"), tol=1e-8)
    else:
        assert cert.verdict is Verdict.VACUOUS
    if stuck >= 0.4:
        assert not realized.contracts


def test_tau_spread_enters_the_hardware_certificate():
    model = hw_model(0.0, frac=0.5, spread=0.2)
    x = torch.randint(0, 12, (1, 4), generator=torch.Generator().manual_seed(0))
    cert = certify(model, x, samples=1)
    r = model.node_tau_ratio[:4]
    L = lipschitz_bound(model, T=4).L
    assert cert.lipschitz == pytest.approx(L / float(r.min()))
    assert cert.leak_min == pytest.approx(2.0 / float(r.max()))
    assert cert.leak_max == pytest.approx(2.0 / float(r.min()))
    assert cert.verdict is not Verdict.VIOLATED


# ------------------------------------------------------------------------------------------------
# invariances


def test_bound_is_invariant_to_token_and_batch_permutations():
    model = certified_model(seed=4)
    x = torch.randint(0, 12, (3, 4), generator=torch.Generator().manual_seed(0))
    a = certify(model, x, samples=1)
    b = certify(model, x[torch.tensor([2, 0, 1])][:, torch.tensor([3, 1, 0, 2])], samples=1)
    assert a.lipschitz == b.lipschitz and a.verdict is b.verdict is Verdict.CERTIFIED


def test_bound_is_invariant_to_head_and_hidden_unit_permutations():
    cfg = ModelConfig(**{**TINY, "n_heads": 2, "norm_eps": 0.5})
    model = make(cfg, seed=5)
    x = torch.randint(0, 12, (2, 4), generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 4, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    before = model.force(x).nonlinear(z)
    L0 = lipschitz_bound(model).L
    d = cfg.head_dim
    heads = torch.cat([torch.arange(d, 2 * d), torch.arange(0, d)])  # swap the two heads
    hidden = torch.randperm(cfg.d_ffn, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for name in ("q", "k", "v"):
            lin = getattr(model.attn, name)
            lin.weight.copy_(lin.weight[heads])
            lin.bias.copy_(lin.bias[heads])
        model.attn.o.weight.copy_(model.attn.o.weight[:, heads])
        model.ffn.up.weight.copy_(model.ffn.up.weight[hidden])
        model.ffn.up.bias.copy_(model.ffn.up.bias[hidden])
        model.ffn.down.weight.copy_(model.ffn.down.weight[:, hidden])
    assert torch.allclose(model.force(x).nonlinear(z), before, atol=1e-12)  # same function
    assert lipschitz_bound(model).L == pytest.approx(L0, rel=1e-12)  # same bound
