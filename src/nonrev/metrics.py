"""Distances between sample sets, and nearest neighbours among training points.

Inputs are (n, d) torch tensors or array_likes (numpy arrays keep float64); the
set-to-set distances are computed in float64 and returned as python floats, and are
deterministic for a fixed ``seed``.

* :func:`sliced_wasserstein`: ``SW_p(x, y) = (E_theta W_p^p(theta.x, theta.y))^{1/p}``,
  ``theta`` uniform on the unit sphere (POT's Monte Carlo over projections). Note
  that for ``N(0, I)`` against ``N(m, I)`` in ``d`` dimensions ``SW_2 = |m| / sqrt(d)``
  (``E (theta.m)^2 = |m|^2 / d``), not ``|m|``.
* :func:`mmd_rbf`: the unbiased estimate of ``MMD^2`` with a Gaussian kernel.
* :func:`energy_distance`: ``(2 E|X-Y| - E|X-X'| - E|Y-Y'|)^{1/2}`` between the
  empirical laws (scipy's definition in one dimension).
* :func:`frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussian fits
  of two sets, ``|m_x - m_y|^2 + Tr(C_x + C_y - 2 (C_x^{1/2} C_y C_x^{1/2})^{1/2})``,
  the formula of FID; :func:`frechet_distance_gaussian` takes the moments directly.
* :func:`radial_power_spectrum` and :func:`power_spectrum_error_db`: images'
  radially averaged power spectrum and the mean absolute log-ratio (in dB) of two of
  them, the second-order statistic natural images are known by (power falling as
  about ``1/k^2``).
* :func:`nearest_neighbour_distances`: the k nearest training points of each sample,
  e.g. for the memorised fraction ``d_1 / d_2 < 1/3``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nonrev.linalg import as_batch, as_count

#: Rows x columns of one block of pairwise distances (float64): 2**23 numbers = 64 MiB.
_BLOCK = 2**23


def _as_set(name: str, x, *, min_rows: int = 1, dim: int | None = None) -> torch.Tensor:
    """A finite (n, d) floating tensor, n >= min_rows; numpy float64 stays float64."""
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric (n, d) array ({exc})") from None
    return as_batch(name, x, dim, min_rows=min_rows)


def _pair(x, y, *, min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two sample sets of the same dimension; both as float64 on x's device."""
    x = _as_set("x", x, min_rows=min_rows)
    y = _as_set("y", y, min_rows=min_rows)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    return x.double(), y.to(device=x.device, dtype=torch.float64)


