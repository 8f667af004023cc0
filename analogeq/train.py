"""Training the equilibrium transformer: rules, hardware-noise injection, guards, resumable runs.

    from analogeq.train import TrainConfig, train
    result = train(TrainConfig(task="digits", rule="asymep", steps=3000, name="digits-asymep"))
    model = load_checkpoint("runs/digits-asymep/best.pt")       # a digital EquilibriumTransformer
    model = default_model()                                      # the shipped digits checkpoint

One step (`Trainer.train_step`):
1. the batch of this step (`Task.batch(step, batch_size, seed)`, a pure function: no loader state);
2. with hardware-noise injection (`device` set): re-program every crossbar from the nominal
   weights (fresh programming errors from each crossbar's seeded stream), optionally age the chip
   to a random drift time (`drift_aware`, log-uniform in [1 s, drift_max] s, with global drift
   compensation when `drift_compensation`), and draw a new quenched read-noise pattern; the
   relaxations below then run on that noisy chip, and the gradients reach the nominal weights
   (kept digitally, straight-through: `analogeq.hardware`);
3. the free phase (Anderson to `free_tol`), then the rule's gradient estimate reusing it
   (`asymep` (default), `holomorphic`, `adjoint` (exact implicit gradient), or `bptt` through a
   fixed Euler unroll);
4. optional regularisers (a Jacobian penalty with its adaptive controller, a residual penalty;
   `analogeq.learning.regularizers`, when installed) add their gradients and observe the free
   residual;
   Robustness (all optional, off by default): Anderson's unsettled samples continue with IMEX
   (`free_fallback_steps`), a stalled nudged phase is redone with IMEX, and after the update
   `spectral_target` scales the branch outputs when a power-iteration estimate of rho(dN/dz) at
   the free state exceeds its bound (contraction by measurement), `lipschitz_target` when the
   provable bound does (contraction by construction). The digits recipe (benchmarks/results/
   training.md): float64, beta 0.01, free_tol 1e-6, Anderson nudges, fallback 300,
   spectral_target 0.9;
5. the divergence guard: a non-finite loss or gradient, or a free-phase force residual above
   `guard_residual` (0.3), rolls the run back to the last checkpoint, multiplies the learning rate
   by `guard_lr_factor` and logs a "rollback" event (at most `max_rollbacks` times, then the run
   stops with status "diverged");
6. the residual gate, per sample (`sample_gate`): samples whose free phase did not settle below
   `gate_residual`, or whose nudged phases did not converge, are dropped from the estimate
   (logged as "dropped"); an estimate still flagged invalid (`GradientResult.valid`; e.g. fewer
   than `min_kept` of the batch settled) is skipped (no update, logged as "updated": false);
7. the update: gradient clipping (global norm `clip`), then Adam or SGD with linear warm-up and an
   optional cosine decay, or per-device pulses through `analogeq.learning.device_updates.
   DeviceUpdater` (`updates="device-deterministic" | "device-stochastic"`).

Runs write under `runs/<name>` (or `out`), never /tmp: `checkpoint.pt` (latest, every
`checkpoint_every` steps and at the end, written atomically), `best.pt` (model only, best
evaluation), `log.jsonl` (`analogeq._train_log`), `training.png`, `config.json`, `result.json`.
`resume=True` continues from `checkpoint.pt` exactly: the model, optimiser, controller,
every random state (`analogeq._train_checkpoint`) and the step are restored, so a killed and
resumed run ends with bit-for-bit the same weights and loss on CPU as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import integrators
from ._io import atomic_write, stale_temporaries
from ._train_checkpoint import (
    FORMAT,
    MODEL_FORMAT,
    CheckpointError,
    capture_rng,
    check_shapes,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from ._train_eval import evaluate
from ._train_log import JsonlLog, plot_training
from .integrators._result import worst_status
from .learning import BPTT, AsymEP, GradientResult, HolomorphicEP, ImplicitAdjoint
from .learning._common import PhaseInfo, default_tol, gate
from .model import EquilibriumTransformer, ModelConfig
from .tasks import Task, _mix, get_task

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "train",
    "load_checkpoint",
    "checkpoint_info",
    "default_model",
    "DEFAULT_CHECKPOINT",
    "CheckpointError",
    "RunExistsError",
    "ConfigMismatchError",
    "RULES",
    "make_estimator",
    "hardware_for_training",
    "save_model",
]

RULES = ("asymep", "holomorphic", "adjoint", "bptt")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
NUDGED_METHODS = ("imex", "anderson", "euler", "adaptive", "implicit", "ode")
UPDATES = ("optimizer", "device-deterministic", "device-stochastic")
DEFAULT_CHECKPOINT = Path(__file__).parent / "data" / "digits.pt"
"""The shipped digits checkpoint (`default_model()` loads it)."""

# fields that may differ between a run and its resumption
_RESUMABLE_CHANGES = {"steps", "resume", "progress", "plots", "overwrite", "eval_every",
                      "checkpoint_every", "out", "name", "time_budget"}
# files of a run directory written through atomic_write (their stale temporaries are removed)
_RUN_FILES = ("checkpoint.pt", "best.pt", "log.jsonl", "config.json", "result.json")


class RunExistsError(FileExistsError):
    """The run directory already holds a checkpoint and neither resume nor overwrite was asked
    for. `path` is the checkpoint."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(f"{path} exists: pass resume=True to continue it, overwrite=True to start "
                         "over, or choose another name / out")


