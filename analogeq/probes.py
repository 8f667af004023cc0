"""Probes of a force at a state: Jacobian spectrum, log-norm, Euler's critical step, asymmetry,
cycles and finite-time Lyapunov exponents (docs/physics.md sections 2, 3 and 5).

Everything here works on any force of the integrators' protocol (a callable F(z) on (batch, ...)),
batched and matrix-free: the Jacobian J = dF/dz is only ever applied to vectors (J v by automatic
differentiation, J^T u by a VJP). Samples are independent, so J is block-diagonal over the batch and
every spectral quantity is computed per sample.

* `jacobian_eigs(force, z, k, which)`: leading eigenvalues of J per sample (ARPACK `eigs` on a
  `LinearOperator`), complex tensor (batch, k); `which="euler"` gives the eigenvalues that dominate
  explicit Euler's map M = I + eps J. `info=True` returns an `EigResult` (convergence mask, JVP
  counts, the `which`/eps record).
* `lognorm(force, z)`: mu_2(J) = lambda_max((J + J^T) / 2) per sample (Lanczos, `eigsh`).
* `euler_critical_step(eigs)`: eps_crit = min over Re mu < 0 of -2 Re mu / |mu|^2, plus flags for
  eigenvalues with Re mu >= 0 (a genuine instability that no step size removes).
* `asymmetry(force, z)`: ||A||_F / ||S||_F (Hutchinson) and ||J v - J^T v|| / ||J v||.
* `detect_cycle(trace)`: the integrators' tail analysis, also on a `SettleResult` or its `Trace`.
* `ftle(force, z0, ...)`, `ftle_along(force, trajectory, dt)`: the largest finite-time Lyapunov
  exponent of a trajectory (a tangent vector propagated by JVPs, renormalized every step).
* `probe_report(force, z)`: all of the above at one state, as text and as a spectrum plot.

How J v is computed (`ad=`), and why. ARPACK needs hundreds of products with the *same* J.
Forward mode (`torch.func.jvp`) re-runs the force's forward pass with dual numbers on every product.
Reverse-over-reverse ("double VJP") builds the graph of u -> J^T u once; that map is linear in u, so
the VJP of it at any u0 is v -> J v, and each product is then one pass through a stored linear graph
(on the transformer block B1 T128 C512 in float32: ~10 ms per product instead of ~31 ms forward
mode; benchmarks/probes.py). `ad="auto"` takes the double VJP and falls back to forward mode when
the force has an operation without a double-backward rule; `ad="forward"` forces forward mode.

How a sample is isolated. A force with `select(index)` (every built-in force, the model's
`BlockForce`) is restricted to one sample, so a product costs one sample's evaluation. A plain
callable is evaluated on the whole batch with the other samples frozen (correct, since J is
block-diagonal, but each product then costs a whole-batch pass): give batched forces `select`.

Precision. ARPACK always runs in float64; the products run in the state's dtype, or in `dtype`
(e.g. `torch.float64`, which copies a model force to float64 rather than changing the caller's).
Float32 products carry rounding noise of ~1e-7 ||J||, which limits the reachable tolerance; the
default ARPACK tolerance follows the dtype (`default_tol`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor

from .integrators import CycleReport, SettleResult, Trace
from .integrators import detect_cycle as _detect_cycle_1d
from .model import BlockForce

Force = Callable[[Tensor], Tensor]

WHICH = ("LR", "LM", "SR", "LI", "euler")
"""Spectral selections of `jacobian_eigs`: largest real part, largest magnitude, smallest real
part, largest |imaginary part|, and "euler": largest |1 + eps mu| (the modes that dominate Euler's
map)."""

METHODS = ("auto", "arpack", "dense")
AD_MODES = ("auto", "reverse", "forward")

DENSE_MAX = 512
"""`method="auto"` builds the dense Jacobian of a sample with at most this many entries per sample
(state size n) and uses ARPACK above it. Measured on the transformer block (benchmarks/probes.py,
1 thread): dense 0.04 s vs ARPACK 0.2 s at n = 256, dense 1.0 s vs ARPACK 0.3 s at n = 1024; the
dense path (n products + an O(n^3) eigensolve) grows like n^3 and loses above n ~ 500."""

GUARD = 2
"""Extra eigenvalues ARPACK computes beyond the k returned (`jacobian_eigs(guard=...)`). A Krylov
method can declare k Ritz values converged while a true eigenvalue that belongs among them has
not entered the subspace yet; it then returns the (k+1)-th instead of the k-th. Asking for a
conjugate pair more makes the k-th interior to the wanted set: on the settled block T32 C128 in
float32, k = 6 missed the 5th/6th pair (Re -1.1604 vs -1.1612 of the 7th) without a guard and
found it with guard 2, for ~25 % more products (benchmarks/probes.py history)."""

_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
# float32 products are accurate to ~1e-7 ||J||; relative to an eigenvalue ~100x smaller than ||J||
# (the leading LR eigenvalues of a block sit near -leak, ||J|| is set by its stiffest mode) that is
# ~1e-5, so a tighter ARPACK tolerance would chase rounding noise and not converge.

# Tolerance of the transpose test that validates the double-VJP J v (`_transpose_error`, an error
# normalized so that a wrong fraction f of J reads ~ f): rounding reads ~ 1e-7 in float32 and
# ~ 1e-16 in float64 on the transformer block (T 6..128, C 16..512).
_TRANSPOSE_TOL = {torch.float64: 1e-8, torch.float32: 1e-3}

_NAN_C = complex(math.nan, math.nan)

_ARPACK_WHICH = {"LR": "LR", "LM": "LM", "SR": "SR", "LI": "LI", "euler": "LM"}


def default_tol(dtype: torch.dtype) -> float:
    """ARPACK's default relative tolerance on each Ritz value for products in `dtype`."""
    return _TOL[dtype]


# ------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class EigResult:
    """Leading Jacobian eigenvalues per sample, as computed by `jacobian_eigs(..., info=True)`.

    * `values`: (batch, k) complex (complex64 for float32 products, complex128 for float64), on the
      state's device, in units of 1/time (the force's time scale tau). Sorted best first by the
      `which` criterion, converged values first; entries ARPACK did not converge are NaN + NaN j
      and `converged` is False there.
    * `converged`: (batch, k) bool.
    * `which`, `eps`: the selection ("LR", "LM", "SR", "LI" or "euler") and, for "euler", the step
      size eps (time units) of the map M = I + eps J whose dominant eigenvalues were computed.
    * `method`: "arpack" or "dense" (per call; "auto" resolved).
    * `n_matvec`: (batch,) long, Jacobian-vector products spent per sample (dense: n per sample).
    * `residual`: (batch,) force residual ||F(z)|| / ||z|| at the probed state: the eigenvalues
      are those of the linearization at z, which is a stability statement only at a fixed point.
    * `tol`, `ncv`, `maxiter`: ARPACK settings used (None for dense); `dtype`: the products' dtype.
    * `messages`: per sample, "" or ARPACK's non-convergence message. A non-empty message means
      ARPACK stopped early for that sample: the values it returned are genuine eigenvalues, but an
      unconverged one may belong among the leading k (even when no slot is NaN, because the
      guard values filled them).
    """

    values: Tensor
    converged: Tensor
    which: str
    eps: float | None
    method: str
    n_matvec: Tensor
    residual: Tensor
    tol: float | None
    ncv: int | None
    maxiter: int | None
    dtype: torch.dtype
    messages: tuple[str, ...]
    wall_time: float = 0.0
    guard: int | None = None
    """Extra eigenvalues ARPACK computed beyond k (None for dense)."""

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def max_real(self) -> Tensor:
        """(batch,) largest Re mu among the converged eigenvalues (-inf where none converged)."""
        re = torch.where(self.converged, self.values.real, -math.inf)
        return re.amax(dim=1)

    def euler_factor(self, eps: float) -> Tensor:
        """|1 + eps mu| per eigenvalue, (batch, k): Euler's amplification of each mode per step."""
        eps = _check_positive("eps", eps)
        return (1 + eps * self.values).abs()

    def per_sample(self, i: int) -> Tensor:
        """The converged eigenvalues of sample i, 1-D complex tensor (best first)."""
        return self.values[i][self.converged[i]]


@dataclass(frozen=True)
class LognormResult:
    """mu_2(J) = lambda_max((J + J^T) / 2) per sample, from `lognorm(..., info=True)`.

    * `value`: (batch,) real, units 1/time; NaN where ARPACK did not converge (`converged` False).
      Every trajectory pair obeys d||z1 - z2||/dt <= mu_2 ||z1 - z2|| near z; mu_2 < 0 means the
      force contracts there, and it bounds every eigenvalue: Re mu <= mu_2.
    * `n_matvec`: (batch,) products with (J + J^T)/2 (each is one JVP and one VJP).
    """

    value: Tensor
    converged: Tensor
    method: str
    n_matvec: Tensor
    tol: float | None
    dtype: torch.dtype
    messages: tuple[str, ...]