def _block_sum(a: torch.Tensor, b: torch.Tensor, fn) -> float:
    """``sum_{i,j} fn(|a_i - b_j|)`` over row blocks, memory O(block x len(b))."""
    rows = max(1, _BLOCK // max(b.shape[0], 1))
    total = 0.0
    for s in range(0, a.shape[0], rows):
        total += float(fn(torch.cdist(a[s : s + rows], b)).sum())
    return total


# ---------------------------------------------------------------------- set distances
def sliced_wasserstein(x, y, n_projections: int = 200, p: float = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance ``(E_theta W_p^p(theta.x, theta.y))^{1/p}``.

    ``theta`` is drawn uniformly on the unit sphere (``n_projections`` directions from
    ``seed``); the one-dimensional ``W_p`` between the projected empirical laws is exact
    (quantile functions, via ``ot.sliced_wasserstein_distance``), so the only error is
    the Monte Carlo over directions. Sets may have different sizes.
    """
    x, y = _pair(x, y)
    n_projections = as_count("n_projections", n_projections)
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a number >= 1, got {p!r}") from None
    if not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    import ot  # POT pulls in scikit-learn and pandas: imported only where it is used

    dist = ot.sliced_wasserstein_distance(
        x.cpu().numpy(),
        y.cpu().numpy(),
        n_projections=n_projections,
        p=p,
        seed=as_count("seed", seed, minimum=0),
    )
    return float(dist)


# ---------------------------------------------------------------------- images
def _as_images(name: str, images) -> np.ndarray:
    X = images.detach().cpu().double().numpy() if torch.is_tensor(images) else images
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric image array ({exc})") from None
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4 or min(X.shape) < 1:
        raise ValueError(f"{name} must have shape (n, H, W) or (n, C, H, W), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return X


def radial_power_spectrum(images) -> np.ndarray:
    """The radially averaged power spectrum of ``images`` (n, H, W) or (n, C, H, W):
    ``|FFT2(x)|^2`` (orthonormal, so a white image of variance ``s^2`` has power
    ``s^2`` at every frequency) averaged over images, channels and the integer shells
    ``round(|k|) = r`` of the frequency ``k`` in cycles per image, for
    ``r = 1 .. min(H, W) // 2`` (the DC term and the corners past Nyquist left out).
    Returns (min(H, W) // 2,) float64."""
    X = _as_images("images", images)
    H, W = X.shape[-2:]
    if min(H, W) < 2:
        raise ValueError(f"images must be at least 2 x 2 pixels, got {H} x {W}")
    power = np.zeros((H, W))
    for lo in range(0, X.shape[0], 256):  # bounded temporaries
        F = np.fft.fft2(X[lo : lo + 256], norm="ortho")
        power += (F.real**2 + F.imag**2).sum(axis=(0, 1))
    power /= X.shape[0] * X.shape[1]
    ky, kx = np.fft.fftfreq(H) * H, np.fft.fftfreq(W) * W
    shell = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.int64)
    n_r = min(H, W) // 2
    keep = (shell >= 1) & (shell <= n_r)
    total = np.bincount(shell[keep] - 1, weights=power[keep], minlength=n_r)
    count = np.bincount(shell[keep] - 1, minlength=n_r)
    return total / count


def power_spectrum_error_db(x, y) -> float:
    """Mean over the shells of ``|10 log10(P_x(r) / P_y(r))|``: how far, in decibels,
    the radially averaged power spectrum of images ``x`` lies from that of ``y``
    (:func:`radial_power_spectrum`; the same image size). Scaling every image by ``a``
    moves it by ``20 log10 |a|`` dB."""
    px, py = radial_power_spectrum(x), radial_power_spectrum(y)
    if px.shape != py.shape:
        raise ValueError(f"x and y must be images of one size, got spectra of {px.size}, {py.size}")
    if np.any(px <= 0) or np.any(py <= 0):
        raise ValueError("a power spectrum is zero at some frequency (constant images?)")
    return float(np.mean(np.abs(10.0 * np.log10(px / py))))


def median_bandwidth(x, y, *, max_points: int = 2000, seed: int = 0) -> float:
    """Median of the pairwise distances within the pooled set (x, y).

    At most ``max_points`` pooled points are used (a random subset drawn from ``seed``
    when there are more), so the cost stays O(max_points^2 d).
    """
    x, y = _pair(x, y)
    max_points = as_count("max_points", max_points)
    z = torch.cat([x, y])
    if z.shape[0] > max_points:
        g = torch.Generator().manual_seed(as_count("seed", seed, minimum=0))
        z = z[torch.randperm(z.shape[0], generator=g)[:max_points].to(z.device)]
    dist = torch.pdist(z)
    if dist.numel() == 0 or float(dist.max()) == 0.0:
        raise ValueError("x and y must not all be one point (the median distance is 0)")
    return float(dist.median())


def mmd_rbf(x, y, bandwidth: float | None = None, *, seed: int = 0) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy, Gaussian kernel.

    ``k(a, b) = exp(-|a - b|^2 / (2 h^2))`` with ``h = bandwidth`` or, by default, the
    median pairwise distance of the pooled samples (:func:`median_bandwidth`, drawn
    from ``seed`` for large sets). The U-statistic

        MMD^2 = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
                - 2/(n m) sum_{i,j} k(x_i, y_j)

    is unbiased, so it fluctuates around 0 (and can be slightly negative) when x and
    y come from one law. Needs at least two samples in each set.
    """
    x, y = _pair(x, y, min_rows=2)
    if bandwidth is None:
        h = median_bandwidth(x, y, seed=seed)
    else:
        try:
            h = float(bandwidth)
        except (TypeError, ValueError):
            raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}") from None
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth must be a finite positive number, got {bandwidth!r}")
    gamma = 1.0 / (2.0 * h * h)

    def kern(dist):
        return torch.exp(-gamma * dist * dist)

    n, m = x.shape[0], y.shape[0]
    kxx = (_block_sum(x, x, kern) - n) / (n * (n - 1))  # k(x_i, x_i) = 1 on the diagonal
    kyy = (_block_sum(y, y, kern) - m) / (m * (m - 1))
    kxy = _block_sum(x, y, kern) / (n * m)
    return kxx + kyy - 2.0 * kxy


def energy_distance(x, y) -> float:
    """Energy distance ``(2 E|X - Y| - E|X - X'| - E|Y - Y'|)^{1/2}`` of the empirical laws.

    Expectations are plain averages over all pairs (V-statistics, including i = j),
    so the value is >= 0 and is 0 when the two sets are the same multiset; in one
    dimension it equals ``scipy.stats.energy_distance``. Deterministic.
    """
    x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]
    exy = _block_sum(x, y, lambda d: d) / (n * m)
    exx = _block_sum(x, x, lambda d: d) / (n * n)
    eyy = _block_sum(y, y, lambda d: d) / (m * m)
    return math.sqrt(max(2.0 * exy - exx - eyy, 0.0))


# ---------------------------------------------------------------------- nearest neighbours
def nearest_neighbour_distances(x, points, k: int = 2, chunk_size: int | None = None):
    """The ``k`` nearest rows of ``points`` to each row of ``x``, in Euclidean distance.

    Returns ``(dist, idx)``: (B, k) distances in increasing order and their (B, k)
    int64 indices into ``points``, on ``x``'s device, in the common floating dtype of
    ``x`` and ``points``. The points are scanned in chunks of ``chunk_size`` (default:
    a B x chunk block of about 64 MiB) with candidates picked from
    ``|x|^2 - 2 x.a + |a|^2`` (one GEMM per chunk); the final distances are recomputed
    directly as ``|x - a|``, so they stay accurate for near-duplicates (the memorised
    samples, where ``d_1 << d_2``). ``x`` and ``points`` must be on one device.
    """
    devices = [v.device if torch.is_tensor(v) else torch.device("cpu") for v in (x, points)]
    if devices[0] != devices[1]:
        raise ValueError(f"x is on {devices[0]} but points are on {devices[1]}")
    x = _as_set("x", x, min_rows=0)
    points = _as_set("points", points, min_rows=1)
    if x.shape[1] != points.shape[1]:
        raise ValueError(
            f"x and points must have the same dimension, got x {tuple(x.shape)} "
            f"and points {tuple(points.shape)}"
        )
    k = as_count("k", k)
    N = points.shape[0]
    if k > N:
        raise ValueError(f"k must be at most the number of points ({N}), got {k}")
    dtype = torch.promote_types(x.dtype, points.dtype)
    x, points = x.to(dtype), points.to(dtype)
    B = x.shape[0]
    if chunk_size is None:
        chunk_size = int(min(N, max(1, 2**26 // (max(B, 1) * x.element_size()))))
    chunk_size = as_count("chunk_size", chunk_size)

    best_d = torch.full((B, 0), math.inf, dtype=dtype, device=x.device)
    best_i = torch.zeros((B, 0), dtype=torch.int64, device=x.device)
    for s in range(0, N, chunk_size):
        a = points[s : s + chunk_size]
        # Squared distances up to the per-row constant |x|^2, which does not change the order.
        sq = torch.addmm((a * a).sum(1), x, a.T, alpha=-2.0)
        cand_d = torch.cat([best_d, sq], dim=1)
        cand_i = torch.cat(
            [best_i, torch.arange(s, s + a.shape[0], device=x.device).expand(B, -1)], dim=1
        )
        kk = min(k, cand_d.shape[1])
        best_d, pos = torch.topk(cand_d, kk, dim=1, largest=False)
        best_i = torch.gather(cand_i, 1, pos)
    dist = (x.unsqueeze(1) - points[best_i]).norm(dim=-1)  # exact, (B, k)
    dist, order = torch.sort(dist, dim=1)
    return dist, torch.gather(best_i, 1, order)


# ---------------------------------------------------------------------- Frechet distance
def _psd_sqrt(C: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(0.5 * (C + C.T))
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_distance_gaussian(mean_x, cov_x, mean_y, cov_y) -> float:
    """Squared 2-Wasserstein distance between ``N(mean_x, cov_x)`` and ``N(mean_y, cov_y)``:

        |m_x - m_y|^2 + Tr(C_x) + Tr(C_y) - 2 Tr((C_x^{1/2} C_y C_x^{1/2})^{1/2}).

    The inner root is of a symmetric PSD matrix (eigh, negative round-off clipped),
    which is better conditioned than the usual ``sqrtm(C_x C_y)`` of a non-symmetric
    product. Float64; python float, >= 0 up to round-off.
    """
    mx = np.asarray(mean_x, dtype=np.float64).reshape(-1)
    my = np.asarray(mean_y, dtype=np.float64).reshape(-1)
    d = mx.size
    Cx = np.asarray(cov_x, dtype=np.float64)
    Cy = np.asarray(cov_y, dtype=np.float64)
    if my.size != d:
        raise ValueError(f"mean_y must have {d} entries like mean_x, got {my.size}")
    for name, C in (("cov_x", Cx), ("cov_y", Cy)):
        if C.shape != (d, d) or not np.all(np.isfinite(C)):
            raise ValueError(f"{name} must be a finite ({d}, {d}) matrix, got shape {C.shape}")
    if not (np.all(np.isfinite(mx)) and np.all(np.isfinite(my))):
        raise ValueError("mean_x and mean_y must be finite")
    sx = _psd_sqrt(Cx)
    inner = sx @ Cy @ sx
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0.0, None))
    diff = mx - my
    return float(diff @ diff + np.trace(Cx) + np.trace(Cy) - 2.0 * cross.sum())


def frechet_distance(x, y) -> float:
    """Frechet distance between the Gaussian fits (mean, covariance with 1/(n-1)) of
    sample sets ``x`` (n, d) and ``y`` (m, d); each needs at least 2 rows. Computed on
    features of a fixed network this is FID's recipe
    (:mod:`nonrev.experiments.digits_quality` does it for 8x8 digits)."""
    x, y = _pair(x, y, min_rows=2)
    xa, ya = x.cpu().numpy(), y.cpu().numpy()
    return frechet_distance_gaussian(
        xa.mean(0),
        np.cov(xa, rowvar=False).reshape(x.shape[1], -1),
        ya.mean(0),
        np.cov(ya, rowvar=False).reshape(y.shape[1], -1),
    )
