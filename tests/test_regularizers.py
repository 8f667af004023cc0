"""Tests for analogeq.learning.regularizers against dense references computed here.

References: the dense Jacobian of the coupling (Attn + FFN) at z0 by
torch.autograd.functional.jacobian on a tiny float64 block, the exact Hutchinson expectation
E||M v||^2 = ||M||_F^2, central finite differences of the dense penalty along a random parameter
direction, and a hand-written Euler unroll for the residual penalty.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from analogeq.hardware import HardwareConfig
from analogeq.learning import (
    JacobianHomeostasis,
    JacobianPenalty,
    RegularizerResult,
    ResidualPenalty,
)
from analogeq.model import EquilibriumTransformer, ModelConfig

F64 = torch.float64


def block(seed: int = 0, hardware=None) -> EquilibriumTransformer:
    cfg = ModelConfig(vocab_size=7, d_model=4, n_heads=2, context=3, init_scale=1.0, dtype=F64)
    return EquilibriumTransformer(cfg, hardware=hardware, seed=seed)


def tokens(B: int = 2, T: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 7, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def setup():
    model = block()
    tok = tokens()
    z0 = model.settle(tok, "imex", tol=1e-12, max_steps=5000).z
    return model, tok, z0


def dense_coupling_jacobian(model, tok, z0) -> torch.Tensor:
    force = model.force(tok)
    n = z0.numel()
    return torch.autograd.functional.jacobian(force.coupling, z0).reshape(n, n)


def used_probes(reg, state, like) -> torch.Tensor:
    """The probes a regulariser drew from `state` (replayed on a fresh copy): (K, n)."""
    twin = copy.deepcopy(reg)
    twin.load_state_dict(state)
    return twin._probes.draw(like).reshape(twin.probes, -1)


# ------------------------------------------------------------------------------------------------
# Jacobian penalty and homeostasis: value and gradient vs the dense reference


@pytest.mark.parametrize("cls", [JacobianPenalty, JacobianHomeostasis])
def test_penalty_equals_dense_on_its_probes(setup, cls):
    model, tok, z0 = setup
    reg = cls(weight=0.5, probes=3, seed=4) if cls is JacobianHomeostasis else cls(
        weight=0.5, adaptive=False, probes=3, seed=4)
    state = copy.deepcopy(reg.state_dict())
    res = reg.gradients(model, tok, z0)
    assert isinstance(res, RegularizerResult) and res.ok
    J = dense_coupling_jacobian(model, tok, z0)
    M = J if cls is JacobianPenalty else J - J.T
    V = used_probes(reg, state, z0)
    ref = (V @ M.T).square().sum() / (V.shape[0] * z0.numel())
    assert float(res.info["penalty"]) == pytest.approx(float(ref), rel=1e-10)
    assert float(res.value) == pytest.approx(0.5 * float(ref), rel=1e-10)
    assert set(res.grads) <= {n for n, _ in model.named_parameters()}
    assert "head.weight" not in res.grads  # the readout does not enter the coupling
    assert "attn.q.weight" in res.grads


@pytest.mark.parametrize("cls", [JacobianPenalty, JacobianHomeostasis])
def test_penalty_expectation_is_frobenius(setup, cls):
    """Hutchinson: the mean over many probes tends to ||M||_F^2 / n."""
    model, tok, z0 = setup
    kw = {"adaptive": False} if cls is JacobianPenalty else {}
    reg = cls(weight=1.0, probes=400, seed=0, **kw)
    res = reg.gradients(model, tok, z0)
    J = dense_coupling_jacobian(model, tok, z0)
    M = J if cls is JacobianPenalty else J - J.T
    exact = float(M.square().sum()) / z0.numel()
    assert res.info["penalty"] == pytest.approx(exact, rel=0.06)


@pytest.mark.parametrize("cls", [JacobianPenalty, JacobianHomeostasis])
def test_gradient_matches_finite_differences_of_dense_penalty(setup, cls):
    model, tok, z0 = setup
    model = copy.deepcopy(model)
    kw = {"adaptive": False} if cls is JacobianPenalty else {}
    reg = cls(weight=2.0, probes=2, seed=7, **kw)
    state = copy.deepcopy(reg.state_dict())
    res = reg.gradients(model, tok, z0)
    V = used_probes(reg, state, z0)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(3)
    direction = {n: torch.randn(p.shape, generator=gen, dtype=F64) for n, p in params.items()}

    def dense_penalty() -> float:
        J = dense_coupling_jacobian(model, tok, z0)
        M = J if cls is JacobianPenalty else J - J.T
        return 2.0 * float((V @ M.T).square().sum()) / (V.shape[0] * z0.numel())

    h = 1e-5
    with torch.no_grad():
        for n, p in params.items():
            p.add_(h * direction[n])
        up = dense_penalty()
        for n, p in params.items():
            p.sub_(2 * h * direction[n])
        down = dense_penalty()
        for n, p in params.items():
            p.add_(h * direction[n])
    fd = (up - down) / (2 * h)
    analytic = sum(float((res.grads[n] * direction[n]).sum()) for n in res.grads)
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_hardware_model_gets_second_order_gradients():
    """On ideal hardware (the digital force up to rounding) the penalty and its gradients with
    respect to the nominal crossbar weights equal the digital model's."""
    digital = block(seed=2)
    chip = block(seed=2, hardware=HardwareConfig.ideal())
    tok = tokens()
    z0 = digital.settle(tok, "imex", tol=1e-12, max_steps=5000).z
    a = JacobianPenalty(adaptive=False, probes=2, seed=1).gradients(digital, tok, z0)
    b = JacobianPenalty(adaptive=False, probes=2, seed=1).gradients(chip, tok, z0)
    assert b.info["penalty"] == pytest.approx(a.info["penalty"], rel=1e-9)
    for name in ("attn.q.weight", "attn.o.weight", "ffn.up.weight"):
        assert float(b.grads[name].abs().max()) > 0
        torch.testing.assert_close(b.grads[name], a.grads[name], rtol=1e-7, atol=1e-10)
    # the crossbar maps read as before once the regulariser is done
    assert "forward" not in chip.attn.q.__dict__


