"""`analogeq spice export|verify`: a circuit as an ngspice deck, and the cross-check against SPICE.

Circuits (--circuit):
* hopfield (default): a seeded random tanh network of --nodes nodes, ||W||_2 = --gain
  (`circuits.random_hopfield`: tau dx/dt = -x + W tanh(x) + b, tau = 100 ns);
* crossbar: an --nodes x --nodes `AnalogLinear` of --device programmed with a random weight, read
  as integrating columns (`circuits.from_linear`);
* ffn / block: a tiny equilibrium transformer (C 4, H 2, T 3, float64) as a netlist, its FFN path
  or the whole block with softmax and norms as behavioural sources (`analogeq.spice_models`).

`export` writes `<--out>/<--name>/<circuit>.cir` (default `runs/spice-<circuit>/`; or --deck).
`verify` runs the circuit in ngspice and in analogeq (torchdiffeq reference trajectory at
ngspice's time points, settle to the fixed point), prints the largest differences against the
targets (1e-3 V along the trajectory, 1e-4 V at the fixed point), writes report.json and
verify.png under the same directory. Exit code 0 when both targets are met, 1 when not, 2 when
ngspice is missing or fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ._options import (
    CLIError,
    HelpFormatter,
    add_device,
    add_output,
    nonnegative_int,
    positive,
    positive_int,
    prepare_directory,
    run_directory,
)

NAME = "spice"
CIRCUITS = ("hopfield", "crossbar", "ffn", "block")


def _common(p: argparse.ArgumentParser, plot: bool) -> None:
    p.add_argument("--circuit", choices=CIRCUITS, default="hopfield", help="which circuit")
    p.add_argument("--nodes", type=positive_int, default=10,
                   help="hopfield nodes / crossbar size; ignored by ffn/block")
    p.add_argument("--gain", type=positive, default=0.8, help="hopfield ||W||_2")
    add_device(p, default="pcm", digital=False,
               why_not="the crossbar circuit needs a device preset",
               help="device preset of the crossbar circuit")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of weights, inputs, v0")
    p.add_argument("--tstop", type=positive, default=30.0,
                   help="transient length in units of the node time constant")
    p.add_argument("--reltol", type=positive, default=1e-6, help="ngspice reltol")
    p.add_argument("--method", choices=("gear", "trap"), default="gear",
                   help="ngspice integration method")
    add_output(p, default_name="spice-<circuit>", plot=plot)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="export a circuit as an ngspice deck, or verify analogeq against ngspice",
        description="Netlists and SPICE: export writes the deck; verify runs the circuit in "
        "ngspice (batch mode) and in analogeq and reports the trajectory and fixed-point "
        "differences, with a plot.",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="{export,verify}")
    sub.required = True
    e = sub.add_parser(
        "export", help="write the ngspice deck", formatter_class=HelpFormatter,
        description="Build the circuit (--circuit) as an analogeq Netlist and write it as an "
        "ngspice deck (C, R, G and B elements, initial conditions, a .tran over --tstop node "
        "time constants) to <out>/<name>/<circuit>.cir or --deck; ngspice is not needed.",
        epilog="example:\n  analogeq spice export --circuit block\n"
        "  ngspice -b -r out.raw runs/spice-block/block.cir")
    _common(e, plot=False)
    e.add_argument("--deck", default=None,
                   help="deck path (default: <out>/<name>/<circuit>.cir)")
    v = sub.add_parser(
        "verify", help="run ngspice and analogeq, compare", formatter_class=HelpFormatter,
        description="Run the circuit (--circuit) in ngspice and in analogeq: the torchdiffeq "
        "reference trajectory at ngspice's time points and a settle to the fixed point. Prints "
        "the largest differences against the targets (1e-3 V along the trajectory, 1e-4 V at "
        "the fixed point) and writes report.json and verify.png under <out>/<name>/. Exit "
        "status 0 when both targets are met, 1 when not, 2 when ngspice is missing or fails.",
        epilog="example:\n  analogeq spice verify --circuit hopfield --nodes 100")
    _common(v, plot=True)
    v.add_argument("--timeout", type=positive, default=300.0, help="ngspice timeout, s")
    p.set_defaults(func=run)
    return p


def build_circuit(args: argparse.Namespace):
    """The Netlist the options describe."""
    from ..circuits import AnalogLinear, from_linear, random_hopfield

    gen = torch.Generator().manual_seed(args.seed)
    if args.circuit == "hopfield":
        return random_hopfield(args.nodes, gain=args.gain, seed=args.seed)
    if args.circuit == "crossbar":
        n = args.nodes
        layer = AnalogLinear(n, n, bias=False, device=args.device, seed=args.seed,
                             dtype=torch.float64)
        layer.program(torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5)
        x = 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)
        return from_linear(layer, x, name=f"crossbar{n}")
    from ..model import EquilibriumTransformer, ModelConfig
    from ..spice_models import block_netlist

    cfg = ModelConfig(vocab_size=16, d_model=4, n_heads=2, context=3, dtype=torch.float64)
    model = EquilibriumTransformer(cfg, seed=args.seed)
    tokens = torch.randint(0, 16, (1, 3), generator=gen)
    branches = ("ffn",) if args.circuit == "ffn" else ("attn", "ffn")
    return block_netlist(model, tokens, branches=branches)


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write, write_json
    from ..circuits.spice import NgspiceError, to_spice, verify

    try:
        net = build_circuit(args)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"bad circuit option: {exc}") from None
    out = run_directory(args, f"spice-{args.circuit}")
    tau = net.force().tau
    deck_opts = {"reltol": args.reltol, "method": args.method}
    c = net.counts()
    print(f"{net.name}: {c['state']} state, {c['input']} input, {c['aux']} aux nodes, "
          f"{c['devices']} elements; reciprocal: {net.reciprocity().reciprocal}; "
          f"largest feedback loop: {len(net.strongly_connected_components()[0])} nodes")
    if args.action == "export":
        path = Path(args.deck) if args.deck else out / f"{args.circuit}.cir"
        prepare_directory(path.parent, "--deck" if args.deck else "--out")
        atomic_write(path, lambda fh: fh.write(to_spice(net, args.tstop * tau, **deck_opts)))
        print(f"deck: {path}  (run: ngspice -b -r out.raw {path})")
        return 0
    prepare_directory(out)
    try:
        report = verify(net, args.tstop, timeout=args.timeout, **deck_opts)
    except NgspiceError as exc:
        print(f"analogeq spice verify: {exc}")
        return 2
    print(report.summary())
    write_json(out / "report.json", report.to_dict())
    if args.no_plot:
        print(f"report: {out / 'report.json'}")
    else:
        png = report.plot(out / "verify.png")
        print(f"report: {out / 'report.json'}  plot: {png}")
    return 0 if report.passed else 1
