"""Random processes of the hardware: generator plumbing and time-correlated read noise.

Every random effect in `analogeq.circuits` draws from a `torch.Generator` it owns (never the global
RNG). The helpers here make that uniform:

* `make_generator(generator, seed)`: the generator an object will own.
* `derive_generator(parent)`: an independent child stream, seeded by one draw from `parent`, so
  that e.g. read noise (drawn on every read) does not shift the stream that programming draws from.
* `randn` / `rand`: draws made on the generator's own device and then moved to the target device, so
  a CPU generator can feed a module that lives on a GPU, and a seeded CPU run repeats bit-for-bit.

`OUProcess` is read noise during settling as an Ornstein-Uhlenbeck process (a time-correlated,
stationary Gaussian process). Real read noise is not white at the time scale of an analog settle:
1/f and random-telegraph noise have long correlation times, so a whole settle may see an almost
frozen ("quenched") noise pattern, while a long run sees it wander. The OU process spans both limits
with one parameter, the correlation time tau_c:

    dx = -(x / tau_c) dt + sigma sqrt(2 / tau_c) dW,     x(t) ~ N(0, sigma^2) (stationary),
    E[x(t) x(t + s)] = sigma^2 exp(-|s| / tau_c).

It is advanced with the exact discretization (no time-step error, any dt):

    x_{t+dt} = x_t a + sigma sqrt(1 - a^2) N(0, 1),      a = exp(-dt / tau_c),

so tau_c = 0 gives white noise (a fresh draw every step) and tau_c = inf gives quenched noise (one
draw frozen until `reset`). A stochastic integrator calls `step(dt)` once per time step; a quenched
settle calls `reset()` once before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["OUProcess", "make_generator", "derive_generator", "randn", "rand"]

_SEED_HIGH = 2**63 - 1  # exclusive upper bound of a derived seed: any non-negative int64


def make_generator(
    generator: torch.Generator | None = None, seed: int | None = None, *, name: str = "generator"
) -> torch.Generator:
    """The generator an object owns: `generator` itself, or a new CPU generator seeded with `seed`.

    With neither, a new generator is seeded non-deterministically (from the OS); the seed it used is
    `generator.initial_seed()`, so the run can still be repeated. The global RNG is never touched.
    """
    if generator is not None and seed is not None:
        raise ValueError(f"pass either {name} or seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{name} must be a torch.Generator, got {type(generator).__name__}")
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()
        return gen
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    gen.manual_seed(seed)
    return gen


def derive_generator(parent: torch.Generator) -> torch.Generator:
    """A new generator (on `parent`'s device) seeded by one int64 draw from `parent`."""
    seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=parent, device=parent.device)[0])
    child = torch.Generator(device=parent.device)
    child.manual_seed(seed)
    return child


def randn(
    shape: Sequence[int],
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal draws of `shape` from `generator`, returned on `device` (default: CPU)."""
    out = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=generator.device)
    return out if device is None else out.to(device)


def rand(
    shape: Sequence[int],
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform [0, 1) draws of `shape` from `generator`, returned on `device` (default: CPU)."""
    out = torch.rand(tuple(shape), generator=generator, dtype=dtype, device=generator.device)
    return out if device is None else out.to(device)


def _check_time(
    value: float, name: str, *, allow_zero: bool = True, allow_inf: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number (seconds), got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        extra = " (inf allowed)" if allow_inf else ", finite"
        raise ValueError(f"{name} must be {bound}{extra}, got {value}")
    return v


class OUProcess:
    """Stationary Ornstein-Uhlenbeck noise of a fixed shape, advanced with the exact discretization.

    Args:
        shape: shape of the noise tensor (e.g. (out_features, in_features) for one device array).
        sigma: stationary standard deviation (in the unit of whatever it perturbs; 1.0 gives a
            standardized process that callers scale per element).
        tau_c: correlation time in seconds, in [0, inf]. 0 = white noise (fresh draw each step),
            inf = quenched (frozen until `reset`).
        quenched: force the quenched mode whatever tau_c is (one draw frozen for a whole settle).
        generator / seed: the process's own random stream (see `make_generator`).
        dtype, device: of the state tensor.

    The state is drawn from the stationary distribution at construction (and by `reset`), so the
    process is stationary from its first value: Var[x] = sigma^2 at every step.
    """

    def __init__(
        self,
        shape: Sequence[int],
        sigma: float = 1.0,
        tau_c: float = math.inf,
        *,
        quenched: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"shape must have non-negative sizes, got {shape}")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"sigma must be a real number, got {type(sigma).__name__}")
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
        self.shape = shape
        self.sigma = float(sigma)
        self.tau_c = _check_time(tau_c, "tau_c", allow_zero=True, allow_inf=True)
        self.quenched = bool(quenched) or math.isinf(self.tau_c)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator = make_generator(generator, seed)
        self.time = 0.0
        self._x = self._stationary_draw()

    def _stationary_draw(self) -> Tensor:
        return self.sigma * randn(self.shape, self.generator, dtype=self.dtype, device=self.device)

    @property
    def value(self) -> Tensor:
        """The current noise tensor, shape `shape`."""
        return self._x

    def reset(self) -> Tensor:
        """Draw a fresh state from the stationary distribution N(0, sigma^2) and return it."""
        self._x = self._stationary_draw()
        return self._x

    def decay(self, dt: float) -> float:
        """a = exp(-dt / tau_c): the correlation kept over one step of `dt` seconds."""
        dt = _check_time(dt, "dt")
        if self.quenched:
            return 1.0
        if self.tau_c == 0.0:
            return 0.0
        return math.exp(-dt / self.tau_c)

    def step(self, dt: float) -> Tensor:
        """Advance the process by `dt` seconds (exact discretization) and return the new state.

        In the quenched mode the state does not change (it is frozen until `reset`).
        """
        a = self.decay(dt)
        self.time += float(dt)
        if a == 1.0:
            return self._x
        innovation = randn(self.shape, self.generator, dtype=self.dtype, device=self.device)
        # sqrt(1 - a^2) keeps Var[x] = sigma^2 exactly: a^2 sigma^2 + (1 - a^2) sigma^2.
        self._x = a * self._x + (self.sigma * math.sqrt(1.0 - a * a)) * innovation
        return self._x

    def autocorrelation(self, lag: float) -> float:
        """Analytic autocovariance E[x(t) x(t + lag)] = sigma^2 exp(-|lag| / tau_c)."""
        if self.quenched:
            return self.sigma**2
        if self.tau_c == 0.0:
            return self.sigma**2 if lag == 0 else 0.0
        return self.sigma**2 * math.exp(-abs(lag) / self.tau_c)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move the state (not the generator: draws stay on the generator's device)."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self._x = self._x.to(device=self.device, dtype=self.dtype)
        return self

    def __repr__(self) -> str:
        mode = "quenched" if self.quenched else ("white" if self.tau_c == 0 else "ou")
        return f"OUProcess(shape={self.shape}, sigma={self.sigma}, tau_c={self.tau_c}, mode={mode})"
