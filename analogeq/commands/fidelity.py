"""`analogeq fidelity`: is a digital method's failure a discretization artifact or a genuine
instability of the circuit? Runs `analogeq.fidelity.compare` on a built-in scenario with a known
answer (`--scenario healthy|artifact|hopf|real|transformer`) or on a model (`--checkpoint`: the
shipped digits model by default), prints the report and writes report.json and fidelity.png under
`<--out>/<--name>` (default `runs/fidelity-<scenario>`, `runs/fidelity-model` for the shipped
model). `--eps-sweep` adds the eps sweep at fixed eps * N, `--knockout group=alpha` (model only)
the parameter-group knockout. Every option is checked before anything runs; on a terminal a
progress bar follows each settle (the methods, the reference, the root-finder)."""

from __future__ import annotations

import argparse
from typing import Any

from .._fidelity_cli import add_model_options, build_model, parse_methods
from .._io import write_json
from ..scenarios import SCENARIOS, build_scenario
from ._options import (
    CLIError,
    HelpFormatter,
    add_output,
    add_quiet,
    model_tag,
    nonnegative,
    nonnegative_int,
    positive,
    positive_int,
    prepare_directory,
    progress_enabled,
    run_directory,
)

NAME = "fidelity"


def _reference_steps(text: str) -> int:
    value = positive_int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"must be >= 100 (a cycle is judged on the tail of the "
                                         f"reference), got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="artifact or genuine instability? discrete methods vs the continuous reference",
        description="Run discrete methods beside the continuous reference (a tight dopri5 ODE "
        "solve: what the analog circuit does), probe the Jacobian at the best fixed point, and "
        "give a verdict per method: faithful, discretization_artifact, continuous_instability "
        "(hopf/real) or not_converged (with what to run next). Without --scenario: the model of "
        "--checkpoint (the shipped digits model by default).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default=None,
                   help="a built-in system with a known verdict (default: the model)")
    p.add_argument("--methods", default=None,
                   help="comma-separated discrete methods (default: the scenario's, or euler)")
    p.add_argument("--eps", type=positive, default=None,
                   help="step of euler/imex/implicit/euler-maruyama (default: each method's; "
                   "euler 0.1)")
    p.add_argument("--sigma", type=nonnegative, default=0.0, help="noise of euler-maruyama")
    p.add_argument("--tol", type=positive, default=1e-6, help="force-residual tolerance")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="step budget per method (default: each method's own)")
    p.add_argument("--reference-steps", type=_reference_steps, default=None,
                   help="chunks of the continuous reference (>= 100; default: 400, or the "
                   "scenario's)")
    p.add_argument("--k", type=positive_int, default=6,
                   help="eigenvalues per set at the fixed point")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="samples (default: 2 for the model, 1 for scenarios)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of weights, tokens, noise, probes")
    p.add_argument("--eps-sweep", default=None, metavar="EPS,EPS,...",
                   help="also run explicit Euler at these steps for a fixed eps*N "
                   "(--sweep-time) and print force vs step residual floors (default: no sweep)")
    p.add_argument("--sweep-time", type=positive, default=60.0,
                   help="continuous time eps*N of each sweep run")
    p.add_argument("--knockout", default=None, metavar="GROUP=ALPHA[,GROUP=ALPHA]",
                   help="model only: also re-probe with parameter groups scaled, e.g. "
                   "attention_out=0.2 (default: no knockout)")
    add_output(p, default_name="fidelity-<scenario>, or fidelity-model for the shipped model, "
               "fidelity-random with --checkpoint none, fidelity-<run> for a checkpoint")
    add_quiet(p)
    add_model_options(p, "--scenario")
    p.set_defaults(func=run)
    return p


def parse_knockout(text: str) -> dict[str, float]:
    """`GROUP=ALPHA[,GROUP=ALPHA]` -> {group: alpha}, groups checked against
    `analogeq.fidelity.KNOCKOUT_GROUPS`, alpha >= 0."""
    from ..fidelity import KNOCKOUT_GROUPS

    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise CLIError(f"--knockout expects GROUP=ALPHA, got {part!r}")
        g, a = (x.strip() for x in part.split("=", 1))
        if g not in KNOCKOUT_GROUPS:
            raise CLIError(f"--knockout: unknown parameter group {g!r}; choose from "
                           f"{sorted(KNOCKOUT_GROUPS)}")
        try:
            alpha = float(a)
        except ValueError:
            raise CLIError(f"--knockout factor must be a number, got {a!r}") from None
        if not alpha >= 0 or alpha == float("inf"):
            raise CLIError(f"--knockout factor must be finite and >= 0, got {a!r}")
        out[g] = alpha
    return out


