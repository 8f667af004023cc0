"""Analytic test systems for the integrators, each with its known answers.

Every system is a force in the sense of `analogeq.integrators._force`: a callable F(z) on tensors of
shape (batch, n), with `leak` / `nonlinear(z)` (F = -leak * z + N(z)) where the split is natural and
`select(index)` where a system carries per-sample data. The reference answers (fixed points,
Jacobians and their eigenvalues, Euler's critical step, Euler's limit cycle of the Hopf oscillator)
are computed in float64 with numpy/scipy from the definitions, never with analogeq.

Parameters are kept in float64 (complex128 for complex data) and cast to the state's dtype on every
call, so the same system serves float32, float64 and complex states.

Wrappers:
* `plain(force)`: a bare function (no select, no split): exercises the loop's embed path.
* `NoSelect(force)`: keeps the leak/nonlinear split but hides `select`.
* `Recorder(force)`: logs the number of rows every evaluation receives (shared across `select`).
* `NaNBeyond(force, coord, threshold)`: F is NaN on rows whose z[:, coord] exceeds `threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch import Tensor


def _cast(p: Tensor, z: Tensor) -> Tensor:
    """Parameter `p` on z's device and dtype (real parameters become complex for complex z)."""
    if p.is_complex() and not z.is_complex():
        raise TypeError("a complex parameter needs a complex state")
    return p.to(device=z.device, dtype=z.dtype)


def euler_eps_crit(eigs: np.ndarray) -> float:
    """Largest eps with |1 + eps mu| < 1 for every eigenvalue mu: min over mu of -2 Re mu / |mu|^2.

    0.0 when some eigenvalue has Re mu >= 0 (no step size makes Euler stable).
    """
    eigs = np.asarray(eigs, dtype=complex)
    if np.any(eigs.real >= 0):
        return 0.0
    return float(np.min(-2.0 * eigs.real / np.abs(eigs) ** 2))


def _rows(b: np.ndarray, index: Tensor) -> np.ndarray:
    return b[index.detach().cpu().numpy()]


# ------------------------------------------------------------------------------------------------
# Linear systems
# ------------------------------------------------------------------------------------------------
class LinearSystem:
    """F(z) = A z + b on states (batch, n) (or (batch, *shape) with prod(shape) = n).

    * `b`: shape (n,) (shared) or (batch, n) (per sample; `select` picks rows). Real or complex.
    * split: `leak` = -diag(A) as an (n,) tensor (a Jacobi split) unless given;
      N(z) = F(z) + leak z.
    * references: `fixed_point()` = -A^{-1} b, `eigenvalues`, `jacobian()` = A, `eps_crit`.
    """

    def __init__(self, A: Any, b: Any, leak: float | np.ndarray | None = None):
        self.A_np = np.asarray(A, dtype=np.float64)
        n = self.A_np.shape[0]
        if self.A_np.shape != (n, n):
            raise ValueError(f"A must be square, got {self.A_np.shape}")
        b_np = np.asarray(b)
        self.b_np = b_np.astype(np.complex128 if np.iscomplexobj(b_np) else np.float64)
        if self.b_np.shape[-1] != n or self.b_np.ndim not in (1, 2):
            raise ValueError(f"b must have shape (n,) or (batch, n) with n = {n}, got {b_np.shape}")
        self.n = n
        self._A = torch.from_numpy(self.A_np.copy())
        self._b = torch.from_numpy(self.b_np.copy())
        if leak is None:
            self.leak_np: float | np.ndarray = -np.diag(self.A_np).copy()
        else:
            self.leak_np = leak if np.isscalar(leak) else np.asarray(leak, dtype=np.float64)
        self._leak = (
            float(self.leak_np)
            if np.isscalar(self.leak_np)
            else torch.from_numpy(np.asarray(self.leak_np).copy())
        )

    # -- the force protocol ----------------------------------------------------------------
    def __call__(self, z: Tensor) -> Tensor:
        flat = z.reshape(z.shape[0], -1)
        return (flat @ _cast(self._A, z).T + _cast(self._b, z)).reshape(z.shape)

    @property
    def leak(self) -> float | Tensor:
        return self._leak

    def nonlinear(self, z: Tensor) -> Tensor:
        leak = self._leak if isinstance(self._leak, float) else _cast(self._leak, z)
        return self(z) + leak * z

    def select(self, index: Tensor) -> LinearSystem:
        if self.b_np.ndim == 1:
            return self
        return LinearSystem(self.A_np, _rows(self.b_np, index), leak=self.leak_np)

    # -- references -------------------------------------------------------------------------
    @property
    def batched(self) -> bool:
        return self.b_np.ndim == 2

    def fixed_point(self) -> np.ndarray:
        """z* = -A^{-1} b, shape like b."""
        return -np.linalg.solve(self.A_np, self.b_np.T).T

    def jacobian(self, z: Any = None) -> np.ndarray:
        return self.A_np

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvals(self.A_np)

    @property
    def eps_crit(self) -> float:
        return euler_eps_crit(self.eigenvalues)

    @property
    def inv_norm(self) -> float:
        """||A^{-1}||_2 = 1 / sigma_min(A): ||z - z*|| <= inv_norm * ||F(z)|| (exactly linear)."""
        return float(1.0 / np.linalg.svd(self.A_np, compute_uv=False).min())


