"""The analogeq command line: help texts, real runs writing their files, clear errors.

Figures are checked against independent arithmetic (Euler's time is steps x eps, settling time is
that times tau), never against the command's own claims alone.
"""

import json

import pytest

from analogeq.cli import main

SMALL = ["--checkpoint", "none", "--vocab", "11", "--d-model", "16", "--heads", "2",
         "--context", "8", "--batch", "2"]


def rows_by_method(path):
    data = json.loads(path.read_text())
    return data, {r["method"]: r for r in data["rows"]}


@pytest.mark.parametrize("command", ["settle", "compare"])
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--methods", "--device", "--d-model", "--heads", "--context", "--batch", "--seed",
                 "--drift-time", "--tau-spread", "--out", "--system"):
        assert flag in out, flag


def test_settle_runs_and_writes_results(tmp_path, capsys):
    code = main(["settle", "--methods", "euler,imex", "--system", "contractive", "--out",
                 str(tmp_path), "--eps", "0.2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "converged" in out and "force residual" in out
    data = json.loads((tmp_path / "settle-contractive" / "results.json").read_text())
    assert [r["status"] for r in data["rows"]] == ["converged", "converged"]
    assert all(r["error"] <= 1.0 for r in data["rows"])  # the convergence test, as reported
    assert (tmp_path / "settle-contractive" / "residuals.png").stat().st_size > 0


def test_rotor_shows_the_euler_artifact(tmp_path):
    main(["compare", "--system", "rotor", "--methods", "euler", "--out", str(tmp_path),
          "--no-plot", "--batch", "1"])
    data = json.loads((tmp_path / "compare-rotor" / "results.json").read_text())
    assert data["rows"][0]["status"] == "limit_cycle"


def test_settle_default_is_the_model_on_pcm_with_every_method(tmp_path, capsys):
    """`analogeq settle` with no options but the output directory: the main job."""
    assert main(["settle", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for header in ("method", "status", "NFE", "force residual", "settle (us)", "energy (nJ)",
                   "wall (s)"):
        assert header in out
    assert "hardware: pcm" in out and "fixed point moved by" in out
    data, rows = rows_by_method(tmp_path / "settle-pcm" / "results.json")
    # the default model is the shipped checkpoint, settled on its task's first test inputs
    from analogeq.train import checkpoint_info

    shipped = checkpoint_info()["model_config"]
    assert {k: data["model"][k] for k in shipped} == shipped and data["batch"] == 4
    assert "model: checkpoint shipped default (task digits" in out
    assert data["hardware"]["hardware"]["device"] == "pcm"
    assert {"euler", "adaptive", "imex", "implicit"} <= set(rows)
    for name, row in rows.items():
        assert row["status"] == "converged", name
        assert row["error"] <= 1.0  # the convergence test, as reported
        if name == "anderson":  # a root-finder: no time, no energy
            assert row["settle_us"] is None and row["energy_nj"] is None
        else:
            assert row["settle_us"] > 0 and row["energy_nj"] > 0
    # Euler at eps 0.1: its time is steps x 0.1 tau, tau = 100 ns (summed in float32: rel 1e-5)
    assert rows["euler"]["settle_us"] == pytest.approx(rows["euler"]["steps"] * 0.1 * 0.1,
                                                       rel=1e-5)
    # the spread leaves the fixed point where it was
    assert data["tau_spread"]["fixed_point_shift"] < 1e-5
    assert (tmp_path / "settle-pcm" / "residuals.png").stat().st_size > 0


def test_compare_on_a_small_model_flags_and_seeds(tmp_path, capsys):
    args = ["compare", "--methods", "euler,imex", *SMALL, "--device", "rram", "--seed", "3",
            "--drift-time", "60", "--tau-spread", "0", "--tau", "2e-7", "--no-plot"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    data, rows = rows_by_method(tmp_path / "a" / "compare-random-rram" / "results.json")
    _, again = rows_by_method(tmp_path / "b" / "compare-random-rram" / "results.json")
    hw = data["hardware"]["hardware"]
    assert hw["device"] == "rram" and hw["drift_time"] == 60 and hw["tau"] == 2e-7
    assert data["model"]["d_model"] == 16 and data["batch"] == 2
    assert data["tau_spread"] is None  # no spread: nothing to report
    assert rows["euler"]["settle_us"] == pytest.approx(rows["euler"]["steps"] * 0.1 * 0.2,
                                                       rel=1e-5)
    for name in rows:  # seeded: the same run twice (wall clock aside)
        for key in ("status", "nfe", "force_residual", "settle_us", "energy_nj_per_sample"):
            assert rows[name][key] == again[name][key], (name, key)


def test_digital_device_has_no_physical_figures(tmp_path, capsys):
    assert main(["compare", "--methods", "imex", *SMALL, "--device", "digital", "--no-plot",
                 "--out", str(tmp_path)]) == 0
    assert "hardware: none" in capsys.readouterr().out
    _, rows = rows_by_method(tmp_path / "compare-random-digital" / "results.json")
    assert rows["imex"]["status"] == "converged"
    assert rows["imex"]["settle_us"] is None and rows["imex"]["energy_nj"] is None


@pytest.mark.parametrize("argv,match", [
    (["settle", "--methods", "rk99"], "--methods: unknown method(s) ['rk99']"),
    (["settle", "--tol", "0"], "argument --tol: must be > 0, got 0"),
    (["compare"], "the following arguments are required: --methods"),
    (["settle", *SMALL, "--tau-spread", "-1"], "argument --tau-spread: must be >= 0, got -1"),
    (["settle", *SMALL, "--dac-bits", "0"], "bad hardware option: --dac-bits must be"),
    (["settle", *SMALL, "--read-noise", "ou"], "--tau-c (seconds, > 0) is required"),
    (["settle", *SMALL, "--read-noise", "ou", "--tau-c", "1e-6"], "--methods euler-maruyama"),
    (["settle", "--checkpoint", "none", "--d-model", "10", "--heads", "3"],
     "--d-model must be divisible by --heads"),
    (["settle", "--checkpoint", "nowhere.pt"], "--checkpoint nowhere.pt: no such file"),
    (["settle", "--batch", "100000"], "--batch must be in [1, 360]"),
    (["settle", "--device", "flash"], "argument --device: invalid choice: 'flash'"),
    (["settle", "--name", "a/b", *SMALL], "--name must be one directory name"),
])
def test_bad_arguments_are_reported_in_one_line(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--no-plot", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_certify_and_probe_take_the_shipped_checkpoint(tmp_path, capsys):
    from analogeq.train import checkpoint_info

    shipped = checkpoint_info()["model_config"]
    assert main(["certify", "--checkpoint", "default", "--batch", "1", "--samples", "0",
                 "--out", str(tmp_path)]) == 0
    assert "model: checkpoint shipped default" in capsys.readouterr().out
    data = json.loads((tmp_path / "certify-model" / "certificate.json").read_text())
    assert {k: data["model"][k] for k in shipped} == shipped
    assert main(["probe", "--batch", "1", "--k", "2", "--no-plot", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "model: checkpoint shipped default" in out
