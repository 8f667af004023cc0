"""Small dynamical systems whose answers are known: built-in scenarios for the CLI and for users.

Each is a force in the integrators' protocol (callable on (batch, n), `leak` + `nonlinear` split,
`select`), float64 by default, with its fixed point and Jacobian spectrum where they are analytic.
They reproduce the three behaviours of docs/physics.md section 3 in two dimensions:

* `SaturatingRotor`: a stable focus (Re mu = -a < 0) with a fast rotation b. The continuous system
  settles; explicit Euler past eps_crit = 2a / (a^2 + b^2) grows until tanh saturates and cycles:
  a discretization artifact.
* `HopfOscillator`: an unstable focus (Re mu = +mu) surrounded by a stable limit cycle of radius
  sqrt(mu): a genuine instability, no integrator settles it.
* `ContractiveTanh`: F = -(1+c) z + W tanh(z) + b with ||W||_2 = L < 1 + c: a unique fixed point,
  the circuit contracts at rate >= 1 + c - L and Euler contracts for eps < 2 / (1 + c + L).
* `StiffLinear`: a linear system with eigenvalues spread over three decades (IMEX/implicit
  territory).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _rotation_matrix(a: float, b: float, dtype: torch.dtype) -> Tensor:
    return torch.tensor([[-a, -b], [b, -a]], dtype=dtype)


class SaturatingRotor:
    """F(z) = R tanh(z - centre), R = [[-a, -b], [b, -a]], on a batch of 2-D states (batch, 2).

    Jacobian at the fixed point z* = centre: R, eigenvalues -a +- i b. Split: leak = a (the decay
    rate of the linearization) and N(z) = F(z) + a z, an exact identity (any leak is a valid split).
    """

    def __init__(
        self,
        a: float = 1.0,
        b: float = 4.0,
        centre: tuple[float, float] = (1.0, 2.0),
        batch: int = 1,
        dtype: torch.dtype = torch.float64,
    ):
        if a <= 0:
            raise ValueError(f"a must be > 0 for a stable focus, got {a}")
        self.a, self.b = float(a), float(b)
        self.R = _rotation_matrix(a, b, dtype)
        self.centre = torch.tensor(centre, dtype=dtype).expand(batch, 2).clone()
        self.leak = self.a

    @property
    def fixed_point(self) -> Tensor:
        return self.centre.clone()

    @property
    def eigenvalues(self) -> Tensor:
        return torch.tensor([complex(-self.a, self.b), complex(-self.a, -self.b)])

    @property
    def eps_crit(self) -> float:
        """Largest stable explicit-Euler step at the fixed point: 2a / (a^2 + b^2)."""
        return 2 * self.a / (self.a**2 + self.b**2)

    def __call__(self, z: Tensor) -> Tensor:
        return torch.tanh(z - self.centre.to(z)) @ self.R.to(z).T

    def nonlinear(self, z: Tensor) -> Tensor:
        return self(z) + self.leak * z

    def select(self, index: Tensor) -> SaturatingRotor:
        out = SaturatingRotor.__new__(SaturatingRotor)
        out.__dict__.update(self.__dict__)
        out.centre = self.centre.index_select(0, index.to(self.centre.device))
        return out

    def initial_state(self, offset: float = 1.0) -> Tensor:
        return self.centre + offset


class HopfOscillator:
    """F(z) = (mu - |u|^2) u + omega J u with u = z - centre, J = [[0, -1], [1, 0]]; (batch, 2).

    The centre is an unstable focus (eigenvalues mu +- i omega); trajectories approach the circle
    |u| = sqrt(mu) and rotate forever: a limit cycle of the continuous dynamics.
    """

    def __init__(
        self,
        mu: float = 0.5,
        omega: float = 3.0,
        centre: tuple[float, float] = (1.0, 2.0),
        batch: int = 1,
        dtype: torch.dtype = torch.float64,
    ):
        if mu <= 0:
            raise ValueError(f"mu must be > 0 for a Hopf limit cycle, got {mu}")
        self.mu, self.omega = float(mu), float(omega)
        self.centre = torch.tensor(centre, dtype=dtype).expand(batch, 2).clone()
        self.leak = 1.0

    @property
    def eigenvalues(self) -> Tensor:
        return torch.tensor([complex(self.mu, self.omega), complex(self.mu, -self.omega)])

    @property
    def cycle_radius(self) -> float:
        return math.sqrt(self.mu)

    def __call__(self, z: Tensor) -> Tensor:
        u = z - self.centre.to(z)
        r2 = (u * u).sum(dim=-1, keepdim=True)
        rot = torch.stack((-u[..., 1], u[..., 0]), dim=-1)
        return (self.mu - r2) * u + self.omega * rot

    def nonlinear(self, z: Tensor) -> Tensor:
        return self(z) + self.leak * z

    def select(self, index: Tensor) -> HopfOscillator:
        out = HopfOscillator.__new__(HopfOscillator)
        out.__dict__.update(self.__dict__)
        out.centre = self.centre.index_select(0, index.to(self.centre.device))
        return out

    def initial_state(self, offset: float = 0.05) -> Tensor:
        return self.centre + offset


class ContractiveTanh:
    """F(z) = -(1+c) z + W tanh(z) + b with ||W||_2 = L < 1 + c; states (batch, n).

    W is a random Gaussian matrix rescaled to spectral norm L (shared by the batch); b is drawn per
    sample. Contraction: Lip(N) <= L, so the fixed point is unique and Euler contracts by
    q(eps) = |1 - eps (1 + c)| + eps L per step for eps < 2 / (1 + c + L).
    """

    def __init__(
        self,
        n: int = 16,
        c: float = 1.0,
        L: float = 1.5,
        batch: int = 4,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ):
        if not 0 <= L < 1 + c:
            raise ValueError(f"L must be in [0, 1 + c) = [0, {1 + c}), got {L}")
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(n, n, generator=g, dtype=dtype)
        self.W = W * (L / torch.linalg.matrix_norm(W, ord=2))
        self.b = torch.randn(batch, n, generator=g, dtype=dtype)
        self.c, self.L = float(c), float(L)
        self.leak = 1.0 + self.c

    def euler_contraction(self, eps: float) -> float:
        return abs(1 - eps * (1 + self.c)) + eps * self.L

    @property
    def eps_safe(self) -> float:
        return 2 / (1 + self.c + self.L)

    def nonlinear(self, z: Tensor) -> Tensor:
        return torch.tanh(z) @ self.W.to(z).T + self.b.to(z)

    def __call__(self, z: Tensor) -> Tensor:
        return -self.leak * z + self.nonlinear(z)

    def select(self, index: Tensor) -> ContractiveTanh:
        out = ContractiveTanh.__new__(ContractiveTanh)
        out.__dict__.update(self.__dict__)
        out.b = self.b.index_select(0, index.to(self.b.device))
        return out

    def initial_state(self) -> Tensor:
        return torch.zeros_like(self.b)


class StiffLinear:
    """F(z) = A (z - z*), A = -Q diag(lambdas) Q^T, lambdas log-spaced in [1, stiffness].

    States (batch, n).

    Explicit Euler needs eps < 2 / stiffness; IMEX with leak = stiffness and implicit Euler do not.
    """

    def __init__(
        self,
        n: int = 8,
        stiffness: float = 1000.0,
        batch: int = 4,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ):
        if stiffness < 1:
            raise ValueError(f"stiffness must be >= 1, got {stiffness}")
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))
        self.lambdas = torch.logspace(0, math.log10(stiffness), n, dtype=dtype)
        self.A = -(Q * self.lambdas) @ Q.T
        self.z_star = 1.0 + torch.rand(batch, n, generator=g, dtype=dtype)
        self.leak = float(stiffness)

    @property
    def fixed_point(self) -> Tensor:
        return self.z_star.clone()

    def __call__(self, z: Tensor) -> Tensor:
        return (z - self.z_star.to(z)) @ self.A.to(z).T

    def nonlinear(self, z: Tensor) -> Tensor:
        return self(z) + self.leak * z

    def select(self, index: Tensor) -> StiffLinear:
        out = StiffLinear.__new__(StiffLinear)
        out.__dict__.update(self.__dict__)
        out.z_star = self.z_star.index_select(0, index.to(self.z_star.device))
        return out

    def initial_state(self) -> Tensor:
        return torch.zeros_like(self.z_star)


SYSTEMS = {
    "rotor": SaturatingRotor,
    "hopf": HopfOscillator,
    "contractive": ContractiveTanh,
    "stiff": StiffLinear,
}