def rotation(a: float, b: float, centre: Any = (1.0, 2.0)) -> LinearSystem:
    """Linear rotor F(z) = R (z - centre), R = [[-a, -b], [b, -a]]: eigenvalues -a +- ib.

    Euler's critical step is eps_crit = 2a / (a^2 + b^2). The centre is nonzero so that the force
    residual ||F(z)|| / ||z|| is well defined at the fixed point.
    """
    R = np.array([[-a, -b], [b, -a]], dtype=np.float64)
    c = np.asarray(centre, dtype=np.float64)
    sys = LinearSystem(R, -(R @ c.T).T, leak=float(a))
    sys.centre = c
    return sys


def rotation_eps_crit(a: float, b: float) -> float:
    return 2.0 * a / (a * a + b * b)


def stiff_linear(n: int = 6, seed: int = 0, batch: int = 2) -> LinearSystem:
    """Stiff linear system with eigenvalues exactly -logspace(0, 3, n) (from -1 to -1000).

    A = -D + U with D diagonal and U strictly upper triangular (so eig(A) = -diag(D) exactly);
    split leak = D (an (n,) tensor), N(z) = U z + b. Euler needs eps < 2/1000; IMEX and implicit
    Euler are stable at any eps.
    """
    rng = np.random.default_rng(seed)
    d = np.logspace(0, 3, n)
    U = np.triu(rng.normal(scale=0.5, size=(n, n)), k=1)
    A = -np.diag(d) + U
    zstar = rng.normal(size=(batch, n)) + 1.0
    b = -(A @ zstar.T).T
    return LinearSystem(A, b, leak=d)


