"""Reference problems shared by the tests, imported like any module
(``from problems import random_spd``)."""

import os

import numpy as np
import torch
from click.testing import CliRunner

from nonrev import OUProcess, optimal_q
from nonrev.cli import main
from nonrev.linalg import random_spd as _random_spd
from nonrev.samplers import gaussian_error, sample
from nonrev.scores import GaussianMixtureScore

#: One thread per pool for the commands a test runs in a child process.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: A training config that runs in seconds (moons, a tiny MLP).
TINY_TRAIN = dict(
    data="moons",
    n_points=300,
    hidden=16,
    depth=1,
    emb_dim=8,
    batch_size=32,
    time_groups=4,
    n_times=40,
    t_max=4.0,
    checkpoint_minutes=0.0,
    warmup=5,
)


def invoke(*args):
    """``nonrev ARGS...`` in-process (click's runner); the result has ``exit_code`` and
    ``output``."""
    return CliRunner().invoke(main, [str(a) for a in args])


def random_spd(d, rng, lo=0.25, hi=1.75, geometric=False):
    """``(U, V, lam)``: an SPD matrix with ``d`` eigenvalues spread over [lo, hi]
    (linearly, or geometrically) in a random orthonormal basis."""
    lam = np.geomspace(lo, hi, d) if geometric else np.linspace(lo, hi, d)
    U, V = _random_spd(lam, rng)
    return U, V, lam


def gaussian_case(rng, current=True):
    """The d = 4 Gaussian case of the few-step issue: U eigenvalues 0.25..1.75, data
    covariance eigenvalues 4..0.05 (geometric), a random mean, optimal Q (or none).
    Returns ``(process, m, C)``."""
    d = 4
    U, _, _ = random_spd(d, rng)
    C, _, _ = random_spd(d, rng, lo=0.05, hi=4.0, geometric=True)
    m = rng.standard_normal(d)
    return OUProcess(U, optimal_q(U) if current else None), m, C


def check_exact_error_by_monte_carlo(proc, m, C, method, n=20_000, seed=5, **kw):
    """Run ``method`` on ``n`` samples started exactly at P_T (``kw``: T, steps, t_min,
    spacing, prior, ...) with the exact score of N(m, C), and assert that
    :func:`nonrev.samplers.gaussian_error` gives their law: every mean within 5
    standard errors, every covariance entry within 5 standard errors
    (sqrt((C_ii C_jj + C_ij^2) / n)). Returns ``(exact, se_cov)``."""
    exact = gaussian_error(proc, m, C, method, start="exact", **kw)
    gen = torch.Generator().manual_seed(seed)
    M, S = proc.mean_and_cov(kw["T"])
    z = torch.randn(n, len(m), generator=gen, dtype=torch.float64)
    x_T = torch.as_tensor(M @ m) + z @ torch.as_tensor(np.linalg.cholesky(M @ C @ M.T + S)).T
    score = GaussianMixtureScore(proc, m[None], C[None])
    x, _ = sample(score, proc, x_T=x_T, method=method, generator=gen, **kw)
    x = x.numpy()
    cov = exact["cov"]
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - exact["mean"]) < 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) < 5 * se_cov)
    return exact, se_cov