class ConfigMismatchError(ValueError):
    """A resumed run's config differs from its checkpoint's in `fields` (TrainConfig names)."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = Path(path), list(fields)
        super().__init__(f"cannot resume {path}: the config differs in {self.fields} (only "
                         f"{sorted(_RESUMABLE_CHANGES)} may change on resume)")


# ------------------------------------------------------------------------------------------------
# configuration


def _check(name: str, value: Any, kind: type | tuple[type, ...], *, low: float | None = None,
           high: float | None = None, strict_low: bool = False, choices: tuple | None = None,
           none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    rng = ""
    if low is not None:
        rng += f" {'>' if strict_low else '>='} {low:g}"
    if high is not None:
        rng += f" and <= {high:g}"
    what = "/".join(k.__name__ for k in kinds) + rng + (" or None" if none_ok else "")
    if not ok:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite ({what}), got {value}")
    if low is not None and (value <= low if strict_low else value < low):
        raise ValueError(f"{name} must be {what}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be {what}, got {value}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; validated on construction (errors name the field).

    Run:
        task: "digits" | "text" | "synthetic" (`analogeq.tasks`).
        name: run name; the run directory is `out` or runs/<name>.
        out: run directory (str) or None.
        steps: training steps (>= 0). batch_size (>= 1). seed: model init, data order, chip.
        augment: augment the training batches with the task's augmenter (digits: random shifts
            by -1..1 pixels; `Task.batch`); ValueError for a task without one.
        init_from: None, or a checkpoint (training checkpoint.pt, best.pt or a model file) whose
            nominal weights start a fresh run (fine-tuning, e.g. hardware-aware fine-tuning of a
            digitally trained model); its model config must match the run's (dtype may differ).
            A resumed run continues from its own checkpoint.
        resume: continue from <run dir>/checkpoint.pt if it exists (else start fresh).
        overwrite: allow starting fresh over an existing checkpoint (else FileExistsError).
        eval_every, checkpoint_every: steps between evaluations / checkpoints (>= 1).
        eval_limit: evaluation samples (None: the whole test split).
        time_budget: None, or seconds of training wall time (> 0; steps, evaluations and
            checkpoints, summed over resumes) after which the run stops at the end of a step
            with status "time budget" (for comparisons at equal wall budget; the schedule still
            runs over `steps`, so give `steps` the count the budget is expected to allow).
        progress: tqdm progress bar. plots: write training.png at the end.

    Model (`ModelConfig`; the task fixes input/output shapes):
        d_model, n_heads, ffn_mult, c, init_scale, embed_scale, norm_eps, attn_gain (the
            attention logit gain, `ModelConfig.attn_gain`).
        dtype: "float32" (default) or "float64". float64 costs little on this small block (the
            steps are overhead-bound) and lets beta be small (~1): with float32 the nudge must
            stay far above the rounding floor (beta ~40), where the nudged phases are nonlinear
            (cos to the exact gradient 0.89 measured mid-training, and the -beta phase stalls:
            it adds +beta times the loss Hessian to the Jacobian).
        lipschitz_target: None (off) or L < 1 + c: contraction by construction, the model is
            projected (`model.enforce_lipschitz()`) at the start and after every update, so the
            provable bound on Lip(N) stays <= L (use a large norm_eps, e.g. 1, with it).
        spectral_target: None (off) or r in (0, 1): contraction by measurement. Every
            `spectral_every` steps, after the update, power iteration (`spectral_iters` batched
            Jacobian-vector products) estimates per sample the spectral radius rho of
            dN/dz = J + (1 + c) I at the step's free state; when max rho > r (1 + c), attn.o and
            ffn.down (N's Jacobian is linear in them at fixed z) are scaled by r (1 + c) / rho.
            rho < 1 + c makes every Jacobian eigenvalue's real part negative and the Picard / IMEX
            maps of the free and nudged phases contract; unlike the Lipschitz bound (60x above
            the measured norm at init on digits) it is measured where the block operates. Logged
            as "spectral_radius" and "spectral_scale".
        spectral_min_scale: the smallest factor one projection may apply (in [0, 1); 0 = none,
            the full correction at once). The estimate is a max over the batch, so one outlier
            sample can call for a large cut that wipes out what the step learnt; measured on
            digits (AsymEP, target 0.9, steps 800-1100): single-step factors of 0.58-0.77 came
            with test accuracy falling from 95 % to 86-91 %. A floor such as 0.97 spreads a
            persistent correction over steps and lets an outlier pass (its sample fails to settle
            and the per-sample gate drops it).
        spectral_quantile: which per-sample rho the projection holds at the target: 1 (default)
            the batch's largest, q < 1 its q-quantile (linear interpolation). The radius is
            heavy-tailed over samples: on digits models trained with target 0.9 the median
            sample sat at 0.5-0.6 (x (1 + c)) and the largest at 1.3-2.5, so holding the largest
            shrank the whole model every step for a few hard samples; in one seed (r9s1) the
            floored projection then fought the optimiser for 1000 steps and, as the learning
            rate decayed, won: test accuracy fell from 97.2 % to 94.4 %. Samples above the
            target that do not settle are dropped by the per-sample gate. Logged as
            "spectral_level" (the quantile, / (1 + c)) next to "spectral_radius" (the largest).

    Rule:
        rule: "asymep" (default) | "holomorphic" | "adjoint" | "bptt".
        beta: nudge of AsymEP / radius of holomorphic EP (> 0; in units of the batch-mean loss,
            see `AsymEP`). In float32 the nudge must stand well above the rounding floor: 40
            gives a relative nudge |beta| ||dL/dz|| / ||z|| ~ 3e-3 at batch 64 (4 gave 3e-4,
            and nudged phases that ended on the rounding floor as "limit cycles").
        nudged_rtol: nudged-phase tolerance relative to the nudge (in (0, 1)).
        points: holomorphic EP nudges (>= 2).
        free_tol: free-phase force-residual tolerance (> 0; None: 1.2e-5 in float32).
        free_max_steps: free-phase Anderson iterations (>= 1).
        free_fallback_steps: when Anderson leaves samples unsettled, continue them from its best
            point with IMEX for up to this many steps (0 = off); with a non-IMEX nudged_method,
            an estimate whose free phase settled but a nudged phase did not is also redone with
            IMEX nudged phases of this budget (logged as "nudged_retry"). Measured on digits
            (AsymEP step 150, a sample with leading eigenvalue -0.32, i.e. a stable root):
            Anderson was at 3e-4 after 300 iterations (382 to converge, through a non-monotone
            transient), IMEX converged in 106.
        nudged_max_steps: nudged-phase iterations (>= 1; None: the method's default).
        nudged_method: integrator of the nudged phases ("imex" default, "anderson", "euler",
            "adaptive", ...; `analogeq.integrators.settle` names).
        gate_residual: residual gate: skip an estimate whose free residual exceeds it (> 0).
        sample_gate: gate per sample instead of per batch (equilibrium rules): samples whose
            free phase did not settle below `gate_residual`, or whose nudged phases did not
            converge, are dropped from the estimate and the step learns from the others (the
            mean over the kept samples; logged as "dropped"); the whole step is skipped only
            when fewer than `min_kept` of the batch's samples remain. False: one failing sample
            skips the whole batch.
        min_kept: smallest fraction of the batch a per-sample-gated estimate may keep (in
            (0, 1]).
        bptt_steps, bptt_eps: the BPTT unroll (explicit Euler, steps >= 1, eps > 0).

    Optimiser:
        optimizer: "adam" | "sgd"; lr (> 0); momentum (SGD, [0, 1)); weight_decay (>= 0);
        warmup_steps (>= 0, linear warm-up); schedule: "constant" | "cosine" (to min_lr_ratio);
        clip: global gradient-norm clip (> 0) or None.
        updates: "optimizer" (default) or "device-deterministic" / "device-stochastic" (per-device
            pulses via `DeviceUpdater`, needs `device`; then the chip is programmed once and the
            weights live on the devices).
        bl: pulse-train length of the stochastic device update (>= 1).

    Hardware-noise injection:
        device: None (digital training) or a device preset ("pcm", "rram", "ecram", "ideal").
        noise: strength, a factor on the device's programming and read noise (>= 0; 1 = the
            preset).
        read_noise: "quenched" (one draw per step, default), "white" or "off".
        tau_spread: node time-constant spread of the training chip (>= 0).
        drift_aware: age the chip to a random time in [1, drift_max] s (log-uniform) every step.
        drift_max: seconds (>= 1). drift_compensation: global drift compensation after ageing.

    Regularisers (`analogeq.learning.regularizers`, used only when that module is installed):
        jacobian_penalty: initial weight of the Jacobian penalty (>= 0; 0 = off).
        adaptive: the penalty's adaptive controller (else the weight stays frozen); the
            controller's floor is `jacobian_floor` (None: min(0.1, jacobian_penalty)), its cap 16,
            its target free residual `jacobian_target` (1e-3).
        controller_steps: what the controller observes: None, the free phase's final force
            residual (it only exceeds the target once the free phase fails to settle at all); k,
            the free residual after k Anderson iterations (from the settle's trace; the final one
            when it converged earlier): a measure of contraction *speed*, which rises tens of steps
            before the free phase stops settling, so the weight grows in time.
        residual_penalty: the residual penalty's gradient as a fraction of the task gradient's
            norm (>= 0; 0 = off; `ResidualPenalty(fraction=...)`).

    Guard:
        guard_residual: free residual that triggers a rollback (> 0; default 0.3, docs/physics.md
        section 6). guard_lr_factor: learning-rate factor per rollback (in (0, 1)). max_rollbacks
        (>= 0).
    """

    task: str = "digits"
    name: str = "run"
    out: str | None = None
    steps: int = 1000
    batch_size: int = 64
    seed: int = 0
    augment: bool = False
    init_from: str | None = None
    resume: bool = False
    overwrite: bool = False
    eval_every: int = 250
    checkpoint_every: int = 100
    eval_limit: int | None = None
    time_budget: float | None = None
    progress: bool = True
    plots: bool = True
    # model
    d_model: int = 32
    n_heads: int = 4
    ffn_mult: int = 2
    c: float = 1.0
    init_scale: float = 0.5
    embed_scale: float = 1.0
    norm_eps: float = 1e-5
    attn_gain: float = 1.0
    dtype: str = "float32"
    lipschitz_target: float | None = None
    spectral_target: float | None = None
    spectral_every: int = 1
    spectral_min_scale: float = 0.0
    spectral_quantile: float = 1.0
    spectral_iters: int = 12
    # rule
    rule: str = "asymep"
    beta: float = 40.0
    nudged_rtol: float = 1e-2
    points: int = 4
    free_tol: float | None = None
    free_max_steps: int = 100
    free_fallback_steps: int = 0
    nudged_max_steps: int | None = None
    nudged_method: str = "imex"
    gate_residual: float = 1e-3
    sample_gate: bool = True
    min_kept: float = 0.5
    bptt_steps: int = 30
    bptt_eps: float = 0.3
    # optimiser
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    clip: float | None = 1.0
    updates: str = "optimizer"
    bl: int = 31
    # hardware-noise injection
    device: str | None = None
    noise: float = 1.0
    read_noise: str = "quenched"
    tau_spread: float = 0.0
    drift_aware: bool = False
    drift_max: float = 86400.0 * 30
    drift_compensation: bool = True
    # regularisers
    jacobian_penalty: float = 0.0
    adaptive: bool = True
    jacobian_floor: float | None = None
    jacobian_target: float = 1e-3
    controller_steps: int | None = None
    residual_penalty: float = 0.0
    # guard
    guard_residual: float = 0.3
    guard_lr_factor: float = 0.5
    max_rollbacks: int = 5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check("task", self.task, str)
        for n in ("name",):
            _check(n, getattr(self, n), str)
            if not getattr(self, n) or "/" in getattr(self, n):
                raise ValueError(f"{n} must be a non-empty name without '/', got {self.name!r}")
        _check("out", self.out, str, none_ok=True)
        _check("init_from", self.init_from, str, none_ok=True)
        _check("steps", self.steps, int, low=0)
        _check("batch_size", self.batch_size, int, low=1)
        _check("seed", self.seed, int, low=0)
        for n in ("resume", "overwrite", "progress", "plots", "drift_aware", "drift_compensation",
                  "adaptive", "augment", "sample_gate"):
            _check(n, getattr(self, n), bool)
        for n in ("eval_every", "checkpoint_every", "d_model", "n_heads", "ffn_mult",
                  "points", "free_max_steps", "bptt_steps", "bl"):
            _check(n, getattr(self, n), int, low=2 if n == "points" else 1)
        _check("eval_limit", self.eval_limit, int, low=1, none_ok=True)
        _check("nudged_max_steps", self.nudged_max_steps, int, low=1, none_ok=True)
        _check("controller_steps", self.controller_steps, int, low=1, none_ok=True)
        _check("free_fallback_steps", self.free_fallback_steps, int, low=0)
        _check("spectral_target", self.spectral_target, (int, float), low=0.0, high=0.999,
               strict_low=True, none_ok=True)
        _check("spectral_every", self.spectral_every, int, low=1)
        _check("spectral_min_scale", self.spectral_min_scale, (int, float), low=0.0, high=0.999)
        _check("spectral_quantile", self.spectral_quantile, (int, float), low=0.0, high=1.0,
               strict_low=True)
        _check("spectral_iters", self.spectral_iters, int, low=1)
        _check("jacobian_floor", self.jacobian_floor, (int, float), low=0.0, strict_low=True,
               none_ok=True)
        _check("jacobian_target", self.jacobian_target, (int, float), low=0.0, strict_low=True)
        _check("warmup_steps", self.warmup_steps, int, low=0)
        _check("max_rollbacks", self.max_rollbacks, int, low=0)
        for n in ("c", "weight_decay", "noise", "tau_spread", "jacobian_penalty",
                  "residual_penalty"):
            _check(n, getattr(self, n), (int, float), low=0.0)
        for n in ("init_scale", "embed_scale", "beta", "gate_residual", "bptt_eps", "lr",
                  "guard_residual", "norm_eps", "attn_gain"):
            _check(n, getattr(self, n), (int, float), low=0.0, strict_low=True)
        _check("time_budget", self.time_budget, (int, float), low=0.0, strict_low=True,
               none_ok=True)
        _check("free_tol", self.free_tol, (int, float), low=0.0, strict_low=True, none_ok=True)
        _check("lipschitz_target", self.lipschitz_target, (int, float), low=0.0, strict_low=True,
               high=1.0 + float(self.c) - 1e-9, none_ok=True)
        _check("clip", self.clip, (int, float), low=0.0, strict_low=True, none_ok=True)
        _check("nudged_rtol", self.nudged_rtol, (int, float), low=0.0, high=0.5, strict_low=True)
        _check("momentum", self.momentum, (int, float), low=0.0, high=0.999)
        _check("min_kept", self.min_kept, (int, float), low=0.0, high=1.0, strict_low=True)
        _check("min_lr_ratio", self.min_lr_ratio, (int, float), low=0.0, high=1.0)
        _check("guard_lr_factor", self.guard_lr_factor, (int, float), low=0.0, high=0.99,
               strict_low=True)
        _check("drift_max", self.drift_max, (int, float), low=1.0)
        _check("rule", self.rule, str, choices=RULES)
        _check("dtype", self.dtype, str, choices=("float32", "float64"))
        _check("nudged_method", self.nudged_method, str, choices=NUDGED_METHODS)
        _check("optimizer", self.optimizer, str, choices=OPTIMIZERS)
        _check("schedule", self.schedule, str, choices=SCHEDULES)
        _check("updates", self.updates, str, choices=UPDATES)
        _check("read_noise", self.read_noise, str, choices=("quenched", "white", "off"))
        if self.device is not None:
            from .circuits import PRESETS

            _check("device", self.device, str, choices=tuple(sorted(PRESETS)))
        if self.updates != "optimizer" and self.device is None:
            raise ValueError(f"updates={self.updates!r} needs a device (per-device pulses)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got {self.d_model}, "
                             f"{self.n_heads}")
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra must be a dict, got {type(self.extra).__name__}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path("runs") / self.name

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**data)


