"""The trainer: it learns, it resumes bit-for-bit, its checkpoints survive a failed write, its
guard rolls back, its gate skips, and the CLI documents itself.

The synthetic task (4 tokens x 4 features, 3 classes) with d_model 16 keeps each run to seconds.
"""

import copy
import math

import pytest
import torch

from analogeq import _train_checkpoint
from analogeq._train_log import read_log
from analogeq.cli import main
from analogeq.learning import GradientResult
from analogeq.train import TrainConfig, Trainer, load_checkpoint

SMALL = dict(task="synthetic", d_model=16, n_heads=2, ffn_mult=2, embed_scale=2.0,
             batch_size=32, lr=3e-3, warmup_steps=5, progress=False, plots=False,
             eval_every=1000, checkpoint_every=4)


def cfg(tmp_path, name="run", **kw):
    return TrainConfig(out=str(tmp_path / name), name=name, **{**SMALL, **kw})


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_short_training_lowers_the_test_loss(tmp_path):
    tr = Trainer(cfg(tmp_path, steps=20, eval_every=20))
    before = tr.evaluate()
    result = tr.run()
    assert result.status == "completed" and result.step == 20
    assert result.final_eval["loss"] < before["loss"] - 0.1
    steps = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "step"]
    assert len(steps) == 20 and all(r["valid"] for r in steps)
    for key in ("loss", "accuracy", "free_residual", "nudged_residual", "nfe", "wall", "lr"):
        assert key in steps[0]
    # the saved best model loads as a digital model with the same nominal weights
    model = load_checkpoint(tmp_path / "run" / "best.pt")
    assert model.hardware is None and model.config.n_classes == 3


class Interrupt(Exception):
    pass


def _run_interrupted(config, kill_at, monkeypatch):
    """Run until step `kill_at`, then die as a killed process would (no clean-up)."""
    original = Trainer.train_step

    def step(self):
        if self.step == kill_at:
            raise Interrupt
        return original(self)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", step)
        with pytest.raises(Interrupt):
            Trainer(config).run()


