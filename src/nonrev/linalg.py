"""Validation at the library's boundary and the few dense linear-algebra kernels
that the rest of nonrev shares (float64, numpy).

Every public entry point validates its inputs here and raises ``ValueError`` naming
the argument; inner code trusts what it is given.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Relative tolerance for "symmetric" and "antisymmetric": ||X - X^T|| <= tol ||X||.
SYM_TOL = 1e-8


def _real(name: str, X):
    """``X`` as an array, with complex input accepted only when every imaginary
    part is zero (numpy would otherwise drop them with a mere ComplexWarning)."""
    if isinstance(X, np.ndarray) or isinstance(X, (list, tuple, complex)):
        arr = np.asarray(X)
        if np.iscomplexobj(arr):
            if np.any(arr.imag != 0):
                raise ValueError(
                    f"{name} must be real, got complex entries with a non-zero imaginary part"
                )
            return arr.real
    return X


def as_matrix(name: str, X, *, dim: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite, square, real float64 array, or raise ValueError naming it."""
    try:
        arr = np.array(_real(name, X), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        if "must be real" in str(exc):
            raise
        raise ValueError(f"{name} must be a numeric matrix ({exc})") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_symmetric(name: str, X, *, dim: int | None = None, tol: float = SYM_TOL) -> np.ndarray:
    """Finite square symmetric matrix (within ``tol`` relative), returned symmetrised."""
    arr = as_matrix(name, X, dim=dim)
    scale = np.linalg.norm(arr)
    if np.linalg.norm(arr - arr.T) > tol * max(scale, np.finfo(float).tiny):
        raise ValueError(
            f"{name} must be symmetric: ||{name} - {name}^T|| / ||{name}|| = "
            f"{np.linalg.norm(arr - arr.T) / scale:.3g} exceeds {tol:g}"
        )
    return 0.5 * (arr + arr.T)


def as_spd(name: str, X, *, dim: int | None = None, tol: float = SYM_TOL) -> np.ndarray:
    """Finite symmetric positive definite matrix, returned symmetrised."""
    arr = as_symmetric(name, X, dim=dim, tol=tol)
    lam_min = np.diag(arr).min() if is_diagonal(arr) else np.linalg.eigvalsh(arr)[0]
    if not lam_min > 0:
        raise ValueError(
            f"{name} must be positive definite: its smallest eigenvalue is {lam_min:.3g}"
        )
    return arr


def as_psd(name: str, X, *, dim: int | None = None, tol: float = SYM_TOL) -> np.ndarray:
    """Finite symmetric positive semi-definite matrix (eigenvalues >= -tol * ||X||).

    A successful Cholesky factorisation of ``X + s I`` (``s`` within the tolerance)
    proves it at O(d^3 / 3); only when it fails are the eigenvalues computed
    (:func:`psd_spectrum`).
    """
    arr = as_symmetric(name, X, dim=dim, tol=tol)
    # X + s I with s = tol * max(max_i X_ii, 1) <= tol * max(lambda_max, 1): when its
    # Cholesky factorisation exists, lambda_min(X) > -s, so X passes the test below
    # without an eigendecomposition (also when X is singular, e.g. a covariance of
    # fewer samples than dimensions); otherwise the eigenvalues decide.
    shift = tol * max(float(np.diag(arr).max()), 1.0)
    try:
        np.linalg.cholesky(arr + shift * np.eye(arr.shape[0]))
        return arr
    except np.linalg.LinAlgError:
        return psd_spectrum(name, arr, tol=tol)[0]


def psd_spectrum(
    name: str, X, *, dim: int | None = None, tol: float = SYM_TOL
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`as_psd` that also returns the eigenvalues it checked.

    Returns ``(X symmetrised, eigenvalues ascending with the small negative rounding
    values allowed by ``tol`` clipped to 0)``: one ``eigvalsh`` for both the check
    and the caller's use of the spectrum.
    """
    arr = as_symmetric(name, X, dim=dim, tol=tol)
    lam = np.linalg.eigvalsh(arr)
    if lam[0] < -tol * max(abs(lam[-1]), 1.0):
        raise ValueError(
            f"{name} must be positive semi-definite: its smallest eigenvalue is {lam[0]:.3g}"
        )
    return arr, np.clip(lam, 0.0, None)


def _show(x) -> str:
    """A bounded text (at most 80 characters) for a user's value in a message; the
    foundation's own, as it imports no other room (config.show is the same)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 2, 40, 40
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 4
    try:
        text = r.repr(x)
    except Exception:  # noqa: BLE001 - e.g. an int beyond the str conversion limit
        text = f"<{type(x).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


#: Largest Frobenius norm of a current ``Q`` (``A = (I + Q) U``). Beyond it the real
#: parts of A's eigenvalues (the relaxation rate, of the order of ``Tr(U) / d``)
#: drown in the rounding of the imaginary ones (about ``||Q|| ||U|| 1e-16``): every
#: rate and time computed from such a ``Q`` is noise (``gamma:1e300`` printed a rate
#: of -4.6e284), and its squares overflow.
MAX_CURRENT_NORM = 1e12


def check_current(name: str, Q) -> None:
    """ValueError naming ``name`` when the current ``Q`` is not finite or its
    Frobenius norm exceeds :data:`MAX_CURRENT_NORM`."""
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(np.asarray(Q, dtype=np.float64)))
    if not math.isfinite(norm) or norm > MAX_CURRENT_NORM:
        raise ValueError(
            f"{name}: the current is too strong for float64 (||Q||_F = {norm:.3g} > "
            f"{MAX_CURRENT_NORM:g}; the relaxation rate of A = (I + Q) U would be lost in "
            "rounding); use a smaller scale"
        )


#: Largest eigenvalue of a data covariance that the exact Gaussian error accepts:
#: its products (``C M^T``, ``C^2`` in the W2 distance) must stay finite.
MAX_COV_SCALE = 1e100


def check_scale(name: str, X, limit: float = MAX_COV_SCALE):
    """``X`` unchanged; ValueError naming ``name`` when an entry exceeds ``limit`` in
    size (where float64 products of it overflow)."""
    top = float(np.abs(X).max(initial=0.0))
    if top > limit:
        raise ValueError(
            f"{name}: entries up to {top:.3g} exceed {limit:g}, where products "
            "of them overflow float64; rescale the data"
        )
    return X


def as_antisymmetric(name: str, X, *, dim: int | None = None, tol: float = SYM_TOL) -> np.ndarray:
    """Finite square antisymmetric matrix (within ``tol`` relative), returned exactly
    antisymmetric; its norm at most :data:`MAX_CURRENT_NORM` (a current ``Q``)."""
    arr = as_matrix(name, X, dim=dim)
    check_current(name, arr)
    scale = np.linalg.norm(arr)
    if scale > 0 and np.linalg.norm(arr + arr.T) > tol * scale:
        raise ValueError(
            f"{name} must be antisymmetric ({name}^T = -{name}): ||{name} + {name}^T|| / "
            f"||{name}|| = {np.linalg.norm(arr + arr.T) / scale:.3g} exceeds {tol:g}"
        )
    return 0.5 * (arr - arr.T)


def as_times(name: str, t, *, allow_zero: bool = True) -> tuple[np.ndarray, bool]:
    """Times as a 1-D float64 array and whether the input was a scalar.

    Raises ValueError for non-numeric, non-finite or negative times (and zero when
    ``allow_zero`` is False), and for arrays of more than one dimension.
    """
    try:
        arr = np.array(t, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or a 1-D array of numbers ({exc})") from None
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:3].tolist()}")
    bad = arr <= 0 if not allow_zero else arr < 0
    if np.any(bad):
        rel = "positive" if not allow_zero else "non-negative"
        raise ValueError(f"{name} must be {rel}, got {arr[bad][:3].tolist()}")
    return arr, scalar


