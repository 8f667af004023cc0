"""`settle(force, z0, method=..., **options)`: one entry point for every method.

A string registry maps names to method classes (after torchdiffeq's SOLVERS). Options are
split between the method's constructor and the shared loop; an unknown option is a TypeError that
names it and lists the allowed ones, never silently ignored.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

from ._base import Integrator
from ._loop import LOOP_OPTIONS, LoopOptions, run
from ._result import SettleResult
from .adaptive import AdaptiveEuler
from .anderson import Anderson
from .euler import ExplicitEuler
from .imex import IMEXEuler
from .implicit import ImplicitEuler
from .maruyama import EulerMaruyama
from .ode import ODESolver
from .ptc import PseudoTransient

METHODS: dict[str, type[Integrator]] = {
    "euler": ExplicitEuler,
    "adaptive": AdaptiveEuler,
    "imex": IMEXEuler,
    "implicit": ImplicitEuler,
    "anderson": Anderson,
    "ode": ODESolver,
    "euler-maruyama": EulerMaruyama,
    "ptc": PseudoTransient,
}


def register(name: str, cls: type[Integrator]) -> None:
    """Make a method available by name (for methods defined outside this package)."""
    if not (isinstance(cls, type) and issubclass(cls, Integrator)):
        raise TypeError(f"cls must be an Integrator subclass, got {cls!r}")
    METHODS[name] = cls


# settle's own parameter names: a method argument of the same name is reached through an alias
# (e.g. ODESolver(method="dopri8") is settle(..., "ode", solver="dopri8"), and the ODE solver's
# local error tolerances ODESolver(rtol=..., atol=...) are ode_rtol / ode_atol: settle's rtol and
# atol are the convergence test's).
_ALIASES: dict[type[Integrator], dict[str, str]] = {
    ODESolver: {"solver": "method", "ode_rtol": "rtol", "ode_atol": "atol"},
}
_SETTLE_PARAMS = {"force", "z0", "method", "tol", "rtol", "atol", "rate", "max_steps"}


def _method_params(cls: type[Integrator]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    names = [
        p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD
    ]
    aliases = {target: alias for alias, target in _ALIASES.get(cls, {}).items()}
    return [aliases.get(p, p) for p in names if p not in _SETTLE_PARAMS or p in aliases]


def make_method(method: str | Integrator, options: dict[str, Any]) -> tuple[Integrator, dict]:
    """Resolve `method` to an instance; return it with the options left for the loop."""
    loop_opts = {k: options[k] for k in options if k in LOOP_OPTIONS}
    method_opts = {k: v for k, v in options.items() if k not in LOOP_OPTIONS}
    if isinstance(method, Integrator):
        if method_opts:
            raise TypeError(
                f"unknown option(s) {sorted(method_opts)} for an {type(method).__name__} instance: "
                f"configure the instance instead; settle options are {sorted(LOOP_OPTIONS)}"
            )
        return method, loop_opts
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a name ({', '.join(sorted(METHODS))}) or an Integrator instance, "
            f"got {type(method).__name__}"
        )
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    cls = METHODS[method]
    allowed = _method_params(cls)
    unknown = sorted(set(method_opts) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for method {method!r}; allowed: "
            f"{sorted(allowed)} (method) and {sorted(LOOP_OPTIONS)} (settle)"
        )
    for alias, target in _ALIASES.get(cls, {}).items():
        if alias in method_opts:
            method_opts[target] = method_opts.pop(alias)
    return cls(**method_opts), loop_opts


def settle(
    force: Any,
    z0: Tensor,
    method: str | Integrator = "anderson",
    *,
    tol: float | Tensor | None = None,
    max_steps: int | None = None,
    **options: Any,
) -> SettleResult:
    """Settle dz/dt = F(z) from z0 to a fixed point, judged by a scale-aware test on the force.

    A sample has converged when its displacement delta = rms(F(z) / w) (units of z; w the force's
    rate scale: its leak, the `rate` option, or measured at z0) is at most atol + rtol * rms(z).
    Multiplying F by a constant, or a fixed point at z = 0, changes nothing
    (`analogeq.integrators._convergence`). The force residual ||F(z)|| / ||z|| is reported
    (`SettleResult.residual`) as a diagnostic.

    Args:
        force: callable F(z) -> dz/dt on tensors of shape (batch, ...); optionally with `leak` and
            `nonlinear` (F = -leak z + N(z)) and `select(index)` (`analogeq.integrators._force`).
        z0: initial state, shape (batch, ...), finite, floating or complex.
        method: a name in `METHODS` or an `Integrator` instance.
        tol: relative tolerance rtol (> 0; default 1e-6): a number, or a 1-D tensor of shape
            (batch,) with one tolerance per sample. `rtol=` is the same argument (scipy's name).
        max_steps: loop iterations; default the method's `default_max_steps`.
        **options: the method's constructor arguments (with a name) and the loop's options
            `rtol`, `atol` (units of z per entry, >= 0; default rtol times the initial
            displacement), `rate` (1 / time, > 0), `blowup`, `cycle_min_tail`, `progress`,
            `observer`.

    Returns:
        A `SettleResult`: per-sample status, residual and scaled error, NFE, steps, continuous
        time, trace, wall.
    """
    rtol = options.pop("rtol", None)
    if rtol is not None and tol is not None:
        raise TypeError("give tol or rtol, not both (they are the same relative tolerance)")
    tol = rtol if rtol is not None else (1e-6 if tol is None else tol)
    integrator, loop_opts = make_method(method, options)
    steps = integrator.default_max_steps if max_steps is None else max_steps
    return run(integrator, force, z0, LoopOptions(tol=tol, max_steps=steps, **loop_opts))
