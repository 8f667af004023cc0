"""Subcommands of the `analogeq` CLI beyond settle/compare: one module per subcommand.

Each module in this package defines

* `NAME: str`, the subcommand (e.g. "fidelity"),
* `register(subparsers) -> argparse.ArgumentParser`, which adds the subcommand's parser and sets
  `func=run` on it with `parser.set_defaults(func=run)`,
* `run(args: argparse.Namespace) -> int`, the exit code.

`analogeq.cli` discovers them with `pkgutil` in name order, so a new subcommand is one new file and
no edit of the shared CLI module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    """Every subcommand module of this package, sorted by module name."""
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for attr in ("NAME", "register", "run"):
            if not hasattr(mod, attr):
                raise ImportError(f"analogeq.commands.{info.name} must define {attr}")
        mods.append(mod)
    return mods


def register_all(subparsers: argparse._SubParsersAction) -> None:
    """Add every discovered subcommand to `subparsers`."""
    for mod in command_modules():
        mod.register(subparsers)


__all__ = ["command_modules", "register_all"]