def as_positive_float(name: str, x) -> float:
    """A finite, strictly positive float, or ValueError naming ``name``."""
    try:
        val = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {_show(x)}") from None
    if not math.isfinite(val) or val <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {_show(x)}")
    return val


def is_diagonal(X: np.ndarray) -> bool:
    """Whether the square matrix ``X`` has no non-zero entry off its diagonal (O(d^2);
    lets the SPD helpers skip an O(d^3) eigendecomposition, e.g. for U = identity)."""
    return not np.any(X[~np.eye(X.shape[0], dtype=bool)])


def spectral_norm(X: np.ndarray) -> float:
    """``||X||_2``: 0 for a zero matrix and ``max |X_ii|`` for a diagonal one (O(d^2),
    exact), else the largest singular value (``numpy.linalg.norm(X, 2)``)."""
    if not np.any(X):
        return 0.0
    if is_diagonal(X):
        return float(np.abs(np.diag(X)).max())
    return float(np.linalg.norm(X, 2))


def smallest_eigenvalue(S: np.ndarray) -> float:
    """The smallest eigenvalue of the symmetric ``S`` (``min S_ii`` when diagonal)."""
    return float(np.diag(S).min() if is_diagonal(S) else np.linalg.eigvalsh(S)[0])


def spd_sqrt(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U^{1/2}, U^{-1/2})`` of a symmetric positive definite matrix, by ``eigh``
    (directly for a diagonal ``U``)."""
    if is_diagonal(U):
        s = np.sqrt(np.diag(U))
        return np.diag(s), np.diag(1.0 / s)
    lam, V = np.linalg.eigh(U)
    s = np.sqrt(lam)
    return (V * s) @ V.T, (V / s) @ V.T


def spd_inverse(U: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix, symmetric to rounding
    (directly for a diagonal ``U``)."""
    if is_diagonal(U):
        return np.diag(1.0 / np.diag(U))
    lam, V = np.linalg.eigh(U)
    inv = (V / lam) @ V.T
    return 0.5 * (inv + inv.T)


