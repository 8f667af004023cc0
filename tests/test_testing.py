"""analogeq.testing: the strategies generate what they promise, the checks pass and fail when they
should, and the README example runs; plus the `analogeq certify` command."""

from __future__ import annotations

import json

import pytest
import torch
from analogeq.circuits import DeviceModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analogeq import EquilibriumTransformer, HardwareConfig, ModelConfig
from analogeq.cli import main
from analogeq.contraction import Verdict
from analogeq.systems import ContractiveTanh, HopfOscillator
from analogeq.testing import (
    assert_contracts,
    assert_settles,
    device_models,
    hardware_configs,
    model_configs,
    states,
    tokens,
)

FAST = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@given(cfg=model_configs(), data=st.data())
@FAST
def test_strategies_generate_valid_objects(cfg, data):
    assert isinstance(cfg, ModelConfig) and cfg.d_model % cfg.n_heads == 0
    x = data.draw(tokens(cfg))
    assert x.dtype == torch.int64 and x.ndim == 2 and 1 <= x.shape[1] <= cfg.context
    assert int(x.min()) >= 0 and int(x.max()) < cfg.vocab_size
    z = data.draw(states(cfg, batch=x.shape[0], T=x.shape[1]))
    assert z.shape == (x.shape[0], x.shape[1], cfg.d_model) and z.dtype == cfg.dtype
    assert bool(torch.isfinite(z).all())
    model = EquilibriumTransformer(cfg, seed=0)
    assert bool(torch.isfinite(model.force(x)(z)).all())


@given(cfg=model_configs(lipschitz=True))
@FAST
def test_lipschitz_configs_are_built_contracting(cfg):
    model = EquilibriumTransformer(cfg, seed=0)
    b = model.lipschitz_bound()
    assert b.L <= cfg.lipschitz_target and b.contracts


@given(dev=device_models(), hw=hardware_configs())
@FAST
def test_hardware_strategies(dev, hw):
    assert isinstance(dev, DeviceModel) and dev.stuck_at_min + dev.stuck_at_max <= 0.2
    assert isinstance(hw, HardwareConfig) and hw.read_noise in ("off", "quenched")
    assert hw.dac_bits is None and hw.adc_bits is None


def test_readme_example():
    # the README's example test, verbatim apart from the decorator settings
    @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
    @given(cfg=model_configs(lipschitz=True), data=st.data())
    def test_my_block_contracts(cfg, data):
        model = EquilibriumTransformer(cfg, seed=0)
        x = data.draw(tokens(cfg, batch=2))
        assert_contracts(model, x, samples=1)
        assert_settles(model, x, methods=("euler", "imex", "anderson"))

    test_my_block_contracts()


def test_assert_contracts_fails_on_a_vacuous_model():
    model = EquilibriumTransformer(ModelConfig(vocab_size=8, d_model=4, n_heads=1, context=3,
                                               dtype=torch.float64), seed=0)
    with pytest.raises(AssertionError, match="not proven"):
        assert_contracts(model, samples=1)
    with pytest.raises(ValueError, match="margin"):
        assert_contracts(model, margin=-1.0)


def test_assert_contracts_margin():
    cfg = ModelConfig(vocab_size=8, d_model=4, n_heads=1, context=3, dtype=torch.float64,
                      norm_eps=0.5, lipschitz_target=1.8)
    model = EquilibriumTransformer(cfg, seed=0)
    cert = assert_contracts(model, samples=1, margin=0.1)
    assert cert.verdict is Verdict.CERTIFIED
    with pytest.raises(AssertionError, match="margin"):
        assert_contracts(model, samples=1, margin=0.5)


def test_assert_settles_on_forces():
    sys = ContractiveTanh(n=5, batch=2, seed=1)
    res = assert_settles(sys, sys.initial_state(), methods=("euler", "imex", "anderson", "ode"))
    assert set(res) == {"euler", "imex", "anderson", "ode"}
    hopf = HopfOscillator()
    with pytest.raises(AssertionError, match="did not settle"):
        assert_settles(hopf, hopf.initial_state(), methods=("euler",), max_steps=300)
    with pytest.raises(ValueError, match="tol"):
        assert_settles(sys, sys.initial_state(), tol=0.0)


def test_certify_cli(tmp_path, capsys):
    args = ["certify", "--vocab", "11", "--d-model", "8", "--heads", "2", "--context", "4",
            "--batch", "1", "--samples", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "VACUOUS" in out and "proves nothing" in out
    assert main(args + ["--norm-eps", "1", "--lipschitz-target", "1.5", "--device", "ideal"]) == 0
    out = capsys.readouterr().out
    assert "CERTIFIED" in out
    data = json.loads((tmp_path / "certify" / "certificate.json").read_text())
    cert = data["certificate"]
    assert cert["verdict"] == "certified" and cert["lipschitz"] <= 1.5 * (1 + 1e-4)
    assert cert["eps_safe"] == pytest.approx(2 / (2 + cert["lipschitz"]))
    with pytest.raises(SystemExit, match=r"--lipschitz-target must be < 1 \+ c = 2"):
        main(args + ["--lipschitz-target", "3"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args + ["--device", "flash"])
    assert exc.value.code == 2 and "argument --device" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["certify", "--help"])
    assert exc.value.code == 0
