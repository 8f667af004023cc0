"""SPICE export, the deck round trip, the model netlists, and agreement with the real ngspice.

Tests marked `spice` need the ngspice binary (Debian package `ngspice`; CI installs it) and skip
with a reason without it.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from analogeq.circuits import (
    Netlist,
    NgspiceError,
    NgspiceNotFoundError,
    from_spice,
    random_hopfield,
    run_ngspice,
    to_spice,
    verify,
)
from analogeq.circuits.netlist import V, exp, tanh
from analogeq.circuits.spice import FIXED_POINT_TARGET, TRAJECTORY_TARGET, parse_raw

from analogeq import EquilibriumTransformer, ModelConfig
from analogeq.cli import main
from analogeq.spice_models import block_netlist, ffn_netlist, state_names

HAVE_NGSPICE = shutil.which("ngspice") is not None
needs_ngspice = [
    pytest.mark.spice,
    pytest.mark.skipif(not HAVE_NGSPICE,
                       reason="ngspice not installed (apt-get install -y ngspice)"),
]


def spice_test(fn):
    for mark in reversed(needs_ngspice):
        fn = mark(fn)
    return fn


def _mixed_circuit() -> Netlist:
    net = Netlist("mixed")
    net.add_input("u", -0.25)
    net.add_state("x1", 1e-12, leak=1e-5, v0=0.4)
    net.add_state("x2", 2e-12, leak=1e-5, v0=-0.3)
    net.add_aux("a2", tanh(V("x2")))
    net.add_aux("s", V("a2") * V("a2") + 0.5)
    net.add_conductance("x1", "x2", 2e-6, name="r12")
    net.add_vccs("u", "x1", 4e-6)
    net.add_vccs("a2", "x1", -3e-6)
    net.add_current("x2", 1e-6 * exp(-V("x1")) / V("s"))
    return net


def _tiny_model():
    cfg = ModelConfig(vocab_size=8, d_model=4, n_heads=2, context=3, dtype=torch.float64)
    return EquilibriumTransformer(cfg, seed=0), torch.tensor([[1, 5, 2], [3, 3, 0]])


# ------------------------------------------------------------------------------------------------
# without ngspice


def test_deck_round_trip_is_exact():
    for net in (_mixed_circuit(), random_hopfield(4, seed=1)):
        deck = to_spice(net, 2e-6)
        back = from_spice(deck)
        assert to_spice(back, 2e-6) == deck
        assert back.counts() == net.counts()
        z = torch.randn(3, len(net.state_nodes), dtype=torch.float64)
        torch.testing.assert_close(back.force(tau=1.0)(z), net.force(tau=1.0)(z), rtol=1e-15,
                                   atol=0)
    deck = to_spice(_mixed_circuit(), 1e-6)
    assert "Gm1 0 x1 u 0 4e-06" in deck  # VCCS: current into x1 controlled by V(u)
    assert ".tran" in deck and "uic" in deck and "reltol=1e-06" in deck
    assert "C_x1 x1 0 1e-12 ic=0.4" in deck


def test_hand_written_deck_parses_with_suffixes():
    deck = """hand deck
