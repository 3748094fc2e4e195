"""Predicted speciation and collapse times (docs/THEORY.md sections 3 and 4), float64.

Notation: the forward process ``dx = -A x dt + sqrt(2) dW``, ``A = (I + Q) U``, has
the kernel ``x_t | x_0 ~ N(M_t x_0, Sigma_t)`` (:class:`nonrev.OUProcess`).

**Speciation.** Classes with between-class covariance ``C_b`` and within-class
covariance ``C_w``. At time ``t`` the within-class covariance is
``Gamma_t = M_t C_w M_t^T + Sigma_t`` and the class separation is ``M_t C_b M_t^T``;
the signal-to-noise ratio

    r(t) = lambda_max( Gamma_t^{-1/2} M_t C_b M_t^T Gamma_t^{-1/2} )
         = largest generalised eigenvalue of (M_t C_b M_t^T, Gamma_t)

decides whether the backward dynamics has committed to a class. ``t_S`` is the
largest ``t`` with ``r(t) >= 1``.

**Collapse.** ``N`` training points of covariance ``C``. The Mahalanobis SNR
spectrum ``s_i(t)`` is the set of eigenvalues of ``Sigma_t^{-1} M_t C M_t^T`` and
the entropy gap between the Gaussian approximation of ``P_t`` and one kernel is

    g(t) = (1/2) log det(I + Sigma_t^{-1} M_t C M_t^T) = (1/2) sum_i log(1 + s_i(t)).

``t_C`` is the largest ``t`` with ``g(t) >= log N`` (random-energy condensation).
``g`` is non-increasing for every ``A``: with ``G_t = M_t C M_t^T + Sigma_t``, both
``G_t`` and ``Sigma_t`` solve ``dX/dt = 2I - A X - X A^T``, so
``d/dt log det X = 2 tr X^{-1} - 2 tr A`` and ``g'(t) = tr G_t^{-1} - tr Sigma_t^{-1}
<= 0`` because ``G_t >= Sigma_t``. The crossing is therefore unique.

**How the times are found.** Both quantities are bounded by a Q-independent
envelope. In the ``U``-norm every ``Q`` contracts at least as fast as
``lambda_min(U) = u``: ``||U^{1/2} M_t U^{-1/2}||_2 <= e^{-u t}``. With
``C <= c U^{-1}`` (``c = lambda_max(U^{1/2} C U^{1/2})``) this gives
``M_t C M_t^T <= c (U^{-1} - Sigma_t)`` and ``Sigma_t >= (1 - e^{-2ut}) U^{-1}``, so

    r(t) <= b / (e^{2ut} - 1),      g(t) <= (d/2) log(1 + c / (e^{2ut} - 1))

(``b`` the same constant for ``C_b``; nonrev uses the O(d^2) bound
``c <= Tr(U C)``, which enters only through a logarithm). Beyond the time where the
envelope meets the threshold the criterion surely fails. Both ``r`` and ``g`` are
strictly decreasing (:mod:`nonrev.regimes.criteria`), so the crossing is unique; the
root search (:func:`nonrev.regimes.criteria.solve_decreasing`) starts at the envelope
time and steps down in ``log t`` by 1, 2, 4, ... until the sign changes, then Brent's
method refines the root to 1e-8 relative. The bracket is found by expansion, not in
a window tied to ``1 / lambda_min(U)``, so an ill-conditioned ``U`` (e.g.
``lambda_min = 1e-8``, a crossing near 1 and an envelope time near 1e9) costs a few
more evaluations, not a wrong answer.

**Cost.** In general one evaluation needs ``(M_t, Sigma_t)`` from
:meth:`OUProcess.mean_and_cov` and a Cholesky factorisation: O(d^3), 15-25 s
at d = 2048 on two busy cores (a collapse time took 8 evaluations, 183 s). When ``Q``
commutes with ``U`` (``Q = 0``, or ``U = c I`` with any ``Q``), ``M_t = e^{-tU} R_t``
with ``R_t = exp(-t Q U)`` orthogonal and commuting with ``U``, and
``Sigma_t = U^{-1}(I - e^{-2tU})``; the rotation drops out of every spectrum, so in
the eigenbasis ``U = V diag(lam) V^T``

    Sigma_t^{-1/2} M_t X M_t^T Sigma_t^{-1/2}  ~  D_a V^T X V D_a,
    a_i(t)^2 = lam_i / (e^{2 t lam_i} - 1),

one eigendecomposition of ``U`` up front and no matrix exponential at all. For
``U = c I`` this reduces to scalars: ``s_i(t) = c gamma_i / (e^{2ct} - 1)`` with
``gamma_i`` the eigenvalues of ``C`` (see :func:`isotropic_collapse_time`).

**Kernels with blocks.** Every function here also takes a kernel with the block
interface of :class:`OUProcess` (:class:`nonrev.process.SpectralProcess`: ``U``,
``M_t`` and ``Sigma_t`` block-diagonal in an orthonormal basis, ``m`` blocks of
``g``), with no change of interface. A covariance is then given either dense (d, d),
mapped by ``process.to_blocks`` (a ValueError naming the argument when it is not
block-diagonal in the process's basis), or already as its blocks (m, g, g) in that
basis. Whitening is block-diagonal, so ``r(t)`` is the largest block ratio and
``g(t)`` the sum of the block gaps (:class:`nonrev.regimes.criteria.BlockFrame`):
O(d g^2) per evaluation, no d x d matrix. The ``*_from_data`` functions then use
the block-diagonal part of the data's covariance in the process's basis
(:func:`covariance_blocks`, from the data's coefficients in O(n d g)). For data
whose covariance is not block-diagonal there, that part gives a collapse time no
smaller and a speciation time no larger than the full covariance would (Fischer's
inequality ``det G <= prod_j det G_jj``; restricting the Rayleigh quotient of
``(M C_b M^T, Gamma)`` to one block can only lower its maximum).
"""

