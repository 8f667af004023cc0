"""`analogeq train`: train the equilibrium transformer on a bundled task (see analogeq.train)."""

from __future__ import annotations

import argparse
import json
from typing import Any

NAME = "train"

_EPILOG = """examples:
  analogeq train --task digits --steps 3000 --name digits-asymep
  analogeq train --task digits --rule bptt --steps 3000 --name digits-bptt
  analogeq train --task digits --device pcm --noise 1 --name digits-pcm     # noise injection
  analogeq train --name digits-asymep --resume                              # continue a run
  # the measured digits recipe (AsymEP, contraction by measurement):
  analogeq train --task digits --steps 1200 --dtype float64 --beta 0.01 --free-tol 1e-6
      --nudged-method anderson --nudged-max-steps 100 --free-fallback-steps 300
      --spectral-target 0.9 --name digits-asymep-r5b
runs write under runs/<name> (or --out): checkpoint.pt, best.pt, log.jsonl, training.png."""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..circuits import PRESETS
    from ..train import NUDGED_METHODS, OPTIMIZERS, RULES, SCHEDULES, UPDATES, TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        NAME, help="train on digits / text / synthetic with AsymEP, holomorphic EP, adjoint, BPTT",
        description="Train an equilibrium transformer; resumable, with hardware-noise injection, "
                    "a divergence guard and a residual gate.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", default=d.task, choices=("digits", "text", "synthetic"),
                   help=f"dataset (default {d.task})")
    p.add_argument("--rule", default=d.rule, choices=RULES,
                   help=f"learning rule (default {d.rule})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps ({d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--name", default=None, help="run name: the run directory is runs/<name> "
                   "(default <task>-<rule>[-<device>])")
    p.add_argument("--out", default=None, help="run directory (overrides runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from <run dir>/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over even if the run directory has a checkpoint")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this much training wall time (default: no limit)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (fine-tuning; same model config)")
    p.add_argument("--augment", action="store_true",
                   help="augment training batches (digits: random shifts by -1..1 pixels)")
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=d.d_model)
    g.add_argument("--heads", type=int, default=d.n_heads)
    g.add_argument("--ffn-mult", type=int, default=d.ffn_mult)
    g.add_argument("--init-scale", type=float, default=d.init_scale)
    g.add_argument("--embed-scale", type=float, default=d.embed_scale)
    g.add_argument("--attn-gain", type=float, default=d.attn_gain,
                   help=f"attention logit gain ({d.attn_gain:g})")
    g.add_argument("--norm-eps", type=float, default=d.norm_eps,
                   help=f"LayerNorm / RMSNorm epsilon ({d.norm_eps:g}; ~1 with --lipschitz-target)")
    g.add_argument("--dtype", default=d.dtype, choices=("float32", "float64"),
                   help=f"parameter and state dtype ({d.dtype}; float64 allows a small --beta)")
    g.add_argument("--spectral-target", type=float, default=d.spectral_target,
                   help="contraction by measurement: keep the power-iteration estimate of "
                        "rho(dN/dz) at the free state <= this times 1 + c (in (0, 1); default off)")
    g.add_argument("--spectral-every", type=int, default=d.spectral_every)
    g.add_argument("--spectral-min-scale", type=float, default=d.spectral_min_scale,
                   help="smallest factor of one spectral projection (0: the full correction)")
    g.add_argument("--spectral-quantile", type=float, default=d.spectral_quantile,
                   help="hold this quantile of the per-sample rho at the target (1: the "
                        "largest; e.g. 0.9 ignores the hardest tenth of the batch)")
    g.add_argument("--lipschitz-target", type=float, default=d.lipschitz_target,
                   help="contraction by construction: keep the provable Lip(N) bound <= this "
                        "(< 1 + c; default off)")
    g = p.add_argument_group("rule and optimiser")
    g.add_argument("--beta", type=float, default=d.beta,
                   help=f"AsymEP nudge / holomorphic radius ({d.beta})")
    g.add_argument("--bptt-steps", type=int, default=d.bptt_steps)
    g.add_argument("--bptt-eps", type=float, default=d.bptt_eps)
    g.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--warmup", type=int, default=d.warmup_steps, help="warm-up steps")
    g.add_argument("--schedule", default=d.schedule, choices=SCHEDULES)
    g.add_argument("--clip", type=float, default=d.clip, help="global gradient-norm clip")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--updates", default=d.updates, choices=UPDATES,
                   help="optimiser on the weights, or per-device pulses (needs --device)")
    g.add_argument("--free-max-steps", type=int, default=d.free_max_steps)
    g.add_argument("--free-fallback-steps", type=int, default=d.free_fallback_steps,
                   help="continue samples Anderson left unsettled with IMEX for this many steps "
                        "(0 = off)")
    g.add_argument("--free-tol", type=float, default=d.free_tol,
                   help="free-phase force-residual tolerance (default 1.2e-5 in float32)")
    g.add_argument("--nudged-rtol", type=float, default=d.nudged_rtol,
                   help=f"nudged tolerance relative to the nudge ({d.nudged_rtol:g})")
    g.add_argument("--nudged-method", default=d.nudged_method, choices=NUDGED_METHODS,
                   help=f"integrator of the nudged phases ({d.nudged_method})")
    g.add_argument("--nudged-max-steps", type=int, default=d.nudged_max_steps,
                   help="nudged-phase iterations (default: the method's)")
    g.add_argument("--gate-residual", type=float, default=d.gate_residual,
                   help=f"skip an estimate whose free residual exceeds this ({d.gate_residual:g})")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    g = p.add_argument_group("hardware-noise injection")
    g.add_argument("--device", default=None, choices=sorted(PRESETS),
                   help="train on this device's noise (default: digital training)")
    g.add_argument("--noise", type=float, default=d.noise,
                   help="programming and read noise strength, x the preset (default 1)")
    g.add_argument("--read-noise", default=d.read_noise, choices=("quenched", "white", "off"))
    g.add_argument("--drift-aware", action="store_true",
                   help="age the chip to a random drift time every step")
    g.add_argument("--drift-max", type=float, default=d.drift_max, help="seconds")
    g.add_argument("--no-drift-compensation", action="store_true",
                   help="with --drift-aware: train on the aged chip without global drift "
                        "compensation (for a deployment that does not compensate)")
    g = p.add_argument_group("regularisers and guard")
    g.add_argument("--jacobian-penalty", type=float, default=d.jacobian_penalty,
                   help="initial Jacobian-penalty weight (0 = off)")
    g.add_argument("--frozen-penalty", action="store_true",
                   help="keep the Jacobian-penalty weight fixed (no adaptive controller)")
    g.add_argument("--jacobian-floor", type=float, default=d.jacobian_floor,
                   help="controller floor (default min(0.1, --jacobian-penalty))")
    g.add_argument("--jacobian-target", type=float, default=d.jacobian_target,
                   help=f"controller's target free residual ({d.jacobian_target:g})")
    g.add_argument("--controller-steps", type=int, default=d.controller_steps,
                   help="controller observes the free residual after this many iterations "
                        "(default: the final residual)")
    g.add_argument("--residual-penalty", type=float, default=d.residual_penalty)
    g.add_argument("--guard-residual", type=float, default=d.guard_residual,
                   help="free residual that triggers a rollback (0.3)")
    g = p.add_argument_group("logging")
    g.add_argument("--eval-every", type=int, default=d.eval_every)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    from ..train import TrainConfig

    name = args.name or "-".join(x for x in (args.task, args.rule, args.device) if x)
    return TrainConfig(
        task=args.task, rule=args.rule, steps=args.steps, batch_size=args.batch_size, name=name,
        out=args.out, resume=args.resume, overwrite=args.overwrite, seed=args.seed,
        augment=args.augment, weight_decay=args.weight_decay, init_from=args.init_from,
        attn_gain=args.attn_gain, time_budget=args.time_budget,
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
        free_max_steps=args.free_max_steps, device=args.device, noise=args.noise,
        read_noise=args.read_noise, drift_aware=args.drift_aware, drift_max=args.drift_max,
        drift_compensation=not args.no_drift_compensation,
        jacobian_penalty=args.jacobian_penalty, adaptive=not args.frozen_penalty,
        jacobian_floor=args.jacobian_floor, jacobian_target=args.jacobian_target,
        controller_steps=args.controller_steps,
        residual_penalty=args.residual_penalty, guard_residual=args.guard_residual,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress, plots=not args.no_plots,
    )


def run(args: argparse.Namespace) -> int:
    from ..train import Trainer

    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"analogeq train: {exc}") from None
    try:
        result = Trainer(config).run()
    except FileExistsError as exc:
        raise SystemExit(f"analogeq train: {exc}") from None
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0 if result.status in ("completed", "time budget") else 1