# ------------------------------------------------------------------------------------------------
# building blocks


def model_config_for(config: TrainConfig, task: Task) -> ModelConfig:
    """The `ModelConfig` of a run: the task's shapes plus the config's model fields."""
    return ModelConfig(
        d_model=config.d_model, n_heads=config.n_heads, ffn_mult=config.ffn_mult, c=config.c,
        init_scale=config.init_scale, embed_scale=config.embed_scale,
        attn_gain=float(config.attn_gain), norm_eps=float(config.norm_eps), dtype=config.dtype,
        lipschitz_target=(
            None if config.lipschitz_target is None else float(config.lipschitz_target)),
        **task.model_fields,
    )


def hardware_for_training(config: TrainConfig) -> Any:
    """The `HardwareConfig` of noise-injected training (None for digital training): the device
    preset with its programming and read noise scaled by `noise` (drift physics unchanged)."""
    if config.device is None:
        return None
    from .circuits import preset
    from .hardware import HardwareConfig

    dev = preset(config.device)
    dev = dataclasses.replace(
        dev,
        programming=dataclasses.replace(dev.programming, scale=dev.programming.scale
                                        * config.noise),
        read=dataclasses.replace(dev.read, scale=dev.read.scale * config.noise),
    )
    return HardwareConfig(device=dev, read_noise=config.read_noise,
                          tau_spread=float(config.tau_spread), seed=_mix(config.seed, 7))