def psd_factor(S: np.ndarray) -> np.ndarray:
    """A lower-triangular ``L`` with ``L L^T = S`` for symmetric PSD ``S`` (d, d), or for
    every matrix of a stack (..., d, d).

    Cholesky when ``S`` is numerically positive definite (a stack: in one call when
    every matrix is); otherwise (a rank-deficient covariance, e.g. a point mass) a
    factor from the eigendecomposition followed by a QR step, so that ``L`` is still
    lower triangular.
    """
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        if S.ndim > 2:  # factor the stack's matrices one by one
            out = np.empty_like(S)
            for idx in np.ndindex(*S.shape[:-2]):
                out[idx] = psd_factor(S[idx])
            return out
        lam, V = np.linalg.eigh(0.5 * (S + S.T))
        F = V * np.sqrt(np.clip(lam, 0.0, None))
        # F F^T = S; F^T = Q R  =>  S = R^T R, and R^T is lower triangular.
        _, R = np.linalg.qr(F.T)
        sign = np.where(np.diag(R) < 0, -1.0, 1.0)
        return (R * sign[:, None]).T


def sym(X: np.ndarray) -> np.ndarray:
    """Symmetric part of a (stack of) square matrices."""
    return 0.5 * (X + np.swapaxes(X, -1, -2))


def sample_covariance(X: np.ndarray) -> np.ndarray:
    """``(1/n) sum_i (x_i - mean)(x_i - mean)^T`` of the rows of ``X`` (n, d), symmetric.

    The one covariance convention of nonrev: 1/n, the covariance of the empirical law
    (the law that the empirical score diffuses and the regime criteria describe),
    not the unbiased 1/(n-1). Inner helper: ``X`` is trusted (validate it first).
    """
    Xc = X - X.mean(axis=0)
    return sym(Xc.T @ Xc) / X.shape[0]


