"""The structured kernel through the rooms above the process: the exact Gaussian
(mixture) score in the kernel's blocks, and every sampler run with it, each against
the dense OUProcess twin (the same process materialised as d x d matrices)."""

import numpy as np
import pytest
import torch

from nonrev.process import SpectralProcess
from nonrev.samplers import gaussian_error, get_method, method_names, sample
from nonrev.scores import GaussianMixtureScore


def _case(rng, shape=(1, 4, 4), current="optimal"):
    """A spectral process, its dense twin, and a two-component mixture whose
    covariances are block-diagonal in the kernel's basis (as blocks and dense)."""
    u = np.exp(rng.uniform(-2.0, 1.5, shape))
    proc = SpectralProcess(shape, u, current=current)
    dense = proc.dense()
    m, g = proc.basis.blocks
    means = rng.standard_normal((2, proc.dim))
    F = rng.standard_normal((2, m, g, g))
    blocks = F @ np.swapaxes(F, -1, -2) + 0.05 * np.eye(g)
    covs = np.stack([proc.basis.dense_np(b[None])[0] for b in blocks])
    return proc, dense, means, blocks, covs


def test_mixture_score_in_blocks_equals_the_dense_one(rng):
    proc, dense, means, blocks, covs = _case(rng)
    s_blk = GaussianMixtureScore(proc, means, blocks, weights=[0.3, 0.7])
    s_dense_cov = GaussianMixtureScore(proc, means, covs, weights=[0.3, 0.7])  # to_blocks
    s_ref = GaussianMixtureScore(dense, means, covs, weights=[0.3, 0.7])
    x = torch.as_tensor(rng.standard_normal((7, proc.dim)))
    for t in (0.01, 0.3, 2.0):
        for name in ("__call__", "denoise", "log_prob"):
            ref = getattr(s_ref, name)(x, t)
            for s in (s_blk, s_dense_cov):
                torch.testing.assert_close(getattr(s, name)(x, t), ref, rtol=1e-10, atol=1e-10)
    # the stiffness is given as blocks; densified it is the dense one's
    st = proc.basis.dense_np(s_blk.stiffness(0.3)[None])[0]
    np.testing.assert_allclose(st, s_ref.stiffness(0.3), rtol=1e-9, atol=1e-9)


def test_mixture_covariance_that_is_not_block_diagonal_is_refused(rng):
    proc, _, means, _, covs = _case(rng)
    bad = covs.copy()
    E = rng.standard_normal((proc.dim, proc.dim))  # couples every frequency pair
    bad[0] = bad[0] + E @ E.T
    with pytest.raises(ValueError, match="covs\\[0\\]"):
        GaussianMixtureScore(proc, means, bad)


@pytest.mark.parametrize(
    "method", ["gddim", "dpmpp_2m", "ddim", "euler_maruyama", "heun", "ancestral"]
)
def test_every_sampler_runs_the_structured_kernel_as_the_dense_one(method, rng):
    """Deterministic methods and Euler-Maruyama (isotropic noise): the same samples as
    the dense twin to 1e-10 from the same start and noise. ancestral and ddim take
    their Cholesky factors in the kernel's basis, a different square root: their
    output law is compared through the exact Gaussian error instead."""
    proc, dense, means, blocks, covs = _case(rng)
    rec = get_method(method)
    steps, spacing = (800, "uniform") if rec.explicit else (12, "log")
    kw = dict(T=4.0, steps=steps, t_min=1e-2, spacing=spacing, dtype=torch.float64)
    x_T = torch.as_tensor(rng.standard_normal((6, proc.dim)))
    if method in ("ancestral", "ddim"):
        C = covs[0]
        a = gaussian_error(proc, means[0], C, method, steps=12, T=4.0, t_min=1e-2)
        b = gaussian_error(dense, means[0], C, method, steps=12, T=4.0, t_min=1e-2)
        # the same sampler error (W2 to the law it aims at), though not the same samples
        assert abs(a["w2"] - b["w2"]) < 0.25 * b["w2"] + 1e-6
        assert np.abs(a["mean"] - b["mean"]).max() < 1e-8 or method == "ancestral"
        x, _ = sample(
            GaussianMixtureScore(proc, means, blocks),
            proc,
            x_T=x_T,
            generator=torch.Generator().manual_seed(0),
            method=method,
            **kw,
        )
        assert torch.isfinite(x).all()
        return
    xs = []
    for p, c in ((proc, blocks), (dense, covs)):
        gen = torch.Generator().manual_seed(0)
        x, info = sample(
            GaussianMixtureScore(p, means, c), p, x_T=x_T, generator=gen, method=method, **kw
        )
        xs.append(x)
    torch.testing.assert_close(xs[0], xs[1], rtol=1e-10, atol=1e-10)


def test_the_structured_kernel_samples_from_its_prior_and_with_a_prior(rng):
    proc, dense, means, blocks, covs = _case(rng, shape=(1, 8, 8))
    score = GaussianMixtureScore(proc, means[:1], blocks[:1])
    gen = torch.Generator().manual_seed(1)
    x, info = sample(
        score,
        proc,
        2000,
        method="dpmpp_2m",
        steps=10,
        spacing="log",
        t_min=1e-2,
        generator=gen,
        dtype=torch.float64,
        prior=(means[0], covs[0]),
    )
    # with the data's own law as prior every step is exact: the output is N(M m, G) at
    # t_min up to Monte Carlo (5 standard errors on the mean)
    exact = gaussian_error(
        proc,
        means[0],
        covs[0],
        "dpmpp_2m",
        steps=10,
        t_min=1e-2,
        start="stationary",
        prior=(means[0], covs[0]),
    )
    se = np.sqrt(np.diag(exact["cov"]) / 2000)
    assert np.all(np.abs(x.numpy().mean(0) - exact["mean"]) < 5 * se)
    assert "heun" in method_names(explicit=True)
