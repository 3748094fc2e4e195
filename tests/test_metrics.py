"""Distances between sample sets and nearest neighbours: closed forms, brute force,
determinism and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import energy_distance as scipy_energy

from nonrev.metrics import (
    energy_distance,
    median_bandwidth,
    mmd_rbf,
    nearest_neighbour_distances,
    sliced_wasserstein,
)


def gaussian_pair(d, n, shift, seed):
    g = np.random.default_rng(seed)
    m = np.zeros(d)
    m[0] = shift
    return g.standard_normal((n, d)), g.standard_normal((n, d)) + m


# ---------------------------------------------------------------------- sliced Wasserstein
def test_sliced_wasserstein_of_a_set_to_itself_is_zero():
    x, _ = gaussian_pair(6, 500, 0.0, seed=0)
    assert sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(torch.as_tensor(x), x.copy()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("d", [1, 4])
def test_sliced_wasserstein_of_a_shifted_copy(d):
    # y = x + m: every projected W2 is exactly |theta . m|, so SW2^2 = E (theta . m)^2
    # = |m|^2 / d (theta uniform on the sphere). In d = 1 this is |m| to rounding; in
    # d = 4 the Monte Carlo over 4000 directions has a relative sd of ~0.8% (tolerance 3%).
    x, _ = gaussian_pair(d, 400, 0.0, seed=1)
    m = np.array([2.0, -1.0, 0.5, 1.0][:d])
    sw = sliced_wasserstein(x, x + m, n_projections=4000, seed=3)
    expected = np.linalg.norm(m) / math.sqrt(d)
    assert sw == pytest.approx(expected, rel=1e-9 if d == 1 else 3e-2)


@pytest.mark.parametrize("d", [1, 4])
def test_sliced_wasserstein_between_shifted_gaussians(d):
    # N(0, I) against N(m, I) from independent samples, n = 3000 each, |m| = 2:
    # SW2 = |m| / sqrt(d); sampling error ~ sqrt(2 / n) * |m| ~ 0.05 (tolerance 0.15).
    x, y = gaussian_pair(d, 3000, 2.0, seed=2)
    assert sliced_wasserstein(x, y, n_projections=1000, seed=0) == pytest.approx(
        2.0 / math.sqrt(d), abs=0.15
    )


def test_sliced_wasserstein_is_deterministic_for_a_seed():
    x, y = gaussian_pair(5, 300, 1.0, seed=4)
    a = sliced_wasserstein(x, y, n_projections=20, seed=7)
    assert a == sliced_wasserstein(x, y, n_projections=20, seed=7)
    assert a != sliced_wasserstein(x, y, n_projections=20, seed=8)
    # p = 1 is also supported and differs from p = 2.
    assert sliced_wasserstein(x, y, n_projections=20, p=1, seed=7) < a


# ---------------------------------------------------------------------- MMD and energy
def test_mmd_matches_brute_force_u_statistic():
    g = np.random.default_rng(5)
    x, y = g.standard_normal((30, 3)), g.standard_normal((20, 3)) + 0.5
    h = 1.3

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h * h))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )
    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(expected, rel=1e-12)
    # The median heuristic on a small set uses every pair.
    z = np.concatenate([x, y])
    dist = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(len(z), 1)]
    assert median_bandwidth(x, y) == pytest.approx(np.sort(dist)[(dist.size - 1) // 2], rel=1e-12)


def test_mmd_and_energy_separate_laws():
    # n = 2000 in d = 4. Same law: unbiased MMD^2 is O(1/n) (tolerance 3e-3), the
    # V-statistic energy distance O(n^{-1/2}) (tolerance 0.1). Shift |m| = 1: MMD^2 ~ 0.1,
    # energy ~ 0.7.
    x, y_far = gaussian_pair(4, 2000, 1.0, seed=6)
    _, y_same = gaussian_pair(4, 2000, 0.0, seed=7)
    assert abs(mmd_rbf(x, y_same)) < 3e-3
    assert mmd_rbf(x, y_far) > 0.05
    assert energy_distance(x, y_same) < 0.1
    assert energy_distance(x, y_far) > 0.4
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert mmd_rbf(x, y_far) == mmd_rbf(x, y_far)  # deterministic


def test_energy_distance_matches_scipy_in_one_dimension():
    g = np.random.default_rng(8)
    x, y = g.standard_normal(500), 0.3 + 1.5 * g.standard_normal(300)
    assert energy_distance(x[:, None], y[:, None]) == pytest.approx(scipy_energy(x, y), rel=1e-10)


def test_median_bandwidth_subsample_is_seeded():
    x, y = gaussian_pair(3, 1500, 0.5, seed=9)
    a = median_bandwidth(x, y, max_points=500, seed=1)
    assert a == median_bandwidth(x, y, max_points=500, seed=1)
    assert a != median_bandwidth(x, y, max_points=500, seed=2)
    assert a == pytest.approx(median_bandwidth(x, y), rel=0.05)


# ---------------------------------------------------------------------- nearest neighbours
@pytest.mark.parametrize("k,chunk_size", [(1, None), (2, 7), (2, 1000), (5, 64)])
def test_nearest_neighbours_match_brute_force(k, chunk_size):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    points = torch.randn(301, 6, generator=g, dtype=torch.float64)
    dist, idx = nearest_neighbour_distances(x, points, k=k, chunk_size=chunk_size)
    ref_d, ref_i = torch.cdist(x, points).topk(k, dim=1, largest=False)
    assert dist.shape == idx.shape == (40, k) and idx.dtype == torch.int64
    assert torch.equal(idx, ref_i)
    assert torch.allclose(dist, ref_d, rtol=1e-12)


def test_nearest_neighbour_distance_is_accurate_for_near_copies():
    # Samples 1e-3 away from training points of norm ~ 300 in float32: the expanded
    # |x|^2 - 2 x.a + |a|^2 has rounding error ~ 1e-2 in squared distance, far above
    # d1^2 ~ 1e-6, so d1 must be recomputed directly.
    g = torch.Generator().manual_seed(11)
    points = 10.0 * torch.randn(500, 1000, generator=g)
    offset = 1e-3 * torch.nn.functional.normalize(torch.randn(20, 1000, generator=g), dim=1)
    x = points[:20] + offset
    dist, idx = nearest_neighbour_distances(x, points, k=2, chunk_size=128)
    assert torch.equal(idx[:, 0], torch.arange(20))
    exact = (x.double() - points[:20].double()).norm(dim=1)
    assert torch.allclose(dist[:, 0].double(), exact, rtol=1e-3)
    assert (dist[:, 0] / dist[:, 1] < 1.0 / 3.0).all()  # "memorised" by the 1/3 test


# ---------------------------------------------------------------------- bad input
SET_FUNCTIONS = [sliced_wasserstein, mmd_rbf, energy_distance]


@pytest.mark.parametrize("fn", SET_FUNCTIONS)
def test_set_distances_reject_bad_input(fn):
    x = np.zeros((10, 3))
    x[:, 0] = np.arange(10)
    nan = x.copy()
    nan[2, 1] = np.nan
    for match, a, b in [
        ("same dimension", x, x[:, :2]),
        ("x must have at least", x[:0], x),
        ("y must have at least", x, x[:0]),
        ("x contains NaN", nan, x),
        ("y contains NaN", x, nan),
        ("x must have shape", x[0], x),
        ("y must have shape", x, np.zeros((10, 3, 1))),
    ]:
        with pytest.raises(ValueError, match=match):
            fn(a, b)


def test_keyword_arguments_are_checked():
    x, y = gaussian_pair(3, 20, 1.0, seed=12)
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, y, n_projections=0)
    with pytest.raises(ValueError, match="p must be"):
        sliced_wasserstein(x, y, p=0.5)
    with pytest.raises(ValueError, match="seed"):
        sliced_wasserstein(x, y, seed=None)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(x, y, bandwidth=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        mmd_rbf(x[:1], y)
    with pytest.raises(ValueError, match="k must be at most"):
        nearest_neighbour_distances(x, y[:2], k=3)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbour_distances(x, y, k=0)
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_neighbour_distances(x, y, chunk_size=0)
    with pytest.raises(ValueError, match="points contains NaN"):
        nearest_neighbour_distances(x, np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="same dimension"):
        nearest_neighbour_distances(x, y[:, :2])
    with pytest.raises(ValueError, match="x is on meta"):
        nearest_neighbour_distances(torch.empty(2, 3, device="meta"), torch.zeros(4, 3))


# ---------------------------------------------------------------------------- images
def test_radial_power_spectrum_closed_forms(rng):
    """White noise of variance s^2 has power s^2 in every shell (orthonormal FFT; Monte
    Carlo over 400 images of 16 x 16: relative error of a shell's mean below 10%); a
    cosine of frequency (0, k) puts all its power in shell k; scaling by a moves the
    dB error by exactly 20 log10 a."""
    from nonrev.metrics import power_spectrum_error_db, radial_power_spectrum

    s = 1.7
    X = s * rng.standard_normal((400, 1, 16, 16))
    P = radial_power_spectrum(X)
    assert P.shape == (8,)
    np.testing.assert_allclose(P, s**2, rtol=0.1)
    k = 3
    cos = np.cos(2 * np.pi * k * np.arange(16) / 16)[None, None, :].repeat(16, axis=1)
    Pc = radial_power_spectrum(cos[None])
    assert Pc[k - 1] > 0 and np.allclose(np.delete(Pc, k - 1), 0.0, atol=1e-20)
    # power 16*16/2 at two frequencies (+-k) of shell k, which has 4 * ... points: the
    # shell mean times its count is the total power minus the DC term
    assert Pc[k - 1] * np.sum(
        np.rint(np.hypot(*np.meshgrid(np.fft.fftfreq(16) * 16, np.fft.fftfreq(16) * 16))) == k
    ) == pytest.approx(16 * 16 / 2, rel=1e-12)
    assert power_spectrum_error_db(2.0 * X, X) == pytest.approx(20 * np.log10(2.0), rel=1e-12)
    assert power_spectrum_error_db(X, X) == 0.0
    with pytest.raises(ValueError, match="images must have shape"):
        radial_power_spectrum(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="one size"):
        power_spectrum_error_db(X, X[:, :, :8, :8])
