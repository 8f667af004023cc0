"""Step-size controllers: small objects that an adaptive method takes as an argument.

A controller decides, per sample, whether an attempted step is accepted and which step size to try
next. It knows nothing about the method that made the attempt: the method hands it a `Trial` (the
state before and after, the forces there, and a local-error estimate when the controller asks for
one) and gets back a `Decision`. So any adaptive method (`AdaptiveEuler` today, an adaptive IMEX or
exponential method later) can reuse any controller (after diffrax's
`_step_size_controller/`).

The interface
-------------
* `init(z, f) -> dict[str, Tensor]`: the controller's per-sample state before the first step, each
  tensor with a leading batch dimension (b, ...). The method stores it in `StepState.extra`, so the
  settle loop selects, merges and writes it back like any other per-sample tensor.
* `propose(trial, state) -> Decision`: accept or reject every sample of the trial and propose the
  next step size. Pure tensor arithmetic: no host syncs, no Python branching on tensor values.
  For a rejected sample the returned state must be the one to retry from (the method retries it with
  `Decision.eps` from the same z).
* `estimate`: which local-error estimate the method must put in `Trial.error`:
  `None` (the controller needs none), `"embedded"` (the free embedded pair of the method: for
  Euler/Heun, `eps/2 * (F(z_new) - F(z))`, no extra force evaluation) or `"doubling"` (two half
  steps against one full step: one extra evaluation per attempt, `error = z_two_halves - z_full`).
* `can_reject`: False when `propose` accepts every step; the method then never needs a host sync to
  find samples to retry.
* `eps_min`, `eps_max`: floor and cap of the step size (time units); every proposal lies in
  [eps_min, eps_max]. At the floor a controller accepts whatever it is given: it cannot shrink
  further, and rejecting forever would hang the sample.

The two controllers
-------------------
* `Overshoot`: judges the *trend* of the force residual (free: F(z_new) is needed anyway). Shrinks
  only when the smoothed residual rises by more than its own fluctuation level, grows otherwise
  (up to a ceiling learnt from the last overshoot). Never rejects. Fast: it finds the stability
  limit of explicit Euler and keeps eps in the band below it where Euler contracts. docs/physics.md
  section 4 explains why the naive alternative (shrink when g falls by less than 2 % a step) parks
  eps at the floor.
* `PI`: a classical local-error controller (Söderlind's digital-filter PI family) on an error *per
  unit step*. Faithful: every accepted step follows the continuous trajectory to a relative accuracy
  `rtol`, and so it stays below the stability limit instead of probing it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import PRECISION_FLOOR_EPS, check_positive, check_range

ESTIMATES = (None, "embedded", "doubling")


@dataclass(frozen=True)
class Trial:
    """One attempted step on k samples, as a controller sees it.

    Shapes: `eps`, `retry` (k,); `z`, `f`, `z_new`, `f_new`, `error` (k, ...) like the state.
    `eps` is in time units (real dtype); the state may be complex.
    """

    eps: Tensor
    """Step size tried, per sample."""
    z: Tensor
    """State before the step."""
    f: Tensor
    """F(z)."""
    z_new: Tensor
    """Candidate state after the step."""
    f_new: Tensor
    """F(z_new) (may be non-finite if the step blew up)."""
    error: Tensor | None
    """Local-error estimate of `z_new` in units of z, as requested by `Controller.estimate`; None
    when the controller asked for none."""
    retry: Tensor
    """True for samples that already had an attempt rejected in this step."""


@dataclass(frozen=True)
class Decision:
    """A controller's verdict on a `Trial`. Shapes: `accept`, `eps` (k,); `state` like `init`'s."""

    accept: Tensor
    """Bool: keep z_new (True) or retry from z (False)."""
    eps: Tensor
    """Next step size to try (after an accept) or the retry step size (after a reject)."""
    state: dict[str, Tensor]
    """The controller's per-sample state after this decision (same keys as `init`)."""