@pytest.mark.parametrize("extra", [{}, {"device": "pcm"}], ids=["digital", "pcm-noise"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch, extra):
    steps = 8
    ref = Trainer(cfg(tmp_path, "ref", steps=steps, **extra))
    ref_result = ref.run()
    _run_interrupted(cfg(tmp_path, "cut", steps=steps, **extra), kill_at=6, monkeypatch=monkeypatch)
    # killed after the step-4 checkpoint and 2 more steps: resume redoes steps 4..7
    resumed = Trainer(cfg(tmp_path, "cut", steps=steps, resume=True, **extra))
    result = resumed.run()
    assert result.step == steps
    assert result.last_loss == ref_result.last_loss  # bit-for-bit
    a, b = params(ref.model), params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = read_log(tmp_path / "cut" / "log.jsonl")
    assert [r["step"] for r in log if r["kind"] == "step"] == list(range(steps))
    assert any(r.get("what") == "resume" and r["step"] == 4 for r in log)
    ref_losses = [r["loss"] for r in read_log(tmp_path / "ref" / "log.jsonl")
                  if r["kind"] == "step"]
    assert [r["loss"] for r in log if r["kind"] == "step"] == ref_losses


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    tr = Trainer(cfg(tmp_path, steps=4))
    tr.run()
    path = tr.checkpoint_path
    good = path.read_bytes()
    tr.step = 99

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(_train_checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        tr.save()
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert _train_checkpoint.read_checkpoint(path)["step"] == 4
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _poison(trainer, calls):
    """Make the estimator report a NaN loss on the given call numbers (1-based)."""
    real = trainer.estimator.gradients
    count = {"n": 0}

    def gradients(*args, **kwargs):
        count["n"] += 1
        res = real(*args, **kwargs)
        if count["n"] in calls:
            return GradientResult(res.grads, {**res.info, "loss": math.nan})
        return res

    trainer.estimator.gradients = gradients
    return count


def test_guard_rolls_back_on_an_injected_nan_and_lowers_the_lr(tmp_path):
    tr = Trainer(cfg(tmp_path, steps=8, guard_lr_factor=0.5))
    _poison(tr, calls={7})  # step 6: the last checkpoint is step 4
    result = tr.run()
    assert result.status == "completed" and result.rollbacks == 1
    log = read_log(tmp_path / "run" / "log.jsonl")
    rb = [r for r in log if r.get("what") == "rollback"]
    assert len(rb) == 1 and rb[0]["step"] == 6 and rb[0]["to_step"] == 4
    assert rb[0]["lr_scale"] == 0.5 and tr.lr_scale == 0.5
    # the steps after the rollback ran at half the scheduled learning rate
    after = [r for r in log if r["kind"] == "step" and r["step"] >= 4][-4:]
    assert all(math.isfinite(r["loss"]) for r in after)
    ref = Trainer(cfg(tmp_path, "ref", steps=8))
    assert math.isclose(after[0]["lr"], 0.5 * ref.lr_at(4), rel_tol=1e-12)


def test_guard_stops_after_max_rollbacks(tmp_path):
    tr = Trainer(cfg(tmp_path, steps=8, max_rollbacks=2))
    _poison(tr, calls=set(range(1, 100)))
    result = tr.run()
    assert result.status == "diverged" and result.rollbacks == 2 and result.step == 0
    assert any(r.get("what") == "stop" for r in read_log(tmp_path / "run" / "log.jsonl"))


def test_residual_gate_skips_invalid_estimates(tmp_path):
    tr = Trainer(cfg(tmp_path, steps=3))
    real = tr.estimator.gradients

    def invalid(*args, **kwargs):
        res = real(*args, **kwargs)
        return GradientResult(res.grads, {**res.info, "valid": False, "reason": "test"})

    tr.estimator.gradients = invalid
    before = params(tr.model)
    result = tr.run()
    assert result.skipped == 3
    after = params(tr.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("rule", ["bptt", "adjoint"])
def test_other_rules_train(tmp_path, rule):
    tr = Trainer(cfg(tmp_path, steps=12, rule=rule, eval_every=12))
    before = tr.evaluate()["loss"]
    assert tr.run().final_eval["loss"] < before


def test_jacobian_penalty_controller_is_logged_and_checkpointed(tmp_path):
    pytest.importorskip("analogeq.learning.regularizers")
    tr = Trainer(cfg(tmp_path, steps=4, jacobian_penalty=0.5, adaptive=True))
    tr.run()
    steps = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "step"]
    assert steps[0]["controller_weight"] == 0.5
    # every free phase settled below the controller's target: the weight shrinks by `down`
    reg = tr.regularizers[0]
    assert math.isclose(reg.weight, 0.5 * reg.down ** 4, rel_tol=1e-9)
    saved = _train_checkpoint.read_checkpoint(tr.checkpoint_path)["regularizers"]
    assert math.isclose(saved["jacobian_penalty"]["weight"], reg.weight, rel_tol=0)


def test_device_updates_move_the_conductances(tmp_path):
    pytest.importorskip("analogeq.learning.device_updates")
    tr = Trainer(cfg(tmp_path, steps=2, device="pcm", updates="device-deterministic", lr=0.05,
                     warmup_steps=0))
    layer = tr.model.crossbars()["ffn.up"]
    g0 = layer.tiles[0].plus.conductance.clone()
    tr.run()
    assert not torch.equal(g0, layer.tiles[0].plus.conductance)


def test_config_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="rule"):
        TrainConfig(rule="sgd")
    with pytest.raises(TypeError, match="steps"):
        TrainConfig(steps=1.5)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="needs a device"):
        TrainConfig(updates="device-stochastic")


def test_existing_run_is_not_overwritten_and_resume_checks_the_config(tmp_path):
    Trainer(cfg(tmp_path, steps=2)).run()
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(cfg(tmp_path, steps=2)).run()
    with pytest.raises(ValueError, match="lr"):
        Trainer(cfg(tmp_path, steps=4, resume=True, lr=1e-2)).run()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    flags = {"train": ("--task", "--rule", "--steps", "--out", "--name", "--resume", "--device",
                       "--noise"),
             "evaluate": ("--device", "--seeds", "--times", "--compensation", "--out")}
    for flag in flags[command]:
        assert flag in out, flag