from __future__ import annotations

import numpy as np

from nonrev.linalg import (
    SYM_TOL,
    as_count,
    as_labels,
    as_positive_float,
    as_psd,
    as_samples,
    as_symmetric,
    as_times,
    psd_spectrum,
    sample_covariance,
    sym,
)
from nonrev.process.ou import OUProcess, has_block_interface
from nonrev.regimes import criteria

__all__ = [
    "class_covariances",
    "collapse_entropy_gap",
    "collapse_snr_spectrum",
    "collapse_time",
    "collapse_time_from_data",
    "class_covariance_blocks",
    "covariance_blocks",
    "isotropic_collapse_time",
    "speciation_snr",
    "speciation_time",
    "speciation_time_from_data",
]

_NO_VARIANCE = (
    "{name} is zero: the data have no variance, so there is no collapse "
    "(or speciation) time to predict"
)


#: What the block route uses of a kernel that is not an OUProcess.


def _has_blocks(process) -> bool:
    """A kernel with the block interface (not a dense OUProcess)."""
    return not isinstance(process, OUProcess) and has_block_interface(process)


def _check_process(process):
    if not isinstance(process, OUProcess) and not _has_blocks(process):
        raise ValueError(
            f"process must be an OUProcess or a kernel with its block interface "
            f"(e.g. a SpectralProcess), got {type(process).__name__}"
        )
    return process


def _frame(process, exploit_symmetry: bool = True) -> criteria.Frame:
    """The cheapest exact route for ``process`` (:func:`nonrev.regimes.criteria.frame`,
    :func:`nonrev.regimes.criteria.block_frame` for a kernel with blocks)."""
    if _has_blocks(_check_process(process)):
        return criteria.block_frame(process, exploit_symmetry)
    return criteria.frame(process, exploit_symmetry)


def _as_psd_blocks(process, name: str, C) -> np.ndarray:
    """A covariance for a kernel with blocks: dense (d, d), mapped by
    ``process.to_blocks`` (ValueError naming ``name`` when it is not block-diagonal in
    the kernel's basis), or its blocks (m, g, g); returned as symmetric PSD blocks."""
    d = process.dim
    m, g = process.basis.blocks
    try:
        arr = np.array(C, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a numeric ({d}, {d}) matrix or its ({m}, {g}, {g}) blocks ({exc})"
        ) from None
    if arr.ndim == 2:
        arr = np.asarray(process.to_blocks(name, as_symmetric(name, arr, dim=d)), dtype=np.float64)
    elif arr.shape != (m, g, g):
        raise ValueError(
            f"{name} must be a ({d}, {d}) matrix or its ({m}, {g}, {g}) blocks "
            f"in the process's basis, got shape {arr.shape}"
        )
    elif not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    else:
        scale = np.linalg.norm(arr)
        asym = np.linalg.norm(arr - np.swapaxes(arr, -1, -2))
        if asym > SYM_TOL * max(scale, np.finfo(float).tiny):
            raise ValueError(
                f"{name} must be symmetric: ||{name} - {name}^T|| / ||{name}|| = "
                f"{asym / scale:.3g} exceeds {SYM_TOL:g}"
            )
    arr = sym(arr)
    lam = np.linalg.eigvalsh(arr)
    if lam.min() < -SYM_TOL * max(abs(float(lam.max())), 1.0):
        raise ValueError(
            f"{name} must be positive semi-definite: its smallest eigenvalue is {lam.min():.3g}"
        )
    return arr


