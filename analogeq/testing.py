"""Property-test tools for your own pytest suites: hypothesis strategies and ready checks.

Strategies (they need `hypothesis`, a dev dependency, imported when a strategy is built):

* `model_configs(...)`: small `ModelConfig`s (channels, heads, context, c, qk-norm, causal,
  norm_eps, an optional `lipschitz_target`), float64 by default;
* `device_models(...)`: `circuits.DeviceModel`s around the presets, with stuck-at fault rates;
* `hardware_configs(...)`: `HardwareConfig`s (device, read noise "off"/"quenched", tau spread,
  IR drop; no converters, which have no Lipschitz bound);
* `tokens(config, ...)`: token ids (batch, T) in [0, vocab_size);
* `states(config, ...)`: finite states (batch, T, C) of the model's dtype.

Checks (plain functions: no hypothesis needed):

* `assert_contracts(model, inputs=None, ...)`: `analogeq.contraction.certify` must say CERTIFIED
  (VIOLATED always fails: a measured figure above a proven bound); returns the certificate.
* `assert_settles(target, inputs_or_z0, methods=..., ...)`: every method converges, and all reach
  the same fixed point; returns the results by method.

Example::

    from hypothesis import given, settings, strategies as st
    from analogeq import EquilibriumTransformer
    from analogeq.testing import assert_contracts, assert_settles, model_configs, tokens

    @settings(max_examples=10, deadline=None)
    @given(cfg=model_configs(lipschitz=True), data=st.data())
    def test_my_block_contracts(cfg, data):
        model = EquilibriumTransformer(cfg, seed=0)
        x = data.draw(tokens(cfg, batch=2))
        assert_contracts(model, x)
        assert_settles(model, x, methods=("euler", "imex", "anderson"))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .contraction import Certificate, Verdict, certify
from .model import EquilibriumTransformer, ModelConfig

__all__ = [
    "model_configs",
    "device_models",
    "hardware_configs",
    "tokens",
    "states",
    "assert_contracts",
    "assert_settles",
]


def _st() -> Any:
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - hypothesis is a dev dependency
        raise ImportError(
            "analogeq.testing strategies need hypothesis: pip install 'analogeq[dev]' or "
            "pip install hypothesis"
        ) from exc
    return st


# ------------------------------------------------------------------------------------------------
# strategies


def model_configs(*, max_heads: int = 2, max_head_dim: int = 8, max_context: int = 6,
                  vocab_size: int = 16, lipschitz: bool | None = None,
                  dtype: torch.dtype = torch.float64) -> Any:
    """Small `ModelConfig`s. `lipschitz`: True -> always a `lipschitz_target` (contraction by
    construction, with norm_eps in [0.1, 2] so the couplings stay useful), False -> never,
    None -> either."""
    st = _st()

    @st.composite
    def build(draw: Any) -> ModelConfig:
        heads = draw(st.integers(1, max_heads))
        head_dim = draw(st.integers(1, max_head_dim))
        c = draw(st.floats(0.0, 2.0))
        with_target = draw(st.booleans()) if lipschitz is None else lipschitz
        target = None
        if with_target:
            target = draw(st.floats(0.05, 0.95)) * (1.0 + c)
            norm_eps = draw(st.floats(0.1, 2.0))
        else:
            norm_eps = draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0]))
        return ModelConfig(
            vocab_size=vocab_size, d_model=heads * head_dim, n_heads=heads,
            context=draw(st.integers(1, max_context)), c=c, qk_norm=draw(st.booleans()),
            ffn_mult=draw(st.integers(1, 4)), causal=draw(st.booleans()),
            bias=draw(st.booleans()), norm_eps=norm_eps,
            init_scale=draw(st.floats(0.05, 1.0)), attn_gain=draw(st.floats(0.25, 2.0)),
            dtype=dtype, lipschitz_target=target,
        )

    return build()


def device_models(*, max_stuck: float = 0.1) -> Any:
    """`circuits.DeviceModel`s: a preset with stuck-at-min / stuck-at-max fault rates in
    [0, max_stuck] and a device-to-device spread in [0, 0.1]."""
    import dataclasses

    from .circuits import preset

    st = _st()
    return st.builds(
        lambda name, smin, smax, dtod: dataclasses.replace(
            preset(name), stuck_at_min=smin, stuck_at_max=smax, g_max_dtod=dtod),
        st.sampled_from(["ideal", "pcm", "rram", "ecram"]),
        st.floats(0.0, max_stuck), st.floats(0.0, max_stuck), st.floats(0.0, 0.1),
    )


def hardware_configs(*, devices: Any = None, max_tau_spread: float = 0.3) -> Any:
    """`HardwareConfig`s with read noise "off" or "quenched", no converters, a tau spread in
    [0, max_tau_spread], IR drop in [0, 1e-4] and a seed."""
    from .hardware import HardwareConfig

    st = _st()
    return st.builds(
        HardwareConfig,
        device=device_models() if devices is None else devices,
        read_noise=st.sampled_from(["off", "quenched"]),
        tau_spread=st.floats(0.0, max_tau_spread),
        ir_drop=st.floats(0.0, 1e-4),
        seed=st.integers(0, 2**32 - 1),
    )


def tokens(config: ModelConfig, *, batch: int | None = None, T: int | None = None) -> Any:
    """Token ids (batch, T) in [0, vocab_size); batch in [1, 3] and T in [1, context] unless
    given."""
    if not isinstance(config, ModelConfig) or config.vocab_size is None:
        raise TypeError("config must be a ModelConfig of a token model (vocab_size set)")
    st = _st()

    @st.composite
    def build(draw: Any) -> Tensor:
        b = batch if batch is not None else draw(st.integers(1, 3))
        t = T if T is not None else draw(st.integers(1, config.context))
        ids = draw(st.lists(st.integers(0, config.vocab_size - 1), min_size=b * t,
                            max_size=b * t))
        return torch.tensor(ids, dtype=torch.int64).view(b, t)

    return build()


def states(config: ModelConfig, *, batch: int | None = None, T: int | None = None,
           scale: float = 3.0) -> Any:
    """Finite states (batch, T, C) of the config's dtype, entries in [-scale, scale]."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    st = _st()

    @st.composite
    def build(draw: Any) -> Tensor:
        b = batch if batch is not None else draw(st.integers(1, 3))
        t = T if T is not None else draw(st.integers(1, config.context))
        n = b * t * config.d_model
        vals = draw(st.lists(st.floats(-scale, scale, allow_nan=False, allow_infinity=False),
                             min_size=n, max_size=n))
        return torch.tensor(vals, dtype=config.dtype).view(b, t, config.d_model)

    return build()


