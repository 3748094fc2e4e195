"""Structured OU processes in a frequency basis, for images (THEORY.md section 6).

For images of shape ``(C, H, W)``, ``d = C H W``, take ``V`` the orthonormal 2-D DCT-II
of each channel, optionally followed by a fixed orthogonal ``C x C`` colour transform
(:class:`DCTBasis`), and

    U = V^T diag(u) V,   Q = V^T B V,   A = (I + Q) U = V^T (I + B) diag(u) V,

with ``B`` antisymmetric and block-diagonal over a partition of the ``d`` frequencies
into ``m`` groups of ``g`` (:func:`pair_groups`, :func:`balanced_groups`). Every kernel
matrix (``M_t``, ``Sigma_t`` and their factors) is then ``V^T (block-diagonal) V``:
stored as ``(m, g, g)`` blocks (``O(d g)``) and applied in ``O(d log d + d g)``
(the DCT through ``torch.fft``). :class:`SpectralProcess` is that process; it offers
the block interface of :class:`~nonrev.process.ou.OUProcess` (``basis``,
``pair_blocks``, ``kernel_blocks``, ``gddim_blocks``, ``operators``, ...) in the
coordinates of :class:`GroupedBasis`, with every block computed by the same exact
helpers as the dense kernel (:func:`nonrev.process.ou._exact_pairs`,
:class:`nonrev.process.ou.Frame`). :meth:`SpectralProcess.dense` materialises the
equivalent :class:`OUProcess` for small shapes, which is what the tests compare against.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nonrev.linalg import as_count
from nonrev.operators import Basis, OperatorStack, stack

#: Largest ``d`` that :meth:`DCTBasis.matrix` and :meth:`SpectralProcess.dense` build
#: (a dense ``d x d`` float64 matrix is 128 MiB at this size).
DENSE_LIMIT = 4096

#: Tolerance of the orthogonality check of a colour transform (largest entry of
#: ``K K^T - I``).
ORTHOGONAL_TOL = 1e-10

#: The orthonormal opponent colour transform for RGB (luminance, red-blue, green-magenta):
#: rows ``(1, 1, 1)/sqrt(3)``, ``(1, 0, -1)/sqrt(2)``, ``(1, -2, 1)/sqrt(6)``.
OPPONENT = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]]) / np.sqrt(
    [[3.0], [2.0], [6.0]]
)


def as_image_shape(name: str, shape) -> tuple[int, int, int]:
    """``(C, H, W)`` as three positive ints, or ValueError naming ``name``."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(
            f"{name} must be a (C, H, W) tuple of positive integers, got {shape!r}"
        ) from None
    if len(dims) != 3:
        raise ValueError(f"{name} must be a (C, H, W) tuple of positive integers, got {shape!r}")
    try:
        return tuple(as_count(name, s) for s in dims)  # type: ignore[return-value]
    except ValueError:
        raise ValueError(
            f"{name} must be a (C, H, W) tuple of positive integers, got {shape!r}"
        ) from None


