"""OUProcess: exact kernel against closed forms, Monte Carlo moments, bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import random_spd
from scipy.linalg import expm

from nonrev import OUProcess, optimal_q, random_q

TIMES = [1e-8, 1e-6, 1e-4, 1e-2, 0.3, 1.0, 10.0, 100.0]


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("d,cond", [(8, 10.0), (64, 1e4), (512, 1e4)])
def test_reversible_kernel_matches_eigen_closed_form(d, cond, rng):
    # Q = 0: M_t = V e^{-t lam} V^T, Sigma_t = V diag(-expm1(-2 t lam) / lam) V^T,
    # accurate at every t. Target: 1e-10 relative, including t = 1e-8.
    U, V, lam = random_spd(d, rng, 1.0 / np.sqrt(cond), np.sqrt(cond), geometric=True)
    proc = OUProcess(U)
    times = TIMES if d < 512 else [1e-8, 1e-2, 1.0, 100.0]
    M, S = proc.mean_and_cov(times)
    for i, t in enumerate(times):
        M_ref = (V * np.exp(-t * lam)) @ V.T
        S_ref = (V * (-np.expm1(-2 * t * lam) / lam)) @ V.T
        assert rel(M[i], M_ref) < 1e-10, t
        assert rel(S[i], S_ref) < 1e-10, t


@pytest.mark.parametrize("d", [4, 64, 512])
def test_isotropic_u_recovers_biroli_kernel(d, rng):
    # U = I: A = I + Q is normal, M_t = e^{-t} exp(-tQ) (a scaled rotation) and
    # Sigma_t = (1 - e^{-2t}) I exactly, for every antisymmetric Q.
    Q = random_q(d, 3.0, seed=0)
    proc = OUProcess(np.eye(d), Q)
    times = TIMES if d < 512 else [1e-8, 1.0, 100.0]
    M, S = proc.mean_and_cov(times)
    for i, t in enumerate(times):
        assert rel(S[i], -np.expm1(-2 * t) * np.eye(d)) < 1e-10, t
        R = M[i] * np.exp(t)
        assert np.abs(R @ R.T - np.eye(d)).max() < 1e-10, t
        if t <= 10:
            assert rel(M[i], expm(-t * (np.eye(d) + Q))) < 1e-10, t


def test_general_kernel_against_high_precision(rng):
    # A general non-normal A: compare with 40-digit mpmath (Sigma from U^{-1} - M U^{-1} M^T,
    # which is exact in that precision).
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    d = 5
    U, _, _ = random_spd(d, rng, 0.01, 100.0, geometric=True)
    Q = random_q(d, 2.0, seed=3)
    proc = OUProcess(U, Q)
    Uinv = mpmath.inverse(mpmath.matrix(U.tolist()))
    A = mpmath.matrix(proc.A.tolist())
    for t in TIMES:
        Mm = mpmath.expm(-mpmath.mpf(t) * A)
        Sm = Uinv - Mm * Uinv * Mm.T
        M_ref = np.array(Mm.tolist(), dtype=float)
        S_ref = np.array(Sm.tolist(), dtype=float)
        M, S = proc.mean_and_cov(t)
        assert rel(M, M_ref) < 1e-10, t
        assert rel(S, S_ref) < 1e-10, t


def test_scalar_and_stacked_shapes(rng):
    U, _, _ = random_spd(3, rng)
    proc = OUProcess(U, random_q(3, seed=1))
    assert proc.mean_matrix(0.5).shape == (3, 3)
    assert proc.cov(np.array([0.1, 0.2])).shape == (2, 3, 3)
    assert proc.mean_matrix([0.0]).shape == (1, 3, 3)
    np.testing.assert_array_equal(proc.cov(0.0), np.zeros((3, 3)))
    np.testing.assert_array_equal(proc.mean_matrix(0.0), np.eye(3))


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    qnorm=st.floats(0.0, 5.0),
    t=st.floats(1e-6, 20.0),
)
def test_properties_over_random_u_and_q(d, seed, qnorm, t):
    rng = np.random.default_rng(seed)
    U, _, lam = random_spd(d, rng, 0.1, 3.0)
    proc = OUProcess(U, random_q(d, qnorm, seed=seed))
    M, S = proc.mean_and_cov(t)
    # stationary Lyapunov equation, for every Q
    P = proc.stationary_cov
    assert np.abs(proc.A @ P + P @ proc.A.T - 2 * np.eye(d)).max() < 1e-10 * max(
        1, np.abs(proc.A).max()
    )
    # det M_t = exp(-t Tr U), independent of Q (a small eigenvalue of M_t carries an
    # absolute error ~ eps ||M_t||, hence the tolerance scaled by cond(M_t))
    cond = np.linalg.cond(M)
    if cond < 1e12:  # beyond that float64 cannot resolve the smallest eigenvalue
        assert np.isclose(np.linalg.slogdet(M)[1], -t * np.trace(U), rtol=0, atol=1e-12 * cond)
    # Sigma_t is the covariance of the stationary law's decay: U^{-1} - M U^{-1} M^T
    assert rel(S, P - M @ P @ M.T) < 1e-8 or t < 1e-3
    # Sigma_t symmetric positive definite
    assert np.allclose(S, S.T, atol=0)
    assert np.linalg.eigvalsh(S)[0] > 0
    # semigroup: Sigma_{2t} = M_t Sigma_t M_t^T + Sigma_t
    M2, S2 = proc.mean_and_cov(2 * t)
    assert rel(S2, M @ S @ M.T + S) < 1e-10
    assert rel(M2, M @ M) < 1e-10


@pytest.mark.parametrize("times", [np.linspace(0, 5, 51), np.geomspace(1e-4, 8, 40)])
def test_kernel_grid_matches_pointwise(times, rng):
    U, _, _ = random_spd(6, rng)
    proc = OUProcess(U, optimal_q(U))
    ker = proc.kernel(times, dtype=torch.float64)
    M, S = proc.mean_and_cov(times)
    assert len(ker) == len(times)
    assert ker.M.dtype == torch.float64
    np.testing.assert_allclose(ker.M.numpy(), M, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ker.Sigma.numpy(), S, rtol=0, atol=1e-12)
    LLt = ker.L @ ker.L.transpose(1, 2)
    np.testing.assert_allclose(LLt.numpy(), S, atol=1e-12)
    assert torch.all(torch.triu(ker.L, 1) == 0)
    # the steps compose the grid
    for i in range(len(times) - 1):
        np.testing.assert_allclose((ker.step_M[i] @ ker.M[i]).numpy(), M[i + 1], atol=1e-12)
    assert ker.index(times[3]) == 3
    with pytest.raises(ValueError, match="not a time"):
        ker.index(times[3] + 1e-3)


def test_kernel_float32_on_requested_device(rng):
    U, _, _ = random_spd(4, rng)
    ker = OUProcess(U).kernel(np.linspace(0.01, 1, 5), device="cpu")
    assert ker.M.dtype == torch.float32 and ker.M.device.type == "cpu"


def test_sample_moments_monte_carlo(rng):
    # x_t | x_0 for fixed x_0: mean M_t x_0, covariance Sigma_t. n = 200000 draws:
    # standard error of the mean ~ 2e-3 sqrt(Sigma), of the covariance ~ 3e-3 |Sigma|.
    d = 4
    U, _, _ = random_spd(d, rng, 0.3, 3.0)
    proc = OUProcess(U, optimal_q(U))
    x0 = torch.tensor(rng.standard_normal(d), dtype=torch.float64).expand(200_000, d)
    g = torch.Generator().manual_seed(0)
    t = 0.7
    xt = proc.sample(x0, t, generator=g).numpy()
    M, S = proc.mean_and_cov(t)
    np.testing.assert_allclose(xt.mean(0), M @ x0[0].numpy(), atol=0.015)
    np.testing.assert_allclose(np.cov(xt.T), S, atol=0.02)
    # same seed, same draw; per-row times
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(proc.sample(x0, t, generator=g2).to(torch.float64), torch.as_tensor(xt))
    tt = torch.tensor([0.1, 0.7, 0.1])
    out = proc.sample(x0[:3], tt, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, d)


def test_rates_and_kl(rng):
    d = 8
    U, _, lam = random_spd(d, rng)
    rev, opt = OUProcess(U), OUProcess(U, optimal_q(U))
    assert np.isclose(rev.relaxation_rate(), lam.min())
    assert np.isclose(opt.relaxation_rate(), np.trace(U) / d, rtol=1e-8)
    assert np.isclose(opt.contraction_rate(), np.trace(U))
    # KL closed form: Gaussian data N(m0, C0), against the direct formula at moderate t
    m0 = rng.standard_normal(d)
    C0 = np.diag(rng.uniform(0.5, 2.0, d))
    for proc in (rev, opt):
        for t in [0.2, 1.0, 3.0]:
            M, S = proc.mean_and_cov(t)
            m, C = M @ m0, M @ C0 @ M.T + S
            P_inv = proc.U
            ref = 0.5 * (
                np.trace(P_inv @ C)
                - d
                + m @ P_inv @ m
                - np.linalg.slogdet(C)[1]
                - np.linalg.slogdet(P_inv)[1]
            )
            assert np.isclose(proc.kl_to_stationary(t, m0, C0), ref, rtol=1e-8)
        # decays at twice the relaxation rate (averaged over a long window: with a
        # current the complex eigenvalues make it oscillate), and stays accurate when tiny
        kl = proc.kl_to_stationary([30.0, 60.0], m0, C0)
        assert 0 < kl[1] < kl[0]
        assert np.isclose(np.log(kl[0] / kl[1]) / 30, 2 * proc.relaxation_rate(), rtol=0.05)
    assert rev.kl_to_stationary(0.0) == np.inf


@pytest.mark.parametrize(
    "U,match",
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
        ("abc", "numeric"),
    ],
)
def test_bad_u(U, match):
    with pytest.raises(ValueError, match=f"U.*{match}|{match}.*U|^U"):
        OUProcess(U)


def test_bad_q_and_times():
    with pytest.raises(ValueError, match="Q must have shape"):
        OUProcess(np.eye(2), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="Q must be antisymmetric"):
        OUProcess(np.eye(2), np.eye(2))
    proc = OUProcess(np.eye(2))
    for bad in (-1.0, np.inf, np.nan, [[0.1]]):
        with pytest.raises(ValueError, match="^t must"):
            proc.cov(bad)
    with pytest.raises(ValueError, match="strictly increasing"):
        proc.kernel([0.2, 0.1])
    with pytest.raises(ValueError, match="x0 must have shape"):
        proc.sample(torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match="x0 contains NaN"):
        proc.sample(torch.full((3, 2), float("nan")), 0.1)
    with pytest.raises(ValueError, match="one time per row"):
        proc.sample(torch.zeros(3, 2), [0.1, 0.2])
