"""The regime criteria, once: the speciation ratio r(t), the collapse gap g(t), their
time derivatives, and the one root finder that locates where they cross a level.

Used by :mod:`nonrev.regimes.theory` (the predicted times) and
:mod:`nonrev.regimes.steering` (the same times and their gradients in ``Q``).
Notation as in docs/THEORY.md: ``A = (I + Q) U``, kernel ``N(M_t x_0, Sigma_t)``.

* Speciation: ``r(t)`` = the largest generalised eigenvalue of
  ``(M_t C_b M_t^T, Gamma_t)``, ``Gamma_t = M_t C_w M_t^T + Sigma_t``;
  ``dr/dt = -2 r |v|^2`` with ``v`` the top eigenvector normalised by
  ``v^T Gamma_t v = 1`` (envelope theorem; module docstring of
  :mod:`nonrev.regimes.steering`).
* Collapse: ``g(t) = (1/2) log det(I + Sigma_t^{-1} M_t C M_t^T)``;
  ``dg/dt = tr G_t^{-1} - tr Sigma_t^{-1} <= 0`` with ``G_t = M_t C M_t^T + Sigma_t``.

Both are strictly decreasing in ``t`` (for every ``Q``), so each criterion has one
crossing, found by :func:`solve_decreasing` in ``x = log t``.

Routes. The general route whitens by the Cholesky factor of ``Sigma_t`` computed from
:meth:`OUProcess.mean_and_cov` (O(d^3) per time). When ``Q`` commutes with ``U``
(``Q = 0``, or ``U = c I``) the rotation ``exp(-t Q U)`` drops out of every spectrum
and, in the eigenbasis ``U = V diag(lam) V^T``, the whitened covariance is
``D_a V^T C V D_a`` with ``a_i(t)^2 = lam_i / (e^{2 t lam_i} - 1)``: O(d^2) per time.

Block route (:class:`BlockFrame`). A kernel with the block interface of
:class:`OUProcess` whose blocks are smaller than ``d`` (e.g.
:class:`nonrev.process.SpectralProcess`: ``M_t``, ``Sigma_t`` and ``U`` block-diagonal
in an orthonormal basis ``V``, ``m`` blocks of ``g``) is whitened block by block, every
covariance a stack ``(m, g, g)`` of its blocks in that basis (it must be block-diagonal
there: the spectra below are those of the dense matrices only then). ``V`` is
orthogonal and every whitening factor is block-diagonal, so the spectrum of
``Sigma_t^{-1/2} M_t C M_t^T Sigma_t^{-1/2}`` is the union of the blocks' spectra: the
speciation ratio is the largest block ratio, the collapse gap the sum of the block
gaps. The same two routes per block (general: ``pair_blocks`` and a Cholesky
factorisation of each ``Sigma_t`` block; commuting: ``Q_j U_j = U_j Q_j`` in every
block), O(d g^2) per time; nothing of size d x d is formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg

from nonrev.linalg import psd_factor, sym
from nonrev.process.ou import OUProcess

#: The accuracy of every predicted time: ``|log t - log t_root| <= ROOT_TOL``.
ROOT_TOL = 1e-8
#: Newton stops when its step in ``log t`` falls below this; Newton converges
#: quadratically, so the error left is about its square, far below ``ROOT_TOL``.
NEWTON_STEP_TOL = 1e-5
#: The search never leaves ``[LOG_T_MIN, LOG_T_MAX]`` (t from 1e-100 to 1e100):
#: a criterion that keeps its sign over that whole range has no usable crossing.
LOG_T_MIN = math.log(1e-100)
LOG_T_MAX = math.log(1e100)
#: Largest step in ``log t`` (Newton steps are clipped to it; the bracketing steps
#: without a derivative start at 1 and double up to it).
MAX_LOG_STEP = 2.0
_MAX_ITER = 200
#: Relative tolerance for "Q commutes with U" and "U is a multiple of I".
COMMUTE_TOL = 1e-12
_TINY = 1e-300


# ----------------------------------------------------------------------------- root finder
def solve_decreasing(fun: Callable, x0: float, what: str):
    """The root of a strictly decreasing ``F(x)`` (``x = log t``), from ``x0``.

    ``fun(x) -> (F, dF, payload)``; ``dF`` may be None (no derivative). With a
    derivative: safeguarded Newton (steps clipped to ``MAX_LOG_STEP``; once a sign
    change brackets the root, a step that leaves the bracket is replaced by
    bisection), stopping when the step is below ``NEWTON_STEP_TOL``. Without: steps
    of 1, 2, 4, ... (at most ``MAX_LOG_STEP`` doubled to 64) away from the sign of
    ``F`` until the sign changes, then Brent's method to ``ROOT_TOL``. Either way the
    search expands until it brackets the root, so the start only costs iterations.

    Returns ``(x_root, payload)``, the payload of the last evaluated point (within
    ``NEWTON_STEP_TOL`` of the root on the Newton path). Raises ValueError, naming
    ``what``, when ``F`` keeps one sign over all of ``[LOG_T_MIN, LOG_T_MAX]`` or is
    not finite: no crossing can be bracketed there.
    """
    lo = hi = None  # F(lo) > 0 > F(hi)
    x = min(max(float(x0), LOG_T_MIN), LOG_T_MAX)
    cache: dict[float, tuple] = {}

    def call(x: float):
        if x not in cache:
            cache[x] = fun(x)
            if not math.isfinite(cache[x][0]):
                raise ValueError(
                    f"{what}: the criterion is not finite at t = {math.exp(x):.3g}; "
                    "no crossing can be located"
                )
        return cache[x]

    expand = 1.0
    for _ in range(_MAX_ITER):
        F, dF, payload = call(x)
        if F == 0.0:
            return x, payload
        if F > 0:
            lo = x
        else:
            hi = x
        if dF is None:
            if lo is not None and hi is not None:
                from scipy.optimize import (
                    brentq,
                )  # here, so that import nonrev skips scipy.optimize

                root = brentq(
                    lambda y: call(y)[0], lo, hi, xtol=ROOT_TOL, rtol=4 * np.finfo(float).eps
                )
                return root, call(root)[2]
            step = math.copysign(expand, F)
            expand = min(2.0 * expand, 32.0 * MAX_LOG_STEP)
        else:
            step = -F / dF if dF < 0 and math.isfinite(dF) else math.copysign(MAX_LOG_STEP, F)
            step = max(-MAX_LOG_STEP, min(MAX_LOG_STEP, step))
            if abs(step) <= NEWTON_STEP_TOL:
                return x + step, payload
        x_new = x + step
        if lo is not None and hi is not None:
            if not lo < x_new < hi:
                x_new = 0.5 * (lo + hi)
            if hi - lo <= NEWTON_STEP_TOL:
                return x_new, payload
        if x_new < LOG_T_MIN or x_new > LOG_T_MAX:
            edge = LOG_T_MIN if x_new < LOG_T_MIN else LOG_T_MAX
            if x == edge:
                side = "above" if F > 0 else "below"
                raise ValueError(
                    f"{what}: no crossing found for t in [1e-100, 1e100] (the criterion stays "
                    f"{side} its level there), so the time cannot be bracketed"
                )
            x_new = edge
        x = x_new
    raise RuntimeError(f"{what}: the root search did not converge")  # pragma: no cover


# ----------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Frame:
    """How to whiten by the kernel of ``process``.

    ``eigvals`` is ``None`` for the general route (``mean_and_cov`` at each t). When
    ``Q`` commutes with ``U`` it holds the eigenvalues of ``U`` and ``eigvecs`` its
    eigenvectors (``None`` when ``U`` is diagonal: the identity basis).
    """

    process: OUProcess
    eigvals: np.ndarray | None = None
    eigvecs: np.ndarray | None = None

    @property
    def isotropic(self) -> bool:
        """``U = c I`` (then ``eigvals`` holds ``d`` copies of ``c``)."""
        return self.eigvals is not None and bool(np.all(self.eigvals == self.eigvals[0]))

    @property
    def lambda_min(self) -> float:
        if self.eigvals is not None:
            return float(self.eigvals.min())
        return float(
            scipy.linalg.eigh(self.process.U, eigvals_only=True, subset_by_index=[0, 0])[0]
        )

    @property
    def precision(self) -> np.ndarray:
        """``U`` in the frame's coordinates: (d, d) here, (m, g, g) blocks in
        :class:`BlockFrame`."""
        return self.process.U


@dataclass(frozen=True)
class BlockFrame(Frame):
    """:class:`Frame` of a kernel with blocks (``process.basis.blocks = (m, g)``): every
    covariance is a stack (m, g, g) in the kernel's basis.

    ``eigvals`` (the commuting route) holds the eigenvalues of the precision blocks
    flattened to (d,) in block order, ``eigvecs`` their eigenvectors (m, g, g) (``None``
    when every block is diagonal); ``None`` for the general route (``pair_blocks`` at
    each t).
    """

    @property
    def lambda_min(self) -> float:
        if self.eigvals is not None:
            return float(self.eigvals.min())
        return float(np.linalg.eigvalsh(self.precision).min())

    @property
    def precision(self) -> np.ndarray:
        return np.asarray(self.process.precision_blocks, dtype=np.float64)

    @property
    def blocks(self) -> tuple[int, int]:
        return tuple(self.process.basis.blocks)  # type: ignore[return-value]


def commutes(Q: np.ndarray, U: np.ndarray) -> bool:
    q = np.linalg.norm(Q)
    return q == 0.0 or np.linalg.norm(Q @ U - U @ Q) <= COMMUTE_TOL * q * np.linalg.norm(U)


def frame(process: OUProcess, exploit_symmetry: bool = True) -> Frame:
    """The cheapest exact route for ``process`` (``exploit_symmetry=False``: general)."""
    U, Q = process.U, process.Q
    if not exploit_symmetry:
        return Frame(process)
    off_diag = U - np.diag(np.diag(U))
    if np.linalg.norm(off_diag) <= COMMUTE_TOL * np.linalg.norm(U):
        lam = np.diag(U).copy()
        if np.ptp(lam) <= COMMUTE_TOL * np.abs(lam).max():
            lam = np.full_like(lam, lam.mean())  # exactly isotropic
        return Frame(process, lam, None) if commutes(Q, U) else Frame(process)
    if commutes(Q, U):
        lam, V = np.linalg.eigh(U)
        return Frame(process, lam, V)
    return Frame(process)


def block_frame(process, exploit_symmetry: bool = True) -> BlockFrame:
    """:func:`frame` for a kernel with blocks: the same tests on the stacks of blocks
    (the Frobenius norms of the stacks are those of the block-diagonal matrices).
    ``Q_j`` is recovered from the drift blocks, ``Q_j = (A_j - U_j) U_j^{-1}``."""
    if not exploit_symmetry:
        return BlockFrame(process)
    U = np.asarray(process.precision_blocks, dtype=np.float64)
    A = np.asarray(process.drift_blocks, dtype=np.float64)
    Q = np.swapaxes(np.linalg.solve(U, np.swapaxes(A - U, -1, -2)), -1, -2)
    g = U.shape[-1]
    diag = np.diagonal(U, axis1=-2, axis2=-1)
    if np.linalg.norm(U - diag[..., None] * np.eye(g)) <= COMMUTE_TOL * np.linalg.norm(U):
        lam = diag.reshape(-1).copy()
        if np.ptp(lam) <= COMMUTE_TOL * np.abs(lam).max():
            lam = np.full_like(lam, lam.mean())  # exactly isotropic
        return BlockFrame(process, lam, None) if commutes(Q, U) else BlockFrame(process)
    if commutes(Q, U):
        lam, V = np.linalg.eigh(U)
        return BlockFrame(process, lam.reshape(-1), V)
    return BlockFrame(process)


def _stack_factor(C: np.ndarray) -> np.ndarray:
    """``F`` with ``F F^T = C`` for a stack (m, g, g) of PSD blocks: one batched
    Cholesky, :func:`nonrev.linalg.psd_factor` per block where it fails."""
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        return np.stack([psd_factor(c) for c in C])


def _whitened_blocks(fr: BlockFrame, covs: list[np.ndarray]) -> Callable[[float], list[np.ndarray]]:
    """:func:`whitened` on stacks (m, g, g): the same two routes, block by block."""
    m, g = fr.blocks
    if fr.eigvals is not None:
        lam = fr.eigvals.reshape(m, g)
        V = fr.eigvecs
        rotated = [C if V is None else sym(np.swapaxes(V, -1, -2) @ C @ V) for C in covs]

        def at(t: float) -> list[np.ndarray]:
            with np.errstate(over="ignore"):
                a = np.sqrt(lam / np.expm1(2.0 * t * lam))
            return [a[:, :, None] * Cr * a[:, None, :] for Cr in rotated]

        return at

    factors = [_stack_factor(C) for C in covs]

    def at(t: float) -> list[np.ndarray]:
        M, S = fr.process.pair_blocks(np.array([float(t)]))
        L = np.linalg.cholesky(sym(S[0]))
        out = []
        for F in factors:
            W = np.linalg.solve(L, M[0] @ F)
            out.append(sym(W @ np.swapaxes(W, -1, -2)))
        return out

    return at


def whitened(fr: Frame, covs: list[np.ndarray]) -> Callable[[float], list[np.ndarray]]:
    """``t -> [K_t(C) for C in covs]``, the covariances whitened by the kernel.

    ``K_t(C) = T_t C T_t^T`` with ``T_t = R_t Sigma_t^{-1/2} M_t`` for one orthogonal
    ``R_t`` (the same for every ``C``), so any spectrum built from the ``K_t`` is
    that of ``Sigma_t^{-1/2} M_t C M_t^T Sigma_t^{-1/2}``.

    * General route: ``T_t = L_t^{-1} M_t``, ``L_t`` the Cholesky factor of
      ``Sigma_t``; ``K = W W^T`` with ``W = L^{-1} M F`` and ``F F^T = C``.
    * Commuting route: ``T_t = D_a V^T`` with ``a_i^2 = lam_i / (e^{2 t lam_i} - 1)``.

    With a :class:`BlockFrame` the ``covs`` and the ``K_t`` are stacks (m, g, g).
    """
    if isinstance(fr, BlockFrame):
        return _whitened_blocks(fr, covs)
    if fr.eigvals is not None:
        lam = fr.eigvals
        V = fr.eigvecs
        rotated = [C if V is None else sym(V.T @ C @ V) for C in covs]

        def at(t: float) -> list[np.ndarray]:
            with np.errstate(over="ignore"):
                a = np.sqrt(lam / np.expm1(2.0 * t * lam))
            return [a[:, None] * Cr * a[None, :] for Cr in rotated]

        return at

    factors = [psd_factor(C) for C in covs]

    def at(t: float) -> list[np.ndarray]:
        M, S = fr.process.mean_and_cov(float(t))
        L = np.linalg.cholesky(S)
        out = []
        for F in factors:
            W = scipy.linalg.solve_triangular(L, M @ F, lower=True)
            out.append(sym(W @ W.T))
        return out

    return at


def envelope_time(fr: Frame, C: np.ndarray, level: float) -> float:
    """A time beyond which ``lambda_max(Sigma_t^{-1} M_t C M_t^T) < level`` for any Q.

    From ``s_max(t) <= c / (e^{2ut} - 1)`` with ``c = lambda_max(U^{1/2} C U^{1/2})
    <= Tr(U C)`` and ``u = lambda_min(U)`` (module docstring of
    :mod:`nonrev.regimes.theory`); 25% margin. Only a start for the root search.
    """
    c = float(np.sum(fr.precision * C))  # blocks: the sum of the blocks' traces
    return 1.25 * np.log1p(c / level) / (2.0 * fr.lambda_min)


# ----------------------------------------------------------------------------- speciation
def speciation_ratio(fr: Frame, Cb: np.ndarray, Cw: np.ndarray | None) -> Callable[[float], float]:
    """``t -> r(t)``: the largest generalised eigenvalue of the whitened pair
    ``(K_t(C_b), I + K_t(C_w))``, i.e. of ``(M_t C_b M_t^T, Gamma_t)``. With a
    :class:`BlockFrame` (``C_b``, ``C_w`` stacks (m, g, g)): the largest over the
    blocks of each block's generalised eigenvalue."""
    d = Cb.shape[-1]
    whiten = whitened(fr, [Cb] if Cw is None else [Cb, Cw])
    if isinstance(fr, BlockFrame):

        def block_ratio(t: float) -> float:
            K = whiten(t)
            if Cw is None:
                return float(np.linalg.eigvalsh(K[0]).max())
            L = np.linalg.cholesky(np.eye(d) + K[1])  # Gamma = L L^T, per block
            X = np.linalg.solve(L, np.swapaxes(np.linalg.solve(L, K[0]), -1, -2))
            return float(np.linalg.eigvalsh(sym(X)).max())

        return block_ratio

    def ratio(t: float) -> float:
        K = whiten(t)
        G = None if Cw is None else np.eye(d) + K[1]
        return float(
            scipy.linalg.eigh(K[0], G, eigvals_only=True, subset_by_index=[d - 1, d - 1])[0]
        )

    return ratio