# ------------------------------------------------------------------------------------------------
# the adaptive controller


def test_controller_grows_shrinks_and_clamps():
    reg = JacobianPenalty(weight=1.0, target_residual=1e-3, up=2.0, down=0.5, floor=0.25, cap=4.0)
    above = torch.tensor([1e-4, 2e-3])  # worst sample above target
    below = torch.tensor([1e-4, 5e-4])
    reg.observe(above)
    assert reg.weight == 2.0
    reg.observe(above)
    reg.observe(above)
    assert reg.weight == 4.0  # clamped at cap
    for expected in (2.0, 1.0, 0.5, 0.25, 0.25):
        reg.observe(below)
        assert reg.weight == expected  # shrinks, clamped at floor
    reg.observe(torch.tensor([float("nan"), 0.0]))
    assert reg.weight == 0.5  # a non-finite residual counts as above target
    assert reg.observations == 9 and reg.grown == 4


def test_default_factors_and_fixed_weight():
    reg = JacobianPenalty(weight=0.1)
    assert (reg.up, reg.down, reg.floor, reg.cap) == (1.25, 0.97, 0.1, 16.0)
    for _ in range(23):
        reg.observe(torch.tensor([1.0]))
    assert reg.weight == pytest.approx(min(16.0, 0.1 * 1.25**23))
    fixed = JacobianPenalty(weight=0.3, adaptive=False)
    fixed.observe(torch.tensor([1.0]))
    assert fixed.weight == 0.3
    homeo = JacobianHomeostasis(weight=0.2)
    homeo.observe(torch.tensor([1.0]))
    assert homeo.weight == 0.2


def test_state_dict_round_trip_is_bit_for_bit(setup):
    model, tok, z0 = setup
    a = JacobianPenalty(weight=0.5, probes=2, seed=11)
    residuals = [torch.tensor([2e-3, 1e-4]), torch.tensor([1e-5, 1e-5]), torch.tensor([5e-3])]
    a.gradients(model, tok, z0)
    a.observe(residuals[0])
    state = copy.deepcopy(a.state_dict())
    runs_a = []
    for r in residuals[1:]:
        res = a.gradients(model, tok, z0)
        a.observe(r)
        runs_a.append((res.value, res.grads["attn.k.weight"], a.weight))
    b = JacobianPenalty(weight=0.5, probes=2, seed=999)  # another seed: the state overrides it
    b.load_state_dict(state)
    for (value, grad, weight), r in zip(runs_a, residuals[1:], strict=True):
        res = b.gradients(model, tok, z0)
        b.observe(r)
        assert torch.equal(res.value, value) and torch.equal(res.grads["attn.k.weight"], grad)
        assert b.weight == weight
    with pytest.raises(ValueError, match="regulariser"):
        JacobianHomeostasis().load_state_dict(state)
    with pytest.raises(ValueError, match="probes"):
        JacobianPenalty(weight=0.5, probes=3).load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# residual penalty