def _as_cov(process, name: str, C) -> np.ndarray:
    """``C`` validated as a covariance for ``process``: (d, d) for an OUProcess, its
    blocks (m, g, g) for a kernel with blocks."""
    if _has_blocks(process):
        return _as_psd_blocks(process, name, C)
    return as_psd(name, C, dim=process.dim)


def _spectrum(name: str, C: np.ndarray) -> np.ndarray:
    """The eigenvalues of a validated covariance, ascending, clipped at 0 (of the
    block-diagonal matrix for a stack of blocks)."""
    if C.ndim == 2:
        return psd_spectrum(name, C)[1]
    return np.clip(np.sort(np.linalg.eigvalsh(C).reshape(-1)), 0.0, None)


# ----------------------------------------------------------------------------- speciation
def _speciation_inputs(process, between_cov, within_cov):
    frame = _frame(process)
    Cb = _as_cov(process, "between_cov", between_cov)
    Cw = None if within_cov is None else _as_cov(process, "within_cov", within_cov)
    if Cw is not None and not np.any(Cw):
        Cw = None
    return frame, Cb, Cw


def _speciation_ratio(frame: criteria.Frame, Cb: np.ndarray, Cw: np.ndarray | None):
    """``t -> r(t)`` (:func:`nonrev.regimes.criteria.speciation_ratio`)."""
    return criteria.speciation_ratio(frame, Cb, Cw)


def speciation_snr(process, between_cov, within_cov, times):
    """The speciation signal-to-noise ratio ``r(t)`` at each of ``times`` (> 0).

    ``r(t) = lambda_max(Gamma_t^{-1/2} M_t C_b M_t^T Gamma_t^{-1/2})`` with
    ``Gamma_t = M_t C_w M_t^T + Sigma_t`` (``C_w = 0`` when ``within_cov`` is None),
    computed as the largest generalised eigenvalue of ``(M_t C_b M_t^T, Gamma_t)``
    after whitening by ``Sigma_t``. Returns a float for a scalar time, else an array
    of shape ``(len(times),)``. Speciation happens where ``r`` falls through 1.
    """
    frame, Cb, Cw = _speciation_inputs(process, between_cov, within_cov)
    grid, scalar = as_times("times", times, allow_zero=False)
    ratio = _speciation_ratio(frame, Cb, Cw)
    out = np.array([ratio(t) for t in grid])
    return float(out[0]) if scalar else out


def speciation_time(process, between_cov, within_cov=None) -> float:
    """Predicted speciation time ``t_S``: the largest ``t`` with ``r(t) >= 1``.

    ``r`` is :func:`speciation_snr`. For two symmetric classes ``+-mu`` this is
    ``m_t^T Gamma_t^{-1} m_t = 1`` with ``m_t = M_t mu`` (``C_b = mu mu^T``); for
    ``U = I, Q = 0, C_w = sigma^2 I`` it is ``t_S = (1/2) log(|mu|^2 - sigma^2 + 1)``.

    Parameters
    ----------
    process : OUProcess, or a kernel with blocks (SpectralProcess; module docstring)
    between_cov : (d, d) PSD, ``C_b = sum_k w_k (mu_k - mu)(mu_k - mu)^T`` (for a
        kernel with blocks: block-diagonal in its basis, or its blocks (m, g, g)).
    within_cov : (d, d) PSD or None, ``C_w = sum_k w_k Cov_k``; None means 0 (use the
        total covariance as ``between_cov`` when there are no labels). Blocks as
        ``between_cov``.

    Returns 0.0 when the criterion provably never holds: ``C_b = 0``, or
    ``r(0+) = lambda_max(C_b, C_w) <= 1`` (``r`` decreases in ``t``, so then
    ``r(t) < 1`` at every ``t > 0``: the classes overlap too much ever to be told
    apart). Otherwise ``r`` crosses 1 exactly once and the crossing is found to
    ``ROOT_TOL`` (1e-8 relative) by :func:`nonrev.regimes.criteria.solve_decreasing`,
    started at the envelope bound and expanding until it brackets the root: correct
    for any SPD ``U``, however ill-conditioned. Raises ValueError if no bracket exists
    in ``t`` in [1e-100, 1e100].
    """
    frame, Cb, Cw = _speciation_inputs(process, between_cov, within_cov)
    if not np.any(Cb) or criteria.speciation_zero_limit(Cb, Cw) <= 1.0:
        return 0.0
    t_max = criteria.envelope_time(frame, Cb, 1.0)  # r(t) <= s_max(t) for C = C_b
    ratio = _speciation_ratio(frame, Cb, Cw)
    x, _ = criteria.solve_decreasing(
        lambda x: (criteria.log_positive(ratio(float(np.exp(x)))), None, None),
        float(np.log(t_max)),
        "speciation time",
    )
    return float(np.exp(x))


