"""`analogeq certify`: the contraction certificate of the default model (or one you describe).

Builds the CLI's default model (vocab 64, C 64, H 4, context 32; random tokens from --seed),
optionally with contraction by construction (--lipschitz-target) and on a chip (--device, with
--stuck-rate faults), runs `analogeq.contraction.certify` and prints the certificate; writes it as
JSON to <out>/certify/certificate.json. Exit code 0 for CERTIFIED or VACUOUS, 3 for VIOLATED.
`--checkpoint default|PATH` certifies a trained model instead (the shipped digits model, or a
checkpoint of `analogeq train`), on its task's test inputs; the model options are then ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

NAME = "certify"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="prove (or fail to prove) that a model contracts, beside measured figures",
        description="Contraction certificate: a provable bound L on Lip(N) for "
        "F = -(1+c) z + N(z), what it proves (rate 1 + c - L, Euler eps < 2 / (1 + c + L)) and "
        "the measured log-norms, Jacobian norms and Euler decay beside it.",
    )
    from ._checkpoint import add_checkpoint_option

    add_checkpoint_option(p, default="none")
    m = p.add_argument_group("model (with --checkpoint none)")
    m.add_argument("--vocab", type=int, default=64, help="vocabulary size (64)")
    m.add_argument("--d-model", type=int, default=64, help="channels C (64)")
    m.add_argument("--heads", type=int, default=4, help="attention heads (4)")
    m.add_argument("--context", type=int, default=32, help="tokens per sequence T (32)")
    m.add_argument("--c", type=float, default=1.0, help="extra leak c (1.0)")
    m.add_argument("--norm-eps", type=float, default=1e-5,
                   help="LayerNorm / qk-norm epsilon (1e-5); the global bound scales as "
                        "1/sqrt(norm_eps)")
    m.add_argument("--lipschitz-target", type=float, default=None,
                   help="contraction by construction: rescale the couplings to Lip(N) <= this "
                        "(< 1 + c); default off")
    m.add_argument("--float64", action="store_true", help="build the model in float64")
    h = p.add_argument_group("hardware")
    h.add_argument("--device", default="none",
                   help="none (digital, default) or a device preset: ideal, pcm, rram, ecram")
    h.add_argument("--stuck-rate", type=float, default=0.0,
                   help="fraction of devices stuck at g_max (0)")
    h.add_argument("--tau-spread", type=float, default=0.0, help="node tau spread (0)")
    r = p.add_argument_group("run")
    r.add_argument("--batch", type=int, default=2, help="sequences (2)")
    r.add_argument("--samples", type=int, default=2, help="perturbed states per sample (2)")
    r.add_argument("--seed", type=int, default=0, help="seed of model, tokens and probes (0)")
    r.add_argument("--out", default="runs", help="output directory (default: runs/)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..circuits import PRESETS, preset
    from ..contraction import Verdict, certify
    from ..hardware import HardwareConfig
    from ..model import EquilibriumTransformer, ModelConfig

    try:
        cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads,
                          context=args.context, c=args.c, norm_eps=args.norm_eps,
                          lipschitz_target=args.lipschitz_target,
                          dtype=torch.float64 if args.float64 else torch.float32)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"analogeq certify: bad model option: {exc}") from None
    hw = None
    device = args.device.strip().lower()
    if device != "none":
        if device not in PRESETS:
            raise SystemExit(f"analogeq certify: --device must be none or one of "
                             f"{sorted(PRESETS)}, got {args.device!r}")
        try:
            dev = dataclasses.replace(preset(device), stuck_at_max=args.stuck_rate)
            hw = HardwareConfig(device=dev, tau_spread=args.tau_spread, seed=args.seed)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"analogeq certify: bad hardware option: {exc}") from None
    elif args.stuck_rate or args.tau_spread:
        raise SystemExit("analogeq certify: --stuck-rate and --tau-spread need --device")
    if args.batch < 1 or args.samples < 0:
        raise SystemExit("analogeq certify: --batch must be >= 1 and --samples >= 0")
    from ._checkpoint import load_for_cli, uses_checkpoint

    if uses_checkpoint(args):
        model, tokens, text = load_for_cli(args, hw)
        cfg = model.config
        print(text)
    else:
        model = EquilibriumTransformer(cfg, hw, seed=args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        tokens = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
    cert = certify(model, tokens, samples=args.samples, seed=args.seed)
    print(f"model: vocab {cfg.vocab_size}, d_model {cfg.d_model}, heads {cfg.n_heads}, context "
          f"{cfg.context}, c {cfg.c:g}, norm_eps {cfg.norm_eps:g}, lipschitz_target "
          f"{cfg.lipschitz_target}, {cfg.dtype}; hardware: "
          f"{'none' if hw is None else f'{device}, stuck rate {args.stuck_rate:g}'}")
    print(cert.text())
    out = Path(args.out) / "certify"
    out.mkdir(parents=True, exist_ok=True)
    data = {"model": cfg.to_dict(), "hardware": None if hw is None else hw.to_dict(),
            "certificate": cert.to_dict()}
    (out / "certificate.json").write_text(json.dumps(data, indent=2, default=str))
    print(f"wrote {out / 'certificate.json'}")
    return 3 if cert.verdict is Verdict.VIOLATED else 0
