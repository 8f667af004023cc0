"""analogeq: equilibrium transformers on analog hardware: simulate, probe, train, co-design."""

__version__ = "0.1.0"
