"""analogeq.learning: gradient estimators for the equilibrium transformer, one API.

    result = estimator.gradients(model, tokens, targets)   # -> GradientResult(grads, info)

* `AsymEP(beta, symmetric=True, asym_correction=True)`: equilibrium propagation with the
  asymmetry correction -2 A (z - z0) (exact as beta -> 0 for any non-symmetric J);
  `asym_correction=False` is plain vector-field EP.
* `HolomorphicEP(radius, points)`: complex nudges on a circle, exact up to O(r^N) at finite r.
* `ImplicitAdjoint` / `exact_gradient`: the exact equilibrium gradient (GMRES on J^T lam = -dL/dz).
* `BPTT` / `bptt_gradient`: backprop through the deployed finite unroll (not the equilibrium).
* `compare_gradients(a, b)`: cosine and norm ratio per parameter group.

`GradientResult.grads` is keyed like `model.named_parameters()` (every trainable parameter,
readout included); `info` holds per-phase residuals, statuses, NFE and wall time, and the validity
gate (`result.valid`, `info["reason"]`): an estimate whose free phase did not settle is flagged so
the trainer can skip the update (docs/physics.md section 5).
"""

from ._common import DEFAULT_GATE_RESIDUAL, Estimator, GradientResult, PhaseInfo
from .adjoint import ImplicitAdjoint, exact_gradient
from .asymep import AsymEP
from .bptt import BPTT, bptt_gradient
from .compare import compare_gradients, comparison_table
from .device_updates import CrossbarUpdate, DeviceUpdater, UpdateReport, outer_factors
from .holomorphic import HolomorphicEP
from .regularizers import (
    JacobianHomeostasis,
    JacobianPenalty,
    Regularizer,
    RegularizerResult,
    ResidualPenalty,
)

__all__ = [
    "AsymEP",
    "HolomorphicEP",
    "ImplicitAdjoint",
    "exact_gradient",
    "BPTT",
    "bptt_gradient",
    "GradientResult",
    "PhaseInfo",
    "Estimator",
    "compare_gradients",
    "comparison_table",
    "DEFAULT_GATE_RESIDUAL",
    "Regularizer",
    "RegularizerResult",
    "JacobianPenalty",
    "JacobianHomeostasis",
    "ResidualPenalty",
    "DeviceUpdater",
    "UpdateReport",
    "CrossbarUpdate",
    "outer_factors",
]
