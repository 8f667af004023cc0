"""`analogeq evaluate`: program trained checkpoints onto a device and read them as the chip ages.

Every checkpoint is read and checked before the first chip is programmed; results go to
`<--out>/<--name>/` (default `runs/evaluate/`): evaluate.json and accuracy_vs_time.png."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._checkpoint import load_model_file
from ._options import (
    CLIError,
    HelpFormatter,
    add_device,
    add_output,
    positive_int,
    prepare_directory,
    run_directory,
)

NAME = "evaluate"

_EPILOG = """examples:
  analogeq evaluate                                   # the shipped digits model on PCM
  analogeq evaluate runs/digits-asymep-pcm/best.pt runs/digits-asymep/best.pt --seeds 5
  analogeq evaluate runs/digits-asymep/best.pt --compensation --times 1s,1d,1y
writes <out>/<name>/evaluate.json and accuracy_vs_time.png (default: runs/evaluate/)."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..tasks import TASKS

    p = subparsers.add_parser(
        NAME, help="deployment accuracy vs drift time on PCM (or another device)",
        description="Program each checkpoint onto fresh chips (one per programming seed) and "
                    "evaluate its test accuracy at increasing times after programming; mean +- "
                    "std over seeds, optionally with global drift compensation. The digital "
                    "accuracy of each checkpoint is printed beside.",
        epilog=_EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoints", nargs="*",
                   help="checkpoint files (default: the shipped digits model)")
    p.add_argument("--labels", default=None,
                   help="comma-separated names, one per checkpoint (default: the run names)")
    add_device(p, default="pcm", digital=False,
               why_not="evaluate ages a chip; the digital accuracy is printed beside every "
                       "device's", help="device preset the checkpoints are programmed onto")
    p.add_argument("--seeds", type=positive_int, default=3, help="programming seeds 0..n-1")
    p.add_argument("--times", default="1s,1h,1d,1mo,1y",
                   help="read times after programming (units s, m, h, d, mo, y)")
    p.add_argument("--compensation", action="store_true", help="global drift compensation")
    p.add_argument("--both", action="store_true",
                   help="evaluate with and without drift compensation")
    p.add_argument("--task", default=None, choices=sorted(TASKS),
                   help="task (default: the checkpoint's own)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="test samples (default: all)")
    add_output(p, default_name="evaluate", plot=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..deploy import evaluate_deployment, parse_times, plot_deployment, write_results
    from ..train import DEFAULT_CHECKPOINT

    try:
        times = parse_times(args.times)
    except ValueError as exc:
        raise CLIError(f"--times: {exc}") from None
    paths: list[Path | None] = [Path(c) for c in args.checkpoints] or [None]
    labels = args.labels.split(",") if args.labels else [None] * len(paths)
    if len(labels) != len(paths):
        raise CLIError("--labels needs one name per checkpoint")
    for path in paths:  # every file is checked before the first chip is programmed
        _, info = load_model_file(path or DEFAULT_CHECKPOINT, "checkpoint")
        if args.task is None and info.get("task") is None:
            raise CLIError(f"checkpoint {path}: it records no task; pass --task")
    out = prepare_directory(run_directory(args, "evaluate"))
    modes = [False, True] if args.both else [args.compensation]
    results = []
    for path, label in zip(paths, labels, strict=True):
        for comp in modes:
            try:
                res = evaluate_deployment(path, args.task, device=args.device, times=times,
                                          seeds=tuple(range(args.seeds)), compensation=comp,
                                          limit=args.limit, name=label)
            except (FileNotFoundError, ValueError) as exc:
                raise CLIError(exc) from None
            print(res.table())
            print()
            results.append(res)
    write_results(results, out / "evaluate.json")
    png = plot_deployment(results, out / "accuracy_vs_time.png",
                          title=f"test accuracy vs time after programming ({args.device})")
    print(f"wrote {out / 'evaluate.json'} and {png}")
    return 0