def speciation_point(M: np.ndarray, S: np.ndarray, Cb: np.ndarray, Cw: np.ndarray) -> dict:
    """``r``, its top eigenvector ``v`` (``v^T Gamma v = 1``), ``|v|^2`` and
    ``dr/dt = -2 r |v|^2`` from the kernel pair ``(M_t, Sigma_t)``."""
    B = M @ Cb @ M.T
    G = M @ Cw @ M.T + S
    d = M.shape[0]
    w, V = scipy.linalg.eigh(0.5 * (B + B.T), 0.5 * (G + G.T), subset_by_index=[d - 1, d - 1])
    r, v = float(w[0]), V[:, 0]
    vv = float(v @ v)
    return {"r": r, "v": v, "vv": vv, "dr_dt": -2.0 * r * vv}


def speciation_zero_limit(Cb: np.ndarray, Cw: np.ndarray | None) -> float:
    """``r(0+) = lambda_max(C_b, C_w)`` (``inf`` when ``C_w`` is singular on the range
    of ``C_b``, e.g. ``C_w = 0``): the supremum of ``r`` over ``t > 0``. Stacks
    (m, g, g): the largest over the blocks with ``C_b`` non-zero."""
    if Cb.ndim == 3:
        return max(
            (
                speciation_zero_limit(b, None if Cw is None else w)
                for b, w in zip(Cb, Cb if Cw is None else Cw)
                if np.any(b)
            ),
            default=0.0,
        )
    if Cw is None or not np.any(Cw):
        return math.inf
    d = Cb.shape[0]
    w = np.linalg.eigvalsh(Cw)
    if w[0] <= 1e-12 * w[-1]:
        # Cw singular: r(0+) is finite only if C_b lives in range(Cw); be safe.
        P, W = np.linalg.eigh(Cw)
        null = W[:, P <= 1e-12 * P[-1]]
        if np.linalg.norm(null.T @ Cb @ null) > 1e-12 * np.linalg.norm(Cb):
            return math.inf
        keep = W[:, P > 1e-12 * P[-1]]
        Cb, Cw, d = keep.T @ Cb @ keep, keep.T @ Cw @ keep, keep.shape[1]
    return float(
        scipy.linalg.eigh(sym(Cb), sym(Cw), eigvals_only=True, subset_by_index=[d - 1, d - 1])[0]
    )


