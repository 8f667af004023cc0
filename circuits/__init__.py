"""analogeq.circuits: analog hardware (devices, crossbars, periphery, netlists, SPICE).

Knows nothing of the transformer model (DESIGN.md); may import analogeq.integrators.
"""
