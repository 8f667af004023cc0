"""Batched, matrix-free restarted GMRES in torch: many independent linear systems at once.

Solves A_i x_i = b_i for every sample i of a batch, where `matvec` applies all the A_i at once to a
tensor of shape (batch, ...) (a block-diagonal operator: row i of the output depends only on row i
of the input). This is the shape of every linear solve in analogeq: the Newton direction of
implicit Euler ((I - eps J) s = -G, with J v from a JVP of the force) and the implicit adjoint
(J^T lam = -l, with J^T v from a VJP).

Why hand-written: `scipy.sparse.linalg.gmres` solves one system, in numpy, on the host. Here the
operator is a force's JVP on a torch device, for a whole batch; calling scipy per sample would move
every Krylov vector to the host and serialize the batch (B solves x k matvecs, each a force pass,
instead of k batched passes). This module keeps everything on the tensors' device and dtype (real or
complex), runs one Arnoldi process per sample in lock-step, and lets each sample stop on its own
residual (batches are first-class, as in torchode).

Algorithm (Saad & Schultz 1986; Saad, "Iterative Methods for Sparse Linear Systems", alg. 6.9):
restarted GMRES(m) with modified Gram-Schmidt Arnoldi (batched inner products), complex Givens
rotations on the Hessenberg matrix (so the residual norm of the least-squares problem is known after
every iteration without a solve), and one batched triangular solve per cycle. A right
preconditioner M^{-1} (`precond`) keeps the minimized residual the true residual ||b - A x||, which
inexact Newton's forcing terms are stated in. Samples that converge (or whose Krylov space became
invariant: a "happy breakdown") stop extending their basis; their later columns are masked out of
the least-squares solve. The true residual is recomputed with one matvec at every restart.

Memory: (restart + 1) basis vectors per sample, i.e. (restart + 1) * batch * n entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._base import check_range

MatVec = Callable[[Tensor], Tensor]

# A new Arnoldi vector whose norm fell below this many machine epsilons of ||A v_j|| is rounding
# noise: the Krylov space is (numerically) invariant and the least-squares solution is final.
_BREAKDOWN_EPS = 16


@dataclass(frozen=True)
class GMRESInfo:
    """What a `gmres` call did. Per-sample tensors have shape (batch,) and live on b's device.

    * `residual`: relative residual ||b - A x|| / ||b|| (the absolute residual where b = 0), real
      dtype. Recomputed with a matvec at the end unless `true_residual=False`, in which case it is
      the Givens estimate of the last cycle (equal in exact arithmetic).
    * `iterations`: Arnoldi iterations (Krylov matvecs) during which the sample was still
      extending its basis; a sample that converged early stops counting.
    * `converged`: residual <= max(rtol * ||b||, atol) for that sample.
    * `matvecs`: calls of `matvec` in total (each on the whole batch), including the initial
      residual (when x0 is given) and the residual recomputed at each restart.
    * `restarts`: Arnoldi cycles started.
    """

    residual: Tensor
    iterations: Tensor
    converged: Tensor
    matvecs: int
    restarts: int


def gmres(
    matvec: MatVec,
    b: Tensor,
    x0: Tensor | None = None,
    *,
    rtol: float | Tensor,
    atol: float | Tensor = 0.0,
    restart: int = 20,
    max_iter: int | None = None,
    precond: MatVec | None = None,
    true_residual: bool = True,
) -> tuple[Tensor, GMRESInfo]:
    """Solve A x = b per sample by restarted GMRES(restart).

    Args:
        matvec: v -> A v on tensors shaped like b, (batch, ...); block-diagonal (sample i of the
            output depends on sample i of the input only). Called on the whole batch every time;
            samples that already converged are passed zero vectors.
        b: right-hand sides, shape (batch, ...), floating or complex.
        x0: initial guess shaped like b (default zeros, which saves one matvec).
        rtol: relative tolerance on ||b - A x|| / ||b||, in [0, 1]; a float or a (batch,) tensor
            (per-sample tolerances, e.g. Newton forcing terms).
        atol: absolute tolerance on ||b - A x|| (>= 0), float or (batch,) tensor. A sample stops
            when its residual is <= max(rtol * ||b||, atol). rtol and atol cannot both be 0.
        restart: Krylov dimension per cycle (>= 1); capped at the per-sample size n.
        max_iter: total Arnoldi iterations (matvecs in the Krylov loop) over all cycles (>= 1).
            Default min(10 n, 50 restart).
        precond: right preconditioner v -> M^{-1} v (shaped like b, block-diagonal); GMRES then
            minimizes the true residual of A M^{-1} u = b and returns x = x0 + M^{-1} u.
        true_residual: recompute ||b - A x|| with one matvec at the end (default). False reports the
            Givens estimate instead, saving a matvec when the caller checks the solution itself.

    Returns:
        (x, info): x shaped like b; `GMRESInfo` with per-sample residuals, iterations, convergence.
    """
    if not callable(matvec):
        raise TypeError(f"matvec must be callable v -> A v, got {type(matvec).__name__}")
    if precond is not None and not callable(precond):
        raise TypeError(
            f"precond must be callable v -> M^-1 v or None, got {type(precond).__name__}"
        )
    b = _check_rhs(b)
    batch, shape = b.shape[0], b.shape
    n = b[0].numel()
    real = b.real.dtype if b.is_complex() else b.dtype
    restart = check_range("restart", restart, 1, 10**9, integer=True)
    if max_iter is None:
        max_iter = min(10 * n, 50 * restart)
    max_iter = check_range("max_iter", max_iter, 1, 10**12, integer=True)
    if not isinstance(true_residual, bool):
        raise TypeError(f"true_residual must be a bool, got {type(true_residual).__name__}")
    rtol_t = _check_tol("rtol", rtol, batch, b.device, real, upper=1.0)
    atol_t = _check_tol("atol", atol, batch, b.device, real, upper=torch.finfo(real).max)
    if not bool(((rtol_t > 0) | (atol_t > 0)).all()):
        raise ValueError(
            "rtol and atol cannot both be 0 (for any sample): the solve would never stop"
        )
    if x0 is not None:
        if not isinstance(x0, Tensor):
            raise TypeError(
                f"x0 must be a torch.Tensor shaped like b or None, got {type(x0).__name__}"
            )
        if x0.shape != shape or x0.dtype != b.dtype:
            raise ValueError(
                f"x0 must match b: shape {tuple(shape)} dtype {b.dtype}, got shape "
                f"{tuple(x0.shape)} dtype {x0.dtype}"
            )

    matvecs = 0

    def apply(v: Tensor) -> Tensor:  # A v on flat vectors, (batch, n) -> (batch, n)
        nonlocal matvecs
        matvecs += 1
        out = matvec(v.reshape(shape))
        _check_output("matvec", out, b)
        return out.reshape(batch, n)

    def right(v: Tensor) -> Tensor:  # M^{-1} v on flat vectors
        if precond is None:
            return v
        out = precond(v.reshape(shape))
        _check_output("precond", out, b)
        return out.reshape(batch, n)

    bf = b.reshape(batch, n)
    bnorm = torch.linalg.vector_norm(bf, dim=1)
    thresh = torch.maximum(rtol_t * bnorm, atol_t)
    if x0 is None:
        x = torch.zeros_like(bf)
        r = bf.clone()
    else:
        x = x0.reshape(batch, n).clone()
        r = bf - apply(x)
    rnorm = torch.linalg.vector_norm(r, dim=1)
    converged = rnorm <= thresh
    iterations = torch.zeros(batch, dtype=torch.long, device=b.device)
    m = min(restart, n)
    used = 0
    restarts = 0
    tiny = torch.finfo(real).tiny
    noise = _BREAKDOWN_EPS * torch.finfo(real).eps

    # Host syncs: one per Arnoldi iteration (`live.any()`) and one per cycle. Each iteration costs a
    # matvec (a force JVP in analogeq), so stopping one iteration early saves far more than a sync.
    while used < max_iter and not bool(converged.all()):
        restarts += 1
        active = ~converged
        beta = rnorm
        basis = [torch.where(active[:, None], r / beta.clamp_min(tiny)[:, None], 0)]
        # Rotated Hessenberg columns (the triangular factor R), column j of shape (batch, j + 2).
        cols: list[Tensor] = []
        rot_c: list[Tensor] = []
        rot_s: list[Tensor] = []
        g = torch.zeros(batch, m + 1, dtype=b.dtype, device=b.device)
        g[:, 0] = beta.to(b.dtype)
        k = torch.zeros(batch, dtype=torch.long, device=b.device)  # valid columns per sample
        est = beta.clone()
        live = active.clone()
        for j in range(min(m, max_iter - used)):
            w = apply(right(basis[j]))
            used += 1
            w = torch.where(live[:, None], w, 0)
            w_norm = torch.linalg.vector_norm(w, dim=1)
            col = torch.zeros(batch, j + 2, dtype=b.dtype, device=b.device)
            for i in range(j + 1):  # modified Gram-Schmidt, one batched inner product per vector
                h = (basis[i].conj() * w).sum(dim=1)
                col[:, i] = h
                w = w - h[:, None] * basis[i]
            h_next = torch.linalg.vector_norm(w, dim=1)
            col[:, j + 1] = h_next.to(b.dtype)
            breakdown = h_next <= noise * w_norm
            basis.append(
                torch.where((live & ~breakdown)[:, None], w / h_next.clamp_min(tiny)[:, None], 0)
            )
            for i in range(j):  # earlier rotations on the new column
                a, bb = col[:, i].clone(), col[:, i + 1].clone()
                col[:, i] = rot_c[i] * a + rot_s[i] * bb
                col[:, i + 1] = -rot_s[i].conj() * a + rot_c[i] * bb
            c, s, rr = _givens(col[:, j], col[:, j + 1])
            col[:, j], col[:, j + 1] = rr, 0
            rot_c.append(c)
            rot_s.append(s)
            # A zero pivot (singular A restricted to the Krylov space) would poison the triangular
            # solve: such a column is left out and the sample stops this cycle.
            pivot_ok = rr.abs() > noise * w_norm
            step = live & pivot_ok
            g_j = g[:, j]
            g_new_next = -s.conj() * g_j
            g[:, j + 1] = torch.where(step, g_new_next, g[:, j + 1])
            g[:, j] = torch.where(step, c * g_j, g_j)
            cols.append(torch.where(step[:, None], col, 0))
            k = torch.where(step, j + 1, k)
            est = torch.where(step, g_new_next.abs(), est)
            iterations += live.long()
            live = live & pivot_ok & ~breakdown & ~(est <= thresh)
            if not bool(live.any()):
                break
        y = _solve_upper(cols, g, k)
        dx = sum(y[:, i, None] * basis[i] for i in range(len(cols)))
        x = x + torch.where(active[:, None], right(dx), 0)
        if used >= max_iter or bool((est <= thresh).all()):
            if not true_residual:
                rnorm = torch.where(active, est, rnorm)
                converged = rnorm <= thresh
                break
        r = bf - apply(x)
        rnorm = torch.linalg.vector_norm(r, dim=1)
        converged = rnorm <= thresh

    rel = rnorm / torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    info = GMRESInfo(rel, iterations, converged, matvecs, restarts)
    return x.reshape(shape), info


def _givens(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Complex Givens rotation G = [[c, s], [-conj(s), c]] (c real) with G (a, b) = (r, 0).

    c = |a| / rho, s = (a / |a|) conj(b) / rho, r = (a / |a|) rho with rho = hypot(|a|, |b|); for a
    real dtype this is the classical rotation. a = b = 0 gives the identity (c = 1, s = 0, r = 0).
    """
    abs_a, abs_b = a.abs(), b.abs()
    rho = torch.hypot(abs_a, abs_b)
    safe_rho = torch.where(rho > 0, rho, torch.ones_like(rho))
    phase = torch.where(abs_a > 0, a / torch.where(abs_a > 0, abs_a, torch.ones_like(abs_a)), 1)
    c = torch.where(rho > 0, abs_a / safe_rho, torch.ones_like(rho))
    s = torch.where(rho > 0, phase * b.conj() / safe_rho, torch.zeros_like(a))
    return c, s, phase * rho