def _as_colour(colour, channels: int) -> np.ndarray | None:
    """The colour transform as a (C, C) orthogonal float64 matrix (None: identity)."""
    if colour is None:
        return None
    if isinstance(colour, str):
        if colour != "opponent":
            raise ValueError(
                f"colour must be None, 'opponent' or an orthogonal (C, C) matrix, got {colour!r}"
            )
        if channels != 3:
            raise ValueError(f"colour='opponent' needs C = 3 channels, got C = {channels}")
        return OPPONENT.copy()
    try:
        K = np.array(colour, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"colour must be a numeric (C, C) matrix ({exc})") from None
    if K.shape != (channels, channels):
        raise ValueError(f"colour must have shape ({channels}, {channels}), got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("colour contains NaN or inf")
    err = float(np.abs(K @ K.T - np.eye(channels)).max())
    if err > ORTHOGONAL_TOL:
        raise ValueError(
            f"colour must be orthogonal: max |K K^T - I| = {err:.3g} exceeds {ORTHOGONAL_TOL:g}"
        )
    return K


# ----------------------------------------------------------------------------- DCT by FFT
def _dct_factors(n: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(twiddle, scale)`` of the length-``n`` orthonormal DCT-II by one FFT (Makhoul):
    ``exp(-i pi k / (2n))`` and the orthonormal scale ``sqrt(1/(4n))`` (k = 0),
    ``sqrt(1/(2n))`` (k > 0), computed in float64 and cast."""
    k = torch.arange(n, dtype=torch.float64)
    twiddle = torch.polar(torch.ones(n, dtype=torch.float64), -math.pi * k / (2 * n))
    scale = torch.full((n,), math.sqrt(1.0 / (2 * n)), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / (4 * n))
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return twiddle.to(device=device, dtype=cdtype), scale.to(device=device, dtype=dtype)


def _dct_last(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis (``scipy.fft.dct(x, norm='ortho')``).

    With ``v = (x_0, x_2, x_4, ..., x_5, x_3, x_1)`` and ``V = FFT(v)``,
    ``X_k = 2 Re(exp(-i pi k / (2n)) V_k)`` (Makhoul 1980), then the orthonormal scale."""
    n = x.shape[-1]
    if n == 1:
        return x.clone()
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)
    twiddle, scale = _dct_factors(n, x.dtype, x.device)
    return 2.0 * (torch.fft.fft(v, dim=-1) * twiddle).real * scale


def _idct_last(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dct_last` (the orthonormal DCT-III) along the last axis.

    From ``X_k = 2 Re(z_k)``, ``X_{n-k} = -2 Im(z_k)`` with ``z_k = exp(-i pi k/(2n)) V_k``
    (``V`` the FFT of a real sequence): ``V_k = exp(i pi k/(2n)) (X_k - i X_{n-k}) / 2``
    with ``X_n = 0``; ``v = Re IFFT(V)`` and the even/odd samples are put back."""
    n = y.shape[-1]
    if n == 1:
        return y.clone()
    twiddle, scale = _dct_factors(n, y.dtype, y.device)
    X = y / scale
    X_rev = torch.cat([torch.zeros_like(X[..., :1]), X[..., 1:].flip(-1)], dim=-1)
    V = torch.complex(X, -X_rev) * twiddle.conj() * 0.5
    v = torch.fft.ifft(V, dim=-1).real
    x = torch.empty_like(v)
    half = (n + 1) // 2
    x[..., 0::2] = v[..., :half]
    x[..., 1::2] = v[..., half:].flip(-1)
    return x


class DCTBasis:
    """The orthonormal 2-D DCT-II of each channel of ``(C, H, W)`` images, optionally
    followed by a fixed orthogonal colour transform ``K`` (C x C) across channels.

    ``V = K (x) D_H (x) D_W`` (Kronecker, row-major), so for a flat row ``x`` of
    length ``d = C H W`` (``image.reshape(B, -1)``) the coefficients are ``V x``,
    ordered ``(channel', k_h, k_w)`` row-major, ``channel'`` the colour-transformed
    channel. ``V`` is orthogonal: :meth:`inverse` is ``V^T``.

    Parameters
    ----------
    shape : (C, H, W)
    colour : None, ``"opponent"`` (C = 3: :data:`OPPONENT`) or an orthogonal (C, C)
        array.

    The torch methods (:meth:`forward`, :meth:`inverse`) run on the input's device and
    dtype (float32 or float64) in ``O(d log d)``; the numpy methods are float64
    (``scipy.fft.dctn``).
    """

    def __init__(self, shape, colour=None):
        self.shape = as_image_shape("shape", shape)
        C, H, W = self.shape
        self.dim = C * H * W
        self.colour = _as_colour(colour, C)

    def __repr__(self) -> str:
        return f"DCTBasis(shape={self.shape}, colour={'none' if self.colour is None else 'set'})"

    # ------------------------------------------------------------------ torch
    def _rows(self, name: str, x) -> torch.Tensor:
        if not torch.is_tensor(x):
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        if not torch.is_floating_point(x):
            x = x.double()
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{name} must have shape (B, {self.dim}) for images of shape "
                f"{self.shape}, got {tuple(x.shape)}"
            )
        return x

    def _mix(self, y: torch.Tensor, transpose: bool) -> torch.Tensor:
        if self.colour is None:
            return y
        K = torch.as_tensor(
            self.colour.T if transpose else self.colour, dtype=y.dtype, device=y.device
        )
        return torch.einsum("ij,bjhw->bihw", K, y)

    def forward(self, x, groups=None) -> torch.Tensor:
        """Coefficients ``V x`` of the rows ``x`` (B, d): (B, d) in frequency order, or
        (B, m, g) gathered by ``groups`` (an (m, g) index array into ``0..d-1``)."""
        x = self._rows("x", x)
        B = x.shape[0]
        y = x.reshape(B, *self.shape)
        y = _dct_last(_dct_last(y).transpose(-1, -2)).transpose(-1, -2)
        y = self._mix(y, transpose=False).reshape(B, self.dim)
        if groups is None:
            return y
        idx = torch.as_tensor(np.asarray(groups), device=y.device)
        return y[:, idx]

    def inverse(self, y, groups=None) -> torch.Tensor:
        """Rows ``V^T y`` (B, d) from coefficients (B, d) in frequency order, or from
        (B, m, g) arranged by ``groups`` (as returned by :meth:`forward`)."""
        if groups is not None:
            idx = np.asarray(groups)
            if not torch.is_tensor(y):
                y = torch.as_tensor(np.asarray(y, dtype=np.float64))
            if tuple(y.shape[1:]) != idx.shape:
                raise ValueError(
                    f"y must have shape (B, {idx.shape[0]}, {idx.shape[1]}) "
                    f"for these groups, got {tuple(y.shape)}"
                )
            flat = torch.empty((y.shape[0], self.dim), dtype=y.dtype, device=y.device)
            flat[:, torch.as_tensor(idx.reshape(-1), device=y.device)] = y.reshape(y.shape[0], -1)
            y = flat
        y = self._rows("y", y)
        B = y.shape[0]
        z = self._mix(y.reshape(B, *self.shape), transpose=True)
        z = _idct_last(_idct_last(z).transpose(-1, -2)).transpose(-1, -2)
        return z.reshape(B, self.dim)

    # ------------------------------------------------------------------ numpy
    def forward_numpy(self, x) -> np.ndarray:
        """:meth:`forward` in float64 numpy (``scipy.fft.dctn``): (B, d) -> (B, d)."""
        import scipy.fft

        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {x.shape}")
        y = scipy.fft.dctn(x.reshape(-1, *self.shape), axes=(-2, -1), norm="ortho")
        if self.colour is not None:
            y = np.einsum("ij,bjhw->bihw", self.colour, y)
        return y.reshape(-1, self.dim)

    def inverse_numpy(self, y) -> np.ndarray:
        """:meth:`inverse` in float64 numpy (``scipy.fft.idctn``): (B, d) -> (B, d)."""
        import scipy.fft

        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"y must have shape (B, {self.dim}), got {y.shape}")
        z = y.reshape(-1, *self.shape)
        if self.colour is not None:
            z = np.einsum("ji,bjhw->bihw", self.colour, z)
        return scipy.fft.idctn(z, axes=(-2, -1), norm="ortho").reshape(-1, self.dim)

    def matrix(self) -> np.ndarray:
        """The dense orthogonal ``V`` (d, d), float64, for ``d <= DENSE_LIMIT``
        (column ``i`` is the coefficients of the ``i``-th pixel's unit image)."""
        if self.dim > DENSE_LIMIT:
            raise ValueError(
                f"the dense basis is built only for d <= {DENSE_LIMIT}; "
                f"shape {self.shape} has d = {self.dim}"
            )
        return self.forward_numpy(np.eye(self.dim)).T.copy()


# ----------------------------------------------------------------------------- groups
def _as_precisions(name: str, u, size: int | None = None) -> np.ndarray:
    """``u`` as a flat float64 array of finite positive numbers."""
    try:
        arr = np.array(u, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array ({exc})") from None
    arr = arr.reshape(-1)
    if size is not None and arr.size != size:
        raise ValueError(f"{name} must have {size} entries, got {arr.size}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    if not np.all(arr > 0):
        raise ValueError(
            f"{name} must be positive (precisions), got {arr[~(arr > 0)][:3].tolist()}"
        )
    return arr


def _group_size(d: int, g) -> int:
    try:
        g = as_count("groups", g, minimum=2)
    except ValueError as exc:
        raise ValueError(f"{exc} (the group size g)") from None
    if d % g:
        raise ValueError(
            f"groups: d = {d} frequencies cannot be split into groups of "
            f"g = {g} (d is not divisible by g)"
        )
    return g


def pair_groups(u) -> np.ndarray:
    """Pairs of frequencies, (d/2, 2): with ``u`` sorted ascending, the ``i``-th
    smallest with the ``i``-th largest. This maximises the smallest pair mean
    ``min_j (u_a + u_b)/2`` over all pairings (exchange argument: in any pairing, the
    pair that holds the ``i``-th smallest ``u`` can be made no worse by giving it the
    ``i``-th largest), and the smallest pair mean is the slowest rate of the optimal
    current (:class:`SpectralProcess`)."""
    u = _as_precisions("u", u)
    d = u.size
    _group_size(d, 2)
    order = np.argsort(u, kind="stable")
    return np.stack([order[: d // 2], order[::-1][: d // 2]], axis=1)


def balanced_groups(u, g: int, *, max_swaps: int | None = None) -> np.ndarray:
    """A partition of the ``d`` frequencies into ``d/g`` groups of ``g`` that makes the
    smallest group mean of ``u`` large (the slowest rate of the optimal current):
    (d/g, g) indices. ``g = 2`` is :func:`pair_groups` (optimal).

    For ``g > 2`` the problem is balanced number partitioning (NP-hard), so: the
    balanced greedy (largest ``u`` first, each to the group of smallest sum that still
    has room), then a swap search: while some exchange of one frequency of the worst
    group with one of another group raises both above the worst sum, make the best such
    exchange (at most ``max_swaps``, default ``20 d / g``). Each accepted swap raises the
    worst group or removes one group from the tie at the minimum, so the smallest mean
    never decreases. On 4000 grayscale 32x32 patches of scikit-learn's sample photos
    (``python -m benchmarks.spectral``) this reaches a smallest group mean of 0.984 of
    ``mean(u)`` at g = 4, where the serpentine assignment of sorted ``u`` gives 0.900
    (and pairs give 0.750).
    """
    import heapq

    u = _as_precisions("u", u)
    d = u.size
    g = _group_size(d, g)
    if g == 2:
        return pair_groups(u)
    m = d // g
    heap = [(0.0, j) for j in range(m)]
    members: list[list[int]] = [[] for _ in range(m)]
    for i in np.argsort(-u, kind="stable"):
        s, j = heapq.heappop(heap)
        members[j].append(int(i))
        if len(members[j]) < g:
            heapq.heappush(heap, (s + float(u[i]), j))
    G = np.array(members, dtype=np.int64)
    S = u[G].sum(axis=1)
    owner = np.repeat(np.arange(m), g)
    limit = 20 * m if max_swaps is None else int(max_swaps)
    for _ in range(limit):
        j = int(np.argmin(S))
        low = S[j]
        a = u[G[j]]
        b = u[G].reshape(-1)
        gain = np.minimum(
            low - a[:, None] + b[None, :], S[owner][None, :] - b[None, :] + a[:, None]
        )
        gain[:, owner == j] = -np.inf
        p, q = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if not gain[p, q] > low * (1.0 + 1e-12):
            break
        k, r = owner[q], q % g
        G[j, p], G[k, r] = G[k, r], G[j, p]
        S[j], S[k] = u[G[j]].sum(), u[G[k]].sum()
    return G


def as_groups(groups, d: int) -> np.ndarray:
    """Explicit groups as an (m, g) int64 array that partitions ``0..d-1`` exactly
    (``g >= 2``), or ValueError naming ``groups``."""
    try:
        G = np.array(groups)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"groups must be an (m, g) array of indices ({exc})") from None
    if G.ndim != 2 or G.shape[1] < 2 or G.size == 0:
        raise ValueError(
            f"groups must be an (m, g) array of frequency indices with g >= 2, got shape {G.shape}"
        )
    if G.dtype.kind == "f" and np.all(np.isfinite(G)) and np.all(G == np.round(G)):
        G = G.astype(np.int64)
    if G.dtype.kind not in "iu":
        raise ValueError(f"groups must hold integer indices, got dtype {G.dtype}")
    G = G.astype(np.int64)
    if G.size != d:
        raise ValueError(
            f"groups must partition the d = {d} frequencies, got {G.size} indices (shape {G.shape})"
        )
    flat = np.sort(G.reshape(-1))
    if not np.array_equal(flat, np.arange(d)):
        bad = np.setdiff1d(np.arange(d), flat)
        what = (
            f"index {int(bad[0])} is missing"
            if bad.size
            else "an index appears twice or lies outside 0..d-1"
        )
        raise ValueError(f"groups must partition 0..{d - 1} exactly: {what}")
    return G


# ----------------------------------------------------------------------------- currents
#: The free numbers of the closed-form pair current, ``l = (1, 2)`` as in
#: :func:`nonrev.process.currents.optimal_q`'s default: ``q = 3 |a - b| / (2 sqrt(ab))``.
_PAIR_FACTOR = 3.0


def optimal_blocks(u_blocks: np.ndarray) -> np.ndarray:
    """Antisymmetric blocks ``B_j`` (m, g, g) with every eigenvalue of
    ``(I + B_j) diag(u_j)`` of real part ``mean(u_j)``: the per-group optimum.

    ``g = 2``, closed form: for ``diag(a, b)`` and ``B = [[0, q], [-q, 0]]`` the block
    ``[[a, q b], [-q a, b]]`` has trace ``a + b`` and determinant ``ab (1 + q^2)``, so
    both real parts equal ``(a + b)/2`` iff ``q^2 >= (a - b)^2 / (4ab)``; nonrev takes
    ``q = 3 |a - b| / (2 sqrt(ab))``, three times the threshold, which is exactly
    :func:`~nonrev.process.currents.optimal_q` of ``diag(a, b)`` (free numbers 1, 2):
    the eigenvalues stay distinct (at the threshold they coincide in a Jordan block).
    ``g > 2``: :func:`~nonrev.process.currents.optimal_q` of each ``diag(u_j)``."""
    from nonrev.process.currents import optimal_q

    m, g = u_blocks.shape
    if g == 2:
        a, b = u_blocks[:, 0], u_blocks[:, 1]
        q = _PAIR_FACTOR * np.abs(a - b) / (2.0 * np.sqrt(a * b))
        B = np.zeros((m, 2, 2))
        B[:, 0, 1], B[:, 1, 0] = q, -q
        return B
    return np.stack([optimal_q(np.diag(row)) for row in u_blocks])


def _as_blocks(blocks, m: int | None, g: int | None) -> np.ndarray:
    """An explicit current: an (m, g, g) array of antisymmetric blocks."""
    from nonrev.linalg import SYM_TOL

    try:
        B = np.array(blocks, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"current must be 'none', 'optimal', 'gamma:<x>' or an (m, g, g) "
            f"array of antisymmetric blocks ({exc})"
        ) from None
    if B.ndim != 3 or B.shape[1] != B.shape[2] or B.shape[1] < 2:
        raise ValueError(f"current blocks must have shape (m, g, g) with g >= 2, got {B.shape}")
    if (m is not None and B.shape[0] != m) or (g is not None and B.shape[1] != g):
        raise ValueError(
            f"current blocks must have shape ({m}, {g}, {g}) for these groups, got {B.shape}"
        )
    if not np.all(np.isfinite(B)):
        raise ValueError("current blocks contain NaN or inf")
    scale = np.linalg.norm(B)
    err = np.linalg.norm(B + np.swapaxes(B, 1, 2))
    if scale > 0 and err > SYM_TOL * scale:
        raise ValueError(
            f"current blocks must be antisymmetric (B_j^T = -B_j): "
            f"||B + B^T|| / ||B|| = {err / scale:.3g} exceeds {SYM_TOL:g}"
        )
    return 0.5 * (B - np.swapaxes(B, 1, 2))


# ----------------------------------------------------------------------------- the process
def _block_factors(S: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = S`` for a stack (..., g, g) of PSD blocks:
    Cholesky, zero for zero blocks (t = 0), :func:`nonrev.linalg.psd_factor` for any
    block that Cholesky refuses."""
    from nonrev.linalg import psd_factor

    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    flat = S.reshape(-1, *S.shape[-2:])
    out = np.zeros_like(flat)
    live = np.abs(flat).max(axis=(1, 2)) > 0
    out[live] = psd_factor(flat[live])
    return out.reshape(S.shape)


class GroupedBasis(Basis):
    """A :class:`DCTBasis` followed by a grouping of the frequencies: rows (B, d) in
    pixel order to coefficients by group (B, m, g), the coordinates in which the
    spectral kernel is block-diagonal (a :class:`nonrev.operators.Basis`).

    Attributes ``dim`` (d), ``blocks`` ((m, g)), ``groups`` ((m, g) indices),
    ``dct`` (the :class:`DCTBasis`). :meth:`forward` / :meth:`inverse` are torch
    (any device, float32 or float64); :meth:`forward_np` / :meth:`inverse_np` are
    float64 numpy with free leading axes ((..., d) <-> (..., m, g)).
    """

    def __init__(self, dct: DCTBasis, groups: np.ndarray):
        self.dct = dct
        self.groups = np.asarray(groups, dtype=np.int64)
        self.dim = dct.dim
        m, g = (int(s) for s in self.groups.shape)
        self.blocks = (m, g)
        # position of frequency i in the flattened (m * g) grouped order
        self._slot = np.empty(self.dim, dtype=np.int64)
        self._slot[self.groups.reshape(-1)] = np.arange(self.dim)

    def __repr__(self) -> str:
        return f"GroupedBasis({self.dct!r}, blocks={self.blocks})"

    def forward(self, x) -> torch.Tensor:
        """(B, d) rows -> (B, m, g) coefficients by group."""
        return self.dct.forward(x, self.groups)

    def inverse(self, y) -> torch.Tensor:
        """(B, m, g) coefficients by group -> (B, d) rows."""
        if not torch.is_tensor(y):
            y = torch.as_tensor(np.asarray(y, dtype=np.float64))
        if tuple(y.shape[1:]) != self.blocks or y.ndim != 3:
            raise ValueError(
                f"y must have shape (B, {self.blocks[0]}, {self.blocks[1]}), got {tuple(y.shape)}"
            )
        slot = torch.as_tensor(self._slot, device=y.device)
        return self.dct.inverse(y.reshape(y.shape[0], -1)[:, slot])

    def forward_np(self, x) -> np.ndarray:
        """float64 (..., d) -> (..., m, g)."""
        x = np.asarray(x, dtype=np.float64)
        lead = x.shape[:-1]
        y = self.dct.forward_numpy(x.reshape(-1, self.dim))
        return y[:, self.groups].reshape(*lead, *self.blocks)

    def inverse_np(self, y) -> np.ndarray:
        """float64 (..., m, g) -> (..., d)."""
        y = np.asarray(y, dtype=np.float64)
        lead = y.shape[:-2]
        flat = y.reshape(-1, self.dim)[:, self._slot]
        return self.dct.inverse_numpy(flat).reshape(*lead, self.dim)

    def dense_np(self, blocks) -> np.ndarray:
        """``V^T blockdiag(blocks) V`` of a stack (..., m, g, g) as (..., d, d) float64
        (``d <= DENSE_LIMIT``)."""
        blocks = np.asarray(blocks, dtype=np.float64)
        m, g = self.blocks
        if blocks.shape[-3:] != (m, g, g):
            raise ValueError(f"blocks must have shape (..., {m}, {g}, {g}), got {blocks.shape}")
        V = self.dct.matrix()[self.groups.reshape(-1)]  # rows in grouped order
        lead = blocks.shape[:-3]
        flat = blocks.reshape(-1, m, g, g)
        out = np.empty((flat.shape[0], self.dim, self.dim))
        diag = np.zeros((self.dim, self.dim))
        for i, b in enumerate(flat):
            for j in range(m):  # block-diagonal in the grouped order
                diag[j * g : (j + 1) * g, j * g : (j + 1) * g] = b[j]
            out[i] = V.T @ diag @ V
        return out.reshape(*lead, self.dim, self.dim)


class SpectralProcess:
    """The OU process ``dx = -(I + Q) U x dt + sqrt(2) dW`` with
    ``U = V^T diag(u) V`` and ``Q = V^T B V``, ``V`` a :class:`DCTBasis` and ``B``
    antisymmetric, block-diagonal over groups of ``g`` frequencies.

    Parameters
    ----------
    shape : (C, H, W)
        Image shape; rows are flat images of length ``d = C H W`` (``reshape(B, -1)``).
    u : (C, H, W) array
        The precision of each DCT coefficient (finite, > 0), in the order of
        :meth:`DCTBasis.forward` (``(channel', k_h, k_w)``, ``channel'`` after the
        colour transform).
    current : ``"none"``, ``"optimal"``, ``"gamma:<x>"`` or an (m, g, g) array
        ``"optimal"``: per group, the current with every eigenvalue of the group's
        drift block at real part ``mean(u over the group)`` (:func:`optimal_blocks`);
        ``"gamma:<x>"``: ``x`` times it; an array: the antisymmetric blocks ``B_j``
        themselves, in the order of ``groups``.
    groups : None, an int ``g >= 2`` or an (m, g) index array
        The partition of the frequencies. None: pairs (:func:`pair_groups`, or the
        ``g`` of an explicit ``current``); an int: :func:`balanced_groups` of ``u``
        with groups of ``g``; an array: these groups (validated to partition
        ``0..d-1``).
    colour : None, ``"opponent"`` or an orthogonal (C, C) array (:class:`DCTBasis`).

    Attributes: ``shape``, ``dim``, ``dct`` (:class:`DCTBasis`), ``basis``
    (:class:`GroupedBasis`: rows to (B, m, g)), ``u`` (C, H, W), ``groups`` (m, g),
    ``u_blocks`` (m, g), ``current_blocks`` (m, g, g) = ``B_j``, ``drift_blocks``
    (m, g, g) = ``(I + B_j) diag(u_j)``, ``current`` (the name of the current), all
    float64 numpy.
    """

    def __init__(self, shape, u, current="none", groups=None, colour=None):
        self.dct = DCTBasis(shape, colour)
        self.shape = self.dct.shape
        self.dim = d = self.dct.dim
        try:
            arr = np.array(u, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"u must be a numeric (C, H, W) array ({exc})") from None
        if arr.shape != self.shape:
            raise ValueError(
                f"u must have shape {self.shape} (one precision per DCT "
                f"coefficient), got {arr.shape}"
            )
        flat = _as_precisions("u", arr)
        self.u = flat.reshape(self.shape)
        explicit = not isinstance(current, str)
        blocks = _as_blocks(current, None, None) if explicit else None
        if groups is None:
            g = blocks.shape[1] if explicit else 2
            self.groups = balanced_groups(flat, _group_size(d, g))
        elif np.ndim(groups) == 0:
            self.groups = balanced_groups(flat, _group_size(d, groups))
        else:
            self.groups = as_groups(groups, d)
        m, g = self.groups.shape
        self.u_blocks = flat[self.groups]
        if explicit:
            self.current_blocks = _as_blocks(blocks, m, g)
            self.current = "blocks"
        elif current == "none":
            self.current_blocks = np.zeros((m, g, g))
            self.current = "none"
        elif current == "optimal":
            self.current_blocks = optimal_blocks(self.u_blocks)
            self.current = "optimal"
        else:
            from nonrev.process.spec import gamma_of

            try:
                gamma = gamma_of(current)
            except ValueError as exc:
                raise ValueError(f"current: {exc}") from None
            if gamma is None:
                raise ValueError(
                    f"current must be 'none', 'optimal', 'gamma:<x>' or an "
                    f"(m, g, g) array of antisymmetric blocks, got {current!r}"
                )
            self.current_blocks = gamma * optimal_blocks(self.u_blocks)
            self.current = f"gamma={gamma:g}"
        eye = np.eye(g)
        self.drift_blocks = (eye + self.current_blocks) * self.u_blocks[:, None, :]
        self.basis = GroupedBasis(self.dct, self.groups)

    @classmethod
    def from_data(
        cls, images, k=None, current="none", groups=None, colour=None, *, chunk: int = 1024
    ) -> "SpectralProcess":
        """The process whose ``u`` is the inverse variance of each DCT coefficient over
        ``images`` (n, C, H, W) (1/n, mean removed; the ``data:<k>`` recipe of
        :func:`nonrev.data.u_from_data` in the frequency basis): with ``k`` the
        condition number of ``u`` is capped at ``k`` by raising the smallest precisions
        to ``max(u) / k``; then ``u`` is scaled to ``mean(u) = Tr(U)/d = 1``.
        ``current``, ``groups``, ``colour``: as in the constructor."""
        X = images.detach().cpu().numpy() if torch.is_tensor(images) else images
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"images must be a numeric (n, C, H, W) array ({exc})") from None
        if X.ndim != 4:
            raise ValueError(f"images must have shape (n, C, H, W), got {X.shape}")
        if X.shape[0] < 2:
            raise ValueError(f"images must hold at least 2 images, got {X.shape[0]}")
        if not np.all(np.isfinite(X)):
            raise ValueError("images contain NaN or inf")
        kappa = None
        if k is not None:
            try:
                kappa = float(k)
            except (TypeError, ValueError):
                kappa = math.nan
            if not (math.isfinite(kappa) and kappa >= 1.0):
                raise ValueError(f"k must be a number >= 1 (the condition cap), got {k!r}")
        chunk = as_count("chunk", chunk)
        n = X.shape[0]
        basis = DCTBasis(X.shape[1:], colour)
        # Chan et al.'s pairwise update of (count, mean, sum of squared deviations).
        count, mean, m2 = 0, np.zeros(basis.dim), np.zeros(basis.dim)
        for lo in range(0, n, chunk):
            c = basis.forward_numpy(X[lo : lo + chunk].reshape(-1, basis.dim))
            nb, mb = c.shape[0], c.mean(axis=0)
            delta = mb - mean
            m2 += ((c - mb) ** 2).sum(axis=0) + delta**2 * count * nb / (count + nb)
            mean += delta * nb / (count + nb)
            count += nb
        var = m2 / n
        # A standard deviation below 1e-12 of the largest is rounding noise (constant
        # images still give DCT coefficients of ~1e-16): numerically zero variance.
        if var.max() <= 0 or not np.all(var > 1e-24 * var.max()):
            bad = np.unravel_index(int(np.argmin(var)), basis.shape)
            raise ValueError(
                f"images: the DCT coefficient {tuple(int(i) for i in bad)} has "
                "zero variance (numerically), so its precision is infinite"
            )
        u = 1.0 / var
        if kappa is not None:
            u = np.maximum(u, u.max() / kappa)
        u = u / u.mean()
        return cls(
            basis.shape, u.reshape(basis.shape), current=current, groups=groups, colour=basis.colour
        )

    # ------------------------------------------------------------------ save / load
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything that defines the process as plain arrays (for safetensors or
        ``numpy.savez``): ``shape`` (3,) int64, ``u`` (C, H, W), ``groups`` (m, g) int64,
        ``current`` (m, g, g) the blocks ``B_j``, and ``colour`` (C, C) when set.
        :meth:`from_arrays` restores the same process exactly (its ``current`` name
        then reads ``"blocks"``: the blocks are stored, not the recipe)."""
        out = {
            "shape": np.asarray(self.shape, dtype=np.int64),
            "u": self.u.copy(),
            "groups": self.groups.copy(),
            "current": self.current_blocks.copy(),
        }
        if self.dct.colour is not None:
            out["colour"] = self.dct.colour.copy()
        return out

    @classmethod
    def from_arrays(cls, arrays, *, shape=None, source: str = "arrays") -> "SpectralProcess":
        """The process of :meth:`to_arrays`. ``shape``: the (C, H, W) the caller
        expects; a process written for another shape is refused (ValueError naming
        ``source``, e.g. the file it was read from), as are missing or invalid arrays."""
        missing = [k for k in ("shape", "u", "groups", "current") if k not in arrays]
        if missing:
            raise ValueError(f"{source}: not a spectral process (missing {', '.join(missing)})")
        stored = tuple(int(s) for s in np.asarray(arrays["shape"]).reshape(-1))
        if shape is not None:
            want = as_image_shape("shape", shape)
            if stored != want:
                raise ValueError(f"{source}: written for images of shape {stored}, not {want}")
        try:
            proc = cls(
                stored,
                np.asarray(arrays["u"]),
                np.asarray(arrays["current"]),
                groups=np.asarray(arrays["groups"]),
                colour=arrays.get("colour"),
            )
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return proc

    def __repr__(self) -> str:
        m, g = self.groups.shape
        return (
            f"SpectralProcess(shape={self.shape}, groups={m}x{g}, current={self.current}, "
            f"relaxation_rate={self.relaxation_rate():.4g})"
        )

    @property
    def is_reversible(self) -> bool:
        """True when ``B = 0`` (detailed balance holds)."""
        return not np.any(self.current_blocks)

    @property
    def stationary_var(self) -> np.ndarray:
        """``1 / u`` (C, H, W): the stationary variance of each DCT coefficient
        (the stationary law is ``N(0, U^{-1})``, diagonal in the basis, any current)."""
        return 1.0 / self.u

    # ------------------------------------------------------------------ rates
    def relaxation_rate(self) -> float:
        """Slowest decay rate of the mean, ``min Re spec(A)``: the minimum over the
        drift blocks (``min(u)`` when reversible, ``min_j mean(u_j)`` with the optimal
        current, at most ``mean(u) = Tr(U)/d``)."""
        return float(np.linalg.eigvals(self.drift_blocks).real.min())

    def contraction_rate(self) -> float:
        """``Tr A = Tr U = sum(u)``, any current."""
        return float(self.u.sum())

    # ------------------------------------------------------------------ dense twin
    def block_matrix(self, blocks) -> np.ndarray:
        """The (d, d) matrix in frequency coordinates whose restriction to group ``j``
        is ``blocks[j]`` and which is zero elsewhere."""
        blocks = np.asarray(blocks, dtype=np.float64)
        m, g = self.groups.shape
        if blocks.shape != (m, g, g):
            raise ValueError(f"blocks must have shape ({m}, {g}, {g}), got {blocks.shape}")
        out = np.zeros((self.dim, self.dim))
        rows = self.groups[:, :, None]
        cols = self.groups[:, None, :]
        out[rows, cols] = blocks
        return out

    def to_pixels(self, blocks) -> np.ndarray:
        """``V^T (block-diagonal) V``: block operators (..., m, g, g) as dense (..., d, d)
        matrices acting on flat images (``d <= DENSE_LIMIT``)."""
        return self.basis.dense_np(blocks)

    def dense(self):
        """The equivalent :class:`~nonrev.process.ou.OUProcess` ``(U, Q)`` with
        ``U = V^T diag(u) V`` and ``Q = V^T B V`` (``d <= DENSE_LIMIT``)."""
        from nonrev.process.ou import OUProcess

        if self.dim > DENSE_LIMIT:
            raise ValueError(
                f"dense() builds d x d matrices only for d <= {DENSE_LIMIT}; "
                f"shape {self.shape} has d = {self.dim}"
            )
        V = self.dct.matrix()
        U = (V.T * self.u.reshape(-1)) @ V
        Q = V.T @ self.block_matrix(self.current_blocks) @ V
        return OUProcess(0.5 * (U + U.T), 0.5 * (Q - Q.T))

    # ------------------------------------------------------------------ torch side
    def apply(self, blocks, x) -> torch.Tensor:
        """``V^T (block-diagonal) V x`` for rows ``x`` (B, d): ``blocks`` (m, g, g) for
        every row, or (B, m, g, g) one operator per row. ``O(d log d + d g)`` a row."""
        y = self.basis.forward(x)
        Bt = torch.as_tensor(blocks, dtype=y.dtype, device=y.device)
        m, g = self.groups.shape
        if Bt.shape == (m, g, g):
            z = torch.einsum("mij,bmj->bmi", Bt, y)
        elif Bt.shape == (y.shape[0], m, g, g):
            z = torch.einsum("bmij,bmj->bmi", Bt, y)
        else:
            raise ValueError(
                f"blocks must have shape ({m}, {g}, {g}) or "
                f"({y.shape[0]}, {m}, {g}, {g}), got {tuple(Bt.shape)}"
            )
        return self.basis.inverse(z)

    # ------------------------------------------------------------------ kernel in blocks
    # The interface that OUProcess offers the samplers (nonrev.operators): matrices as
    # stacks of blocks (..., m, g, g) in the kernel's basis, here the DCT coefficients
    # by group (self.basis).
    @property
    def precision_blocks(self) -> np.ndarray:
        """``U`` as blocks, (m, g, g): ``diag(u_j)``."""
        return self.u_blocks[:, :, None] * np.eye(self.groups.shape[1])

    @property
    def stationary_cov_blocks(self) -> np.ndarray:
        """``U^{-1}`` as blocks, (m, g, g): ``diag(1 / u_j)``."""
        return (1.0 / self.u_blocks)[:, :, None] * np.eye(self.groups.shape[1])

    def to_blocks(self, name: str, matrix) -> np.ndarray:
        """A (d, d) matrix acting on flat images as blocks (m, g, g): ``V P V^T``
        restricted to the groups. ValueError naming ``name`` when ``P`` is not
        block-diagonal in this basis (an entry outside the blocks above 1e-10 of the
        largest), e.g. a data covariance that mixes frequencies of different groups."""
        P = np.asarray(matrix, dtype=np.float64)
        d = self.dim
        if P.shape != (d, d):
            raise ValueError(f"{name} must be a ({d}, {d}) matrix, got {P.shape}")
        # forward_np maps rows: (P V^T) then (V P^T V^T)^T = V P V^T, grouped order.
        W = self.basis.forward_np(self.basis.forward_np(P).reshape(d, d).T).reshape(d, d).T
        m, g = self.groups.shape
        blocks = W.reshape(m, g, m, g)[np.arange(m), :, np.arange(m), :]
        rest = W.copy()
        for j in range(m):
            rest[j * g : (j + 1) * g, j * g : (j + 1) * g] = 0.0
        scale = max(float(np.abs(W).max()), 1e-300)
        if np.abs(rest).max() > 1e-10 * scale:
            raise ValueError(
                f"{name} is not block-diagonal in the process's basis (groups "
                f"of {g} DCT frequencies): an entry outside the blocks is "
                f"{np.abs(rest).max() / scale:.3g} of the largest"
            )
        return blocks

    def vector_to_blocks(self, v) -> np.ndarray:
        """A vector (..., d) in block coordinates (..., m, g)."""
        return self.basis.forward_np(v)

    def vector_from_blocks(self, vb) -> np.ndarray:
        """Block coordinates (..., m, g) back to a vector (..., d)."""
        return self.basis.inverse_np(vb)

    def operators(self, blocks, *, dtype=torch.float64, device=None) -> OperatorStack:
        """Blocks (n, m, g, g) as a :class:`nonrev.operators.BlockStack` in ``dtype``
        on ``device`` (applied through the DCT: ``O(d log d + d g)`` per row)."""
        return stack(blocks, self.basis, dtype=dtype, device=device)

    # ------------------------------------------------------------------ exact kernel
    def mean_and_cov_blocks(self, t) -> tuple[np.ndarray, np.ndarray]:
        """``(M_t, Sigma_t)`` in blocks, float64: each (m, g, g) for a scalar ``t``,
        (n, m, g, g) for a 1-D array of ``n`` times. In pixel coordinates
        ``M_t = V^T blockdiag(M_t[j]) V`` (:meth:`to_pixels`), the same for
        ``Sigma_t``; every block is the exact kernel of the drift block
        ``(I + B_j) diag(u_j)`` (scaling and squaring on the pair, full relative
        accuracy of ``Sigma_t`` at small ``t``: :func:`nonrev.process.ou._exact_pairs`)."""
        from nonrev.linalg import as_times

        times, scalar = as_times("t", t)
        M, S = self._pairs(times)
        return (M[0], S[0]) if scalar else (M, S)

    def _pairs(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(M_t, Sigma_t)`` blocks (n, m, g, g) at 1-D ``times``. Without a current
        every block is diagonal and the kernel is closed-form, ``M = e^{-u t}`` and
        ``Sigma = (1 - e^{-2 u t}) / u`` (``expm1``: full relative accuracy at small
        ``t``), O(d) per time; with one, the exact pair of each drift block
        (:func:`nonrev.process.ou._exact_pairs`)."""
        if self.is_reversible:
            ut = np.multiply.outer(np.asarray(times, dtype=np.float64), self.u_blocks)
            eye = np.eye(self.groups.shape[1])
            M = np.exp(-ut)[..., None] * eye
            S = (-np.expm1(-2.0 * ut) / self.u_blocks)[..., None] * eye
            return M, S
        from nonrev.process.ou import _exact_pairs

        return _exact_pairs(self.drift_blocks, times)

    def pair_blocks(self, times) -> tuple[np.ndarray, np.ndarray]:
        """``(M_t, Sigma_t)`` at any 1-D ``times``, each (n, m, g, g), exact per time."""
        from nonrev.linalg import as_times

        times, _ = as_times("times", times)
        return self.mean_and_cov_blocks(times)

    def kernel_blocks(self, times):
        """The exact kernel on a strictly increasing grid as float64 blocks
        (n, m, g, g): ``(M, Sigma, L, step_M, step_Sigma)`` with ``L`` the block
        Cholesky factors (zero at t = 0) and the gap kernels (n - 1, m, g, g) as in
        :class:`nonrev.process.ou.Kernel`: ``M_{i+1} = step_M[i] M_i``,
        ``Sigma_{i+1} = step_M[i] Sigma_i step_M[i]^T + step_Sigma[i]``. Every point
        and every gap is computed exactly (vectorised over times and blocks), not by
        the semigroup steps, so no error accumulates along the grid; a uniform grid
        computes its one gap once."""
        from nonrev.linalg import as_times
        from nonrev.process.ou import OUProcess

        grid, _ = as_times("times", times)
        if grid.size >= 2 and not np.all(np.diff(grid) > 0):
            raise ValueError("times must be strictly increasing")
        M, S = self._pairs(grid)
        L = _block_factors(S)
        gaps = np.diff(grid)
        if OUProcess._is_uniform(grid):
            sM, sS = self._pairs(gaps[:1])
            sM = np.broadcast_to(sM, (gaps.size, *sM.shape[1:]))
            sS = np.broadcast_to(sS, (gaps.size, *sS.shape[1:]))
        else:
            sM, sS = self._pairs(gaps)
        return M, S, L, sM, sS

    def frame(self, t0: float = 0.0, S0=None):
        """A frame ``R = chol(S) O`` with ``R' = (-A + S^{-1}) R`` in blocks, started at
        ``t0`` with ``O = I`` and covariance ``S0`` (blocks (m, g, g); default
        ``Sigma_0 = 0``: the gDDIM factor); see :class:`nonrev.process.ou.Frame`."""
        from nonrev.process.ou import Frame

        if S0 is not None:
            S0 = np.asarray(S0, dtype=np.float64).reshape(self.drift_blocks.shape)
        return Frame(self.drift_blocks, t0, S0)

    def gddim_blocks(self, times) -> np.ndarray:
        """The gDDIM factor ``R_t = L_t O_t`` (:meth:`OUProcess.gddim_factor
        <nonrev.process.ou.OUProcess.gddim_factor>`) at 1-D ``times`` as blocks
        (n, m, g, g), zero at t = 0. Each block is the gDDIM factor of its drift block
        (the factor's ODE is block-diagonal); one Magnus integration for all blocks,
        its checkpoints kept on the process."""
        from nonrev.linalg import as_times

        grid, _ = as_times("times", times)
        m, g = self.groups.shape
        out = np.zeros((grid.size, m, g, g))
        pos = grid > 0
        if pos.any():
            S = self.mean_and_cov_blocks(grid[pos])[1]
            if self.is_reversible:  # diagonal blocks commute: no rotation, R_t = Sigma_t^{1/2}
                out[pos] = _block_factors(S)
                return out
            if getattr(self, "_rot", None) is None:
                self._rot = self.frame()
            out[pos] = _block_factors(S) @ self._rot.rotations(grid[pos])
        return out

    def prefetch(self, times) -> None:
        """Nothing to keep: a time's kernel blocks cost ``O(d g^2)`` (the dense
        process caches its ``O(d^3)`` pairs here)."""
        return None

    def rotation_rate_bound(self) -> float:
        """``max_t ||Omega_t||_2`` over all blocks: how fast the gDDIM factor rotates
        against the Cholesky factor (sampled at 48 times from 1e-6 to ``30 / rate``, as
        :meth:`OUProcess.rotation_rate_bound <nonrev.process.ou.OUProcess.rotation_rate_bound>`)."""
        from nonrev.process.ou import _rotation_rates

        if getattr(self, "_omega", None) is None:
            probe = np.geomspace(1e-6, 30.0 / max(self.relaxation_rate(), 1e-12), 48)
            W = _rotation_rates(self.drift_blocks, self.mean_and_cov_blocks(probe)[1])
            self._omega = float(np.linalg.norm(W, 2, axis=(-2, -1)).max())
        return self._omega

    def sample(self, x0, t, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``x_t | x_0`` exactly: ``M_t x_0 + L_t z`` through the basis
        (``L_t`` the block Cholesky factor of ``Sigma_t``), as
        :meth:`OUProcess.sample <nonrev.process.ou.OUProcess.sample>`.

        ``x0``: (B, d) tensor (or array; float32 then). ``t``: a scalar, or a (B,)
        tensor/array of per-row times. Returns a tensor on ``x0``'s device and dtype.
        ``z`` is drawn as (B, d) standard normals (from ``generator`` on its device)
        and used as the noise's coefficients (``V z`` has the same law)."""
        from nonrev.process.ou import sample_inputs

        x0, times, scalar, z = sample_inputs(self.dim, x0, t, generator)
        uniq, inverse = np.unique(times, return_inverse=True)
        M, S = self.mean_and_cov_blocks(uniq)
        L = _block_factors(S)
        rows = torch.as_tensor(
            np.zeros(x0.shape[0], dtype=np.int64) if scalar else inverse, device=x0.device
        )
        Mt = torch.as_tensor(M, dtype=x0.dtype, device=x0.device)[rows]
        Lt = torch.as_tensor(L, dtype=x0.dtype, device=x0.device)[rows]
        y = self.basis.forward(x0)
        m, g = self.groups.shape
        zb = z.reshape(x0.shape[0], m, g)
        out = torch.einsum("bmij,bmj->bmi", Mt, y) + torch.einsum("bmij,bmj->bmi", Lt, zb)
        return self.basis.inverse(out)


def spectral_from_spec(
    shape,
    u_spec: str,
    q_spec: str,
    X: np.ndarray,
    *,
    option_u: str = "--u",
    option_q: str = "--q",
    groups=None,
) -> dict:
    """``{name: SpectralProcess}`` for rows of ``X`` seen as images of ``shape``: the
    reversible process (``"none"``) and, unless ``q_spec`` is ``none``, the one with
    the per-group current (``optimal`` or ``gamma:<x>``). ``u_spec``: ``identity``
    (u = 1), ``data`` or ``data:<k>`` (the data's per-frequency DCT precisions, the
    condition capped at ``k``). Dense-only specs (a FILE, ``rate:<x>``) are refused
    naming the option. ``groups``: as in :class:`SpectralProcess` (None: pairs)."""
    from nonrev.process.spec import condition_cap_of, gamma_of

    images = np.asarray(X, dtype=np.float64).reshape(X.shape[0], *shape)
    try:
        cap = condition_cap_of(u_spec)
    except ValueError as exc:
        raise ValueError(f"{option_u}: {exc}") from None
    if u_spec == "identity":

        def make(current):
            return SpectralProcess(shape, np.ones(shape), current=current, groups=groups)
    elif u_spec == "data" or cap is not None:

        def make(current):
            return SpectralProcess.from_data(images, k=cap, current=current, groups=groups)
    else:
        raise ValueError(
            f"{option_u}: with an image shape, U is identity, data or "
            f"data:<k> (diagonal in the DCT basis), got {u_spec!r}"
        )
    try:
        gamma = gamma_of(q_spec)
    except ValueError as exc:
        raise ValueError(f"{option_q}: {exc}") from None
    if q_spec == "none":
        return {"none": make("none")}
    if q_spec == "optimal":
        return {"none": make("none"), "optimal": make("optimal")}
    if gamma is not None:
        return {"none": make("none"), f"gamma={gamma:g}": make(f"gamma:{gamma!r}")}
    raise ValueError(
        f"{option_q}: with an image shape, Q is none, optimal or gamma:<x> "
        f"(per group of frequencies), got {q_spec!r}"
    )
