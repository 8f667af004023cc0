"""The nudged force of equilibrium propagation, with the AsymEP correction, as an integrator force.

    F_beta(z) = F(z) - beta dL/dz(z) - 2 A (z - z0),        A = (J - J^T) / 2,  J = dF/dz(z0)

Why this form (docs/physics.md section 5, Scurria et al. 2026). Linearised at the free equilibrium
z0 (F(z0) = 0), the nudged fixed point solves (J - 2A) dz = beta l with l = dL/dz(z0). Since
J - 2A = J^T exactly, dz / beta -> J^{-T} l = -lam, the implicit adjoint: the nudged relaxation
computes the transposed solve that backpropagation would need, for any amount of asymmetry. Plain
"vector-field" EP (no correction) computes J^{-1} l instead, which differs from J^{-T} l unless J is
symmetric. The correction is linear in z - z0 and vanishes at z0, so the free fixed point is also
the nudged one at beta = 0, and the nudged Jacobian at z0 is J^T: same eigenvalues as J, so a
free phase that settles stably also settles the nudged phase.

Matrix-free: one autograd graph of F at z0 is recorded once per gradient (`Linearization`); every
nudged evaluation then costs one J v (a double-backward pass through the stored graph, no new
forward) and one J^T v (one backward pass). The graph is shared by every nudged phase of one
estimate, and by the readout of the parameter gradient.

The force keeps the integrators' protocol: `leak` (the block's 1 + c: the correction and the nudge
are put in `nonlinear`, so IMEX, implicit and Anderson's IMEX map treat exactly the same linear leak
as in the free phase), `nonlinear`, `select(index)` (restriction to samples that still run), and
forward-mode JVPs (ImplicitEuler's Newton-Krylov) through explicit tangent rules.

Complex nudges (holomorphic EP): z and beta complex. F and dL/dz are the model's holomorphic
extensions; A stays the real matrix at the real z0, applied complex-linearly (A (x + iy) = A x +
i A y, two real products), so F_beta is holomorphic in z and beta and its fixed point z(beta) is
an analytic function of beta with z'(0) = J^{-T} l, which Cauchy's formula reads off.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """complex128 for float64, complex64 for float32; a TypeError for any other dtype."""
    table = {torch.float64: torch.complex128, torch.float32: torch.complex64}
    if real not in table:
        raise TypeError(
            f"complex (holomorphic) nudges need a float32 or float64 model, got {real}"
        )
    return table[real]


def _split_apply(op: Any, v: Tensor) -> Tensor:
    """A real-linear operator on a complex vector: op(Re v) + i op(Im v)."""
    if not v.is_complex():
        return op(v)
    return torch.complex(op(v.real.contiguous()), op(v.imag.contiguous()))


class Linearization:
    """J v and J^T v of a force at a fixed real state z0, from one stored autograd graph.

    Shapes: vectors like z0 (batch, ...); real or complex (a complex vector is applied as
    J Re v + i J Im v, counting two products). `index` (1-D LongTensor) applies the operator to the
    samples `index` only: the vector is embedded with zeros into the full batch (J is block-diagonal
    over samples, so the rows of the result are exact), which reuses the one graph instead of
    recording another for every sub-batch the settle loop hands over.

    * `vjp(v)` = J^T v: one backward pass through the graph of F at z0.
    * `jvp(v)` = J v: the derivative of u -> J^T u (recorded once with create_graph) along v, a
      double-backward pass with no new forward. Forward-mode AD (torch.func.jvp) re-runs the
      forward with tangents on every call and measured 3-5x slower on the block.
    * `out`: F(z0), with its graph to the parameters (reused for lam^T dF/dtheta).
    """

    def __init__(self, force: Any, z0: Tensor, *, jvp: bool):
        with torch.enable_grad():
            self._z = z0.detach().requires_grad_(True)
            self.out = force(self._z)
            self._u: Tensor | None = None
            self._g: Tensor | None = None
            if jvp:
                self._u = torch.zeros_like(self.out, requires_grad=True)
                (self._g,) = torch.autograd.grad(self.out, self._z, self._u, create_graph=True)
        self.shape = tuple(z0.shape)
        self.n_jvp = 0
        self.n_vjp = 0

    def _embed(self, v: Tensor, index: Tensor | None) -> Tensor:
        if index is None:
            return v
        return torch.zeros(self.shape, dtype=v.dtype, device=v.device).index_copy(0, index, v)

    def _real_vjp(self, v: Tensor) -> Tensor:
        self.n_vjp += 1
        return torch.autograd.grad(self.out, self._z, v, retain_graph=True)[0]

    def _real_jvp(self, v: Tensor) -> Tensor:
        if self._g is None or self._u is None:
            raise RuntimeError("this Linearization was built without jvp=True")
        self.n_jvp += 1
        return torch.autograd.grad(self._g, self._u, v, retain_graph=True)[0]

    def vjp(self, v: Tensor, index: Tensor | None = None) -> Tensor:
        """J^T v; v (k, ...) for the samples `index` (all when None)."""
        out = _split_apply(self._real_vjp, self._embed(v, index))
        return out if index is None else out.index_select(0, index)

    def jvp(self, v: Tensor, index: Tensor | None = None) -> Tensor:
        """J v; v (k, ...) for the samples `index` (all when None)."""
        out = _split_apply(self._real_jvp, self._embed(v, index))
        return out if index is None else out.index_select(0, index)

    def antisym2(self, v: Tensor, index: Tensor | None = None) -> Tensor:
        """2 A v = (J - J^T) v (the leak's -(1 + c) I cancels exactly)."""
        v_full = self._embed(v, index)
        out = _split_apply(self._real_jvp, v_full) - _split_apply(self._real_vjp, v_full)
        return out if index is None else out.index_select(0, index)

    def release(self) -> None:
        """Drop the stored graphs (the memory of one forward and one backward)."""
        self.out = self.out.detach()
        self._g = self._u = None


class LossGradient:
    """l(z) = dL/dz on the samples `index` of a batch: exact rows of the full-batch gradient.

    The loss is a mean over the batch, so one sample's gradient carries the full batch's
    normalisation. A sub-batch is therefore embedded into the full batch (`fill`, the free state,
    for the other rows) and the loss evaluated there: the rows returned do not depend on the fill
    (the loss is a sum of per-sample terms), and nothing about the normalisation needs to be known.
    Complex z gives the holomorphic derivative of the loss's holomorphic extension (PyTorch's
    backward returns its conjugate for a holomorphic function).
    """

    def __init__(self, model: Any, targets: Tensor, fill: Tensor, index: Tensor | None = None):
        self.model = model
        self.targets = targets
        self.fill = fill.detach()
        self.index = index

    def select(self, index: Tensor) -> LossGradient:
        glob = index if self.index is None else self.index.index_select(0, index)
        return LossGradient(self.model, self.targets, self.fill, glob)

    def _full(self, z: Tensor) -> Tensor:
        if self.index is None:
            return z.detach()
        return self.fill.to(z.dtype).index_copy(0, self.index, z.detach())

    def _rows(self, g: Tensor) -> Tensor:
        return g if self.index is None else g.index_select(0, self.index)

    def __call__(self, z: Tensor) -> Tensor:
        with torch.enable_grad():
            zz = self._full(z).requires_grad_(True)
            loss = self.model.loss(zz, self.targets)
            (g,) = torch.autograd.grad(loss, zz, torch.ones_like(loss))
        return self._rows(g.conj() if g.is_complex() else g)

    def hvp(self, z: Tensor, w: Tensor) -> Tensor:
        """H(z) w, the derivative of l along w (the tangent rule for forward-mode JVPs).

        H is symmetric (complex symmetric for the holomorphic extension), so H w = H^T w is a
        vector-Jacobian product of l; PyTorch's returns (dl/dz)^H v, hence the conjugations.
        """
        w_full = self._full(w) if self.index is None else torch.zeros_like(
            self.fill, dtype=w.dtype
        ).index_copy(0, self.index, w.detach())
        with torch.enable_grad():
            zz = self._full(z).requires_grad_(True)
            loss = self.model.loss(zz, self.targets)
            (g,) = torch.autograd.grad(loss, zz, torch.ones_like(loss), create_graph=True)
            l_z = g.conj() if g.is_complex() else g
            (h,) = torch.autograd.grad(l_z, zz, w_full.conj() if w_full.is_complex() else w_full)
        return self._rows(h.conj() if h.is_complex() else h)


class NudgedForce:
    """F_beta(z) = F(z) - beta dL/dz(z) - 2 A (z - z0) (see the module docstring).

    Args:
        force: the block's force (with `leak`, `nonlinear`, optionally `select`).
        loss_grad: `LossGradient` bound to the targets and the free state.
        beta: the nudge, a real or complex number (complex needs a complex state).
        z0: the free equilibrium (batch, ...), real.
        lin: the `Linearization` of `force` at z0, or None for plain vector-field EP.

    Shapes: z (k, ...) with k the batch, or the number of selected samples after `select`; complex
    z for complex beta. Output like z.
    """

    def __init__(
        self,
        force: Any,
        loss_grad: LossGradient,
        beta: float | complex,
        z0: Tensor,
        lin: Linearization | None,
        *,
        index: Tensor | None = None,
        root: Any = None,
    ):
        self.force = force
        self.loss_grad = loss_grad
        self.beta = beta
        self.z0 = z0.detach()  # rows of this view
        self.lin = lin
        self.index = index
        self._root = force if root is None else root
        self.leak = force.leak

    # -- the extra terms ---------------------------------------------------------------------------
    def _extra(self, z: Tensor) -> Tensor:
        """-beta l(z) - 2 A (z - z0), with an explicit tangent when z is a forward-AD dual."""
        primal, tangent = fwAD.unpack_dual(z)
        out = -self.beta * self.loss_grad(primal)
        if self.lin is not None:
            out = out - self.lin.antisym2(primal - self.z0.to(primal.dtype), self.index)
        if tangent is None:
            return out
        # Forward-mode JVP (ImplicitEuler's Newton-Krylov): the terms are built from autograd
        # graphs that forward AD cannot see through, so their tangent is given explicitly:
        # d/dz [-beta l(z) - 2A (z - z0)] w = -beta H_L(z) w - 2 A w.
        t = -self.beta * self.loss_grad.hvp(primal, tangent)
        if self.lin is not None:
            t = t - self.lin.antisym2(tangent, self.index)
        return fwAD.make_dual(out, t)

    # -- the force protocol ------------------------------------------------------------------------
    def nonlinear(self, z: Tensor) -> Tensor:
        """N(z) - beta l(z) - 2 A (z - z0), shape like z."""
        return self.force.nonlinear(z) + self._extra(z)

    def __call__(self, z: Tensor) -> Tensor:
        return self.force(z) + self._extra(z)

    def select(self, index: Tensor) -> NudgedForce:
        """The nudged force on the samples `index` (1-D LongTensor into this view's samples)."""
        glob = index if self.index is None else self.index.index_select(0, index)
        selector = getattr(self._root, "select", None)
        if callable(selector):
            base: Any = selector(glob)
        else:
            base = _Embedded(self._root, self.loss_grad.fill, glob)
        return NudgedForce(
            base, self.loss_grad.select(index), self.beta, self.z0.index_select(0, index),
            self.lin, index=glob, root=self._root,
        )


class _Embedded:
    """A force without `select`, restricted by embedding the sub-batch into a full fill state."""

    def __init__(self, force: Any, fill: Tensor, index: Tensor):
        self.force, self.fill, self.index = force, fill, index
        self.leak = force.leak

    def _run(self, fn: Any, z: Tensor) -> Tensor:
        full = self.fill.to(z.dtype).index_copy(0, self.index, z)
        return fn(full).index_select(0, self.index)

    def __call__(self, z: Tensor) -> Tensor:
        return self._run(self.force, z)

    def nonlinear(self, z: Tensor) -> Tensor:
        return self._run(self.force.nonlinear, z)


def complexify(z: Tensor) -> Tensor:
    """A real state as complex (imaginary part 0): complex128 for float64, complex64 for float32."""
    return z.to(complex_dtype(z.dtype))


__all__ = ["Linearization", "LossGradient", "NudgedForce", "complexify", "complex_dtype"]
