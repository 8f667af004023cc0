"""Validation helpers of `analogeq.circuits` (one place, so every message reads the same)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    return v


def _in_range(
    value: Any, name: str, lo: float, hi: float, *, lo_open=False, hi_open=False
) -> float:
    v = _real(value, name)
    bad_lo = v <= lo if lo_open else v < lo
    bad_hi = v >= hi if hi_open else v > hi
    if bad_lo or bad_hi:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value}")
    return v


def _kind(value: Any, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a string, one of {list(allowed)}, got {type(value).__name__}"
        )
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _real_tuple(value: Any, name: str, length: int | None = None) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of real numbers, got {type(value).__name__}")
    out = tuple(_real(v, f"{name}[{i}]") for i, v in enumerate(value))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)}")
    return out
