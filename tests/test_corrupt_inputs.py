"""Unusable inputs end with one line, never a traceback.

Eight kinds of broken checkpoint (random bytes, empty, truncated, a plain pickle, a text file,
wrong shapes, no model_config, NaN weights) are refused by the library with a `CheckpointError`
naming the file, and by every command that reads a checkpoint (settle, probe, certify, evaluate,
generate, train --resume, train --init-from) with exit status 2, one line on stderr naming the
file, and nothing written. Each kind also runs once as a real subprocess (the installed entry
point's exit status and stderr). Hand-edited logs, stale temporaries of a killed run, an
unwritable output directory and a full disk are covered below them.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analogeq import _io
from analogeq._train_checkpoint import CheckpointError, read_checkpoint
from analogeq._train_log import parse_log, read_log
from analogeq.cli import main
from analogeq.train import DEFAULT_CHECKPOINT, TrainConfig, Trainer, load_checkpoint

TRAIN = ["--task", "synthetic", "--d-model", "16", "--heads", "2", "--embed-scale", "2",
         "--batch-size", "16", "--warmup", "0", "--checkpoint-every", "2", "--eval-every", "1000",
         "--quiet", "--no-plot"]
TRAIN_CONFIG = dict(task="synthetic", d_model=16, n_heads=2, embed_scale=2.0, batch_size=16,
                    warmup_steps=0, checkpoint_every=2, eval_every=1000, progress=False,
                    plots=False)

# kind -> what the one-line message must say about the file
KINDS = {
    "random": "unrecognised bytes",
    "empty": "is empty",
    "truncated": "truncated or corrupt",
    "pickle": "plain pickle",
    "text": "a text file",
    "shapes": "has shape",
    "no_model_config": "lacks 'model_config'",
    "nan": "non-finite (NaN)",
}


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    """A real training checkpoint.pt (2 steps of the synthetic task, the TRAIN options)."""
    out = tmp_path_factory.mktemp("base")
    Trainer(TrainConfig(out=str(out / "run"), name="run", steps=2, **TRAIN_CONFIG)).run()
    return out / "run" / "checkpoint.pt"


def corrupt(kind: str, base: Path, dest: Path) -> Path:
    """Write a `kind` corruption of the checkpoint `base` to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random":
        dest.write_bytes(bytes([0, 255]) + random.Random(0).randbytes(4094))
    elif kind == "empty":
        dest.write_bytes(b"")
    elif kind == "truncated":
        good = base.read_bytes()
        dest.write_bytes(good[: len(good) // 2])
    elif kind == "pickle":
        dest.write_bytes(pickle.dumps({"format": "analogeq.model/1", "model_config": {},
                                       "nominal": {}}))
    elif kind == "text":
        dest.write_text("lr = 0.003\nsteps = 1000\n")
    else:
        data = torch.load(base, weights_only=False)
        entries = [data["nominal"]] + ([data["model"]] if "model" in data else [])
        if kind == "shapes":
            for e in entries:
                e["attn.q.weight"] = torch.zeros(3, 3)
        elif kind == "no_model_config":
            del data["model_config"]
        elif kind == "nan":
            for e in entries:
                e["ffn.up.weight"] = e["ffn.up.weight"].clone()
                e["ffn.up.weight"][0, 0] = float("nan")
        torch.save(data, dest)
    return dest


# ------------------------------------------------------------------------------------------------
# the library


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_load_checkpoint_refuses_each_kind_naming_the_file(kind, tmp_path):
    path = corrupt(kind, DEFAULT_CHECKPOINT, tmp_path / f"{kind}.pt")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    message = str(exc.value)
    assert str(path) in message and KINDS[kind] in message, message
    assert "\n" not in message


def test_read_checkpoint_other_cases(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor, not an analogeq checkpoint"):
        read_checkpoint(tmp_path / "tensor.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "state_dict.pt")
    with pytest.raises(CheckpointError, match="plain state dict"):
        read_checkpoint(tmp_path / "state_dict.pt")
    # the shipped model itself is fine
    assert read_checkpoint(DEFAULT_CHECKPOINT)["format"] == "analogeq.model/1"


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file(tmp_path, monkeypatch):
    tr = Trainer(TrainConfig(out=str(tmp_path / "run"), name="run", steps=2, **TRAIN_CONFIG))
    tr.run()
    before = tr.checkpoint_path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_io.os, "fsync", full)
    with pytest.raises(OSError) as exc:
        tr.save()
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tr.checkpoint_path)
    assert tr.checkpoint_path.read_bytes() == before
    assert not list(tr.run_dir.glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------
# every command that reads a checkpoint


def entry_argv(entry: str, path: Path, out: Path) -> list[str]:
    """The command line of `entry` reading the checkpoint `path`, writing under `out`."""
    if entry == "settle":
        return ["settle", "--checkpoint", str(path), "--out", str(out)]
    if entry == "probe":
        return ["probe", "--checkpoint", str(path), "--out", str(out)]
    if entry == "certify":
        return ["certify", "--checkpoint", str(path), "--out", str(out)]
    if entry == "evaluate":
        return ["evaluate", str(path), "--out", str(out)]
    if entry == "generate":
        return ["generate", str(path), "--json", str(out / "sample.json")]
    if entry == "init-from":
        return ["train", *TRAIN, "--init-from", str(path), "--out", str(out)]
    if entry == "resume":  # path is <out>/run/checkpoint.pt
        return ["train", *TRAIN, "--resume", "--out", str(out), "--name", "run"]
    raise AssertionError(entry)


ENTRIES = ("settle", "probe", "certify", "evaluate", "generate", "init-from", "resume")


def place(kind: str, entry: str, tmp_path: Path, training_checkpoint: Path) -> tuple[Path, Path]:
    """(corrupt file, output directory) for `entry`: a training checkpoint in a run directory for
    resume, a corrupted shipped model for the others."""
    out = tmp_path / "out"
    if entry == "resume":
        return corrupt(kind, training_checkpoint, out / "run" / "checkpoint.pt"), out
    return corrupt(kind, DEFAULT_CHECKPOINT, tmp_path / "in" / f"{kind}.pt"), out


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_command_refuses_each_kind_in_one_line(kind, entry, tmp_path, training_checkpoint,
                                                    capsys):
    path, out = place(kind, entry, tmp_path, training_checkpoint)
    before = files(out)
    with pytest.raises(SystemExit) as exc:
        main(entry_argv(entry, path, out))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("analogeq ") and str(path) in err and KINDS[kind] in err, err
    assert files(out) == before  # refused before anything was written


# one real process per kind, spread over the commands
SUBPROCESS_CASES = [("random", "settle"), ("empty", "probe"), ("truncated", "certify"),
                    ("pickle", "evaluate"), ("text", "generate"), ("shapes", "init-from"),
                    ("no_model_config", "resume"), ("nan", "settle")]


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "analogeq.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind,entry", SUBPROCESS_CASES)
def test_subprocess_exit_status_2_and_one_line(kind, entry, tmp_path, training_checkpoint):
    path, out = place(kind, entry, tmp_path, training_checkpoint)
    proc = run_cli(entry_argv(entry, path, out), tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and KINDS[kind] in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("argv,match", [
    (["settle", "--eps", "-0.1"], "argument --eps: must be > 0, got -0.1"),
    (["settle", "--checkpoint", "notes.txt"], "notes.txt is not a readable checkpoint"),
    (["fidelity", "--knockout", "attn=0.2"], "unknown parameter group 'attn'"),
])
def test_subprocess_bad_options(argv, match, tmp_path):
    (tmp_path / "notes.txt").write_text("remember to buy milk\n")
    proc = run_cli(argv, tmp_path)
    assert proc.returncode == 2 and match in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_fidelity_options_are_checked_before_the_run(tmp_path, monkeypatch, capsys):
    import analogeq.fidelity as fidelity

    def compare(*a, **k):
        raise AssertionError("compare ran before the options were checked")

    monkeypatch.setattr(fidelity, "compare", compare)
    for argv in (["--knockout", "attn=0.2"], ["--knockout", "attention_out=-1"],
                 ["--eps-sweep", "0.1,x"], ["--methods", "euler,rk9"]):
        with pytest.raises(SystemExit) as exc:
            main(["fidelity", *argv, "--out", str(tmp_path)])
        assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# output directories and disks


def test_unwritable_output_directory_subprocess(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_cli(["settle", "--system", "rotor", "--methods", "euler", "--out",
                    str(blocker)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and f"cannot write to {blocker}" in line, line


def test_unwritable_run_directory_in_process(tmp_path, monkeypatch, capsys):
    from analogeq.commands import _options

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(_options.tempfile, "mkstemp", denied)
    with pytest.raises(SystemExit) as exc:
        main(["train", *TRAIN, "--steps", "1", "--out", str(tmp_path), "--name", "locked"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"analogeq train: --out: cannot write to {tmp_path / 'locked'}: "
                   "Permission denied")
    assert not (tmp_path / "locked" / "checkpoint.pt").exists()


def test_full_disk_during_training_one_line_and_the_checkpoint_survives(tmp_path, monkeypatch,
                                                                         capsys):
    assert main(["train", *TRAIN, "--steps", "2", "--out", str(tmp_path), "--name", "r"]) == 0
    ckpt = tmp_path / "r" / "checkpoint.pt"
    before = ckpt.read_bytes()
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up when the next checkpoint is written
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(_io.os, "fsync", fsync)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", *TRAIN, "--steps", "4", "--resume", "--out", str(tmp_path), "--name",
              "r"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"analogeq train: {ckpt}: No space left on device"
    assert ckpt.read_bytes() == before and not list(ckpt.parent.glob(".*.tmp"))
    monkeypatch.setattr(_io.os, "fsync", real_fsync)
    assert main(["train", *TRAIN, "--steps", "4", "--resume", "--out", str(tmp_path), "--name",
                 "r"]) == 0  # and the run goes on once there is space again


# ------------------------------------------------------------------------------------------------
# logs and temporaries of interrupted runs


BAD_LINES = {
    "number": b"42",
    "step-not-int": b'{"kind": "step", "step": "abc", "loss": 1.0}',
    "null": b"null",
    "invalid-utf8": b'{"kind": "event", "what": "\xff\xfe"}',
}


@pytest.mark.parametrize("bad", [*BAD_LINES, "directory"])
def test_resume_survives_a_hand_edited_log(bad, tmp_path, capsys):
    argv = ["train", *TRAIN, "--out", str(tmp_path), "--name", "r"]
    assert main([*argv, "--steps", "2"]) == 0
    log = tmp_path / "r" / "log.jsonl"
    if bad == "directory":
        log.unlink()
        log.mkdir()
        (log / "something").write_text("x")
    else:
        with open(log, "ab") as fh:
            fh.write(BAD_LINES[bad] + b"\n")
    capsys.readouterr()
    assert main([*argv, "--steps", "4", "--resume"]) == 0
    err = capsys.readouterr().err
    warnings_ = [ln for ln in err.splitlines() if ln.startswith("analogeq train: warning:")]
    assert len(warnings_) == 1, err
    if bad == "directory":
        assert "was not a file: moved it to" in warnings_[0]
        assert (tmp_path / "r" / "log.jsonl.quarantined" / "something").is_file()
        steps = [r["step"] for r in read_log(log) if r["kind"] == "step"]
        assert steps == [2, 3]  # the old records were in the directory
    else:
        assert "skipped 1 line(s) that are not log records" in warnings_[0]
        assert (tmp_path / "r" / "log.jsonl.bad").read_bytes() == BAD_LINES[bad] + b"\n"
        steps = [r["step"] for r in read_log(log) if r["kind"] == "step"]
        assert steps == [0, 1, 2, 3]
        assert parse_log(log)[1] == []  # the rewritten log holds records only
    assert read_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 4


@pytest.mark.parametrize("start", ["resume", "overwrite"])
def test_stale_temporaries_are_removed_at_start_and_resume(start, tmp_path, capsys):
    argv = ["train", *TRAIN, "--out", str(tmp_path), "--name", "r"]
    assert main([*argv, "--steps", "2"]) == 0
    run = tmp_path / "r"
    stale = [run / ".checkpoint.pt.k1ll3d.tmp", run / ".best.pt.x8.tmp", run / ".log.jsonl.q.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    keep = run / ".notes.tmp"  # not a temporary of the trainer's files: left alone
    keep.write_text("mine")
    capsys.readouterr()
    assert main([*argv, "--steps", "3", f"--{start}"]) == 0
    err = capsys.readouterr().err
    assert "warning: removed 3 stale temporary file(s)" in err
    assert not any(p.exists() for p in stale) and keep.exists()
