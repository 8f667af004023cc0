"""Shared pieces of the `analogeq fidelity` and `analogeq probe` subcommands: model options, the
default model, built-in systems, and method parsing."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from . import systems
from .integrators import METHODS
from .integrators.settle import make_method
from .scenarios import RealSaddle

EPS_METHODS = ("euler", "imex", "implicit", "euler-maruyama")


def add_model_options(p: argparse.ArgumentParser, alternative: str,
                      dtype_aliases: tuple[str, ...] = ("--float64",)) -> None:
    """`--checkpoint`, the precision and the random model's shape and initialisation (used with
    `--checkpoint none` when `alternative`, the command's other input such as --system, is not
    given)."""
    from .commands._checkpoint import add_checkpoint_option
    from .commands._options import add_dtype, nonnegative, positive, positive_int

    add_checkpoint_option(p)
    add_dtype(p, aliases=dtype_aliases)
    m = p.add_argument_group(f"model (with --checkpoint none, when no {alternative} is given)")
    m.add_argument("--vocab", type=positive_int, default=64, help="vocabulary size")
    m.add_argument("--d-model", type=positive_int, default=64, help="channels C")
    m.add_argument("--heads", type=positive_int, default=4, help="attention heads")
    m.add_argument("--context", type=positive_int, default=32, help="tokens per sequence T")
    m.add_argument("--c", type=nonnegative, default=1.0, help="extra leak c: decay rate 1 + c")
    m.add_argument("--init-scale", type=positive, default=None,
                   help="gain of attn.o and ffn.down (default: ModelConfig's, 0.5)")
    m.add_argument("--attn-gain", type=positive, default=1.0, help="attention logit gain")


def build_model(args: argparse.Namespace) -> tuple[Any, torch.Tensor]:
    """The digital model of `--checkpoint` and its task's test inputs, or with `--checkpoint
    none` the model from the options and seeded random tokens (batch, context)."""
    from .commands._checkpoint import load_for_cli, uses_checkpoint
    from .commands._options import option_error
    from .model import EquilibriumTransformer, ModelConfig

    if uses_checkpoint(args):
        model, inputs, text = load_for_cli(args, dtype=args.dtype)
        print(text)
        return model, inputs

    fields: dict[str, Any] = dict(vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads,
                                  context=args.context, c=args.c, attn_gain=args.attn_gain,
                                  dtype=args.dtype or "float32")
    if args.init_scale is not None:
        fields["init_scale"] = args.init_scale
    try:
        config = ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise option_error("model", exc) from None
    model = EquilibriumTransformer(config, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, args.vocab, (args.batch, args.context), generator=gen)
    return model, tokens


SYSTEM_NAMES = ("rotor", "hopf", "contractive", "stiff", "saddle")


def build_system(name: str, batch: int, seed: int) -> tuple[Any, torch.Tensor]:
    """A built-in system and its start state (`analogeq.systems`, plus the saddle of
    `analogeq.scenarios`). rotor: a = 1, b = 5 (eps_crit 1/13 < 0.1)."""
    if name == "rotor":
        f: Any = systems.SaturatingRotor(a=1.0, b=5.0, batch=batch)
    elif name == "hopf":
        f = systems.HopfOscillator(batch=batch)
    elif name == "contractive":
        f = systems.ContractiveTanh(batch=batch, seed=seed)
    elif name == "stiff":
        f = systems.StiffLinear(batch=batch, seed=seed)
    elif name == "saddle":
        f = RealSaddle(batch=batch)
    else:
        from .commands._options import CLIError

        raise CLIError(f"unknown system {name!r}; choose one of {SYSTEM_NAMES}")
    return f, f.initial_state()


def parse_methods(text: str, eps: float | None, sigma: float, seed: int) -> list[Any]:
    """Comma-separated method names -> Integrator instances, eps applied where it exists."""
    from .commands._options import CLIError

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise CLIError(f"--methods: unknown method(s) {unknown}; available: {sorted(METHODS)}")
    out = []
    for name in names:
        opts: dict[str, Any] = {}
        if eps is not None and name in EPS_METHODS:
            opts["eps"] = eps
        if name == "euler-maruyama":
            opts.update(sigma=sigma, seed=seed)
        try:
            inst, _ = make_method(name, opts)
        except (TypeError, ValueError) as exc:
            raise CLIError(f"bad option for {name}: {exc}") from None
        out.append(inst)
    return out
