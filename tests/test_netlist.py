"""Netlist graphs and their compiled forces, against hand-written ODEs and dense Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from analogeq.circuits import AnalogLinear, Netlist, from_linear, hopfield, random_hopfield
from analogeq.circuits.netlist import V, exp, tanh
from analogeq.integrators import Status, settle
from hypothesis import given, settings
from hypothesis import strategies as st

C1, C2, C3 = 1e-12, 2e-12, 0.5e-12


def _hand_circuit() -> Netlist:
    net = Netlist("hand")
    net.add_input("u", 0.3)
    net.add_state("x1", C1, leak=1e-5, v0=0.5)
    net.add_state("x2", C2, leak=2e-5, v0=-0.2)
    net.add_state("x3", C3, leak=0.0, v0=0.1)
    net.add_aux("a1", tanh(2.0 * V("x1")))
    net.add_conductance("x1", "x2", 3e-6)
    net.add_conductance("x3", "u", 4e-6)
    net.add_vccs("a1", "x2", 5e-6)
    net.add_vccs("x2", "x3", -1e-6)
    net.add_current("x1", 1e-6 * exp(-V("x3")))
    net.add_current("x3", 2e-7)
    return net


def _hand_ode(z: torch.Tensor) -> torch.Tensor:
    """dV/dt (V/s) of `_hand_circuit`, written from the schematic."""
    x1, x2, x3 = z[:, 0], z[:, 1], z[:, 2]
    i1 = -1e-5 * x1 - 3e-6 * (x1 - x2) + 1e-6 * torch.exp(-x3)
    i2 = -2e-5 * x2 - 3e-6 * (x2 - x1) + 5e-6 * torch.tanh(2.0 * x1)
    i3 = -4e-6 * (x3 - 0.3) - 1e-6 * x2 + 2e-7
    return torch.stack((i1 / C1, i2 / C2, i3 / C3), dim=1)


def test_force_matches_hand_written_ode_and_split():
    net = _hand_circuit()
    z = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = net.force(tau=1.0)  # volts per second
    torch.testing.assert_close(f(z), _hand_ode(z), rtol=1e-12, atol=0)
    # leak = G_ii / C (passive self-conductance), F = -leak z + N(z)
    leak = torch.tensor([(1e-5 + 3e-6) / C1, (2e-5 + 3e-6) / C2, 4e-6 / C3], dtype=torch.float64)
    torch.testing.assert_close(f.leak, leak)
    torch.testing.assert_close(f.nonlinear(z) - f.leak * z, f(z))
    # time unit tau: F = tau dV/dt
    g = net.force(tau=1e-7)
    torch.testing.assert_close(g(z), 1e-7 * _hand_ode(z))
    assert net.force().tau == pytest.approx(sorted(net.time_constants())[1])
    # aux voltages and currents
    torch.testing.assert_close(f.aux(z)[:, 0], torch.tanh(2 * z[:, 0]))
    cur = f.currents(z)
    torch.testing.assert_close(cur[:, 0], 3e-6 * z[:, 1] + 1e-6 * torch.exp(-z[:, 2]))


def test_dtype_follows_state_and_batched_inputs_select():
    net = _hand_circuit()
    f = net.force(tau=1e-7)
    z32 = net.initial_state(2, dtype=torch.float32)
    assert f(z32).dtype == torch.float32
    u = torch.tensor([[0.3], [0.0], [-1.0]], dtype=torch.float64)
    fb = net.force(tau=1.0, inputs=u)
    z = torch.zeros(3, 3, dtype=torch.float64)
    out = fb(z)
    # dV3/dt at z = 0 is (4e-6 u + 2e-7) / C3
    torch.testing.assert_close(out[:, 2], (4e-6 * u[:, 0] + 2e-7) / C3)
    sub = fb.select(torch.tensor([2]))
    torch.testing.assert_close(sub(z[:1]), out[2:])
    with pytest.raises(ValueError, match="batch"):
        fb(torch.zeros(2, 3, dtype=torch.float64))


def test_hopfield_matches_formula_and_settles_with_the_split():
    gen = torch.Generator().manual_seed(3)
    n = 6
    w = 0.2 * torch.randn(n, n, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    for differential in (True, False):
        net = hopfield(w, b, gain=1.5, differential=differential)
        f = net.force(tau=1e-7)  # = C / G: dx/dt = -x + W tanh(1.5 x) + b
        assert f.tau == pytest.approx(net.force().tau)
        z = torch.randn(4, n, generator=gen, dtype=torch.float64)
        ref = -z + torch.tanh(1.5 * z) @ w.T + b
        torch.testing.assert_close(f(z), ref, rtol=1e-12, atol=1e-12)
    res = settle(f, net.initial_state(1), "imex", tol=1e-10, eps=0.5)
    assert res.status is Status.CONVERGED
    zs = res.z
    torch.testing.assert_close(zs, torch.tanh(1.5 * zs) @ w.T + b, rtol=0, atol=1e-8)


def test_from_linear_fixed_point_is_the_layer_read():
    gen = torch.Generator().manual_seed(1)
    layer = AnalogLinear(5, 3, bias=True, device="ideal", dtype=torch.float64)
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    layer.program(w, bias)
    x = torch.randn(5, generator=gen, dtype=torch.float64)
    net = from_linear(layer, x, tau=1e-7)
    c = net.counts()
    assert (c["state"], c["input"]) == (3, 6)  # 5 rows + the 1 V bias rail
    gp, gm = layer.conductances()
    # every nonzero device of each pair as a VCCS (+G_plus / -G_minus), plus the biases
    assert c["vccs"] == int((gp != 0).sum() + (gm != 0).sum()) + 3
    f = net.force(tau=1e-7)
    res = settle(f, net.initial_state(1), "anderson", tol=1e-12)
    with torch.no_grad():
        expected = layer(x[None])
    torch.testing.assert_close(res.z, expected, rtol=1e-9, atol=1e-12)
    assert [len(s) for s in net.strongly_connected_components()] == [1] * 9  # feed-forward


def _dense_jacobian(f, z):
    return torch.autograd.functional.jacobian(lambda v: f(v[None])[0], z[0])


def test_reciprocity_detection():
    # purely resistive (with a symmetric VCCS pair): reciprocal, real spectrum, C J symmetric
    net = Netlist("rc")
    caps = [1e-12, 2e-12, 3e-12]
    for i, c in enumerate(caps):
        net.add_state(f"n{i}", c, leak=1e-6 * (i + 1))
    net.add_input("u", 1.0)
    net.add_conductance("n0", "n1", 2e-6)
    net.add_conductance("n1", "n2", 5e-6)
    net.add_conductance("n2", "u", 1e-6)
    net.add_vccs("n0", "n2", 3e-6)
    net.add_vccs("n2", "n0", 3e-6)
    rec = net.reciprocity()
    assert rec.reciprocal and rec.asymmetry < 1e-12 and not rec.nonreciprocal
    f = net.force(tau=1e-7)
    z = torch.randn(1, 3, dtype=torch.float64)
    jac = _dense_jacobian(f, z)
    cj = torch.diag(torch.tensor(caps, dtype=torch.float64)) @ jac
    torch.testing.assert_close(cj, cj.T)
    assert np.abs(np.linalg.eigvals(jac.numpy()).imag).max() < 1e-9

    # one directed coupling breaks it, and is named
    net.add_vccs("n1", "n0", 4e-6, name="oneway")
    rec = net.reciprocity()
    assert not rec.reciprocal and rec.nonreciprocal == ["oneway"] and rec.asymmetry > 0.01

    # a rotor: antisymmetric VCCS pair -> non-reciprocal, complex eigenvalues
    rot = Netlist("rotor")
    rot.add_state("p", 1e-12, leak=1e-6)
    rot.add_state("q", 1e-12, leak=1e-6)
    rot.add_vccs("q", "p", 1e-5, name="qp")
    rot.add_vccs("p", "q", -1e-5, name="pq")
    assert sorted(rot.reciprocity().nonreciprocal) == ["pq", "qp"]
    jac = _dense_jacobian(rot.force(tau=1e-7), torch.zeros(1, 2, dtype=torch.float64))
    assert np.abs(np.linalg.eigvals(jac.numpy()).imag).max() > 0.5  # -0.1 +- 1j

    # a tanh network couples through its amplifiers: not structurally reciprocal
    hop = random_hopfield(4, symmetric=True)
    rec = hop.reciprocity()
    assert not rec.reciprocal and len(rec.nonreciprocal) == 16


def test_graph_counts_and_components():
    net = random_hopfield(5, seed=2)
    c = net.counts()
    assert (c["state"], c["aux"], c["input"], c["vccs"]) == (5, 5, 1, 30)
    assert c["devices"] == 30 + 5 + 5 + 5 + 1  # vccs, amplifiers, capacitors, leaks, rail
    comps = net.strongly_connected_components()
    assert len(comps[0]) == 10  # every node and its amplifier in one feedback loop
    chain = Netlist("chain")
    chain.add_input("u", 1.0)
    chain.add_state("a", 1e-12, leak=1e-6)
    chain.add_state("b", 1e-12, leak=1e-6)
    chain.add_state("c", 1e-12, leak=1e-6)
    chain.add_vccs("u", "a", 1e-6)
    chain.add_vccs("a", "b", 1e-6)
    chain.add_conductance("b", "c", 1e-6)
    assert [sorted(s) for s in chain.strongly_connected_components()][0] == ["b", "c"]


def test_bad_netlists_raise_clear_errors():
    net = Netlist()
    with pytest.raises(ValueError, match="capacitance of node 'x' must be .*> 0"):
        net.add_state("x", -1e-12)
    with pytest.raises(ValueError, match="leak"):
        net.add_state("x", 1e-12, leak=-1.0)
    net.add_state("x", 1e-12, leak=1e-6)
    with pytest.raises(ValueError, match="unknown element kind 'diode'"):
        net.add_device("diode", "x", "0")
    with pytest.raises(ValueError, match="unknown element kind 'transistor'"):
        Netlist.from_dict({"elements": [{"type": "transistor", "name": "q"}]})
    with pytest.raises(ValueError, match="unknown function 'sin'"):
        from analogeq.circuits.netlist import Func

        Func("sin", V("x"))
    with pytest.raises(ValueError, match="unknown node 'nope'"):
        net.add_conductance("x", "nope", 1e-6)
    with pytest.raises(ValueError, match="already exists"):
        net.add_state("X", 1e-12)  # SPICE names ignore case
    with pytest.raises(ValueError, match="g .*> 0"):
        net.add_conductance("x", "0", -1e-6)
    net.add_input("u", 1.0)
    with pytest.raises(ValueError, match="must be a state node"):
        net.add_vccs("x", "u", 1e-6)
    # dangling: an input nothing reads / a state node with nothing attached
    with pytest.raises(ValueError, match="dangling node 'u'"):
        net.validate()
    lone = Netlist()
    lone.add_state("a", 1e-12, leak=1e-6)
    lone.add_state("b", 1e-12)
    with pytest.raises(ValueError, match="dangling node 'b'"):
        lone.force()
    # floating: two nodes joined only to each other
    fl = Netlist()
    fl.add_state("a", 1e-12)
    fl.add_state("b", 1e-12)
    fl.add_conductance("a", "b", 1e-6)
    with pytest.raises(ValueError, match="floating node"):
        fl.force()
    with pytest.raises(ValueError, match="no state node"):
        Netlist().validate()


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.floats(0.1, 0.95), st.integers(0, 10_000))
def test_contractive_tanh_networks_settle_to_the_formula(n, gain, seed):
    """||W|| < 1: the compiled force has a unique fixed point x = W tanh(x) + b (Banach)."""
    net = random_hopfield(n, gain=gain, seed=seed)
    f = net.force()
    res = settle(f, net.initial_state(1), "anderson", tol=1e-12)
    assert res.status is Status.CONVERGED
    # recover W, b from the devices and check the fixed-point equation independently
    w = torch.zeros(n, n, dtype=torch.float64)
    b = torch.zeros(n, dtype=torch.float64)
    for d in net.devices.values():
        if d["kind"] == "vccs":
            i = int(d["out"][1:])
            if d["ctrl"] == "one":
                b[i] = d["gm"] / 1e-5
            else:
                w[i, int(d["ctrl"][1:])] += d["gm"] / 1e-5
    assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(gain, rel=1e-9)
    z = res.z[0]
    assert float((z - (torch.tanh(z) @ w.T + b)).abs().max()) < 1e-9
    assert math.isfinite(float(res.residual.max()))
