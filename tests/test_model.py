"""Tests for the equilibrium transformer block (analogeq.model) and its holomorphic layers.

References are independent of the code under test: the real block re-written from the equation of
docs/physics.md section 1 with PyTorch's built-in functional ops, dense autograd
Jacobians, central finite differences, complex-step derivatives (Im F(z + i h v) / h, free of
cancellation at h = 1e-20), Cauchy-Riemann identities, and F.cross_entropy.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from analogeq.integrators import Status, settle

from analogeq import _layers
from analogeq.model import BlockForce, EquilibriumTransformer, ModelConfig

F64 = torch.float64
C128 = torch.complex128


def small_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=11, d_model=16, n_heads=2, context=8)
    base.update(overrides)
    return ModelConfig(**base)


def make(seed: int = 0, **overrides) -> EquilibriumTransformer:
    return EquilibriumTransformer(small_config(**overrides), seed=seed)


def tokens(batch: int, T: int, vocab: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, T), generator=torch.Generator().manual_seed(seed))


def randn(*shape, seed: int = 2, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference_force(model: EquilibriumTransformer, tok: torch.Tensor, z: torch.Tensor):
    """F(z) = x_in - (1 + c) z + Attn(LN_a z) + FFN(LN_f z) (docs/physics.md section 1), built-in
    ops only."""
    cfg = model.config
    B, T, C = z.shape
    H, dh = cfg.n_heads, C // cfg.n_heads

    def lin(mod, x):
        return F.linear(x, mod.weight, mod.bias)

    def ln(mod, x):
        return F.layer_norm(x, (C,), mod.weight, mod.bias, cfg.norm_eps)

    def heads(x):
        return x.view(B, T, H, dh).transpose(1, 2)

    x_in = model.embed.weight[tok] + model.pos.weight[:T]
    a = ln(model.ln_attn, z)
    q, k, v = heads(lin(model.attn.q, a)), heads(lin(model.attn.k, a)), heads(lin(model.attn.v, a))
    if cfg.qk_norm:
        q = F.rms_norm(q, (dh,), model.attn.q_norm.weight, cfg.norm_eps)
        k = F.rms_norm(k, (dh,), model.attn.k_norm.weight, cfg.norm_eps)
    s = torch.matmul(q, k.transpose(-2, -1)) * (cfg.attn_gain / math.sqrt(dh))
    if cfg.causal:
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(B, T, C)
    attn = lin(model.attn.o, y)
    ffn = lin(model.ffn.down, F.gelu(lin(model.ffn.up, ln(model.ln_ffn, z)), approximate="tanh"))
    return x_in + attn + ffn - (1 + cfg.c) * z


def reference_logits(model: EquilibriumTransformer, z: torch.Tensor) -> torch.Tensor:
    C = model.config.d_model
    h = F.layer_norm(z, (C,), model.ln_out.weight, model.ln_out.bias, model.config.norm_eps)
    return F.linear(h, model.head.weight, model.head.bias)


# ------------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("vocab_size", 0, ValueError),
        ("vocab_size", None, ValueError),
        ("vocab_size", 2.0, TypeError),
        ("d_model", 0, ValueError),
        ("n_heads", 0, ValueError),
        ("context", 0, ValueError),
        ("c", -0.5, ValueError),
        ("c", float("nan"), ValueError),
        ("c", "1", TypeError),
        ("qk_norm", 1, TypeError),
        ("ffn_mult", 0, ValueError),
        ("n_classes", 1, ValueError),
        ("input_dim", 0, ValueError),
        ("causal", None, TypeError),
        ("bias", "yes", TypeError),
        ("norm_eps", 0.0, ValueError),
        ("pool", "max", ValueError),
        ("init_scale", 0.0, ValueError),
        ("init_scale", float("inf"), ValueError),
        ("embed_scale", -1.0, ValueError),
        ("attn_gain", 0, ValueError),
        ("dtype", torch.int64, ValueError),
        ("dtype", torch.complex64, ValueError),
        ("dtype", "float8", ValueError),
        ("d_model", True, TypeError),
    ],
)
def test_bad_config_names_the_field(field, value, error):
    with pytest.raises(error, match=field):
        small_config(**{field: value})


def test_config_heads_must_divide_channels_and_accepts_valid_forms():
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads"):
        small_config(d_model=10, n_heads=3)
    cfg = small_config(c=0, dtype="float64")
    assert cfg.c == 0.0 and isinstance(cfg.c, float) and cfg.dtype is F64
    assert cfg.leak == 1.0 and cfg.head_dim == 8 and cfg.d_ffn == 64 and cfg.n_outputs == 11
    # vocab_size is unused (None allowed) only for feature inputs with a classification head
    cfg = ModelConfig(None, 8, 2, 8, input_dim=8, n_classes=10)
    assert cfg.n_outputs == 10
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})


def test_hardware_other_than_none_is_a_type_error_naming_hardwareconfig():
    with pytest.raises(TypeError, match="HardwareConfig"):
        EquilibriumTransformer(small_config(), hardware="pcm")
    with pytest.raises(TypeError, match="config must be a ModelConfig"):
        EquilibriumTransformer({"d_model": 16})


# ------------------------------------------------------------------------------------------------
# structure, shapes, initialisation


def test_stable_names_shapes_and_init_statistics():
    cfg = ModelConfig(vocab_size=50, d_model=64, n_heads=4, context=32, init_scale=0.5)
    model = EquilibriumTransformer(cfg, seed=0)
    layers = model.linear_layers()
    assert list(layers) == ["attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down", "head"]
    assert list(model.embedding_tables()) == ["embed", "pos"]
    assert layers["ffn.up"].weight.shape == (256, 64) and layers["head"].weight.shape == (50, 64)
    # std gain / sqrt(fan_in): 1 for q, up; init_scale for the branch outputs o, down.
    for name, gain in [("attn.q", 1.0), ("attn.o", 0.5), ("ffn.up", 1.0), ("ffn.down", 0.5)]:
        w = layers[name].weight.detach()
        expect = gain / math.sqrt(w.shape[1])
        assert abs(float(w.std()) / expect - 1) < 0.1, name
    x_in = model.force(tokens(64, 32, vocab=50)).x_in
    assert abs(float(x_in.std()) - cfg.embed_scale) < 0.1
    # seeded construction repeats bit for bit; another seed differs
    again = EquilibriumTransformer(cfg, seed=0)
    other = EquilibriumTransformer(cfg, seed=1)
    for (n, p), p2 in zip(model.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(p, p2), n
    assert not torch.equal(model.attn.q.weight, other.attn.q.weight)


@pytest.mark.parametrize("n_classes", [None, 5])
def test_shapes_token_inputs(n_classes):
    model = make(n_classes=n_classes)
    tok = tokens(3, 6)
    force = model.force(tok)
    assert isinstance(force, BlockForce) and force.shape == (3, 6, 16) and force.leak == 2.0
    z = randn(3, 6, 16, dtype=torch.float32)
    assert force.x_in.shape == (3, 6, 16) and force.x_in.dtype == torch.float32
    for out in (force(z), force.nonlinear(z), force.attention(z), force.ffn(z), force.coupling(z)):
        assert out.shape == z.shape and out.dtype == z.dtype
    logits = model.readout(z)
    assert logits.shape == (3, 6, 11 if n_classes is None else 5)
    assert model.pooled_logits(logits).shape == (3, logits.shape[-1])


def test_feature_inputs_digits_as_rows():
    cfg = ModelConfig(None, d_model=16, n_heads=2, context=8, input_dim=8, n_classes=10)
    model = EquilibriumTransformer(cfg, seed=0)
    assert list(model.linear_layers())[0] == "embed" and list(model.embedding_tables()) == ["pos"]
    images = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    force = model.force(images)  # features follow the model's dtype (float32)
    x_ref = F.linear(images.float(), model.embed.weight, model.embed.bias) + model.pos.weight[:8]
    torch.testing.assert_close(force.x_in, x_ref, rtol=0, atol=0)
    result = model.settle(images, "imex")
    assert result.status is Status.CONVERGED
    labels = torch.tensor([0, 3, 9, 1])
    expect = F.cross_entropy(reference_logits(model, result.z)[:, -1], labels)
    torch.testing.assert_close(model.loss(result.z, labels), expect)


def test_bad_inputs_and_states_are_named_errors():
    model = make()
    with pytest.raises(ValueError, match="vocab_size=11"):
        model.force(torch.tensor([[1, 11]]))
    with pytest.raises(ValueError, match="vocab_size=11"):
        model.force(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="int64 or int32"):
        model.force(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="context=8"):
        model.force(tokens(1, 9))
    with pytest.raises(ValueError, match=r"\(batch, T\)"):
        model.force(torch.tensor([1, 2]))
    force = model.force(tokens(2, 4))
    with pytest.raises(ValueError, match="shape"):
        force(torch.zeros(2, 5, 16))
    with pytest.raises(TypeError, match="dtype"):
        force(torch.zeros(2, 4, 16, dtype=F64))
    with pytest.raises(TypeError, match="z0 must be"):
        model.settle(tokens(2, 4), "euler", z0="ones")
    features = make(input_dim=3, n_classes=4)
    with pytest.raises(ValueError, match="input_dim=3"):
        features.force(torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="finite"):
        features.force(torch.full((1, 4, 3), float("nan")))


def test_states_follow_parameters_dtype():
    model = make()
    tok = tokens(2, 5)
    z32 = randn(2, 5, 16, dtype=torch.float32)
    assert model.force(tok)(z32.to(torch.complex64)).dtype == torch.complex64
    model = model.to(F64)
    force = model.force(tok)
    assert force.x_in.dtype == F64 and force(z32.double()).dtype == F64
    assert model.readout(z32.double()).dtype == F64


# ------------------------------------------------------------------------------------------------
# the force: formula, split, select, Jacobian, causality


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("options", [{}, {"qk_norm": False, "causal": False, "attn_gain": 2.0}])
def test_real_path_is_bit_identical_to_builtin_reference(dtype, options):
    """Real states run PyTorch's own kernels: the holomorphic layers change no real result."""
    model = make(dtype=dtype, c=0.5, **options)
    tok = tokens(3, 7)
    z = randn(3, 7, 16, dtype=dtype)
    assert torch.equal(model.force(tok)(z), reference_force(model, tok, z))
    assert torch.equal(model.readout(z), reference_logits(model, z))