def test_cli_train_runs(tmp_path, capsys):
    """--out is the parent of the run directory, named <task>-<rule> by default; the old
    spellings --no-progress and --no-plots still work and say they are deprecated."""
    code = main(["train", "--task", "synthetic", "--steps", "4", "--d-model", "16", "--heads",
                 "2", "--embed-scale", "2", "--out", str(tmp_path), "--no-progress",
                 "--no-plots"])
    assert code == 0
    assert (tmp_path / "synthetic-asymep" / "checkpoint.pt").is_file()
    assert not (tmp_path / "synthetic-asymep" / "training.png").exists()
    captured = capsys.readouterr()
    assert '"status": "completed"' in captured.out
    assert "--no-progress is deprecated; use --quiet" in captured.err
    assert "--no-plots is deprecated; use --no-plot" in captured.err
    assert "should take about" not in captured.err  # --quiet (through its alias): no estimate


def test_cli_train_prints_an_estimate_after_the_first_steps(tmp_path, capsys):
    code = main(["train", "--task", "synthetic", "--steps", "5", "--d-model", "16", "--heads",
                 "2", "--out", str(tmp_path), "--name", "est", "--no-plot"])
    assert code == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "should take about" in ln]
    assert len(lines) == 1, err
    assert "over the first 3 steps: the remaining 2 steps should take about" in lines[0]
    walls = [r["step_wall"] for r in read_log(tmp_path / "est" / "log.jsonl")
             if r["kind"] == "step"][:3]
    per_step = float(lines[0].split("analogeq train: ")[1].split(" s per step")[0])
    assert per_step == pytest.approx(sum(walls) / 3, abs=0.006)  # printed to 2 decimals


def test_lipschitz_target_keeps_the_provable_bound(tmp_path):
    from analogeq.contraction import lipschitz_bound

    tr = Trainer(cfg(tmp_path, steps=3, lipschitz_target=1.5, norm_eps=1.0, lr=3e-2,
                     warmup_steps=0))
    tr.run()
    assert tr.model.config.lipschitz_target == 1.5 and tr.model.config.norm_eps == 1.0
    # the independent certificate (spectral norms, float64) on the trained weights
    assert lipschitz_bound(tr.model, weights="nominal").L <= 1.5
    # the saved model carries the constraint
    assert load_checkpoint(tmp_path / "run" / "best.pt").config.lipschitz_target == 1.5


def test_controller_steps_lets_the_controller_see_slow_contraction(tmp_path):
    """After 1 Anderson iteration the free residual is far above the target (1e-3), although
    the phase converges: observing it there grows the weight by `up` every step, while the
    final residual (default) is below target and shrinks it by `down`."""
    pytest.importorskip("analogeq.learning.regularizers")
    early = Trainer(cfg(tmp_path, "early", steps=3, jacobian_penalty=0.5, jacobian_floor=0.5,
                        controller_steps=1))
    early.run()
    reg = early.regularizers[0]
    assert reg.floor == 0.5
    assert math.isclose(reg.weight, 0.5 * reg.up ** 3, rel_tol=1e-9)
    final = Trainer(cfg(tmp_path, "final", steps=3, jacobian_penalty=0.5, jacobian_floor=0.1))
    final.run()
    assert math.isclose(final.regularizers[0].weight, 0.5 * reg.down ** 3, rel_tol=1e-9)


def test_nudged_method_reaches_the_estimator(tmp_path):
    tr = Trainer(cfg(tmp_path, steps=1, nudged_method="anderson"))
    x, y = tr.task.batch(0, 8, 0)
    info = tr.estimator.gradients(tr.model, x, y).info
    assert {p.method for p in info["phases"] if p.name == "nudged"} == {"anderson"}
    with pytest.raises(ValueError, match="nudged_method"):
        TrainConfig(nudged_method="rk4")
    with pytest.raises(ValueError, match="lipschitz_target"):
        TrainConfig(lipschitz_target=2.5)


def _dense_nonlinear_radii(model, x, z):
    """(batch,) spectral radius of dN/dz = J + leak I per sample (dense Jacobian), / leak."""
    force = model.force(x)
    radii = []
    for i in range(z.shape[0]):
        fi = model.force(x[i:i + 1])
        jac = torch.autograd.functional.jacobian(fi, z[i:i + 1]).reshape(z[0].numel(), -1)
        jac = jac + force.leak * torch.eye(jac.shape[0], dtype=jac.dtype)
        radii.append(float(torch.linalg.eigvals(jac.double()).abs().max()))
    return torch.tensor(radii, dtype=torch.float64) / force.leak