* a comment
C1 n1 0 1p ic=0.5
R_n1 n1 0 100k
V1 in 0 DC 1
R2 in n1 200k
G1 0 n1 in 0 1u
B1 0 n1 I=1e-6*tanh(V(n1))
.tran 1n 1u uic
.end
"""
    net = from_spice(deck)
    assert net.node("n1")["capacitance"] == pytest.approx(1e-12)
    assert net.node("n1")["leak"] == pytest.approx(1e-5)
    f = net.force(tau=1.0)
    z = torch.tensor([[0.2]], dtype=torch.float64)
    ref = (-1e-5 * 0.2 + (1 - 0.2) / 2e5 + 1e-6 * 1 + 1e-6 * math.tanh(0.2)) / 1e-12
    assert float(f(z)) == pytest.approx(ref, rel=1e-12)


def test_unknown_deck_elements_raise():
    with pytest.raises(ValueError, match="unknown element 'Q1'"):
        from_spice("t\nC1 a 0 1p\nQ1 a 0 0 npn\n.end\n")
    with pytest.raises(ValueError, match="unknown function 'sin'"):
        from_spice("t\nC1 a 0 1p\nR_a a 0 1k\nB1 0 a I=sin(V(a))\n.end\n")


def test_parse_raw_reads_ascii_output():
    raw = ("Title: t\nDate: x\nPlotname: Transient Analysis\nFlags: real\nNo. Variables: 2\n"
           "No. Points: 2\nVariables:\n\t0\ttime\ttime\n\t1\tv(a)\tvoltage\nValues:\n"
           "0\t0.0\n\t1.5\n1\t1e-9\n\t-2.5e-01\n")
    names, data = parse_raw(raw)
    assert names == ["time", "v(a)"]
    np.testing.assert_array_equal(data, [[0.0, 1.5], [1e-9, -0.25]])
    with pytest.raises(NgspiceError, match="truncated"):
        parse_raw(raw.rsplit("\n", 2)[0])


def test_missing_ngspice_names_the_package():
    with pytest.raises(NgspiceNotFoundError, match="apt-get install -y ngspice"):
        run_ngspice(_mixed_circuit(), 1e-6, binary="/nonexistent/ngspice")


def test_block_netlist_matches_the_model_force():
    model, tokens = _tiny_model()
    z = torch.randn(2, 1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for sample in (0, 1):
        mf = model.force(tokens[sample:sample + 1])
        whole = block_netlist(model, tokens, sample=sample)
        assert whole.state_nodes == state_names(3, 4)
        with torch.no_grad():
            got = whole.force(tau=1e-7)(z[sample].reshape(1, 12))
            torch.testing.assert_close(got, mf(z[sample]).reshape(1, 12), rtol=1e-12,
                                       atol=1e-12)
            ffn = ffn_netlist(model, tokens, sample=sample).force(tau=1e-7)
            ref = mf.x_in - mf.leak * z[sample] + mf.ffn(z[sample])
            torch.testing.assert_close(ffn(z[sample].reshape(1, 12)), ref.reshape(1, 12),
                                       rtol=1e-12, atol=1e-12)
        # the initial state is the model's x_in / (1 + c)
        torch.testing.assert_close(whole.initial_state(1),
                                   (mf.x_in / mf.leak).reshape(1, 12).detach())
    with pytest.raises(ValueError, match="branches"):
        block_netlist(model, tokens, branches=("conv",))


# ------------------------------------------------------------------------------------------------
# with ngspice


@spice_test
def test_ngspice_rc_matches_the_analytic_solution():
    """One node charged through a conductance: V(t) = u + (v0 - u) exp(-t / tau)."""
    net = Netlist("rc")
    net.add_input("u", 0.7)
    net.add_state("x", 1e-12, v0=-0.2)
    net.add_conductance("u", "x", 1e-5)
    res = run_ngspice(net, 2e-6)  # 20 tau
    t = res.time
    exact = 0.7 + (-0.2 - 0.7) * np.exp(-t / 1e-7)
    assert np.abs(res.voltage("x") - exact).max() < TRAJECTORY_TARGET / 10
    assert abs(res.voltage("x")[-1] - 0.7) < FIXED_POINT_TARGET / 10


@spice_test
@pytest.mark.parametrize("n", [3, 10])
def test_tanh_circuits_agree_with_analogeq(n, tmp_path):
    rep = verify(random_hopfield(n, seed=n), 30.0)
    assert rep.settle_status == "converged"
    assert rep.max_trajectory_diff <= TRAJECTORY_TARGET
    assert rep.fixed_point_diff <= FIXED_POINT_TARGET
    assert rep.reference_gap < FIXED_POINT_TARGET  # the circuit is at rest by tstop
    assert rep.passed
    assert rep.plot(tmp_path / "v.png").exists()


@spice_test
def test_mixed_behavioural_circuit_agrees():
    rep = verify(_mixed_circuit(), 30.0)
    assert rep.passed, rep.summary()


@spice_test
def test_tiny_block_agrees_with_ngspice():
    model, tokens = _tiny_model()
    rep = verify(block_netlist(model, tokens, sample=1), 25.0)
    assert rep.passed, rep.summary()


@spice_test
def test_ngspice_failure_includes_its_message():
    with pytest.raises(NgspiceError, match="tanhh"):
        run_ngspice("t\nC1 a 0 1p ic=1\nR1 a 0 1k\nB1 b 0 V=tanhh(V(a))\n.tran 1n 10n uic\n.end\n")


@spice_test
def test_cli_export_and_verify(tmp_path, capsys):
    assert main(["spice", "export", "--nodes", "3", "--out", str(tmp_path)]) == 0
    deck = (tmp_path / "spice-hopfield" / "hopfield.cir").read_text()
    assert from_spice(deck).counts()["state"] == 3
    assert main(["spice", "verify", "--nodes", "3", "--out", str(tmp_path)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert (tmp_path / "spice-hopfield" / "verify.png").exists()
    assert (tmp_path / "spice-hopfield" / "report.json").exists()


@spice_test
@pytest.mark.slow
def test_hundred_node_tanh_circuit_agrees():
    rep = verify(random_hopfield(100, seed=100), 30.0)
    assert rep.passed, rep.summary()