class Controller(ABC):
    """Base of the step-size controllers; see the module docstring for the contract."""

    estimate: ClassVar[str | None] = None
    can_reject: ClassVar[bool] = True
    eps_min: float
    eps_max: float

    @abstractmethod
    def init(self, z: Tensor, f: Tensor) -> dict[str, Tensor]:
        """Per-sample controller state for the batch z (b, ...) with f = F(z)."""

    @abstractmethod
    def propose(self, trial: Trial, state: dict[str, Tensor]) -> Decision:
        """Accept/reject each sample of `trial` and propose the next step size."""

    def _check_bounds(self) -> None:
        check_positive("eps_min", self.eps_min)
        check_positive("eps_max", self.eps_max)
        if self.eps_max < self.eps_min:
            raise ValueError(
                f"eps_max must be >= eps_min = {self.eps_min}, got eps_max = {self.eps_max}"
            )


def _dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def _real_dtype(x: Tensor) -> torch.dtype:
    return x.real.dtype if x.is_complex() else x.dtype


def _log_force(f: Tensor) -> Tensor:
    """log ||f|| per sample (k,), with ||f|| floored at the dtype's tiny to keep it finite."""
    fn = torch.linalg.vector_norm(f, dim=_dims(f))
    return torch.log(fn.clamp_min(torch.finfo(fn.dtype).tiny))


