"""`analogeq train`: train the equilibrium transformer on a bundled task (see analogeq.train).

Every option has a help text and shows its default. The run directory is `<--out>/<--name>`
(default `runs/<task>-<rule>[-<device>]`); the checkpoint named by `--init-from`, or the run's own
with `--resume`, is checked before anything is written. After the first steps the command prints
how long the remaining steps should take. Errors (an existing run, a config that differs from the
checkpoint's, a corrupt checkpoint, an unwritable directory or a full disk) end with one line in
the CLI's words (flags, not Python names)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ._checkpoint import load_model_file
from ._options import (
    DIGITAL,
    DTYPES,
    CLIError,
    HelpFormatter,
    add_device,
    add_output,
    add_quiet,
    nonnegative,
    nonnegative_int,
    note,
    positive,
    positive_int,
    prepare_directory,
    progress_enabled,
    run_directory,
)

NAME = "train"

RECIPE = """\
analogeq train --task digits --steps 1200 --d-model 48 --dtype float64 --beta 0.01 \\
    --free-tol 1e-6 --nudged-method anderson --nudged-max-steps 100 --free-fallback-steps 300 \\
    --spectral-target 0.9 --spectral-min-scale 0.97 --spectral-quantile 0.9 --name digits-asymep"""
"""The measured AsymEP digits recipe, exactly as README.md gives it (a test compares them)."""

_EPILOG = f"""examples:
  analogeq train --task digits --steps 3000 --name digits-asymep
  analogeq train --task digits --rule bptt --steps 3000 --name digits-bptt
  analogeq train --task digits --device pcm --noise 1 --name digits-pcm     # noise injection
  analogeq train --name digits-asymep --resume                              # continue a run

the measured digits recipe (AsymEP, contraction by measurement; README.md, "Training"):

{RECIPE}

