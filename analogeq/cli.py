"""The `analogeq` command line: one subcommand per job, each with --help and sane defaults.

Until the model lands, `settle` and `compare` run the built-in systems of `analogeq.systems`
(by default the saturating rotor, where explicit Euler at eps 0.1 cycles although the continuous
dynamics settle: the discretization artifact this library exists to expose).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import systems
from ._io import write_json
from .integrators import METHODS, SettleResult, settle
from .integrators.settle import _resolve_pending
from .report import SETTLE_COLUMNS, format_table, plot_residuals, result_row

DEFAULT_METHODS = ("euler", "adaptive", "imex", "implicit", "anderson", "ode")
# Step-size options the CLI passes to the methods that take one.
_EPS_METHODS = {"euler", "imex", "implicit", "euler-maruyama"}


def _build_system(name: str, batch: int, seed: int):
    if name == "rotor":
        # b = 5: eps_crit = 2a / (a^2 + b^2) = 0.077 < 0.1, so Euler at the usual eps 0.1 cycles.
        force = systems.SaturatingRotor(a=1.0, b=5.0, batch=batch)
    elif name == "hopf":
        force = systems.HopfOscillator(batch=batch)
    elif name == "contractive":
        force = systems.ContractiveTanh(batch=batch, seed=seed)
    elif name == "stiff":
        force = systems.StiffLinear(batch=batch, seed=seed)
    else:  # argparse restricts choices; this guards programmatic use
        raise ValueError(f"unknown system {name!r}; choose one of {sorted(systems.SYSTEMS)}")
    return force, force.initial_state()


def _parse_methods(text: str) -> list[str]:
    _resolve_pending()
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise SystemExit(f"analogeq: unknown method(s) {unknown}; available: {sorted(METHODS)}")
    return names


def _run_methods(args: argparse.Namespace, methods: Sequence[str]) -> int:
    torch.manual_seed(args.seed)
    force, z0 = _build_system(args.system, args.batch, args.seed)
    results: dict[str, SettleResult] = {}
    for name in methods:
        options = {"eps": args.eps} if (args.eps is not None and name in _EPS_METHODS) else {}
        label = name + (f"(eps={args.eps:g})" if options else "")
        results[label] = settle(force, z0.clone(), name, tol=args.tol, max_steps=args.max_steps,
                                progress=args.progress, **options)
    rows = [result_row(label, res) for label, res in results.items()]
    print(f"system: {args.system}  batch: {args.batch}  tol (force residual): {args.tol:g}")
    print(format_table(rows, SETTLE_COLUMNS))
    out = Path(args.out) / f"{args.command}-{args.system}"
    write_json(out / "results.json", {"system": args.system, "tol": args.tol, "rows": rows})
    if not args.no_plot:
        png = plot_residuals(results, out / "residuals.png",
                             title=f"{args.system}: force residual per method")
        print(f"plot: {png}")
    print(f"results: {out / 'results.json'}")
    return 0


def _add_settle_options(p: argparse.ArgumentParser, default_methods: str | None) -> None:
    p.add_argument("--system", choices=sorted(systems.SYSTEMS), default="rotor",
                   help="built-in system to settle (default: rotor)")
    p.add_argument("--methods", default=default_methods, required=default_methods is None,
                   help="comma-separated method names"
                   + (f" (default: {default_methods})" if default_methods else ""))
    p.add_argument("--eps", type=float, default=None,
                   help="step size for euler/imex/implicit/euler-maruyama (default: each method's)")
    p.add_argument("--tol", type=float, default=1e-6, help="force-residual tolerance (1e-6)")
    p.add_argument("--max-steps", type=int, default=None, help="step budget (method default)")
    p.add_argument("--batch", type=int, default=4, help="samples settled at once (4)")
    p.add_argument("--seed", type=int, default=0, help="seed for random systems (0)")
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    p.add_argument("--progress", action="store_true", help="show a progress bar per method")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analogeq",
        description="Simulate and co-design equilibrium transformers on analog hardware.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    p = sub.add_parser("settle", help="settle a system with several integrators side by side",
                       description="Settle a built-in system with several integrators; print a "
                       "table and write a residual plot under --out.")
    _add_settle_options(p, ",".join(DEFAULT_METHODS))
    p = sub.add_parser("compare", help="compare chosen integrators on one operator",
                       description="Run the chosen methods on one operator and compare them.")
    _add_settle_options(p, None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("settle", "compare"):
        if args.tol <= 0:
            raise SystemExit(f"analogeq: --tol must be > 0, got {args.tol}")
        if args.batch < 1:
            raise SystemExit(f"analogeq: --batch must be >= 1, got {args.batch}")
        return _run_methods(args, _parse_methods(args.methods))
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