# ----------------------------------------------------------------------------- collapse
def isotropic_snr(c: float, gammas: np.ndarray, t: float) -> np.ndarray:
    """``s_i(t) = c gamma_i / (e^{2ct} - 1)`` for ``U = c I`` (any Q)."""
    with np.errstate(over="ignore"):
        return c * gammas / np.expm1(2.0 * c * t)


def collapse_gap(
    fr: Frame, C: np.ndarray, gammas: np.ndarray | None = None
) -> Callable[[float], float]:
    """``t -> g(t) = (1/2) log det(I + K_t(C))``, by one Cholesky factorisation
    (``gammas``: the eigenvalues of ``C``, used on the isotropic route). With a
    :class:`BlockFrame` (``C`` a stack (m, g, g)): the sum of the blocks' gaps."""
    if fr.isotropic:
        c = float(fr.eigvals[0])
        gam = np.linalg.eigvalsh(C) if gammas is None else gammas
        gam = np.clip(gam, 0.0, None)
        return lambda t: 0.5 * float(np.log1p(isotropic_snr(c, gam, t)).sum())
    whiten = whitened(fr, [C])
    d = C.shape[-1]
    if isinstance(fr, BlockFrame):  # the sum of the blocks' gaps

        def block_gap(t: float) -> float:
            L = np.linalg.cholesky(np.eye(d) + whiten(t)[0])
            return float(np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum())

        return block_gap

    def gap(t: float) -> float:
        L = np.linalg.cholesky(np.eye(d) + whiten(t)[0])
        return float(np.log(np.diag(L)).sum())

    return gap


def collapse_point(M: np.ndarray, S: np.ndarray, C: np.ndarray) -> dict:
    """``g``, ``dg/dt = tr G^{-1} - tr Sigma^{-1}``, ``G^{-1}`` and ``Sigma^{-1}`` from
    the kernel pair ``(M_t, Sigma_t)`` (``G = M C M^T + Sigma``)."""
    G = M @ C @ M.T + S
    Lg = np.linalg.cholesky(0.5 * (G + G.T))
    Ls = np.linalg.cholesky(0.5 * (S + S.T))
    g = float(np.log(np.diag(Lg)).sum() - np.log(np.diag(Ls)).sum())
    G_inv = scipy.linalg.cho_solve((Lg, True), np.eye(len(G)))
    S_inv = scipy.linalg.cho_solve((Ls, True), np.eye(len(S)))
    return {
        "g": g,
        "dg_dt": float(np.trace(G_inv) - np.trace(S_inv)),
        "G_inv": G_inv,
        "S_inv": S_inv,
    }


def log_positive(x: float) -> float:
    """``log max(x, 1e-300)``: the criteria are compared on a log scale."""
    return math.log(max(x, _TINY))
