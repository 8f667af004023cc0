"""Deployment over drift time: drift compensation against hand-computed reads, the ideal chip
against the digital model, time parsing, the evaluate CLI on a small checkpoint."""

import json
import math

import numpy as np
import pytest
import torch

from analogeq.cli import main
from analogeq.deploy import (
    apply_drift_compensation,
    drift_baseline,
    evaluate_deployment,
    parse_times,
)
from analogeq.hardware import HardwareConfig
from analogeq.model import EquilibriumTransformer, ModelConfig
from analogeq.tasks import synthetic
from analogeq.train import load_checkpoint, save_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    task = synthetic()
    cfg = ModelConfig(d_model=16, n_heads=2, ffn_mult=2, embed_scale=2.0, **task.model_fields)
    path = tmp_path_factory.mktemp("deploy") / "model.pt"
    save_model(path, EquilibriumTransformer(cfg, seed=3), task="synthetic")
    return path


def _reads(model):
    """aihwkit's global drift-compensation readout per tile, re-derived from its source
    (src/aihwkit/inference/compensation/drift.py, `GlobalDriftCompensation.get_readout_tensor`
    = eye(in_size) and `.readout` = clamp(mean |out|, min=0.0001)), on the noise-free
    conductances: the outputs of the one-hot inputs are the entries W_oi themselves."""
    out = []
    for lin in model.crossbars().values():
        for tile in lin.tiles:
            gp, gm = tile.plus.conductance, tile.minus.conductance
            w = ((gp - gm) / tile.g_ref).double().numpy()
            outputs = np.eye(w.shape[1]) @ w.T
            out.append(max(float(np.abs(outputs).mean()), 1e-4))
    return out


def test_drift_compensation_restores_the_reference_reads(ckpt):
    model = load_checkpoint(ckpt, hardware=HardwareConfig(device="pcm", seed=1,
                                                          read_noise="off"))
    before = _reads(model)
    base = drift_baseline(model)
    model.drift(86400.0 * 365)
    drifted = _reads(model)
    assert all(d < b for d, b in zip(drifted, before, strict=True))  # PCM conductances decay
    alphas = apply_drift_compensation(model, base)
    assert all(a > 1 for a in alphas)
    # alpha = readout(0) / readout(t), aihwkit `BaseDriftCompensation.apply`
    torch.testing.assert_close(torch.tensor(alphas, dtype=torch.float64),
                               torch.tensor(before, dtype=torch.float64)
                               / torch.tensor(drifted, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(_reads(model)), torch.tensor(before), rtol=1e-5,
                               atol=0)


def test_drift_compensation_reads_one_hot_means_not_all_ones_sums():
    """A tile whose rows cancel under an all-ones input (sum_i W_oi = 0) still has a readout:
    the mean |W_oi| of the one-hot reads. The old all-ones sum read 0 there and left it
    uncompensated; aihwkit's readout decays with the conductances and is compensated."""
    from analogeq.circuits import DeviceModel, Drift

    dev = DeviceModel(g_max=25e-6, drift=Drift(kind="constant", nu_mean=0.1), name="drifty")
    hw = HardwareConfig(device=dev, read_noise="off", tau_spread=0.0, seed=0)
    cfg = ModelConfig(vocab_size=8, d_model=4, n_heads=2, context=2, ffn_mult=1)
    model = EquilibriumTransformer(cfg, hardware=hw, seed=0)
    with torch.no_grad():
        for p in model.crossbars().values():
            w = torch.tensor([[1.0, -1.0], [0.5, -0.5]]).repeat(p.out_features // 2,
                                                                 p.in_features // 2)
            p.program(w.to(p.g_ref.dtype))
    base = drift_baseline(model)
    assert all(ref == pytest.approx(0.75, rel=1e-6) for _, ref in base)  # mean |W_oi|
    model.drift(1e6)
    alphas = apply_drift_compensation(model, base)
    expected = ((1e6 + dev.t0) / dev.t0) ** 0.1  # every conductance decays by the same factor
    assert alphas == pytest.approx([expected] * len(alphas), rel=1e-5)


def test_ideal_chip_without_drift_matches_the_digital_model(ckpt):
    res = evaluate_deployment(ckpt, device="ideal", times={"1s": 1.0, "1d": 86400.0},
                              seeds=(0, 1), read_noise="off", tau_spread=0.0)
    assert tuple(res.accuracy.shape) == (2, 2)
    assert torch.all(res.accuracy == res.digital["accuracy"])
    torch.testing.assert_close(res.loss, torch.full_like(res.loss, res.digital["loss"]),
                               rtol=1e-4, atol=1e-5)
    m, s = res.mean_std()
    assert torch.all(s == 0)


def test_pcm_seeds_differ_and_std_is_reported(ckpt):
    res = evaluate_deployment(ckpt, device="pcm", times={"1s": 1.0, "1y": 3.15e7},
                              seeds=(0, 1, 2), limit=64)
    d = res.to_dict()
    assert len(d["accuracy_mean"]) == 2 and len(d["accuracy"]) == 3
    assert not torch.equal(res.loss[0], res.loss[1])  # different chips, different errors
    assert "+-" in res.table()


def test_parse_times():
    t = parse_times("1s,1h,1d,1mo,1y")
    assert list(t.values()) == [1.0, 3600.0, 86400.0, 86400.0 * 30, 86400.0 * 365]
    assert parse_times("10,2m") == {"10": 10.0, "2m": 120.0}
    with pytest.raises(ValueError, match="increase"):
        parse_times("1d,1h")
    with pytest.raises(ValueError, match="unit"):
        parse_times("3w")


def test_evaluate_cli_writes_results_and_plot(ckpt, tmp_path, capsys):
    code = main(["evaluate", str(ckpt), "--device", "ideal", "--seeds", "1", "--times", "1s",
                 "--limit", "32", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "evaluate" / "evaluate.json").read_text())
    assert data[0]["labels"] == ["1s"] and math.isfinite(data[0]["accuracy_mean"][0])
    assert (tmp_path / "evaluate" / "accuracy_vs_time.png").stat().st_size > 0
    assert "accuracy" in capsys.readouterr().out
