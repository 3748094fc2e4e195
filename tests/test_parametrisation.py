"""The data-frame parametrisation of learned scores (nonrev.scores.neural,
kind="data_frame") against closed forms, and trained with every sampler."""

import numpy as np
import pytest
import torch
from problems import random_spd

from nonrev import OUProcess, optimal_q, random_q
from nonrev.config import from_dict
from nonrev.metrics import sliced_wasserstein
from nonrev.samplers import METHODS
from nonrev.scores import GaussianMixtureScore
from nonrev.scores.neural import MLPNet, NeuralScore, Parameterisation
from nonrev.training.loop import TrainConfig, prepare_data, train

T_MIN, T_MAX = 1e-3, 3.0


def _zero_net(d):
    net = MLPNet(d, T_MIN, T_MAX, hidden=8, depth=1, emb_dim=4).double()
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
    return net


def _problem(rng, d, current, singular):
    U, _, _ = random_spd(d, rng, 0.1, 3.0, geometric=True)
    Q = {"none": None, "optimal": optimal_q(U), "random": random_q(d, 5.0, seed=3)}[current]
    B = rng.standard_normal((d, d))
    C = B @ B.T / d
    if singular:  # a constant coordinate, like the border pixels of digits
        C[0, :] = C[:, 0] = 0.0
    return OUProcess(U, Q), C


@pytest.mark.parametrize("current", ["none", "optimal", "random"])
@pytest.mark.parametrize("singular", [False, True])
def test_zero_network_is_exact_for_gaussian_data(rng, current, singular):
    """F = 0 gives the exact score and data prediction of N(0, C) under any U and Q,
    on grid times and between them, also for a singular C."""
    d = 5
    proc, C = _problem(rng, d, current, singular)
    param = Parameterisation(proc, C, kind="data_frame", t_range=(T_MIN, T_MAX))
    grid = np.geomspace(T_MIN, T_MAX, 25)
    score = NeuralScore(_zero_net(d), param, param.tables(grid, dtype=torch.float64))
    exact = GaussianMixtureScore(proc, np.zeros((1, d)), C[None])
    x = torch.tensor(rng.standard_normal((6, d)))
    for t in (grid[0], grid[9], 0.0173, 1.234, grid[-1]):
        np.testing.assert_allclose(score(x, t).numpy(), exact(x, t).numpy(), rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(
            score.denoise(x, t).numpy(), exact.denoise(x, t).numpy(), rtol=1e-7, atol=1e-9
        )


def test_data_frame_factors_and_noise_level(rng):
    """The output factor is a root of the posterior covariance P_t; the network's
    input map sends the signal through S (I + S)^{-1}, symmetric (no rotation); the
    noise-level input grows with t and maps the training range onto itself."""
    d = 6
    proc, C = _problem(rng, d, "optimal", False)
    param = Parameterisation(proc, C, kind="data_frame", t_range=(T_MIN, T_MAX))
    w, V = np.linalg.eigh(C)
    Ch = (V * np.sqrt(w)) @ V.T
    for t in (0.01, 0.3, 2.0):
        M, S = proc.mean_and_cov(t)
        W, R, _, K = (a[0] for a in param._posterior(M[None], S[None]))  # one block
        G = M @ C @ M.T + S
        P = C - C @ M.T @ np.linalg.solve(G, M @ C)
        np.testing.assert_allclose(R @ R.T, P, rtol=1e-9, atol=1e-12)
        Ssnr = Ch @ M.T @ np.linalg.solve(S, M @ Ch)
        shrink = K @ M @ Ch
        np.testing.assert_allclose(shrink, shrink.T, atol=1e-10)
        s = np.linalg.eigvalsh(Ssnr)
        np.testing.assert_allclose(np.linalg.eigvalsh(shrink), np.sort(s / (1 + s)), atol=1e-10)
    c = [param.cond(t) for t in np.geomspace(T_MIN, T_MAX, 40)]
    assert np.all(np.diff(c) > 0)
    assert c[0] == pytest.approx(T_MIN, rel=1e-9) and c[-1] == pytest.approx(T_MAX, rel=1e-9)


def test_bad_kinds_are_refused():
    proc = OUProcess(np.eye(2))
    with pytest.raises(ValueError, match="kind must be one of"):
        Parameterisation(proc, np.eye(2), kind="nope")
    with pytest.raises(ValueError, match="needs t_range"):
        Parameterisation(proc, np.eye(2), kind="data_frame")
    with pytest.raises(ValueError, match="needs data_cov"):
        Parameterisation(proc, None, kind="gaussian")


def test_trained_data_frame_model_works_with_every_sampler():
    """A short training run (150 steps) on two moons with the optimal current of an
    anisotropic U; every sampler gives finite samples near the data (measured sliced
    W2 to the training set: 0.14-0.15 for the exact-kernel methods, 0.21 Euler-
    Maruyama, 0.35 Heun at 40 steps; samples of the data's Gaussian fit: 0.19)."""
    cfg = from_dict(
        TrainConfig,
        dict(
            data="moons",
            n_points=400,
            hidden=32,
            depth=2,
            emb_dim=8,
            batch_size=64,
            time_groups=4,
            n_times=40,
            t_max=4.0,
            checkpoint_minutes=0.0,
            warmup=5,
            steps=150,
            u="data",
            q="optimal",
            parametrisation="data_frame",
        ),
    )
    model = train(cfg)
    assert model.param.kind == "data_frame"
    ds, _ = prepare_data(cfg)
    for method in METHODS:
        x, _ = model.sample(300, 40, method, seed=1)
        assert np.all(np.isfinite(x)), method
        limit = 0.17 if method in ("ancestral", "ddim", "gddim", "dpmpp_2m") else 0.45
        assert sliced_wasserstein(x, ds.train) < limit, method


def test_noise_level_training_grid(rng):
    """spacing='snr': times evenly spaced in log nu_t, from t_min to t_max."""
    d = 4
    proc, C = _problem(rng, d, "optimal", True)
    param = Parameterisation(proc, C)
    grid = param.noise_level_grid(T_MIN, T_MAX, 30)
    assert grid[0] == T_MIN and grid[-1] == T_MAX and np.all(np.diff(grid) > 0)
    log_nu = [param._log_nu(*proc.mean_and_cov(t)) for t in grid]
    steps = np.diff(log_nu)
    np.testing.assert_allclose(steps, steps.mean(), rtol=0.02)
    with pytest.raises(ValueError, match="data covariance"):
        Parameterisation(proc).noise_level_grid(T_MIN, T_MAX, 10)
    with pytest.raises(ValueError, match="spacing: snr needs precondition"):
        from_dict(TrainConfig, {"spacing": "snr", "precondition": False})
