"""Optimal, scaled and random currents."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import random_spd

from nonrev import OUProcess, current_summary, optimal_q, random_q, scaled_q
from nonrev.process.currents import constant_diagonal_basis


@pytest.mark.parametrize("d", [2, 8, 64, 512])
def test_optimal_q_spectrum(d, rng):
    # Every Re spec((I+Q)U) equals Tr(U)/d to 1e-8 relative.
    U, _, _ = random_spd(d, rng)
    Q = optimal_q(U)
    np.testing.assert_allclose(Q, -Q.T, atol=0)
    ev = np.linalg.eigvals((np.eye(d) + Q) @ U)
    m = np.trace(U) / d
    assert np.abs(ev.real - m).max() < 1e-8 * m


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_optimal_q_property(d, seed):
    rng = np.random.default_rng(seed)
    U, _, _ = random_spd(d, rng, 0.05, 5.0, geometric=True)
    Psi = constant_diagonal_basis(U)
    assert np.abs(Psi.T @ Psi - np.eye(d)).max() < 1e-12
    assert np.abs(np.diag(Psi.T @ U @ Psi) - np.trace(U) / d).max() < 1e-12 * np.trace(U)
    proc = OUProcess(U, optimal_q(U))
    assert np.isclose(proc.relaxation_rate(), np.trace(U) / d, rtol=1e-8)


def test_any_distinct_lambdas_reach_the_bound_but_stiffness_differs(rng):
    d = 32
    U, _, _ = random_spd(d, rng)
    Q_lin = optimal_q(U, np.arange(1, d + 1))
    Q_def = optimal_q(U)
    for Q in (Q_lin, Q_def):
        assert np.isclose(OUProcess(U, Q).relaxation_rate(), np.trace(U) / d, rtol=1e-8)
    # the default is the less stiff choice (see optimal_q's docstring)
    assert np.linalg.norm(Q_def, 2) < np.linalg.norm(Q_lin, 2)


def test_scaled_q_interpolates_rate(rng):
    d = 8
    U, _, lam = random_spd(d, rng)
    Q = optimal_q(U)
    rates = [OUProcess(U, scaled_q(Q, g)).relaxation_rate() for g in (0.0, 1.0)]
    assert np.isclose(rates[0], lam.min()) and np.isclose(rates[1], np.trace(U) / d)
    with pytest.raises(ValueError, match="gamma"):
        scaled_q(Q, float("nan"))


def test_random_q_seeded_with_norm():
    Q1, Q2 = random_q(5, 2.5, seed=7), random_q(5, 2.5, seed=7)
    np.testing.assert_array_equal(Q1, Q2)
    assert np.isclose(np.linalg.norm(Q1, 2), 2.5)
    np.testing.assert_array_equal(Q1, -Q1.T)
    assert not np.array_equal(Q1, random_q(5, 2.5, seed=8))
    with pytest.raises(ValueError, match="dim"):
        random_q(0)
    with pytest.raises(ValueError, match="norm"):
        random_q(3, -1.0)


def test_current_summary(rng):
    d = 16
    U, _, lam = random_spd(d, rng)
    s0 = current_summary(U, np.zeros((d, d)))
    assert s0["q_norm"] == 0 and np.isclose(s0["transient"], 1.0)  # reversible: no growth
    s1 = current_summary(U, optimal_q(U))
    assert np.isclose(s1["rate"], s1["bound"], rtol=1e-8)
    assert np.isclose(s1["rate_reversible"], lam.min())
    assert s1["transient"] >= 1.0 and s1["q_norm"] > 0


def test_optimal_q_bad_input():
    with pytest.raises(ValueError, match="U must be positive definite"):
        optimal_q(np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="U must be symmetric"):
        optimal_q(np.array([[1.0, 0.3], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="lambdas must be distinct"):
        optimal_q(np.eye(3), [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="lambdas must have shape"):
        optimal_q(np.eye(3), [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        optimal_q(np.eye(2), [1.0, -2.0])
