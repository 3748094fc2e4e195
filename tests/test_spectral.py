"""SpectralProcess: the DCT basis, the groups, the per-group currents and the exact
kernel in blocks, each against the dense OUProcess it equals."""

import itertools

import numpy as np
import pytest
import scipy.fft
import torch

from nonrev.process import OUProcess, SpectralProcess
from nonrev.process.currents import optimal_q
from nonrev.process.spectral import (
    OPPONENT,
    DCTBasis,
    as_groups,
    balanced_groups,
    optimal_blocks,
    pair_groups,
)


def _u(shape, rng, lo=-3.0, hi=2.0):
    return np.exp(rng.uniform(lo, hi, shape))


def _rotation(C, rng):
    Q, _ = np.linalg.qr(rng.standard_normal((C, C)))
    return Q


# ----------------------------------------------------------------------------- basis
@pytest.mark.parametrize(
    "shape, colour",
    [
        ((1, 8, 8), None),
        ((3, 5, 7), "opponent"),
        ((2, 1, 4), "random"),
        ((1, 1, 1), None),
        ((3, 6, 4), None),
    ],
)
def test_basis_is_orthogonal_and_torch_matches_numpy(shape, colour, rng):
    if colour == "random":
        colour = _rotation(shape[0], rng)
    b = DCTBasis(shape, colour)
    V = b.matrix()
    assert np.abs(V @ V.T - np.eye(b.dim)).max() < 1e-13
    x = rng.standard_normal((5, b.dim))
    y_np = b.forward_numpy(x)
    np.testing.assert_allclose(y_np, x @ V.T, rtol=0, atol=1e-12)
    y_t = b.forward(torch.from_numpy(x))
    assert y_t.dtype == torch.float64
    assert np.abs(y_t.numpy() - y_np).max() < 1e-12
    assert np.abs(b.inverse(y_t).numpy() - x).max() < 1e-12
    assert np.abs(b.inverse_numpy(y_np) - x).max() < 1e-12


def test_basis_is_the_per_channel_dct_then_the_colour_transform(rng):
    # The coefficient order is (channel', k_h, k_w) with scipy's orthonormal DCT-II.
    x = rng.standard_normal((2, 3, 4, 6))
    y = DCTBasis((3, 4, 6), "opponent").forward(torch.from_numpy(x.reshape(2, -1))).numpy()
    ref = np.einsum("ij,bjhw->bihw", OPPONENT, scipy.fft.dctn(x, axes=(-2, -1), norm="ortho"))
    assert np.abs(y - ref.reshape(2, -1)).max() < 1e-12


def test_basis_float32_and_groups(rng):
    b = DCTBasis((1, 8, 8))
    x = rng.standard_normal((3, 64))
    y32 = b.forward(torch.from_numpy(x).float())
    assert y32.dtype == torch.float32
    assert np.abs(y32.double().numpy() - b.forward_numpy(x)).max() < 1e-5
    G = pair_groups(np.arange(1.0, 65.0))
    yg = b.forward(torch.from_numpy(x), G)
    assert yg.shape == (3, 32, 2)
    assert np.abs(yg.numpy() - b.forward_numpy(x)[:, G]).max() < 1e-12
    assert np.abs(b.inverse(yg, G).numpy() - x).max() < 1e-12


def test_basis_errors():
    with pytest.raises(ValueError, match="shape"):
        DCTBasis((8, 8))
    with pytest.raises(ValueError, match="shape"):
        DCTBasis((1, 0, 8))
    with pytest.raises(ValueError, match="colour must be orthogonal"):
        DCTBasis((2, 4, 4), [[1.0, 0.1], [0.0, 1.0]])
    with pytest.raises(ValueError, match="C = 3"):
        DCTBasis((1, 4, 4), "opponent")
    with pytest.raises(ValueError, match=r"x must have shape \(B, 16\)"):
        DCTBasis((1, 4, 4)).forward(torch.zeros(2, 15))
    with pytest.raises(ValueError, match="d <= "):
        DCTBasis((1, 128, 128)).matrix()


# ----------------------------------------------------------------------------- groups
def _min_group_mean(u, G):
    return u[G].mean(axis=1).min()


