"""Few-step samplers: gddim and dpmpp_2m, the exact Gaussian sampler error
against Monte Carlo for every method, time grids as input, the data prediction of the
scores, and large steps in float32."""

import numpy as np
import pytest
import torch
from problems import check_exact_error_by_monte_carlo, gaussian_case, random_spd

from nonrev import OUProcess, optimal_q
from nonrev.samplers import METHODS, gaussian_error, optimise_grid, sample, time_grid
from nonrev.scores import EmpiricalScore, GaussianMixtureScore
from nonrev.scores.base import supports


def test_gddim_is_ddim_for_the_standard_process(rng):
    proc = OUProcess(np.eye(3))
    score = GaussianMixtureScore(proc, rng.standard_normal((2, 3)), 0.3 * np.stack([np.eye(3)] * 2))
    x_T = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, _ = sample(score, proc, x_T=x_T, T=5.0, steps=8, spacing="log", method="ddim")
    b, _ = sample(score, proc, x_T=x_T, T=5.0, steps=8, spacing="log", method="gddim")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_error_matches_monte_carlo(rng, method):
    """Exact output law vs 20000 samples started exactly at P_T: every mean within 5
    standard errors, every covariance entry within 5 standard errors
    (sqrt((C_ii C_jj + C_ij^2) / n))."""
    proc, m, C = gaussian_case(rng)
    explicit = method in ("euler_maruyama", "heun")
    exact, se_cov = check_exact_error_by_monte_carlo(
        proc,
        m,
        C,
        method,
        T=6.0,
        steps=400 if explicit else 6,
        t_min=1e-3,
        spacing="uniform" if explicit else "log",
    )
    # the few-step deterministic methods are visibly off the target here, so the
    # comparison above is not trivially the target law
    if method in ("ddim", "gddim"):
        assert exact["cov_error"] > 10 * np.abs(se_cov).max()


def test_gaussian_error_closed_forms(rng):
    """Point-mass data: gddim and ancestral are exact at any step count (W2 ~ 0)."""
    proc, m, _ = gaussian_case(rng)
    for method in ("gddim", "ancestral", "ddim", "dpmpp_2m"):
        res = gaussian_error(proc, m, np.zeros((4, 4)), method, steps=3)
        assert res["w2"] < 1e-6, method


def test_dpmpp_2m_is_second_order_and_beats_ddim(rng):
    """Halving the log-grid steps of dpmpp_2m cuts its W2 by about 4 (second order);
    and dpmpp_2m at 10 steps is at least as accurate as ddim at 50 steps without
    the current (the issue's target; with the current see the benchmark)."""
    proc, m, C = gaussian_case(rng, current=False)
    w = [gaussian_error(proc, m, C, "dpmpp_2m", steps=s, t_min=1e-2)["w2"] for s in (40, 80)]
    assert 3.0 < w[0] / w[1] < 5.0
    d10 = gaussian_error(proc, m, C, "dpmpp_2m", steps=10)["w2"]
    ddim50 = gaussian_error(proc, m, C, "ddim", steps=50)["w2"]
    assert d10 <= ddim50