# --------------------------------------------------------------------------------------------------
# Overshoot
# --------------------------------------------------------------------------------------------------
# A rise whose rate per unit time, `_TEST_DELAY` steps after a shrink, is within `_SAME_RATE` of
# the rate before it is the flow's own rise, not an overshoot (see `Overshoot.propose`).
_SAME_RATE = 1.25
_TEST_DELAY = 3
@dataclass(frozen=True)
class Overshoot(Controller):
    """Shrink eps only when the smoothed force residual rises past its own noise; grow otherwise.

    Signal: the per-step log change of the force norm, dx_n = log ||F(z_new)|| - log ||F(z)||,
    free because F(z_new) is needed for the next step anyway. Near a fixed point ||z|| ~ ||z*|| is
    constant, so this is the change of the force residual g = ||F|| / ||z||; ||F|| alone is used
    because in a blow-up ||z|| grows with F and g saturates at ~|mu|, hiding the growth. Per sample
    it keeps the smoothed growth rate per unit time q and the fluctuation s of dx about it,
        q_n = (1 - smoothing) q_{n-1} + smoothing dx_n / eps_n
        s_n = (1 - smoothing) s_{n-1} + smoothing |dx_n - eps_n q_{n-1}|
    and calls the residual *rising* when
        eps_n q_n > log(rise) + noise * smoothing * s_{n-1}.
    A rise is an overshoot unless a shrink has shown it to be the flow's own. Halving eps cures an
    overshoot (its rate depends on eps: it turns into a decay near eps_crit, or changes by a large
    factor further above), but leaves the rate per unit time of a genuine rise of the continuous
    flow unchanged (a non-normal transient, a flow leaving a ghost: block-g3 of
    benchmarks/operators.py, where shrinking on every rise parked eps at eps_min). So 3 steps after
    a shrink the bias-corrected mean rate since it is compared with the rate of the step that
    triggered it: within a factor 1.25 marks the rise genuine, and for the rest of that rise (while
    the mean rate stays > 0) eps shrinks only if the rate climbs 1.25x above the lowest rate seen in
    it (an overshoot on top, e.g. eps grown past eps_crit again). Otherwise, and for every first
    rise, it is an overshoot.
    On overshoot: eps <- shrink * eps, the ceiling <- that new eps, and q <- 0 (the rate measured
    under the old eps says nothing about the new one; without the reset the lagging average keeps
    shrinking for several steps after the instability is gone). Otherwise: the ceiling relaxes,
    ceiling <- relax * ceiling, and eps <- min(grow * eps, ceiling). Everything is clamped to
    [eps_min, eps_max]; the ceiling starts at eps_max. Every step is accepted
    (`can_reject = False`): a single step's residual cannot tell a too-large eps from a transient,
    since a non-normal Jacobian makes ||F|| rise at any eps; the trend over several steps can.

    Why these signals (docs/physics.md section 4):
    * The naive rule "shrink unless g falls by 2 % a step" parks eps at the floor: slow contraction
      (rho ~ 0.99 a step) looks like "eps too big". Here a *falling* residual never shrinks eps,
      however slowly it falls.
    * A strict tolerance (g_t > g_{t-1}) catches slow cycles but over-shrinks on float noise near
      convergence; a permissive one misses slow growth. Here the tolerance is relative to the
      residual's measured fluctuation s: a smooth residual (s ~ 0) is judged strictly (any sustained
      rise counts, so slow instabilities are caught), a noisy one (s large, e.g. at the float floor
      or under read noise) only by a rise well above its noise.
    * Detrending: s measures |dx - eps q|, the deviation from the smoothed rate, not |dx|. A steady
      geometric blow-up has dx ~ v, so s stays small and the blow-up is not mistaken for noise.
    * The ceiling: explicit Euler contracts a mode mu = -a + ib by |1 + eps mu| per step, best at
      eps_crit / 2 and not at all at eps_crit = 2a / |mu|^2. A controller that grows until it sees a
      rise and then grows straight back spends most of its time near eps_crit, where nothing
      contracts (on a stiff rotating system: ~6x the steps of the best fixed eps). Remembering where
      the last overshoot happened and creeping back towards it at `relax` per step keeps eps in the
      contracting band [eps_crit / 2, eps_crit] most of the time, while a changing Jacobian (a
      nonlinear force on its way to the fixed point) can still raise eps again.

    Args:
        shrink: factor applied to eps on overshoot, in (0, 1). Default 0.5: an overshoot is seen
            just past eps_crit, and half of it is where Euler contracts the offending mode fastest.
        grow: growth factor per step below the ceiling, >= 1. Default 1.05: grows eps 10x in ~47
            steps on a slowly contracting system (the failure case of docs/physics.md section 4),
            while the smoothed rate (5-step memory) still sees an instability before eps has moved
            by more than ~30 %.
        relax: growth factor of the ceiling per step without overshoot, >= 1. Default 1.01: the
            ceiling doubles in ~70 steps, so a false alarm costs at most ~70 steps of smaller eps,
            and a stationary stability limit is probed again every ~70 steps (each probe costs a few
            steps of mild growth). Slower values (1.005) were ~8 % better on stationary linear
            systems and adapt half as fast to a changing Jacobian.
        rise: per-step residual ratio tolerated before the noise term, >= 1. Default 1.0 (strict):
            earlier work found 1.0 catches slow cycles and 1.02 misses them (docs/physics.md section
            4); the noise term, not this one, keeps float noise from triggering.
        noise: multiple of the fluctuation level a smoothed rise must exceed, >= 0. Default 3.0:
            for Gaussian noise on log ||F|| with standard deviation sigma, std(v) ~ 0.21 sigma and
            s ~ 1.13 sigma at smoothing 0.2, so the threshold sits ~3.2 std(v) above zero: a false
            shrink on ~0.1 % of noise-floor steps, far below the ~1.4 % at which halvings would
            outpace the ceiling's recovery (x2 per ~70 steps). `noise=0` is the strict
            controller (it parks eps at the floor on a noisy residual).
        smoothing: EMA weight of the newest step, in (0, 1]. Default 0.2 (a ~5-step memory): long
            enough to average float noise, short enough to react within a few steps to a blow-up;
            0.1 took ~15 % more steps on stiff rotating test systems (later detection).
        eps_min: floor of eps in time units (> 0). Default 1e-4, 1000x below the digital default
            0.1; a force that needs smaller explicit steps is better served by IMEX/implicit Euler.
        eps_max: cap of eps in time units (>= eps_min). Default 1.0: Euler's eps_crit for the
            model's leak 1 + c = 2 (docs/physics.md section 1); larger steps can only overshoot
            there.
    """

    shrink: float = 0.5
    grow: float = 1.05
    relax: float = 1.01
    rise: float = 1.0
    noise: float = 3.0
    smoothing: float = 0.2
    eps_min: float = 1e-4
    eps_max: float = 1.0

    can_reject: ClassVar[bool] = False
    estimate: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        _set(self, "shrink", check_positive("shrink", self.shrink))
        if self.shrink >= 1:
            raise ValueError(f"shrink must be in (0, 1), got {self.shrink}")
        _set(self, "grow", check_range("grow", self.grow, 1.0, math.inf))
        _set(self, "relax", check_range("relax", self.relax, 1.0, math.inf))
        _set(self, "rise", check_range("rise", self.rise, 1.0, math.inf))
        _set(self, "noise", check_range("noise", self.noise, 0.0, math.inf))
        _set(self, "smoothing", check_positive("smoothing", self.smoothing))
        if self.smoothing > 1:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")
        _set(self, "eps_min", check_positive("eps_min", self.eps_min))
        _set(self, "eps_max", check_positive("eps_max", self.eps_max))
        self._check_bounds()

    def init(self, z: Tensor, f: Tensor) -> dict[str, Tensor]:
        zeros = torch.zeros(z.shape[0], dtype=_real_dtype(z), device=z.device)
        return {
            "rate": zeros,
            "fill": zeros.clone(),
            "noise": zeros.clone(),
            "ceiling": zeros + self.eps_max,
            "shrunk_at": zeros.clone(),
            "age": zeros.clone(),
            "genuine": torch.zeros(z.shape[0], dtype=torch.bool, device=z.device),
        }

    def propose(self, trial: Trial, state: dict[str, Tensor]) -> Decision:
        q, w, s = state["rate"], state["fill"], state["noise"]
        ceiling, ref, age, genuine = (
            state["ceiling"], state["shrunk_at"], state["age"], state["genuine"]
        )
        dx = _log_force(trial.f_new) - _log_force(trial.f)
        # A non-finite candidate is the loop's to end (DIVERGED); count it as a rise meanwhile.
        dx = torch.nan_to_num(dx, nan=math.inf, posinf=math.inf)
        a, eps = self.smoothing, trial.eps
        # The smoothed rate is kept per unit time (dx / eps); `fill` is the EMA of 1 with the same
        # weights since the last reset, so rate / fill is its bias-corrected mean.
        q_new = (1 - a) * q + a * (dx / eps)
        w_new = (1 - a) * w + a
        mean = q_new / w_new
        s_new = (1 - a) * s + a * (dx - q * eps).abs()
        rising = q_new * eps > math.log(self.rise) + self.noise * a * s
        # A shrink is also a test. It cures an overshoot, whose rate depends on eps (it turns
        # into a decay near eps_crit, changes by a large factor further above), but it leaves the
        # rate per unit time of a genuine rise of the continuous flow (e.g. leaving a ghost)
        # unchanged. `_TEST_DELAY` steps after a shrink, a mean rate within `_SAME_RATE` of the
        # rate of the step that triggered it marks the rise genuine: for the rest of that rise
        # (until the mean rate drops to <= 0) eps shrinks only if the rate climbs `_SAME_RATE`
        # above the lowest rate seen in it (an overshoot on top, e.g. eps past eps_crit again).
        episode = ref > 0
        tested = episode & (age >= _TEST_DELAY)
        same = (mean < _SAME_RATE * ref) & (mean * _SAME_RATE > ref)
        genuine = episode & (genuine | (tested & same))
        over = rising & (~episode | (tested & ~genuine) | (genuine & (mean > _SAME_RATE * ref)))
        shrunk = (eps * self.shrink).clamp(self.eps_min, self.eps_max)
        ceiling = torch.where(over, shrunk, (ceiling * self.relax).clamp(max=self.eps_max))
        grown = torch.minimum(eps * self.grow, ceiling).clamp(self.eps_min, self.eps_max)
        eps_next = torch.where(over, shrunk, grown)
        ref = torch.where(genuine, torch.minimum(ref, mean), ref)
        # The reference is this step's own rate: the smoothed one lags behind a rise that starts.
        ref = torch.where(over, dx / eps, torch.where(mean > 0, ref, 0.0))
        genuine = genuine & ~over & (mean > 0)
        age = torch.where(over, 0.0, age + 1)
        # On a shrink the rate restarts (the rate measured under the old eps says nothing about
        # the new one). Keep the state finite so a diverged row cannot poison later merges.
        q_new = torch.where(over, 0.0, torch.nan_to_num(q_new, nan=0.0, posinf=0.0, neginf=0.0))
        w_new = torch.where(over, 0.0, w_new)
        ref = torch.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0)
        s_new = torch.nan_to_num(s_new, nan=0.0, posinf=0.0)
        accept = torch.ones_like(over)
        state = {
            "rate": q_new, "fill": w_new, "noise": s_new, "ceiling": ceiling,
            "shrunk_at": ref, "age": age, "genuine": genuine,
        }
        return Decision(accept=accept, eps=eps_next, state=state)