def _solve_upper(cols: list[Tensor], g: Tensor, k: Tensor) -> Tensor:
    """y (batch, j) solving R y = g[:, :j] on each sample's first k columns (others give y = 0)."""
    j = len(cols)
    batch = g.shape[0]
    if j == 0:
        return torch.zeros(batch, 0, dtype=g.dtype, device=g.device)
    R = torch.zeros(batch, j, j, dtype=g.dtype, device=g.device)
    for i, col in enumerate(cols):
        R[:, : i + 1, i] = col[:, : i + 1]
    idx = torch.arange(j, device=g.device)
    valid = idx[None, :] < k[:, None]  # (batch, j)
    keep = valid[:, :, None] & valid[:, None, :]
    eye = torch.eye(j, dtype=g.dtype, device=g.device).expand(batch, j, j)
    R = torch.where(keep, R, torch.where(valid[:, :, None] | valid[:, None, :], 0, eye))
    rhs = torch.where(valid, g[:, :j], 0).unsqueeze(-1)
    return torch.linalg.solve_triangular(R, rhs, upper=True).squeeze(-1)


def _check_rhs(b: Any) -> Tensor:
    if not isinstance(b, Tensor):
        raise TypeError(f"b must be a torch.Tensor of shape (batch, ...), got {type(b).__name__}")
    if not (b.is_floating_point() or b.is_complex()):
        raise TypeError(f"b must have a floating or complex dtype, got {b.dtype}")
    if b.ndim < 2 or b.shape[0] < 1 or b[0].numel() < 1:
        raise ValueError(
            f"b must have shape (batch, ...) with batch >= 1 and at least one entry per sample, "
            f"got "
            f"{tuple(b.shape)}; add a batch dimension with b.unsqueeze(0)"
        )
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b must be finite (it holds NaN or inf)")
    return b