def test_times_grid_and_optimised_grid(rng):
    proc, m, C = gaussian_case(rng, current=False)
    score = GaussianMixtureScore(proc, m[None], C[None])
    x_T = torch.randn(20, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = time_grid(6.0, 7, 1e-3, "log")
    a, info = sample(score, proc, x_T=x_T, times=g, method="gddim")
    b, _ = sample(score, proc, x_T=x_T, T=6.0, steps=7, spacing="log", method="gddim")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert np.allclose(info["times"], g[::-1])
    c, _ = sample(score, proc, x_T=x_T, times=g[::-1], method="gddim")  # decreasing: same
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        sample(score, proc, x_T=x_T, times=[0.1, 0.5, 0.3], method="gddim")
    with pytest.raises(ValueError, match="times contains NaN"):
        sample(score, proc, x_T=x_T, times=[0.1, np.nan], method="gddim")
    opt = optimise_grid(proc, m, C, "gddim", steps=4, maxiter=60, T=6.0 / proc.relaxation_rate())
    assert opt.shape == (5,) and np.all(np.diff(opt) > 0)
    assert opt[0] == pytest.approx(1e-3) and opt[-1] == pytest.approx(6.0 / proc.relaxation_rate())
    base = gaussian_error(proc, m, C, "gddim", steps=4)["w2"]
    assert gaussian_error(proc, m, C, "gddim", times=opt)["w2"] < base


def test_scores_denoise_is_tweedie(rng):
    d = 3
    U, _, _ = random_spd(d, rng)
    proc = OUProcess(U, optimal_q(U))
    means = rng.standard_normal((2, d))
    covs = np.stack([0.2 * np.eye(d), np.diag([0.5, 0.1, 0.3])])
    mix = GaussianMixtureScore(proc, means, covs, [0.3, 0.7])
    pts = torch.as_tensor(rng.standard_normal((30, d)), dtype=torch.float64)
    emp = EmpiricalScore(proc, pts)
    x = torch.as_tensor(rng.standard_normal((7, d)), dtype=torch.float64)
    for score in (mix, emp):
        assert supports(score, "denoise") and supports(score, "score_unchecked")
        for t in (0.05, 0.7, 2.0):
            M, S = proc.mean_and_cov(t)
            tweedie = (x + score(x, t) @ torch.as_tensor(S).T) @ torch.as_tensor(np.linalg.inv(M)).T
            torch.testing.assert_close(score.denoise(x, t), tweedie, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(score.score_unchecked(x, t), score(x, t), rtol=0, atol=0)
    torch.testing.assert_close(emp.posterior_mean_x0(x, 0.5), emp.denoise(x, 0.5))


@pytest.mark.parametrize("method", ["gddim", "dpmpp_2m", "ddim"])
def test_large_steps_in_float32(method):
    """Issue 13's fragile case: d = 5, U eigenvalues 0.2..2, Q = 0, T = 30, 10 log
    steps, exact score (point-mass-free Gaussian data). ddim formed x0 through
    M_t^{-1} (up to e^{60}) and returned a covariance error of 28; with the score's
    data prediction every exact-kernel step is bounded. float32 and float64 outputs
    agree to 1e-4 relative and the covariance error is that of the exact law."""
    rng = np.random.default_rng(3)
    d = 5
    U, _, _ = random_spd(d, rng, lo=0.2, hi=2.0)
    C, _, _ = random_spd(d, rng, lo=0.1, hi=2.0)
    proc = OUProcess(U)
    score = GaussianMixtureScore(proc, np.zeros((1, d)), C[None])
    z = torch.randn(4000, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = z @ torch.as_tensor(np.linalg.cholesky(proc.stationary_cov)).T
    kw = dict(T=30.0, steps=10, spacing="log")
    x64, _ = sample(score, proc, x_T=x_T, method=method, **kw)
    x32, _ = sample(score, proc, x_T=x_T.float(), method=method, **kw)
    assert torch.isfinite(x32).all()
    assert (x32.double() - x64).abs().max() < 1e-4 * x64.abs().max()
    exact = gaussian_error(proc, np.zeros(d), C, method, start="stationary", **kw)
    assert np.abs(np.cov(x64.numpy().T) - exact["cov"]).max() < 0.15


@pytest.mark.parametrize("method", ["dpmpp_2m", "gddim", "ancestral"])
def test_learned_score_path(method):
    """A NeuralScore (preconditioned on the data covariance) whose network outputs
    F = 0 is the exact score of N(0, C): sampling it through its data prediction
    (denoise) and through its score (a plain callable) agree, and both match the exact
    output law of gaussian_error within Monte Carlo error (5 standard errors)."""
    from nonrev.models.networks import MLPNet
    from nonrev.scores.neural import NeuralScore, Parameterisation

    rng = np.random.default_rng(2)
    d = 3
    U, _, _ = random_spd(d, rng)
    C, _, _ = random_spd(d, rng, lo=0.1, hi=2.0)
    proc = OUProcess(U, optimal_q(U))
    grid = np.geomspace(1e-3, 6.0, 200)
    net = MLPNet(d, 1e-3, 6.0, hidden=16, depth=1, emb_dim=8).double()
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.zeros_(net.out.bias)
    param = Parameterisation(proc, C)
    score = NeuralScore(net, param, param.tables(grid, dtype=torch.float64))
    x_T = torch.randn(20_000, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = x_T @ torch.as_tensor(np.linalg.cholesky(proc.stationary_cov)).T
    kw = dict(T=6.0, steps=8, spacing="log", method=method)
    a, _ = sample(score, proc, x_T=x_T, generator=torch.Generator().manual_seed(1), **kw)
    b, _ = sample(
        lambda x, t: score(x, t), proc, x_T=x_T, generator=torch.Generator().manual_seed(1), **kw
    )
    assert (a - b).abs().max() < 1e-8
    exact = gaussian_error(proc, np.zeros(d), C, method, start="stationary", T=6.0, steps=8)
    cov = exact["cov"]
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / a.shape[0])
    assert np.all(np.abs(np.cov(a.numpy().T) - cov) < 5 * se)
    se_mean = np.sqrt(np.diag(cov) / a.shape[0])
    assert np.all(np.abs(a.numpy().mean(0) - exact["mean"]) < 5 * se_mean)