def well_conditioned(n: int = 4, seed: int = 0, batch: int = 3) -> LinearSystem:
    """Non-symmetric linear system with Re(eig) in about [-4, -1] and eps_crit > 0.3."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        A = -np.diag(np.linspace(1.0, 4.0, n)) + 0.25 * rng.normal(size=(n, n))
        if euler_eps_crit(np.linalg.eigvals(A)) > 0.3:
            break
    else:  # pragma: no cover - the construction above always succeeds for small n
        raise RuntimeError("could not draw a well-conditioned system")
    zstar = rng.normal(size=(batch, n)) + 1.0
    return LinearSystem(A, -(A @ zstar.T).T)


def saddle(centre: Any = (1.0, 1.0), up: float = 1.0, down: float = 2.0) -> LinearSystem:
    """Real saddle F = diag(up, -down) (z - centre): eigenvalues +up (unstable) and -down.

    A genuine real instability: every method that follows the dynamics runs away monotonically
    (no cycle, no stable root).
    """
    A = np.diag([up, -down]).astype(np.float64)
    c = np.asarray(centre, dtype=np.float64)
    sys = LinearSystem(A, -(A @ c.T).T, leak=float(down))
    sys.centre = c
    return sys


# ------------------------------------------------------------------------------------------------
# Nonlinear systems with rotations
# ------------------------------------------------------------------------------------------------
_J2 = np.array([[0.0, -1.0], [1.0, 0.0]])


class _PairSystem:
    """Base of systems defined on pairs of coordinates (z[:, 2k], z[:, 2k+1])."""

    def __init__(self, centre: Any):
        c = np.asarray(centre, dtype=np.float64)
        if c.shape[-1] % 2:
            raise ValueError(f"the state size must be even (pairs of coordinates), got {c.shape}")
        self.centre_np = c
        self.n = c.shape[-1]
        self._c = torch.from_numpy(c.copy())

    def _u(self, z: Tensor) -> Tensor:
        return (z - _cast(self._c, z)).reshape(z.shape[0], self.n // 2, 2)

    def select(self, index: Tensor) -> Any:
        if self.centre_np.ndim == 1:
            return self
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        _PairSystem.__init__(clone, _rows(self.centre_np, index))
        return clone

    def fixed_point(self) -> np.ndarray:
        return self.centre_np.copy()


class SaturatingRotor(_PairSystem):
    """F(z) = R tanh(z - centre) on every pair, R = [[-a, -b], [b, -a]].

    Fixed point z* = centre, Jacobian R (per pair): eigenvalues -a +- ib. For a > 0 the continuous
    dynamics settle globally (V = sum log cosh(u) decreases at rate a |tanh u|^2), but Euler with
    eps > eps_crit = 2a / (a^2 + b^2) is unstable at z*; |F| <= sqrt(2 (a^2 + b^2)) saturates, so
    the orbit stays bounded: a limit cycle of the discretization. No leak/nonlinear split.
    """

    def __init__(self, a: float = 1.0, b: float = 4.0, centre: Any = (1.0, 2.0)):
        super().__init__(centre)
        self.a, self.b = float(a), float(b)
        self.R_np = np.array([[-a, -b], [b, -a]], dtype=np.float64)
        self._R = torch.from_numpy(self.R_np.copy())

    def __call__(self, z: Tensor) -> Tensor:
        u = torch.tanh(self._u(z))
        return (u @ _cast(self._R, z).T).reshape(z.shape)

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.array([complex(-self.a, self.b), complex(-self.a, -self.b)] * (self.n // 2))

    @property
    def eps_crit(self) -> float:
        return rotation_eps_crit(self.a, self.b)

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        u = (np.asarray(z) - self.centre_np).reshape(-1, 2)
        blocks = [self.R_np * (1.0 / np.cosh(x) ** 2)[None, :] for x in u]
        out = np.zeros((self.n, self.n))
        for k, blk in enumerate(blocks):
            out[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = blk
        return out

    def numpy_force(self, z: np.ndarray) -> np.ndarray:
        u = np.tanh(np.asarray(z) - self.centre_np).reshape(*np.shape(z)[:-1], -1, 2)
        return (u @ self.R_np.T).reshape(np.shape(z))


class HopfOscillator(_PairSystem):
    """F = (mu - |u|^2) u + omega J u on every pair, u = z - centre, J = [[0, -1], [1, 0]].

    Fixed point z* = centre with eigenvalues mu +- i omega: for mu > 0 an unstable focus (the
    self-gain beats the leak) surrounded by a stable limit cycle |u| = sqrt(mu) of angular speed
    omega. No method that follows the dynamics can settle it.
    """

    def __init__(self, mu: float = 1.0, omega: float = 2.0, centre: Any = (3.0, 0.0)):
        super().__init__(centre)
        self.mu, self.omega = float(mu), float(omega)

    def __call__(self, z: Tensor) -> Tensor:
        u = self._u(z)
        r2 = (u * u).sum(-1, keepdim=True)
        ju = torch.stack((-u[..., 1], u[..., 0]), dim=-1)
        return ((self.mu - r2) * u + self.omega * ju).reshape(z.shape)

    @property
    def eigenvalues(self) -> np.ndarray:
        pair = [complex(self.mu, self.omega), complex(self.mu, -self.omega)]
        return np.array(pair * (self.n // 2))

    def euler_orbit(self, eps: float) -> dict[str, float]:
        """Euler's invariant circle for one pair, from the complex form w <- w (1 + eps(mu - |w|^2)
        + i eps omega): radius rho^(1/2) with |1 + eps(mu - rho) + i eps omega| = 1, rotation
        `angle` per step, radial multiplier (stable when |multiplier| < 1), period in steps.
        """
        s = math.sqrt(1.0 - (eps * self.omega) ** 2)
        rho = self.mu + (1.0 - s) / eps
        return {
            "radius": math.sqrt(rho),
            "angle": math.atan2(eps * self.omega, s),
            "period": 2 * math.pi / math.atan2(eps * self.omega, s),
            "radial_multiplier": 1.0 - 2.0 * eps * rho * s,
            "force_norm": math.sqrt(rho) * abs(complex(self.mu - rho, self.omega)),
        }

    def euler_residual_range(self, eps: float) -> tuple[float, float]:
        """(min, max) of ||F|| / ||z|| over Euler's invariant circle (2-D system only)."""
        orbit = self.euler_orbit(eps)
        c = float(np.linalg.norm(self.centre_np))
        r = orbit["radius"]
        return orbit["force_norm"] / (c + r), orbit["force_norm"] / abs(c - r)