def _dense_nonlinear_radius(model, x, z):
    """max over samples of the spectral radius of dN/dz = J + leak I, / leak."""
    return float(_dense_nonlinear_radii(model, x, z).max())


def _overcoupled_trainer(tmp_path, **kw):
    """A float64 trainer with spectral target 0.5 whose branch outputs are scaled x6 (radius
    above the target), a batch of 8 and its free state settled to 1e-8 by IMEX."""
    from analogeq import integrators

    tr = Trainer(cfg(tmp_path, steps=1, spectral_target=0.5, spectral_iters=40, dtype="float64",
                     free_tol=1e-8, **kw))
    with torch.no_grad():
        for name in ("attn.o", "ffn.down"):
            tr.model.get_submodule(name).weight.mul_(6.0)
    x, _ = tr.task.batch(0, 8, 0)
    force = tr.model.force(x)
    z = integrators.settle(force, tr.model.initial_state(force), "imex", tol=1e-8,
                           max_steps=4000).z
    return tr, x, z


def test_spectral_projection_brings_the_measured_radius_to_the_target(tmp_path):
    tr, x, z = _overcoupled_trainer(tmp_path)
    before = _dense_nonlinear_radius(tr.model, x, z)
    assert before > 0.6  # the test needs a state above the target
    out = tr._spectral_projection(x, z)
    assert out["spectral_scale"] < 1
    after = _dense_nonlinear_radius(tr.model, x, z)
    # dN/dz is linear in attn.o and ffn.down at fixed z: the radius scales exactly
    assert math.isclose(after, before * out["spectral_scale"], rel_tol=1e-6)
    # the power-iteration estimate is close to the dense radius: the result is near the target
    assert 0.45 <= after <= 0.55
    w = tr.model.get_submodule("attn.o").weight.clone()
    again = tr._spectral_projection(x, z)  # at (about) the target: at most a tiny further scale
    assert again["spectral_scale"] > 0.9
    assert torch.allclose(w * again["spectral_scale"], tr.model.get_submodule("attn.o").weight)
    # with a floor the same large correction is cut to the floor
    tr.config = tr.config.replace(spectral_min_scale=0.95)
    with torch.no_grad():
        tr.model.get_submodule("attn.o").weight.mul_(3.0)
        tr.model.get_submodule("ffn.down").weight.mul_(3.0)
    w = tr.model.get_submodule("ffn.down").weight.clone()
    assert tr._spectral_projection(x, z)["spectral_scale"] == 0.95
    assert torch.allclose(w * 0.95, tr.model.get_submodule("ffn.down").weight)


def test_spectral_quantile_holds_that_quantile_of_the_per_sample_radii(tmp_path):
    tr, x, z = _overcoupled_trainer(tmp_path, spectral_quantile=0.5)
    before = _dense_nonlinear_radii(tr.model, x, z)
    assert float(before.min()) > 0.6 and float(before.max() / before.min()) > 1.5
    largest = copy.deepcopy(tr)
    largest.config = largest.config.replace(spectral_quantile=1.0)
    out_max = largest._spectral_projection(x, z)
    out = tr._spectral_projection(x, z)
    after = _dense_nonlinear_radii(tr.model, x, z)
    torch.testing.assert_close(after, before * out["spectral_scale"], rtol=1e-6, atol=0.0)
    # the level is a per-sample power-iteration estimate's median: inside the dense radii's
    # range, and it is what is brought to the target (no floor here)
    level = out["spectral_level"]
    assert float(before.min()) <= level <= float(before.max())
    assert math.isclose(out["spectral_scale"], 0.5 / level, rel_tol=1e-12)
    assert out["spectral_radius"] == pytest.approx(out_max["spectral_radius"], rel=1e-12)
    # a milder cut than holding the largest sample: the hardest samples stay above the target,
    # the median sample ends at or below it (power iteration over-estimates on non-normal J)
    assert out["spectral_scale"] > 1.05 * out_max["spectral_scale"]
    assert float(after.max()) > 0.55 and float(after.median()) <= 0.55
    with pytest.raises(ValueError, match="spectral_quantile"):
        TrainConfig(spectral_quantile=1.5)
    with pytest.raises(ValueError, match="spectral_quantile"):
        TrainConfig(spectral_quantile=0.0)


