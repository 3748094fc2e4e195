import numpy as np
import pytest

from nonrev.process.schedules import CosineVP, LinearVP


def test_linear_vp_matches_ddpm_alpha_bar():
    s = LinearVP(0.1, 20.0)
    tau = np.linspace(0, 1, 11)
    # DDPM: alpha_bar = exp(-int beta_vp); for U = I, alpha_bar = e^{-2t}
    alpha_bar = np.exp(-(0.1 * tau + 0.5 * 19.9 * tau**2))
    np.testing.assert_allclose(np.exp(-2 * s(tau)), alpha_bar, rtol=1e-12)
    np.testing.assert_allclose(s.inverse(s(tau)), tau, atol=1e-12)
    h = 1e-6
    np.testing.assert_allclose(s.rate(0.5), (s(0.5 + h) - s(0.5 - h)) / (2 * h), rtol=1e-6)


def test_cosine_roundtrip_and_grid():
    s = CosineVP()
    tau = np.linspace(0, 0.99, 7)
    np.testing.assert_allclose(s.inverse(s(tau)), tau, atol=1e-10)
    assert s(0.0) == pytest.approx(0.0, abs=1e-12)
    g = s.grid(10)
    assert g.shape == (11,) and np.all(np.diff(g) > 0)
    h = 1e-6
    np.testing.assert_allclose(s.rate(0.5), (s(0.5 + h) - s(0.5 - h)) / (2 * h), rtol=1e-5)


def test_bad_schedule_input():
    with pytest.raises(ValueError, match="tau must lie"):
        LinearVP()(1.5)
    with pytest.raises(ValueError, match="beta_min"):
        LinearVP(beta_min=-1)
    with pytest.raises(ValueError, match="steps"):
        LinearVP().grid(0)


@pytest.mark.parametrize("schedule", [LinearVP(), CosineVP()])
def test_a_schedule_grid_drives_the_samplers(schedule):
    """A user's clock reaches the samplers as a time grid: sample(times=schedule.grid())
    and the exact Gaussian error on the same grid agree with Monte Carlo."""
    import torch
    from problems import random_spd

    from nonrev import OUProcess, optimal_q, sample
    from nonrev.samplers import gaussian_error
    from nonrev.scores import GaussianMixtureScore

    rng = np.random.default_rng(0)
    U, _, _ = random_spd(3, rng)
    proc = OUProcess(U, optimal_q(U))
    cov = np.diag([2.0, 1.0, 0.3])
    times = schedule.grid(40, tau_min=0.02)
    score = GaussianMixtureScore(proc, np.zeros((1, 3)), cov[None])
    exact = gaussian_error(proc, np.zeros(3), cov, method="gddim", times=times, start="stationary")
    x, info = sample(
        score,
        proc,
        n=20000,
        times=times,
        method="gddim",
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    assert info["nfe"] == 40
    emp = np.cov(x.numpy(), rowvar=False)
    np.testing.assert_allclose(emp, exact["cov"], atol=0.06)
