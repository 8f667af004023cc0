"""Batched GMRES (`analogeq.integrators._krylov.gmres`) against numpy.linalg.solve and scipy.

References are independent: numpy's dense LU solve and scipy.sparse.linalg.gmres (same restarted
GMRES(m) algorithm, one system at a time, on the host), never the code's own output.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch
from analogeq.integrators._krylov import GMRESInfo, gmres


def _batch_operator(A: np.ndarray):
    """matvec for a block-diagonal batch of dense matrices A (batch, n, n), tensors (batch, n)."""
    At = torch.tensor(A)
    return lambda v: torch.einsum("bij,bj->bi", At.to(v.dtype), v)


def _random_systems(batch: int, n: int, seed: int, shift: float = 1.5):
    """Nonsymmetric, well-conditioned: shift * I + Gaussian / sqrt(n) (spectrum in a disc)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((batch, n, n)) / np.sqrt(n) + shift * np.eye(n)
    b = rng.standard_normal((batch, n))
    return A, b


def _ill_conditioned(n: int, seed: int) -> np.ndarray:
    """Two nonsymmetric matrices with condition numbers ~1e6 (graded SVD) and ~5e3 (triangular)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    graded = U @ np.diag(np.logspace(0, -6, n)) @ V.T
    tri = U @ np.diag(np.logspace(0, -3, n)) @ np.triu(np.ones((n, n))) * 0.1 + 1e-3 * np.eye(n)
    return np.stack([graded, tri])


def _true_rel_residual(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    r = b - np.einsum("bij,bj->bi", A, x)
    return np.linalg.norm(r, axis=1) / np.linalg.norm(b, axis=1)


def test_full_gmres_matches_dense_solve():
    A, b = _random_systems(batch=4, n=30, seed=0)
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=1e-12, restart=30)
    ref = np.linalg.solve(A, b[..., None])[..., 0]
    assert isinstance(info, GMRESInfo)
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-10, rtol=0)
    assert bool(info.converged.all())
    # The reported residual is the true one (checked with numpy, up to rounding), below rtol.
    np.testing.assert_allclose(
        info.residual.numpy(), _true_rel_residual(A, x.numpy(), b), atol=1e-14
    )
    assert float(info.residual.max()) <= 1e-12
    # One call per Arnoldi iteration of the slowest sample, plus the final true residual.
    assert info.matvecs == int(info.iterations.max()) + 1


@pytest.mark.parametrize("restart", [5, 12, 40])
def test_restarted_gmres_follows_scipy(restart):
    """GMRES(m) from x0 = 0 is one algorithm: same iterates and iteration counts as scipy's."""
    A, b = _random_systems(batch=3, n=40, seed=1)
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=1e-10, restart=restart, max_iter=2000)
    assert bool(info.converged.all())
    for i in range(3):
        calls = []
        xs, flag = sla.gmres(
            A[i],
            b[i],
            rtol=1e-10,
            atol=0.0,
            restart=restart,
            maxiter=500,
            callback=calls.append,
            callback_type="pr_norm",
        )
        assert flag == 0
        np.testing.assert_allclose(x[i].numpy(), xs, atol=1e-12, rtol=0)
        assert abs(int(info.iterations[i]) - len(calls)) <= 1
    if restart < 40:
        assert info.restarts > 1


def test_ill_conditioned_systems():
    """cond ~1e6 and ~5e3: residual reaches rtol; x matches scipy and numpy within cond * rtol."""
    n = 40
    A = _ill_conditioned(n, seed=2)
    b = np.random.default_rng(3).standard_normal((2, n))
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=1e-10, restart=n, max_iter=400)
    assert bool(info.converged.all())
    true = _true_rel_residual(A, x.numpy(), b)
    assert true.max() <= 1e-10 * 1.01
    ref = np.linalg.solve(A, b[..., None])[..., 0]
    for i in range(2):
        cond = np.linalg.cond(A[i])
        err = np.linalg.norm(x[i].numpy() - ref[i]) / np.linalg.norm(ref[i])
        assert err <= 10 * cond * 1e-10
        xs, flag = sla.gmres(A[i], b[i], rtol=1e-10, atol=0.0, restart=n, maxiter=10)
        assert flag == 0
        assert np.linalg.norm(x[i].numpy() - xs) / np.linalg.norm(xs) <= 10 * cond * 1e-10


