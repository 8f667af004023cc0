"""Built-in fidelity scenarios: small operators whose verdict is known (`analogeq fidelity`).

Each scenario is a force, a start state, the discrete methods to judge, and the verdict
`analogeq.fidelity.compare` must reach (docs/physics.md section 3):

* `healthy`: `ContractiveTanh` (Lip(N) = 1.5 < leak 2): Euler at eps 0.1 contracts
  (eps < 2 / (1 + c + L) = 0.57) -> FAITHFUL.
* `artifact`: `SaturatingRotor(a=1, b=5)`: a stable focus -1 +- 5j, eps_crit = 2a / (a^2 + b^2) =
  1/13 = 0.0769 < 0.1: Euler at 0.1 cycles, the circuit settles -> DISCRETIZATION_ARTIFACT.
* `hopf`: `HopfOscillator(mu=0.5, omega=3)`: the root is an unstable focus 0.5 +- 3j inside a stable
  limit cycle of radius sqrt(0.5) -> CONTINUOUS_INSTABILITY (HOPF).
* `real`: `RealSaddle` (this module): the root has a real eigenvalue +lam; trajectories run away
  monotonically along it -> CONTINUOUS_INSTABILITY (REAL).
* `transformer`: a small seeded `EquilibriumTransformer` with a stiff leak (c = 7) and strong
  couplings (init_scale 2, attn_gain 4), found by measurement (tests/test_fidelity.py asserts it):
  at its fixed point the Jacobian is stable (leading Re mu = -0.62) but a rotating mode
  -4.9 +- 9.8j has |1 + 0.1 mu| > 1 (eps_crit = 0.081): Euler at eps 0.1 cycles while the
  continuous circuit (the ODE reference) settles -> DISCRETIZATION_ARTIFACT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import systems


class RealSaddle:
    """F(z) = S tanh(z - centre), S = Q diag(lam, -a) Q^T (Q a rotation by `angle`); (batch, 2).

    The fixed point z* = centre has the real eigenvalues +lam (unstable) and -a: a saddle. Off the
    stable manifold the state leaves z* monotonically (no rotation, never a cycle); once tanh
    saturates F tends to a constant and ||z|| grows linearly without bound: a real (saddle-type)
    instability of the continuous dynamics that no integrator can settle. Split: leak = a and
    N(z) = F(z) + a z (an exact identity).
    """

    def __init__(
        self,
        lam: float = 0.5,
        a: float = 1.0,
        angle: float = 0.3,
        centre: tuple[float, float] = (1.0, 2.0),
        batch: int = 1,
        dtype: torch.dtype = torch.float64,
    ):
        if not (isinstance(lam, int | float) and math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be a finite number > 0 (the unstable eigenvalue), "
                             f"got {lam}")
        if not (isinstance(a, int | float) and math.isfinite(a) and a > 0):
            raise ValueError(f"a must be a finite number > 0 (the stable eigenvalue -a), got {a}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        self.lam, self.a, self.angle = float(lam), float(a), float(angle)
        c, s = math.cos(angle), math.sin(angle)
        Q = torch.tensor([[c, -s], [s, c]], dtype=dtype)
        self.S = Q @ torch.diag(torch.tensor([self.lam, -self.a], dtype=dtype)) @ Q.T
        self.centre = torch.tensor(centre, dtype=dtype).expand(batch, 2).clone()
        self.leak = self.a

    @property
    def fixed_point(self) -> Tensor:
        return self.centre.clone()

    @property
    def eigenvalues(self) -> Tensor:
        return torch.tensor([complex(self.lam, 0.0), complex(-self.a, 0.0)])

    def __call__(self, z: Tensor) -> Tensor:
        return torch.tanh(z - self.centre.to(z)) @ self.S.to(z).T

    def nonlinear(self, z: Tensor) -> Tensor:
        return self(z) + self.leak * z

    def select(self, index: Tensor) -> RealSaddle:
        out = RealSaddle.__new__(RealSaddle)
        out.__dict__.update(self.__dict__)
        out.centre = self.centre.index_select(0, index.to(self.centre.device))
        return out

    def initial_state(self, offset: float = 0.05) -> Tensor:
        """A start off the stable manifold: the run leaves z* along the unstable direction."""
        return self.centre + offset


TRANSFORMER_CONFIG: dict[str, Any] = dict(
    vocab_size=16, d_model=16, n_heads=2, context=8, c=7.0, init_scale=2.0, attn_gain=4.0,
    dtype=torch.float64,
)
"""The `transformer` scenario's ModelConfig fields (weights seed 0, tokens seed 0, sample 0)."""