def make_estimator(config: TrainConfig) -> Any:
    """The gradient estimator of `config.rule`."""
    # IMEX for the nudged phases: measured on digits (d_model 32, after 28 AsymEP steps) it
    # settled both nudges in 64-88 evaluations where Anderson took 200 and stalled on one.
    common = dict(nudged_method=config.nudged_method, free_tol=config.free_tol,
                  free_max_steps=config.free_max_steps,
                  nudged_max_steps=config.nudged_max_steps,
                  gate_residual=config.gate_residual, nudged_rtol=float(config.nudged_rtol))
    if config.rule == "asymep":
        return AsymEP(beta=float(config.beta), **common)
    if config.rule == "holomorphic":
        return HolomorphicEP(radius=float(config.beta), points=config.points, **common)
    if config.rule == "adjoint":
        return ImplicitAdjoint(tol=config.free_tol, max_steps=config.free_max_steps,
                               gate_residual=config.gate_residual)
    return BPTT(steps=config.bptt_steps,
                method=integrators.ExplicitEuler(eps=float(config.bptt_eps)),
                gate_residual=config.gate_residual)


def make_regularizers(config: TrainConfig) -> list[Any]:
    """Regularisers requested by the config (`analogeq.learning.regularizers`)."""
    if config.jacobian_penalty == 0 and config.residual_penalty == 0:
        return []
    try:
        from .learning import regularizers as regs
    except ImportError as exc:
        raise ValueError(
            "jacobian_penalty / residual_penalty need analogeq.learning.regularizers, which is "
            f"not available in this installation ({exc})"
        ) from None
    out = []
    if config.jacobian_penalty > 0:
        w = float(config.jacobian_penalty)
        floor = min(0.1, w) if config.jacobian_floor is None else min(float(config.jacobian_floor),
                                                                       w)
        out.append(regs.JacobianPenalty(weight=w, adaptive=config.adaptive, floor=floor,
                                        target_residual=float(config.jacobian_target),
                                        seed=_mix(config.seed, 17) % 2**31))
    if config.residual_penalty > 0:
        out.append(regs.ResidualPenalty(fraction=float(config.residual_penalty)))
    return out


def make_updater(config: TrainConfig) -> Any:
    if config.updates == "optimizer":
        return None
    try:
        from .learning.device_updates import DeviceUpdater
    except ImportError as exc:
        raise ValueError(
            f"updates={config.updates!r} needs analogeq.learning.device_updates, which is not "
            f"available in this installation ({exc})"
        ) from None
    mode = config.updates.removeprefix("device-")
    return DeviceUpdater(mode=mode, bl=config.bl, seed=_mix(config.seed, 13))


