"""Compare two gradient estimates per parameter group: cosine similarity and norm ratio."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ._common import GradientResult

OVERALL = "overall"


def default_group(name: str) -> str:
    """A parameter's group: its module path (`attn.q.weight` and `attn.q.bias` -> `attn.q`)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def _grads(name: str, value: Any) -> Mapping[str, Tensor]:
    if isinstance(value, GradientResult):
        return value.grads
    if isinstance(value, Mapping):
        return value
    raise TypeError(
        f"{name} must be a GradientResult or a dict of gradients, got {type(value).__name__}"
    )


def _cos_ratio(dot: float, na2: float, nb2: float) -> tuple[float, float]:
    # Both zero: the estimates agree exactly. One zero: orthogonal, ratio 0 or inf. Never NaN.
    if na2 == 0 and nb2 == 0:
        return 1.0, 1.0
    if na2 == 0 or nb2 == 0:
        return 0.0, (0.0 if na2 == 0 else math.inf)
    return dot / math.sqrt(na2 * nb2), math.sqrt(na2 / nb2)


def compare_gradients(
    a: GradientResult | Mapping[str, Tensor],
    b: GradientResult | Mapping[str, Tensor],
    *,
    group: Callable[[str], str] = default_group,
) -> dict[str, tuple[float, float]]:
    """Cosine and norm ratio ||a|| / ||b|| per parameter group, and over all parameters.

    Args:
        a, b: two estimates (`GradientResult` or {name: tensor}) with the same names and shapes; b
            is the reference (the ratio is a over b).
        group: maps a parameter name to its group (default: the module path).

    Returns:
        {group: (cos, norm_ratio)} in order of first appearance, plus "overall" (sums in
        float64).
        A group that is zero in both gives (1.0, 1.0); zero in one only gives cos 0.0 and ratio 0.0
        (a zero) or inf (b zero).
    """
    ga, gb = _grads("a", a), _grads("b", b)
    if set(ga) != set(gb):
        raise ValueError(
            "a and b must hold the same parameter names; only in a: "
            f"{sorted(set(ga) - set(gb))}, only in b: {sorted(set(gb) - set(ga))}"
        )
    sums: dict[str, list[Tensor]] = {}
    total = None
    for name in ga:
        x, y = ga[name], gb[name]
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"gradient {name!r} must be a tensor in both a and b")
        if x.shape != y.shape:
            raise ValueError(
                f"gradient {name!r} has shape {tuple(x.shape)} in a and {tuple(y.shape)} in b"
            )
        x64 = x.detach().to(torch.float64).flatten()
        y64 = y.detach().to(device=x.device, dtype=torch.float64).flatten()
        s = torch.stack(((x64 * y64).sum(), (x64 * x64).sum(), (y64 * y64).sum()))
        key = group(name)
        sums.setdefault(key, []).append(s)
        total = s if total is None else total + s
    out: dict[str, tuple[float, float]] = {}
    for key, parts in sums.items():
        dot, na2, nb2 = torch.stack(parts).sum(0).tolist()
        out[key] = _cos_ratio(dot, na2, nb2)
    if total is not None:
        out[OVERALL] = _cos_ratio(*total.tolist())
    return out


def comparison_table(comparison: Mapping[str, tuple[float, float]], title: str = "") -> str:
    """A plain-text table of `compare_gradients` output (group, cos, norm ratio)."""
    width = max([len(k) for k in comparison] + [5])
    lines = [title] if title else []
    lines.append(f"{'group':<{width}}  {'cos':>9}  {'norm ratio':>10}")
    for key, (cos, ratio) in comparison.items():
        lines.append(f"{key:<{width}}  {cos:9.6f}  {ratio:10.4f}")
    return "\n".join(lines)


__all__ = ["compare_gradients", "comparison_table", "default_group", "OVERALL"]