@dataclass(frozen=True)
class EulerStep:
    """Explicit Euler's stability limit from a set of Jacobian eigenvalues.

    See docs/physics.md section 3.

    For mu = a + ib, |1 + eps mu| < 1 iff a < 0 and eps < -2a / (a^2 + b^2).

    * `eps_crit`: (batch,) real, time units: min over Re mu < 0 of -2 Re mu / |mu|^2; inf where no
      eigenvalue has Re mu < 0; NaN where no eigenvalue is known (all missing). Computed from the
      eigenvalues given, so it is an upper bound on the true eps_crit unless the limiting
      eigenvalue is among them (pass the `which="euler"` eigenvalues at the eps of interest:
      every mode that makes Euler unstable at that eps is among its largest |1 + eps mu|).
    * `limiting`: (batch,) complex, the eigenvalue attaining eps_crit (NaN where eps_crit is inf).
    * `unstable`: (batch,) bool, some Re mu > 0: the continuous dynamics is unstable there; no step
      size (and no integrator) settles it.
    * `nonnegative`: per sample, a 1-D complex tensor of the eigenvalues with Re mu >= 0 (empty
      when none). Re mu = 0 exactly is marginal: listed, but not `unstable`.
    * `n_eigs`: (batch,) how many finite eigenvalues were used (non-converged NaNs are skipped).
    """

    eps_crit: Tensor
    limiting: Tensor
    unstable: Tensor
    nonnegative: tuple[Tensor, ...]
    n_eigs: Tensor
    certified: Tensor | None = None
    """(batch,) bool from `find_eps_crit`: a probe of Euler's map at eps_crit found no mode with
    Re mu < 0 and |1 + eps_crit mu| > 1, so eps_crit is the true critical step (up to `rtol`), not
    only a bound. None for `euler_critical_step`, which sees only the eigenvalues it is given."""
    rounds: Tensor | None = None
    """(batch,) ARPACK runs spent by `find_eps_crit` per sample (None for `euler_critical_step`)."""

    @property
    def any_nonnegative(self) -> Tensor:
        """(batch,) bool: some eigenvalue has Re mu >= 0."""
        return torch.tensor([v.numel() > 0 for v in self.nonnegative], dtype=torch.bool,
                            device=self.eps_crit.device)

    def text(self, sample: int | None = None) -> str:
        """One line per sample: eps_crit, its limiting eigenvalue, eigenvalues with Re mu >= 0."""
        rows = range(self.eps_crit.numel()) if sample is None else [sample]
        out = []
        for i in rows:
            eps = float(self.eps_crit[i])
            if math.isnan(eps):
                head = "eps_crit unknown (no finite eigenvalue was given)"
            elif math.isinf(eps):
                head = "eps_crit = inf (no eigenvalue with Re mu < 0 among those given)"
            else:
                head = f"eps_crit = {eps:.4g} (limited by mu = {_fmt_c(self.limiting[i])})"
                if self.certified is None:
                    head += " [bound from the eigenvalues given]"
                elif not bool(self.certified[i]):
                    head += " [NOT certified: an upper bound]"
            bad = self.nonnegative[i]
            if bad.numel():
                kind = "UNSTABLE" if bool(self.unstable[i]) else "marginal"
                tail = f"; {kind}: Re mu >= 0 for " + ", ".join(_fmt_c(m) for m in bad)
            else:
                tail = "; all Re mu < 0"
            out.append(f"sample {i}: {head}{tail}")
        return "\n".join(out)


@dataclass(frozen=True)
class AsymmetryResult:
    """How far J is from symmetric, per sample (S = (J + J^T)/2, A = (J - J^T)/2).

    * `ratio`: (batch,) ||A||_F / ||S||_F, Hutchinson estimate sqrt(sum_j ||A v_j||^2 /
      sum_j ||S v_j||^2) over Rademacher probes v_j (E[v v^T] = I). 0 for a conservative
      (gradient) force; the asymmetry ratio r = ||A|| / sqrt(||A||^2 + ||S||^2)
      is `ratio / sqrt(1 + ratio^2)`.
    * `relative`: (batch,) mean over probes of ||J v - J^T v|| / ||J v|| (= 2 ||A v|| / ||J v||).
    * `relative_probes`: (n_probes, batch) the per-probe values behind `relative`.
    * `anti_sq`, `sym_sq`: (n_probes, batch) ||A v_j||^2 and ||S v_j||^2 (the Hutchinson samples;
      their spread gives the estimate's uncertainty).
    """

    ratio: Tensor
    relative: Tensor
    relative_probes: Tensor
    anti_sq: Tensor
    sym_sq: Tensor
    n_probes: int

    @property
    def ratio_stderr(self) -> Tensor:
        """(batch,) delta-method standard error of `ratio` from the probe-to-probe spread."""
        a, s = self.anti_sq, self.sym_sq
        n = a.shape[0]
        if n < 2:
            return torch.full_like(self.ratio, math.inf)
        ma, ms = a.mean(0), s.mean(0).clamp_min(torch.finfo(s.dtype).tiny)
        # r = sqrt(ma / ms): dr/dma = r / (2 ma), dr/dms = -r / (2 ms)
        va, vs = a.var(0) / n, s.var(0) / n
        cov = ((a - ma) * (s - ms)).sum(0) / (n - 1) / n
        r = self.ratio
        ga = r / (2 * ma.clamp_min(torch.finfo(a.dtype).tiny))
        gs = -r / (2 * ms)
        return (ga**2 * va + gs**2 * vs + 2 * ga * gs * cov).clamp_min(0).sqrt()


@dataclass(frozen=True)
class FTLEResult:
    """The largest finite-time Lyapunov exponent of a trajectory, per sample.

    * `exponent`: (batch,) in 1/time units: (1 / T) log(||v(T)|| / ||v(0)||) for the tangent v,
      averaged over the time T after `transient`. For explicit Euler with step eps it is the
      Euler map's exponent (at a fixed point -> max log|1 + eps mu| / eps, > 0 when Euler cycles
      or blows up); for "rk4" (or a fine trajectory) it approximates the continuous flow's
      (at a stable fixed point -> max Re mu; on a limit cycle -> 0).
    * `multiplier`: (batch,) exp(exponent * eps): the tangent's growth per step (Euler: compare
      with the spectral radius of M = I + eps J); NaN for `ftle_along` with varying steps.
    * `history`: (n_avg, batch) running estimate of the exponent after each averaged step (its
      convergence shows how far the "finite time" is from the limit).
    * `time`: (batch,) averaging time T per sample; `steps`: steps taken; `transient`: steps
      discarded before averaging (the tangent first aligns with the leading direction).
    * `diverged`: (batch,) bool, the state or tangent became non-finite; such a sample stops
      there and its exponent covers the finite part (NaN if that part is empty).
    * `z`: the final state (batch, ...) (`ftle` only; the trajectory's last state for ftle_along).
    """

    exponent: Tensor
    multiplier: Tensor
    history: Tensor
    time: Tensor
    steps: int
    transient: int
    method: str
    eps: float | None
    diverged: Tensor
    z: Tensor


# ------------------------------------------------------------------------------------------------
# input checks


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive finite real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite real number, got {value}")
    return float(value)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    rng = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer {rng}, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in {rng}, got {value}")
    return int(value)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _check_force(force: Any) -> None:
    if not callable(force):
        raise TypeError(f"force must be callable F(z) -> dz/dt, got {type(force).__name__}")


def _check_state(z: Any, name: str = "z") -> Tensor:
    if not isinstance(z, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (batch, ...), got {type(z).__name__}"
        )
    if not z.is_floating_point():
        raise TypeError(
            f"{name} must be a real floating tensor (the Jacobian of the real force), got {z.dtype}"
        )
    if z.ndim < 2 or z.shape[0] < 1 or z[0].numel() < 1:
        raise ValueError(
            f"{name} must have shape (batch, ...) with batch >= 1 and at least one entry per "
            f"sample, got {tuple(z.shape)}; add a batch dimension with {name}.unsqueeze(0)"
        )
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    return z.detach()


def _check_dtype(z: Tensor, dtype: Any) -> torch.dtype:
    """The dtype the products run in: `dtype`, or the state's; float32 or float64 only."""
    target = z.dtype if dtype is None else dtype
    if not isinstance(target, torch.dtype) or target not in (torch.float32, torch.float64):
        if dtype is None:
            raise TypeError(
                f"z has dtype {z.dtype}; Jacobian probes need float32 or float64 products: pass "
                "dtype=torch.float32 or dtype=torch.float64"
            )
        raise TypeError(f"dtype must be None, torch.float32 or torch.float64, got {dtype!r}")
    return target


