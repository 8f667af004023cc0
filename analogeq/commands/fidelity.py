"""`analogeq fidelity`: is a digital method's failure a discretization artifact or a genuine
instability of the circuit? Runs `analogeq.fidelity.compare` on a built-in scenario with a known
answer (`--scenario healthy|artifact|hopf|real|transformer`) or on the default model, prints the
report and writes report.json and fidelity.png under --out (default runs/). `--eps-sweep` adds the
eps sweep at fixed eps * N, `--knockout group=alpha` (model only) the parameter-group knockout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._fidelity_cli import add_model_options, build_model, check_common, parse_methods
from .._io import write_json
from ..scenarios import SCENARIOS, build_scenario

NAME = "fidelity"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="artifact or genuine instability? discrete methods vs the continuous reference",
        description="Run discrete methods beside the continuous reference (a tight dopri5 ODE "
        "solve: what the analog circuit does), probe the Jacobian at the best fixed point, and "
        "give a verdict per method: faithful, discretization_artifact, continuous_instability "
        "(hopf/real) or not_converged (with what to run next). Without --scenario: the default "
        "model (random seeded tokens).",
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default=None,
                   help="a built-in system with a known verdict (default: the model)")
    p.add_argument("--methods", default=None,
                   help="comma-separated discrete methods (default: the scenario's, or euler)")
    p.add_argument("--eps", type=float, default=None,
                   help="step of euler/imex/implicit/euler-maruyama (default: each method's; "
                   "euler 0.1)")
    p.add_argument("--sigma", type=float, default=0.0, help="noise of euler-maruyama (0)")
    p.add_argument("--tol", type=float, default=1e-6, help="force-residual tolerance (1e-6)")
    p.add_argument("--max-steps", type=int, default=None, help="step budget per method")
    p.add_argument("--reference-steps", type=int, default=None,
                   help="chunks of the continuous reference (>= 100; default 400, or the "
                   "scenario's)")
    p.add_argument("--k", type=int, default=6, help="eigenvalues per set at the fixed point (6)")
    p.add_argument("--batch", type=int, default=None,
                   help="samples (default 2 for the model, 1 for scenarios)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, tokens, noise, probes")
    p.add_argument("--eps-sweep", default=None, metavar="EPS,EPS,...",
                   help="also run explicit Euler at these steps for a fixed eps*N "
                   "(--sweep-time) and print force vs step residual floors")
    p.add_argument("--sweep-time", type=float, default=60.0,
                   help="continuous time eps*N of each sweep run (60)")
    p.add_argument("--knockout", default=None, metavar="GROUP=ALPHA[,GROUP=ALPHA]",
                   help="model only: also re-probe with parameter groups scaled, e.g. "
                   "attention_out=0.2")
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.add_argument("--no-plot", action="store_true", help="skip the figures")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def _parse_knockout(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise SystemExit(f"analogeq: --knockout expects GROUP=ALPHA, got {part!r}")
        g, a = part.split("=", 1)
        try:
            out[g.strip()] = float(a)
        except ValueError:
            raise SystemExit(f"analogeq: --knockout factor must be a number, got {a!r}") from None
    return out


def _parse_eps_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"analogeq: --eps-sweep expects numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..fidelity import compare, eps_sweep, knockout

    if args.batch is None:
        args.batch = 1 if args.scenario else 2
    check_common(args)
    options: dict[str, Any] = {}
    model = tokens = None
    if args.scenario is not None:
        if args.knockout:
            raise SystemExit("analogeq: --knockout needs the model (no --scenario)")
        sc = build_scenario(args.scenario, batch=args.batch, seed=args.seed)
        force, z0 = sc.force, sc.z0
        methods: list[Any] = parse_methods(args.methods or ",".join(sc.methods), args.eps,
                                           args.sigma, args.seed)
        options.update(sc.options)
        name = args.scenario
        header = f"scenario {sc.name}: {sc.description} (expected verdict: {sc.expected}" + (
            f", {sc.kind})" if sc.kind else ")")
    else:
        model, tokens = build_model(args)
        force = model.force(tokens)
        z0 = model.initial_state(force)
        methods = parse_methods(args.methods or "euler", args.eps, args.sigma, args.seed)
        cfg = model.config
        name = "model"
        header = (f"model: vocab {cfg.vocab_size}, d_model {cfg.d_model}, heads {cfg.n_heads}, "
                  f"context {cfg.context}, c {cfg.c:g}, init_scale {cfg.init_scale:g}, attn_gain "
                  f"{cfg.attn_gain:g}, {cfg.dtype}; batch {args.batch} (random tokens, seed "
                  f"{args.seed})")
    if args.reference_steps is not None:
        options["reference_steps"] = args.reference_steps
    try:
        report = compare(force, z0, methods, tol=args.tol, max_steps=args.max_steps, k=args.k,
                         seed=args.seed, **options)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"analogeq: {exc}") from None
    print(header)
    print(report.text())
    out = Path(args.out) / f"fidelity-{name}"
    data: dict[str, Any] = {"name": name, "header": header, "report": report.to_dict()}
    if not args.no_plot:
        print(f"plot: {report.plot(out / 'fidelity.png', title=f'{name}: {report.verdict.value}')}")
    if args.eps_sweep:
        try:
            sweep = eps_sweep(force, z0, _parse_eps_list(args.eps_sweep), args.sweep_time,
                              z_star=report.z_star, seed=args.seed)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"analogeq: {exc}") from None
        print(sweep.text())
        data["eps_sweep"] = sweep.to_dict()
        if not args.no_plot:
            print(f"plot: {sweep.plot(out / 'eps_sweep.png')}")
    if args.knockout:
        try:
            ko = knockout(model, tokens, _parse_knockout(args.knockout), k=args.k, tol=args.tol,
                          seed=args.seed)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"analogeq: {exc}") from None
        print(ko.text())
        data["knockout"] = ko.to_dict()
        if not args.no_plot:
            print(f"plot: {ko.plot(out / 'knockout.png')}")
    path = write_json(out / "report.json", data)
    print(f"report: {path}")
    return 0