def _pairings(items):
    if not items:
        yield []
        return
    for k in range(1, len(items)):
        rest = items[1:k] + items[k + 1 :]
        for tail in _pairings(rest):
            yield [(items[0], items[k])] + tail


def test_pairs_are_optimal_by_brute_force(rng):
    # Every pairing of 10 numbers (945): the folded one has the largest smallest pair mean.
    for _ in range(5):
        u = np.exp(rng.uniform(-4, 2, 10))
        best = max(_min_group_mean(u, np.array(p)) for p in _pairings(list(range(10))))
        G = pair_groups(u)
        as_groups(G, 10)
        assert _min_group_mean(u, G) == pytest.approx(best, rel=1e-15)


def test_balanced_groups_partition_and_beat_the_serpentine(rng):
    for g in (3, 4, 8):
        u = np.exp(rng.uniform(-8, 2, 48 * g))  # four decades, like image spectra
        G = balanced_groups(u, g)
        as_groups(G, u.size)
        order = np.argsort(u)
        m = u.size // g
        snake = np.stack(
            [order[r * m : (r + 1) * m][:: 1 if r % 2 == 0 else -1] for r in range(g)], axis=1
        )
        assert _min_group_mean(u, G) >= _min_group_mean(u, snake)
        assert _min_group_mean(u, G) <= u.mean()


def test_balanced_groups_near_the_brute_force_optimum(rng):
    # d = 12 in three groups of four: 5775 partitions, enumerated.
    def partitions(items):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for others in itertools.combinations(rest, 3):
            left = [i for i in rest if i not in others]
            for tail in partitions(left):
                yield [(first, *others)] + tail

    for _ in range(3):
        u = np.exp(rng.uniform(-5, 2, 12))
        best = max(_min_group_mean(u, np.array(p)) for p in partitions(list(range(12))))
        assert _min_group_mean(u, balanced_groups(u, 4)) >= 0.99 * best


def test_group_errors():
    with pytest.raises(ValueError, match="groups: d = 10 .* g = 4"):
        balanced_groups(np.ones(10), 4)
    with pytest.raises(ValueError, match="groups"):
        balanced_groups(np.ones(10), 1)
    with pytest.raises(ValueError, match="groups must partition 0..5 exactly: index 5"):
        as_groups([[0, 1], [2, 3], [4, 4]], 6)
    with pytest.raises(ValueError, match="groups must partition the d = 6"):
        as_groups([[0, 1], [2, 3]], 6)
    with pytest.raises(ValueError, match="groups must be an"):
        as_groups([0, 1, 2, 3, 4, 5], 6)
    with pytest.raises(ValueError, match="groups must hold integer"):
        as_groups([[0, 1.5], [2, 3], [4, 5]], 6)


