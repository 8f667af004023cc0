"""`analogeq evaluate`: program trained checkpoints onto a device and read them as the chip ages."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate"

_EPILOG = """examples:
  analogeq evaluate                                   # the shipped digits model on PCM
  analogeq evaluate runs/digits-asymep-pcm/best.pt runs/digits-asymep/best.pt --seeds 5
  analogeq evaluate runs/digits-asymep/best.pt --compensation --times 1s,1d,1y
writes <out>/evaluate.json and <out>/accuracy_vs_time.png (default out: runs/evaluate)."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..circuits import PRESETS

    p = subparsers.add_parser(
        NAME, help="deployment accuracy vs drift time on PCM (or another device)",
        description="Program each checkpoint onto fresh chips (one per programming seed) and "
                    "evaluate its test accuracy at increasing times after programming; mean +- "
                    "std over seeds, optionally with global drift compensation.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (default: the shipped model)")
    p.add_argument("--labels", default=None, help="comma-separated names, one per checkpoint")
    p.add_argument("--device", default="pcm", choices=sorted(PRESETS), help="device (pcm)")
    p.add_argument("--seeds", type=int, default=3, help="programming seeds 0..n-1 (3)")
    p.add_argument("--times", default="1s,1h,1d,1mo,1y",
                   help="read times after programming (units s, m, h, d, mo, y)")
    p.add_argument("--compensation", action="store_true", help="global drift compensation")
    p.add_argument("--both", action="store_true",
                   help="evaluate with and without drift compensation")
    p.add_argument("--task", default=None, help="task (default: the checkpoint's own)")
    p.add_argument("--limit", type=int, default=None, help="test samples (default: all)")
    p.add_argument("--out", default="runs/evaluate", help="output directory (runs/evaluate)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..deploy import evaluate_deployment, parse_times, plot_deployment, write_results

    try:
        times = parse_times(args.times)
    except ValueError as exc:
        raise SystemExit(f"analogeq evaluate: {exc}") from None
    if args.seeds < 1:
        raise SystemExit("analogeq evaluate: --seeds must be >= 1")
    paths: list[Path | None] = [Path(c) for c in args.checkpoints] or [None]
    labels = args.labels.split(",") if args.labels else [None] * len(paths)
    if len(labels) != len(paths):
        raise SystemExit("analogeq evaluate: --labels needs one name per checkpoint")
    modes = [False, True] if args.both else [args.compensation]
    results = []
    for path, label in zip(paths, labels, strict=True):
        for comp in modes:
            try:
                res = evaluate_deployment(path, args.task, device=args.device, times=times,
                                          seeds=tuple(range(args.seeds)), compensation=comp,
                                          limit=args.limit, name=label)
            except (FileNotFoundError, ValueError) as exc:
                raise SystemExit(f"analogeq evaluate: {exc}") from None
            print(res.table())
            print()
            results.append(res)
    out = Path(args.out)
    write_results(results, out / "evaluate.json")
    png = plot_deployment(results, out / "accuracy_vs_time.png",
                          title=f"test accuracy vs time after programming ({args.device})")
    print(f"wrote {out / 'evaluate.json'} and {png}")
    return 0