def test_initial_guess():
    A, b = _random_systems(batch=2, n=60, seed=4, shift=3.0)
    ref = np.linalg.solve(A, b[..., None])[..., 0]
    op = _batch_operator(A)
    # From the exact solution: converged before any Arnoldi iteration (one matvec for r0).
    x, info = gmres(op, torch.tensor(b), torch.tensor(ref), rtol=1e-10)
    assert bool(info.converged.all()) and int(info.iterations.max()) == 0 and info.matvecs == 1
    # From a nearby guess: fewer iterations than from zero, same answer as scipy with that x0.
    rng = np.random.default_rng(5)
    guess = ref + 1e-3 * rng.standard_normal(ref.shape)
    x_near, info_near = gmres(op, torch.tensor(b), torch.tensor(guess), rtol=1e-10)
    _, info_zero = gmres(op, torch.tensor(b), rtol=1e-10)
    assert bool((info_near.iterations < info_zero.iterations).all())
    for i in range(2):
        xs, flag = sla.gmres(A[i], b[i], x0=guess[i], rtol=1e-10, atol=0.0, restart=20)
        assert np.linalg.norm(A[i] @ xs - b[i]) <= 1e-10 * np.linalg.norm(b[i])
        assert flag == 0
        np.testing.assert_allclose(x_near[i].numpy(), xs, atol=1e-11, rtol=0)


def test_per_sample_convergence_and_tolerances():
    """Each sample stops on its own residual; per-sample rtol and atol are honoured."""
    A, b = _random_systems(batch=3, n=25, seed=6)
    A[0] = np.eye(25) * 2.0  # converges in one iteration
    rtol = torch.tensor([1e-12, 1e-4, 1e-12], dtype=torch.float64)
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=rtol, restart=25)
    true = _true_rel_residual(A, x.numpy(), b)
    assert int(info.iterations[0]) == 1
    assert int(info.iterations[1]) < int(info.iterations[2])
    assert true[1] <= 1e-4 and true[0] <= 1e-12 and true[2] <= 1e-12
    np.testing.assert_allclose(x[0].numpy(), b[0] / 2.0, atol=1e-14)
    # atol alone: ||r|| <= atol in absolute terms.
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=0.0, atol=1e-6, restart=25)
    r = b - np.einsum("bij,bj->bi", A, x.numpy())
    assert np.linalg.norm(r, axis=1).max() <= 1e-6
    # b = 0 gives x = 0 without any Arnoldi iteration.
    x, info = gmres(_batch_operator(A), torch.zeros(3, 25, dtype=torch.float64), rtol=1e-8)
    assert float(x.abs().max()) == 0.0 and bool(info.converged.all()) and info.matvecs == 0


def test_block_structure_and_multidimensional_samples():
    """Samples shaped (3, 4): the operator acts on each flattened sample independently."""
    A, b = _random_systems(batch=2, n=12, seed=7)
    At = torch.tensor(A)

    def matvec(v):
        return torch.einsum("bij,bj->bi", At, v.reshape(2, 12)).reshape(2, 3, 4)

    x, info = gmres(matvec, torch.tensor(b).reshape(2, 3, 4), rtol=1e-12)
    assert x.shape == (2, 3, 4)
    np.testing.assert_allclose(
        x.reshape(2, 12).numpy(), np.linalg.solve(A, b[..., None])[..., 0], atol=1e-10
    )


def test_complex_systems():
    rng = np.random.default_rng(8)
    n = 24
    A = (rng.standard_normal((3, n, n)) + 1j * rng.standard_normal((3, n, n))) / np.sqrt(2 * n)
    A = A + (1.5 + 0.5j) * np.eye(n)
    b = rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n))
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=1e-12, restart=8, max_iter=500)
    assert x.dtype == torch.complex128 and bool(info.converged.all())
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b[..., None])[..., 0], atol=1e-10)
    xs, flag = sla.gmres(A[0], b[0], rtol=1e-12, atol=0.0, restart=8, maxiter=200)
    assert flag == 0
    np.testing.assert_allclose(x[0].numpy(), xs, atol=1e-10)


def test_right_preconditioner_reduces_iterations():
    """A badly scaled diagonal times a mild coupling: diagonal right preconditioning helps."""
    rng = np.random.default_rng(9)
    n = 30
    d = np.logspace(0, 4, n)
    A = np.stack([np.diag(d) @ (np.eye(n) + 0.1 * rng.standard_normal((n, n)) / np.sqrt(n))] * 2)
    b = rng.standard_normal((2, n))
    dt = torch.tensor(d)
    op = _batch_operator(A)
    x_p, info_p = gmres(op, torch.tensor(b), rtol=1e-10, restart=n, precond=lambda v: v / dt)
    x_u, info_u = gmres(op, torch.tensor(b), rtol=1e-10, restart=n)
    ref = np.linalg.solve(A, b[..., None])[..., 0]
    np.testing.assert_allclose(x_p.numpy(), ref, rtol=1e-7, atol=1e-12)
    assert _true_rel_residual(A, x_p.numpy(), b).max() <= 1e-10 * 1.01
    assert int(info_p.iterations.max()) * 2 <= int(info_u.iterations.max())