def test_layers_real_inputs_are_the_builtin_kernels():
    x = randn(3, 5, 8)
    w, b = randn(8, seed=3), randn(8, seed=4)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    assert torch.equal(_layers.layer_norm(x, w, b, 1e-5), F.layer_norm(x, (8,), w, b, 1e-5))
    assert torch.equal(_layers.rms_norm(x, w, 1e-5), F.rms_norm(x, (8,), w, 1e-5))
    assert torch.equal(_layers.gelu_tanh(x), F.gelu(x, approximate="tanh"))
    assert torch.equal(_layers.log_softmax(x), torch.log_softmax(x, -1))
    s = randn(3, 5, 5)
    assert torch.equal(_layers.softmax(s, mask), torch.softmax(s.masked_fill(~mask, -math.inf), -1))


def test_split_is_exact_and_branches_add_up():
    model = make(dtype=F64, c=1.5)
    force = model.force(tokens(2, 6))
    z = randn(2, 6, 16)
    assert force.leak == 2.5
    assert torch.equal(force(z), -force.leak * z + force.nonlinear(z))
    torch.testing.assert_close(force.nonlinear(z), force.x_in + force.attention(z) + force.ffn(z))
    torch.testing.assert_close(force.coupling(z), force.nonlinear(z) - force.x_in)


