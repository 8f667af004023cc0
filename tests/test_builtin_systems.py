"""The built-in systems of analogeq.systems: their claimed spectra and fixed points, checked against
dense autograd Jacobians and numpy, independently of the integrators."""

import numpy as np
import pytest
import torch

from analogeq import systems


def dense_jacobian(force, z):
    """(n, n) Jacobian of a single-sample force at z (1, n), by autograd."""
    return torch.autograd.functional.jacobian(lambda v: force(v.unsqueeze(0))[0], z[0])


def sorted_eigs(values):
    v = np.asarray(values, dtype=complex)
    return v[np.lexsort((v.imag, v.real))]


def test_rotor_fixed_point_spectrum_and_eps_crit():
    rotor = systems.SaturatingRotor(a=0.7, b=3.0)
    z = rotor.fixed_point
    assert torch.allclose(rotor(z), torch.zeros_like(z))
    eig = torch.linalg.eigvals(dense_jacobian(rotor, z)).numpy()
    np.testing.assert_allclose(sorted_eigs(eig), sorted_eigs(rotor.eigenvalues.numpy()), atol=1e-12)
    mu = complex(-0.7, 3.0)
    # eps_crit is where |1 + eps mu| = 1
    assert abs(abs(1 + rotor.eps_crit * mu) - 1) < 1e-12


def test_hopf_centre_is_unstable_focus_and_circle_is_invariant():
    hopf = systems.HopfOscillator(mu=0.4, omega=2.0)
    centre = hopf.centre
    eig = torch.linalg.eigvals(dense_jacobian(hopf, centre)).numpy()
    np.testing.assert_allclose(sorted_eigs(eig), sorted_eigs(hopf.eigenvalues.numpy()), atol=1e-12)
    # On the circle |u| = sqrt(mu) the force is tangent: F . u = 0
    u = torch.tensor([[np.sqrt(0.4), 0.0]], dtype=torch.float64)
    assert abs(float((hopf(centre + u) * u).sum())) < 1e-12


def test_contractive_tanh_spectral_norm_and_split():
    sys_ = systems.ContractiveTanh(n=12, c=0.5, L=1.2, batch=3, seed=1)
    assert float(torch.linalg.matrix_norm(sys_.W, ord=2)) == pytest.approx(1.2, rel=1e-12)
    z = torch.randn(3, 12, dtype=torch.float64)
    assert torch.allclose(sys_(z), -sys_.leak * z + sys_.nonlinear(z))
    assert sys_.euler_contraction(0.5 * sys_.eps_safe) < 1
    with pytest.raises(ValueError, match="L must be"):
        systems.ContractiveTanh(c=0.5, L=1.5)


def test_stiff_linear_spectrum_and_fixed_point():
    s = systems.StiffLinear(n=6, stiffness=1e3, batch=2)
    eig = np.sort(np.linalg.eigvalsh(s.A.numpy()))
    np.testing.assert_allclose(eig, -np.logspace(0, 3, 6)[::-1], rtol=1e-10)
    assert torch.allclose(s(s.fixed_point), torch.zeros(2, 6, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(systems.SYSTEMS))
def test_select_equals_slicing(name):
    force = systems.SYSTEMS[name](batch=3)
    z = force.initial_state() + 0.3
    idx = torch.tensor([0, 2])
    assert torch.equal(force.select(idx)(z[idx]), force(z)[idx])
