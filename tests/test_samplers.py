"""Reverse-time samplers: exactness where it must hold, the mixture reproduced by every
method, determinism, and bad input."""

import warnings

import numpy as np
import pytest
import torch
from problems import random_spd

from nonrev import OUProcess, optimal_q
from nonrev.samplers.driver import METHODS, sample, time_grid


class GaussianScore:
    """Exact score of Gaussian data N(m, C) under the process (reference problem)."""

    def __init__(self, process, m, C):
        self.p, self.m, self.C = process, m, C

    def __call__(self, x, t):
        M, S = self.p.mean_and_cov(t)
        G = M @ self.C @ M.T + S
        P = torch.as_tensor(np.linalg.inv(G), dtype=x.dtype)
        mu = torch.as_tensor(M @ self.m, dtype=x.dtype)
        return -(x - mu) @ P.T

    def stiffness(self, t):
        M, S = self.p.mean_and_cov(t)
        return np.linalg.inv(M @ self.C @ M.T + S)


@pytest.fixture
def problem(rng):
    d = 6
    U, _, _ = random_spd(d, rng)
    proc = OUProcess(U, optimal_q(U))
    m = 2 * rng.standard_normal(d)
    return proc, m


@pytest.mark.parametrize("method", ["ancestral", "ddim"])
def test_exact_methods_are_exact_for_a_point_mass(problem, method):
    # For data = delta(m) the Tweedie estimate is exact, so the exact-kernel steps
    # land on N(M_s m, Sigma_s) at any step count: check with 5 steps.
    proc, m = problem
    score = GaussianScore(proc, m, np.zeros((proc.dim, proc.dim)))
    x, info = sample(
        score,
        proc,
        n=40_000,
        T=8.0,
        steps=5,
        method=method,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    M, S = proc.mean_and_cov(1e-3)
    assert info["nfe"] == 5
    np.testing.assert_allclose(x.mean(0).numpy(), M @ m, atol=0.01)
    # sd of a covariance entry ~ Sigma / sqrt(n/2) = 2e-3 * 7e-3
    np.testing.assert_allclose(np.cov(x.numpy().T), S, atol=2e-4)


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_data_converges(problem, method, rng):
    proc, m = problem
    B = rng.standard_normal((proc.dim, proc.dim))
    C = B @ B.T / proc.dim + 0.2 * np.eye(proc.dim)
    score = GaussianScore(proc, m, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # Euler-Maruyama is explicit in A: its O(h ||A||) error needs more steps
        x, _ = sample(
            score,
            proc,
            n=20_000,
            T=10.0,
            steps=1600 if method == "euler_maruyama" else 400,
            method=method,
            spacing="uniform" if method in ("euler_maruyama", "heun") else "log",
            generator=torch.Generator().manual_seed(1),
            dtype=torch.float64,
        )
    M, S = proc.mean_and_cov(1e-3)
    # first-order methods, |m| ~ 5 and covariance scale ~ 3: the bias is O(h),
    # Monte Carlo error ~ 0.015
    np.testing.assert_allclose(x.mean(0).numpy(), M @ m, atol=0.1)
    np.testing.assert_allclose(np.cov(x.numpy().T), M @ C @ M.T + S, atol=0.12)


def test_determinism_and_same_seed(problem):
    proc, m = problem
    score = GaussianScore(proc, m, 0.5 * np.eye(proc.dim))
    for method in METHODS:
        # explicit methods: enough steps for the stability guard (60 are refused here)
        steps = 400 if method in ("euler_maruyama", "heun") else 60
        a, _ = sample(
            score,
            proc,
            n=50,
            steps=steps,
            method=method,
            T=6.0,
            generator=torch.Generator().manual_seed(3),
        )
        b, _ = sample(
            score,
            proc,
            n=50,
            steps=steps,
            method=method,
            T=6.0,
            generator=torch.Generator().manual_seed(3),
        )
        assert torch.equal(a, b), method
    # probability-flow samplers are deterministic given x_T
    x_T = torch.randn(30, proc.dim, generator=torch.Generator().manual_seed(9))
    for method in ("ddim", "heun", "gddim", "dpmpp_2m"):
        steps = 400 if method == "heun" else 60
        a, _ = sample(
            score,
            proc,
            x_T=x_T,
            steps=steps,
            method=method,
            T=6.0,
            generator=torch.Generator().manual_seed(1),
        )
        b, _ = sample(
            score,
            proc,
            x_T=x_T,
            steps=steps,
            method=method,
            T=6.0,
            generator=torch.Generator().manual_seed(2),
        )
        assert torch.equal(a, b), method


def test_save_times_callback_and_denoise(problem):
    proc, m = problem
    score = GaussianScore(proc, m, np.zeros((proc.dim, proc.dim)))
    seen = []
    x, info = sample(
        score,
        proc,
        n=8,
        T=4.0,
        steps=10,
        method="ancestral",
        save_times=[2.05, 0.5],
        callback=lambda i, t, x: seen.append((i, t)),
        generator=torch.Generator().manual_seed(0),
    )
    assert info["trajectory"].shape == (2, 8, proc.dim)
    assert 2.05 in info["times"] and 0.5 in info["times"]
    assert seen[0] == (0, 4.0) and seen[-1][1] == pytest.approx(1e-3)
    assert len(seen) == len(info["times"])
    # denoise: for a point mass, the Tweedie mean is the point itself
    x, info = sample(
        score,
        proc,
        n=8,
        T=4.0,
        steps=10,
        method="ddim",
        denoise=True,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    np.testing.assert_allclose(x.numpy(), np.tile(m, (8, 1)), atol=1e-6)
    assert info["nfe"] == 11


def test_time_grids():
    g = time_grid(5.0, 10, t_min=0.01, spacing="log")
    assert g[0] == pytest.approx(0.01) and g[-1] == pytest.approx(5.0) and len(g) == 11
    assert np.allclose(np.diff(np.log(g)), np.log(500) / 10)
    assert np.allclose(np.diff(time_grid(5.0, 10, t_min=0.0)), 0.5)


def test_explicit_methods_refuse_unstable_steps(rng):
    """The d = 4 Gaussian case of issue 13 (U eigenvalues 0.25..1.75, data covariance
    eigenvalues 4..0.05, optimal Q, T = 6): Heun at 20 uniform steps returned a
    covariance error of 39 with a warning; it and Euler-Maruyama at 10 steps must be
    refused, naming steps and T, while enough steps pass."""
    d = 4
    U, _, _ = random_spd(d, rng)
    C, _, _ = random_spd(d, rng, lo=0.05, hi=4.0, geometric=True)
    proc = OUProcess(U, optimal_q(U))
    score = GaussianScore(proc, np.zeros(d), C)
    with pytest.raises(ValueError, match=r"heun is unstable with steps = 20 .*T\] = \[0.001, 6"):
        sample(score, proc, n=4, T=6.0, steps=20, method="heun")
    with pytest.raises(ValueError, match="euler_maruyama is unstable with steps = 10"):
        sample(score, proc, n=4, T=6.0, steps=10, method="euler_maruyama")
    sample(score, proc, n=4, T=6.0, steps=400, method="heun")  # fine
    sample(score, proc, n=4, T=6.0, steps=10, method="ancestral")  # exact kernel: fine


def test_bad_input(problem):
    proc, m = problem
    score = GaussianScore(proc, m, np.eye(proc.dim))
    with pytest.raises(ValueError, match="method must be one of euler_maruyama, heun, ancestral"):
        sample(score, proc, n=2, method="rk4")
    with pytest.raises(ValueError, match="steps must be"):
        sample(score, proc, n=2, steps=0)
    with pytest.raises(ValueError, match="T must be"):
        sample(score, proc, n=2, T=0.0)
    with pytest.raises(ValueError, match="T must be"):
        sample(score, proc, n=2, T=float("nan"))
    with pytest.raises(ValueError, match="t_min must"):
        sample(score, proc, n=2, T=1.0, t_min=2.0)
    with pytest.raises(ValueError, match="x_T must have shape"):
        sample(score, proc, x_T=torch.zeros(3, proc.dim + 1))
    with pytest.raises(ValueError, match="x_T contains NaN"):
        sample(score, proc, x_T=torch.full((3, proc.dim), float("inf")))
    with pytest.raises(ValueError, match="n must be"):
        sample(score, proc)
    with pytest.raises(ValueError, match="spacing"):
        sample(score, proc, n=2, spacing="cosine")
    with pytest.raises(ValueError, match="save_times"):
        sample(score, proc, n=2, T=1.0, save_times=[3.0])


# The reference mixture is the samplers benchmark's (one definition for both).
from benchmarks.samplers import draw_mixture as _draw_mixture  # noqa: E402
from benchmarks.samplers import mixture_problem as _mixture_problem  # noqa: E402

# Steps and grid per method: first-order Euler-Maruyama needs the most steps.
MIXTURE_RUNS = {
    "euler_maruyama": (2000, "uniform"),
    "heun": (400, "uniform"),
    "ancestral": (400, "log"),
    "ddim": (400, "log"),
    "gddim": (100, "log"),
    "dpmpp_2m": (50, "log"),
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_reproduces_the_mixture(method):
    """d = 8, anisotropic U, optimal Q, three components with unequal weights and
    covariances. Tolerances: class weights within 0.02 (the Monte Carlo sd at n = 10000
    is 0.005), per-class means within 0.15 (|mu_k| ~ 8) and covariances within 0.12
    (entries up to ~1), sliced W2 to fresh mixture samples within 3x the median sliced
    W2 between two fresh sets of the same size."""
    from nonrev.metrics import sliced_wasserstein
    from nonrev.scores import GaussianMixtureScore

    proc, means, covs, w = _mixture_problem()
    score = GaussianMixtureScore(proc, means, covs, w)
    n, t_min = 10_000, 1e-3
    steps, spacing = MIXTURE_RUNS[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x, _ = sample(
            score,
            proc,
            n=n,
            T=12.0,
            steps=steps,
            method=method,
            spacing=spacing,
            t_min=t_min,
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )
    label = score.posterior(x, t_min).argmax(1).numpy()
    x = x.numpy()
    np.testing.assert_allclose(np.bincount(label, minlength=3) / n, w, atol=0.02)
    for k in range(3):
        np.testing.assert_allclose(x[label == k].mean(0), means[k], atol=0.15)
        np.testing.assert_allclose(np.cov(x[label == k].T), covs[k], atol=0.12)
    rng = np.random.default_rng(1)
    ref = _draw_mixture(means, covs, w, n, rng)
    fresh = [sliced_wasserstein(_draw_mixture(means, covs, w, n, rng), ref) for _ in range(3)]
    assert sliced_wasserstein(x, ref) <= 3 * np.median(fresh)