def test_select_equals_slicing():
    model = make(dtype=F64)
    force = model.force(tokens(4, 6))
    z = randn(4, 6, 16)
    index = torch.tensor([3, 0])
    sub = force.select(index)
    assert sub.shape == (2, 6, 16)
    tight = dict(rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(sub.x_in, force.x_in[index], rtol=0, atol=0)
    torch.testing.assert_close(sub(z[index]), force(z)[index], **tight)
    torch.testing.assert_close(sub.nonlinear(z[index]), force.nonlinear(z)[index], **tight)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_jacobian_dense_vs_jvp_vjp_and_finite_differences(qk_norm):
    model = make(dtype=F64, d_model=8, n_heads=2, context=4, qk_norm=qk_norm, init_scale=1.0)
    force = model.force(tokens(1, 4))
    z, v, u = randn(1, 4, 8, seed=5), randn(1, 4, 8, seed=6), randn(1, 4, 8, seed=7)
    n = z.numel()
    J = torch.autograd.functional.jacobian(force, z).reshape(n, n)
    _, jv = torch.func.jvp(force, (z,), (v,))
    _, pullback = torch.func.vjp(force, z)
    (uJ,) = pullback(u)
    torch.testing.assert_close(jv.reshape(n), J @ v.reshape(n), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(uJ.reshape(n), J.T @ u.reshape(n), rtol=1e-12, atol=1e-12)
    # central finite differences: an AD-free check of the same directional derivative
    h = 1e-5
    fd = (force(z + h * v) - force(z - h * v)) / (2 * h)
    torch.testing.assert_close(fd, jv, rtol=1e-7, atol=1e-8)
    # the nonlinear part's Jacobian is J + leak I
    JN = torch.autograd.functional.jacobian(force.nonlinear, z).reshape(n, n)
    torch.testing.assert_close(JN, J + force.leak * torch.eye(n, dtype=F64), rtol=1e-13, atol=1e-13)
    # attention and FFN are non-conservative: J is not symmetric (no energy function)
    assert float((J - J.T).abs().max()) > 1e-3


@pytest.mark.parametrize("causal", [True, False])
def test_jacobian_block_structure_follows_the_mask(causal):
    model = make(dtype=F64, d_model=8, n_heads=2, context=4, causal=causal, init_scale=1.0)
    force = model.force(tokens(1, 4))
    J = torch.autograd.functional.jacobian(force, randn(1, 4, 8))[0, :, :, 0]  # (T, C, T, C)
    blocks = J.abs().amax(dim=(1, 3))  # (t, s): largest |dF_t / dz_s|
    upper = torch.ones(4, 4, dtype=torch.bool).triu(1)
    if causal:
        assert torch.all(blocks[upper] == 0)
    else:
        assert torch.all(blocks[upper] > 1e-6)
    assert torch.all(blocks[upper.T] > 1e-6)


def test_causal_masking_later_token_changes_nothing_earlier():
    model = make(dtype=F64)
    a = tokens(2, 6)
    b = a.clone()
    b[:, -1] = (b[:, -1] + 1) % 11
    fa, fb = model.force(a), model.force(b)
    assert torch.equal(fa.x_in[:, :-1], fb.x_in[:, :-1])
    assert not torch.equal(fa.x_in[:, -1], fb.x_in[:, -1])
    za = randn(2, 6, 16)
    zb = za.clone()
    zb[:, -1] += randn(2, 16, seed=9)
    assert torch.equal(fa(za)[:, :-1], fb(zb)[:, :-1])
    # at the fixed point: the settled states of the earlier tokens agree
    ra = model.settle(a, "imex", tol=1e-12, max_steps=3000)
    rb = model.settle(b, "imex", tol=1e-12, max_steps=3000)
    assert ra.status is Status.CONVERGED and rb.status is Status.CONVERGED
    torch.testing.assert_close(ra.z[:, :-1], rb.z[:, :-1], rtol=1e-10, atol=1e-10)
    assert float((ra.z[:, -1] - rb.z[:, -1]).abs().max()) > 1e-3
    # without the mask the change reaches the earlier tokens
    bidir = make(dtype=F64, causal=False)
    ra = bidir.settle(a, "imex", tol=1e-12, max_steps=3000)
    rb = bidir.settle(b, "imex", tol=1e-12, max_steps=3000)
    assert float((ra.z[:, 0] - rb.z[:, 0]).abs().max()) > 1e-6


# ------------------------------------------------------------------------------------------------
# holomorphic extension


@pytest.mark.parametrize("options", [{}, {"qk_norm": False}, {"causal": False, "c": 0.0}])
def test_complex_step_matches_jvp(options):
    """Im F(z + i h v) / h is F'(z) v without cancellation: an independent derivative."""
    model = make(dtype=F64, init_scale=1.0, **options)
    force = model.force(tokens(2, 8))
    z, v = randn(2, 8, 16, seed=5), randn(2, 8, 16, seed=6)
    h = 1e-20
    complex_step = force(torch.complex(z, h * v)).imag / h
    _, jv = torch.func.jvp(force, (z,), (v,))
    assert float((complex_step - jv).norm() / jv.norm()) < 1e-10
    for part in (force.attention, force.ffn):
        cs = part(torch.complex(z, h * v)).imag / h
        _, pv = torch.func.jvp(part, (z,), (v,))
        assert float((cs - pv).norm() / pv.norm()) < 1e-10
    # readout and loss (the nudge of holomorphic EP needs both extended)
    targets = tokens(2, 8, seed=4)
    fns = (model.readout, lambda s: model.loss(s, targets), lambda s: model.loss(s, targets[:, 0]))
    for fn in fns:
        cs = fn(torch.complex(z, h * v)).imag / h
        _, dv = torch.func.jvp(fn, (z,), (v,))
        assert float((cs - dv).norm() / dv.norm()) < 1e-10


def test_complex_extension_is_holomorphic_off_the_real_line():
    """Cauchy-Riemann: at a genuinely complex state, F'(z)(i v) = i F'(z) v. Any conjugate or
    modulus (|z - mu|^2 in a norm, |x| in a softmax) breaks this identity."""
    model = make(dtype=F64, init_scale=1.0)
    force = model.force(tokens(2, 8))
    z = torch.complex(randn(2, 8, 16, seed=5), 0.3 * randn(2, 8, 16, seed=8))
    v = torch.complex(randn(2, 8, 16, seed=6), randn(2, 8, 16, seed=10))
    targets = tokens(2, 8, seed=4)
    for fn in (force, model.readout, lambda s: model.loss(s, targets)):
        _, d_v = torch.func.jvp(fn, (z,), (v,))
        _, d_iv = torch.func.jvp(fn, (z,), (1j * v,))
        torch.testing.assert_close(d_iv, 1j * d_v, rtol=1e-12, atol=1e-12)


def test_complex_path_on_the_real_line_agrees_with_real_path():
    model = make(dtype=F64)
    force = model.force(tokens(2, 8))
    z = randn(2, 8, 16)
    out = force(z.to(C128))
    torch.testing.assert_close(out.real, force(z), rtol=1e-13, atol=1e-13)
    assert torch.equal(out.imag, torch.zeros_like(z))
    targets = tokens(2, 8, seed=4)
    torch.testing.assert_close(model.loss(z.to(C128), targets).real, model.loss(z, targets))


def test_complex_layers_against_real_functions_and_large_logits():
    x = randn(2, 6, 8, seed=1)
    v = randn(2, 6, 8, seed=2)
    w, b = randn(8, seed=3), randn(8, seed=4)
    mask = torch.ones(6, 8, dtype=torch.bool).tril(2)
    fns = {
        "layer_norm": lambda t: _layers.layer_norm(t, w, b, 1e-5),
        "rms_norm": lambda t: _layers.rms_norm(t, w, 1e-5),
        "gelu_tanh": _layers.gelu_tanh,
        "softmax": lambda t: _layers.softmax(t, mask),
        "log_softmax": _layers.log_softmax,
    }
    h = 1e-20
    for name, fn in fns.items():
        torch.testing.assert_close(fn(x.to(C128)).real, fn(x), rtol=1e-13, atol=1e-13, msg=name)
        _, jv = torch.func.jvp(fn, (x,), (v,))
        cs = fn(torch.complex(x, h * v)).imag / h
        torch.testing.assert_close(cs, jv, rtol=1e-10, atol=1e-12, msg=name)
    # masked entries are exactly 0 and logits near exp's overflow stay finite
    big = 800.0 * x
    p = _layers.softmax(torch.complex(big, 0.1 * v), mask)
    assert torch.isfinite(p).all() and torch.all(p[..., ~mask] == 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 6, dtype=C128))
    torch.testing.assert_close(_layers.log_softmax(big.to(C128)).real, torch.log_softmax(big, -1))


# ------------------------------------------------------------------------------------------------
# readout and loss


def test_loss_equals_cross_entropy_per_token_with_ignore_index():
    model = make(dtype=F64)
    z = randn(3, 5, 16)
    targets = tokens(3, 5, seed=6)
    targets[0, 1] = targets[2, 4] = -1
    logits = reference_logits(model, z)
    expect = F.cross_entropy(logits.reshape(15, 11), targets.reshape(15), ignore_index=-1)
    torch.testing.assert_close(model.loss(z, targets, ignore_index=-1), expect, rtol=1e-14, atol=0)
    # by hand: mean over the 13 kept tokens of -log softmax at the target
    logp = torch.log_softmax(reference_logits(model, z), -1)
    keep = targets != -1
    hand = -logp[keep].gather(1, targets[keep][:, None]).sum() / 13
    torch.testing.assert_close(model.loss(z, targets, ignore_index=-1), hand)
    # the complex path with real state agrees, ignore mask included
    torch.testing.assert_close(model.loss(z.to(C128), targets, ignore_index=-1).real, expect)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_sequence_classification_pooling(pool):
    model = make(dtype=F64, n_classes=4, pool=pool)
    z = randn(3, 5, 16)
    labels = torch.tensor([0, 3, 2])
    logits = reference_logits(model, z)
    pooled = logits[:, -1] if pool == "last" else logits.mean(1)
    torch.testing.assert_close(model.loss(z, labels), F.cross_entropy(pooled, labels))


def test_bad_targets_are_named_errors():
    model = make(dtype=F64)
    z = randn(2, 4, 16)
    with pytest.raises(ValueError, match="n_outputs=11"):
        model.loss(z, torch.full((2, 4), 11))
    with pytest.raises(ValueError, match="ignore_index"):
        model.loss(z, torch.full((2, 4), -100))
    with pytest.raises(ValueError, match=r"\(batch, T\)"):
        model.loss(z, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        model.loss(z, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="C=16"):
        model.readout(torch.zeros(2, 4, 8, dtype=F64))


# ------------------------------------------------------------------------------------------------
# settling


def _default_model_and_tokens():
    # Default ModelConfig (float32, c = 1, qk-norm, init_scale 0.5); only the sizes are chosen.
    cfg = ModelConfig(vocab_size=32, d_model=32, n_heads=4, context=16)
    return EquilibriumTransformer(cfg, seed=0), tokens(4, 16, vocab=32, seed=3)


def _check_settled(model, tok, result, tol=1e-6):
    """The convergence test recomputed by hand (not taken from the result): displacement
    rms(F(z)) / leak <= atol + tol rms(z), atol = tol rms(F(z0)) / leak (the default, from the start
    z0 = x_in / leak)."""
    assert result.status is Status.CONVERGED, result.summary()
    z = result.z
    leak = model.config.leak
    f = reference_force(model, tok, z)
    z0 = model.force(tok).x_in / leak
    f0 = reference_force(model, tok, z0)
    rms = lambda x: x.flatten(1).square().mean(1).sqrt()  # noqa: E731
    atol = tol * rms(f0) / leak
    assert bool((rms(f) / leak <= (atol + tol * rms(z)) * (1 + 1e-6)).all())


@pytest.mark.parametrize("method, options", [("euler", {"eps": 0.1}), ("imex", {})])
def test_fresh_default_model_settles(method, options):
    model, tok = _default_model_and_tokens()
    result = model.settle(tok, method, **options)
    _check_settled(model, tok, result)
    assert result.steps <= 300  # measured: ~110 euler steps, ~40 imex steps (tol 1e-6)


def test_fresh_default_model_settles_with_anderson(require_method):
    require_method("anderson")
    model, tok = _default_model_and_tokens()
    _check_settled(model, tok, model.settle(tok))


def test_fresh_model_contracts_at_its_fixed_point():
    """The init's purpose (docs/physics.md section 6): every Jacobian eigenvalue at z* has Re < 0,
    with margin, and the leak 1 + c dominates (eigenvalues of J lie in Re mu < -(1 + c) / 4)."""
    model = make(dtype=F64, d_model=16, n_heads=2, context=6)
    tok = tokens(1, 6)
    result = model.settle(tok, "imex", tol=1e-12, max_steps=3000)
    assert result.status is Status.CONVERGED
    n = result.z.numel()
    J = torch.autograd.functional.jacobian(model.force(tok), result.z).reshape(n, n)
    eigs = torch.linalg.eigvals(J)
    assert float(eigs.real.max()) < -0.5


def test_initial_states_and_forward():
    model = make(dtype=F64)
    tok = tokens(2, 6)
    force = model.force(tok)
    torch.testing.assert_close(model.initial_state(force), force.x_in / 2)
    assert torch.equal(model.initial_state(force, "zeros"), torch.zeros(2, 6, 16, dtype=F64))
    from_zero = model.settle(tok, "imex", z0="zeros", tol=1e-10)
    from_input = model.settle(tok, "imex", tol=1e-10)
    torch.testing.assert_close(from_zero.z, from_input.z, rtol=1e-8, atol=1e-8)
    direct = settle(force, force.x_in.detach() / 2, "imex", tol=1e-10)
    assert torch.equal(direct.z, from_input.z)
    logits = model(tok, "imex", tol=1e-10)
    assert torch.equal(logits, model.readout(from_input.z))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        model(tok, "euler", max_steps=2)
