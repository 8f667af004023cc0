"""The analogeq command line: help texts, a real run writing its files, clear errors."""

import json

import pytest

from analogeq.cli import build_parser, main


@pytest.mark.parametrize("command", ["settle", "compare"])
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--methods" in capsys.readouterr().out


def test_settle_runs_and_writes_results(tmp_path, capsys):
    code = main(["settle", "--methods", "euler,imex", "--system", "contractive", "--out",
                 str(tmp_path), "--eps", "0.2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "converged" in out and "force residual" in out
    data = json.loads((tmp_path / "settle-contractive" / "results.json").read_text())
    assert [r["status"] for r in data["rows"]] == ["converged", "converged"]
    assert all(r["force_residual"] <= 1e-6 for r in data["rows"])
    assert (tmp_path / "settle-contractive" / "residuals.png").stat().st_size > 0


def test_rotor_default_shows_the_euler_artifact(tmp_path):
    main(["compare", "--methods", "euler", "--out", str(tmp_path), "--no-plot", "--batch", "1"])
    data = json.loads((tmp_path / "compare-rotor" / "results.json").read_text())
    assert data["rows"][0]["status"] == "limit_cycle"


def test_bad_arguments_are_reported():
    with pytest.raises(SystemExit, match="unknown method"):
        main(["settle", "--methods", "rk99", "--no-plot"])
    with pytest.raises(SystemExit, match="--tol must be > 0"):
        main(["settle", "--tol", "0", "--no-plot"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare"])  # --methods is required for compare