def _select(free: integrators.SettleResult, index: Tensor) -> integrators.SettleResult:
    """The samples `index` (1-D int64) of a settle result (per-sample fields sliced; the
    trace, a batch summary, is kept as it is)."""
    rows = index.tolist()

    def pick(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[index.to(t.device)]

    status = tuple(free.sample_status[i] for i in rows) if free.sample_status else ()
    return dataclasses.replace(
        free, z=free.z[index.to(free.z.device)], residual=pick(free.residual), t=pick(free.t),
        status=worst_status(status) if status else free.status,
        sample_status=status, nfe_per_sample=pick(free.nfe_per_sample),
        steps_per_sample=pick(free.steps_per_sample),
        cycles=tuple(free.cycles[i] for i in rows) if free.cycles else ())


def _max(t: Tensor | None) -> float:
    if t is None or t.numel() == 0:
        return math.nan
    return float(torch.nan_to_num(t.detach().float(), nan=math.inf).max())


@dataclass
class TrainResult:
    """What a run ended with: status ("completed" | "diverged" | "stopped" (by the `run`
    callback) | "time budget"), steps done, the last and best
    evaluation, counts of rollbacks and skipped updates, wall seconds, the run directory."""

    status: str
    step: int
    final_eval: dict[str, Any] | None
    best_eval: dict[str, Any] | None
    rollbacks: int
    skipped: int
    wall: float
    run_dir: Path
    last_loss: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d


# ------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """A training run (see the module docstring). `Trainer(config).run() -> TrainResult`.

    `task` may be given to reuse a loaded `Task` (its name must match `config.task`).
    """

    def __init__(self, config: TrainConfig, *, task: Task | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        if task is None:
            task = get_task(config.task)
        elif task.name != config.task:
            raise ValueError(f"task {task.name!r} does not match config.task {config.task!r}")
        if config.augment and task.augmenter is None:
            raise ValueError(f"augment=True: task {task.name!r} has no augmentation")
        self.task = task
        self.run_dir = config.run_dir
        self.model_config = model_config_for(config, task)
        self.hardware = hardware_for_training(config)
        self.model = EquilibriumTransformer(self.model_config, hardware=self.hardware,
                                            seed=config.seed)
        self.eval_model = (self.model if self.hardware is None else
                           EquilibriumTransformer(self.model_config, seed=config.seed))
        self.estimator = make_estimator(config)
        # nudged phases that stall are retried with IMEX (`free_fallback_steps` budget)
        self.retry_estimator = (
            make_estimator(config.replace(nudged_method="imex",
                                          nudged_max_steps=config.free_fallback_steps))
            if config.rule in ("asymep", "holomorphic") and config.free_fallback_steps
            and config.nudged_method != "imex" else None)
        self.regularizers = make_regularizers(config)
        self.updater = make_updater(config)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        self.generators = {"drift": torch.Generator().manual_seed(_mix(config.seed, 11))}
        self.free_tol = (config.free_tol if config.free_tol is not None
                         else default_tol(self.model.dtype, 1e-10))
        self.step = 0
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.skipped = 0
        self.elapsed = 0.0
        self.best: dict[str, Any] | None = None
        self.last_eval: dict[str, Any] | None = None
        self.last_loss = math.nan
        self.log: JsonlLog | None = None

    # -- paths -------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.jsonl"

    # -- learning rate -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Learning rate of `step`: lr * warm-up * schedule * the guard's lr_scale."""
        cfg = self.config
        lr = cfg.lr * self.lr_scale
        if cfg.warmup_steps > 0:
            lr *= min(1.0, (step + 1) / cfg.warmup_steps)
        if cfg.schedule == "cosine" and cfg.steps > 0:
            frac = min(step / cfg.steps, 1.0)
            lr *= cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
        return lr

    # -- checkpoints -------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "task": self.task.name,
            "step": self.step,
            "model": self.model.state_dict(),
            "nominal": nominal_weights(self.model),
            "optimizer": self.optimizer.state_dict(),
            "regularizers": {r.name: r.state_dict() for r in self.regularizers},
            "updater": (self.updater.state_dict() if hasattr(self.updater, "state_dict")
                        else None),
            "rng": capture_rng(self.model, self.generators),
            "guard": {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks,
                      "skipped": self.skipped},
            "elapsed": self.elapsed,
            "best": self.best,
            "last_eval": self.last_eval,
            "last_loss": self.last_loss,
        }

    def save(self) -> Path:
        """Write checkpoint.pt atomically (the previous one stays intact until the rename)."""
        return save_checkpoint(self.checkpoint_path, self._payload())

    def _restore(self, data: dict[str, Any], *, keep_guard: bool = False) -> None:
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        for r in self.regularizers:
            if r.name in data["regularizers"]:
                r.load_state_dict(data["regularizers"][r.name])
        if self.updater is not None and data.get("updater") is not None and hasattr(
                self.updater, "load_state_dict"):
            self.updater.load_state_dict(data["updater"])
        restore_rng(data["rng"], self.model, self.generators)
        self.step = int(data["step"])
        if not keep_guard:
            g = data["guard"]
            self.lr_scale = float(g["lr_scale"])
            self.rollbacks = int(g["rollbacks"])
            self.skipped = int(g["skipped"])
            self.elapsed = float(data["elapsed"])
        self.best = data.get("best")
        self.last_eval = data.get("last_eval")
        self.last_loss = float(data.get("last_loss", math.nan))

    def _check_resumable(self, data: dict[str, Any]) -> None:
        if not isinstance(data["config"], dict):
            raise CheckpointError(f"{self.checkpoint_path}: its 'config' entry is a "
                                  f"{type(data['config']).__name__}, not a dict")
        # a field added after the checkpoint was written counts as its default there
        old = {**TrainConfig().to_dict(), **data["config"]}
        new = self.config.to_dict()
        diff = sorted(k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k])
        if diff:
            raise ConfigMismatchError(self.checkpoint_path, diff)

    def _resume_from(self, data: dict[str, Any]) -> None:
        """Restore a checked checkpoint of this run; a `CheckpointError` naming the file when its
        weights or states do not fit the run's model (shapes, optimiser, generators)."""
        path = self.checkpoint_path
        check_shapes({k: v.shape if isinstance(v, Tensor) else None
                      for k, v in self.model.state_dict().items()}, data["model"], path,
                     "the run's model")
        try:
            self._restore(data)
        except CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: cannot resume from it: "
                                  f"{' '.join(str(exc).split())[:200]}") from None

    def _remove_stale_temporaries(self) -> None:
        """Temp files of atomic writes a killed run left behind (`.checkpoint.pt.*.tmp`, ...)."""
        stale = stale_temporaries(self.run_dir, _RUN_FILES)
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            warnings.warn(f"removed {len(stale)} stale temporary file(s) of an interrupted write "
                          f"in {self.run_dir} ({stale[0].name}"
                          + (", ..." if len(stale) > 1 else "") + ")", RuntimeWarning,
                          stacklevel=3)

    # -- hardware ----------------------------------------------------------------------------------
    def _inject_noise(self) -> dict[str, Any]:
        """Re-program the chip (new programming errors), age it, draw new read noise."""
        if self.hardware is None:
            return {}
        out: dict[str, Any] = {}
        if self.updater is None:
            self.model.program()
            if self.config.drift_aware:
                from .deploy import apply_drift_compensation, drift_baseline

                base = drift_baseline(self.model)
                u = float(torch.rand((), generator=self.generators["drift"], dtype=torch.float64))
                t = math.exp(u * math.log(self.config.drift_max))
                self.model.drift(t)
                out["drift_time"] = t
                if self.config.drift_compensation:
                    apply_drift_compensation(self.model, base)
        self.model.resample_read_noise()
        return out

    # -- one step ----------------------------------------------------------------------------------
    def _estimate(self, x: Tensor, y: Tensor) -> tuple[GradientResult, Any]:
        """(gradient result, free SettleResult or None)."""
        if self.config.rule == "bptt" and not self.regularizers:
            return self.estimator.gradients(self.model, x, y), None
        force = self.model.force(x)
        start = self.model.initial_state(force).detach()
        free = integrators.settle(force, start, "anderson", tol=self.free_tol,
                                  max_steps=self.config.free_max_steps)
        self._anderson = free
        if free.status is not integrators.Status.CONVERGED and self.config.free_fallback_steps:
            # IMEX from Anderson's best point; samples already below tol stop at once
            more = integrators.settle(force, free.z.detach(), "imex", tol=self.free_tol,
                                      max_steps=self.config.free_fallback_steps)
            free = dataclasses.replace(more, nfe=free.nfe + more.nfe, steps=free.steps
                                       + more.steps, info={**more.info, "fallback": True})
        if self.config.rule == "bptt":
            return self.estimator.gradients(self.model, x, y), free
        if not self.config.sample_gate:
            return self._estimate_on(x, y, free), free
        batch = x.shape[0]
        least = self.config.min_kept * batch
        idx = self._settled_samples(free).nonzero().squeeze(1)  # one host sync per step
        if idx.numel() < least:  # too few settled: the estimate is gated (skipped) as a whole
            return self._estimate_on(x, y, free), free
        whole = idx.numel() == batch
        result = (self._estimate_on(x, y, free) if whole
                  else self._estimate_on(x[idx], y[idx], _select(free, idx)))
        ok = result.info.get("valid_samples")
        if not result.valid and ok is not None and bool(ok.any()) and not bool(ok.all()) \
                and int(ok.sum()) >= least:
            # their free phases settled but some nudged phases did not: learn from the others
            first = result
            idx = idx[ok.to(idx.device)]
            result = self._estimate_on(x[idx], y[idx], _select(free, idx))
            nfe = dict(first.info.get("nfe", {}))
            nfe.update({f"subset {k}": v for k, v in result.info.get("nfe", {}).items()
                        if k != "free"})
            result = GradientResult(result.grads, {**result.info, "nfe": nfe, "retried": bool(
                first.info.get("retried") or result.info.get("retried"))})
        if idx.numel() < batch:
            result.info["dropped"] = batch - idx.numel()
        return result, free

    def _settled_samples(self, free: Any) -> Tensor:
        """(batch,) bool: samples whose free phase converged below the gate residual."""
        # the estimators' own validity rule, applied to the free phase alone
        info = PhaseInfo.from_settle("free", free, math.nan)
        return gate(info, [], self.config.gate_residual)[2]

    def _estimate_on(self, x: Tensor, y: Tensor, free: Any) -> GradientResult:
        """The rule's estimate on (x, y) from the settled `free`, with the IMEX retry of failed
        nudged phases (`free_fallback_steps`)."""
        result = self.estimator.gradients(self.model, x, y, free=free)
        if (not result.valid and self.retry_estimator is not None
                and free.status is integrators.Status.CONVERGED
                and _max(free.residual) <= self.config.gate_residual):
            # the free phase settled but a nudged phase did not: redo the nudged phases with
            # IMEX (slower per evaluation, but it follows the flow where Anderson stalls)
            again = self.retry_estimator.gradients(self.model, x, y, free=free)
            nfe = dict(result.info.get("nfe", {}))
            nfe.update({f"retry {k}": v for k, v in again.info.get("nfe", {}).items()
                        if k != "free"})
            result = GradientResult(again.grads, {**again.info, "nfe": nfe, "retried": True})
        return result

    def train_step(self) -> dict[str, Any]:
        """One step (module docstring); returns its log record (kind "step"). A guard trip
        returns a record with "guard" set (the caller rolls back)."""
        cfg = self.config
        t0 = time.perf_counter()
        x, y = self.task.batch(self.step, cfg.batch_size, cfg.seed, augment=cfg.augment)
        hw = self._inject_noise()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            result, free = self._estimate(x, y)
        info = result.info
        grads = dict(result.grads)
        loss = float(info.get("loss", math.nan))

        if free is not None:
            free_res = free.residual
        elif info.get("free") is not None:
            free_res = info["free"].residual
        else:
            free_res = info.get("residual")
        nudged = [p.residual for p in info.get("phases", ()) if p.name in ("nudged", "adjoint")]
        nudged_res = max((_max(r) for r in nudged), default=math.nan)
        nfe = sum(int(v) for v in info.get("nfe", {}).values())
        if free is not None and self.config.rule == "bptt":
            nfe += free.nfe

        accuracy = None
        if free is not None:
            with torch.no_grad():
                logits = self.model.readout(free.z)
                if self.task.kind == "classify":
                    logits = self.model.pooled_logits(logits)
                accuracy = float((logits.argmax(-1) == y).float().mean())

        reg_info: dict[str, Any] = {}
        controller = None
        for reg in self.regularizers:
            z0 = free.z if free is not None else None
            rr = reg.gradients(self.model, x, z0, task_grads=grads)
            if "jacobian" in reg.name.lower():
                controller = float(reg.weight)  # the weight this step's gradient used
            for k, g in rr.grads.items():
                grads[k] = grads[k] + g if k in grads else g
            reg.observe(self._observed_residual(getattr(self, "_anderson", free), free_res))
            reg_info[reg.name] = float(rr.value)

        finite = math.isfinite(loss) and all(bool(torch.isfinite(g).all())
                                             for g in grads.values())
        worst = _max(free_res)
        record: dict[str, Any] = {
            "kind": "step", "step": self.step, "loss": loss, "accuracy": accuracy,
            "free_residual": worst, "nudged_residual": nudged_res, "nfe": nfe,
            "controller_weight": controller, "lr": self.lr_at(self.step),
            "valid": bool(result.valid), "updated": False,
            "nfe_split": {k: int(v) for k, v in info.get("nfe", {}).items()},
        }
        if free is not None and free.info.get("fallback"):
            record["free_fallback"] = True
        if info.get("retried"):
            record["nudged_retry"] = True
        if info.get("dropped"):
            record["dropped"] = int(info["dropped"])  # samples the per-sample gate left out
        if reg_info:
            record["regularizers"] = reg_info
        if caught:
            record["warnings"] = len(caught)  # e.g. AsymEP's nudge-below-rounding warning
        record.update(hw)
        if not finite or not worst <= cfg.guard_residual:
            record["guard"] = ("non-finite loss or gradient" if not finite else
                               f"free residual {worst:.3g} > {cfg.guard_residual:g}")
            record["step_wall"] = time.perf_counter() - t0
            return record
        if result.valid:
            self._apply(grads, record["lr"])
            record["updated"] = True
        else:
            self.skipped += 1
            record["reason"] = info.get("reason", "")
        if (cfg.spectral_target is not None and free is not None
                and (self.step % cfg.spectral_every == 0 or not result.valid)):
            record.update(self._spectral_projection(x, free.z))
        self.last_loss = loss
        self.step += 1
        record["step_wall"] = time.perf_counter() - t0
        return record

    def _spectral_projection(self, x: Tensor, z: Tensor) -> dict[str, float]:
        """`spectral_target`: estimate rho(dN/dz) per sample at z by power iteration and scale
        the branch outputs down when max rho exceeds the target (module docstring)."""
        cfg = self.config
        force = self.model.force(x)
        leak = float(torch.as_tensor(force.leak).max())  # a hardware tau spread: the largest
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            out = force(zz)
            u = torch.zeros_like(out, requires_grad=True)
            (g,) = torch.autograd.grad(out, zz, u, create_graph=True)
        dims = tuple(range(1, z.ndim))
        gen = torch.Generator().manual_seed(_mix(cfg.seed, 23, self.step) % 2**62)
        v = torch.randn(z.shape, generator=gen, dtype=z.dtype)
        v = v / torch.linalg.vector_norm(v, dim=dims, keepdim=True)
        rho = torch.zeros(z.shape[0], dtype=z.dtype)
        for _ in range(cfg.spectral_iters):
            (jv,) = torch.autograd.grad(g, u, v, retain_graph=True)
            w = jv + leak * v  # dN/dz v
            rho = torch.linalg.vector_norm(w, dim=dims)
            v = w / rho.clamp_min(torch.finfo(z.dtype).tiny).reshape(-1, *([1] * (z.ndim - 1)))
        worst = float(rho.max())
        q = float(cfg.spectral_quantile)
        # a NaN rho (a sample that blew up) makes the quantile NaN too: no projection then
        level = worst if q >= 1 else float(torch.quantile(rho, q))
        limit = cfg.spectral_target * leak
        scale = 1.0
        if math.isfinite(level) and level > limit:
            scale = max(limit / level, float(cfg.spectral_min_scale))
            with torch.no_grad():
                for name in ("attn.o", "ffn.down"):
                    self.model.get_submodule(name).weight.mul_(scale)
        out = {"spectral_radius": worst / leak, "spectral_scale": scale}
        if q < 1:
            out["spectral_level"] = level / leak
        return out

    def _observed_residual(self, free: Any, free_res: Tensor) -> Tensor:
        """(batch,) what the regularisers' controllers see (`controller_steps`)."""
        k = self.config.controller_steps
        trace = getattr(free, "trace", None)
        if k is None or trace is None or trace.sample_residual is None:
            return free_res.detach()
        rows = trace.sample_residual
        return rows[min(k, rows.shape[0] - 1)].to(free_res.dtype)

    def _apply(self, grads: dict[str, Tensor], lr: float) -> None:
        params = dict(self.model.named_parameters())
        if self.config.clip is not None:
            total = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
            factor = torch.clamp(self.config.clip / (total + 1e-12), max=1.0)
            grads = {k: g * factor for k, g in grads.items()}
        if self.updater is not None:
            self.updater.apply(self.model, grads, lr)
            self._project()
            return
        for name, p in params.items():
            g = grads.get(name)
            p.grad = None if g is None else g.detach().to(p.dtype)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._project()

    def _project(self) -> None:
        """Contraction by construction (`lipschitz_target`): rescale the branch outputs so the
        provable Lip(N) bound stays <= the target (a hardware model is reprogrammed by it)."""
        if self.model_config.lipschitz_target is not None:
            with torch.no_grad():
                self.model.enforce_lipschitz()

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Evaluate the nominal weights on the digital model (deterministic)."""
        if self.eval_model is not self.model:
            self.eval_model.load_state_dict(nominal_weights(self.model), strict=True)
        return evaluate(self.eval_model, self.task, split, limit=self.config.eval_limit,
                        tol=self.free_tol, max_steps=self.config.free_max_steps,
                        fallback_steps=self.config.free_fallback_steps)

    def _eval_and_record(self) -> None:
        ev = self.evaluate()
        ev = {**ev, "step": self.step}
        self.last_eval = ev
        assert self.log is not None
        self.log.write({"kind": "eval", "split": "test", **ev, "wall": self.elapsed})
        better = self.best is None or (ev["accuracy"], -ev["loss"]) > (
            self.best["accuracy"], -self.best["loss"])
        if better:
            self.best = ev
            save_model(self.best_path, self.eval_model if self.eval_model is not self.model
                       else self.model, task=self.task.name, metrics=ev,
                       train_config=self.config.to_dict())

    # -- the run -----------------------------------------------------------------------------------
    def _start(self) -> None:
        cfg = self.config
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.run_dir)) from exc
        self._remove_stale_temporaries()
        exists = self.checkpoint_path.exists()
        if exists and cfg.resume:
            data = read_checkpoint(self.checkpoint_path)
            if data["format"] != FORMAT:
                raise CheckpointError(f"{self.checkpoint_path} holds a model only (format "
                                      f"{data['format']!r}), not a training state to resume")
            self._check_resumable(data)
            self._resume_from(data)
            self.log = JsonlLog(self.log_path)
            self.log.truncate_after(self.step)
            self.log.write({"kind": "event", "what": "resume", "step": self.step})
            return
        if exists and not cfg.overwrite:
            raise RunExistsError(self.checkpoint_path)
        for p in (self.log_path, self.best_path):
            if p.is_file():
                p.unlink()
        _write_json(self.run_dir / "config.json", cfg.to_dict())
        self.log = JsonlLog(self.log_path)
        if cfg.init_from is not None:
            self._load_initial_weights(cfg.init_from)
            self.log.write({"kind": "event", "what": "init_from", "step": 0,
                            "path": cfg.init_from})
        self._project()
        self.save()  # step 0: the first rollback target

    def _load_initial_weights(self, path: str) -> None:
        """Start from the nominal weights of the checkpoint at `path` (`init_from`)."""
        data = read_checkpoint(path)
        theirs = {k: v for k, v in data["model_config"].items() if k != "dtype"}
        ours = {k: v for k, v in self.model_config.to_dict().items() if k != "dtype"}
        if theirs != ours:
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise CheckpointError(f"{path}: its model config differs from the run's in {diff}")
        _load_nominal(self.model, data["nominal"], path, "the run's model")
        if self.hardware is not None:
            self.model.program()  # the chip holds the new weights (also for device updates)

    def _rollback(self, record: dict[str, Any]) -> bool:
        """Restore the last checkpoint, lower the LR; False when the budget of rollbacks is
        spent."""
        assert self.log is not None
        self.log.write({**record, "updated": False})
        failed_at = self.step
        if self.rollbacks >= self.config.max_rollbacks:
            self.log.write({"kind": "event", "what": "stop", "step": failed_at,
                            "reason": f"guard tripped after {self.rollbacks} rollbacks: "
                                      f"{record['guard']}"})
            return False
        lr_scale = self.lr_scale * self.config.guard_lr_factor
        rollbacks, skipped, elapsed = self.rollbacks + 1, self.skipped, self.elapsed
        # the controllers keep what they learnt from the failure (a grown penalty weight)
        controllers = [r.state_dict() for r in self.regularizers]
        self._restore(read_checkpoint(self.checkpoint_path), keep_guard=True)
        for r, st in zip(self.regularizers, controllers, strict=True):
            r.load_state_dict(st)
        self.lr_scale, self.rollbacks, self.skipped, self.elapsed = (lr_scale, rollbacks, skipped,
                                                                     elapsed)
        self.log.write({"kind": "event", "what": "rollback", "step": failed_at,
                        "to_step": self.step, "reason": record["guard"],
                        "lr_scale": self.lr_scale, "rollbacks": self.rollbacks})
        return True

    def run(self, callback: Callable[[Trainer, dict[str, Any]], bool | None] | None = None
            ) -> TrainResult:
        """Train to `config.steps` (resuming when asked); returns the `TrainResult`.

        `callback(trainer, record)` is called after every logged step (not after a guard
        trip, which rolls back), with the step's log record (after the evaluation and the
        checkpoint of that step, if any); returning False stops the run (status "stopped"). Use
        it to probe the model between steps (e.g. Jacobian eigenvalues) or to stop early.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
        cfg = self.config
        self._start()
        assert self.log is not None
        status = "completed"
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.name, dynamic_ncols=True)
        last = time.perf_counter()
        try:
            while self.step < cfg.steps:
                record = self.train_step()
                now = time.perf_counter()
                self.elapsed += now - last
                last = now
                record["wall"] = self.elapsed
                if "guard" in record:
                    if not self._rollback(record):
                        status = "diverged"
                        break
                    if bar is not None:
                        bar.n = self.step
                        bar.refresh()
                    continue
                self.log.write(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}",
                                    res=f"{record['free_residual']:.1e}")
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    self._eval_and_record()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                if callback is not None and callback(self, record) is False:
                    status = "stopped"
                    break
                if cfg.time_budget is not None and self.elapsed >= cfg.time_budget:
                    status = "time budget"
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.last_eval is None or self.last_eval.get("step") != self.step:
            self._eval_and_record()
            self.save()
        result = TrainResult(status=status, step=self.step, final_eval=self.last_eval,
                             best_eval=self.best, rollbacks=self.rollbacks, skipped=self.skipped,
                             wall=self.elapsed, run_dir=self.run_dir, last_loss=self.last_loss)
        self.log.write({"kind": "event", "what": "end", "step": self.step, "status": status})
        self.log.close()
        _write_json(self.run_dir / "result.json", result.to_dict())
        if cfg.plots:
            plot_training(self.log_path, self.run_dir / "training.png",
                          title=f"{cfg.name}: {cfg.task}, {cfg.rule}"
                          + (f", {cfg.device} noise x{cfg.noise:g}" if cfg.device else ""))
        return result


