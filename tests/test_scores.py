"""Exact scores: Gaussian mixture and empirical (memorising) score.

Closed forms in float64: the score is the gradient of log_prob (autograd), the K = 1
score and log density, the empirical score as a mixture of point masses; then
stability, float32, the per-t cache and bad input.
"""

import math

import numpy as np
import pytest
import torch
from problems import random_spd
from scipy.stats import multivariate_normal

from nonrev import OUProcess, optimal_q
from nonrev.scores import EmpiricalScore, GaussianMixtureScore, default_chunk_size

D = 5
TIMES = [1e-4, 0.1, 1.0, 5.0]


def rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.fixture
def process(rng):
    # Anisotropic U (condition number 40) with the optimal non-reversible current.
    U, _, _ = random_spd(D, rng, 0.2, 8.0, geometric=True)
    return OUProcess(U, optimal_q(U))


@pytest.fixture
def mixture(rng):
    means = 3.0 * rng.standard_normal((3, D))
    spreads = [(0.1, 1.0), (0.5, 2.0), (0.01, 0.3)]
    covs = np.stack([random_spd(D, rng, lo, hi)[0] for lo, hi in spreads])
    weights = np.array([0.5, 0.3, 0.2])
    return means, covs, weights


def marginal_samples(process, means, covs, weights, t, n, seed):
    """Draws from P_t (so that every component gets some responsibility)."""
    g = np.random.default_rng(seed)
    k = g.choice(len(weights), size=n, p=weights)
    x0 = np.stack([g.multivariate_normal(means[i], covs[i]) for i in k])
    M, S = process.mean_and_cov(t)
    return torch.as_tensor(x0 @ M.T + g.multivariate_normal(np.zeros(D), S, size=n))


# ---------------------------------------------------------------------- mixture: closed forms
@pytest.mark.parametrize("t", TIMES)
def test_mixture_score_is_gradient_of_log_prob(process, mixture, t):
    score = GaussianMixtureScore(process, *mixture)
    x = marginal_samples(process, *mixture, t, 64, seed=1).requires_grad_(True)
    (grad,) = torch.autograd.grad(score.log_prob(x, t).sum(), x)
    s = score(x, t)
    assert s.dtype == torch.float64 and s.shape == x.shape
    assert rel(s, grad) < 1e-9
    r = score.posterior(x, t)
    assert torch.allclose(r.sum(1), torch.ones(64, dtype=torch.float64))
    if t <= 1.0:  # every component is responsible for some points (at t = 5 they merge)
        assert (r.max(0).values > 0.5).all()


@pytest.mark.parametrize("t", TIMES)
def test_mixture_log_prob_matches_scipy(process, mixture, t):
    means, covs, weights = mixture
    score = GaussianMixtureScore(process, means, covs, weights)
    x = marginal_samples(process, *mixture, t, 16, seed=2)
    M, S = process.mean_and_cov(t)
    dens = sum(
        w * multivariate_normal(M @ m, M @ C @ M.T + S).pdf(x.numpy())
        for m, C, w in zip(means, covs, weights)
    )
    assert np.allclose(score.log_prob(x, t).numpy(), np.log(dens), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [0.0] + TIMES)
def test_single_component_score_is_closed_form(process, mixture, t):
    means, covs, _ = mixture
    mu, C = means[0], covs[0]
    score = GaussianMixtureScore(process, mu[None], C[None])
    x = marginal_samples(process, mu[None], C[None], np.ones(1), t, 32, seed=3)
    M, S = process.mean_and_cov(t)
    Sk = M @ C @ M.T + S
    expected = -np.linalg.solve(Sk, (x.numpy() - M @ mu).T).T
    assert rel(score(x, t), torch.as_tensor(expected)) < 1e-10
    logp = multivariate_normal(M @ mu, Sk).logpdf(x.numpy())
    assert np.allclose(score.log_prob(x, t).numpy(), logp, rtol=1e-11)


def test_zero_weight_component_is_ignored(process, mixture):
    means, covs, _ = mixture
    full = GaussianMixtureScore(process, means, covs, [0.6, 0.4, 0.0])
    two = GaussianMixtureScore(process, means[:2], covs[:2], [0.6, 0.4])
    x = marginal_samples(process, means[:2], covs[:2], np.array([0.6, 0.4]), 0.3, 16, seed=4)
    assert torch.allclose(full(x, 0.3), two(x, 0.3), rtol=1e-12, atol=1e-12)
    assert torch.allclose(full.log_prob(x, 0.3), two.log_prob(x, 0.3), rtol=1e-12)
    assert (full.posterior(x, 0.3)[:, 2] == 0).all()