def test_residual_penalty_scaling_and_value(setup):
    model, tok, z0 = setup
    # perturb z0 so the residual is not ~0
    z = z0 + 0.05 * torch.randn(z0.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    task = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    task_norm = math.sqrt(sum(float(t.numel()) for t in task.values()))
    reg = ResidualPenalty(fraction=0.2, eps=0.1, steps=3)
    res = reg.gradients(model, tok, z, task_grads=task)
    assert res.ok

    # hand-written reference: 3 Euler steps from z, penalty, autograd
    params = dict(model.named_parameters())
    force = model.force(tok)
    zz = z.clone()
    for _ in range(3):
        zz = zz + 0.1 * force(zz)
    f = force(zz)
    g = f.flatten(1).norm(dim=1) / zz.flatten(1).norm(dim=1)
    pen = (0.1 * g).square().mean()
    raw = torch.autograd.grad(pen, list(params.values()), allow_unused=True)
    raw = {n: r for n, r in zip(params, raw, strict=True) if r is not None}
    raw_norm = math.sqrt(sum(float(r.square().sum()) for r in raw.values()))
    scale = 0.2 * task_norm / raw_norm
    assert res.info["penalty"] == pytest.approx(float(pen.detach()), rel=1e-10)
    assert float(res.value) == pytest.approx(scale * float(pen.detach()), rel=1e-10)
    assert reg.weight == pytest.approx(scale, rel=1e-10)
    torch.testing.assert_close(res.info["residual"], g.detach())
    out_norm = math.sqrt(sum(float(r.square().sum()) for r in res.grads.values()))
    assert out_norm == pytest.approx(0.2 * task_norm, rel=1e-10)
    for n in raw:
        torch.testing.assert_close(res.grads[n], scale * raw[n])
    assert "pos.weight" in res.grads  # x_in enters the force


def test_residual_penalty_deployed_start_unroll(setup):
    """start='input': the deployed unroll from x_in / (1 + c), differentiated through the start."""
    model, tok, _ = setup
    task = {"head.weight": torch.ones_like(model.head.weight)}
    reg = ResidualPenalty(fraction=1.0, steps=5, start="input")
    res = reg.gradients(model, tok, model.settle(tok).z, task_grads=task)
    force = model.force(tok)
    zz = force.x_in / force.leak
    for _ in range(5):
        zz = zz + 0.1 * force(zz)
    g = force(zz).flatten(1).norm(dim=1) / zz.flatten(1).norm(dim=1)
    expected = float((0.1 * g).square().mean().detach())
    assert res.info["penalty"] == pytest.approx(expected, rel=1e-10)
    assert res.info["start"] == "input"


# ------------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize(
    "make, err",
    [
        (lambda: JacobianPenalty(weight=-1.0, adaptive=False), ValueError),
        (lambda: JacobianPenalty(weight=0.05), ValueError),  # below the floor while adaptive
        (lambda: JacobianPenalty(up=1.0), ValueError),
        (lambda: JacobianPenalty(down=1.0), ValueError),
        (lambda: JacobianPenalty(floor=2.0, cap=1.0, weight=1.5), ValueError),
        (lambda: JacobianPenalty(target_residual=0.0), ValueError),
        (lambda: JacobianPenalty(probes=0), ValueError),
        (lambda: JacobianPenalty(probes=1.5), TypeError),
        (lambda: JacobianPenalty(adaptive="yes"), TypeError),
        (lambda: JacobianHomeostasis(seed=-1), ValueError),
        (lambda: ResidualPenalty(fraction=0.0), ValueError),
        (lambda: ResidualPenalty(eps=float("inf")), ValueError),
        (lambda: ResidualPenalty(steps=-1), ValueError),
        (lambda: ResidualPenalty(start="zeros"), ValueError),
    ],
)
def test_bad_construction(make, err):
    with pytest.raises(err):
        make()


def test_bad_calls(setup):
    model, tok, z0 = setup
    with pytest.raises(ValueError, match="task_grads"):
        ResidualPenalty().gradients(model, tok, z0)
    with pytest.raises(ValueError, match="shape"):
        JacobianPenalty().gradients(model, tok, z0[:, :2])
    with pytest.raises(TypeError, match="z0"):
        JacobianPenalty().gradients(model, tok, z0.numpy())
    with pytest.raises(ValueError, match="free_residual"):
        JacobianPenalty().observe(torch.tensor(1e-3))
    with pytest.raises(TypeError, match="free_residual"):
        JacobianPenalty().observe(1e-3)
