"""README.md is true to the code: every Python block runs as written, alone and in order; every
`analogeq ...` command it shows parses with the real parser (flags and values exist).

"Alone": each block is executed in an empty namespace (nothing from the other blocks: a block
that uses a name it does not define fails with NameError); "in order": all blocks one after the
other in one namespace, as a reader pasting them into one session would. Each of the two runs is
one interpreter in a temporary directory (the blocks write under runs/), one thread.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analogeq.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)

_DRIVER = textwrap.dedent("""
    import sys
    blocks = sys.stdin.read().split("\\0")
    shared = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        namespace = shared if sys.argv[1] == "in-order" else {"__name__": "__main__"}
        print(f"--- README Python block {i + 1}", flush=True)
        exec(compile(block, f"README Python block {i + 1}", "exec"), namespace)
""")


def run_blocks(mode: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", _DRIVER, mode], input="\0".join(BLOCKS),
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_there_are_blocks():
    assert len(BLOCKS) >= 7  # a check on the extraction itself
    assert all("import" in b for b in BLOCKS)  # each block brings its own imports


@pytest.mark.parametrize("mode", ["alone", "in-order"])
def test_every_block_runs(mode, tmp_path):
    proc = run_blocks(mode, tmp_path)
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-3000:]
    assert f"--- README Python block {len(BLOCKS)}" in proc.stdout
    assert (tmp_path / "runs" / "f.png").stat().st_size > 0  # the fidelity block's plot


def readme_commands() -> list[str]:
    """Every `analogeq ...` command of README: lines of bash blocks (continuations joined,
    comments dropped) and inline code spans."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("analogeq "):
                commands.append(line)
    commands += [m for m in re.findall(r"`(analogeq [^`<]+)`", README)]  # no placeholders
    return commands


def test_readme_commands_parse():
    commands = readme_commands()
    assert len(commands) >= 20
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command, comments=True)[1:]
        if argv == ["--version"]:
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse: a flag or a value that does not exist
            raise AssertionError(f"README command does not parse: {command}") from exc
