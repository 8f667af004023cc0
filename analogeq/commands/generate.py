"""`analogeq generate`: sample text from a checkpoint trained on the `text` task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint written by `analogeq train --task text`")
    p.add_argument("--prompt", default="The ", help="text to continue ('The ')")
    p.add_argument("--chars", type=int, default=300, help="characters to generate (300)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature (0.8; 0 = greedy)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    p.add_argument("--tol", type=float, default=1e-5, help="settle tolerance (1e-5)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the sample as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..textgen import generate
    from ..train import load_checkpoint

    path = Path(args.checkpoint)
    if not path.is_file():
        raise SystemExit(f"analogeq generate: checkpoint {args.checkpoint!r}: no such file")
    try:
        model = load_checkpoint(path)
        sample = generate(model, args.prompt, args.chars, temperature=args.temperature,
                          seed=args.seed, tol=args.tol)
    except (TypeError, ValueError, FloatingPointError) as exc:
        raise SystemExit(f"analogeq generate: {exc}") from None
    print(sample.prompt + sample.text)
    print(f"\n[{len(sample.text)} characters, {sample.nfe} force evaluations, "
          f"{sample.unsettled} drawn from unsettled states]")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**sample.to_dict(), "checkpoint": str(path),
                                   "temperature": args.temperature, "seed": args.seed},
                                  indent=2) + "\n")
    return 0