# ----------------------------------------------------------------------------- collapse
def _collapse_inputs(process, data_cov):
    frame = _frame(process)
    C = _as_cov(process, "data_cov", data_cov)
    return frame, C


def _collapse_gap(frame: criteria.Frame, C: np.ndarray):
    """``t -> g(t)`` (:func:`nonrev.regimes.criteria.collapse_gap`)."""
    gammas = _spectrum("data_cov", C) if frame.isotropic else None
    return criteria.collapse_gap(frame, C, gammas)


def collapse_snr_spectrum(process, data_cov, times) -> np.ndarray:
    """The Mahalanobis SNR spectrum ``s_1(t) >= ... >= s_d(t) >= 0`` at each time (> 0).

    ``s_i(t)`` are the eigenvalues of ``Sigma_t^{-1} M_t C M_t^T``, computed as those
    of the symmetric PSD matrix ``W W^T``, ``W = L_t^{-1} M_t C^{1/2}`` with
    ``L_t L_t^T = Sigma_t`` (or its commuting-route equivalent). For ``U = c I``:
    ``s_i(t) = c gamma_i / (e^{2ct} - 1)``. Shape ``(d,)`` for a scalar time, else
    ``(len(times), d)``.
    """
    frame, C = _collapse_inputs(process, data_cov)
    grid, scalar = as_times("times", times, allow_zero=False)
    if frame.isotropic:
        c = float(frame.eigvals[0])
        gammas = _spectrum("data_cov", C)
        out = np.stack([criteria.isotropic_snr(c, gammas, t)[::-1] for t in grid])
    elif C.ndim == 3:  # blocks: the union of the blocks' spectra
        whiten = criteria.whitened(frame, [C])
        out = np.stack(
            [
                np.clip(np.sort(np.linalg.eigvalsh(whiten(t)[0]).reshape(-1))[::-1], 0.0, None)
                for t in grid
            ]
        )
    else:
        whiten = criteria.whitened(frame, [C])
        out = np.stack([np.clip(np.linalg.eigvalsh(whiten(t)[0])[::-1], 0.0, None) for t in grid])
    return out[0] if scalar else out


def collapse_entropy_gap(process, data_cov, times):
    """``g(t) = (1/2) log det(I + Sigma_t^{-1} M_t C M_t^T) = (1/2) sum_i log(1 + s_i(t))``.

    The entropy of the Gaussian approximation of ``P_t`` minus that of one kernel;
    collapse happens where it falls through ``log N``. Non-increasing in ``t`` for
    every ``Q`` (module docstring). Float for a scalar time, else ``(len(times),)``.
    """
    frame, C = _collapse_inputs(process, data_cov)
    grid, scalar = as_times("times", times, allow_zero=False)
    gap = _collapse_gap(frame, C)
    out = np.array([gap(t) for t in grid])
    return float(out[0]) if scalar else out


