"""Structured OU processes in a frequency basis, for images (THEORY.md section 6).

For images of shape ``(C, H, W)``, ``d = C H W``, take ``V`` the orthonormal 2-D DCT-II
of each channel, optionally followed by a fixed orthogonal ``C x C`` colour transform
(:class:`DCTBasis`), and

    U = V^T diag(u) V,   Q = V^T B V,   A = (I + Q) U = V^T (I + B) diag(u) V,

with ``B`` antisymmetric and block-diagonal over a partition of the ``d`` frequencies
into ``m`` groups of ``g`` (:func:`pair_groups`, :func:`balanced_groups`). Every kernel
matrix (``M_t``, ``Sigma_t`` and their factors) is then ``V^T (block-diagonal) V``:
stored as ``(m, g, g)`` blocks (``O(d g)``) and applied in ``O(d log d + d g)``
(the DCT through ``torch.fft``). :class:`SpectralProcess` is that process;
:meth:`SpectralProcess.dense` materialises the equivalent :class:`OUProcess` for
small shapes, which is what the tests compare against.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nonrev.linalg import as_count

#: Largest ``d`` that :meth:`DCTBasis.matrix` and :meth:`SpectralProcess.dense` build
#: (a dense ``d x d`` float64 matrix is 128 MiB at this size).
DENSE_LIMIT = 4096

#: Tolerance of the orthogonality check of a colour transform (largest entry of
#: ``K K^T - I``).
ORTHOGONAL_TOL = 1e-10

#: The orthonormal opponent colour transform for RGB (luminance, red-blue, green-magenta):
#: rows ``(1, 1, 1)/sqrt(3)``, ``(1, 0, -1)/sqrt(2)``, ``(1, -2, 1)/sqrt(6)``.
OPPONENT = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]]) / np.sqrt(
    [[3.0], [2.0], [6.0]])


def as_image_shape(name: str, shape) -> tuple[int, int, int]:
    """``(C, H, W)`` as three positive ints, or ValueError naming ``name``."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a (C, H, W) tuple of positive integers, "
                         f"got {shape!r}") from None
    if len(dims) != 3:
        raise ValueError(f"{name} must be a (C, H, W) tuple of positive integers, got {shape!r}")
    try:
        return tuple(as_count(name, s) for s in dims)  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"{name} must be a (C, H, W) tuple of positive integers, "
                         f"got {shape!r}") from None


def _as_colour(colour, channels: int) -> np.ndarray | None:
    """The colour transform as a (C, C) orthogonal float64 matrix (None: identity)."""
    if colour is None:
        return None
    if isinstance(colour, str):
        if colour != "opponent":
            raise ValueError(f"colour must be None, 'opponent' or an orthogonal (C, C) "
                             f"matrix, got {colour!r}")
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
        raise ValueError(f"colour must be orthogonal: max |K K^T - I| = {err:.3g} exceeds "
                         f"{ORTHOGONAL_TOL:g}")
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
            raise ValueError(f"{name} must have shape (B, {self.dim}) for images of shape "
                             f"{self.shape}, got {tuple(x.shape)}")
        return x

    def _mix(self, y: torch.Tensor, transpose: bool) -> torch.Tensor:
        if self.colour is None:
            return y
        K = torch.as_tensor(self.colour.T if transpose else self.colour,
                            dtype=y.dtype, device=y.device)
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
                raise ValueError(f"y must have shape (B, {idx.shape[0]}, {idx.shape[1]}) "
                                 f"for these groups, got {tuple(y.shape)}")
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
            raise ValueError(f"the dense basis is built only for d <= {DENSE_LIMIT}; "
                             f"shape {self.shape} has d = {self.dim}")
        return self.forward_numpy(np.eye(self.dim)).T.copy()