runs write under <out>/<name> (default runs/<task>-<rule>[-<device>]): checkpoint.pt, best.pt,
log.jsonl, training.png."""

# TrainConfig fields whose flag is not --<field with dashes>
_FLAG_OF_FIELD = {"n_heads": "--heads", "warmup_steps": "--warmup",
                  "adaptive": "--frozen-penalty", "drift_compensation": "--no-drift-compensation",
                  "progress": "--quiet", "plots": "--no-plot", "device": "--device"}
# estimate the run's duration after this many steps
_ESTIMATE_AFTER = 3


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..circuits import PRESETS
    from ..tasks import TASKS
    from ..train import NUDGED_METHODS, OPTIMIZERS, RULES, SCHEDULES, UPDATES, TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        NAME, help="train on digits / text / synthetic with AsymEP, holomorphic EP, adjoint, BPTT",
        description="Train an equilibrium transformer; resumable, with hardware-noise injection, "
                    "a divergence guard and a residual gate.",
        epilog=_EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("--task", default=d.task, choices=sorted(TASKS),
                   help="dataset the model is trained on")
    p.add_argument("--rule", default=d.rule, choices=RULES, help="learning rule")
    p.add_argument("--steps", type=nonnegative_int, default=d.steps,
                   help="training steps (the run prints its expected duration after the "
                        "first steps)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="samples per training step")
    add_output(p, default_name="<task>-<rule>[-<device>]")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from <out>/<name>/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over even if the run directory has a checkpoint")
    p.add_argument("--seed", type=nonnegative_int, default=d.seed,
                   help="seed of the initial weights, the data order and the chip")
    p.add_argument("--time-budget", type=positive, default=None, metavar="SECONDS",
                   help="stop after this much training wall time (default: no limit)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (fine-tuning; same model config; "
                        "default: a fresh initialisation)")
    p.add_argument("--augment", action="store_true",
                   help="augment training batches (digits: random shifts by -1..1 pixels)")
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=positive_int, default=d.d_model, help="channels C")
    g.add_argument("--heads", type=positive_int, default=d.n_heads, help="attention heads")
    g.add_argument("--ffn-mult", type=positive_int, default=d.ffn_mult,
                   help="FFN width as a multiple of C")
    g.add_argument("--init-scale", type=positive, default=d.init_scale,
                   help="initial gain of attn.o and ffn.down (small: the relaxation contracts)")
    g.add_argument("--embed-scale", type=positive, default=d.embed_scale,
                   help="initial gain of the input embedding")
    g.add_argument("--attn-gain", type=positive, default=d.attn_gain,
                   help="attention logit gain")
    g.add_argument("--norm-eps", type=positive, default=d.norm_eps,
                   help="LayerNorm / RMSNorm epsilon (~1 with --lipschitz-target)")
    g.add_argument("--dtype", default=d.dtype, choices=DTYPES,
                   help="parameter and state dtype (float64 allows a small --beta)")
    g.add_argument("--spectral-target", type=positive, default=d.spectral_target,
                   help="contraction by measurement: keep the power-iteration estimate of "
                        "rho(dN/dz) at the free state <= this times 1 + c (in (0, 1); "
                        "default: off)")
    g.add_argument("--spectral-every", type=positive_int, default=d.spectral_every,
                   help="steps between spectral projections")
    g.add_argument("--spectral-min-scale", type=nonnegative, default=d.spectral_min_scale,
                   help="smallest factor of one spectral projection (0: the full correction)")
    g.add_argument("--spectral-quantile", type=positive, default=d.spectral_quantile,
                   help="hold this quantile of the per-sample rho at the target (1: the "
                        "largest; e.g. 0.9 ignores the hardest tenth of the batch)")
    g.add_argument("--lipschitz-target", type=positive, default=d.lipschitz_target,
                   help="contraction by construction: keep the provable Lip(N) bound <= this "
                        "(< 1 + c; default: off)")
    g = p.add_argument_group("rule and optimiser")
    g.add_argument("--beta", type=positive, default=d.beta,
                   help="AsymEP nudge / holomorphic radius, in units of the batch-mean loss "
                        "(float32 needs ~40, float64 allows 0.01)")
    g.add_argument("--bptt-steps", type=positive_int, default=d.bptt_steps,
                   help="BPTT: explicit Euler steps of the unroll")
    g.add_argument("--bptt-eps", type=positive, default=d.bptt_eps,
                   help="BPTT: Euler step of the unroll")
    g.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimiser")
    g.add_argument("--lr", type=positive, default=d.lr, help="learning rate (peak)")
    g.add_argument("--warmup", type=nonnegative_int, default=d.warmup_steps,
                   help="linear warm-up steps")
    g.add_argument("--schedule", default=d.schedule, choices=SCHEDULES,
                   help="learning-rate schedule after warm-up (cosine decays to "
                        "--min-lr-ratio x --lr)")
    g.add_argument("--min-lr-ratio", type=nonnegative, default=d.min_lr_ratio,
                   help="final learning rate of the cosine schedule, as a fraction of --lr")
    g.add_argument("--clip", type=nonnegative, default=d.clip,
                   help="global gradient-norm clip (0 = no clipping)")
    g.add_argument("--weight-decay", type=nonnegative, default=d.weight_decay,
                   help="weight decay of the optimiser")
    g.add_argument("--updates", default=d.updates, choices=UPDATES,
                   help="optimiser on the weights, or per-device pulses (needs --device)")
    g.add_argument("--free-max-steps", type=positive_int, default=d.free_max_steps,
                   help="free-phase Anderson iterations")
    g.add_argument("--free-fallback-steps", type=nonnegative_int, default=d.free_fallback_steps,
                   help="continue samples Anderson left unsettled with IMEX for this many steps "
                        "(0 = off)")
    g.add_argument("--free-tol", type=positive, default=d.free_tol,
                   help="free-phase force-residual tolerance (default: 1.2e-5 in float32, "
                        "1e-10 floored for the dtype)")
    g.add_argument("--nudged-rtol", type=positive, default=d.nudged_rtol,
                   help="nudged tolerance relative to the nudge")
    g.add_argument("--nudged-method", default=d.nudged_method, choices=NUDGED_METHODS,
                   help="integrator of the nudged phases")
    g.add_argument("--nudged-max-steps", type=positive_int, default=d.nudged_max_steps,
                   help="nudged-phase iterations (default: the method's own)")
    g.add_argument("--gate-residual", type=positive, default=d.gate_residual,
                   help="drop samples whose free residual exceeds this from the estimate")
    g = p.add_argument_group("hardware-noise injection")
    add_device(g, default=DIGITAL, help="train on this device's noise ('digital': no noise "
               f"injection; presets: {', '.join(sorted(PRESETS))})")
    g.add_argument("--noise", type=nonnegative, default=d.noise,
                   help="programming and read noise strength, x the preset")
    g.add_argument("--read-noise", default=d.read_noise, choices=("quenched", "white", "off"),
                   help="read noise of the training chip (quenched: one draw per step)")
    g.add_argument("--drift-aware", action="store_true",
                   help="age the chip to a random drift time every step")
    g.add_argument("--drift-max", type=positive, default=d.drift_max,
                   help="longest drift time of --drift-aware, s")
    g.add_argument("--no-drift-compensation", action="store_true",
                   help="with --drift-aware: train on the aged chip without global drift "
                        "compensation (for a deployment that does not compensate)")
    g = p.add_argument_group("regularisers and guard")
    g.add_argument("--jacobian-penalty", type=nonnegative, default=d.jacobian_penalty,
                   help="initial Jacobian-penalty weight (0 = off)")
    g.add_argument("--frozen-penalty", action="store_true",
                   help="keep the Jacobian-penalty weight fixed (no adaptive controller)")
    g.add_argument("--jacobian-floor", type=positive, default=d.jacobian_floor,
                   help="controller floor (default: min(0.1, --jacobian-penalty))")
    g.add_argument("--jacobian-target", type=positive, default=d.jacobian_target,
                   help="controller's target free residual")
    g.add_argument("--controller-steps", type=positive_int, default=d.controller_steps,
                   help="controller observes the free residual after this many iterations "
                        "(default: the final residual)")
    g.add_argument("--residual-penalty", type=nonnegative, default=d.residual_penalty,
                   help="residual penalty's gradient as a fraction of the task gradient (0 = off)")
    g.add_argument("--guard-residual", type=positive, default=d.guard_residual,
                   help="free residual that rolls the run back to its last checkpoint")
    g = p.add_argument_group("logging")
    g.add_argument("--eval-every", type=positive_int, default=d.eval_every,
                   help="steps between test-set evaluations")
    g.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every,
                   help="steps between checkpoints")
    add_quiet(g, progress_alias="--no-progress")
    p.set_defaults(func=run)
    return p


def _default_name(args: argparse.Namespace) -> str:
    device = None if args.device == DIGITAL else args.device
    return "-".join(x for x in (args.task, args.rule, device) if x)


def config_from_args(args: argparse.Namespace, run_dir: Path) -> Any:
    """The `TrainConfig` the options describe, run directory `run_dir`."""
    from ..train import TrainConfig

    return TrainConfig(
        task=args.task, rule=args.rule, steps=args.steps, batch_size=args.batch_size,
        name=run_dir.name, out=str(run_dir), resume=args.resume, overwrite=args.overwrite,
        seed=args.seed, augment=args.augment, weight_decay=args.weight_decay,
        init_from=args.init_from, attn_gain=args.attn_gain, time_budget=args.time_budget,
        d_model=args.d_model, n_heads=args.heads, ffn_mult=args.ffn_mult,
        init_scale=args.init_scale, embed_scale=args.embed_scale, norm_eps=args.norm_eps,
        dtype=args.dtype, spectral_target=args.spectral_target,
        spectral_every=args.spectral_every, spectral_min_scale=args.spectral_min_scale,
        spectral_quantile=args.spectral_quantile,
        lipschitz_target=args.lipschitz_target, beta=args.beta, free_tol=args.free_tol,
        free_fallback_steps=args.free_fallback_steps,
        nudged_rtol=args.nudged_rtol, nudged_method=args.nudged_method,
        nudged_max_steps=args.nudged_max_steps,
        gate_residual=args.gate_residual, min_lr_ratio=args.min_lr_ratio,
        bptt_steps=args.bptt_steps, bptt_eps=args.bptt_eps, optimizer=args.optimizer,
        lr=args.lr, warmup_steps=args.warmup, schedule=args.schedule,
        clip=args.clip if args.clip and args.clip > 0 else None, updates=args.updates,
        free_max_steps=args.free_max_steps,
        device=None if args.device == DIGITAL else args.device, noise=args.noise,
        read_noise=args.read_noise, drift_aware=args.drift_aware, drift_max=args.drift_max,
        drift_compensation=not args.no_drift_compensation,
        jacobian_penalty=args.jacobian_penalty, adaptive=not args.frozen_penalty,
        jacobian_floor=args.jacobian_floor, jacobian_target=args.jacobian_target,
        controller_steps=args.controller_steps,
        residual_penalty=args.residual_penalty, guard_residual=args.guard_residual,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        progress=progress_enabled(args), plots=not args.no_plot,
    )


def flag_of(field: str) -> str:
    """The option that sets TrainConfig `field` (or a note that no flag does)."""
    from ..train import TrainConfig

    flag = _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))
    parser = argparse.ArgumentParser(add_help=False)
    sub = parser.add_subparsers()
    known = {s for a in register(sub)._actions for s in a.option_strings}
    if flag in known:
        return flag
    default = getattr(TrainConfig(), field, None)
    return f"{field} (no flag; default {default!r})"


def in_cli_words(message: str) -> str:
    """A TrainConfig message with its leading field name replaced by the option's flag."""
    from ..train import TrainConfig

    head, _, rest = message.partition(" ")
    if head in TrainConfig.__dataclass_fields__:
        return f"{flag_of(head)} {rest}"
    return message


