"""One vocabulary across subcommands: every option documented with its default, the same device,
precision and output flags everywhere, old spellings still accepted, messages in CLI words,
progress that shows on a terminal only, and the help's recipe identical to README's."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
from pathlib import Path

import pytest
from analogeq.circuits import PRESETS

from analogeq.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--checkpoint", "none", "--vocab", "11", "--d-model", "16", "--heads", "2",
         "--context", "8", "--batch", "2"]
TRAIN = ["--task", "synthetic", "--d-model", "16", "--heads", "2", "--embed-scale", "2",
         "--batch-size", "16", "--warmup", "0", "--eval-every", "1000", "--quiet", "--no-plot"]


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)subcommand's parser by its name, e.g. "settle", "spice verify"."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    full = f"{prefix} {name}".strip()
                    if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                        walk(sub, full)
                    else:
                        out[full] = sub

    walk(build_parser(), "")
    return out


PARSERS = subcommand_parsers()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_command_set():
    assert set(PARSERS) == {"settle", "compare", "fidelity", "probe", "certify", "train",
                            "evaluate", "generate", "spice export", "spice verify"}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_has_help_and_states_its_default(name):
    parser = PARSERS[name]
    rendered = flat(parser.format_help())
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        what = action.option_strings or [action.dest]
        assert action.help and len(action.help) > 8, (name, what)
        default = action.default
        if action.nargs == 0 or isinstance(default, bool) or action.required:
            continue  # flags (off unless given) and required arguments
        if default is None:
            # no value to show: the help says in words what happens without the option
            assert re.search(r"default|required", action.help, re.I), (name, what, action.help)
        else:
            assert f"(default: {default})" in rendered, (name, what, default)


def test_device_vocabulary():
    with_device = {name: p for name, p in PARSERS.items()
                   if any("--device" in a.option_strings for a in p._actions)}
    assert set(with_device) == {"settle", "compare", "certify", "train", "evaluate", "generate",
                                "spice export", "spice verify"}
    for name, parser in with_device.items():
        action = next(a for a in parser._actions if "--device" in a.option_strings)
        assert set(action.choices) - {"digital"} == set(PRESETS), name
        digital = "digital" in action.choices
        # digital wherever a model can run without hardware; evaluate ages a chip and spice
        # builds a crossbar circuit, so there 'digital' is refused with the reason
        assert digital == (name not in ("evaluate", "spice export", "spice verify")), name
    args = build_parser().parse_args(["certify", "--device", "none"])  # the old spelling
    assert args.device == "digital"
    args = build_parser().parse_args(["train", "--device", "PCM"])
    assert args.device == "pcm"


@pytest.mark.parametrize("argv,reason", [
    (["evaluate", "--device", "digital"], "evaluate ages a chip"),
    (["spice", "export", "--device", "digital"], "needs a device preset"),
])
def test_digital_is_refused_with_a_reason_where_it_makes_no_sense(argv, reason, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and reason in err and len(err.strip().splitlines()) == 1


def test_one_precision_flag():
    for name in ("settle", "compare", "fidelity", "probe", "certify", "train"):
        action = next(a for a in PARSERS[name]._actions if "--dtype" in a.option_strings)
        assert tuple(action.choices) == ("float32", "float64"), name
    for name, parser in PARSERS.items():
        assert "--float64" not in parser.format_help(), name  # old flags are hidden aliases


@pytest.mark.parametrize("argv,old", [
    (["certify", "--float64"], "--float64"),
    (["fidelity", "--float64"], "--float64"),
    (["probe", "--float64-probes"], "--float64-probes"),
])
def test_old_precision_flags_still_work(argv, old, capsys):
    assert build_parser().parse_args(argv).dtype == "float64"
    assert f"{old} is deprecated; use --dtype float64" in capsys.readouterr().err


def test_out_is_the_parent_and_name_the_run_directory():
    for name, parser in PARSERS.items():
        if name == "generate":  # prints its sample; --json PATH writes it
            continue
        out = next(a for a in parser._actions if "--out" in a.option_strings)
        run = next(a for a in parser._actions if "--name" in a.option_strings)
        assert out.default == "runs" and "parent directory" in out.help, name
        assert run.default is None and "run directory under --out" in run.help, name


def test_checkpoint_none_does_not_touch_the_demo_directory(tmp_path, capsys):
    demo = tmp_path / "settle-pcm"
    demo.mkdir()
    (demo / "results.json").write_text('{"the demo": true}')
    assert main(["settle", *SMALL, "--methods", "imex", "--no-plot", "--out", str(tmp_path)]) == 0
    assert json.loads((demo / "results.json").read_text()) == {"the demo": True}
    data = json.loads((tmp_path / "settle-random-pcm" / "results.json").read_text())
    assert data["model"]["d_model"] == 16
    assert main(["settle", *SMALL, "--methods", "imex", "--no-plot", "--out", str(tmp_path),
                 "--name", "mine", "--device", "rram"]) == 0
    assert (tmp_path / "mine" / "results.json").is_file()
    capsys.readouterr()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"analogeq {importlib.metadata.version('analogeq')}"


def test_spice_subcommands_describe_themselves():
    for name in ("spice export", "spice verify"):
        parser = PARSERS[name]
        assert parser.description and len(parser.description) > 80, name
        assert flat(parser.description)[:60] in flat(parser.format_help())


def test_probe_help_mentions_only_its_own_options():
    text = PARSERS["probe"].format_help()
    assert "--scenario" not in text and "when no --system is given" in text


def readme_recipe() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    recipe = [b for b in blocks if "analogeq train" in b and "--spectral-quantile" in b]
    assert len(recipe) == 1
    return recipe[0].strip()


def test_train_help_recipe_is_the_readme_recipe(capsys):
    from analogeq.commands.train import RECIPE

    assert RECIPE == readme_recipe()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert RECIPE in capsys.readouterr().out  # verbatim: pasteable, line continuations included
    # and it parses: every flag of the recipe exists, with valid values
    argv = RECIPE.replace("\\\n", " ").split()[2:]
    args = build_parser().parse_args(["train", *argv])
    assert args.spectral_quantile == 0.9 and args.dtype == "float64" and args.name == \
        "digits-asymep"


def test_existing_run_is_reported_in_cli_words(tmp_path, capsys):
    argv = ["train", *TRAIN, "--steps", "1", "--out", str(tmp_path), "--name", "r"]
    assert main(argv) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "add --resume to continue that run, --overwrite to start it over" in err
    assert "resume=True" not in err and "overwrite=True" not in err
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--resume", "--lr", "0.1", "--steps", "2"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "other values of --lr" in err, err


def test_config_errors_name_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--d-model", "10", "--heads", "3", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("analogeq train: --d-model must be divisible")
    assert not any(tmp_path.iterdir())


def test_progress_bars_only_on_request_or_a_terminal(tmp_path, capsys):
    base = ["settle", *SMALL, "--methods", "euler,imex", "--no-plot", "--out", str(tmp_path)]
    assert main(base) == 0  # stderr is not a terminal under pytest: no bars
    assert capsys.readouterr().err == ""
    assert main([*base, "--progress"]) == 0  # the old flag forces them
    err = capsys.readouterr().err
    assert "methods" in err and "settle[euler]" in err and "settle[imex]" in err
    assert main([*base, "--progress", "--quiet"]) == 0  # --quiet wins
    assert capsys.readouterr().err == ""
