"""`analogeq fidelity` and `analogeq probe`: help, real runs writing their files, clear errors.

Figures are checked against analytic values (the rotor's eps_crit = 2a / (a^2 + b^2) and its
eigenvalues -1 +- 5j), not against the command's own claims alone.
"""

import json

import pytest

from analogeq.cli import main

SMALL = ["--checkpoint", "none", "--vocab", "11", "--d-model", "16", "--heads", "2",
         "--context", "8", "--batch", "1"]


@pytest.mark.parametrize("command,flags", [
    ("fidelity", ("--scenario", "--methods", "--eps", "--reference-steps", "--eps-sweep",
                  "--knockout", "--out", "--d-model", "--seed")),
    ("probe", ("--system", "--root", "--k", "--eps", "--out", "--name", "--d-model", "--dtype")),
])
def test_help(command, flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out, flag
    if command == "probe":  # it has no --scenario, so its help must not mention one
        assert "--scenario" not in out and "--float64" not in out
    if command == "fidelity":
        for name in ("healthy", "artifact", "hopf", "real", "transformer"):
            assert name in out


def test_fidelity_artifact_scenario_writes_report_and_figure(tmp_path, capsys):
    assert main(["fidelity", "--scenario", "artifact", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "DISCRETIZATION_ARTIFACT" in out and "expected verdict: discretization_artifact" in out
    folder = tmp_path / "fidelity-artifact"
    data = json.loads((folder / "report.json").read_text())
    rep = data["report"]
    assert rep["verdict"] == "discretization_artifact"
    assert rep["eps_crit"][0] == pytest.approx(2 / 26, rel=1e-2)
    assert (folder / "fidelity.png").stat().st_size > 10_000


def test_fidelity_eps_option_below_eps_crit_is_faithful(tmp_path):
    assert main(["fidelity", "--scenario", "artifact", "--eps", "0.05", "--no-plot",
                 "--out", str(tmp_path), "--eps-sweep", "0.1,0.05", "--sweep-time", "40"]) == 0
    data = json.loads((tmp_path / "fidelity-artifact" / "report.json").read_text())
    assert data["report"]["verdict"] == "faithful"
    assert data["eps_sweep"]["predicted_stable"] == [[False], [True]]


def test_fidelity_on_a_small_model_with_knockout(tmp_path, capsys):
    assert main(["fidelity", *SMALL, "--no-plot", "--out", str(tmp_path),
                 "--knockout", "attention_out=0.5"]) == 0
    out = capsys.readouterr().out
    assert "knockout: attention_out x 0.5" in out
    data = json.loads((tmp_path / "fidelity-random" / "report.json").read_text())
    assert data["report"]["verdict"] == "faithful"
    assert data["knockout"]["parameters"] == ["attn.o.weight", "attn.o.bias"]


def test_probe_rotor_prints_the_analytic_spectrum(tmp_path, capsys):
    assert main(["probe", "--system", "rotor", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "log-norm" in out and "eps_crit" in out and "asymmetry" in out
    data = json.loads((tmp_path / "probe-rotor" / "probe.json").read_text())
    vals = sorted((complex(*v) for v in data["probe"]["eigs"]["values"][0]), key=lambda c: c.imag)
    assert abs(vals[0] - complex(-1, -5)) < 1e-6 and abs(vals[1] - complex(-1, 5)) < 1e-6
    assert data["probe"]["eps_crit"][0] == pytest.approx(2 / 26, rel=1e-2)
    assert (tmp_path / "probe-rotor" / "spectrum.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv,match", [
    (["fidelity", "--scenario", "artifact", "--knockout", "attention_out=0.2"], "model"),
    (["fidelity", "--scenario", "artifact", "--methods", "bogus"], "unknown method"),
    (["fidelity", "--scenario", "artifact", "--eps", "-1"], "--eps: must be > 0"),
    (["fidelity", *SMALL, "--knockout", "attn=0.2"], "unknown parameter group 'attn'"),
    (["fidelity", *SMALL, "--eps-sweep", "0.1,-2"], "--eps-sweep"),
    (["fidelity", "--scenario", "artifact", "--reference-steps", "5"], "--reference-steps"),
    (["probe", "--system", "rotor", "--root", "nope"], "--root"),
])
def test_bad_options_exit_with_a_message(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path), "--no-plot"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # rejected before anything ran or was written