# --------------------------------------------------------------------------------------------------
# PI
# --------------------------------------------------------------------------------------------------
# Söderlind's digital-filter controllers, as (k beta1, k beta2, alpha2) of
#   eps_{n+1} = eps_n (safety/err_n)^beta1 (safety/err_{n-1})^beta2 (eps_n/eps_{n-1})^(-alpha2)
# (Söderlind 2003, "Digital filters in adaptive time-stepping", ACM TOMS 29(1):1-26; the PI names
# encode (k kI, k kP) of the earlier PI form: beta1 = kI + kP, beta2 = -kP).
PRESETS: dict[str, tuple[float, float, float]] = {
    # Low-pass PI filter: smooth step-size sequences from an error that jumps between steps.
    "H211PI": (1 / 6, 1 / 6, 0.0),
    # Low-pass with a step-ratio term (b = 4): smoother step-size sequences than H211PI.
    "H211b": (1 / 4, 1 / 4, 1 / 4),
    # Gustafsson 1991 (ACM TOMS 17(4):533-554): designed for explicit Runge-Kutta steps whose
    # size is limited by stability rather than accuracy.
    "PI3040": (0.7, -0.4, 0.0),
    "PI3333": (2 / 3, -1 / 3, 0.0),
    "PI4020": (0.6, -0.2, 0.0),
    # The elementary (integral-only, "I") controller of Hairer-Norsett-Wanner I, II.4.
    "I": (1.0, 0.0, 0.0),
}
# Errors below this are treated as this in the filter (the 'facold' floor of Hairer's DOPRI5):
# an exactly zero error (constant F) must not send err^(-beta) to inf or, with beta2 < 0, to 0.
_ERR_FLOOR = 1e-4


