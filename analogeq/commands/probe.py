"""`analogeq probe`: the Jacobian spectrum at a fixed point, printed and plotted.

Settles a built-in system (`--system rotor|hopf|contractive|stiff|saddle`), the `transformer`
fidelity scenario (`--system transformer`) or the default model with a root-finder (Anderson by
default), then runs `analogeq.probes.probe_report` there: leading eigenvalues, the eigenvalues
dominating Euler's map at --eps, the log-norm, a certified eps_crit and the asymmetry. Writes
probe.json and spectrum.png under --out (default runs/)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .._fidelity_cli import SYSTEM_NAMES, add_model_options, build_model, build_system, check_common
from .._io import write_json

NAME = "probe"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="eigenvalues, log-norm, eps_crit and asymmetry at a fixed point",
        description="Find a fixed point (root-finder, default anderson) of a built-in system or "
        "the default model and probe the Jacobian there, matrix-free: leading eigenvalues, the "
        "eigenvalues dominating Euler's map at --eps, log-norm, eps_crit (certified search) and "
        "asymmetry. Prints them and plots the spectrum with Euler's stability disks.",
    )
    p.add_argument("--system", choices=(*SYSTEM_NAMES, "transformer"), default=None,
                   help="a built-in system (default: the model)")
    p.add_argument("--root", default="anderson",
                   help="method that finds the fixed point (anderson; 'ode' for the continuous "
                   "reference's end)")
    p.add_argument("--k", type=int, default=6,
                   help="eigenvalues per set (6; at most the state size)")
    p.add_argument("--eps", type=float, default=0.1, help="Euler step probed (0.1)")
    p.add_argument("--tol", type=float, default=1e-8,
                   help="force-residual tolerance of the root (1e-8; float32 floors near 1e-6)")
    p.add_argument("--float64-probes", action="store_true",
                   help="Jacobian products in float64 (copies a float32 model)")
    p.add_argument("--batch", type=int, default=1, help="samples (1)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, tokens and probes (0)")
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..integrators import METHODS, settle
    from ..probes import probe_report
    from ..scenarios import transformer_model, transformer_tokens

    check_common(args)
    if args.root not in METHODS:
        raise SystemExit(f"analogeq: unknown --root {args.root!r}; available: {sorted(METHODS)}")
    if args.system == "transformer":
        model = transformer_model(args.seed)
        tokens = transformer_tokens(args.batch, args.seed)
        name = "transformer"
    elif args.system is not None:
        model = tokens = None
        name = args.system
    else:
        model, tokens = build_model(args)
        name = "model"
    if model is not None:
        force = model.force(tokens)
        z0 = model.initial_state(force)
        tol = max(args.tol, 10 * torch.finfo(model.dtype).eps)
    else:
        force, z0 = build_system(args.system, args.batch, args.seed)
        tol = args.tol
    root = settle(force, z0, args.root, tol=tol)
    print(f"{name}: fixed point by {root.summary()}")
    if not root.converged:
        print("warning: the root-finder did not reach tol: the spectrum is that of the "
              "linearization at its best point, not a stability verdict")
    try:
        rep = probe_report(force, root.z, k=min(args.k, root.z[0].numel()), eps=args.eps,
                           seed=args.seed, dtype=torch.float64 if args.float64_probes else None)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"analogeq: {exc}") from None
    print(rep.text())
    out = Path(args.out) / f"probe-{name}"
    if not args.no_plot:
        print(f"plot: {rep.plot(out / 'spectrum.png', title=f'{name}: Jacobian spectrum')}")
    data = {"name": name, "root": {"method": root.method, "status": root.status.value,
                                   "force_residual": root.residual.cpu().tolist()},
            "probe": rep.to_dict()}
    print(f"results: {write_json(out / 'probe.json', data)}")
    return 0
