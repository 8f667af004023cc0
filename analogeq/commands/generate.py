"""`analogeq generate`: sample text from a checkpoint trained on the `text` task.

Prints the prompt and the sample; `--json PATH` also writes them (atomically). On a terminal a
progress bar counts the characters (each one is a settle of the block); `--quiet` hides it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._checkpoint import load_model_file
from ._options import (
    DIGITAL,
    CLIError,
    HelpFormatter,
    add_device,
    add_quiet,
    nonnegative,
    nonnegative_int,
    positive,
    positive_int,
    prepare_directory,
    progress_enabled,
)

NAME = "generate"

_EPILOG = """examples:
  analogeq generate runs/text-asymep/best.pt
  analogeq generate runs/text-bptt/best.pt --prompt "The import statement" --chars 400 --seed 3
  analogeq generate runs/text-asymep/best.pt --temperature 0 --json runs/sample.json"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help="sample text from a character language model (text task)",
        description="Generate characters one at a time: settle the block on the last `context` "
                    "characters and draw the next one from the readout at the last position.",
        epilog=_EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint written by `analogeq train --task text`")
    p.add_argument("--prompt", default="The ", help="text to continue")
    p.add_argument("--chars", type=positive_int, default=300, help="characters to generate")
    p.add_argument("--temperature", type=nonnegative, default=0.8,
                   help="softmax temperature (0 = greedy)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="sampling seed (and the chip's with --device)")
    p.add_argument("--tol", type=positive, default=1e-5, help="settle tolerance")
    add_device(p, default=DIGITAL, help="run the model digitally, or programmed onto crossbars "
               "of this device preset")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the sample as JSON (default: print only)")
    add_quiet(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..hardware import HardwareConfig
    from ..textgen import generate

    if not args.prompt:
        raise CLIError("--prompt must not be empty")
    out = Path(args.json) if args.json else None
    if out is not None:
        if out.exists() and not out.is_file():
            raise CLIError(f"--json {out}: exists and is not a regular file")
        prepare_directory(out.parent, "--json")
    hardware = None if args.device == DIGITAL else HardwareConfig(device=args.device,
                                                                    seed=args.seed)
    model, _ = load_model_file(Path(args.checkpoint), "checkpoint", hardware)
    try:
        sample = generate(model, args.prompt, args.chars, temperature=args.temperature,
                          seed=args.seed, tol=args.tol, progress=progress_enabled(args))
    except (TypeError, ValueError, FloatingPointError) as exc:
        raise CLIError(f"{args.checkpoint}: {exc}") from None
    print(sample.prompt + sample.text)
    print(f"\n[{len(sample.text)} characters, {sample.nfe} force evaluations, "
          f"{sample.unsettled} drawn from unsettled states]")
    if out is not None:
        from .._io import write_json

        write_json(out, {**sample.to_dict(), "checkpoint": str(args.checkpoint),
                         "temperature": args.temperature, "seed": args.seed,
                         "device": args.device})
    return 0