def test_augment_needs_a_task_with_an_augmenter_and_old_checkpoints_still_resume(tmp_path):
    with pytest.raises(ValueError, match="augment"):
        Trainer(cfg(tmp_path, "aug", steps=1, augment=True))
    # a checkpoint written before a config field existed resumes (the field counts as default)
    tr = Trainer(cfg(tmp_path, "old", steps=2))
    tr.run()
    data = torch.load(tr.checkpoint_path, weights_only=False)
    del data["config"]["augment"]
    torch.save(data, tr.checkpoint_path)
    assert Trainer(cfg(tmp_path, "old", steps=3, resume=True)).run().step == 3


def test_init_from_starts_a_fresh_run_from_a_checkpoints_weights(tmp_path):
    first = Trainer(cfg(tmp_path, "a", steps=3))
    first.run()
    trained = params(first.model)
    tuned = Trainer(cfg(tmp_path, "b", steps=0, init_from=str(first.best_path), seed=5))
    tuned.run()
    got = params(tuned.model)
    best = torch.load(first.best_path, weights_only=False)["nominal"]
    assert all(torch.equal(got[k], best[k]) for k in got)
    assert not all(torch.equal(got[k], params(Trainer(cfg(tmp_path, "c", steps=0,
                                                                 seed=5)).model)[k])
                   for k in got)
    assert set(trained) == set(got)
    # on hardware the nominal weights (which the chip is programmed from) are the loaded ones
    hw = Trainer(cfg(tmp_path, "d", steps=0, init_from=str(first.best_path), device="pcm"))
    hw.run()
    assert all(torch.equal(params(hw.model)[k], best[k]) for k in best)
    with pytest.raises(ValueError, match="d_model"):
        Trainer(cfg(tmp_path, "e", steps=0, d_model=8, init_from=str(first.best_path))).run()


def test_run_callback_sees_every_step_and_can_stop_the_run(tmp_path):
    seen = []

    def probe(trainer, record):
        seen.append((trainer.step, record["step"]))
        return record["step"] < 4  # stop after the step-4 record

    result = Trainer(cfg(tmp_path, steps=10)).run(callback=probe)
    assert result.status == "stopped" and result.step == 5
    assert seen == [(s + 1, s) for s in range(5)]
    with pytest.raises(TypeError, match="callback"):
        Trainer(cfg(tmp_path, "x", steps=1)).run(callback=3)


def test_time_budget_stops_the_run_at_the_first_step_past_it(tmp_path, monkeypatch):
    import types

    import analogeq.train as train_module

    clock = iter(float(i) for i in range(10**6))  # the trainer's clock: 1 s per reading
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: next(
        clock)))
    result = Trainer(cfg(tmp_path, steps=1000, time_budget=20.0)).run()
    assert result.status == "time budget" and result.step < 1000
    walls = [r["wall"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "step"]
    assert len(walls) == result.step
    assert walls[-1] >= 20.0 > walls[-2]  # stopped right after the step that crossed it
    with pytest.raises(ValueError, match="time_budget"):
        TrainConfig(time_budget=0.0)


def test_attn_gain_is_a_model_field_of_the_run():
    tr = Trainer(TrainConfig(**{**SMALL, "attn_gain": 3.0}))
    assert tr.model.config.attn_gain == 3.0
    with pytest.raises(ValueError, match="attn_gain"):
        TrainConfig(attn_gain=-1.0)


def _capture_update(tr, monkeypatch):
    applied = []
    original = Trainer._apply

    def capture(self, grads, lr):
        applied.append({k: v.clone() for k, v in grads.items()})
        return original(self, grads, lr)

    monkeypatch.setattr(Trainer, "_apply", capture)
    return applied


def _cos(a, b):
    va = torch.cat([a[k].reshape(-1) for k in sorted(a)])
    vb = torch.cat([b[k].reshape(-1) for k in sorted(a)])
    return float(va @ vb / (va.norm() * vb.norm()))


def test_per_sample_gate_learns_from_the_settled_samples_only(tmp_path, monkeypatch):
    from analogeq.learning import ImplicitAdjoint

    tr = Trainer(cfg(tmp_path, steps=1, dtype="float64", beta=0.01, free_tol=1e-10))
    applied = _capture_update(tr, monkeypatch)
    unsettled = torch.zeros(32, dtype=torch.bool)
    unsettled[:10] = True  # pretend samples 0..9 did not settle
    real = Trainer._settled_samples
    monkeypatch.setattr(Trainer, "_settled_samples",
                        lambda self, free: real(self, free) & ~unsettled)
    x, y = tr.task.batch(0, 32, tr.config.seed)
    exact = ImplicitAdjoint(tol=1e-10).gradients(tr.model, x[10:], y[10:]).grads
    full = ImplicitAdjoint(tol=1e-10).gradients(tr.model, x, y).grads
    tr.run()
    record = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "step"][0]
    assert record["updated"] and record["dropped"] == 10
    assert _cos(applied[0], exact) > 0.999  # the exact gradient of the 22 kept samples
    assert _cos(applied[0], full) < _cos(applied[0], exact)


