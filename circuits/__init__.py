"""analogeq.circuits: analog hardware (devices, crossbars, periphery, netlists, SPICE).

Knows nothing of the transformer model (docs/design.md); may import analogeq.integrators.
"""

from .crossbar import AnalogLinear, Crossbar, PulseResult
from .devices import (
    PRESETS,
    DeviceArray,
    DeviceModel,
    Drift,
    ExpStepResponse,
    ProgrammingNoise,
    PulseResponse,
    ReadNoise,
    ecram,
    ideal,
    pcm,
    preset,
    rram,
)
from .netlist import Netlist, NetlistForce, Reciprocity, from_linear, hopfield, random_hopfield
from .noise import OUProcess, derive_generator, make_generator
from .periphery import ADC, DAC, Amplifier, Quantizer
from .spice import (
    NgspiceError,
    NgspiceNotFoundError,
    SpiceResult,
    VerifyReport,
    from_spice,
    run_ngspice,
    to_spice,
    verify,
)

__all__ = [
    "AnalogLinear",
    "Crossbar",
    "PulseResult",
    "DeviceModel",
    "DeviceArray",
    "ProgrammingNoise",
    "ReadNoise",
    "Drift",
    "PulseResponse",
    "ExpStepResponse",
    "PRESETS",
    "ideal",
    "pcm",
    "rram",
    "ecram",
    "preset",
    "OUProcess",
    "make_generator",
    "derive_generator",
    "DAC",
    "ADC",
    "Amplifier",
    "Quantizer",
    "Netlist",
    "NetlistForce",
    "Reciprocity",
    "from_linear",
    "hopfield",
    "random_hopfield",
    "to_spice",
    "from_spice",
    "run_ngspice",
    "verify",
    "SpiceResult",
    "VerifyReport",
    "NgspiceError",
    "NgspiceNotFoundError",
]
