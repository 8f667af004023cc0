"""Euler-Maruyama: explicit Euler plus noise, for analog circuits whose relaxation is noisy.

    z <- z + eps F(z) + sqrt(eps) * sigma * dW,      dW ~ N(0, I) per entry and step

i.e. the SDE dz = F(z) dt + sigma dW, with `sigma` in units of z / sqrt(time). With sigma = 0 the
update is explicit Euler's, operation for operation (bit-identical trajectories).

When is a noisy run settled? Under noise the instantaneous force residual g = ||F(z)|| / ||z||
never reaches a small `tol`: it fluctuates around a *noise floor*. A sample is settled (the loop
then reports it CONVERGED, with the floor in `info["noise_floor"]`) at the end of a window of
`window` steps when

1. the window's mean residual m_k has stopped changing: |m_k - m_{k-1}| <= max(rel_change *
   max(m_k, m_{k-1}), 2 sqrt(2) SE_k), where SE_k is the standard error of m_k estimated from the
   window's `_BLOCKS` block means (under "both windows sit on the floor" the difference has
   standard error sqrt(2) SE_k). So a noisy window does not need an impossibly small relative
   change, while a transient, whose change between windows is many SE, is not taken for a floor;
   and
2. the floor is made by the noise, not by deterministic motion: the drift/noise power ratio over
   the window, Q = eps * sum ||F||^2 / sum ||sigma||^2 (sums over the window's steps, ||sigma||^2
   summed over the state's entries), is at most `max_drift_ratio` (default 1).

Why the second test: a limit cycle with noise also has a flat windowed residual. For any
stationary Euler-Maruyama chain, E||z_{k+1} - c||^2 = E||z_k - c||^2 gives exactly
2 E[(z - c) . F] + eps E||F||^2 + E||sigma||^2 = 0, and for a linear mode mu = -a + ib the ratio is
Q = (eps / eps_crit) / (1 - eps / eps_crit) with eps_crit = 2a / |mu|^2: Q is the relative inflation
of the stationary variance by the discretization, Q <= 1 iff eps <= eps_crit / 2. Noise around a
fixed point that Euler resolves has Q << 1 (Ornstein-Uhlenbeck with a eps = 0.01: Q = 0.005); a
cycle of angular speed omega and radius r has Q = eps omega^2 r^2 / ||sigma||^2, large unless the
noise swamps the motion. Q is an average over modes: in a high-dimensional state a cycle in a few
modes can hide under noise in all the others; confirm with sigma = 0 or the ODE reference.

With sigma = 0 the noise-floor rule is off: the run converges on `tol`, cycles or diverges exactly
as explicit Euler. Randomness comes from a `torch.Generator` only (never the global RNG): pass
`seed` for runs that repeat bit-for-bit on the CPU, or your own `generator` (its state advances
from settle to settle). For a linear (Ornstein-Uhlenbeck) force the floor is predicted by
`ou_stationary_variance` and `ou_noise_floor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._base import Integrator, StepState, check_positive, check_range
from ._force import CountedForce

Noise = Callable[[Tensor, Tensor], Tensor]
"""A state-dependent diffusion: noise(z, t) -> sigma, broadcastable to z (k, ...); t (k,)."""

# Block means per window for the standard error of the window mean.
_BLOCKS = 10
# Standard errors within which two window means count as equal.
_SE_BAND = 2.0


def ou_stationary_variance(a: float, sigma: float, eps: float | None = None) -> float:
    """Stationary variance per coordinate of dz = -a (z - z*) dt + sigma dW (units of z^2).

    Continuous time: sigma^2 / (2a). With a step `eps`, of the Euler-Maruyama chain
    u <- (1 - a eps) u + sqrt(eps) sigma xi: sigma^2 / (a (2 - a eps)), i.e. the continuous value
    times 1 / (1 - a eps / 2); it needs 0 < a eps < 2 (Euler stability).
    """
    a = check_positive("a", a)
    sigma = _check_sigma_number(sigma)
    if eps is None:
        return sigma**2 / (2 * a)
    eps = check_positive("eps", eps)
    if a * eps >= 2:
        raise ValueError(
            f"a * eps must be < 2 for a stationary Euler-Maruyama chain, got {a * eps}"
        )
    return sigma**2 / (a * (2 - a * eps))


def ou_noise_floor(a: float, sigma: float, centre_norm: float, n: int,
                   eps: float | None = None) -> float:
    """Predicted noise floor E[||F(z)|| / ||z||] of F(z) = -a (z - z*) with isotropic noise sigma.

    In the stationary state u = z - z* ~ N(0, v I_n) with v = `ou_stationary_variance`, so
    ||F|| = a ||u|| has mean a sqrt(v) * chi_n, chi_n = sqrt(2) Gamma((n + 1) / 2) / Gamma(n / 2)
    (the mean of a chi distribution with n degrees of freedom), and
    ||z|| = ||z*|| (1 + O(v / ||z*||^2)):

        floor = a sqrt(v) chi_n / ||z*||      (first order in sqrt(v) / ||z*||).

    Args: `centre_norm` = ||z*|| (> 0, units of z); `n` = entries per sample (>= 1).
    """
    v = ou_stationary_variance(a, sigma, eps)
    centre_norm = check_positive("centre_norm", centre_norm)
    n = check_range("n", n, 1, 10**12, integer=True)
    chi = math.sqrt(2.0) * math.exp(math.lgamma((n + 1) / 2) - math.lgamma(n / 2))
    return a * math.sqrt(v) * chi / centre_norm


def _check_sigma_number(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise TypeError(f"sigma must be a real number, got {type(sigma).__name__}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return float(sigma)


class EulerMaruyama(Integrator):
    """Euler-Maruyama with a fixed step; one force evaluation per step.

    Args:
        eps: step size in time units of the force (> 0).
        sigma: the diffusion, in units of z / sqrt(time): a number >= 0, a tensor >= 0 broadcastable
            to z (shape (batch, ...) for per-sample values), or a callable noise(z, t) -> tensor
            broadcastable to z (z (k, ...) the active samples, t (k,) their times). 0 = Euler.
        generator: a torch.Generator on the state's device (mutually exclusive with `seed`).
        seed: an int in [0, 2^64); each settle starts a fresh generator from it (bit-for-bit
            repeatable on the CPU). Neither: a fresh non-deterministic seed, reported in
            `info["seed"]`.
        window: steps per averaging window of the noise-floor rule (>= 2 * _BLOCKS = 20); a
            window should span several relaxation times of the slowest mode (default 500 steps =
            5 time units at eps 0.01).
        rel_change: relative change of the window mean residual below which it has stopped
            changing (0 < rel_change <= 1).
        max_drift_ratio: largest drift/noise power ratio Q of a noise floor (> 0, inf disables
            the test); see the module docstring.

    Per-run state lives in the run's `StepState`, not on this object, so one instance may run
    several settles at once (threads, or a settle inside a force): a seeded or fresh generator's
    state is carried in `extra["rng"]` (its byte state, one identical row per sample, on the
    state's device; on a GPU this costs a small device-host copy per step) and rebuilt each step.
    A caller's `generator` is used as given (its state advances; sharing it between concurrent
    runs shares its stream). `info(state)` gives per-sample (batch,) tensors: `noise_floor` (the
    mean force residual over the last completed window, the floor where `noise_settled`; NaN before
    a window completes, 0 without noise),
    `drift_noise_ratio` (Q of the last window) and `noise_settled` (True where the floor rule,
    not `tol`, ended the sample).
    """

    name = "euler-maruyama"
    default_max_steps = 20000

    def __init__(
        self,
        eps: float = 0.01,
        sigma: float | Tensor | Noise = 0.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        window: int = 500,
        rel_change: float = 0.05,
        max_drift_ratio: float = 1.0,
    ):
        self.eps = check_positive("eps", eps)
        self.sigma = self._check_sigma(sigma)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if seed is not None:
            check_range("seed", seed, 0, 2**64 - 1, integer=True)
        if generator is not None and seed is not None:
            raise ValueError("give either generator or seed, not both")
        self.generator = generator
        self.seed = seed
        self.window = check_range("window", window, 2 * _BLOCKS, 10**12, integer=True)
        self.rel_change = check_range("rel_change", rel_change, 0.0, 1.0)
        if self.rel_change == 0:
            raise ValueError("rel_change must be in (0, 1], got 0")
        self.max_drift_ratio = check_positive("max_drift_ratio", max_drift_ratio, allow_inf=True)
        # Steps per block of a window (blocks differ by at most one step when window % _BLOCKS).
        sizes = [0] * _BLOCKS
        for k in range(self.window):
            sizes[k * _BLOCKS // self.window] += 1
        self._block_sizes = sizes

    @staticmethod
    def _check_sigma(sigma: Any) -> float | Tensor | Noise:
        if isinstance(sigma, Tensor):
            if sigma.is_complex() or not sigma.is_floating_point():
                raise TypeError(f"sigma must be a real floating tensor, got {sigma.dtype}")
            if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
                raise ValueError("sigma must be finite and >= 0 everywhere")
            return sigma.detach()
        if callable(sigma):
            return sigma
        return _check_sigma_number(sigma)

    @property
    def noisy(self) -> bool:
        """False only for sigma == 0 given as a number: then the method is explicit Euler."""
        return not (isinstance(self.sigma, float) and self.sigma == 0.0)

    # -- the method ----------------------------------------------------------------------------
    def init(self, force: CountedForce, z0: Tensor, f0: Tensor) -> StepState:
        state = StepState.start(z0, f0, self.eps)
        if not self.noisy:
            return state
        if z0.is_complex():
            raise TypeError("EulerMaruyama with noise needs a real state; got a complex z0")
        if isinstance(self.sigma, Tensor):
            try:
                shape = torch.broadcast_shapes(self.sigma.shape, z0.shape)
            except RuntimeError:
                shape = None
            if shape != z0.shape:
                raise ValueError(
                    f"sigma of shape {tuple(self.sigma.shape)} does not broadcast to the state's "
                    f"shape {tuple(z0.shape)}"
                )
        b, real = z0.shape[0], z0.dtype
        state.extra.update(self._make_generator(z0.device, b))
        sizes = torch.tensor(self._block_sizes, dtype=real, device=z0.device)
        nan = torch.full((b,), math.nan, dtype=real, device=z0.device)
        zero = torch.zeros(b, dtype=real, device=z0.device)
        state.extra.update(
            sizes=sizes.expand(b, _BLOCKS),
            count=torch.zeros(b, dtype=torch.long, device=z0.device),
            blocks=torch.zeros(b, _BLOCKS, dtype=real, device=z0.device),
            drift2=zero,
            noise2=zero.clone(),
            prev_mean=nan,
            floor=nan.clone(),
            ratio=nan.clone(),
        )
        return state

    def _make_generator(self, device: torch.device, b: int) -> dict[str, Tensor]:
        """The run's generator as `extra` entries: `rng` (b, S) uint8, its byte state, and `seed`
        (b,) int64, the seed's 64 bits (two's complement); none for a caller's generator."""
        if self.generator is not None:
            if self.generator.device.type != device.type:
                raise ValueError(
                    f"generator is on {self.generator.device}, the state on {device}: they must "
                    "match"
                )
            return {}
        gen = torch.Generator(device=device)
        if self.seed is not None:
            seed = gen.manual_seed(self.seed).initial_seed()
        else:
            seed = gen.seed()  # fresh entropy; the global RNG is untouched
        signed = seed - 2**64 if seed >= 2**63 else seed
        return {
            "rng": _rows(gen.get_state(), b, device),
            "seed": torch.full((b,), signed, dtype=torch.long, device=device),
        }

    def _generator_of(self, extra: dict[str, Tensor], device: torch.device) -> torch.Generator:
        """The generator of the run whose state holds `extra`."""
        if self.generator is not None:
            return self.generator
        if "rng" not in extra:
            raise RuntimeError("EulerMaruyama.step called before init")
        gen = torch.Generator(device=device)
        gen.set_state(extra["rng"][0].cpu())
        return gen

    def _diffusion(self, force: CountedForce, z: Tensor, t: Tensor) -> Tensor:
        """sigma for the active samples, broadcastable to z, in z's dtype."""
        sigma = self.sigma
        if isinstance(sigma, Tensor):
            if sigma.ndim == z.ndim and sigma.shape[0] > 1 and force.index is not None:
                sigma = sigma.index_select(0, force.index.to(sigma.device))  # per-sample rows
            return sigma.to(device=z.device, dtype=z.dtype)
        if callable(sigma):
            out = sigma(z, t)
            if not isinstance(out, Tensor):
                raise TypeError(f"sigma(z, t) must return a tensor, got {type(out).__name__}")
            try:
                shape = torch.broadcast_shapes(out.shape, z.shape)
            except RuntimeError:
                shape = None
            if shape != z.shape:
                raise ValueError(
                    f"sigma(z, t) returned shape {tuple(out.shape)}, not broadcastable to the "
                    f"state's shape {tuple(z.shape)}"
                )
            return out.to(dtype=z.dtype)
        return torch.as_tensor(sigma, dtype=z.dtype, device=z.device)

    def step(self, force: CountedForce, state: StepState) -> StepState:
        # Explicit Euler's update, written exactly as ExplicitEuler.step (bit-identical at sigma 0).
        eps = state.eps.view(-1, *([1] * (state.z.ndim - 1))).to(state.z.dtype)
        z = torch.addcmul(state.z, eps, state.f)
        if not self.noisy:
            return state.replace(z=z, f=force(z), t=state.t + state.eps)
        dev = state.z.device
        gen = self._generator_of(state.extra, dev)
        sigma = self._diffusion(force, state.z, state.t)
        dw = torch.randn(state.z.shape, generator=gen, dtype=state.z.dtype, device=dev)
        z = z + eps.sqrt() * sigma * dw
        f = force(z)
        new = state.replace(z=z, f=f, t=state.t + state.eps)
        new = self._floor_rule(new, state, sigma)
        if self.generator is None:
            new.extra["rng"] = _rows(gen.get_state(), z.shape[0], dev)
            new.extra["seed"] = state.extra["seed"]
        return new

    def _floor_rule(self, new: StepState, old: StepState, sigma: Tensor) -> StepState:
        """Accumulate this step into the window; judge the noise floor where a window ends."""
        x = old.extra
        dims = tuple(range(1, new.z.ndim))
        real = x["drift2"].dtype
        g = (torch.linalg.vector_norm(new.f, dim=dims)
             / torch.linalg.vector_norm(new.z, dim=dims).clamp_min(torch.finfo(real).tiny))
        drift2 = x["drift2"] + torch.linalg.vector_norm(old.f, dim=dims).square()
        noise2 = x["noise2"] + sigma.expand_as(new.z).square().sum(dims)
        block = (x["count"] * _BLOCKS) // self.window
        blocks = x["blocks"].scatter_add(1, block.unsqueeze(1), g.unsqueeze(1))
        count = x["count"] + 1
        end = count >= self.window

        block_means = blocks / x["sizes"]
        mean = blocks.sum(1) / self.window
        se = block_means.std(dim=1) / math.sqrt(_BLOCKS)
        ratio = old.eps * drift2 / noise2.clamp_min(torch.finfo(real).tiny)
        prev = x["prev_mean"]
        have_prev = torch.isfinite(prev)
        # Under "both windows sit on the floor" the two means have the same standard error; the
        # current window's is the uncontaminated estimate (the previous one may hold the end of a
        # transient, whose spread of block means would inflate the band).
        band = torch.maximum(
            self.rel_change * torch.maximum(mean, prev), _SE_BAND * math.sqrt(2.0) * se
        )
        flat = have_prev & ((mean - prev).abs() <= band)
        settled_now = end & flat & (ratio <= self.max_drift_ratio)

        keep = ~end
        zeros = torch.zeros_like(drift2)
        new.extra = dict(
            sizes=x["sizes"],
            count=torch.where(keep, count, torch.zeros_like(count)),
            blocks=torch.where(keep.unsqueeze(1), blocks, torch.zeros_like(blocks)),
            drift2=torch.where(keep, drift2, zeros),
            noise2=torch.where(keep, noise2, zeros),
            prev_mean=torch.where(end, mean, prev),
            floor=torch.where(end, mean, x["floor"]),
            ratio=torch.where(end, ratio, x["ratio"]),
        )
        new.settled = old.settled | settled_now
        return new

    def info(self, state: StepState) -> dict[str, Any]:
        b = state.z.shape[0]
        real = state.t.dtype
        if not self.noisy:
            zero = torch.zeros(b, dtype=real, device=state.z.device)
            return {"noise_floor": zero, "drift_noise_ratio": zero.clone(),
                    "noise_settled": state.settled.clone()}
        return {
            "noise_floor": state.extra["floor"].clone(),
            "drift_noise_ratio": state.extra["ratio"].clone(),
            "noise_settled": state.settled.clone(),
            "seed": _seed_of(state.extra),
        }


def _rows(byte_state: Tensor, b: int, device: torch.device) -> Tensor:
    """A generator's byte state (S,) as b identical rows (b, S) on `device`."""
    return byte_state.to(device).unsqueeze(0).expand(b, -1)


def _seed_of(extra: dict[str, Tensor]) -> int | None:
    """The run's seed as an int in [0, 2^64), or None (a caller's generator)."""
    if "seed" not in extra or extra["seed"].numel() == 0:
        return None
    return int(extra["seed"][0]) % 2**64


__all__ = ["EulerMaruyama", "ou_stationary_variance", "ou_noise_floor"]