# ------------------------------------------------------------------------------------------------
# Contractive tanh network (docs/physics.md section 5: contraction by construction)
# ------------------------------------------------------------------------------------------------
class ContractiveTanh:
    """F(z) = -(1 + c) z + W tanh(z) + b with ||W||_2 = L < 1 + c.

    leak = 1 + c, N(z) = W tanh(z) + b with Lip(N) <= L. Then (docs/physics.md section 5):
    * the fixed point is unique; mu_2(J) <= -(1 + c - L), hence
      ||z - z*|| <= ||F(z)|| / (1 + c - L) for every z;
    * Euler's map is a contraction with factor q(eps) = |1 - eps(1 + c)| + eps L, < 1 iff
      eps < 2 / (1 + c + L).
    `b` is per sample (batch, n): `select` picks rows.
    """

    def __init__(self, c: float = 1.0, L: float = 0.5, n: int = 8, seed: int = 0, batch: int = 2,
                 b_scale: float = 1.0):
        if not 0.0 <= L < 1.0 + c:
            raise ValueError(f"need 0 <= L < 1 + c, got L={L}, c={c}")
        rng = np.random.default_rng(seed)
        W0 = rng.normal(size=(n, n))
        W = W0 * (L / np.linalg.norm(W0, 2)) if L > 0 else np.zeros((n, n))
        b = b_scale * rng.normal(size=(batch, n)) + 0.5
        self._setup(c, L, W, b)

    def _setup(self, c: float, L: float, W: np.ndarray, b: np.ndarray) -> None:
        self.c, self.L, self.n = float(c), float(L), W.shape[0]
        self.W_np, self.b_np = W, b
        self._W = torch.from_numpy(W.copy())
        self._b = torch.from_numpy(b.copy())
        self.leak = 1.0 + self.c

    def __call__(self, z: Tensor) -> Tensor:
        return -self.leak * z + self.nonlinear(z)

    def nonlinear(self, z: Tensor) -> Tensor:
        return torch.tanh(z) @ _cast(self._W, z).T + _cast(self._b, z)

    def select(self, index: Tensor) -> ContractiveTanh:
        out = object.__new__(ContractiveTanh)
        out._setup(self.c, self.L, self.W_np, _rows(self.b_np, index))
        return out

    # -- references -------------------------------------------------------------------------
    def numpy_force(self, z: np.ndarray) -> np.ndarray:
        return -self.leak * z + np.tanh(z) @ self.W_np.T + self.b_np

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        """Dense J = -(1 + c) I + W diag(sech^2 z) for one sample z (n,)."""
        return -self.leak * np.eye(self.n) + self.W_np * (1.0 / np.cosh(z) ** 2)[None, :]

    def fixed_point(self) -> np.ndarray:
        """z* per sample (batch, n): scipy.optimize.root (hybr, analytic J), Newton-polished."""
        out = np.empty_like(self.b_np)
        for i, b in enumerate(self.b_np):
            def fun(z: np.ndarray, b: np.ndarray = b) -> np.ndarray:
                return -self.leak * z + self.W_np @ np.tanh(z) + b

            sol = scipy.optimize.root(fun, b / self.leak, jac=self.jacobian, method="hybr",
                                      tol=1e-13)
            x = sol.x
            for _ in range(3):  # Newton polish in float64 (J is invertible: mu_2(J) < 0)
                x = x - np.linalg.solve(self.jacobian(x), fun(x))
            if np.linalg.norm(fun(x)) > 1e-13 * (1 + np.linalg.norm(b)):
                raise RuntimeError(f"reference solve failed for sample {i}: {sol.message}")
            out[i] = x
        return out

    @property
    def monotonicity(self) -> float:
        """1 + c - L: lower bound of ||F(z) - F(z')|| / ||z - z'||."""
        return self.leak - self.L

    def q(self, eps: float) -> float:
        """Euler's contraction factor |1 - eps(1 + c)| + eps L."""
        return abs(1.0 - eps * self.leak) + eps * self.L

    @property
    def eps_max(self) -> float:
        """Euler contracts (q < 1) for eps < 2 / (1 + c + L)."""
        return 2.0 / (self.leak + self.L)


