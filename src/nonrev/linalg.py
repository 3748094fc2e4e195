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


def as_matrix(name: str, X, *, dim: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite, square float64 array, or raise ValueError naming it."""
    try:
        arr = np.array(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
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
    lam_min = np.linalg.eigvalsh(arr)[0]
    if not lam_min > 0:
        raise ValueError(
            f"{name} must be positive definite: its smallest eigenvalue is {lam_min:.3g}"
        )
    return arr


def as_psd(name: str, X, *, dim: int | None = None, tol: float = SYM_TOL) -> np.ndarray:
    """Finite symmetric positive semi-definite matrix (eigenvalues >= -tol * ||X||)."""
    arr = as_symmetric(name, X, dim=dim, tol=tol)
    lam = np.linalg.eigvalsh(arr)
    if lam[0] < -tol * max(abs(lam[-1]), 1.0):
        raise ValueError(
            f"{name} must be positive semi-definite: its smallest eigenvalue is {lam[0]:.3g}"
        )
    return arr


def as_antisymmetric(name: str, X, *, dim: int | None = None, tol: float = SYM_TOL) -> np.ndarray:
    """Finite square antisymmetric matrix (within ``tol`` relative), returned exactly antisymmetric."""
    arr = as_matrix(name, X, dim=dim)
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
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not math.isfinite(val) or val <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {x!r}")
    return val


def spd_sqrt(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U^{1/2}, U^{-1/2})`` of a symmetric positive definite matrix, by ``eigh``."""
    lam, V = np.linalg.eigh(U)
    s = np.sqrt(lam)
    return (V * s) @ V.T, (V / s) @ V.T


def spd_inverse(U: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix, symmetric to rounding."""
    lam, V = np.linalg.eigh(U)
    inv = (V / lam) @ V.T
    return 0.5 * (inv + inv.T)


def psd_factor(S: np.ndarray) -> np.ndarray:
    """A lower-triangular ``L`` with ``L L^T = S`` for symmetric PSD ``S``.

    Cholesky when ``S`` is numerically positive definite; otherwise (a rank-deficient
    covariance, e.g. a point mass) a factor from the eigendecomposition followed by
    a QR step, so that ``L`` is still lower triangular.
    """
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh(0.5 * (S + S.T))
        F = V * np.sqrt(np.clip(lam, 0.0, None))
        # F F^T = S; F^T = Q R  =>  S = R^T R, and R^T is lower triangular.
        _, R = np.linalg.qr(F.T)
        sign = np.where(np.diag(R) < 0, -1.0, 1.0)
        return (R * sign[:, None]).T


def sym(X: np.ndarray) -> np.ndarray:
    """Symmetric part of a (stack of) square matrices."""
    return 0.5 * (X + np.swapaxes(X, -1, -2))


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


def as_batch(name: str, x, dim: int) -> torch.Tensor:
    """A finite floating (B, dim) tensor; numpy input becomes a float32 tensor."""
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric (B, {dim}) array ({exc})") from None
    if not torch.is_floating_point(x):
        x = x.float()
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x