def isotropic_collapse_time(c: float, data_eigvals, n_train: int) -> float:
    """``t_C`` for ``U = c I`` (any Q) from the eigenvalues ``gamma_i`` of ``C`` alone.

    With ``y = e^{2ct} - 1`` the criterion reads
    ``(1/2) sum_i log(1 + c gamma_i / y) = log N``; the left side decreases in ``y``
    and is bracketed by ``y_lo = c gamma_max / (N^2 - 1)`` (one eigenvalue alone
    reaches ``log N``) and ``y_hi = c gamma_max / (N^{2/d} - 1)`` (all equal to the
    largest), and :func:`nonrev.regimes.criteria.solve_decreasing` on ``log y``
    finds the root from the middle of that bracket; ``t = log1p(y)/(2c)``.
    For ``C = sigma^2 I`` this is Biroli's ``t_C = (1/2c) log(1 + c sigma^2 /
    (N^{2/d} - 1))``. Raises ValueError when ``C = 0`` (data without variance have
    no collapse time: ``g = 0 < log N`` at every ``t``).
    """
    c = as_positive_float("c", c)
    gammas = np.asarray(data_eigvals, dtype=np.float64)
    if gammas.ndim != 1 or gammas.size == 0:
        raise ValueError(f"data_eigvals must be a non-empty 1-D array, got shape {gammas.shape}")
    if not np.all(np.isfinite(gammas)):
        raise ValueError("data_eigvals contains NaN or inf")
    if gammas.min() < 0:
        raise ValueError(f"data_eigvals must be non-negative, got {gammas.min():.3g}")
    n = as_count("n_train", n_train, minimum=2)
    top = float(gammas.max())
    if top == 0.0:
        raise ValueError(_NO_VARIANCE.format(name="data_eigvals"))
    log_n = np.log(n)
    d = gammas.size

    def h(log_y: float) -> float:
        return 0.5 * float(np.log1p(c * gammas / np.exp(log_y)).sum()) - log_n

    lo = np.log(c * top) - np.log(np.expm1(2.0 * log_n)) - 1.0  # margins: strict bracket
    hi = np.log(c * top) - np.log(np.expm1(2.0 * log_n / d)) + 1.0
    x, _ = criteria.solve_decreasing(lambda x: (h(x), None, None), 0.5 * (lo + hi), "collapse time")
    y = np.exp(x)
    return float(np.log1p(y) / (2.0 * c))


def collapse_time(process, data_cov, n_train: int) -> float:
    """Predicted collapse time ``t_C``: the largest ``t`` with ``g(t) >= log N``.

    ``g`` is :func:`collapse_entropy_gap`, ``C = data_cov`` (d, d) PSD (for a kernel
    with blocks, e.g. a SpectralProcess: block-diagonal in its basis, or its blocks
    (m, g, g); then each evaluation is O(d g^2)) and ``N = n_train >= 2``. ``g``
    decreases from infinity (``t -> 0``, any ``C != 0``) to 0, so the crossing exists
    and is unique: it is found to ``ROOT_TOL`` (1e-8 relative) by
    :func:`nonrev.regimes.criteria.solve_decreasing`, started at the envelope bound and
    expanding until it brackets the root (correct for any SPD ``U``). For an
    OUProcess each evaluation costs one O(d^3) step (a matrix exponential pair in
    general; only a Cholesky factorisation when ``Q`` commutes with ``U``; nothing for
    ``U = c I``, see :func:`isotropic_collapse_time`). Raises ValueError when
    ``C = 0`` (data without variance).
    """
    frame, C = _collapse_inputs(process, data_cov)
    n = as_count("n_train", n_train, minimum=2)
    if not np.any(C):
        raise ValueError(_NO_VARIANCE.format(name="data_cov"))
    if frame.isotropic:
        return isotropic_collapse_time(float(frame.eigvals[0]), _spectrum("data_cov", C), n)
    # g(t) <= (d/2) log(1 + s_max(t)) < log N once s_max(t) < N^{2/d} - 1.
    t_max = criteria.envelope_time(frame, C, np.expm1(2.0 * np.log(n) / process.dim))
    gap = _collapse_gap(frame, C)
    log_log_n = np.log(np.log(n))
    x, _ = criteria.solve_decreasing(
        lambda x: (criteria.log_positive(gap(float(np.exp(x)))) - log_log_n, None, None),
        float(np.log(t_max)),
        "collapse time",
    )
    return float(np.exp(x))


# ----------------------------------------------------------------------------- from data
_sample_covariance = sample_covariance  # the one convention (1/n), nonrev.linalg


