"""analogeq: equilibrium transformers on analog hardware: simulate, probe, train, co-design.

Layers (docs/design.md): `analogeq.integrators` settles any vector field; `analogeq.circuits` models
the hardware; this package holds the model, built-in systems, reports and the CLI.
"""

from .hardware import HardwareConfig
from .model import BlockForce, EquilibriumTransformer, ModelConfig

__version__ = "0.1.0"

__all__ = ["BlockForce", "EquilibriumTransformer", "HardwareConfig", "ModelConfig", "__version__"]