@dataclass(frozen=True)
class PI(Controller):
    """Söderlind PI controller on Euler's local error per unit step.

    Error norm (per sample; norms over all state entries):
        err = ||e|| / (eps * (rtol * ||F(z)|| + atol * ||z||))
    with e the local-error estimate of the accepted state:
    * `estimate="embedded"` (default): the Heun-Euler pair, e = eps/2 (F(z_new) - F(z)), which is
      ~ eps^2/2 J F; free because F(z_new) is needed anyway (1 force evaluation per attempt);
    * `estimate="doubling"`: two half steps z_2 against one full step z_1, e = z_2 - z_1; the
      accepted state is z_2, whose error is ~e (2 evaluations per attempt: F(z_half), F(z_2)).
    A step is accepted when err <= 1 (or eps is at the floor), else retried with a smaller eps.

    Why an error *per unit step* (both terms scale with eps) rather than the classical
    atol + rtol |z| per step: settling drives F -> 0, so a per-step error against a fixed scale
    shrinks without bound and any integrating controller grows eps until explicit Euler is unstable.
    It then balances at the stability limit |1 + eps mu| = 1 with err = tolerance, i.e. the stiff
    mode is held at the tolerance level and the force residual parks at g ~ rtol |mu|^3 / (2 a^2)
    (mu = -a + ib) instead of going to zero (the "stiffness-limited" regime of Hairer-Wanner II,
    IV.2). With the per-unit-step norm, err ~ eps ||J F|| / (2 rtol ||F||) does not decay with F:
    the controller settles at eps |mu| ~ 2 rtol safety on the mode that dominates F, which is below
    Euler's limit eps |mu| < 2 a / |mu| whenever
        a / |mu| > safety * rtol     (rtol = 0.05: every mode with |b| / a < ~22).
    The flip side, as for every error-per-unit-step controller: a mode rotating faster than that
    is unstable at the eps the controller picks and its error never exceeds tolerance, so the
    controller cannot see the blow-up (use `Overshoot` or a smaller rtol there). `atol` keeps float
    noise in F from passing for local error near convergence; it reintroduces the parking above only
    at g ~ atol * |mu| / a, i.e. at the precision floor.

    Controller (Söderlind 2003, filter form):
        eps_{n+1} = eps_n (safety/err_n)^{b1} (safety/err_{n-1})^{b2} (eps_n/eps_{n-1})^{-a2}
    with (b1, b2, a2) = (k beta1, k beta2, alpha2) / k and k = 1, because err ~ eps^1 per unit step
    (the error order, not the method order, sets k). `safety` inside the brackets makes the
    stationary error exactly `safety` for every preset. After a rejection the elementary rule
    eps * (safety/err) is used (the history belongs to accepted steps only) and the next proposal
    for that sample may not grow (Hairer's rule after a rejection). Every factor is clamped to
    [min_factor, max_factor] and every eps to [eps_min, eps_max].

    Choosing coefficients (like diffrax's PIDController, whose notes this follows):
    * "H211PI" (default, b1 = b2 = 1/6): a low-pass filter. Our err is the relative change of F per
      step; it jumps when modes trade dominance in F and wiggles with rotating modes; H211PI damps
      those jumps instead of passing them to eps. Closed-loop poles 1/2, 1/3 for err ~ eps.
    * "PI3040" (b1 = 0.7, b2 = -0.4): Gustafsson's controller for stability-limited explicit steps;
      more responsive (poles 0.8, -0.5), better when eps repeatedly hits a stability limit.
    * "H211b", "PI3333", "PI4020", "I": Söderlind's other standard choices (see PRESETS).
    A tuple (k beta1, k beta2) or (k beta1, k beta2, alpha2) gives custom coefficients.

    Args:
        rtol: allowed local error per step relative to the step length ||eps F(z)|| (> 0, < 1):
            equivalently ||F(z_new) - F(z)|| <= 2 rtol ||F(z)||. Default 0.05: a 5 % local error per
            step, accurate enough to follow the continuous relaxation (the point of this controller)
            and stable on modes with |b| / a < ~22 (see above).
        atol: absolute local error per unit time, relative to ||z|| (>= 0). Default None = 16 x the
            machine epsilon of the state's dtype, the loop's precision floor: below it changes of F
            are rounding noise.
        coefficients: a preset name in `PRESETS` or a tuple (k beta1, k beta2[, alpha2]).
        estimate: "embedded" (free) or "doubling" (one extra evaluation per attempt).
        safety: target error, in (0, 1]. Default 0.9 (Hairer-Norsett-Wanner's and diffrax's).
        min_factor: smallest step-size factor per decision, in (0, 1). Default 0.2 (HNW, diffrax).
        max_factor: largest factor, >= 1. Default 10 (HNW's DOPRI5 and diffrax).
        eps_min, eps_max: floor and cap of eps in time units; defaults as for `Overshoot`.
    """

    rtol: float = 0.05
    atol: float | None = None
    coefficients: str | tuple[float, ...] = "H211PI"
    estimate: str = "embedded"  # type: ignore[assignment]  # a field here, a ClassVar in the base
    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 10.0
    eps_min: float = 1e-4
    eps_max: float = 1.0
    _beta: tuple[float, float, float] = field(init=False, repr=False, compare=False)

    can_reject: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _set(self, "rtol", check_positive("rtol", self.rtol))
        if self.rtol >= 1:
            raise ValueError(f"rtol must be in (0, 1), got {self.rtol}")
        if self.atol is not None:
            _set(self, "atol", check_range("atol", self.atol, 0.0, math.inf))
        if self.estimate not in ("embedded", "doubling"):
            raise ValueError(f"estimate must be 'embedded' or 'doubling', got {self.estimate!r}")
        _set(self, "safety", check_positive("safety", self.safety))
        if self.safety > 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")
        _set(self, "min_factor", check_positive("min_factor", self.min_factor))
        if self.min_factor >= 1:
            raise ValueError(f"min_factor must be in (0, 1), got {self.min_factor}")
        _set(self, "max_factor", check_range("max_factor", self.max_factor, 1.0, math.inf))
        _set(self, "eps_min", check_positive("eps_min", self.eps_min))
        _set(self, "eps_max", check_positive("eps_max", self.eps_max))
        self._check_bounds()
        _set(self, "_beta", _coefficients(self.coefficients))

    def init(self, z: Tensor, f: Tensor) -> dict[str, Tensor]:
        ones = torch.ones(z.shape[0], dtype=_real_dtype(z), device=z.device)
        # A neutral history: err_{-1} = safety and eps_0 / eps_{-1} = 1 make the first decision
        # the plain (safety/err)^{b1} rule.
        return {"err": ones * self.safety, "ratio": ones.clone()}

    def propose(self, trial: Trial, state: dict[str, Tensor]) -> Decision:
        if trial.error is None:
            raise ValueError(
                f"PI(estimate={self.estimate!r}) needs Trial.error; the method must supply it"
            )
        dims = _dims(trial.z)
        real = _real_dtype(trial.z)
        atol = PRECISION_FLOOR_EPS * torch.finfo(real).eps if self.atol is None else self.atol
        en = torch.linalg.vector_norm(trial.error, dim=dims)
        fn = torch.linalg.vector_norm(trial.f, dim=dims)
        zn = torch.linalg.vector_norm(trial.z, dim=dims)
        scale = trial.eps * (self.rtol * fn + atol * zn)
        err = en / scale.clamp_min(torch.finfo(real).tiny)
        err = torch.nan_to_num(err, nan=math.inf)  # a non-finite candidate is rejected
        at_floor = trial.eps <= self.eps_min
        accept = (err <= 1) | at_floor
        b1, b2, a2 = self._beta
        e = err.clamp(_ERR_FLOOR, 1 / _ERR_FLOOR)
        filtered = (
            (self.safety / e) ** b1 * (self.safety / state["err"]) ** b2 * state["ratio"] ** (-a2)
        )
        elementary = self.safety / e
        factor = torch.where(accept, filtered, elementary)
        factor = factor.clamp(self.min_factor, self.max_factor)
        # No growth right after a rejection (HNW II.4): the retry size was just shown marginal.
        factor = torch.where(~accept | trial.retry, factor.clamp(max=1.0), factor)
        eps = (trial.eps * factor).clamp(self.eps_min, self.eps_max)
        new_state = {
            "err": torch.where(accept, e, state["err"]),
            "ratio": torch.where(accept, eps / trial.eps, state["ratio"]),
        }
        return Decision(accept=accept, eps=eps, state=new_state)


