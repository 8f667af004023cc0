"""Cycle detection: `detect_cycle` on synthetic traces with known shape, then through `settle` on
systems whose Euler orbit is known (Hopf: analytically; saturating rotor: independent numpy Euler).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from analogeq.integrators import Status, detect_cycle, settle
from systems import (
    HopfOscillator,
    SaturatingRotor,
    euler_iterates_np,
    residual_np,
    rotation,
    saddle,
    to_np,
)

F64 = torch.float64


def oscillating_floor(n: int, period: float, floor: float = 1e-2, rel_amp: float = 0.3,
                      rho: float = 1.0) -> np.ndarray:
    k = np.arange(n)
    return floor * rho**k * (1.0 + rel_amp * np.sin(2 * np.pi * k / period))


# ------------------------------------------------------------------------------------------------
# detect_cycle on synthetic traces
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("period", [8.0, 25.0, 37.0, 61.3, 200.0, 250.0])
def test_floor_plus_oscillation_is_a_cycle_with_its_period_and_amplitude(period):
    floor, rel_amp = 1e-2, 0.3
    r = oscillating_floor(2000, period, floor, rel_amp)
    rep = detect_cycle(r)
    assert rep.is_cycle, rep.reason
    assert not rep.monotone
    assert rep.period is not None
    assert abs(rep.period - period) <= 0.1 * period
    assert rep.amplitude == pytest.approx(rel_amp * floor, rel=0.05)
    assert rep.floor == pytest.approx(floor, rel=0.05)
    assert rep.decay == pytest.approx(1.0, abs=0.05)


def test_cycle_on_top_of_a_transient():
    # a long converging transient followed by a cycle: only the tail is judged
    n = 3000
    k = np.arange(n)
    r = np.where(k < 1000, 10.0 * 0.99**k, 0.0) + oscillating_floor(n, 20.0, 1e-3)
    rep = detect_cycle(r)
    assert rep.is_cycle, rep.reason
    assert rep.period == pytest.approx(20.0, rel=0.1)


@pytest.mark.parametrize("rho", [0.99, 0.999])
def test_decaying_oscillation_is_not_a_cycle(rho):
    r = oscillating_floor(2000, 20.0, rho=rho)
    rep = detect_cycle(r)
    assert not rep.is_cycle
    assert not rep.monotone
    assert rep.decay < 0.9
    assert "decay" in rep.reason


def test_decay_is_the_envelope_ratio_of_the_tail_halves():
    # for a monotone geometric trace the ratio is exactly rho^(half the tail)
    rho, n = 0.995, 1000
    r = rho ** np.arange(n)
    rep = detect_cycle(r, min_tail=50, tail_fraction=0.5)
    assert rep.tail_length == 500
    assert rep.decay == pytest.approx(rho**250, rel=1e-9)
    assert rep.monotone and not rep.is_cycle


@pytest.mark.parametrize("min_tail", [20, 50])
def test_short_transient_is_never_a_cycle(min_tail):
    # a perfect oscillating floor, but shorter than 2 * min_tail
    r = oscillating_floor(2 * min_tail - 1, 8.0)
    rep = detect_cycle(r, min_tail=min_tail)
    assert not rep.is_cycle
    assert "short" in rep.reason
    # the same trace one entry longer is judged (and is a cycle)
    r = oscillating_floor(2 * min_tail, 8.0)
    assert detect_cycle(r, min_tail=min_tail).is_cycle


def test_monotone_slow_decay_is_not_a_cycle():
    # so slow that the envelope test calls it a floor (0.99995^500 ~ 0.975), but it never turns
    r = 0.1 * 0.99995 ** np.arange(2000)
    rep = detect_cycle(r)
    assert rep.decay >= 0.9
    assert rep.monotone
    assert not rep.is_cycle
    assert rep.period is None


def test_monotone_slow_growth_is_not_a_cycle():
    r = 1e-3 * 1.00005 ** np.arange(2000)
    rep = detect_cycle(r)
    assert rep.monotone and not rep.is_cycle


def test_flat_floor_is_a_cycle():
    # documented: a constant residual above tol on a moving state (rotation-symmetric orbit)
    rep = detect_cycle(np.full(500, 0.05))
    assert rep.is_cycle
    assert rep.period is None
    assert rep.floor == pytest.approx(0.05)
    assert rep.amplitude == pytest.approx(0.0, abs=1e-15)
    assert "flat" in rep.reason


def test_input_types_agree():
    r = oscillating_floor(400, 16.0)
    a = detect_cycle(r)
    b = detect_cycle(list(r))
    c = detect_cycle(torch.from_numpy(r))
    d = detect_cycle(torch.from_numpy(r).float())
    assert a == b == c
    assert d.is_cycle == a.is_cycle and d.period == pytest.approx(a.period, rel=0.1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_trace_is_value_error(bad):
    r = oscillating_floor(300, 10.0)
    r[150] = bad
    with pytest.raises(ValueError, match="finite"):
        detect_cycle(r)


def test_two_dimensional_trace_is_value_error():
    with pytest.raises(ValueError, match="1-D"):
        detect_cycle(np.ones((10, 2)))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"min_tail": 1}, "min_tail"),
        ({"min_tail": 0}, "min_tail"),
        ({"tail_fraction": 0.0}, "tail_fraction"),
        ({"tail_fraction": 1.5}, "tail_fraction"),
        ({"floor_ratio": 0.0}, "floor_ratio"),
        ({"floor_ratio": 1.1}, "floor_ratio"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        detect_cycle(oscillating_floor(300, 10.0), **kwargs)


@pytest.mark.parametrize("value", [0, -1])
def test_bad_min_oscillations(value):
    with pytest.raises(ValueError, match="min_oscillations"):
        detect_cycle(0.1 * 0.99995 ** np.arange(2000), min_oscillations=value)


@pytest.mark.parametrize("value", [2.0, True, "2"])
def test_non_integer_min_oscillations(value):
    with pytest.raises(TypeError, match="min_oscillations"):
        detect_cycle(oscillating_floor(300, 10.0), min_oscillations=value)


def test_state_norm_running_away_is_never_a_cycle():
    # a flat relative residual (||F|| / ||z|| -> an unstable real eigenvalue) on a growing state
    n = 400
    flat = np.full(n, 0.7)
    growing = 10.0 * 1.05 ** np.arange(n)
    assert detect_cycle(flat).is_cycle  # without the norms: the documented flat-floor cycle
    rep = detect_cycle(flat, state_norm=growing)
    assert not rep.is_cycle
    assert "running away" in rep.reason
    # an oscillating floor whose state also grows is not a cycle either
    assert not detect_cycle(oscillating_floor(n, 10.0), state_norm=growing).is_cycle


def test_state_norm_bounded_keeps_the_cycle():
    n = 400
    r = oscillating_floor(n, 10.0)
    bounded = 3.0 + 0.5 * np.sin(2 * np.pi * np.arange(n) / 10.0)
    rep = detect_cycle(r, state_norm=bounded)
    assert rep.is_cycle
    assert rep.period == pytest.approx(10.0, rel=0.1)
    assert detect_cycle(np.full(n, 0.7), state_norm=np.full(n, 2.0)).is_cycle


def test_state_norm_must_match_and_be_finite():
    r = oscillating_floor(300, 10.0)
    with pytest.raises(ValueError, match="state_norm"):
        detect_cycle(r, state_norm=np.ones(299))
    norms = np.ones(300)
    norms[10] = np.nan
    with pytest.raises(ValueError, match="finite"):
        detect_cycle(r, state_norm=norms)


def test_min_oscillations_counts_turns():
    # two full oscillations in the tail = four direction changes; ask for more than there are
    r = np.concatenate([np.full(100, 1e-2), oscillating_floor(100, 50.0)])
    rep = detect_cycle(r, min_tail=50, tail_fraction=0.5)
    assert rep.tail_length == 100
    assert rep.is_cycle
    assert not detect_cycle(r, min_tail=50, tail_fraction=0.5, min_oscillations=3).is_cycle


# ------------------------------------------------------------------------------------------------
# Through settle
# ------------------------------------------------------------------------------------------------
def test_hopf_under_euler_is_a_limit_cycle_with_the_analytic_period_and_amplitude():
    hopf = HopfOscillator(mu=1.0, omega=2.0, centre=(3.0, 0.0))
    eps = 0.05
    orbit = hopf.euler_orbit(eps)
    assert abs(orbit["radial_multiplier"]) < 1  # Euler's invariant circle attracts
    lo, hi = hopf.euler_residual_range(eps)
    z0 = torch.tensor([[3.2, 0.1]], dtype=F64)
    res = settle(hopf, z0, "euler", eps=eps, tol=1e-8, max_steps=2000)
    assert res.status is Status.LIMIT_CYCLE
    rep = res.cycles[0]
    assert rep is not None and rep.is_cycle
    # the residual ||F|| / ||centre + u|| on the circle |u| = r varies once per revolution
    assert rep.period == pytest.approx(orbit["period"], rel=0.1)
    assert rep.amplitude == pytest.approx((hi - lo) / 2, rel=0.05)
    assert lo * 0.99 <= rep.floor <= hi * 1.01
    u = to_np(res.z[0]) - hopf.centre_np
    assert np.linalg.norm(u) == pytest.approx(orbit["radius"], rel=1e-6)


def test_saturating_rotor_euler_above_eps_crit_is_a_limit_cycle():
    rotor = SaturatingRotor(a=1.0, b=2.0, centre=(1.0, 2.0))
    eps = 1.03 * rotor.eps_crit
    steps = 2000
    z0 = torch.tensor([[1.1, 2.05]], dtype=F64)
    res = settle(rotor, z0, "euler", eps=eps, tol=1e-6, max_steps=steps)
    assert res.status is Status.LIMIT_CYCLE
    assert res.sample_status == (Status.LIMIT_CYCLE,)
    rep = res.cycles[0]
    assert rep.is_cycle and rep.period is not None
    # independent Euler orbit in numpy: its tail statistics and rotation period
    zs = euler_iterates_np(rotor.numpy_force, to_np(z0), eps, steps)[:, 0]
    rr = residual_np(rotor.numpy_force, zs)
    tail = rr[-rep.tail_length:]
    assert rep.floor == pytest.approx(np.median(tail), rel=0.02)
    assert rep.amplitude == pytest.approx(np.ptp(tail) / 2, rel=0.05)
    assert rep.floor > 100 * 1e-6
    u = zs - rotor.centre_np
    angle = np.unwrap(np.arctan2(u[:, 1], u[:, 0]))
    rotation_period = 2 * np.pi / np.mean(np.diff(angle[-rep.tail_length:]))
    assert rep.period == pytest.approx(rotation_period, rel=0.1)
    # the orbit is bounded (saturation) and stays away from the fixed point
    radius = np.linalg.norm(to_np(res.z[0]) - rotor.centre_np)
    assert 0.05 < radius < 2 * math.sqrt(2 * (1 + 4)) * eps


def test_saturating_rotor_euler_below_eps_crit_converges():
    rotor = SaturatingRotor(a=1.0, b=2.0, centre=(1.0, 2.0))
    z0 = torch.tensor([[1.1, 2.05]], dtype=F64)
    # rate 1, atol 0: the test is the force residual ||F|| / ||z|| <= tol
    res = settle(rotor, z0, "euler", eps=0.97 * rotor.eps_crit, tol=1e-6, max_steps=3000,
                 rate=1.0, atol=0.0)
    assert res.status is Status.CONVERGED
    # z* = centre, J = R: ||z - z*|| <= ||R^-1|| ||F(z)|| / min sech^2 ~ tol ||z|| / sqrt(5)
    err = np.linalg.norm(to_np(res.z[0]) - rotor.centre_np)
    assert err <= 1.01 * 1e-6 * np.linalg.norm(to_np(res.z[0])) / math.sqrt(5)


def test_slow_spiral_runs_out_of_steps_not_a_cycle():
    # a linear spiral contracting at ~0.9988 per step: still converging when the budget ends. The
    # offset u = z - centre turns fast enough (|u| / |centre| = 0.25 at the start) that ||z||, hence
    # the residual, oscillates as it turns; |u| < |centre| keeps ||z|| away from 0.
    sys = rotation(a=0.05, b=1.0, centre=(2.0, 0.0))
    z0 = torch.tensor([[2.5, 0.0]], dtype=F64)
    # atol 0: the scaled error is then proportional to ||F|| / ||z||, which oscillates as z turns
    res = settle(sys, z0, "euler", eps=0.05, tol=1e-8, max_steps=1000, atol=0.0)
    assert res.status is Status.MAX_STEPS
    rep = res.cycles[0]
    assert not rep.is_cycle and not rep.monotone and rep.decay < 0.9


def test_cycle_min_tail_option_reaches_the_detector():
    # a Hopf run of 150 steps is on its cycle, but shorter than 2 * 100: MAX_STEPS, not a cycle
    hopf = HopfOscillator(mu=1.0, omega=2.0, centre=(3.0, 0.0))
    z0 = torch.tensor([[3.0 + hopf.euler_orbit(0.2)["radius"], 0.0]], dtype=F64)
    short = settle(hopf, z0, "euler", eps=0.2, tol=1e-8, max_steps=150, cycle_min_tail=100)
    assert short.status is Status.MAX_STEPS
    long = settle(hopf, z0, "euler", eps=0.2, tol=1e-8, max_steps=150, cycle_min_tail=20)
    assert long.status is Status.LIMIT_CYCLE


def test_exploding_saddle_below_the_blowup_limit_is_not_a_cycle():
    sys = saddle()
    z0 = torch.tensor([[1.0 + 1e-3, 1.5]], dtype=F64)
    # |u| grows 1.1x per step: 1e-3 * 1.1^600 ~ 1e22 < the blow-up limit 1e30 * ||z0||
    res = settle(sys, z0, "euler", eps=0.1, tol=1e-8, max_steps=600, blowup=1e30)
    u = to_np(res.z[0]) - sys.centre
    assert abs(u[0]) > 1e6 * abs(u[1])  # the closed form: the state ran away along e1
    assert res.status is not Status.LIMIT_CYCLE
    # once the runaway is established (two windows of growth, error not decaying) it ends
    # DIVERGED before the budget: at step k, |u| = 1e-3 * 1.1^k
    assert res.status is Status.DIVERGED and res.steps < 600
    assert abs(u[0]) == pytest.approx(1e-3 * 1.1 ** res.steps, rel=1e-6)