# ------------------------------------------------------------------------------------------------
# Wrappers
# ------------------------------------------------------------------------------------------------
def plain(force: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A bare function: no `select`, no split (the loop must evaluate whole batches)."""

    def f(z: Tensor) -> Tensor:
        return force(z)

    return f


class NoSelect:
    """The force with its leak/nonlinear split but without `select`."""

    def __init__(self, force: Any):
        self._inner = force

    def __call__(self, z: Tensor) -> Tensor:
        return self._inner(z)

    @property
    def leak(self) -> Any:
        return self._inner.leak

    def nonlinear(self, z: Tensor) -> Tensor:
        return self._inner.nonlinear(z)


class Recorder:
    """Logs the number of rows of every evaluation (F or N); sub-forces share the log."""

    def __init__(self, force: Any, log: list[int] | None = None):
        self._inner = force
        self.log: list[int] = [] if log is None else log

    def __call__(self, z: Tensor) -> Tensor:
        self.log.append(int(z.shape[0]))
        return self._inner(z)

    def __getattr__(self, name: str) -> Any:
        if name in ("leak", "nonlinear"):
            return getattr(self._inner, name)  # AttributeError when the inner force has no split
        raise AttributeError(name)

    def select(self, index: Tensor) -> Recorder:
        return Recorder(self._inner.select(index), self.log)


class NaNBeyond:
    """F(z), except NaN on the rows whose z[:, coord] exceeds `threshold` (select-able)."""

    def __init__(self, force: Any, coord: int, threshold: float):
        self._inner, self.coord, self.threshold = force, coord, threshold

    def __call__(self, z: Tensor) -> Tensor:
        f = self._inner(z)
        bad = (z.real[:, self.coord] > self.threshold).view(-1, *([1] * (z.ndim - 1)))
        return torch.where(bad, torch.full_like(f, float("nan")), f)

    def select(self, index: Tensor) -> NaNBeyond:
        return NaNBeyond(self._inner.select(index), self.coord, self.threshold)


# ------------------------------------------------------------------------------------------------
# Independent references for the checks
# ------------------------------------------------------------------------------------------------
def residual_np(force_np: Callable[[np.ndarray], np.ndarray], z: np.ndarray) -> np.ndarray:
    """||F(z)|| / ||z|| per sample, in float64 numpy."""
    z = np.asarray(z)
    return np.linalg.norm(force_np(z), axis=-1) / np.linalg.norm(z, axis=-1)


def linear_force_np(sys: LinearSystem) -> Callable[[np.ndarray], np.ndarray]:
    return lambda z: z @ sys.A_np.T + sys.b_np


def euler_iterates_np(force_np: Callable[[np.ndarray], np.ndarray], z0: np.ndarray, eps: float,
                      steps: int) -> np.ndarray:
    """Manual explicit Euler in numpy: array (steps + 1, *z0.shape) of iterates."""
    out = [np.asarray(z0, dtype=np.result_type(z0, np.float64))]
    for _ in range(steps):
        out.append(out[-1] + eps * force_np(out[-1]))
    return np.stack(out)


def to_np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------------------------------------
# The registered settle methods
# ------------------------------------------------------------------------------------------------
def method_class(name: str) -> type:
    """The integrator class registered as `name` (KeyError names the registered ones)."""
    from analogeq.integrators import METHODS

    if name not in METHODS:
        raise KeyError(f"method {name!r} is not registered; registered: {sorted(METHODS)}")
    return METHODS[name]
