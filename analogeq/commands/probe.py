"""`analogeq probe`: the Jacobian spectrum at a fixed point, printed and plotted.

Settles a built-in system (`--system rotor|hopf|contractive|stiff|saddle`), the `transformer`
fidelity scenario (`--system transformer`) or a model (`--checkpoint`: the shipped digits model
by default) with a root-finder (Anderson by default), then runs `analogeq.probes.probe_report`
there: leading eigenvalues, the eigenvalues dominating Euler's map at --eps, the log-norm, a
certified eps_crit and the asymmetry. Writes probe.json and spectrum.png under `<--out>/<--name>`
(default `runs/probe-<system>`, `runs/probe-model` for the shipped model)."""

from __future__ import annotations

import argparse

import torch

from .._fidelity_cli import SYSTEM_NAMES, add_model_options, build_model, build_system
from .._io import write_json
from ._options import (
    CLIError,
    HelpFormatter,
    add_output,
    add_quiet,
    model_tag,
    nonnegative_int,
    positive,
    positive_int,
    prepare_directory,
    progress_enabled,
    run_directory,
)

NAME = "probe"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..integrators import METHODS

    p = subparsers.add_parser(
        NAME,
        help="eigenvalues, log-norm, eps_crit and asymmetry at a fixed point",
        description="Find a fixed point (root-finder, default anderson) of a built-in system or "
        "a model (--checkpoint; the shipped digits model by default) and probe the Jacobian "
        "there, matrix-free: leading eigenvalues, the eigenvalues dominating Euler's map at "
        "--eps, log-norm, eps_crit (certified search) and asymmetry. Prints them and plots the "
        "spectrum with Euler's stability disks.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--system", choices=(*SYSTEM_NAMES, "transformer"), default=None,
                   help="a built-in system (default: the model)")
    p.add_argument("--root", default="anderson", choices=sorted(METHODS), metavar="METHOD",
                   help="method that finds the fixed point ('ode' for the continuous "
                   "reference's end)")
    p.add_argument("--k", type=positive_int, default=6,
                   help="eigenvalues per set (at most the state size)")
    p.add_argument("--eps", type=positive, default=0.1, help="Euler step probed")
    p.add_argument("--tol", type=positive, default=1e-8,
                   help="force-residual tolerance of the root (float32 floors near 1e-6)")
    p.add_argument("--batch", type=positive_int, default=1, help="samples probed at once")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of weights, tokens and probes")
    add_output(p, default_name="probe-<system>, or probe-model for the shipped model, "
               "probe-random with --checkpoint none, probe-<run> for a checkpoint")
    add_quiet(p)
    add_model_options(p, "--system", dtype_aliases=("--float64", "--float64-probes"))
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..integrators import settle
    from ..probes import probe_report
    from ..scenarios import transformer_model, transformer_tokens

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
    default_name = (f"probe-{args.system}" if args.system is not None
                    else f"probe-{model_tag(args.checkpoint) or 'model'}")
    out = prepare_directory(run_directory(args, default_name))
    if model is not None:
        force = model.force(tokens)
        z0 = model.initial_state(force)
        tol = max(args.tol, 10 * torch.finfo(model.dtype).eps)
    else:
        force, z0 = build_system(args.system, args.batch, args.seed)
        tol = args.tol
    root = settle(force, z0, args.root, tol=tol, progress=progress_enabled(args))
    print(f"{name}: fixed point by {root.summary()}")
    if not root.converged:
        print("warning: the root-finder did not reach tol: the spectrum is that of the "
              "linearization at its best point, not a stability verdict")
    try:
        rep = probe_report(force, root.z, k=min(args.k, root.z[0].numel()), eps=args.eps,
                           seed=args.seed,
                           dtype=torch.float64 if args.dtype == "float64" else None)
    except (TypeError, ValueError) as exc:
        raise CLIError(exc) from None
    print(rep.text())
    if not args.no_plot:
        print(f"plot: {rep.plot(out / 'spectrum.png', title=f'{name}: Jacobian spectrum')}")
    data = {"name": name, "root": {"method": root.method, "status": root.status.value,
                                   "force_residual": root.residual.cpu().tolist()},
            "probe": rep.to_dict()}
    print(f"results: {write_json(out / 'probe.json', data)}")
    return 0
