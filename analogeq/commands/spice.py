"""`analogeq spice export|verify`: a circuit as an ngspice deck, and the cross-check against SPICE.

Circuits (--circuit):
* hopfield (default): a seeded random tanh network of --nodes nodes, ||W||_2 = --gain
  (`circuits.random_hopfield`: tau dx/dt = -x + W tanh(x) + b, tau = 100 ns);
* crossbar: an --nodes x --nodes `AnalogLinear` of --device programmed with a random weight, read
  as integrating columns (`circuits.from_linear`);
* ffn / block: a tiny equilibrium transformer (C 4, H 2, T 3, float64) as a netlist, its FFN path
  or the whole block with softmax and norms as behavioural sources (`analogeq.spice_models`).

`export` writes <out>/spice-<circuit>/<circuit>.cir (or --deck). `verify` runs the circuit in
ngspice and in analogeq (torchdiffeq reference trajectory at ngspice's time points, settle to the
fixed point), prints the largest differences against the targets (1e-3 V along the trajectory,
1e-4 V at the fixed point), writes report.json and verify.png under <out>/spice-<circuit>/.
Exit code 0 when both targets are met, 1 when not, 2 when ngspice is missing or fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

NAME = "spice"
CIRCUITS = ("hopfield", "crossbar", "ffn", "block")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--circuit", choices=CIRCUITS, default="hopfield",
                   help="which circuit (hopfield)")
    p.add_argument("--nodes", type=int, default=10,
                   help="hopfield nodes / crossbar size (10); ignored by ffn/block")
    p.add_argument("--gain", type=float, default=0.8, help="hopfield ||W||_2 (0.8)")
    p.add_argument("--device", default="pcm", help="crossbar device preset (pcm)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs, v0 (0)")
    p.add_argument("--tstop", type=float, default=30.0,
                   help="transient length in units of the node time constant (30)")
    p.add_argument("--reltol", type=float, default=1e-6, help="ngspice reltol (1e-6)")
    p.add_argument("--method", choices=("gear", "trap"), default="gear",
                   help="ngspice integration method (gear)")
    p.add_argument("--out", default="runs", help="output directory (default: runs/)")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="export a circuit as an ngspice deck, or verify analogeq against ngspice",
        description="Netlists and SPICE: export writes the deck; verify runs the circuit in "
        "ngspice (batch mode) and in analogeq and reports the trajectory and fixed-point "
        "differences, with a plot.",
    )
    sub = p.add_subparsers(dest="action", metavar="{export,verify}")
    sub.required = True
    e = sub.add_parser("export", help="write the ngspice deck")
    _common(e)
    e.add_argument("--deck", default=None, help="deck path (default <out>/spice-<circuit>/)")
    v = sub.add_parser("verify", help="run ngspice and analogeq, compare")
    _common(v)
    v.add_argument("--timeout", type=float, default=300.0, help="ngspice timeout, s (300)")
    p.set_defaults(func=run)
    return p


def build_circuit(args: argparse.Namespace):
    """The Netlist the options describe."""
    from ..circuits import AnalogLinear, from_linear, random_hopfield

    if args.nodes < 1:
        raise SystemExit(f"analogeq spice: --nodes must be >= 1, got {args.nodes}")
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
    from ..circuits.spice import NgspiceError, to_spice, verify

    try:
        net = build_circuit(args)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"analogeq spice: bad circuit option: {exc}") from None
    out = Path(args.out) / f"spice-{args.circuit}"
    tau = net.force().tau
    deck_opts = {"reltol": args.reltol, "method": args.method}
    c = net.counts()
    print(f"{net.name}: {c['state']} state, {c['input']} input, {c['aux']} aux nodes, "
          f"{c['devices']} elements; reciprocal: {net.reciprocity().reciprocal}; "
          f"largest feedback loop: {len(net.strongly_connected_components()[0])} nodes")
    if args.action == "export":
        path = Path(args.deck) if args.deck else out / f"{args.circuit}.cir"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_spice(net, args.tstop * tau, **deck_opts))
        print(f"deck: {path}  (run: ngspice -b -r out.raw {path})")
        return 0
    from .._io import write_json

    try:
        report = verify(net, args.tstop, timeout=args.timeout, **deck_opts)
    except NgspiceError as exc:
        print(f"analogeq spice verify: {exc}")
        return 2
    print(report.summary())
    write_json(out / "report.json", report.to_dict())
    png = report.plot(out / "verify.png")
    print(f"report: {out / 'report.json'}  plot: {png}")
    return 0 if report.passed else 1