def test_budget_exhausted_reports_true_residual():
    A, b = _random_systems(batch=2, n=40, seed=10, shift=0.3)
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=1e-12, restart=5, max_iter=7)
    assert not bool(info.converged.any())
    assert int(info.iterations.max()) == 7
    np.testing.assert_allclose(
        info.residual.numpy(), _true_rel_residual(A, x.numpy(), b), rtol=1e-8
    )
    # true_residual=False skips the final matvec and reports the Givens estimate (close here).
    x2, info2 = gmres(
        _batch_operator(A), torch.tensor(b), rtol=1e-12, restart=5, max_iter=7, true_residual=False
    )
    assert info2.matvecs == info.matvecs - 1
    np.testing.assert_allclose(
        info2.residual.numpy(), _true_rel_residual(A, x2.numpy(), b), rtol=1e-6
    )


def test_happy_breakdown_on_invariant_subspace():
    """b in a 3-dimensional invariant subspace: exact after 3 iterations, no NaN."""
    n = 10
    A = np.diag(np.arange(1.0, n + 1))[None]
    b = np.zeros((1, n))
    b[0, :3] = [1.0, -2.0, 0.5]
    x, info = gmres(_batch_operator(A), torch.tensor(b), rtol=1e-14, restart=10)
    assert int(info.iterations[0]) == 3 and bool(torch.isfinite(x).all())
    np.testing.assert_allclose(x[0].numpy(), b[0] / np.arange(1.0, n + 1), atol=1e-14)


def test_float32_default_dtype():
    A, b = _random_systems(batch=2, n=16, seed=11)
    x, info = gmres(
        _batch_operator(A.astype(np.float32)), torch.tensor(b, dtype=torch.float32), rtol=1e-5
    )
    assert x.dtype == torch.float32 and info.residual.dtype == torch.float32
    assert bool(info.converged.all())
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b[..., None])[..., 0], atol=1e-4)


def test_bad_arguments():
    b = torch.ones(2, 3, dtype=torch.float64)

    def ident(v):
        return v

    with pytest.raises(ValueError, match="rtol"):
        gmres(ident, b, rtol=-1e-3)
    with pytest.raises(ValueError, match="rtol"):
        gmres(ident, b, rtol=2.0)
    with pytest.raises(ValueError, match="rtol"):
        gmres(ident, b, rtol=torch.tensor([1e-3, float("nan")], dtype=torch.float64))
    with pytest.raises(ValueError, match="atol"):
        gmres(ident, b, rtol=1e-3, atol=-1.0)
    with pytest.raises(ValueError, match="rtol and atol"):
        gmres(ident, b, rtol=0.0)
    with pytest.raises(ValueError, match="restart"):
        gmres(ident, b, rtol=1e-3, restart=0)
    with pytest.raises(TypeError, match="restart"):
        gmres(ident, b, rtol=1e-3, restart=2.5)
    with pytest.raises(ValueError, match="max_iter"):
        gmres(ident, b, rtol=1e-3, max_iter=0)
    with pytest.raises(TypeError, match="matvec"):
        gmres("not callable", b, rtol=1e-3)
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        gmres(ident, np.ones((2, 3)), rtol=1e-3)
    with pytest.raises(ValueError, match="batch"):
        gmres(ident, torch.ones(3), rtol=1e-3)
    with pytest.raises(TypeError, match="dtype"):
        gmres(ident, torch.ones(2, 3, dtype=torch.long), rtol=1e-3)
    with pytest.raises(ValueError, match="finite"):
        gmres(ident, torch.full((2, 3), float("nan")), rtol=1e-3)
    with pytest.raises(ValueError, match="x0"):
        gmres(ident, b, torch.ones(2, 4, dtype=torch.float64), rtol=1e-3)
    with pytest.raises(ValueError, match="matvec must return"):
        gmres(lambda v: v[:, :2], b, rtol=1e-3)
    with pytest.raises(ValueError, match="precond must return"):
        gmres(ident, b, rtol=1e-3, precond=lambda v: v.float())