def parse_eps_list(text: str) -> list[float]:
    """`EPS,EPS,...` -> a non-empty list of steps > 0."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--eps-sweep expects numbers, got {text!r}") from None
    if not values or any(not v > 0 or v == float("inf") for v in values):
        raise CLIError(f"--eps-sweep expects steps > 0, got {text!r}")
    return values


def _default_name(args: argparse.Namespace) -> str:
    if args.scenario is not None:
        return f"fidelity-{args.scenario}"
    return f"fidelity-{model_tag(args.checkpoint) or 'model'}"


def run(args: argparse.Namespace) -> int:
    from ..fidelity import compare, eps_sweep, knockout

    if args.batch is None:
        args.batch = 1 if args.scenario else 2
    # every option is checked before anything runs
    if args.scenario is not None and args.knockout:
        raise CLIError("--knockout needs the model (no --scenario)")
    sweep_eps = parse_eps_list(args.eps_sweep) if args.eps_sweep else None
    groups = parse_knockout(args.knockout) if args.knockout else None
    sc = build_scenario(args.scenario, batch=args.batch, seed=args.seed) if args.scenario else None
    method_text = args.methods or (",".join(sc.methods) if sc is not None else "euler")
    methods: list[Any] = parse_methods(method_text, args.eps, args.sigma, args.seed)
    options: dict[str, Any] = {}
    model = tokens = None
    if sc is not None:
        force, z0 = sc.force, sc.z0
        options.update(sc.options)
        name = args.scenario
        header = f"scenario {sc.name}: {sc.description} (expected verdict: {sc.expected}" + (
            f", {sc.kind})" if sc.kind else ")")
    else:
        model, tokens = build_model(args)
        force = model.force(tokens)
        z0 = model.initial_state(force)
        cfg = model.config
        name = "model"
        header = (f"model: vocab {cfg.vocab_size}, d_model {cfg.d_model}, heads {cfg.n_heads}, "
                  f"context {cfg.context}, c {cfg.c:g}, init_scale {cfg.init_scale:g}, attn_gain "
                  f"{cfg.attn_gain:g}, {cfg.dtype}; batch {args.batch}")
    out = prepare_directory(run_directory(args, _default_name(args)))
    if args.reference_steps is not None:
        options["reference_steps"] = args.reference_steps
    show = progress_enabled(args)
    try:
        report = compare(force, z0, methods, tol=args.tol, max_steps=args.max_steps, k=args.k,
                         seed=args.seed, progress=show, **options)
    except (TypeError, ValueError) as exc:
        raise CLIError(exc) from None
    print(header)
    print(report.text())
    data: dict[str, Any] = {"name": name, "header": header, "report": report.to_dict()}
    if not args.no_plot:
        print(f"plot: {report.plot(out / 'fidelity.png', title=f'{name}: {report.verdict.value}')}")
    if sweep_eps is not None:
        try:
            sweep = eps_sweep(force, z0, sweep_eps, args.sweep_time, z_star=report.z_star,
                              seed=args.seed)
        except (TypeError, ValueError) as exc:
            raise CLIError(exc) from None
        print(sweep.text())
        data["eps_sweep"] = sweep.to_dict()
        if not args.no_plot:
            print(f"plot: {sweep.plot(out / 'eps_sweep.png')}")
    if groups is not None:
        try:
            ko = knockout(model, tokens, groups, k=args.k, tol=args.tol, seed=args.seed)
        except (TypeError, ValueError) as exc:
            raise CLIError(exc) from None
        print(ko.text())
        data["knockout"] = ko.to_dict()
        if not args.no_plot:
            print(f"plot: {ko.plot(out / 'knockout.png')}")
    path = write_json(out / "report.json", data)
    print(f"report: {path}")
    return 0