def as_vector(name: str, v, dim: int) -> np.ndarray:
    """A finite float64 vector of shape (dim,), or ValueError naming it."""
    try:
        arr = np.array(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric vector ({exc})") from None
    if arr.shape != (dim,):
        raise ValueError(f"{name} must have shape ({dim},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_batch(name: str, x, dim: int | None, *, min_rows: int = 0) -> torch.Tensor:
    """A finite floating (B, dim) tensor; numpy input becomes a float32 tensor.

    ``dim=None`` accepts any positive number of columns; ``min_rows`` is the least
    number of rows ``B`` accepted (0 by default).
    """
    cols = "d" if dim is None else dim
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric (B, {cols}) array ({exc})") from None
    if not torch.is_floating_point(x):
        x = x.float()
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim) or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, {cols}), got {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def as_array(name: str, X, shape: tuple) -> np.ndarray:
    """A finite float64 array whose shape matches ``shape`` (``None`` = any size >= 1).

    E.g. ``as_array("means", m, (None, d))`` for K >= 1 rows of length ``d``.
    """
    try:
        arr = np.array(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array ({exc})") from None
    want = "(" + ", ".join("n" if s is None else str(s) for s in shape)
    want += ",)" if len(shape) == 1 else ")"
    if arr.ndim != len(shape) or any(
        (s is None and n < 1) or (s is not None and n != s) for s, n in zip(shape, arr.shape)
    ):
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_time(name: str, t, *, allow_zero: bool = True) -> float:
    """A single finite time ``t >= 0`` (``> 0`` unless ``allow_zero``) as a python float."""
    if torch.is_tensor(t):
        t = t.detach().cpu().numpy()
    arr, scalar = as_times(name, t, allow_zero=allow_zero)
    if not scalar:
        raise ValueError(f"{name} must be a single number, got an array of shape {arr.shape}")
    return float(arr[0])


def as_weights(name: str, w, n: int, *, tol: float = 1e-6) -> np.ndarray:
    """Probability weights: shape (n,), finite, non-negative, summing to 1 within ``tol``.

    Returned as float64, renormalised to sum to 1 exactly (to rounding).
    """
    arr = as_vector(name, w, n)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, got {arr[arr < 0][:3].tolist()}")
    total = float(arr.sum())
    if abs(total - 1.0) > tol:
        raise ValueError(f"{name} must sum to 1 (within {tol:g}), got {total!r}")
    return arr / total


def as_samples(
    name: str, X, *, dim: int | None = None, min_rows: int = 2, min_cols: int = 1
) -> np.ndarray:
    """A finite float64 data matrix of shape (n, d): one sample per row.

    ``dim`` fixes ``d``; ``min_rows`` and ``min_cols`` are the least ``n`` and ``d``
    accepted (a covariance needs at least 2 samples).
    """
    try:
        arr = np.array(_real(name, X), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        if "must be real" in str(exc):
            raise
        raise ValueError(f"{name} must be a numeric (n, d) array ({exc})") from None
    cols = "d" if dim is None else dim
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise ValueError(f"{name} must have shape (n, {cols}), got {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows (samples), got {arr.shape[0]}")
    if arr.shape[1] < min_cols:
        raise ValueError(
            f"{name} must have at least {min_cols} columns (dimensions), got {arr.shape[1]}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_labels(name: str, labels, n: int) -> np.ndarray:
    """One class label per sample: a 1-D array of length ``n``.

    Integers, strings or integral floats (class codes such as 0.0, 1.0; continuous
    values are refused); an (n, 1) column is flattened.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array with one label per sample, got shape {arr.shape}"
        )
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have one label per sample ({n}), got {arr.shape[0]}")
    if arr.dtype.kind not in "biufUS":
        raise ValueError(f"{name} must be integers, numbers or strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError(
            f"{name} must be classes (integers or names), got non-integral numbers "
            f"such as {arr[arr != np.round(arr)][0]:.4g} (continuous values?)"
        )
    return arr


#: Largest count :func:`as_count` accepts: every integer up to it is exact in float64.
COUNT_LIMIT = 2**53


def as_count(name: str, x, *, minimum: int = 1, maximum: int = COUNT_LIMIT) -> int:
    """An integer in ``[minimum, maximum]`` (an integral float such as ``2e4`` is
    accepted)."""
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {_show(x)}")
    try:
        val = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {_show(x)}") from None
    if not math.isfinite(val) or val != int(val):
        raise ValueError(f"{name} must be an integer, got {_show(x)}")
    if int(val) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {int(val)}")
    if int(val) > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {int(val):.3g}")
    return int(val)


def random_spd(eigenvalues, rng) -> tuple[np.ndarray, np.ndarray]:
    """``(U, V)``: ``U = V diag(eigenvalues) V^T`` with ``V`` the orthonormal Q factor of
    a standard Gaussian matrix drawn from ``rng`` (a ``numpy.random.Generator`` or a
    seed). The reference problems of the tests, benchmarks and experiments use it."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(
            f"eigenvalues must be a non-empty 1-D array of finite numbers, got shape {lam.shape}"
        )
    rng = np.random.default_rng(rng)
    V, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    return (V * lam) @ V.T, V
