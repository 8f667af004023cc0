"""analogeq.integrators: settle any vector field dz/dt = F(z), with pluggable methods.

Knows nothing of circuits or transformers (docs/design.md). Public names are re-exported here;
modules starting with an underscore are private.
"""

from ._base import Integrator, StepState
from ._cycle import detect_cycle
from ._force import CountedForce, force_residual, has_split, step_residual
from ._result import CycleReport, SettleResult, Status, Trace
from .adaptive import AdaptiveEuler
from .anderson import Anderson
from .controllers import PI, Controller, Overshoot
from .euler import ExplicitEuler
from .imex import IMEXEuler
from .implicit import ImplicitEuler
from .maruyama import EulerMaruyama
from .ode import ODESolver
from .ptc import PseudoTransient
from .settle import METHODS, register, settle

__all__ = [
    "settle",
    "METHODS",
    "register",
    "SettleResult",
    "Status",
    "Trace",
    "CycleReport",
    "detect_cycle",
    "Integrator",
    "StepState",
    "CountedForce",
    "force_residual",
    "step_residual",
    "has_split",
    "ExplicitEuler",
    "AdaptiveEuler",
    "Controller",
    "Overshoot",
    "PI",
    "IMEXEuler",
    "ImplicitEuler",
    "Anderson",
    "ODESolver",
    "EulerMaruyama",
    "PseudoTransient",
]