# ------------------------------------------------------------------------------------------------
# checks


def assert_contracts(model: EquilibriumTransformer, inputs: Tensor | None = None, *,
                     margin: float = 0.0, **options: Any) -> Certificate:
    """Assert that `certify(model, inputs, **options)` proves contraction with rate > margin.

    Fails with the certificate's text when the verdict is VACUOUS or VIOLATED (a measured figure
    above a proven bound), or the guaranteed rate 1 + c - L is <= margin. Returns the certificate.
    """
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not margin >= 0:
        raise ValueError(f"margin must be a real number >= 0, got {margin!r}")
    cert = certify(model, inputs, **options)
    assert cert.verdict is not Verdict.VIOLATED, "bound violated:\n" + cert.text()
    assert cert.verdict is Verdict.CERTIFIED, "contraction not proven:\n" + cert.text()
    assert cert.rate > margin, f"rate {cert.rate:.4g} <= margin {margin}:\n" + cert.text()
    return cert


def assert_settles(target: Any, inputs: Tensor, *,
                   methods: Sequence[Any] = ("euler", "imex", "anderson", "ode"),
                   tol: float = 1e-7, agree: float | None = None,
                   **options: Any) -> dict[str, Any]:
    """Assert that every method settles `target` to one fixed point.

    Args:
        target: an `EquilibriumTransformer` (then `inputs` are its inputs) or any force (then
            `inputs` is the start z0, shape (batch, ...)).
        methods: names or integrator instances.
        tol: force-residual tolerance of every settle (> 0).
        agree: largest relative distance ||z_a - z_b|| / ||z_b|| between the methods' fixed
            points; default 1e3 * tol (a contraction at rate alpha puts a point of residual g
            within g ||z|| / alpha of the fixed point).
        **options: passed to every settle (e.g. max_steps).

    Returns: {method label: SettleResult}.
    """
    from .integrators import Status, settle

    if not isinstance(tol, int | float) or isinstance(tol, bool) or not (0 < tol < math.inf):
        raise ValueError(f"tol must be a finite real number > 0, got {tol!r}")
    agree = 1e3 * tol if agree is None else agree
    if not methods:
        raise ValueError("methods must name at least one integrator")
    results: dict[str, Any] = {}
    for m in methods:
        label = m if isinstance(m, str) else repr(m)
        if isinstance(target, EquilibriumTransformer):
            opts = dict(options)
            if target.hardware is not None:
                opts.setdefault("resample_read_noise", False)
            res = target.settle(inputs, m, tol=tol, **opts)
        else:
            res = settle(target, inputs, m, tol=tol, **options)
        assert res.status is Status.CONVERGED, f"{label} did not settle: {res.summary()}"
        results[label] = res
    ref_label, ref = next(iter(results.items()))
    dims = tuple(range(1, ref.z.ndim))
    for label, res in results.items():
        dist = torch.linalg.vector_norm(res.z - ref.z, dim=dims) / torch.linalg.vector_norm(
            ref.z, dim=dims).clamp_min(torch.finfo(ref.z.dtype).tiny)
        worst = float(dist.max())
        assert worst <= agree, (
            f"{label} and {ref_label} reached different points (relative distance {worst:.3e} "
            f"> {agree:.3e})"
        )
    return results