def train(config: TrainConfig | None = None, **overrides: Any) -> TrainResult:
    """Run `Trainer(config.replace(**overrides)).run()` (config default: `TrainConfig()`)."""
    config = (config or TrainConfig()).replace(**overrides) if overrides else (
        config or TrainConfig())
    return Trainer(config).run()


# ------------------------------------------------------------------------------------------------
# model files


def nominal_weights(model: EquilibriumTransformer) -> dict[str, Tensor]:
    """{name: parameter} cloned: the digital model's state dict (also of a hardware model)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def save_model(path: str | Path, model: EquilibriumTransformer, *, task: str | None = None,
               metrics: dict[str, Any] | None = None,
               train_config: dict[str, Any] | None = None) -> Path:
    """A model-only checkpoint (nominal weights, `ModelConfig`, provenance), written atomically."""
    payload = {"format": MODEL_FORMAT, "model_config": model.config.to_dict(),
               "nominal": nominal_weights(model), "task": task, "metrics": metrics,
               "train_config": train_config}
    return save_checkpoint(path, payload)


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=2, default=str)))


def checkpoint_info(path: str | Path | None = None) -> dict[str, Any]:
    """Provenance of a checkpoint (training or model-only): format, task, model_config, metrics
    (best evaluation), train config, step. `path` None: the shipped default."""
    data = read_checkpoint(DEFAULT_CHECKPOINT if path is None else path)
    return {
        "format": data["format"], "task": data.get("task"),
        "model_config": data["model_config"],
        "metrics": data.get("metrics") or data.get("best"),
        "train_config": data.get("train_config") or data.get("config"),
        "step": data.get("step"),
    }


def _load_nominal(model: EquilibriumTransformer, nominal: dict[str, Tensor], path: str | Path,
                  what: str = "its model_config") -> None:
    """Copy a checkpoint's nominal weights into `model` (cast to its dtype and device); a
    `CheckpointError` naming `path` when the parameter names or shapes differ from `what`."""
    check_shapes({n: p.shape for n, p in model.named_parameters()}, nominal, path, what)
    model.load_state_dict(nominal, strict=False)


def load_checkpoint(path: str | Path, hardware: Any = None,
                    dtype: str | torch.dtype | None = None) -> EquilibriumTransformer:
    """An `EquilibriumTransformer` with the nominal weights of a checkpoint (training
    checkpoint.pt or model-only best.pt / shipped file), in eval mode.

    `hardware`: None (digital) or a `HardwareConfig`: the weights are then programmed onto its
    crossbars (a programming event from the chip's seed). `dtype`: None (the checkpoint's own)
    or a dtype (name) the model is built in. A file that is not a complete checkpoint, holds
    non-finite weights or weights of other shapes than its model config raises a
    `CheckpointError` naming it (`analogeq._train_checkpoint`).
    """
    data = read_checkpoint(path)
    fields = dict(data["model_config"])
    if dtype is not None:
        fields["dtype"] = dtype
    try:
        config = ModelConfig.from_dict(fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model_config is invalid: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    model = EquilibriumTransformer(config, hardware=hardware, seed=0)
    _load_nominal(model, data["nominal"], path)
    if hardware is not None:
        model.program()
    return model.eval()


def default_model(hardware: Any = None) -> EquilibriumTransformer:
    """The shipped digits model (`DEFAULT_CHECKPOINT`), digital or programmed onto `hardware`.

    d_model 48, float32, 91 kB, trained with AsymEP in float64 (run digits-asymep-q9s0, its final
    weights after 1200 steps, BENCHMARKS.md "Training"), stored in float32: 99.44 % digital test
    accuracy when settled with Anderson to 1.2e-5 in 100 iterations (99.17 % of the test samples
    converge; all of them with a 300-step IMEX continuation).
    `checkpoint_info()` holds the provenance."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {DEFAULT_CHECKPOINT} is missing")
    return load_checkpoint(DEFAULT_CHECKPOINT, hardware=hardware)