def _seed_generator(seed: Any) -> torch.Generator:
    """A CPU generator from an int seed, or the given generator (draws move to the device after)."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _randn(gen: torch.Generator, shape: Sequence[int], dtype: torch.dtype,
           device: torch.device) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64,
                       device=gen.device).to(device=device, dtype=dtype)


def _start_vector(gen: torch.Generator, n: int) -> np.ndarray:
    """ARPACK's starting vector, uniform in [-1, 1]^n (scipy's own choice), from `gen`."""
    u = torch.rand(n, generator=gen, dtype=torch.float64, device=gen.device)
    return (2 * u - 1).cpu().numpy()


# ------------------------------------------------------------------------------------------------
# the force in the requested dtype, restricted to one sample


def _force_in_dtype(force: Any, dtype: torch.dtype, z_dtype: torch.dtype) -> Any:
    """The force evaluating in `dtype`, never changing the caller's object.

    A `BlockForce` is rebound to a float64 (or float32) *copy* of its model; any `nn.Module` is
    copied and converted; an object with a `to(dtype)` method is asked for a converted copy; a plain
    callable is used as is (forces that cast their parameters to the state's dtype, like those of
    `analogeq.systems`, then simply evaluate in `dtype`).
    """
    if dtype == z_dtype:
        return force
    if isinstance(force, BlockForce):
        model = copy.deepcopy(force.model).to(dtype)
        return model.force(force.inputs)
    if isinstance(force, torch.nn.Module):
        return copy.deepcopy(force).to(dtype)
    to = getattr(force, "to", None)
    if callable(to):
        return to(dtype)
    return force


def _evaluate(force: Any, z: Tensor, dtype: torch.dtype) -> Tensor:
    """F(z) on the whole batch, checked: shape, dtype and finiteness."""
    try:
        with torch.no_grad():
            out = force(z)
    except (RuntimeError, TypeError) as exc:
        if z.dtype != dtype:
            raise
        raise TypeError(
            f"force could not be evaluated on a {z.dtype} state ({exc}); to probe in {dtype} the "
            "force must accept such states (give it a `to(dtype)` method returning a converted "
            "copy)"
        ) from exc
    if not isinstance(out, Tensor):
        raise TypeError(f"force must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != z.shape:
        raise ValueError(
            f"force returned shape {tuple(out.shape)}, expected the state's shape {tuple(z.shape)}"
        )
    if out.dtype != z.dtype:
        raise TypeError(
            f"force returned dtype {out.dtype} on a {z.dtype} state; to probe in {z.dtype} the "
            "force must evaluate in that dtype (give it a `to(dtype)` method returning a converted "
            "copy)"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError("force is not finite at z (F(z) holds NaN or inf): no Jacobian to probe")
    return out.detach()


def _residual(z: Tensor, f: Tensor) -> Tensor:
    dims = tuple(range(1, z.ndim))
    zn = torch.linalg.vector_norm(z, dim=dims)
    return torch.linalg.vector_norm(f, dim=dims) / zn.clamp_min(torch.finfo(zn.dtype).tiny)


def _one_sample(force: Any, z: Tensor, i: int) -> tuple[Force, Tensor]:
    """(f_i, z_i): sample i's force on states (1, ...) and its state z[i:i+1].

    With `select`, f_i evaluates only sample i. Without it, f_i embeds its argument into the full
    batch (other samples frozen at z) and returns row i: correct because samples are independent,
    but every evaluation is a whole-batch pass.
    """
    zi = z[i : i + 1]
    if z.shape[0] == 1:
        return force, zi
    select = getattr(force, "select", None)
    if callable(select):
        return select(torch.tensor([i], device=z.device)), zi
    before, after = z[:i], z[i + 1 :]

    def embedded(v: Tensor) -> Tensor:
        return force(torch.cat((before, v, after)))[i : i + 1]

    return embedded, zi


class _Linearized:
    """J v and J^T u of a force at a fixed state z (any batch), reusable across many products.

    `ad="reverse"`: u -> J^T u is one VJP closure (graph built once); v -> J v is the VJP of that
    linear map (reverse-over-reverse), also built once, so each product is one pass through a
    stored linear graph. `ad="forward"`: J v = torch.func.jvp on every call (a forward pass with
    dual numbers each time). `ad="auto"`: reverse, falling back to forward when a double-backward
    rule is missing. J^T u always comes from the once-built VJP.
    """

    def __init__(self, fn: Force, z: Tensor, ad: str, need_jv: bool = True):
        self.fn, self.z, self.count = fn, z, 0
        self.mode = "forward" if ad == "forward" else "reverse"
        with torch.no_grad():  # the transforms differentiate w.r.t. z only, never the parameters
            out, vjp_fn = torch.func.vjp(fn, z)
        self._vjp = vjp_fn
        self._vjp2: Callable[[Tensor], tuple[Tensor, ...]] | None = None
        if not need_jv or self.mode == "forward":
            return
        try:
            with torch.no_grad():
                # J^T u is linear in u, so its VJP at any u0 is v -> J v; u0 = 1 avoids kernels
                # that special-case zero gradients.
                _, vjp2 = torch.func.vjp(self._jt_raw, torch.ones_like(out))
                error = self._transpose_error(vjp2)  # a missing double-backward rule raises here
        except (RuntimeError, NotImplementedError):
            if ad == "reverse":
                raise
            self.mode = "forward"
            return
        if error <= _TRANSPOSE_TOL[z.dtype]:
            self._vjp2 = vjp2
        else:
            # An op whose backward is not differentiable (`once_differentiable`, a detach in a
            # custom backward) makes the double VJP silently drop its part of J.
            if ad == "reverse":
                raise RuntimeError(
                    f"ad='reverse': the double-VJP J v fails the transpose test <u, J v> = "
                    f"<J^T u, v> (relative error {error:.2e}); some operation of the force has no "
                    "correct double-backward rule: use ad='forward' or 'auto'"
                )
            self.mode = "forward"

    def _transpose_error(self, vjp2: Callable[[Tensor], tuple[Tensor, ...]]) -> float:
        """|<u, J v> - <J^T u, v>| * sqrt(n) / (||u|| ||J v|| + ||J^T u|| ||v||), fixed random u, v.

        J^T u comes from the first-order VJP (the reference); J v from the double VJP under test.
        For random u, v the inner products are ~ 1/sqrt(n) of the norms' product, so the sqrt(n)
        makes a wrong fraction f of J show as an error ~ f, whatever the state size.
        """
        gen = torch.Generator().manual_seed(12345)
        u = _randn(gen, self.z.shape, self.z.dtype, self.z.device)
        v = _randn(gen, self.z.shape, self.z.dtype, self.z.device)
        with torch.no_grad():
            jv, jtu = vjp2(v)[0], self._vjp(u)[0]
        lhs, rhs = float((u * jv).sum()), float((jtu * v).sum())
        scale = float(torch.linalg.vector_norm(u) * torch.linalg.vector_norm(jv)
                      + torch.linalg.vector_norm(jtu) * torch.linalg.vector_norm(v))
        n = self.z.numel()
        return abs(lhs - rhs) * math.sqrt(n) / max(scale, torch.finfo(self.z.dtype).tiny)

    def _jt_raw(self, u: Tensor) -> Tensor:
        return self._vjp(u)[0]

    def jv(self, v: Tensor) -> Tensor:
        """J v, v shaped like z."""
        self.count += 1
        with torch.no_grad():
            if self._vjp2 is not None:
                return self._vjp2(v)[0]
            return torch.func.jvp(self.fn, (self.z,), (v,))[1]

    def jtv(self, u: Tensor) -> Tensor:
        """J^T u, u shaped like F(z)."""
        with torch.no_grad():
            return self._vjp(u)[0]


def _dense_jacobian(lin: _Linearized, n: int, chunk: int = 256) -> Tensor:
    """(n, n) Jacobian of a single-sample linearization (z of shape (1, ...)), in lin.z's dtype.

    Rows J^T e_j (reverse) or columns J e_j (forward), a chunk of basis vectors at a time through
    torch.func.vmap (a plain loop when the force has no batching rule for some operation).
    """
    shape, dtype, device = lin.z.shape, lin.z.dtype, lin.z.device
    reverse = lin.mode == "reverse"
    apply = lin.jtv if reverse else lin.jv
    blocks = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        basis = torch.zeros(m, n, dtype=dtype, device=device)
        basis[torch.arange(m), torch.arange(start, start + m)] = 1
        basis = basis.view(m, *shape)
        try:
            out = torch.func.vmap(apply)(basis)
        except (RuntimeError, NotImplementedError):
            out = torch.stack([apply(b) for b in basis])
        blocks.append(out.reshape(m, n))
    stacked = torch.cat(blocks)
    return stacked if reverse else stacked.T


# ------------------------------------------------------------------------------------------------
# jacobian_eigs


def _sort_key(values: np.ndarray, which: str, eps: float | None) -> np.ndarray:
    """Indices that order eigenvalues best first for `which` (conjugate pairs: +imag first)."""
    re, im = values.real, values.imag
    if which == "LR":
        primary = -re
    elif which == "SR":
        primary = re
    elif which == "LM":
        primary = -np.abs(values)
    elif which == "LI":
        primary = -np.abs(im)
    else:
        primary = -np.abs(1 + eps * values)  # type: ignore[operator]
    return np.lexsort((-im, primary))


def _canonical_pairs(vals: np.ndarray) -> np.ndarray:
    """A complex eigenvalue whose conjugate is missing from the set is given Im > 0.

    J is real, so eigenvalues come in conjugate pairs and every `which` criterion ranks both
    members equally; when k cuts through a pair ARPACK returns either member. Reporting the
    upper one makes results repeatable.
    """
    out = vals.copy()
    scale = np.maximum(np.abs(vals), 1.0)
    for j, v in enumerate(vals):
        if v.imag != 0 and not np.any(np.abs(vals - np.conj(v)) <= 1e-6 * scale[j]):
            out[j] = complex(v.real, abs(v.imag))
    return out


@contextlib.contextmanager
def _serial_host_blas() -> Iterator[None]:
    """Run the host BLAS (numpy's and scipy's OpenBLAS, not torch's) on one thread meanwhile.

    Why: ARPACK's own BLAS work is small (products of n x ncv blocks), but an OpenBLAS pool with
    several threads spin-waits between calls and fights torch's OpenMP pool for the same cores. On
    2 cores (torch 2 threads, B1 T128 C512, top-6) the same ARPACK run took 15.0 s with OpenBLAS
    at 2 threads and 3.0-3.7 s at 1 (benchmarks/probes.py). Needs `threadpoolctl` (installed with
    scikit-learn); without it this does nothing.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        yield
        return
    torch_dir = os.path.dirname(torch.__file__)
    libs = [lib for lib in ThreadpoolController().lib_controllers
            if lib.user_api == "blas" and not lib.filepath.startswith(torch_dir)]
    before = [lib.num_threads for lib in libs]
    try:
        for lib in libs:
            lib.set_num_threads(1)
        yield
    finally:
        for lib, n in zip(libs, before, strict=True):
            lib.set_num_threads(n)


def _arpack_eigs(op_apply: Callable[[np.ndarray], np.ndarray], n: int, k: int, which: str,
                 ncv: int, tol: float, maxiter: int, v0: np.ndarray) -> tuple[np.ndarray, str]:
    """ARPACK on a real operator; (eigenvalues that converged, message ("" if all did))."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs

    op = LinearOperator((n, n), matvec=op_apply, dtype=np.float64)
    try:
        with _serial_host_blas():
            vals = eigs(op, k=k, which=which, v0=v0, ncv=ncv, tol=tol, maxiter=maxiter,
                        return_eigenvectors=False)
        return np.asarray(vals, dtype=np.complex128), ""
    except ArpackNoConvergence as exc:
        vals = np.asarray(exc.eigenvalues, dtype=np.complex128).reshape(-1)
        return vals, str(exc)


def _resolve_method(method: str, n: int, k_needed: int) -> str:
    if method != "auto":
        return method
    return "dense" if (n <= DENSE_MAX or k_needed > n - 2) else "arpack"


def _default_ncv(k: int, n: int) -> int:
    # scipy's default is max(2k + 1, 20). The leading real parts of a transformer block cluster
    # (many modes near -leak), and a wider Krylov space needs fewer restarts there: for k = 6 on
    # the settled block T128 C512, ncv 20 / 32 / 48 took 353 / 280 / 291 products. Memory: ncv
    # vectors of n float64 per sample.
    return min(n, max(2 * k + 20, 20))


@overload
def jacobian_eigs(force: Force, z: Tensor, k: int = ..., which: str = ..., *,
                  eps: float | None = ..., method: str = ..., dtype: torch.dtype | None = ...,
                  tol: float | None = ..., ncv: int | None = ..., maxiter: int | None = ...,
                  guard: int = ..., seed: int | torch.Generator = ..., ad: str = ...,
                  info: Literal[False] = ...) -> Tensor: ...


@overload
def jacobian_eigs(force: Force, z: Tensor, k: int = ..., which: str = ..., *,
                  eps: float | None = ..., method: str = ..., dtype: torch.dtype | None = ...,
                  tol: float | None = ..., ncv: int | None = ..., maxiter: int | None = ...,
                  guard: int = ..., seed: int | torch.Generator = ..., ad: str = ...,
                  info: Literal[True]) -> EigResult: ...


def jacobian_eigs(
    force: Force,
    z: Tensor,
    k: int = 6,
    which: str = "LR",
    *,
    eps: float | None = None,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    tol: float | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
    guard: int = GUARD,
    seed: int | torch.Generator = 0,
    ad: str = "auto",
    info: bool = False,
) -> Tensor | EigResult:
    """Leading eigenvalues of the Jacobian J = dF/dz at z, per sample, matrix-free.

    Args:
        force: F(z) on states (batch, ...); `select(index)` makes per-sample products cheap.
        z: the state, real float32/float64 tensor (batch, ...), n = prod(z.shape[1:]) per sample.
            Usually a fixed point (F(z) = 0): only there is the spectrum a stability statement.
        k: eigenvalues per sample, an integer in [1, n] (ARPACK needs k <= n - 2; "auto" then
            switches to the dense path).
        which: one of `WHICH`: "LR" largest real part (stability of the continuous dynamics),
            "LM" largest magnitude, "SR" smallest real part, "LI" largest |imaginary part|, or
            "euler": the eigenvalues mu with the largest |1 + eps mu| (the modes that dominate
            explicit Euler's map M = I + eps J; ARPACK "LM" on M, then mu = (lambda - 1) / eps).
        eps: Euler step (time units, > 0); required for which="euler", not allowed otherwise.
        method: "auto" (dense for n <= `DENSE_MAX` or k > n - 2, else ARPACK), "arpack" or "dense"
            (the sample's full n x n Jacobian from n products, then torch.linalg.eigvals).
        dtype: dtype of the products: None (the state's) or torch.float32/float64. Float64 copies
            a model force to float64 (see module docstring); ARPACK itself always runs in float64.
        tol: ARPACK's relative tolerance on each Ritz value (> 0); default `default_tol(dtype)`.
        ncv: Krylov basis size per restart, integer in [k' + 2, n] with k' = min(k + guard,
            n - 2) the eigenvalues ARPACK computes; default min(n, max(2k' + 20, 20)).
        maxiter: ARPACK restarts (Arnoldi update iterations), >= 1; default 300. Each restart costs
            about ncv - k' products.
        guard: extra eigenvalues ARPACK computes and drops (integer >= 0, default `GUARD` = 2),
            so that a late-converging eigenvalue at the k-th place is not replaced by the next.
        seed: int or torch.Generator for ARPACK's starting vectors (one per sample): repeatable.
        ad: "auto", "reverse" or "forward": how J v is computed (module docstring).
        info: False -> the (batch, k) tensor; True -> an `EigResult` with the convergence mask,
            product counts, residual at z and the which/eps record.

    Returns:
        (batch, k) complex tensor on z's device (complex64 for float32 products, complex128 for
        float64), units 1/time, sorted best first by `which`. When ARPACK does not converge for
        every value it returns those that did: the rest are NaN + NaN j, a RuntimeWarning says how
        many, and `info=True` gives the mask (`EigResult.converged`) and ARPACK's messages.

    Shift-invert (eigenvalues nearest a target sigma) is not offered: it needs an inner linear
    solve (J - sigma I)^-1 per product, and inexact Krylov solves break ARPACK's Arnoldi relation.
    """
    t0 = time.perf_counter()
    _check_force(force)
    z = _check_state(z)
    which = _check_choice("which", which, WHICH)
    if which == "euler":
        if eps is None:
            raise ValueError('eps must be given (a positive step size) for which="euler"')
        eps = _check_positive("eps", eps)
    elif eps is not None:
        raise ValueError(f'eps is only used with which="euler", got eps={eps} with which={which!r}')
    method = _check_choice("method", method, METHODS)
    ad = _check_choice("ad", ad, AD_MODES)
    cdtype = _check_dtype(z, dtype)
    batch, n = z.shape[0], z[0].numel()
    k = _check_int("k", k, 1, n)
    method = _resolve_method(method, n, k)
    if method == "arpack" and k > n - 2:
        raise ValueError(
            f"k must be in [1, n - 2] = [1, {n - 2}] for method='arpack' (ARPACK needs k < n - 1); "
            "use method='dense' or 'auto'"
        )
    guard = _check_int("guard", guard, 0)
    k_arpack = min(k + guard, n - 2)  # ARPACK needs k < n - 1
    if method == "arpack":
        tol = default_tol(cdtype) if tol is None else _check_positive("tol", tol)
        ncv = _default_ncv(k_arpack, n) if ncv is None else _check_int("ncv", ncv, k_arpack + 2, n)
        maxiter = 300 if maxiter is None else _check_int("maxiter", maxiter, 1)
    else:
        for name, value in (("tol", tol), ("ncv", ncv), ("maxiter", maxiter)):
            if value is not None:
                raise ValueError(f"{name} is an ARPACK setting; it is not used with method='dense'")
    gen = _seed_generator(seed)

    work_force = _force_in_dtype(force, cdtype, z.dtype)
    zc = z.to(cdtype)
    f0 = _evaluate(work_force, zc, cdtype)
    complex_dtype = torch.complex128 if cdtype == torch.float64 else torch.complex64
    values = torch.full((batch, k), complex(math.nan, math.nan), dtype=torch.complex128)
    converged = torch.zeros(batch, k, dtype=torch.bool)
    counts = torch.zeros(batch, dtype=torch.long)
    messages: list[str] = []
    for i in range(batch):
        fn, zi = _one_sample(work_force, zc, i)
        # The dense path needs J^T rows only (reverse) unless forward mode was asked for.
        lin = _Linearized(fn, zi, ad, need_jv=method == "arpack" or ad == "forward")
        if method == "dense":
            J = _dense_jacobian(lin, n).to(torch.float64)
            vals = torch.linalg.eigvals(J).cpu().numpy()
            msg = ""
        else:
            v0 = _start_vector(gen, n)
            shape = zi.shape
            scale = eps

            def apply(x: np.ndarray, lin: _Linearized = lin, shape: Any = shape,
                      scale: float | None = scale) -> np.ndarray:
                v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
                v = v.to(device=zc.device, dtype=cdtype).view(shape)
                out = lin.jv(v).reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
                return out if scale is None else x + scale * out  # Euler: M x = x + eps J x

            vals, msg = _arpack_eigs(apply, n, k_arpack, _ARPACK_WHICH[which], ncv, tol,
                                     maxiter, v0)
            if which == "euler":
                vals = (vals - 1.0) / eps
        vals = _canonical_pairs(vals[np.isfinite(vals)])
        order = _sort_key(vals, which, eps)[:k]
        m = order.size
        values[i, :m] = torch.from_numpy(vals[order])
        converged[i, :m] = True
        counts[i] = lin.count if method == "arpack" else n
        messages.append(msg)
    result = EigResult(
        values=values.to(device=z.device, dtype=complex_dtype),
        converged=converged.to(z.device),
        which=which,
        eps=eps,
        method=method,
        n_matvec=counts.to(z.device),
        residual=_residual(zc, f0),
        tol=tol if method == "arpack" else None,
        ncv=ncv if method == "arpack" else None,
        maxiter=maxiter if method == "arpack" else None,
        dtype=cdtype,
        messages=tuple(messages),
        wall_time=time.perf_counter() - t0,
        guard=k_arpack - k if method == "arpack" else None,
    )
    if info:
        return result
    stopped = [i for i, m in enumerate(messages) if m]
    if stopped:
        missing = int((~result.converged).sum())
        warnings.warn(
            f"jacobian_eigs: ARPACK did not converge for sample(s) {stopped} ({missing} of "
            f"{batch * k} values are NaN; the others are genuine eigenvalues but the set may miss "
            "a leading one); raise maxiter or ncv, loosen tol, or pass info=True for the mask",
            RuntimeWarning,
            stacklevel=2,
        )
    return result.values


# ------------------------------------------------------------------------------------------------
# lognorm


@overload
def lognorm(force: Force, z: Tensor, *, method: str = ..., dtype: torch.dtype | None = ...,
            tol: float | None = ..., ncv: int | None = ..., maxiter: int | None = ...,
            seed: int | torch.Generator = ..., ad: str = ...,
            info: Literal[False] = ...) -> Tensor: ...


@overload
def lognorm(force: Force, z: Tensor, *, method: str = ..., dtype: torch.dtype | None = ...,
            tol: float | None = ..., ncv: int | None = ..., maxiter: int | None = ...,
            seed: int | torch.Generator = ..., ad: str = ...,
            info: Literal[True]) -> LognormResult: ...


def lognorm(
    force: Force,
    z: Tensor,
    *,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    tol: float | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
    seed: int | torch.Generator = 0,
    ad: str = "auto",
    info: bool = False,
) -> Tensor | LognormResult:
    """Log-norm mu_2(J) = lambda_max((J + J^T) / 2) of the Jacobian at z, per sample.

    Matrix-free: Lanczos (scipy `eigsh`, which="LA", k=1) on v -> (J v + J^T v) / 2, one JVP and one
    VJP per product. mu_2 < 0 means the flow contracts near z (at rate >= -mu_2); it bounds every
    eigenvalue from above (Re mu <= mu_2), so mu_2 - max Re mu measures non-normality.

    Args:
        force, z: as in `jacobian_eigs`.
        method: "auto" (dense for n <= `DENSE_MAX`), "arpack" (Lanczos) or "dense"
            (torch.linalg.eigvalsh of the symmetric part of the n x n Jacobian).
        dtype: None (the state's) or torch.float32/float64 (the float64 option).
        tol, ncv, maxiter: Lanczos settings (ncv in [2, n], default min(n, 20); maxiter >= 1,
            default 300); tol default `default_tol(dtype)`.
        seed: int or torch.Generator for the starting vectors.
        ad: how J v is computed ("auto", "reverse", "forward"); J^T u is always a VJP.
        info: True -> a `LognormResult` with the convergence mask and product counts.

    Returns:
        (batch,) real tensor on z's device in the products' dtype, units 1/time. NaN
        where Lanczos did not converge, with a RuntimeWarning (`info=True` for the mask).
    """
    _check_force(force)
    z = _check_state(z)
    method = _check_choice("method", method, METHODS)
    ad = _check_choice("ad", ad, AD_MODES)
    cdtype = _check_dtype(z, dtype)
    batch, n = z.shape[0], z[0].numel()
    if method == "auto":
        method = "dense" if n <= DENSE_MAX or n < 2 else "arpack"
    if method == "arpack":
        if n < 2:
            raise ValueError("method='arpack' needs n >= 2 entries per sample; use method='dense'")
        tol = default_tol(cdtype) if tol is None else _check_positive("tol", tol)
        ncv = min(n, 20) if ncv is None else _check_int("ncv", ncv, 2, n)
        maxiter = 300 if maxiter is None else _check_int("maxiter", maxiter, 1)
    else:
        for name, value in (("tol", tol), ("ncv", ncv), ("maxiter", maxiter)):
            if value is not None:
                raise ValueError(f"{name} is a Lanczos setting; it is not used with method='dense'")
    gen = _seed_generator(seed)
    work_force = _force_in_dtype(force, cdtype, z.dtype)
    zc = z.to(cdtype)
    _evaluate(work_force, zc, cdtype)

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    value = torch.full((batch,), math.nan, dtype=torch.float64)
    converged = torch.zeros(batch, dtype=torch.bool)
    counts = torch.zeros(batch, dtype=torch.long)
    messages: list[str] = []
    for i in range(batch):
        fn, zi = _one_sample(work_force, zc, i)
        lin = _Linearized(fn, zi, ad, need_jv=method == "arpack" or ad == "forward")
        msg = ""
        if method == "dense":
            J = _dense_jacobian(lin, n).to(torch.float64)
            value[i] = torch.linalg.eigvalsh(0.5 * (J + J.T)).max()
            converged[i] = True
            counts[i] = n
        else:
            shape = zi.shape
            used = [0]

            def apply(x: np.ndarray, lin: _Linearized = lin, shape: Any = shape,
                      used: list[int] = used) -> np.ndarray:
                used[0] += 1
                v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
                v = v.to(device=zc.device, dtype=cdtype).view(shape)
                s = 0.5 * (lin.jv(v) + lin.jtv(v))
                return s.reshape(-1).to(device="cpu", dtype=torch.float64).numpy()

            op = LinearOperator((n, n), matvec=apply, dtype=np.float64)
            v0 = _start_vector(gen, n)
            try:
                with _serial_host_blas():
                    vals = eigsh(op, k=1, which="LA", v0=v0, ncv=ncv, tol=tol, maxiter=maxiter,
                                 return_eigenvectors=False)
                value[i] = float(np.max(vals))
                converged[i] = True
            except ArpackNoConvergence as exc:
                if np.size(exc.eigenvalues):
                    value[i] = float(np.max(exc.eigenvalues))
                    converged[i] = True
                msg = str(exc)
            counts[i] = used[0]
        messages.append(msg)
    result = LognormResult(
        value=value.to(device=z.device, dtype=cdtype),
        converged=converged.to(z.device),
        method=method,
        n_matvec=counts.to(z.device),
        tol=tol if method == "arpack" else None,
        dtype=cdtype,
        messages=tuple(messages),
    )
    if info:
        return result
    missing = int((~result.converged).sum())
    if missing:
        warnings.warn(
            f"lognorm: Lanczos did not converge for {missing} of {batch} samples (NaN there); "
            "raise maxiter or ncv, loosen tol, or pass info=True for the mask",
            RuntimeWarning,
            stacklevel=2,
        )
    return result.value


# ------------------------------------------------------------------------------------------------
# euler_critical_step


def euler_critical_step(eigs: Tensor | EigResult | np.ndarray | Sequence[complex]) -> EulerStep:
    """Explicit Euler's critical step eps_crit from Jacobian eigenvalues, per sample.

    eps_crit = min over eigenvalues with Re mu < 0 of -2 Re mu / |mu|^2 (the largest step with
    |1 + eps mu| < 1 for all of them); inf when none has Re mu < 0. Eigenvalues with Re mu >= 0 are
    reported (`EulerStep.nonnegative`, `unstable`): the continuous dynamics itself is then not
    stable there, and no step size helps (docs/physics.md section 3).

    Args:
        eigs: complex eigenvalues (batch, k) (e.g. `jacobian_eigs`), a 1-D (k,) set for a single
            sample, or an `EigResult` (its non-converged entries are skipped). NaN entries are
            skipped (ARPACK's non-converged values); a sample with no finite eigenvalue gets
            eps_crit NaN (unknown), and an infinite eigenvalue is a ValueError.

    Returns:
        An `EulerStep`, tensors on the eigenvalues' device.
    """
    if isinstance(eigs, EigResult):
        vals = torch.where(eigs.converged, eigs.values,
                           torch.full_like(eigs.values, complex(math.nan, math.nan)))
    elif isinstance(eigs, Tensor):
        vals = eigs
    elif isinstance(eigs, np.ndarray | list | tuple):
        vals = torch.as_tensor(np.asarray(eigs, dtype=np.complex128))
    else:
        raise TypeError(
            f"eigs must be a complex tensor (batch, k), an EigResult or an array, got "
            f"{type(eigs).__name__}"
        )
    if vals.ndim == 1:
        vals = vals.unsqueeze(0)
    if vals.ndim != 2:
        raise ValueError(f"eigs must have shape (batch, k) or (k,), got {tuple(vals.shape)}")
    if not (vals.is_complex() or vals.is_floating_point()):
        raise TypeError(f"eigs must be complex (or real floating) eigenvalues, got {vals.dtype}")
    if not vals.is_complex():
        vals = vals.to(torch.complex128 if vals.dtype == torch.float64 else torch.complex64)
    re, im = vals.real, vals.imag
    if bool((torch.isinf(re) | torch.isinf(im)).any()):
        raise ValueError("eigs must be finite (NaN marks a missing value); an infinite eigenvalue "
                         "means the Jacobian itself is not finite there")
    finite = torch.isfinite(re) & torch.isfinite(im)
    stable = finite & (re < 0)
    ratio = torch.where(stable, -2 * re / (re * re + im * im).clamp_min(torch.finfo(re.dtype).tiny),
                        math.inf)
    eps_crit, idx = ratio.min(dim=1)
    # A sample without a single known eigenvalue has an unknown step limit (NaN), never "any
    # step is safe" (inf).
    eps_crit = torch.where(finite.any(dim=1), eps_crit, math.nan)
    limiting = vals.gather(1, idx[:, None])[:, 0]
    limiting = torch.where(torch.isfinite(eps_crit), limiting, complex(math.nan, math.nan))
    unstable = (finite & (re > 0)).any(dim=1)
    nonneg = finite & (re >= 0)
    nonnegative = tuple(vals[i][nonneg[i]] for i in range(vals.shape[0]))
    return EulerStep(eps_crit, limiting, unstable, nonnegative, finite.sum(dim=1))


def _crit(vals: np.ndarray) -> np.ndarray:
    """-2 Re mu / |mu|^2 for Re mu < 0, inf otherwise (numpy, complex input)."""
    out = np.full(vals.shape, np.inf)
    stable = np.isfinite(vals) & (vals.real < 0)
    out[stable] = -2 * vals.real[stable] / np.abs(vals[stable]) ** 2
    return out


def _dedupe(vals: np.ndarray, rel: float = 1e-6) -> np.ndarray:
    """Finite eigenvalues with near-duplicates (the same mode found by several runs) removed."""
    vals = vals[np.isfinite(vals)]
    kept: list[complex] = []
    for v in vals[np.lexsort((vals.imag, vals.real))]:
        if not kept or abs(v - kept[-1]) > rel * max(1.0, abs(v)):
            kept.append(complex(v))
    return np.asarray(kept, dtype=np.complex128)


def find_eps_crit(
    force: Force,
    z: Tensor,
    *,
    k: int = 6,
    known: Tensor | None = None,
    rtol: float = 1e-3,
    max_rounds: int = 10,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    tol: float | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
    seed: int | torch.Generator = 0,
    ad: str = "auto",
) -> EulerStep:
    """Explicit Euler's critical step at z, found (not bounded) by probing Euler's map, per sample.

    `euler_critical_step(eigs)` is only as good as the eigenvalues it is given: the mode that
    limits Euler is often neither of largest real part nor of largest magnitude (a stiff *rotating*
    mode, docs/physics.md section 3). This search closes the gap:

    1. start from eps_hat = min over the known eigenvalues (`known`, plus the k of largest
       magnitude) of -2 Re mu / |mu|^2, an upper bound on eps_crit;
    2. compute the k eigenvalues with the largest |1 + eps_hat mu| (`which="euler"`). If eps_hat >
       eps_crit, the limiting mode has |1 + eps_hat mu| > 1 and is among them (everything with
       Re mu < 0 and |.| <= 1 ranks below it): lower eps_hat to the smallest -2 Re mu / |mu|^2
       found and repeat. If no mode found lowers eps_hat by more than `rtol` (relative), no mode is
       unstable at eps_hat and eps_hat = eps_crit: `certified`.

    Each round is one ARPACK run on one sample; 2-3 rounds are typical. Where `method` resolves
    to "dense" (small n) the whole spectrum is computed once and eps_crit is exact (1 round).
    Modes with Re mu >= 0 have
    |1 + eps mu| >= 1 at every eps and take slots of the k; when all k slots hold such modes the
    result is not certified (raise k).

    Args:
        force, z: as in `jacobian_eigs`.
        k: eigenvalues per ARPACK run (see `jacobian_eigs`).
        known: optional eigenvalues already computed, (batch, m) complex (NaN entries skipped),
            e.g. `jacobian_eigs(...)` of which "LR" and "euler": they seed eps_hat and the
            Re mu >= 0 flags.
        rtol: relative tolerance on eps_crit, in (0, 0.5) (default 1e-3, well above ARPACK's
            float32 accuracy).
        max_rounds: Euler-map probes per sample, integer >= 1.
        method, dtype, tol, ncv, maxiter, seed, ad: as in `jacobian_eigs`.

    Returns:
        An `EulerStep` with `certified` and `rounds` set; `unstable`/`nonnegative` cover every
        eigenvalue seen (known, largest magnitude, and all Euler probes).
    """
    _check_force(force)
    z = _check_state(z)
    if isinstance(rtol, bool) or not isinstance(rtol, int | float) or not 0 < rtol < 0.5:
        raise ValueError(f"rtol must be a real number in (0, 0.5), got {rtol!r}")
    max_rounds = _check_int("max_rounds", max_rounds, 1)
    cdtype = _check_dtype(z, dtype)
    batch = z.shape[0]
    if known is not None:
        if not isinstance(known, Tensor) or known.ndim != 2 or known.shape[0] != batch:
            got = tuple(known.shape) if isinstance(known, Tensor) else type(known).__name__
            raise ValueError(f"known must be a complex tensor (batch={batch}, m), got {got}")
    gen = _seed_generator(seed)
    work_force = _force_in_dtype(force, cdtype, z.dtype)
    zc = z.to(cdtype)
    _evaluate(work_force, zc, cdtype)
    opts: dict[str, Any] = dict(k=k, method=method, tol=tol, ncv=ncv, maxiter=maxiter, ad=ad,
                                seed=gen, info=True)
    eps_out = torch.full((batch,), math.inf, dtype=torch.float64)
    limiting = torch.full((batch,), complex(math.nan, math.nan), dtype=torch.complex128)
    certified = torch.zeros(batch, dtype=torch.bool)
    rounds = torch.zeros(batch, dtype=torch.long)
    seen_all: list[np.ndarray] = []
    n = z[0].numel()
    dense = _resolve_method(_check_choice("method", method, METHODS), n, k) == "dense"
    for i in range(batch):
        fn, zi = _one_sample(work_force, zc, i)
        seen = [] if known is None else [known[i].detach().cpu().numpy().astype(np.complex128)]
        if dense:  # the whole spectrum at the price of one dense Jacobian: eps_crit is exact
            full = jacobian_eigs(fn, zi, k=n, method="dense", ad=ad)[0].cpu().numpy()
            seen.append(full.astype(np.complex128))
            crit = _crit(seen[-1])
            finite = bool(np.isfinite(crit).any())
            eps_out[i] = float(crit.min()) if finite else math.inf
            limiting[i] = complex(seen[-1][int(np.argmin(crit))]) if finite else _NAN_C
            certified[i] = True
            rounds[i] = 1
            seen_all.append(_dedupe(np.concatenate(seen)))
            continue
        lm = jacobian_eigs(fn, zi, which="LM", **opts)
        seen.append(lm.values[0][lm.converged[0]].cpu().numpy().astype(np.complex128))
        pool = np.concatenate(seen)
        crit = _crit(pool)
        eps_hat = float(crit.min()) if crit.size else math.inf
        best = complex(pool[int(np.argmin(crit))]) if math.isfinite(eps_hat) else _NAN_C
        n_round = 1
        while math.isfinite(eps_hat) and n_round < max_rounds + 1:
            res = jacobian_eigs(fn, zi, which="euler", eps=eps_hat, **opts)
            n_round += 1
            found = res.values[0][res.converged[0]].cpu().numpy().astype(np.complex128)
            seen.append(found)
            c = _crit(found)
            if c.size and float(c.min()) < eps_hat * (1 - rtol):
                eps_hat = float(c.min())
                best = complex(found[int(np.argmin(c))])
                continue
            # No mode unstable at eps_hat: certified if a Re mu < 0 mode made it into the top k
            # (then every mode with |1 + eps_hat mu| > 1 ranks above it and was seen).
            certified[i] = bool(np.isfinite(c).any())
            break
        eps_out[i] = eps_hat
        limiting[i] = best
        rounds[i] = n_round
        seen_all.append(_dedupe(np.concatenate(seen)))
    width = max(v.size for v in seen_all)
    pad = np.full((batch, width), complex(math.nan, math.nan))
    for i, v in enumerate(seen_all):
        pad[i, : v.size] = v
    flags = euler_critical_step(torch.from_numpy(pad))
    dev = z.device
    return EulerStep(
        eps_crit=eps_out.to(device=dev, dtype=cdtype),
        limiting=limiting.to(dev),
        unstable=flags.unstable.to(dev),
        nonnegative=tuple(t.to(dev) for t in flags.nonnegative),
        n_eigs=flags.n_eigs.to(dev),
        certified=certified.to(dev),
        rounds=rounds.to(dev),
    )


# ------------------------------------------------------------------------------------------------
# asymmetry


def asymmetry(
    force: Force,
    z: Tensor,
    *,
    n_probes: int = 16,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype | None = None,
    ad: str = "auto",
) -> AsymmetryResult:
    """How non-conservative the force is at z: ||A||_F / ||S||_F and ||J v - J^T v|| / ||J v||.

    S = (J + J^T)/2 and A = (J - J^T)/2. Hutchinson: for Rademacher probes v (E[v v^T] = I),
    E ||A v||^2 = ||A||_F^2 and E ||S v||^2 = ||S||_F^2. Each probe costs one JVP and one VJP on
    the whole batch at once (J is block-diagonal over samples and the probes are per sample, so no
    per-sample loop is needed).

    The leak is symmetric: for F = -leak z + N(z), S contains -leak I. To measure the coupling's
    own asymmetry (docs/physics.md section 5's J_nc), pass the coupling as the force, e.g.
    `asymmetry(block_force.coupling, z)`.

    Args:
        force, z: as in `jacobian_eigs`.
        n_probes: probe vectors per sample, integer >= 1 (the estimate's relative error shrinks
            like 1/sqrt(n_probes); `AsymmetryResult.ratio_stderr` estimates it).
        seed: int or torch.Generator for the probes (drawn on the CPU: repeatable on any device).
        dtype: None (the state's) or torch.float32/float64.
        ad: how J v is computed ("auto", "reverse", "forward").

    Returns:
        An `AsymmetryResult`; tensors on z's device in the products' dtype.
    """
    _check_force(force)
    z = _check_state(z)
    n_probes = _check_int("n_probes", n_probes, 1)
    ad = _check_choice("ad", ad, AD_MODES)
    cdtype = _check_dtype(z, dtype)
    gen = _seed_generator(seed)
    work_force = _force_in_dtype(force, cdtype, z.dtype)
    zc = z.to(cdtype)
    _evaluate(work_force, zc, cdtype)
    lin = _Linearized(work_force, zc, ad)
    dims = tuple(range(1, zc.ndim))
    anti, sym, rel = [], [], []
    tiny = torch.finfo(cdtype).tiny
    for _ in range(n_probes):
        signs = torch.randint(0, 2, zc.shape, generator=gen, device=gen.device)
        v = (2 * signs - 1).to(device=zc.device, dtype=cdtype)
        jv, jtv = lin.jv(v), lin.jtv(v)
        anti_v = torch.linalg.vector_norm(jv - jtv, dim=dims)  # = 2 ||A v||
        anti.append((0.5 * anti_v) ** 2)
        sym.append((0.5 * torch.linalg.vector_norm(jv + jtv, dim=dims)) ** 2)
        rel.append(anti_v / torch.linalg.vector_norm(jv, dim=dims).clamp_min(tiny))
    anti_sq, sym_sq, rel_t = torch.stack(anti), torch.stack(sym), torch.stack(rel)
    ratio = (anti_sq.sum(0) / sym_sq.sum(0).clamp_min(tiny)).sqrt()
    return AsymmetryResult(ratio, rel_t.mean(0), rel_t, anti_sq, sym_sq, n_probes)


# ------------------------------------------------------------------------------------------------
# detect_cycle


def detect_cycle(
    trace: SettleResult | Trace | Tensor | np.ndarray | Sequence[float],
    *,
    sample: int | None = None,
    **options: Any,
) -> CycleReport:
    """Judge the tail of a force-residual trace: floor, amplitude, period, monotone, cycle or not.

    `analogeq.integrators.detect_cycle` (see its docstring for `min_tail`, `tail_fraction`,
    `floor_ratio`, `min_oscillations`, `state_norm`), also accepting a `SettleResult` or its
    `Trace`. A tail shorter than 2 * min_tail entries is a transient and never a cycle.

    Args:
        trace: a 1-D force-residual trace (one entry per step), a `Trace` or a `SettleResult`.
        sample: for a Trace/SettleResult, judge that sample's own residual (and state norm);
            None judges the batch's largest residual per step (with the batch's largest ||z||).
        **options: passed to `analogeq.integrators.detect_cycle`.

    Returns:
        A `CycleReport` (`is_cycle`, `floor`, `amplitude`, `period` in steps, `monotone`, ...).
    """
    if isinstance(trace, SettleResult):
        trace = trace.trace
    if isinstance(trace, Trace):
        norms = trace.sample_state_norm
        if sample is None:
            residual = trace.residual
            norm = None if norms is None else norms.amax(dim=1)
        else:
            batch = trace.sample_residual.shape[1]
            sample = _check_int("sample", sample, 0, batch - 1)
            residual = trace.sample_residual[:, sample]
            norm = None if norms is None else norms[:, sample]
        if norm is not None:
            options.setdefault("state_norm", norm)
        return _detect_cycle_1d(residual, **options)
    if sample is not None:
        raise ValueError("sample applies only to a SettleResult or a Trace, not to a 1-D trace")
    return _detect_cycle_1d(trace, **options)


# ------------------------------------------------------------------------------------------------
# finite-time Lyapunov exponents

FTLE_METHODS = ("euler", "rk4")


def _unit_tangent(gen: torch.Generator, z: Tensor) -> Tensor:
    v = _randn(gen, z.shape, z.dtype, z.device)
    dims = tuple(range(1, z.ndim))
    norm = torch.linalg.vector_norm(v, dim=dims, keepdim=True)
    return v / norm


def _bcast(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


class _Accumulator:
    """Per-sample log-growth sums of a renormalized tangent, a history and a divergence mask."""

    def __init__(self, batch: int, device: torch.device, transient: int):
        self.log_sum = torch.zeros(batch, dtype=torch.float64, device=device)
        self.time = torch.zeros(batch, dtype=torch.float64, device=device)
        self.diverged = torch.zeros(batch, dtype=torch.bool, device=device)
        self.transient = transient
        self.history: list[Tensor] = []

    def step(self, k: int, growth: Tensor, dt: float, ok: Tensor) -> None:
        self.diverged |= ~ok
        if k >= self.transient:
            alive = ~self.diverged
            self.log_sum += torch.where(alive, growth.to(torch.float64), 0.0)
            self.time += torch.where(alive, dt, 0.0)
            self.history.append(self.estimate())

    def estimate(self) -> Tensor:
        return torch.where(self.time > 0, self.log_sum / self.time.clamp_min(1e-300), math.nan)


def _renormalize(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(v / ||v||, log ||v||, finite mask) per sample."""
    dims = tuple(range(1, v.ndim))
    norm = torch.linalg.vector_norm(v, dim=dims)
    ok = torch.isfinite(norm) & (norm > 0)
    safe = torch.where(ok, norm, 1.0)
    return v / _bcast(safe, v), torch.log(safe), ok


def ftle(
    force: Force,
    z0: Tensor,
    *,
    eps: float = 0.1,
    steps: int = 1000,
    method: str = "euler",
    transient: int = 0,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype | None = None,
) -> FTLEResult:
    """Largest finite-time Lyapunov exponent of the trajectory from z0, per sample.

    The state and one tangent vector per sample are integrated together; every step the tangent is
    renormalized and its log growth accumulated: exponent = (1 / T) sum log ||v_{k+1}|| / ||v_k||.
    One `torch.func.jvp` gives both F(z) and J(z) v, so a step costs one forward-mode pass
    (method "euler") or four ("rk4"), on the whole batch (samples are independent).

    * "euler": z <- z + eps F(z), v <- (I + eps J(z)) v: the exact tangent map of explicit Euler,
      i.e. the exponent of what a digital simulation at this eps does. At a fixed point it tends to
      max log|1 + eps mu| / eps: > 0 when Euler cycles or blows up past eps_crit.
    * "rk4": classical Runge-Kutta on (z, v) (the variational equation dv/dt = J(z) v): approximates
      the continuous flow's exponent (at a stable fixed point -> max Re mu < 0; on a limit cycle
      -> 0; for a Hopf-type instability > 0). Euler positive and RK4 negative means a
      discretization artifact; both positive, a genuine instability.

    Args:
        force: F(z) on (batch, ...).
        z0: starting state, real float32/float64 (batch, ...).
        eps: step size in time units (> 0).
        steps: total steps (>= 1), of which the first `transient` (in [0, steps - 1]) are not
            averaged (the tangent first aligns with the leading direction).
        method: "euler" or "rk4".
        seed: int or torch.Generator for the initial tangent vectors.
        dtype: None (z0's) or torch.float32/float64.

    Returns:
        An `FTLEResult`; exponents in 1/time units, float64, on z0's device.
    """
    _check_force(force)
    z = _check_state(z0, "z0")
    eps = _check_positive("eps", eps)
    steps = _check_int("steps", steps, 1)
    transient = _check_int("transient", transient, 0, steps - 1)
    method = _check_choice("method", method, FTLE_METHODS)
    cdtype = _check_dtype(z, dtype)
    gen = _seed_generator(seed)
    work_force = _force_in_dtype(force, cdtype, z.dtype)
    z = z.to(cdtype)
    _evaluate(work_force, z, cdtype)
    v = _unit_tangent(gen, z)
    acc = _Accumulator(z.shape[0], z.device, transient)

    def pair(zz: Tensor, vv: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return torch.func.jvp(work_force, (zz,), (vv,))

    for k in range(steps):
        if method == "euler":
            f, jv = pair(z, v)
            z_new, v_new = z + eps * f, v + eps * jv
        else:
            f1, g1 = pair(z, v)
            f2, g2 = pair(z + 0.5 * eps * f1, v + 0.5 * eps * g1)
            f3, g3 = pair(z + 0.5 * eps * f2, v + 0.5 * eps * g2)
            f4, g4 = pair(z + eps * f3, v + eps * g3)
            z_new = z + (eps / 6) * (f1 + 2 * f2 + 2 * f3 + f4)
            v_new = v + (eps / 6) * (g1 + 2 * g2 + 2 * g3 + g4)
        v_unit, growth, ok = _renormalize(v_new)
        dims = tuple(range(1, z.ndim))
        ok = ok & torch.isfinite(z_new).all(dim=dims) & ~acc.diverged
        acc.step(k, growth, eps, ok)
        keep = _bcast(ok, z)
        # Diverged samples stay frozen at their last finite state (their exponent is final).
        z, v = torch.where(keep, z_new, z), torch.where(keep, v_unit, v)
    return _ftle_result(acc, steps, transient, method, eps, z)


def _ftle_result(acc: _Accumulator, steps: int, transient: int, method: str, eps: float | None,
                 z: Tensor) -> FTLEResult:
    exponent = acc.estimate()
    multiplier = torch.exp(exponent * eps) if eps is not None else torch.full_like(exponent,
                                                                                   math.nan)
    history = torch.stack(acc.history) if acc.history else exponent.new_zeros(0, exponent.numel())
    return FTLEResult(exponent, multiplier, history, acc.time, steps, transient, method, eps,
                      acc.diverged, z)


def ftle_along(
    force: Force,
    trajectory: Tensor | Sequence[Tensor],
    dt: float | Tensor,
    *,
    transient: int = 0,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype | None = None,
) -> FTLEResult:
    """Largest finite-time Lyapunov exponent along a given trajectory, per sample.

    The tangent follows v_{k+1} = (I + dt_k J(z_k)) v_k (one JVP per recorded state, renormalized
    every step): exact for a trajectory made by explicit Euler with steps dt_k, a first-order
    approximation of the continuous tangent flow for a trajectory sampled from a finer solve.

    Args:
        force: F(z) on (batch, ...).
        trajectory: states (n + 1, batch, ...) (or a sequence of n + 1 states (batch, ...)), n >= 1,
            real float32/float64, finite.
        dt: step between consecutive states (time units): a positive float, or a (n,) tensor of
            positive steps (e.g. an adaptive run's step sizes).
        transient: leading steps not averaged, in [0, n - 1].
        seed: int or torch.Generator for the initial tangent vectors.
        dtype: None (the trajectory's) or torch.float32/float64.

    Returns:
        An `FTLEResult` (`method` "along", `eps` = dt for a constant step, else None; `z` = the
        trajectory's last state).
    """
    _check_force(force)
    if isinstance(trajectory, list | tuple):
        if not trajectory or not all(isinstance(t, Tensor) for t in trajectory):
            raise TypeError("trajectory must be a tensor (n + 1, batch, ...) or a list of tensors")
        trajectory = torch.stack(list(trajectory))
    if not isinstance(trajectory, Tensor):
        raise TypeError(
            f"trajectory must be a tensor (n + 1, batch, ...), got {type(trajectory).__name__}"
        )
    if trajectory.ndim < 3 or trajectory.shape[0] < 2:
        raise ValueError(
            "trajectory must have shape (n + 1, batch, ...) with n >= 1 steps and a batch "
            f"dimension, got {tuple(trajectory.shape)}"
        )
    traj = _check_state(trajectory, "trajectory")
    n = traj.shape[0] - 1
    if isinstance(dt, Tensor):
        if dt.ndim != 1 or dt.shape[0] != n or dt.is_complex():
            raise ValueError(f"dt must be a positive float or a real ({n},) tensor, got "
                             f"{tuple(dt.shape)} {dt.dtype}")
        if not bool(((dt > 0) & torch.isfinite(dt)).all()):
            raise ValueError("dt must be positive and finite at every step")
        steps_dt = [float(x) for x in dt.tolist()]
        const = None
    else:
        const = _check_positive("dt", dt)
        steps_dt = [const] * n
    transient = _check_int("transient", transient, 0, n - 1)
    cdtype = _check_dtype(traj[0], dtype)
    gen = _seed_generator(seed)
    work_force = _force_in_dtype(force, cdtype, traj.dtype)
    traj = traj.to(cdtype)
    _evaluate(work_force, traj[0], cdtype)
    v = _unit_tangent(gen, traj[0])
    acc = _Accumulator(traj.shape[1], traj.device, transient)
    for k in range(n):
        with torch.no_grad():
            _, jv = torch.func.jvp(work_force, (traj[k],), (v,))
        v_unit, growth, ok = _renormalize(v + steps_dt[k] * jv)
        ok = ok & ~acc.diverged
        acc.step(k, growth, steps_dt[k], ok)
        v = torch.where(_bcast(ok, v), v_unit, v)
    return _ftle_result(acc, n, transient, "along", const, traj[-1])


# ------------------------------------------------------------------------------------------------
# probe_report


@dataclass(frozen=True)
class ProbeReport:
    """Eigenvalues, log-norm, eps_crit and asymmetry of a force at one state (`probe_report`).

    * `eigs`: leading eigenvalues (which="LR"); `euler_eigs`: the eigenvalues dominating Euler's
      map at `eps` (which="euler"), or None when eps is None.
    * `euler`: eps_crit and the Re mu >= 0 flags from both sets together.
    * `lognorm`: mu_2(J); `asymmetry`: ||A||_F / ||S||_F and ||Jv - J^T v|| / ||Jv||.
    * `residual`: force residual ||F(z)|| / ||z|| per sample at the probed state (docs/physics.md
      section 2): the spectrum is a stability verdict only where this is ~0.
    """

    eigs: EigResult
    euler_eigs: EigResult | None
    euler: EulerStep
    lognorm: LognormResult
    asymmetry: AsymmetryResult
    residual: Tensor
    eps: float | None
    state_shape: tuple[int, ...]
    dtype: torch.dtype
    wall_time: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spectral_radius(self) -> Tensor | None:
        """(batch,) max |1 + eps mu| over the Euler-dominant eigenvalues (None without eps)."""
        if self.euler_eigs is None or self.eps is None:
            return None
        f = torch.where(self.euler_eigs.converged, self.euler_eigs.euler_factor(self.eps), -1.0)
        return f.amax(dim=1)

    def text(self) -> str:
        """A report a person can read: per sample, every probe with its units and method."""
        batch = self.residual.numel()
        e = self.eigs
        lines = [
            f"probe at a state of shape (batch {batch}, {', '.join(map(str, self.state_shape))}), "
            f"products in {str(self.dtype).removeprefix('torch.')}; wall {self.wall_time:.2f}s",
            "eigenvalues mu of J = dF/dz in 1/time units (time = the force's tau)",
        ]
        rho = self.spectral_radius
        for i in range(batch):
            res = float(self.residual[i])
            note = "" if res < 1e-3 else "  (not a fixed point: spectrum of the linearization)"
            lines.append(f"sample {i}: force residual ||F(z)||/||z|| = {res:.3e}{note}")
            lines.append(
                f"  leading eigenvalues (largest Re, {e.method}, {int(e.n_matvec[i])} JVPs, "
                f"{int(e.converged[i].sum())}/{e.values.shape[1]} converged):"
            )
            lines.append("    " + "  ".join(_fmt_c(m) for m in e.values[i]))
            if self.euler_eigs is not None and rho is not None:
                ee = self.euler_eigs
                lines.append(
                    f"  Euler-dominant at eps = {self.eps:g} (largest |1 + eps mu|; "
                    f"rho(I + eps J) = {float(rho[i]):.4f}, {ee.method}, "
                    f"{int(ee.converged[i].sum())}/{ee.values.shape[1]} converged):"
                )
                lines.append("    " + "  ".join(_fmt_c(m) for m in ee.values[i]))
            lines.append(
                f"  log-norm mu_2(J) = lambda_max((J + J^T)/2) = {float(self.lognorm.value[i]):.4g}"
                f" ({'contracting' if float(self.lognorm.value[i]) < 0 else 'not contracting'})"
            )
            lines.append("  " + self.euler.text(i).split(": ", 1)[1])
            a = self.asymmetry
            lines.append(
                f"  asymmetry ||A||_F/||S||_F = {float(a.ratio[i]):.3g} "
                f"(+- {float(a.ratio_stderr[i]):.2g}, {a.n_probes} Hutchinson probes); "
                f"||Jv - J^T v||/||Jv|| = {float(a.relative[i]):.3g}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serializable): complex numbers as [re, im] pairs."""

        def cplx(t: Tensor) -> list[list[list[float]]]:
            return [[[float(c.real), float(c.imag)] for c in row] for row in t.cpu()]

        out: dict[str, Any] = {
            "state_shape": list(self.state_shape),
            "dtype": str(self.dtype).removeprefix("torch."),
            "force_residual": self.residual.cpu().tolist(),
            "eigs": {"which": "LR", "method": self.eigs.method, "values": cplx(self.eigs.values),
                     "converged": self.eigs.converged.cpu().tolist(),
                     "n_matvec": self.eigs.n_matvec.cpu().tolist()},
            "lognorm": self.lognorm.value.cpu().tolist(),
            "eps_crit": self.euler.eps_crit.cpu().tolist(),
            "unstable": self.euler.unstable.cpu().tolist(),
            "asymmetry_ratio": self.asymmetry.ratio.cpu().tolist(),
            "asymmetry_relative": self.asymmetry.relative.cpu().tolist(),
            "eps": self.eps,
            "wall_s": self.wall_time,
        }
        if self.euler_eigs is not None:
            rho = self.spectral_radius
            out["euler_eigs"] = {"eps": self.eps, "values": cplx(self.euler_eigs.values),
                                 "converged": self.euler_eigs.converged.cpu().tolist(),
                                 "spectral_radius": None if rho is None else rho.cpu().tolist()}
        return _json_safe(out)

    def plot(self, path: str | Path, *, samples: Sequence[int] | None = None,
             title: str = "") -> Path:
        """The spectrum in the complex plane: eigenvalues, the eigenvalue (pair) that limits
        Euler, the imaginary axis (continuous stability), Euler's stability disk |1 + eps mu| < 1
        at eps and at eps_crit, and the log-norm bound Re mu <= mu_2. Writes a PNG (or any
        matplotlib format, by the suffix) to `path`; at most 8 samples by default."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        batch = self.residual.numel()
        samples = list(range(min(batch, 8))) if samples is None else list(samples)
        for s in samples:
            _check_int("samples entry", s, 0, batch - 1)
        fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        pts: list[complex] = []
        for j, i in enumerate(samples):
            c = colors[j % len(colors)]
            mu = self.eigs.per_sample(i).cpu().numpy()
            ax.plot(mu.real, mu.imag, "o", color=c, label=f"sample {i}: largest Re mu")
            pts.extend(mu.tolist())
            if self.euler_eigs is not None:
                me = self.euler_eigs.per_sample(i).cpu().numpy()
                ax.plot(me.real, me.imag, "s", mfc="none", color=c,
                        label=f"sample {i}: largest |1 + eps mu|")
                pts.extend(me.tolist())
            lim = complex(self.euler.limiting[i])
            if math.isfinite(lim.real):
                ax.plot([lim.real, lim.real], [lim.imag, -lim.imag], "*", ms=11, color=c,
                        mec="k", label=f"sample {i}: limits Euler (eps_crit "
                        f"{float(self.euler.eps_crit[i]):.3g})")
                pts.extend([lim, lim.conjugate()])
            mu2 = float(self.lognorm.value[i])
            if math.isfinite(mu2):
                ax.axvline(mu2, color=c, ls="--", lw=0.8, label=f"sample {i}: log-norm {mu2:.3g}")
                pts.append(complex(mu2, 0.0))  # keep the log-norm line inside the axes
        arr = np.asarray(pts, dtype=complex)
        arr = arr[np.isfinite(arr)] if arr.size else arr
        ax.axvline(0.0, color="k", lw=1.0)
        ax.axhline(0.0, color="grey", lw=0.5)
        theta = np.linspace(0, 2 * np.pi, 400)
        disks = []
        if self.eps is not None:
            disks.append((self.eps, f"Euler stable at eps = {self.eps:g}", "tab:red"))
        finite_crit = self.euler.eps_crit[torch.isfinite(self.euler.eps_crit)]
        if finite_crit.numel():
            ec = float(finite_crit.min())
            disks.append((ec, f"Euler stable at eps_crit = {ec:.3g}", "tab:green"))
        for eps, label, color in disks:
            r = 1.0 / eps  # |1 + eps mu| < 1 is the disk of radius 1/eps centred at -1/eps
            ax.plot(-r + r * np.cos(theta), r * np.sin(theta), color=color, lw=1, ls=":",
                    label=label)
        if arr.size:
            pad = 0.15 * max(np.ptp(arr.real), np.ptp(arr.imag), 1e-3)
            ax.set_xlim(arr.real.min() - pad, max(arr.real.max(), 0.0) + pad)
            ax.set_ylim(arr.imag.min() - pad, arr.imag.max() + pad)
        ax.set_xlabel("Re mu (1/time)")
        ax.set_ylabel("Im mu (1/time)")
        worst = float(self.residual.max())
        ax.set_title(title or f"Jacobian spectrum (force residual at z: {worst:.2e})")
        ax.legend(fontsize=7, loc="best")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def probe_report(
    force: Force,
    z: Tensor,
    *,
    k: int = 6,
    eps: float | None = 0.1,
    n_probes: int = 16,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    tol: float | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
    seed: int = 0,
    ad: str = "auto",
    search_eps_crit: bool = True,
) -> ProbeReport:
    """Every probe at one state: what `analogeq probe` prints and plots.

    Computes the k eigenvalues of largest real part, (when eps is given) the k dominating Euler's
    map I + eps J, eps_crit and the Re mu >= 0 flags from both sets, the log-norm and the asymmetry.

    Args:
        force, z: the force and the state (batch, ...), usually a settled fixed point.
        k: eigenvalues per set (see `jacobian_eigs`).
        eps: the Euler step of interest (time units, > 0; the digital default 0.1 of docs/physics.md
        section 1), or None
            to skip the Euler-dominant set.
        n_probes: Hutchinson probes for the asymmetry.
        method, dtype, tol, ncv, maxiter, ad: as in `jacobian_eigs` (tol/ncv/maxiter also set the
            log-norm's Lanczos, ncv capped to its range).
        seed: one int seed for every random start (ARPACK, Lanczos, probes).
        search_eps_crit: True (default) -> `find_eps_crit` seeded with both eigenvalue sets (a
            few more ARPACK runs; eps_crit is then certified, not a bound); False -> the bound
            `euler_critical_step` of the two sets.

    Returns:
        A `ProbeReport` with `.text()`, `.plot(path)` and `.to_dict()`.
    """
    t0 = time.perf_counter()
    z = _check_state(z)
    cdtype = _check_dtype(z, dtype)
    if eps is not None:
        eps = _check_positive("eps", eps)
    # Convert the force once (a float64 copy of a model is not free) and reuse it for every probe.
    work_force = _force_in_dtype(force, cdtype, z.dtype) if callable(force) else force
    zc = z.to(cdtype)
    opts: dict[str, Any] = dict(method=method, tol=tol, ncv=ncv, maxiter=maxiter, ad=ad)
    eigs = jacobian_eigs(work_force, zc, k, "LR", seed=seed, info=True, **opts)
    euler_eigs = (None if eps is None else
                  jacobian_eigs(work_force, zc, k, "euler", eps=eps, seed=seed, info=True, **opts))
    both = eigs.values if euler_eigs is None else torch.cat(
        (torch.where(eigs.converged, eigs.values, complex(math.nan, math.nan)),
         torch.where(euler_eigs.converged, euler_eigs.values, complex(math.nan, math.nan))), dim=1)
    if not isinstance(search_eps_crit, bool):
        raise TypeError(f"search_eps_crit must be a bool, got {type(search_eps_crit).__name__}")
    if search_eps_crit:
        euler = find_eps_crit(work_force, zc, k=k, known=both, seed=seed, **opts)
    else:
        euler = euler_critical_step(both)
    ln_ncv = None if ncv is None else max(2, min(ncv, z[0].numel()))
    ln = lognorm(work_force, zc, method=method, tol=tol, ncv=ln_ncv, maxiter=maxiter, seed=seed,
                 ad=ad, info=True)
    asym = asymmetry(work_force, zc, n_probes=n_probes, seed=seed, ad=ad)
    return ProbeReport(
        eigs=eigs,
        euler_eigs=euler_eigs,
        euler=euler,
        lognorm=ln,
        asymmetry=asym,
        residual=eigs.residual,
        eps=eps,
        state_shape=tuple(z.shape[1:]),
        dtype=cdtype,
        wall_time=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------------
# formatting helpers


def _fmt_c(m: Any) -> str:
    c = complex(m)
    if math.isnan(c.real) or math.isnan(c.imag):
        return "(not converged)"
    sign = "+" if c.imag >= 0 else "-"
    return f"{c.real:.4g}{sign}{abs(c.imag):.4g}j"


def _json_safe(x: Any) -> Any:
    """Replace non-finite floats (JSON has none) by strings 'inf', '-inf', 'nan'."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


__all__ = [
    "WHICH",
    "DENSE_MAX",
    "GUARD",
    "default_tol",
    "jacobian_eigs",
    "EigResult",
    "lognorm",
    "LognormResult",
    "euler_critical_step",
    "EulerStep",
    "find_eps_crit",
    "asymmetry",
    "AsymmetryResult",
    "detect_cycle",
    "CycleReport",
    "ftle",
    "ftle_along",
    "FTLEResult",
    "probe_report",
    "ProbeReport",
]