# ---------------------------------------------------------------------- empirical score
@pytest.fixture
def points(rng):
    return torch.as_tensor(rng.standard_normal((37, D)))


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 37, 100])
@pytest.mark.parametrize("t", [1e-3, 0.5, 5.0])
def test_empirical_equals_mixture_of_point_masses(process, points, chunk_size, t):
    N = points.shape[0]
    emp = EmpiricalScore(process, points, chunk_size=chunk_size)
    mix = GaussianMixtureScore(process, points.numpy(), np.zeros((N, D, D)))
    # Points near the images M_t a_mu (so that posteriors are peaked but not one-hot)
    # and a few far away.
    M, S = process.mean_and_cov(t)
    g = torch.Generator().manual_seed(5)
    x = points[:20] @ torch.as_tensor(M).T + 1.5 * math.sqrt(np.trace(S) / D) * torch.randn(
        20, D, generator=g, dtype=torch.float64
    )
    x = torch.cat([x, 3.0 * torch.randn(5, D, generator=g, dtype=torch.float64)])
    assert rel(emp(x, t), mix(x, t)) < 1e-10
    assert torch.allclose(emp.log_prob(x, t), mix.log_prob(x, t), rtol=1e-10, atol=1e-9)
    post = mix.posterior(x, t)
    assert torch.equal(emp.nearest(x, t), post.argmax(1))
    assert rel(emp.posterior_mean_x0(x, t), post @ points) < 1e-10


