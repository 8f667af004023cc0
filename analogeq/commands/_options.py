"""One vocabulary for every `analogeq` subcommand: shared options, argument types and errors.

Every subcommand takes the same spelling for the same idea:

* `--device {digital,ideal,pcm,rram,ecram}`: `digital` is the model without hardware; a preset
  name puts its weights on crossbars of that device (`add_device`);
* `--dtype {float32,float64}`: the one precision flag (`add_dtype`); `--float64` and
  `--float64-probes` are deprecated aliases of `--dtype float64`;
* `--out DIR` (default `runs/`) is the parent directory and `--name NAME` the run directory
  under it (`add_output`, `run_directory`): a command writes under `<out>/<name>/` only, with a
  default name that says what ran (e.g. `settle-pcm` for the shipped model on PCM,
  `settle-random-pcm` for `--checkpoint none`);
* `--quiet` silences progress bars and notes; bars are drawn only when stderr is a terminal
  (`add_quiet`, `progress_enabled`).

Errors a user can fix are `CLIError`s: `analogeq.cli.main` prints them as one line
`analogeq <command>: <message>` on stderr and exits with status 2, the status argparse uses for a
bad option (whose message `Parser.error` also keeps on one line).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DIGITAL = "digital"
DTYPES = ("float32", "float64")

__all__ = ["CLIError", "Parser", "HelpFormatter", "DIGITAL", "DTYPES", "positive",
           "nonnegative", "positive_int", "nonnegative_int", "add_device", "add_dtype",
           "add_output", "add_quiet", "progress_enabled", "run_directory", "prepare_directory",
           "note", "model_tag", "one_line", "in_flags", "option_error"]


def one_line(text: Any, limit: int = 300) -> str:
    """`text` as one line (whitespace collapsed), cut at `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ModelConfig / HardwareConfig field -> the option that sets it (for messages in CLI words; only
# names that cannot be ordinary words of a message)
FIELD_FLAGS = {
    "vocab_size": "--vocab", "d_model": "--d-model", "n_heads": "--heads",
    "init_scale": "--init-scale", "attn_gain": "--attn-gain", "norm_eps": "--norm-eps",
    "lipschitz_target": "--lipschitz-target", "dac_bits": "--dac-bits", "adc_bits": "--adc-bits",
    "tau_spread": "--tau-spread", "read_noise": "--read-noise", "tau_c": "--tau-c",
    "drift_time": "--drift-time", "node_noise": "--node-noise", "stuck_at_max": "--stuck-rate",
}


def in_flags(message: Any, flags: dict[str, str] | None = None) -> str:
    """`message` with the configuration field names it mentions replaced by their options
    (`FIELD_FLAGS` by default), e.g. "tau_c must be > 0" -> "--tau-c must be > 0"."""
    import re

    table = FIELD_FLAGS if flags is None else flags
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(table, key=len,
                                                                           reverse=True)))
                         + r")(?![\w-])")
    return pattern.sub(lambda m: table[m.group(1)], str(message))


def option_error(what: str, exc: BaseException) -> CLIError:
    """A `CLIError` "bad <what> option: <message in CLI words>" for a config's ValueError."""
    return CLIError(f"bad {what} option: {in_flags(exc)}")


class CLIError(SystemExit):
    """An error the user can fix (a bad option, an unreadable file, an unwritable directory).

    A `SystemExit` with status 2 whose `str` is the message: `analogeq.cli.main` prints it as
    `analogeq <command>: <message>` (one line) before exiting."""

    def __init__(self, message: Any):
        super().__init__(2)
        self.message = one_line(message)

    def __str__(self) -> str:
        return self.message


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (`<prog>: error: <message> (see <prog> --help)`, status 2)
    instead of the usage block; subcommand parsers inherit the class."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """One-paragraph descriptions wrapped to the terminal, multi-line descriptions and epilogs
    as written (recipes stay pasteable), and every option's default appended to its help unless
    the help already states it or there is no value to show (flags, options whose default is
    None: their help says in words what happens)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)"


# ------------------------------------------------------------------------------------------------
# argument types: checked while parsing, so a bad value stops the command before any work


def _number(kind: Callable[[str], Any], text: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def positive(text: str) -> float:
    """A finite float > 0."""
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonnegative(text: str) -> float:
    """A finite float >= 0."""
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An int >= 0."""
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


class _DeprecatedAlias(argparse.Action):
    """An old spelling: stores `const` into `dest` like the new one and says so on stderr."""

    def __init__(self, option_strings: list[str], dest: str, *, const: Any, use: str,
                 **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, const=const, default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kwargs)
        self.use = use

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        note(f"{option_string} is deprecated; use {self.use}")  # shown even with --quiet
        setattr(namespace, self.dest, self.const)


def note(text: str, args: argparse.Namespace | None = None, command: str | None = None) -> None:
    """A one-line note `analogeq[ <command>]: <text>` on stderr (nothing with --quiet); written
    through tqdm so that it does not tear a progress bar."""
    if args is not None and getattr(args, "quiet", False):
        return
    from tqdm.auto import tqdm

    prefix = f"analogeq {command}" if command else "analogeq"
    tqdm.write(f"{prefix}: {one_line(text, 1000)}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# shared options


def _presets() -> list[str]:
    from ..circuits import PRESETS

    return sorted(PRESETS)


def _device_type(digital: bool, why_not: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        name = text.strip().lower()
        if name == "none":  # the old spelling of certify's digital model
            name = DIGITAL
        if name == DIGITAL and not digital:
            raise argparse.ArgumentTypeError(f"'digital' does not apply here: {why_not}")
        return name

    return parse


def add_device(p: Any, *, default: str = "pcm", digital: bool = True, why_not: str = "",
               help: str = "") -> None:
    """`--device`: a device preset, or `digital` (no hardware) where `digital` makes sense."""
    choices = [*_presets(), DIGITAL] if digital else _presets()
    what = help or ("device preset of the crossbars" + (", or 'digital' for the model without "
                                                          "hardware" if digital else ""))
    p.add_argument("--device", type=_device_type(digital, why_not), choices=choices,
                   default=default, metavar="{" + ",".join(choices) + "}", help=what)


def add_dtype(p: Any, *, help: str = "", aliases: tuple[str, ...] = ("--float64",)) -> None:
    """`--dtype float32|float64` (default None: the model's own, float32 for a new one); the old
    flags in `aliases` still set float64."""
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help=help or "precision of the model and its states (default: the "
                   "checkpoint's own; float32 for a randomly initialised model)")
    for alias in aliases:
        p.add_argument(alias, dest="dtype", action=_DeprecatedAlias, const="float64",
                       use="--dtype float64")


def add_output(p: Any, *, default_name: str, plot: bool = True) -> None:
    """`--out DIR` (parent, default runs/) and `--name NAME` (the run directory under it);
    `--no-plot` (alias `--no-plots`) when the command draws figures."""
    p.add_argument("--out", default="runs", metavar="DIR",
                   help="parent directory of the run directory")
    p.add_argument("--name", default=None,
                   help=f"run directory under --out (default: {default_name})")
    if plot:
        p.add_argument("--no-plot", action="store_true", help="skip the figures")
        p.add_argument("--no-plots", dest="no_plot", action=_DeprecatedAlias, const=True,
                       use="--no-plot")


def add_quiet(p: Any, *, progress_alias: str | None = None) -> None:
    """`--quiet` (`-q`): no progress bars or notes. Bars are drawn only on a terminal.
    `progress_alias`: an old flag kept working (`--progress` forces bars, `--no-progress` is
    `--quiet`)."""
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or notes (bars show only when stderr is a terminal)")
    if progress_alias == "--progress":
        p.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    elif progress_alias == "--no-progress":
        p.add_argument("--no-progress", dest="quiet", action=_DeprecatedAlias, const=True,
                       use="--quiet")


def progress_enabled(args: argparse.Namespace) -> bool:
    """Draw progress bars: not --quiet, and stderr is a terminal (or the old --progress)."""
    if getattr(args, "quiet", False):
        return False
    if getattr(args, "progress", False):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def model_tag(spec: str) -> str | None:
    """A short name for a `--checkpoint` value: None for the shipped default, "random" for
    `none`, else the run's name (the directory of a best.pt / checkpoint.pt) or the file stem."""
    text = str(spec).strip()
    low = text.lower()
    if low == "default":
        return None
    if low == "none":
        return "random"
    path = Path(text)
    stem = path.parent.name if path.name in ("best.pt", "checkpoint.pt") and path.parent.name \
        else path.stem
    clean = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in stem)
    return clean or "checkpoint"


def run_directory(args: argparse.Namespace, default_name: str) -> Path:
    """`<--out>/<--name or default_name>`, checked: the name is one path component."""
    name = args.name if getattr(args, "name", None) is not None else default_name
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise CLIError(f"--name must be one directory name (no '/'), got {name!r}")
    return Path(args.out) / name


def prepare_directory(path: Path, option: str = "--out") -> Path:
    """Create `path` and make sure a file can be written there, before any work is done; a
    `CLIError` naming the path otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"{option}: cannot write to {path}: {exc.strerror or exc}") from None
    return path
