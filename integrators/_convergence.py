"""When has a sample settled? The scale-aware convergence test every method is judged by.

The seeds judged convergence on the force residual g = ||F(z)|| / ||z||. It is relative in z but
absolute in F's units, so a force multiplied by 1e-7 "converged" at its start, and a fixed point at
z* = 0 could not be reached at all (g tends to a constant there, ||J||). The test here follows the
solvers users trust (scipy's `solve_ivp`, diffrax's controllers): an error in the units of z
compared with `atol + rtol * scale`, scale = the state's own size. F has units of z per time, so it
is turned into a length first, the *displacement*

    delta(z) = rms(F(z) / w)          (units of z; RMS over the entries of one sample)

with w the force's *rate scale* (units 1 / time):

* the force's own leak when it has the split F = -leak z + N(z) (elementwise for a per-node leak,
  so each node is measured in its own time constant; delta is then the classic DEQ residual
  rms(z - N(z) / leak));
* the `rate` settle option when given (a number or a (batch,) tensor);
* otherwise measured once per settle at z0: the larger of the secant ||F(z0 + d u) - F(z0)|| / d
  along the unit direction u of F(z0) (one force evaluation, counted; d = sqrt(machine eps)
  ||z0||, or sqrt(machine eps) when z0 = 0) and the start's force residual ||F(z0)|| / ||z0||
  (when z0 != 0). The second guards a start in saturation, where the local slope is tiny (tanh at
  6 time constants: 2.5e-5) but the force still moves the state at a finite rate; both scale with
  F.

For a linear force delta is ||F|| / |rate| ~ ||z - z*||: the distance to the fixed point to first
order (exactly, for F = -w (z - z*)). A sample has converged when

    delta(z) <= atol + rtol * rms(z)

* `rtol` (dimensionless) is settle's `tol` (default 1e-6);
* `atol` (units of z, per entry) defaults to rtol * delta(z0): the run's own starting distance, so
  a fixed point at the origin is reached to the same relative accuracy as any other, and a warm
  start (delta(z0) ~ 0) is held to the relative test alone.

Multiplying F by a constant k multiplies w by k (leak, rate given in the same units, or measured)
and leaves delta, both tolerances and every decision unchanged; measuring z in other units scales
delta, rms(z) and the default atol alike. The *scaled error* err = delta / (atol + rtol rms(z))
(converged iff err <= 1) is what the loop records per sample (`Trace.sample_error`) and what its
cycle analysis reads; the force residual g stays the reported diagnostic (`SettleResult.residual`).

Norms never overflow: they are taken with torch's `vector_norm` (one pass) and, only where that
gives inf although every entry is finite (float32 states near 1e19 and beyond), again on the state
divided by its largest entry.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._base import check_positive
from ._force import CountedForce, safe_norm


def check_tolerance(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """A number > 0 (>= 0 with `allow_zero`), or a 1-D real floating tensor of such numbers."""
    if isinstance(value, Tensor):
        if value.ndim != 1 or value.is_complex() or not value.is_floating_point():
            raise TypeError(
                f"{name} must be a number or a 1-D real floating tensor of shape (batch,), got a "
                f"{value.dtype} tensor of shape {tuple(value.shape)}"
            )
        low = (value >= 0) if allow_zero else (value > 0)
        if not bool((torch.isfinite(value) & low).all()):
            raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0 for every "
                             "sample")
        return
    if allow_zero:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        return
    check_positive(name, value)


def per_sample(name: str, value: float | Tensor, batch: int) -> np.ndarray:
    """A tolerance or rate as a (batch,) float64 host array (one host copy, at setup)."""
    if not isinstance(value, Tensor):
        return np.full(batch, float(value))
    if value.shape != (batch,):
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}: a per-sample value needs shape ({batch},), "
            "one per sample of z0"
        )
    return value.detach().to("cpu", torch.float64).numpy().copy()


class Displacement:
    """delta(z) = rms(F(z) / w) per sample, for one settle (see the module docstring).

    Built once per settle by `Displacement.build`; `norms(view, f)` gives ||F / w|| (the 2-norm,
    before the RMS division) of the samples a view holds, on the device, and `rate` the (batch,)
    host array of scalar rates (NaN where the rate is elementwise, i.e. a tensor leak).
    """

    def __init__(self, scalar_rate: np.ndarray | None, elementwise: bool, source: str):
        self.scalar_rate = scalar_rate  # (batch,) host array, or None for an elementwise leak
        self.elementwise = elementwise
        self.source = source  # "leak", "rate" or "measured"

    @classmethod
    def build(cls, counted: CountedForce, z0: Tensor, f0: Tensor, rate: Any) -> Displacement:
        batch = z0.shape[0]
        if rate is not None:
            return cls(per_sample("rate", rate, batch), False, "rate")
        if counted.has_split:
            leak = counted.leak
            if isinstance(leak, Tensor) and leak.numel() > 1:
                if not leak.is_complex() and bool((leak > 0).all()):  # one host sync, at setup
                    return cls(None, True, "leak")
            else:
                value = float(leak.reshape(())) if isinstance(leak, Tensor) else float(leak)
                if value > 0:
                    return cls(np.full(batch, value), False, "leak")
            # A leak that is not a positive rate everywhere (e.g. a Jacobi split of a matrix with
            # a non-negative diagonal entry) says nothing about time scales: measure one.
        return cls(_measured_rate(counted, z0, f0), False, "measured")

    def norms(self, view: CountedForce, f: Tensor, dims: tuple[int, ...]) -> Tensor:
        """||F / w|| per sample of the view (b_view,), real; for scalar rates just ||F||."""
        if not self.elementwise:
            return torch.linalg.vector_norm(f, dim=dims)
        leak = view.leak
        leak = leak.to(device=f.device, dtype=f.real.dtype if f.is_complex() else f.dtype)
        return torch.linalg.vector_norm(f / leak, dim=dims)

    def scale(self, fnorm: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """||F / w|| from `norms` for the samples `rows` (host arithmetic only)."""
        if self.elementwise:
            return fnorm
        with np.errstate(divide="ignore", invalid="ignore"):
            return fnorm / np.abs(self.scalar_rate[rows])  # type: ignore[index]


def _measured_rate(counted: CountedForce, z0: Tensor, f0: Tensor) -> np.ndarray:
    """||F(z0 + d u) - F(z0)|| / d along u = F(z0) / ||F(z0)||, per sample (batch,) on the host.

    One counted force evaluation. A sample at rest (F(z0) = 0) is probed along the all-ones
    direction. Non-finite or zero secants are returned as they are: the loop then judges that
    sample's displacement as non-finite (DIVERGED) or infinite (never converged: a force with no
    rate along its own direction has no fixed point there).
    """
    b = z0.shape[0]
    dims = tuple(range(1, z0.ndim))
    shape = (b,) + (1,) * (z0.ndim - 1)
    real = z0.real.dtype if z0.is_complex() else z0.dtype
    fn = safe_norm(f0, dims).to(real)
    zn = safe_norm(z0, dims).to(real)
    ones = torch.ones_like(z0) / math.sqrt(z0[0].numel())
    at_rest = ~(fn > 0)
    u = torch.where(at_rest.view(shape), ones, f0 / torch.where(at_rest, 1, fn).view(shape))
    root_eps = math.sqrt(torch.finfo(real).eps)
    d = root_eps * torch.where(zn > 0, zn, torch.ones_like(zn))
    probe = z0 + d.view(shape).to(z0.dtype) * u
    finite = torch.isfinite(fn)
    rate = torch.full_like(fn, math.nan)
    g0 = torch.where(zn > 0, fn / torch.where(zn > 0, zn, 1), 0)  # ||F(z0)|| / ||z0||, 0 at z0 = 0
    if bool(finite.all()):  # one host sync, at setup
        with torch.no_grad():
            rate = safe_norm(counted(probe) - f0, dims).to(real) / d
    elif bool(finite.any()):  # samples whose force is already non-finite are not probed
        index = finite.nonzero().squeeze(1)
        view = counted.restrict(index)
        with torch.no_grad():
            f1 = view(probe.index_select(0, index))
        secant = safe_norm(f1 - f0.index_select(0, index), dims).to(real) / d[index]
        rate = rate.index_copy(0, index, secant)
    rate = torch.where(torch.isfinite(rate), torch.maximum(rate, g0), rate)
    return rate.detach().to("cpu", torch.float64).numpy()


def default_atol(rtol: np.ndarray, delta0: np.ndarray) -> np.ndarray:
    """rtol * delta(z0), 0 where delta(z0) is not finite (the loop calls such a start DIVERGED)."""
    return np.where(np.isfinite(delta0), rtol * delta0, 0.0)


def scaled_error(delta: np.ndarray, z_rms: np.ndarray, rtol: np.ndarray,
                 atol: np.ndarray) -> np.ndarray:
    """err = delta / (atol + rtol rms(z)), per sample; converged iff err <= 1.

    0 where delta = 0 (an exact root, also at z = 0 with atol = 0); NaN propagates.
    """
    bound = atol + rtol * z_rms
    err = np.divide(delta, bound, out=np.full_like(delta, np.inf), where=bound > 0)
    err[delta == 0] = 0.0
    return err


__all__ = ["Displacement", "check_tolerance", "per_sample", "default_atol", "scaled_error"]
