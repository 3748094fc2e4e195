"""The gDDIM factor R_t (Kernel.R, OUProcess.gddim_factor): R R^T = Sigma_t, the
small-t limit sqrt(2t) I, and the transport of a point mass along the exact
probability-flow ODE (a fine DOP853 solve is the reference)."""

import numpy as np
import pytest
import scipy.integrate
import torch
from problems import random_spd

from nonrev import OUProcess, optimal_q


def _process(rng, d=4, q_scale=1.0):
    U, _, _ = random_spd(d, rng)
    return OUProcess(U, q_scale * optimal_q(U) if q_scale else None)


@pytest.mark.parametrize("q_scale", [0.0, 1.0, 6.0])
def test_factor_squares_to_sigma_at_every_time(rng, q_scale):
    proc = _process(rng, q_scale=q_scale)
    times = np.array([1e-10, 1e-6, 1e-3, 0.1, 0.7, 2.0, 9.0, 40.0])
    R = proc.gddim_factor(times)
    S = proc.cov(times)
    for i in range(len(times)):
        # relative to Sigma_t itself: full accuracy also at t = 1e-10
        assert np.linalg.norm(R[i] @ R[i].T - S[i]) <= 1e-13 * np.linalg.norm(S[i])
    # R_t = sqrt(2t) (I + O(t)): relative deviation ~ t ||A||
    assert np.linalg.norm(R[0] / np.sqrt(2e-10) - np.eye(proc.dim)) < 1e-8


@pytest.mark.parametrize("q_scale", [0.0, 1.0, 6.0])
def test_point_mass_rides_the_probability_flow(rng, q_scale):
    """x_t = M_t a + R_t eps with eps fixed solves dx/dt = -A x + Sigma_t^{-1}(x - M_t a):
    integrate that ODE backwards from t = 8 to t = 1e-2 with DOP853 (rtol 1e-11) and
    compare with M_s a + R_s eps. Tolerance 1e-8 (the Magnus integration is ~1e-9)."""
    proc = _process(rng, q_scale=q_scale)
    a = 2 * rng.standard_normal(proc.dim)
    eps = rng.standard_normal(proc.dim)
    t1, t0 = 8.0, 1e-2

    def flow(t, x):
        M, S = proc.mean_and_cov(t)
        return -proc.A @ x + np.linalg.solve(S, x - M @ a)

    R = proc.gddim_factor([t0, 1.0, t1])
    x1 = proc.mean_matrix(t1) @ a + R[2] @ eps
    sol = scipy.integrate.solve_ivp(
        flow, (t1, t0), x1, method="DOP853", rtol=1e-11, atol=1e-12, t_eval=[1.0, t0]
    )
    for j, i in enumerate((1, 0)):
        want = proc.mean_matrix(sol.t[j]) @ a + R[i] @ eps
        assert np.abs(sol.y[:, j] - want).max() < 1e-8


def test_kernel_carries_the_factor_and_reversible_isotropic_case(rng):
    proc = _process(rng, q_scale=1.0)
    grid = np.geomspace(1e-3, 6.0, 12)
    ker = proc.kernel(grid, dtype=torch.float64)
    np.testing.assert_allclose(ker.R.numpy(), proc.gddim_factor(grid), rtol=0, atol=1e-14)
    assert ker.R is ker.R  # cached
    # U = I, Q = 0: R_t = sqrt(1 - e^{-2t}) I (the VP noise scale)
    iso = OUProcess(np.eye(3))
    R = iso.gddim_factor(grid)
    want = np.sqrt(-np.expm1(-2 * grid))[:, None, None] * np.eye(3)
    np.testing.assert_allclose(R, want, rtol=1e-12, atol=0)
    # U = I with a current: R_t = sigma_t exp(-t Q), a rotation at rate ||Q||
    Q = np.array([[0, 2.0, 0], [-2.0, 0, 0], [0, 0, 0]])
    rot = OUProcess(np.eye(3), Q)
    R = rot.gddim_factor(grid)
    for i, t in enumerate(grid):
        want = np.sqrt(-np.expm1(-2 * t)) * scipy.linalg.expm(-t * Q)
        np.testing.assert_allclose(R[i], want, rtol=0, atol=1e-10)


def test_strong_current_steps_follow_the_change_of_omega_not_its_size():
    """U = I with ||Q|| = 300: R_t = sigma_t exp(-tQ) turns 300 rad per unit time, but
    Omega_t = -Q is constant, so the adaptive Magnus steps need not resolve the turn:
    the closed form holds to 1e-9 up to t = 8 with few checkpoints (a step bound of
    0.1 / ||Omega|| would need 24000)."""
    Q = np.zeros((4, 4))
    Q[0, 1], Q[2, 3] = 300.0, 120.0
    Q = Q - Q.T
    proc = OUProcess(np.eye(4), Q)
    grid = np.geomspace(1e-4, 8.0, 15)
    R = proc.gddim_factor(grid)
    for i, t in enumerate(grid):
        want = np.sqrt(-np.expm1(-2 * t)) * scipy.linalg.expm(-t * Q)
        np.testing.assert_allclose(R[i], want, rtol=0, atol=1e-9)
    assert len(proc._rot.t) < 200


import scipy.linalg  # noqa: E402