def test_per_sample_gate_drops_failed_nudged_phases_and_respects_min_kept(tmp_path, monkeypatch):
    tr = Trainer(cfg(tmp_path, steps=2))
    real = tr.estimator.gradients
    sizes = []

    def fail_some(model, x, y, **kw):
        res = real(model, x, y, **kw)
        sizes.append(x.shape[0])
        if x.shape[0] == 32:  # the whole batch: samples 0..4 "fail" their nudged phase
            ok = torch.ones(32, dtype=torch.bool)
            ok[:5] = False
            return GradientResult(res.grads, {**res.info, "valid": False, "reason": "test",
                                              "valid_samples": ok})
        return res

    tr.estimator.gradients = fail_some
    tr.run()
    steps = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "step"]
    assert sizes == [32, 27, 32, 27] and all(r["dropped"] == 5 and r["updated"] for r in steps)
    # fewer than min_kept of the batch valid: the whole step is skipped, as without the gate
    tr = Trainer(cfg(tmp_path, "few", steps=1, min_kept=0.9))
    tr.estimator.gradients = fail_some
    assert tr.run().skipped == 1
    with pytest.raises(ValueError, match="min_kept"):
        TrainConfig(min_kept=0.0)


@pytest.mark.parametrize("compensation", [True, False], ids=["compensated", "uncompensated"])
def test_drift_aware_noise_ages_the_chip_with_or_without_compensation(tmp_path, compensation):
    # Every injection re-programs the chip and ages it to a random time in [1 s, drift_max]; the
    # tiles' one-hot read then matches the freshly programmed one (compensated) or has decayed
    # by the PCM drift law (uncompensated; decay (t / t0)^-nu with nu ~ 0.05). Programming and
    # read noise are off (noise 0), so a fresh programming is the same chip before ageing.
    from analogeq import deploy

    tr = Trainer(cfg(tmp_path, device="pcm", noise=0.0, drift_aware=True, drift_max=1e8,
                     drift_compensation=compensation))
    for _ in range(50):  # the ageing time is random: take a draw well past 1 s
        out = tr._inject_noise()
        if out["drift_time"] > 1e4:
            break
    assert 1e4 < out["drift_time"] <= 1e8
    aged = [deploy._reference_read(t) for t in deploy._tiles(tr.model)]
    tr.model.program()
    fresh = [deploy._reference_read(t) for t in deploy._tiles(tr.model)]
    ratios = torch.tensor(aged) / torch.tensor(fresh)
    if compensation:
        torch.testing.assert_close(ratios, torch.ones_like(ratios), rtol=1e-6, atol=0.0)
    else:
        assert bool((ratios < 0.9).all()), ratios


def test_cli_train_no_drift_compensation_flag(tmp_path):
    code = main(["train", "--task", "synthetic", "--steps", "1", "--d-model", "16", "--heads",
                 "2", "--embed-scale", "2", "--out", str(tmp_path), "--name", "cli", "--quiet",
                 "--no-plot", "--device", "pcm", "--drift-aware", "--no-drift-compensation"])
    assert code == 0
    saved = _train_checkpoint.read_checkpoint(tmp_path / "cli" / "checkpoint.pt")
    assert saved["config"]["drift_aware"] is True
    assert saved["config"]["drift_compensation"] is False
