"""`analogeq certify`: the contraction certificate of the default model (or one you describe).

Builds the CLI's default model (vocab 64, C 64, H 4, context 32; random tokens from --seed),
optionally with contraction by construction (--lipschitz-target) and on a chip (--device, with
--stuck-rate faults), runs `analogeq.contraction.certify` and prints the certificate; writes it as
JSON to `<--out>/<--name>/certificate.json` (default `runs/certify/`). Exit code 0 for
CERTIFIED or VACUOUS, 3 for VIOLATED.
`--checkpoint default|PATH` certifies a trained model instead (the shipped digits model, or a
checkpoint of `analogeq train`), on its task's test inputs; the model options are then ignored.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from .._io import write_json
from ._checkpoint import add_checkpoint_option, load_for_cli, uses_checkpoint
from ._options import (
    DIGITAL,
    CLIError,
    HelpFormatter,
    add_device,
    add_dtype,
    add_output,
    model_tag,
    nonnegative,
    nonnegative_int,
    option_error,
    positive,
    positive_int,
    prepare_directory,
    run_directory,
)

NAME = "certify"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="prove (or fail to prove) that a model contracts, beside measured figures",
        description="Contraction certificate: a provable bound L on Lip(N) for "
        "F = -(1+c) z + N(z), what it proves (rate 1 + c - L, Euler eps < 2 / (1 + c + L)) and "
        "the measured log-norms, Jacobian norms and Euler decay beside it.",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_option(p, default="none")
    add_dtype(p)
    m = p.add_argument_group("model (with --checkpoint none)")
    m.add_argument("--vocab", type=positive_int, default=64, help="vocabulary size")
    m.add_argument("--d-model", type=positive_int, default=64, help="channels C")
    m.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    m.add_argument("--context", type=positive_int, default=32, help="tokens per sequence T")
    m.add_argument("--c", type=nonnegative, default=1.0, help="extra leak c")
    m.add_argument("--norm-eps", type=positive, default=1e-5,
                   help="LayerNorm / qk-norm epsilon; the global bound scales as "
                        "1/sqrt(norm_eps)")
    m.add_argument("--lipschitz-target", type=positive, default=None,
                   help="contraction by construction: rescale the couplings to Lip(N) <= this "
                        "(< 1 + c; default: off)")
    h = p.add_argument_group("hardware")
    add_device(h, default=DIGITAL)
    h.add_argument("--stuck-rate", type=nonnegative, default=0.0,
                   help="fraction of devices stuck at g_max (needs --device)")
    h.add_argument("--tau-spread", type=nonnegative, default=0.0,
                   help="node tau spread (needs --device)")
    r = p.add_argument_group("run")
    r.add_argument("--batch", type=positive_int, default=2, help="sequences")
    r.add_argument("--samples", type=nonnegative_int, default=2,
                   help="perturbed states per sample")
    r.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of model, tokens and probes")
    add_output(r, default_name="certify for --checkpoint none, certify-model for the shipped "
               "model, certify-<run> for a checkpoint", plot=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..circuits import preset
    from ..contraction import Verdict, certify
    from ..hardware import HardwareConfig
    from ..model import EquilibriumTransformer, ModelConfig

    try:
        cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads,
                          context=args.context, c=args.c, norm_eps=args.norm_eps,
                          lipschitz_target=args.lipschitz_target,
                          dtype=args.dtype or "float32")
    except (TypeError, ValueError) as exc:
        raise option_error("model", exc) from None
    hw = None
    device = args.device
    if device != DIGITAL:
        try:
            dev = dataclasses.replace(preset(device), stuck_at_max=args.stuck_rate)
            hw = HardwareConfig(device=dev, tau_spread=args.tau_spread, seed=args.seed)
        except (TypeError, ValueError) as exc:
            raise option_error("hardware", exc) from None
    elif args.stuck_rate or args.tau_spread:
        raise CLIError("--stuck-rate and --tau-spread need a --device preset")
    tag = model_tag(args.checkpoint)
    default_name = "certify" if tag == "random" else f"certify-{tag or 'model'}"
    if uses_checkpoint(args):
        model, tokens, text = load_for_cli(args, hw, dtype=args.dtype)
        cfg = model.config
        print(text)
    else:
        model = EquilibriumTransformer(cfg, hw, seed=args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        tokens = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
    out = prepare_directory(run_directory(args, default_name))
    cert = certify(model, tokens, samples=args.samples, seed=args.seed)
    print(f"model: vocab {cfg.vocab_size}, d_model {cfg.d_model}, heads {cfg.n_heads}, context "
          f"{cfg.context}, c {cfg.c:g}, norm_eps {cfg.norm_eps:g}, lipschitz_target "
          f"{cfg.lipschitz_target}, {cfg.dtype}; hardware: "
          f"{'none' if hw is None else f'{device}, stuck rate {args.stuck_rate:g}'}")
    print(cert.text())
    data = {"model": cfg.to_dict(), "hardware": None if hw is None else hw.to_dict(),
            "certificate": cert.to_dict()}
    path = write_json(out / "certificate.json", data)
    print(f"wrote {path}")
    return 3 if cert.verdict is Verdict.VIOLATED else 0