def class_covariances(X, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Between- and within-class covariances of labelled data.

    With classes ``k`` (sorted as ``numpy.unique(labels)``), weights ``w_k = n_k / n``,
    class means ``mu_k`` and overall mean ``mu``:

        C_b = sum_k w_k (mu_k - mu)(mu_k - mu)^T,
        C_w = sum_k w_k Cov_k,   Cov_k = (1/n_k) sum_{i in k} (x_i - mu_k)(x_i - mu_k)^T,

    so ``C_b + C_w`` is the total covariance (1/n normalisation, law of total
    covariance). Returns ``(C_b, C_w, w)``.
    """
    X = as_samples("X", X)
    y = as_labels("labels", labels, X.shape[0])
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n = X.shape[0]
    w = counts / n
    means = np.zeros((counts.size, X.shape[1]))
    np.add.at(means, inverse, X)
    means /= counts[:, None]
    D = means - X.mean(axis=0)
    between = sym((D.T * w) @ D)
    R = X - means[inverse]
    within = sym(R.T @ R) / n
    return between, within, w


def _block_coefficients(process, X: np.ndarray) -> np.ndarray:
    """The centred coefficients of the rows of ``X`` (n, d) in the kernel's basis,
    (m, g, n): one fast transform per row."""
    Y = np.asarray(process.basis.forward_np(X), dtype=np.float64)  # (n, m, g)
    Y = Y - Y.mean(axis=0)
    return np.ascontiguousarray(np.moveaxis(Y, 0, -1))


def covariance_blocks(process, X) -> np.ndarray:
    """The block-diagonal part of the covariance of ``X`` (n, d) in the basis of a
    kernel with blocks: (m, g, g), block ``j`` the covariance (1/n) of the
    coefficients ``(V x)_j`` of group ``j``.

    Computed from the coefficients (``process.basis.forward_np``: for a
    SpectralProcess the DCT of each row, O(d log d)) in O(n d g); no d x d matrix is
    formed. Equal to ``process.to_blocks`` of :func:`nonrev.linalg.sample_covariance`
    when that covariance is block-diagonal in the basis; otherwise the blocks it
    keeps are exactly those blocks of ``V C V^T`` (the rest is dropped). For an
    OUProcess (one block) it is the sample covariance as (1, d, d).
    """
    X = as_samples("X", X, dim=_check_process(process).dim)
    Y = _block_coefficients(process, X)
    return sym(Y @ np.swapaxes(Y, -1, -2)) / X.shape[0]


def class_covariance_blocks(process, X, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`class_covariances` in the basis of a kernel with blocks, block-diagonal
    parts only: ``(C_b, C_w, w)`` with ``C_b``, ``C_w`` (m, g, g), from the data's
    coefficients in O(n d g) (as :func:`covariance_blocks`)."""
    X = as_samples("X", X, dim=_check_process(process).dim)
    y = as_labels("labels", labels, X.shape[0])
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n = X.shape[0]
    w = counts / n
    Y = _block_coefficients(process, X)  # (m, g, n), centred
    means = np.zeros((counts.size, *Y.shape[:2]))
    np.add.at(means, inverse, np.moveaxis(Y, -1, 0))
    means /= counts[:, None, None]  # (K, m, g): class means minus the overall mean
    D = np.moveaxis(means, 0, -1)  # (m, g, K)
    between = sym((D * w) @ np.swapaxes(D, -1, -2))
    R = Y - D[:, :, inverse]
    within = sym(R @ np.swapaxes(R, -1, -2)) / n
    return between, within, w


def speciation_time_from_data(process, X, labels=None) -> float:
    """:func:`speciation_time` with covariances estimated from samples ``X`` (n, d).

    With labels: ``C_b, C_w`` from :func:`class_covariances` (at least 2 classes).
    Without: ``C_b`` = the total covariance and ``C_w = 0``. For a kernel with blocks
    (SpectralProcess): their block-diagonal parts in its basis
    (:func:`covariance_blocks`, :func:`class_covariance_blocks`), never a d x d
    matrix; that gives a ``t_S`` no larger than the full covariances would (module
    docstring), equal when they are block-diagonal there.
    """
    X = as_samples("X", X, dim=_check_process(process).dim)
    blocks = _has_blocks(process)
    if labels is None:
        return speciation_time(
            process, covariance_blocks(process, X) if blocks else _sample_covariance(X)
        )
    between, within, w = (
        class_covariance_blocks(process, X, labels) if blocks else class_covariances(X, labels)
    )
    if w.size < 2:
        raise ValueError(f"labels must name at least 2 classes, got {w.size}")
    return speciation_time(process, between, within)


def collapse_time_from_data(process, X) -> float:
    """:func:`collapse_time` for training set ``X`` (n, d): ``C`` its covariance
    (1/n normalisation), ``N = n``. For a kernel with blocks (SpectralProcess): the
    block-diagonal part of ``C`` in its basis (:func:`covariance_blocks`, O(n d g)),
    which gives a ``t_C`` no smaller than the full ``C`` would (module docstring),
    equal when ``C`` is block-diagonal there."""
    X = as_samples("X", X, dim=_check_process(process).dim)
    C = covariance_blocks(process, X) if _has_blocks(process) else _sample_covariance(X)
    return collapse_time(process, C, X.shape[0])
