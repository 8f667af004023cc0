"""Tail analysis of a force-residual trace: converging, floored, or cycling?

docs/physics.md section 3, point 2: a short residual probe fools you; judge the *tail* of a long
run. A limit cycle shows as a floor (the envelope stops decaying) with a non-monotone tail. A slowly
converging spiral is non-monotone too, but its envelope still decays, so the floor test comes first.

The tail is the last `max(2 * min_tail, tail_fraction * n)` entries. It is cut into halves; the
envelope ratio `decay = max(second half) / max(first half)` is ~1 on a floor and rho^(L/2) while a
run still contracts at rho per step. With the default `floor_ratio = 0.9` and a 1000-entry tail, a
run contracting faster than rho = 0.9998 per step is "still converging", never a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._result import CycleReport

# Changes of direction smaller than this (relative, in log space) are float noise, not oscillation.
_DIRECTION_NOISE = 1e-7
# A tail whose relative spread is below this is flat: a constant residual above tol on a moving
# state (e.g. a rotation-symmetric orbit), which is a cycle whose residual does not oscillate.
_FLAT_SPREAD = 1e-6
# A bounded orbit's largest ||z|| repeats; growth beyond this factor over half a tail is a runaway.
_RUNAWAY = 1.5


def detect_cycle(
    trace: Tensor | np.ndarray | Sequence[float],
    *,
    min_tail: int = 50,
    tail_fraction: float = 0.5,
    floor_ratio: float = 0.9,
    min_oscillations: int = 2,
    state_norm: Tensor | np.ndarray | Sequence[float] | None = None,
) -> CycleReport:
    """Judge the tail of a 1-D force-residual trace.

    Args:
        trace: force residuals, one per step, shape (n,). Non-finite entries are not allowed.
        min_tail: a tail shorter than `2 * min_tail` entries is a transient and never a cycle.
        tail_fraction: fraction of the trace used as the tail when it is longer than `2 * min_tail`.
        floor_ratio: envelope ratio above which the tail counts as a floor (0 < floor_ratio <= 1).
        min_oscillations: full oscillations (pairs of direction changes) a tail needs to be a cycle.
        state_norm: optional ||z|| per step, same length as `trace`. A cycle is bounded: a tail
            whose state norm keeps growing (max of the second half > `_RUNAWAY` x the first half's)
            is a runaway (e.g. along an unstable real direction, where ||F|| / ||z|| goes flat at
            the eigenvalue), never a cycle.

    Returns:
        A `CycleReport`; `is_cycle` is True for a floored tail that oscillates (or stays exactly
        flat).
    """
    r = _as_numpy(trace)
    if min_tail < 2:
        raise ValueError(f"min_tail must be >= 2, got {min_tail}")
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction}")
    if not 0.0 < floor_ratio <= 1.0:
        raise ValueError(f"floor_ratio must be in (0, 1], got {floor_ratio}")
    if isinstance(min_oscillations, bool) or not isinstance(min_oscillations, int):
        raise TypeError(
            f"min_oscillations must be an integer, got {type(min_oscillations).__name__}"
        )
    if min_oscillations < 1:
        raise ValueError(f"min_oscillations must be >= 1, got {min_oscillations}")
    norms = None if state_norm is None else _as_numpy(state_norm)
    if norms is not None and norms.size != r.size:
        raise ValueError(f"state_norm must have the trace's length {r.size}, got {norms.size}")
    n = r.size
    length = min(n, max(2 * min_tail, int(tail_fraction * n)))
    if n < 2 * min_tail:
        floor = float(np.median(r)) if n else float("nan")
        amp = float(np.ptp(r) / 2) if n else float("nan")
        return CycleReport(
            False,
            floor,
            amp,
            None,
            _is_monotone(r),
            float("nan"),
            n,
            f"trace too short to judge a tail ({n} < 2*min_tail = {2 * min_tail})",
        )
    tail = r[-length:]
    half = length // 2
    first, second = tail[:half], tail[half:]
    decay = float(second.max() / max(first.max(), np.finfo(float).tiny))
    floor = float(np.median(tail))
    amplitude = float(np.ptp(tail) / 2)
    monotone = _is_monotone(tail)
    turns = _direction_changes(tail)
    flat = amplitude <= _FLAT_SPREAD * max(floor, np.finfo(float).tiny)
    period = None if (monotone or flat) else _dominant_period(tail)
    if decay < floor_ratio:
        reason = f"envelope still decaying (ratio {decay:.3g} < {floor_ratio})"
        return CycleReport(False, floor, amplitude, period, monotone, decay, length, reason)
    if norms is not None:
        tail_norm = norms[-length:]
        growth = tail_norm[half:].max() / max(tail_norm[:half].max(), np.finfo(float).tiny)
        if growth > _RUNAWAY:
            reason = f"state running away (||z|| grew {growth:.3g}x over the tail): not bounded"
            return CycleReport(False, floor, amplitude, period, monotone, decay, length, reason)
    if flat:
        reason = "flat floor: constant residual above tol on a moving state"
        return CycleReport(True, floor, amplitude, None, False, decay, length, reason)
    if turns >= 2 * min_oscillations:
        reason = f"floor with non-monotone tail ({turns} direction changes)"
        return CycleReport(True, floor, amplitude, period, False, decay, length, reason)
    reason = "floor without oscillation" if turns == 0 else f"only {turns} direction changes"
    return CycleReport(False, floor, amplitude, period, monotone, decay, length, reason)


def _as_numpy(trace: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(trace, Tensor):
        r = trace.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            r = np.asarray(trace, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"trace must be a 1-D sequence of real residuals, got {type(trace).__name__} "
                f"({exc})"
            ) from None
    if r.ndim != 1:
        raise ValueError(f"trace must be 1-D (one residual per step), got shape {tuple(r.shape)}")
    if not np.all(np.isfinite(r)):
        raise ValueError("trace must be finite; a non-finite residual means DIVERGED, not a cycle")
    return r


def _log(r: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(r, np.finfo(float).tiny))


def _significant_diffs(r: np.ndarray) -> np.ndarray:
    d = np.diff(_log(r))
    return d[np.abs(d) > _DIRECTION_NOISE]


def _is_monotone(r: np.ndarray) -> bool:
    d = _significant_diffs(r)
    return bool(np.all(d >= 0) or np.all(d <= 0))


def _direction_changes(r: np.ndarray) -> int:
    d = _significant_diffs(r)
    return int(np.count_nonzero(np.sign(d[1:]) != np.sign(d[:-1])))


def _dominant_period(r: np.ndarray) -> float | None:
    """Period (in entries) of the strongest Fourier component of the mean-removed log tail.

    The peak bin k is refined by Jacobsen's estimator (the complex neighbours X_{k-1}, X_{k+1}):
    delta = Re((X_{k-1} - X_{k+1}) / (2 X_k - X_{k-1} - X_{k+1})), period = n / (k + delta), so a
    tail of a few periods still gives the period to a few percent, not to a whole bin.
    """
    x = _log(r)
    x = x - x.mean()
    spectrum = np.fft.rfft(x)
    mags = np.abs(spectrum)
    if mags.size < 2 or not np.any(mags[1:] > 0):
        return None
    k = 1 + int(np.argmax(mags[1:]))
    if 1 < k < mags.size - 1:
        lo, mid, hi = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denom = 2 * mid - lo - hi
        if abs(denom) > 0:
            delta = float(np.real((lo - hi) / denom))
            if abs(delta) < 1:
                return float(x.size / (k + delta))
    return float(x.size / k)