def test_empirical_nearest_is_mahalanobis_nearest_image(process, points):
    t = 0.2
    M, S = process.mean_and_cov(t)
    x = torch.randn(30, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    diff = x.numpy()[:, None, :] - points.numpy() @ M.T  # (B, N, d)
    maha = np.einsum("bni,ij,bnj->bn", diff, np.linalg.inv(S), diff)
    emp = EmpiricalScore(process, points, chunk_size=10)
    assert np.array_equal(emp.nearest(x, t).numpy(), maha.argmin(1))
    assert emp.nearest(x, t).dtype == torch.int64


def test_default_chunk_size():
    assert default_chunk_size(1024, 10**6) == 2**26 // (1024 * 4) == 16384
    assert default_chunk_size(1024, 1000) == 1000
    assert default_chunk_size(2**30, 10) == 1
    assert default_chunk_size(1024, 10**6, itemsize=8) == 8192


# ---------------------------------------------------------------------- stability, dtypes, cache
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_apart_components_and_tiny_t_are_finite(process, dtype):
    # Components 1e3 apart: the responsibilities underflow to exactly one-hot, so the
    # score must be the one of the nearest component alone.
    means = np.stack([np.zeros(D), 1e3 * np.ones(D), -1e3 * np.ones(D)])
    covs = np.stack([0.1 * np.eye(D), np.zeros((D, D)), np.eye(D)])
    mix = GaussianMixtureScore(process, means, covs)
    emp = EmpiricalScore(process, torch.as_tensor(means, dtype=dtype))
    for t in [1e-6, 1e-2, 1.0]:
        M, S = process.mean_and_cov(t)
        j = 1
        x = torch.as_tensor(M @ means[j] + 0.1 * math.sqrt(2 * t), dtype=dtype)[None]
        expected = -np.linalg.solve(M @ covs[j] @ M.T + S, x.double().numpy()[0] - M @ means[j])
        # Rounding x and M mu to ``dtype`` moves x - M mu by ~ eps |x|: the relative
        # accuracy any implementation can reach is ~ eps |x| / |x - M mu|.
        resid = np.linalg.norm(x.double().numpy()[0] - M @ means[j])
        tol = max(1e-9, 20 * torch.finfo(dtype).eps * float(x.norm()) / resid)
        for sc in (mix, emp):
            s = sc(x, t)
            assert s.dtype == dtype and torch.isfinite(s).all()
            assert torch.isfinite(sc.log_prob(x, t)).all()
        assert rel(mix(x, t).double()[0], torch.as_tensor(expected)) < tol
        point_mass = -np.linalg.solve(S, x.double().numpy()[0] - M @ means[j])
        assert rel(emp(x, t).double()[0], torch.as_tensor(point_mass)) < tol
        assert torch.equal(mix.posterior(x, t)[0], torch.tensor([0.0, 1.0, 0.0], dtype=dtype))
        assert int(emp.nearest(x, t)) == 1


def test_float32_agrees_with_float64(process, mixture, points):
    t = 0.5
    mix = GaussianMixtureScore(process, *mixture)
    emp = EmpiricalScore(process, points, chunk_size=8)
    x = marginal_samples(process, *mixture, t, 50, seed=7)
    for sc in (mix, emp):
        s64, s32 = sc(x, t), sc(x.float(), t)
        assert s32.dtype == torch.float32 and s64.dtype == torch.float64
        assert rel(s32.double(), s64) < 1e-5
        assert torch.allclose(
            sc.log_prob(x.float(), t).double(), sc.log_prob(x, t), rtol=1e-5, atol=1e-4
        )


def test_points_in_float32_and_x_in_float64(process, points):
    emp32 = EmpiricalScore(process, points.float())
    emp64 = EmpiricalScore(process, points)
    x = torch.randn(8, D, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    out = emp32(x, 0.3)
    assert out.dtype == torch.float64
    assert rel(out, emp64(x, 0.3)) < 1e-6  # the points themselves were rounded to float32


def test_setup_is_cached_per_time_with_a_small_lru(process, mixture, points):
    x = torch.randn(4, D, dtype=torch.float64)
    for sc in (GaussianMixtureScore(process, *mixture), EmpiricalScore(process, points)):
        sc(x, 0.5)
        sc.log_prob(x, 0.5)
        sc(x.float(), 0.5)
        info = sc.cache_info()
        assert (info.hits, info.misses) == (1, 2)  # (0.5, float32) is a new entry
        for t in np.linspace(0.1, 2.0, 12):
            sc(x, float(t))
        assert sc.cache_info().currsize == 8


def test_mixture_at_t_zero_needs_definite_covariances(process, mixture):
    means, covs, weights = mixture
    covs = covs.copy()
    covs[1] = 0.0
    score = GaussianMixtureScore(process, means, covs, weights)
    x = torch.zeros(2, D, dtype=torch.float64)
    assert torch.isfinite(score(x, 1e-3)).all()
    with pytest.raises(ValueError, match=r"covs\[1\].*singular"):
        score(x, 0.0)


# ---------------------------------------------------------------------- bad input
def _good(mixture):
    means, covs, weights = mixture
    return dict(means=means, covs=covs, weights=weights)


def _bad_mixture_args(mixture):
    means, covs, weights = mixture
    asym = covs.copy()
    asym[1, 0, 1] += 0.5
    indefinite = covs.copy()
    indefinite[2] -= 2.0 * np.eye(D)
    nan_means = means.copy()
    nan_means[0, 0] = np.nan
    inf_covs = covs.copy()
    inf_covs[0, 0, 0] = np.inf
    return [
        ("means", dict(means=means[:, :4])),
        ("means", dict(means=means[0])),
        ("means", dict(means=nan_means)),
        ("covs", dict(covs=covs[:2])),
        ("covs", dict(covs=covs[:, :4, :4])),
        ("covs", dict(covs=inf_covs)),
        (r"covs\[1\].*symmetric", dict(covs=asym)),
        (r"covs\[2\].*semi-definite", dict(covs=indefinite)),
        ("weights", dict(weights=[0.7, 0.4, -0.1])),
        ("weights", dict(weights=[0.5, 0.5])),
        ("weights", dict(weights=[0.5, 0.3, 0.1])),
        ("weights", dict(weights=[0.5, 0.3, np.nan])),
    ]


def test_mixture_rejects_bad_construction(process, mixture):
    for match, change in _bad_mixture_args(mixture):
        kwargs = {**_good(mixture), **change}
        with pytest.raises(ValueError, match=match):
            GaussianMixtureScore(process, **kwargs)
    # Weights off by less than the tolerance are accepted (and renormalised).
    w = np.array([0.5, 0.3, 0.2 + 5e-7])
    score = GaussianMixtureScore(process, mixture[0], mixture[1], w)
    assert score.weights.sum() == pytest.approx(1.0, abs=1e-15)


def test_empirical_rejects_bad_construction(process, points):
    bad_points = points.clone()
    bad_points[3, 1] = float("nan")
    for match, kwargs in [
        ("points", dict(points=points[:, :4])),
        ("points", dict(points=points[0])),
        ("points", dict(points=points[:0])),
        ("points", dict(points=bad_points)),
        ("chunk_size", dict(points=points, chunk_size=0)),
        ("chunk_size", dict(points=points, chunk_size=2.5)),
        ("cache_size", dict(points=points, cache_size=0)),
    ]:
        with pytest.raises(ValueError, match=match):
            EmpiricalScore(process, **kwargs)


def _bad_calls():
    x = torch.zeros(3, D, dtype=torch.float64)
    x_nan = x.clone()
    x_nan[1, 2] = float("nan")
    x_inf = x.clone()
    x_inf[0, 0] = float("inf")
    return [
        ("x", x[:, :4], 0.5),
        ("x", x[0], 0.5),
        ("x", x_nan, 0.5),
        ("x", x_inf, 0.5),
        ("x", x.half(), 0.5),
        ("t", x, -0.1),
        ("t", x, float("nan")),
        ("t", x, [0.1, 0.2]),
    ]


@pytest.mark.parametrize("method", ["__call__", "log_prob", "posterior"])
def test_mixture_rejects_bad_calls(process, mixture, method):
    score = GaussianMixtureScore(process, *mixture)
    for match, x, t in _bad_calls():
        with pytest.raises(ValueError, match=match):
            getattr(score, method)(x, t)


@pytest.mark.parametrize("method", ["__call__", "log_prob", "nearest", "posterior_mean_x0"])
def test_empirical_rejects_bad_calls(process, points, method):
    score = EmpiricalScore(process, points)
    x = torch.zeros(3, D, dtype=torch.float64)
    for match, xb, t in _bad_calls() + [("t must be positive", x, 0.0)]:
        with pytest.raises(ValueError, match=match):
            getattr(score, method)(xb, t)
    with pytest.raises(ValueError, match="x is on meta"):
        getattr(score, method)(torch.empty(3, D, device="meta"), 0.5)