class _Estimate:
    """A `Trainer.run` callback: after `_ESTIMATE_AFTER` steps, one line on stderr with the mean
    step time and how long the remaining steps should take (evaluations come on top)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.walls: list[float] = []

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        if len(self.walls) >= _ESTIMATE_AFTER:
            return
        self.walls.append(float(record.get("step_wall", 0.0)))
        remaining = trainer.config.steps - trainer.step
        if len(self.walls) < _ESTIMATE_AFTER or remaining <= 0:
            return
        per_step = sum(self.walls) / len(self.walls)
        cfg = trainer.config
        evals = remaining // cfg.eval_every
        line = (f"{per_step:.2f} s per step over the first {len(self.walls)} steps: the "
                f"remaining {remaining} steps should take about "
                f"{_duration(per_step * remaining)}"
                + (f", plus {evals} evaluation(s) (every {cfg.eval_every} steps)" if evals
                   else "")
                + f"; --steps sets the length (now {cfg.steps})")
        note(line, self.args, NAME)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run(args: argparse.Namespace) -> int:
    from ..train import ConfigMismatchError, RunExistsError, Trainer

    run_dir = run_directory(args, _default_name(args))
    try:
        config = config_from_args(args, run_dir)
    except (TypeError, ValueError) as exc:
        raise CLIError(in_cli_words(str(exc))) from None
    # checked before anything is written: the weights to start from, the run directory
    if args.init_from is not None and not args.resume:
        load_model_file(Path(args.init_from), "--init-from")
    prepare_directory(run_dir)
    started = time.perf_counter()
    try:
        result = Trainer(config).run(_Estimate(args))
    except RunExistsError as exc:
        raise CLIError(f"{exc.path} exists: add --resume to continue that run, --overwrite to "
                       "start it over, or choose another --name / --out") from None
    except ConfigMismatchError as exc:
        flags = ", ".join(flag_of(f) for f in exc.fields)
        raise CLIError(f"cannot --resume {exc.path}: the run was started with other values of "
                       f"{flags}; only the length and logging options (--steps, --time-budget, "
                       "--eval-every, --checkpoint-every, --quiet, --no-plot) may change") from None
    print(json.dumps(result.to_dict(), indent=2, default=str))
    note(f"{result.status} after {time.perf_counter() - started:.0f} s; run directory {run_dir}",
         args, NAME)
    return 0 if result.status in ("completed", "time budget") else 1