def _coefficients(spec: Any) -> tuple[float, float, float]:
    """(b1, b2, a2) from a preset name or a tuple (k beta1, k beta2[, alpha2]); k = 1 here."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(
                f"coefficients must be one of {sorted(PRESETS)} or a tuple, got {spec!r}"
            )
        return PRESETS[spec]
    if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
        raise TypeError(
            "coefficients must be a preset name or a tuple (k beta1, k beta2[, alpha2]), got "
            f"{spec!r}"
        )
    values = [check_range(f"coefficients[{i}]", v, -10.0, 10.0) for i, v in enumerate(spec)]
    if values[0] <= 0:
        raise ValueError(f"coefficients[0] (k beta1) must be > 0, got {values[0]}")
    if len(values) == 2:
        values.append(0.0)
    return (values[0], values[1], values[2])


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise a field of a frozen dataclass


CONTROLLERS: dict[str, type[Controller]] = {"overshoot": Overshoot, "pi": PI}


def make_controller(spec: Controller | str | None) -> Controller:
    """A controller instance from an instance, a name in `CONTROLLERS` (default options) or None."""
    if spec is None:
        return Overshoot()
    if isinstance(spec, Controller):
        return spec
    if isinstance(spec, str):
        if spec not in CONTROLLERS:
            raise ValueError(f"controller must be one of {sorted(CONTROLLERS)}, got {spec!r}")
        return CONTROLLERS[spec]()
    raise TypeError(
        f"controller must be a Controller instance (Overshoot(...), PI(...)) or a name in "
        f"{sorted(CONTROLLERS)}, got {type(spec).__name__}"
    )


__all__ = [
    "Controller",
    "Trial",
    "Decision",
    "Overshoot",
    "PI",
    "PRESETS",
    "ESTIMATES",
    "CONTROLLERS",
    "make_controller",
]