# ----------------------------------------------------------------------------- currents
def test_pair_current_closed_form(rng):
    # diag(a, b) with [[0, q], [-q, 0]]: equal real parts iff q^2 >= (a - b)^2 / (4ab).
    for a, b in np.exp(rng.uniform(-4, 2, (20, 2))):
        q0 = abs(a - b) / (2 * np.sqrt(a * b))
        for q, equal in ((0.9 * q0, False), (1.1 * q0, True), (3 * q0, True)):
            ev = np.linalg.eigvals(np.array([[a, q * b], [-q * a, b]]))
            assert (abs(ev[0].real - ev[1].real) < 1e-9 * (a + b)) == equal
    u = np.exp(rng.uniform(-4, 2, (30, 2)))
    B = optimal_blocks(u)
    for row, Bj in zip(u, B):
        np.testing.assert_allclose(Bj, optimal_q(np.diag(row)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("g", [2, 3, 4])
def test_optimal_current_real_parts_per_group(g, rng):
    shape = (1, 6, 8)
    p = SpectralProcess(shape, _u(shape, rng), "optimal", groups=g)
    ev = np.linalg.eigvals(p.drift_blocks)
    mean = p.u_blocks.mean(axis=1)
    assert np.abs(ev.real - mean[:, None]).max() < 1e-9 * mean.max()
    assert p.relaxation_rate() == pytest.approx(mean.min(), rel=1e-9)
    assert SpectralProcess(shape, p.u, "none", groups=g).relaxation_rate() == p.u.min()


@pytest.mark.parametrize(
    "shape, g, colour",
    [
        ((1, 8, 8), 2, None),
        ((1, 8, 8), 4, None),
        ((3, 4, 4), 2, "opponent"),
        ((3, 4, 4), 4, "random"),
    ],
)
@pytest.mark.parametrize("current", ["none", "optimal", "gamma:0.2", "blocks"])
def test_dense_twin_rates_and_matrices(shape, g, colour, current, rng):
    if colour == "random":
        colour = _rotation(shape[0], rng)
    u = _u(shape, rng)
    if current == "blocks":
        m = u.size // g
        R = rng.standard_normal((m, g, g))
        current = R - np.swapaxes(R, 1, 2)
    p = SpectralProcess(shape, u, current, groups=g, colour=colour)
    D = p.dense()
    assert isinstance(D, OUProcess)
    V = p.dct.matrix()
    np.testing.assert_allclose(V @ D.U @ V.T, np.diag(u.reshape(-1)), atol=1e-12 * u.max())
    np.testing.assert_allclose(D.A, p.to_pixels(p.drift_blocks), atol=1e-12 * np.abs(D.A).max())
    assert p.relaxation_rate() == pytest.approx(D.relaxation_rate(), rel=1e-9)
    assert p.contraction_rate() == pytest.approx(D.contraction_rate(), rel=1e-12)
    np.testing.assert_allclose(
        V @ D.stationary_cov @ V.T,
        np.diag(p.stationary_var.reshape(-1)),
        atol=1e-12 * p.stationary_var.max(),
    )


def test_apply_matches_the_dense_operator(rng):
    p = SpectralProcess((2, 4, 6), _u((2, 4, 6), rng), "optimal", groups=4)
    x = rng.standard_normal((3, p.dim))
    Op = p.to_pixels(p.drift_blocks)
    y = p.apply(p.drift_blocks, torch.from_numpy(x)).numpy()
    assert np.abs(y - x @ Op.T).max() < 1e-12 * np.abs(Op).max()
    per_row = np.stack([p.drift_blocks, 2 * p.drift_blocks, -p.drift_blocks])
    y = p.apply(per_row, torch.from_numpy(x)).numpy()
    assert np.abs(y - x @ Op.T * np.array([[1.0], [2.0], [-1.0]])).max() < 1e-11


def test_process_errors(rng):
    shape = (1, 4, 4)
    u = _u(shape, rng)
    with pytest.raises(ValueError, match=r"u must have shape \(1, 4, 4\)"):
        SpectralProcess(shape, u.reshape(-1))
    for bad in (0.0, -1.0, np.nan, np.inf):
        v = u.copy()
        v[0, 1, 2] = bad
        with pytest.raises(ValueError, match="^u "):
            SpectralProcess(shape, v)
    with pytest.raises(ValueError, match="current must be"):
        SpectralProcess(shape, u, "fast")
    with pytest.raises(ValueError, match="current: gamma"):
        SpectralProcess(shape, u, "gamma:abc")
    with pytest.raises(ValueError, match="antisymmetric"):
        SpectralProcess(shape, u, np.ones((8, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(4, 4, 4\)"):
        SpectralProcess(shape, u, np.zeros((8, 2, 2)), groups=4)
    with pytest.raises(ValueError, match="groups: d = 16 .* g = 3"):
        SpectralProcess(shape, u, groups=3)
    with pytest.raises(ValueError, match="groups must partition"):
        SpectralProcess(shape, u, groups=np.arange(16).reshape(8, 2) % 15)
    with pytest.raises(ValueError, match="dense"):
        SpectralProcess((1, 128, 128), np.ones((1, 128, 128))).dense()


# ----------------------------------------------------------------------------- from data
def test_from_data_variance_and_cap(rng):
    shape = (1, 4, 4)
    scales = _u(shape, rng, -3, 3)  # std of each DCT coefficient
    basis = DCTBasis(shape)
    coeffs = rng.standard_normal((500, 16)) * np.sqrt(scales.reshape(-1)) + 0.3
    images = basis.inverse_numpy(coeffs).reshape(500, *shape)
    p = SpectralProcess.from_data(images, chunk=77)  # several chunks of the merge
    u = 1.0 / coeffs.var(axis=0)
    np.testing.assert_allclose(p.u.reshape(-1), u / u.mean(), rtol=1e-10)
    assert p.u.mean() == pytest.approx(1.0, rel=1e-14)
    q = SpectralProcess.from_data(torch.from_numpy(images), k=10.0, current="optimal")
    capped = np.maximum(u, u.max() / 10.0)
    np.testing.assert_allclose(q.u.reshape(-1), capped / capped.mean(), rtol=1e-10)
    assert q.u.max() / q.u.min() == pytest.approx(10.0, rel=1e-12)
    assert q.current == "optimal"


def test_from_data_errors(rng):
    with pytest.raises(ValueError, match=r"images must have shape \(n, C, H, W\)"):
        SpectralProcess.from_data(rng.standard_normal((10, 16)))
    with pytest.raises(ValueError, match="zero variance"):
        SpectralProcess.from_data(np.ones((10, 1, 4, 4)))
    flat = np.ones((10, 1, 4, 6)) * rng.standard_normal((10, 1, 1, 1))  # only DC varies
    with pytest.raises(ValueError, match=r"DCT coefficient \(0, \d, \d\) has zero variance"):
        SpectralProcess.from_data(flat, k=100.0)
    with pytest.raises(ValueError, match="k must be"):
        SpectralProcess.from_data(rng.standard_normal((10, 1, 4, 4)), k=0.5)
    with pytest.raises(ValueError, match="k must be"):
        SpectralProcess.from_data(rng.standard_normal((10, 1, 4, 4)), k="abc")
    with pytest.raises(ValueError, match="chunk"):
        SpectralProcess.from_data(rng.standard_normal((10, 1, 4, 4)), chunk=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        SpectralProcess.from_data(rng.standard_normal((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        SpectralProcess.from_data(np.full((3, 1, 4, 4), np.nan))


# ----------------------------------------------------------------------------- kernel
TIMES = np.array([0.0, 1e-7, 1e-3, 0.05, 0.7, 3.0, 40.0])


def _close(a, ref, tol=1e-10):
    """Largest error relative to the largest entry of the reference, per time."""
    err = np.abs(a - ref).max(axis=(-2, -1))
    scale = np.maximum(np.abs(ref).max(axis=(-2, -1)), 1e-300)
    return float((err / scale).max()) <= tol, float((err / scale).max())


@pytest.mark.parametrize(
    "shape, g, colour",
    [
        ((1, 8, 8), 2, None),
        ((1, 16, 16), 2, None),
        ((1, 16, 16), 4, None),
        ((3, 4, 4), 2, "opponent"),
    ],
)
@pytest.mark.parametrize("current", ["none", "optimal"])
def test_kernel_blocks_equal_the_dense_kernel(shape, g, colour, current, rng):
    p = SpectralProcess(shape, _u(shape, rng), current, groups=g, colour=colour)
    M, S = p.mean_and_cov_blocks(TIMES)
    m = p.dim // g
    assert M.shape == S.shape == (TIMES.size, m, g, g)
    Md, Sd = p.dense().mean_and_cov(TIMES)
    V = p.dct.matrix()
    Mp = np.stack([V.T @ p.block_matrix(b) @ V for b in M])
    Sp = np.stack([V.T @ p.block_matrix(b) @ V for b in S])
    ok, err = _close(Mp, Md)
    assert ok, err
    ok, err = _close(Sp[1:], Sd[1:])  # relative to Sigma_t itself, 2t at small t
    assert ok, err
    assert np.abs(Sp[0]).max() == 0.0
    M1, S1 = p.mean_and_cov_blocks(0.7)
    np.testing.assert_array_equal(M1, M[4])
    np.testing.assert_array_equal(S1, S[4])


def _moment_check(p, x0, t, n, seed):
    gen = torch.Generator().manual_seed(seed)
    X = p.sample(torch.from_numpy(np.repeat(x0[None], n, axis=0)), t, gen).numpy()
    M, S = p.dense().mean_and_cov(float(np.atleast_1d(t)[0]))
    mean_err = (X.mean(axis=0) - M @ x0) / np.sqrt(np.diag(S) / n)
    C = np.cov(X.T, bias=True)
    cov_sd = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / n)
    return np.abs(mean_err).max(), np.abs((C - S) / cov_sd).max()


def test_sample_moments_monte_carlo(rng):
    # 40000 draws at d = 16: every mean and covariance entry within 5 standard errors
    # (with 16 + 136 entries the chance of a false failure is below 1e-4).
    shape = (1, 4, 4)
    p = SpectralProcess(shape, _u(shape, rng), "optimal")
    x0 = rng.standard_normal(p.dim)
    for t in (0.05, 1.5):
        m_err, c_err = _moment_check(p, x0, t, 40000, seed=int(t * 100))
        assert m_err < 5 and c_err < 5, (t, m_err, c_err)


def test_sample_per_row_times_and_dtypes(rng):
    shape = (2, 2, 4)
    p = SpectralProcess(shape, _u(shape, rng), "optimal", groups=4)
    x0 = torch.from_numpy(rng.standard_normal((6, p.dim)))
    t = np.array([0.0, 0.3, 0.3, 2.0, 0.0, 2.0])
    out = p.sample(x0, torch.from_numpy(t), torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64 and out.shape == x0.shape
    np.testing.assert_allclose(out[[0, 4]].numpy(), x0[[0, 4]].numpy(), atol=1e-12)  # t = 0
    # Same generator state: the rows equal M_t x0 + L_t z with the shared z.
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    M, S = p.mean_and_cov_blocks(t)
    L = np.linalg.cholesky(S[[1, 2, 3, 5]])
    y = p.basis.forward(x0).numpy()[[1, 2, 3, 5]]
    zb = z.numpy()[[1, 2, 3, 5]].reshape(4, -1, 4)
    ref = np.einsum("bmij,bmj->bmi", M[[1, 2, 3, 5]], y) + np.einsum("bmij,bmj->bmi", L, zb)
    ref = p.basis.inverse(torch.from_numpy(ref)).numpy()
    assert np.abs(out.numpy()[[1, 2, 3, 5]] - ref).max() < 1e-12
    out32 = p.sample(x0.float(), 0.5)
    assert out32.dtype == torch.float32
    with pytest.raises(ValueError, match="one time per row"):
        p.sample(x0, np.ones(3))
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 16\)"):
        p.sample(torch.zeros(2, 15), 1.0)


def test_grouped_basis_round_trips_and_dense(rng):
    p = SpectralProcess((3, 4, 4), _u((3, 4, 4), rng), "optimal", groups=4, colour="opponent")
    gb = p.basis
    assert gb.blocks == (12, 4) and gb.dim == 48
    x = rng.standard_normal((2, 5, 48))
    y = gb.forward_np(x)
    assert y.shape == (2, 5, 12, 4)
    assert np.abs(gb.inverse_np(y) - x).max() < 1e-12
    yt = gb.forward(torch.from_numpy(x[0]))
    assert np.abs(yt.numpy() - y[0]).max() < 1e-12
    assert np.abs(gb.inverse(yt).numpy() - x[0]).max() < 1e-12
    D = p.to_pixels(np.stack([p.drift_blocks, p.current_blocks]))
    np.testing.assert_allclose(D[0], p.dense().A, atol=1e-12 * np.abs(D[0]).max())
    np.testing.assert_allclose(D[1], p.dense().Q, atol=1e-12 * np.abs(D[1]).max())


# ----------------------------------------------------------------------------- block interface
@pytest.mark.parametrize("grid", [np.linspace(0.0, 2.0, 9), np.array([0.0, 1e-4, 0.01, 0.3, 5.0])])
def test_kernel_blocks_and_gddim_factor_equal_the_dense_ones(grid, rng):
    shape = (1, 8, 8)
    p = SpectralProcess(shape, _u(shape, rng), "optimal")
    D = p.dense()
    M, S, L, sM, sS = p.kernel_blocks(grid)
    n = grid.size
    assert M.shape == L.shape == (n, 32, 2, 2) and sM.shape == sS.shape == (n - 1, 32, 2, 2)
    Md, Sd = D.mean_and_cov(grid)
    assert _close(p.to_pixels(M), Md)[0] and _close(p.to_pixels(S)[1:], Sd[1:])[0]
    big = np.abs(S).max()
    np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), S, rtol=0, atol=1e-14 * big)
    # the gap kernels step the grid: M_{i+1} = step_M M_i, Sigma_{i+1} = ... + step_Sigma
    np.testing.assert_allclose(sM @ M[:-1], M[1:], rtol=0, atol=1e-12 * np.abs(M).max())
    np.testing.assert_allclose(
        sM @ S[:-1] @ np.swapaxes(sM, -1, -2) + sS, S[1:], rtol=0, atol=1e-12 * big
    )


def test_gddim_blocks_equal_the_dense_factor(rng):
    # The gDDIM factor is basis-independent (its ODE is covariant): V^T R_blocks V.
    shape = (1, 4, 8)
    p = SpectralProcess(shape, _u(shape, rng), "optimal", groups=4)
    grid = np.array([0.0, 1e-4, 0.01, 0.3, 5.0])
    R = p.gddim_blocks(grid)
    Rd = p.dense().gddim_factor(grid)
    assert np.abs(p.to_pixels(R) - Rd).max() < 1e-8
    assert np.abs(R[0]).max() == 0.0
    S = p.mean_and_cov_blocks(grid)[1]
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), S, rtol=0, atol=1e-13 * S.max())


def test_block_interface_conversions_and_operators(rng):
    shape = (3, 4, 4)
    p = SpectralProcess(shape, _u(shape, rng), "optimal", groups=4, colour="opponent")
    D = p.dense()
    np.testing.assert_allclose(p.to_pixels(p.precision_blocks), D.U, atol=1e-12 * D.U.max())
    np.testing.assert_allclose(
        p.to_pixels(p.stationary_cov_blocks), D.stationary_cov, atol=1e-12 * D.stationary_cov.max()
    )
    A_back = p.to_blocks("A", D.A)
    np.testing.assert_allclose(A_back, p.drift_blocks, atol=1e-12 * np.abs(D.A).max())
    with pytest.raises(ValueError, match="cov is not block-diagonal"):
        p.to_blocks("cov", np.eye(p.dim) + np.diag(np.ones(p.dim - 1), 1))
    with pytest.raises(ValueError, match=r"cov must be a \(48, 48\)"):
        p.to_blocks("cov", np.eye(5))
    v = rng.standard_normal((4, p.dim))
    vb = p.vector_to_blocks(v)
    assert vb.shape == (4, 12, 4)
    np.testing.assert_allclose(p.vector_from_blocks(vb), v, atol=1e-12)
    M = p.mean_and_cov_blocks([0.2, 1.0])[0]
    ops = p.operators(M, dtype=torch.float64)
    x = torch.from_numpy(rng.standard_normal((5, p.dim)))
    Mp = p.to_pixels(M)
    assert np.abs(ops.apply(1, x).numpy() - x.numpy() @ Mp[1].T).max() < 1e-12
    assert np.abs(ops.apply_t(0, x).numpy() - x.numpy() @ Mp[0]).max() < 1e-12
    assert SpectralProcess(shape, p.u, groups=4).rotation_rate_bound() == 0.0  # diagonal
    assert p.rotation_rate_bound() > 0.0


@pytest.mark.parametrize("method", ["gddim", "dpmpp_2m", "ancestral"])
def test_sampler_output_law_equals_the_dense_one(method, rng):
    # The exact output law of a sampler run (nonrev.samplers.gaussian_error) for data
    # whose covariance is diagonal in the DCT basis: the spectral process and its dense
    # twin give the same law to 1e-10. (ddim is left out: it uses the Cholesky factor
    # of Sigma_t, which depends on the basis it is taken in.)
    from nonrev.samplers import gaussian_error

    shape = (1, 4, 4)
    p = SpectralProcess(shape, _u(shape, rng, -2, 1), "optimal")
    V = p.dct.matrix()
    C = (V.T * np.exp(rng.uniform(-2, 1, p.dim))) @ V
    mean = V.T @ rng.standard_normal(p.dim)
    a = gaussian_error(p, mean, C, method=method, steps=8)
    b = gaussian_error(p.dense(), mean, C, method=method, steps=8)
    assert np.abs(a["cov"] - b["cov"]).max() < 1e-10 * np.abs(b["cov"]).max()
    assert np.abs(a["mean"] - b["mean"]).max() < 1e-10 * np.abs(b["mean"]).max()
    assert a["w2"] == pytest.approx(b["w2"], rel=1e-9)


def test_patch_benchmark_core_tiny():
    # benchmarks/spectral.py on 200 patches of 8x8: the rates are ordered as the theory
    # says (reversible <= per-group optimum <= dense bound mean(u) = 1), and nonrev's
    # groups are at least as fast as the serpentine ones.
    from benchmarks import spectral as bench

    res = bench.run(n=200, size=8, groups=(2, 4), caps=(None, 100.0))
    assert len(res["rows"]) == 4
    for r in res["rows"]:
        assert r["reversible"] < r["optimal"] <= r["bound"] * (1 + 1e-12)
        assert r["optimal"] >= r["serpentine"] * (1 - 1e-12)
        assert r["bound"] == pytest.approx(1.0, rel=1e-12)
    assert "| 100 | 4 |" in bench.table(res)


def test_arrays_round_trip_through_safetensors(tmp_path, rng):
    from safetensors.numpy import load_file, save_file

    shape = (3, 4, 4)
    p = SpectralProcess(shape, _u(shape, rng), "gamma:0.5", groups=4, colour="opponent")
    save_file(p.to_arrays(), tmp_path / "process.safetensors")
    q = SpectralProcess.from_arrays(load_file(tmp_path / "process.safetensors"), shape=shape)
    for a, b in zip(
        (p.u, p.groups, p.drift_blocks, p.dct.colour), (q.u, q.groups, q.drift_blocks, q.dct.colour)
    ):
        np.testing.assert_array_equal(a, b)
    x = torch.from_numpy(rng.standard_normal((2, p.dim)))
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    np.testing.assert_array_equal(p.sample(x, 0.4, gen()).numpy(), q.sample(x, 0.4, gen()).numpy())
    r = SpectralProcess.from_arrays(SpectralProcess(shape, p.u).to_arrays())
    assert r.dct.colour is None and r.is_reversible
    with pytest.raises(
        ValueError,
        match=r"ckpt: written for images of shape \(3, 4, 4\), "
        r"not \(1, 8, 8\)",
    ):
        SpectralProcess.from_arrays(p.to_arrays(), shape=(1, 8, 8), source="ckpt")
    with pytest.raises(ValueError, match="ckpt: not a spectral process .missing groups"):
        SpectralProcess.from_arrays(
            {"shape": np.array([3, 4, 4]), "u": p.u, "current": p.current_blocks}, source="ckpt"
        )
    bad = p.to_arrays()
    bad["groups"] = bad["groups"][::-1] % 47
    with pytest.raises(ValueError, match="ckpt: groups must partition"):
        SpectralProcess.from_arrays(bad, source="ckpt")


def test_reversible_kernel_closed_form_equals_the_exact_pairs(rng):
    """Without a current the blocks are diagonal and the kernel is closed-form
    (M = e^{-ut}, Sigma = (1 - e^{-2ut}) / u via expm1): equal to the general exact
    pair of each drift block to 1e-10 relative from t = 1e-8 to 1e3 (the general
    path's squarings lose ~eps u t: 1.7e-11 at u t ~ 1e3), and the gDDIM factor (no
    rotation) equal to the Magnus frame's to 1e-9."""
    from nonrev.process.ou import _exact_pairs

    u = np.exp(rng.uniform(-3, 3, size=(1, 8, 8)))
    sp = SpectralProcess((1, 8, 8), u)
    times = np.geomspace(1e-8, 1e3, 23)
    M, S = sp.mean_and_cov_blocks(times)
    M0, S0 = _exact_pairs(sp.drift_blocks, times)
    np.testing.assert_allclose(M, M0, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(S, S0, rtol=1e-10, atol=1e-300)
    grid = np.geomspace(1e-3, 20.0, 9)
    R = sp.gddim_blocks(grid)
    S_grid = sp.mean_and_cov_blocks(grid)[1]
    R_frame = np.linalg.cholesky(S_grid) @ sp.frame().rotations(grid)
    np.testing.assert_allclose(R, R_frame, rtol=1e-9, atol=1e-12)