@dataclass
class Scenario:
    """A force with a known fidelity verdict.

    * `force`, `z0` (batch, ...): what `compare` runs; `methods`: the discrete methods judged.
    * `expected`: the verdict's name ("faithful", "discretization_artifact",
      "continuous_instability"); `kind`: "hopf" / "real" for instabilities, else None.
    * `eps_crit`: the analytic eps_crit where known (None otherwise).
    * `options`: extra keyword arguments for `compare` (e.g. the reference's horizon).
    """

    name: str
    description: str
    force: Any
    z0: Tensor
    methods: list[Any]
    expected: str
    kind: str | None = None
    eps_crit: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _healthy(batch: int, seed: int) -> Scenario:
    f = systems.ContractiveTanh(n=8, batch=batch, seed=seed)
    return Scenario("healthy", "contractive tanh network, Lip(N) = 1.5 < leak 2", f,
                    f.initial_state(), ["euler"], "faithful")


def _artifact(batch: int, seed: int) -> Scenario:
    f = systems.SaturatingRotor(a=1.0, b=5.0, batch=batch)
    return Scenario("artifact", "saturating rotor, stable focus -1 +- 5j (eps_crit 1/13)", f,
                    f.initial_state(), ["euler"], "discretization_artifact", eps_crit=f.eps_crit)


def _hopf(batch: int, seed: int) -> Scenario:
    f = systems.HopfOscillator(mu=0.5, omega=3.0, batch=batch)
    return Scenario("hopf", "Hopf oscillator, unstable focus 0.5 +- 3j inside a limit cycle", f,
                    f.initial_state(), ["euler"], "continuous_instability", kind="hopf",
                    options={"reference_steps": 200})


def _real(batch: int, seed: int) -> Scenario:
    f = RealSaddle(batch=batch)
    return Scenario("real", "saddle, real eigenvalues +0.5 and -1 (monotone runaway)", f,
                    f.initial_state(), ["euler"], "continuous_instability", kind="real",
                    options={"reference_steps": 200})


def transformer_model(seed: int = 0) -> Any:
    """The `transformer` scenario's model (ModelConfig(**TRANSFORMER_CONFIG), weights `seed`)."""
    from .model import EquilibriumTransformer, ModelConfig

    return EquilibriumTransformer(ModelConfig(**TRANSFORMER_CONFIG), seed=seed)


def transformer_tokens(batch: int = 1, seed: int = 0) -> Tensor:
    """Seeded random token ids (batch, context) for the `transformer` scenario."""
    cfg = TRANSFORMER_CONFIG
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg["vocab_size"], (batch, cfg["context"]), generator=gen)


def _transformer(batch: int, seed: int) -> Scenario:
    model = transformer_model(0)
    tokens = transformer_tokens(1, 0).expand(batch, -1).contiguous()
    force = model.force(tokens)
    return Scenario("transformer",
                    "equilibrium transformer T8 C16, c = 7, init_scale 2, attn_gain 4 (seeded)",
                    force, model.initial_state(force), ["euler"], "discretization_artifact")


SCENARIOS: dict[str, Callable[[int, int], Scenario]] = {
    "healthy": _healthy,
    "artifact": _artifact,
    "hopf": _hopf,
    "real": _real,
    "transformer": _transformer,
}


def build_scenario(name: str, batch: int = 1, seed: int = 0) -> Scenario:
    """The scenario `name` (one of `SCENARIOS`) with `batch` samples; `seed` for random systems."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {sorted(SCENARIOS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    return SCENARIOS[name](batch, seed)


__all__ = ["RealSaddle", "Scenario", "SCENARIOS", "build_scenario", "TRANSFORMER_CONFIG",
           "transformer_model", "transformer_tokens"]
