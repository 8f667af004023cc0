"""The `analogeq` command line: one subcommand per job, each with --help and sane defaults.

`analogeq settle` (the main job) settles the equilibrium transformer on analog hardware with
several integrators side by side: by default the shipped trained digits model
(`analogeq/data/digits.pt`, see `analogeq.train.default_model`) on its first 4 test digits, or any
`--checkpoint` written by `analogeq train`, or with `--checkpoint none` a randomly initialised
model (vocab 64, d_model 64, 4 heads, context 32, seeded random tokens), on PCM crossbars
(`analogeq.hardware.HardwareConfig` defaults: quenched read noise, 10 % node time-constant
spread, tau = 100 ns), with every registered method of euler, adaptive, imex, implicit, anderson,
ode. It prints a table (method, status, NFE, force residual, settling time in us, crossbar energy
in nJ, wall), the effect of the node
time-constant spread (same fixed point, changed dynamics), and writes results.json and a plot of
the force residual vs NFE and vs physical time per method under `<--out>/<--name>` (default
`runs/settle-pcm/` for the shipped model, `runs/settle-random-pcm/` for `--checkpoint none`).
A progress bar per method shows on a terminal (not when piped, not with --quiet).

`analogeq compare` does the same for the methods given with --methods. Both keep the built-in
systems of `analogeq.systems` (`--system rotor|hopf|contractive|stiff`), e.g. the saturating rotor,
where explicit Euler at eps 0.1 cycles although the continuous dynamics settle.

`main` runs every subcommand; options shared by several subcommands (device, precision, output,
quiet) come from `analogeq.commands._options`. An error the user can fix (bad option, unreadable
checkpoint, unwritable output directory, full disk) ends with one line on stderr,
`analogeq <command>: <what is wrong>`, and exit status 2; warnings are one line each too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from . import __version__, systems
from ._io import write_json
from ._train_checkpoint import CheckpointError
from .commands import register_all
from .commands._checkpoint import add_checkpoint_option, load_for_cli, uses_checkpoint
from .commands._options import (
    CLIError,
    HelpFormatter,
    Parser,
    add_device,
    add_dtype,
    add_output,
    add_quiet,
    model_tag,
    nonnegative,
    nonnegative_int,
    option_error,
    positive,
    positive_int,
    prepare_directory,
    progress_enabled,
    run_directory,
)
from .hardware import READ_NOISE_MODES, HardwareConfig, hardware_summary, tau_spread_report
from .integrators import METHODS, SettleResult, settle
from .model import EquilibriumTransformer, ModelConfig
from .report import (
    HARDWARE_COLUMNS,
    SETTLE_COLUMNS,
    format_table,
    hardware_row,
    plot_residuals,
    result_row,
)

DEFAULT_METHODS = ("euler", "adaptive", "imex", "implicit", "anderson", "ode")
# Step-size options the CLI passes to the methods that take one.
_EPS_METHODS = {"euler", "imex", "implicit", "euler-maruyama"}
# On the model the ODE reference integrates in chunks of 0.25 tau: the loop checks the residual at
# chunk ends, so its settling time is resolved to 0.25 tau (the default chunks grow with the step
# size and can overshoot the settling time by several tau).
_ODE_CHUNK = 0.25
# dopri5's default tolerances (rtol 1e-7, atol 1e-9) are float64 ones; for a lower-precision model
# the CLI asks for the finest the dtype resolves (10 eps, eps: what the ODE method would floor them
# to anyway, with a warning).
_ODE_RTOL, _ODE_ATOL = 1e-7, 1e-9
_HW_DEFAULTS = HardwareConfig.__dataclass_fields__


def _build_system(name: str, batch: int, seed: int):
    # One builder for every subcommand (rotor: a = 1, b = 5, so eps_crit = 1/13 < 0.1).
    from ._fidelity_cli import build_system

    return build_system(name, batch, seed)


def _parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise CLIError(f"--methods: unknown method(s) {unknown}; available: {sorted(METHODS)}")
    return names


def _default_methods() -> list[str]:
    """The default methods that are registered (anderson and ode may not be installed yet)."""
    return [m for m in DEFAULT_METHODS if m in METHODS]


def _method_options(args: argparse.Namespace, name: str) -> tuple[str, dict[str, Any]]:
    options: dict[str, Any] = {}
    if args.eps is not None and name in _EPS_METHODS:
        options["eps"] = args.eps
    if name == "euler-maruyama":
        options["seed"] = args.seed  # seeded runs repeat bit for bit
    label = name + (f"(eps={args.eps:g})" if "eps" in options else "")
    return label, options


# ------------------------------------------------------------------------------------------------
# built-in systems


def _methods_bar(methods: Sequence[str], show: bool) -> Iterator[str]:
    """The methods, with a bar over them on a terminal (each settle draws its own below)."""
    from tqdm.auto import tqdm

    bar = tqdm(methods, desc="methods", unit="method", disable=not show, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        yield name


def _run_system(args: argparse.Namespace, methods: Sequence[str]) -> int:
    out = prepare_directory(run_directory(args, f"{args.command}-{args.system}"))
    force, z0 = _build_system(args.system, args.batch, args.seed)
    if args.dtype is not None:
        z0 = z0.to(getattr(torch, args.dtype))
    tol = args.tol
    show = progress_enabled(args)
    results: dict[str, SettleResult] = {}
    for name in _methods_bar(methods, show):
        label, options = _method_options(args, name)
        results[label] = settle(
            force,
            z0.clone(),
            name,
            tol=tol,
            max_steps=args.max_steps,
            progress=show,
            **options,
        )
    rows = [result_row(label, res) for label, res in results.items()]
    print(f"system: {args.system}  batch: {args.batch}  tol (force residual): {tol:g}")
    print(format_table(rows, SETTLE_COLUMNS))
    write_json(out / "results.json", {"system": args.system, "tol": tol, "rows": rows})
    if not args.no_plot:
        png = plot_residuals(
            results, out / "residuals.png", title=f"{args.system}: force residual per method"
        )
        print(f"plot: {png}")
    print(f"results: {out / 'results.json'}")
    return 0


# ------------------------------------------------------------------------------------------------
# the model on hardware


def _hardware_config(args: argparse.Namespace) -> HardwareConfig | None:
    if args.device == "digital":
        return None
    try:
        return HardwareConfig(
            device=args.device,
            dac_bits=args.dac_bits,
            adc_bits=args.adc_bits,
            tau=args.tau,
            tau_spread=args.tau_spread,
            read_noise=args.read_noise,
            tau_c=args.tau_c,
            drift_time=args.drift_time,
            node_noise=args.node_noise,
            seed=args.seed,
        )
    except (TypeError, ValueError) as exc:
        raise option_error("hardware", exc) from None


def _build_model(args: argparse.Namespace, hardware: HardwareConfig | None
                 ) -> tuple[EquilibriumTransformer, torch.Tensor]:
    if uses_checkpoint(args):
        model, inputs, text = load_for_cli(args, hardware, dtype=args.dtype)
        args.model_text = text
        return model, inputs
    try:
        config = ModelConfig(
            vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads, context=args.context,
            dtype=args.dtype or "float32",
        )
    except (TypeError, ValueError) as exc:
        raise option_error("model", exc) from None
    model = EquilibriumTransformer(config, hardware, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
    return model, tokens


def _describe(model: EquilibriumTransformer, args: argparse.Namespace) -> list[str]:
    cfg = model.config
    lines = [
        getattr(args, "model_text", None)
        or f"model: vocab {cfg.vocab_size}, d_model {cfg.d_model}, heads {cfg.n_heads}, context "
        f"{cfg.context}, batch {args.batch} (random tokens, seed {args.seed}), {cfg.dtype}"
    ]
    hw = model.hardware
    if hw is None:
        lines.append("hardware: none (the digital model; no physical time or energy)")
        return lines
    info = hardware_summary(model)
    tiles = sum(m["tiles"][0] * m["tiles"][1] for m in info["maps"].values())
    conv = (
        "ideal (none in the loop)"
        if hw.dac_bits is None and hw.adc_bits is None
        else f"DAC {hw.dac_bits or 'ideal'} bits, ADC {hw.adc_bits or 'ideal'} bits"
    )
    noise = hw.read_noise + (f" (tau_c {hw.tau_c:g} s)" if hw.read_noise == "ou" else "")
    lines.append(
        f"hardware: {hw.device.name}, {len(info['maps'])} maps on {tiles} tiles "  # type: ignore[union-attr]
        f"({info['devices']} devices), read noise {noise}, converters {conv}, read at "
        f"{hw.drift_time:g} s after programming, v_read {hw.v_read:g} V"
    )
    lines.append(
        f"nodes: tau {hw.tau * 1e9:.3g} ns, spread {hw.tau_spread:g} (tau_i / tau in "  # type: ignore[operator]
        f"[{info['tau_ratio_min']:.3g}, {info['tau_ratio_max']:.3g}])"
    )
    return lines


def default_run_name(args: argparse.Namespace) -> str:
    """`<command>-<device>` for the shipped model, `<command>-random-<device>` for
    `--checkpoint none`, `<command>-<run>-<device>` for a checkpoint of run <run>."""
    tag = model_tag(args.checkpoint)
    return "-".join(x for x in (args.command, tag, args.device) if x)


def _run_model(args: argparse.Namespace, methods: Sequence[str]) -> int:
    hw = _hardware_config(args)  # checks the hardware options before anything runs
    if hw is not None and hw.read_noise == "ou" and any(m != "euler-maruyama" for m in methods):
        raise CLIError(
            "--read-noise ou advances the read noise with the Euler-Maruyama clock: use "
            "--methods euler-maruyama (or --read-noise quenched for other methods)"
        )
    model, tokens = _build_model(args, hw)
    hw = model.hardware
    out = prepare_directory(run_directory(args, default_run_name(args)))
    tol = args.tol
    show = progress_enabled(args)
    results: dict[str, SettleResult] = {}
    if hw is not None:
        # One operator for every method: draw the read noise once ("quenched": one frozen draw,
        # "ou": one initial state), and let no settle redraw it.
        model.resample_read_noise()
    for name in _methods_bar(methods, show):
        label, options = _method_options(args, name)
        if hw is not None:
            options["resample_read_noise"] = False
        if name == "ode":
            eps = torch.finfo(model.dtype).eps
            options.update(
                chunk=_ODE_CHUNK, ode_rtol=max(_ODE_RTOL, 10 * eps), ode_atol=max(_ODE_ATOL, eps)
            )
        results[label] = model.settle(
            tokens, name, tol=tol, max_steps=args.max_steps, progress=show, **options
        )
    rows = [hardware_row(label, res) for label, res in results.items()]
    header = _describe(model, args)
    for line in header:
        print(line)
    print(f"tol (force residual ||F_hw(z)|| / ||z||): {tol:g}")
    print(format_table(rows, HARDWARE_COLUMNS))
    print(
        "settle (us): t * tau to reach tol on each method's own clock, max over the batch "
        f"(ode = the continuous reference, resolved to {_ODE_CHUNK:g} tau; '-' = not settled or "
        "no time); energy (nJ): crossbar dissipation, integral of sum G V^2 dt, mean per sample "
        "('-' for root-finders: no trajectory in time)"
    )
    spread = None
    if hw is not None and hw.tau_spread > 0 and hw.read_noise in ("off", "quenched"):
        report = tau_spread_report(model, tokens, "imex", tol=tol)
        spread = dict(report.__dict__)
        print(report.summary())
    dev = args.device
    write_json(
        out / "results.json",
        {
            "model": model.config.to_dict(),
            "hardware": None if hw is None else hardware_summary(model),
            "batch": args.batch,
            "seed": args.seed,
            "tol": tol,
            "rows": rows,
            "tau_spread": spread,
        },
    )
    if not args.no_plot:
        scale, label = (
            (1.0, "continuous time (units of tau)")
            if hw is None
            else (float(hw.tau) * 1e6, "physical time (us)")
        )  # type: ignore[arg-type]
        png = plot_residuals(
            results,
            out / "residuals.png",
            title=f"equilibrium transformer on {dev}: force residual per method",
            time_scale=scale,
            time_label=label,
        )
        print(f"plot: {png}")
    print(f"results: {out / 'results.json'}")
    return 0


# ------------------------------------------------------------------------------------------------
# parser


def _bits(text: str) -> int | None:
    if text.lower() in ("none", "ideal"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


_SETTLE_NAMES = ("<command>-<device> for the shipped model, <command>-random-<device> with "
                 "--checkpoint none, <command>-<run>-<device> for a checkpoint of run <run>, "
                 "<command>-<system> with --system")


def _add_settle_options(p: argparse.ArgumentParser, default_methods: str | None) -> None:
    add_checkpoint_option(p)
    p.add_argument(
        "--system",
        choices=sorted(systems.SYSTEMS),
        default=None,
        help="settle a built-in system instead of the model (default: the model)",
    )
    p.add_argument(
        "--methods",
        default=default_methods,
        required=default_methods is None,
        help="comma-separated method names, of " + ", ".join(sorted(METHODS))
        + ("; by default those of the list below that are registered" if default_methods
           else " (required)"),
    )
    p.add_argument(
        "--eps",
        type=positive,
        default=None,
        help="step size for euler/imex/implicit/euler-maruyama (default: each method's own)",
    )
    p.add_argument("--tol", type=positive, default=1e-6, help="force-residual tolerance")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="step budget (default: each method's own)")
    p.add_argument("--batch", type=positive_int, default=4, help="samples settled at once")
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seed of the weights, the chip, the tokens and random systems",
    )
    add_dtype(p)
    add_output(p, default_name=_SETTLE_NAMES)
    add_quiet(p, progress_alias="--progress")
    m = p.add_argument_group("model (with --checkpoint none; ignored with --system)")
    m.add_argument("--vocab", type=positive_int, default=64, help="vocabulary size")
    m.add_argument("--d-model", type=positive_int, default=64, help="channels C")
    m.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    m.add_argument("--context", type=positive_int, default=32, help="tokens per sequence T")
    h = p.add_argument_group("hardware (ignored with --system)")
    add_device(h, default="pcm")
    h.add_argument(
        "--drift-time",
        type=nonnegative,
        default=_HW_DEFAULTS["drift_time"].default,
        help="seconds after programming at which the chip is read",
    )
    h.add_argument(
        "--tau-spread",
        type=nonnegative,
        default=_HW_DEFAULTS["tau_spread"].default,
        help="relative spread of the node time constants",
    )
    h.add_argument("--tau", type=positive, default=None,
                   help="node time constant tau, s (default: the hardware default, 1e-7)")
    h.add_argument(
        "--read-noise",
        choices=READ_NOISE_MODES,
        default=_HW_DEFAULTS["read_noise"].default,
        help="read noise during settling (quenched: one draw per settle)",
    )
    h.add_argument(
        "--tau-c",
        type=positive,
        default=None,
        help="correlation time of --read-noise ou, s (needs --methods euler-maruyama; default: "
        "none, required with --read-noise ou)",
    )
    h.add_argument(
        "--node-noise",
        type=nonnegative,
        default=_HW_DEFAULTS["node_noise"].default,
        help="stationary std of the nodes' thermal noise in units of z, used by euler-maruyama",
    )
    h.add_argument(
        "--dac-bits",
        type=_bits,
        default=None,
        help="DAC bits in the settling loop, or none (default: none, the continuous circuit; "
        "with converters the residual floors near their LSB)",
    )
    h.add_argument("--adc-bits", type=_bits, default=None,
                   help="ADC bits, or none (default: none)")


def build_parser() -> argparse.ArgumentParser:
    """The `analogeq` parser: settle and compare here, the other subcommands from
    `analogeq.commands` (one module each)."""
    parser = Parser(
        prog="analogeq",
        description="Simulate and co-design equilibrium transformers on analog hardware.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"analogeq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    p = sub.add_parser(
        "settle",
        help="settle the model on analog hardware with several integrators",
        description="Settle the equilibrium transformer on analog hardware (default: the shipped "
        "digits model on PCM) with several integrators side by side; print a table (status, "
        "NFE, force residual, settling time, crossbar energy, wall) and write results and a "
        "residual plot under --out/--name. --system settles a built-in system instead.",
        formatter_class=HelpFormatter,
    )
    _add_settle_options(p, ",".join(DEFAULT_METHODS))
    p = sub.add_parser(
        "compare",
        help="compare chosen integrators on one operator",
        description="Run the chosen methods on one operator (the model on hardware, or a "
        "built-in --system) and compare them.",
        formatter_class=HelpFormatter,
    )
    _add_settle_options(p, None)
    register_all(sub)  # fidelity, probe, spice, train, ... (analogeq/commands/)
    return parser


def _settle_or_compare(args: argparse.Namespace) -> int:
    if args.command == "settle" and args.methods == ",".join(DEFAULT_METHODS):
        methods = _default_methods()
    else:
        methods = _parse_methods(args.methods)
    if args.system is not None:
        return _run_system(args, methods)
    return _run_model(args, methods)


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings as `analogeq <command>: warning: <message>` (one line, no source line)."""
    with warnings.catch_warnings():
        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                 line: Any = None) -> None:
            text = " ".join(str(message).split())
            print(f"analogeq {command}: warning: {text}", file=file or sys.stderr)

        warnings.showwarning = show
        yield


def _as_cli_error(exc: BaseException) -> CLIError | None:
    """The one-line form of a failure the user can fix, or None for anything else (a bug keeps
    its traceback)."""
    if isinstance(exc, CLIError):
        return exc
    if isinstance(exc, CheckpointError):
        return CLIError(str(exc))
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return CLIError(f"{where}{exc.strerror or exc}")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run `analogeq <command> ...` (argv: the arguments after the program name); returns the
    exit status. Errors the user can fix raise a `CLIError` (exit status 2) after printing
    one line."""
    args = build_parser().parse_args(argv)
    command = args.command + (f" {args.action}" if getattr(args, "action", None) else "")
    with _one_line_warnings(command):
        try:
            if args.command in ("settle", "compare"):
                return _settle_or_compare(args)
            return int(args.func(args))
        except (CLIError, CheckpointError, OSError) as exc:
            error = _as_cli_error(exc)
            assert error is not None
            print(f"analogeq {command}: {error.message}", file=sys.stderr)
            if error is exc:
                raise
            raise error from None


if __name__ == "__main__":
    sys.exit(main())