def _check_tol(
    name: str, value: Any, batch: int, device: torch.device, real: torch.dtype, upper: float
) -> Tensor:
    """A tolerance as a (batch,) tensor in [0, upper], or a clear error naming it."""
    if isinstance(value, Tensor):
        if value.is_complex() or value.ndim > 1 or (value.ndim == 1 and value.shape[0] != batch):
            raise ValueError(
                f"{name} must be a real scalar or a ({batch},) tensor, got {tuple(value.shape)}"
            )
        t = value.to(device=device, dtype=real).expand(batch)
        bad = ~((t >= 0) & (t <= upper))  # NaN fails both comparisons
        if bool(bad.any()):
            raise ValueError(
                f"{name} must be in [0, {upper}] for every sample, got {value.tolist()}"
            )
        return t
    check_range(name, value, 0.0, upper)  # rejects NaN and inf too (upper is finite)
    return torch.full((batch,), float(value), dtype=real, device=device)


def _check_output(name: str, out: Any, like: Tensor) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != like.shape or out.dtype != like.dtype:
        raise ValueError(
            f"{name} must return a tensor shaped like b, {tuple(like.shape)} {like.dtype}; got "
            f"{tuple(out.shape)} {out.dtype}"
        )


__all__ = ["gmres", "GMRESInfo"]
