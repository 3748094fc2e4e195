"""The non-reversible Ornstein-Uhlenbeck forward process and its exact Gaussian kernel.

    dx = -A x dt + sqrt(2) dW,    A = (I + Q) U,

with ``U`` symmetric positive definite and ``Q`` antisymmetric. For every ``Q`` the
stationary law is ``N(0, U^{-1})``; ``Q = 0`` is the reversible process. The exact
transition kernel is

    x_t | x_0 ~ N(M_t x_0, Sigma_t),  M_t = exp(-t A),
    Sigma_t = U^{-1} - M_t U^{-1} M_t^T = int_0^t exp(-s A) 2 exp(-s A^T) ds.

The closed form ``U^{-1} - M U^{-1} M^T`` loses every digit to cancellation at small
``t`` (``Sigma_t = 2 t I + O(t^2)``), so nonrev never uses it. ``_exact_pair`` computes
``(M_t, Sigma_t)`` by scaling and squaring on the *pair*: a Taylor series of both at
``h = t / 2^s`` with ``h ||A|| <= 1/4``, then ``s`` doublings

    M_{2h} = M_h M_h,    Sigma_{2h} = M_h Sigma_h M_h^T + Sigma_h,

whose terms are all positive semi-definite, so the relative accuracy of ``Sigma`` is
kept at every ``t`` (tested to 1e-10 relative on t in [1e-8, 100], d up to 512 and
cond(U) up to 1e4 against closed forms).

On a grid of times the same semigroup law steps from one grid point to the next,
``M_{t+g} = M_g M_t`` and ``Sigma_{t+g} = M_g Sigma_t M_g^T + Sigma_g``, with one
exact pair per distinct gap ``g`` (a single one on a uniform grid); see
:meth:`OUProcess.kernel`.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

from nonrev.linalg import (
    as_antisymmetric,
    as_batch,
    as_psd,
    as_spd,
    as_times,
    as_vector,
    psd_factor,
    spd_inverse,
    spd_sqrt,
    sym,
)
from nonrev.operators import IdentityBasis, OperatorStack, stack
from nonrev.process.stiffness import MagnusProgress
from nonrev.progress import Heartbeat
from nonrev.threads import single_threaded

_TAYLOR_THETA = 0.25  # ||h A||_1 bound at the base of the scaling and squaring


def _exact_pair(A: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(-t A), int_0^t exp(-s A) 2 exp(-s A^T) ds)`` to full relative accuracy."""
    d = A.shape[0]
    eye = np.eye(d)
    if t == 0.0:
        return eye.copy(), np.zeros((d, d))
    norm = np.linalg.norm(A, 1)
    s = 0 if t * norm <= _TAYLOR_THETA else int(math.ceil(math.log2(t * norm / _TAYLOR_THETA)))
    h = t / 2.0**s
    # Taylor series at h: M = sum (-hA)^k / k!, Sigma = sum_k h^{k+1}/(k+1)! L^k(2I)
    # with L(X) = -(A X + X A^T), which keeps X symmetric (so X A^T = (A X)^T).
    M = eye.copy()
    term_m = eye.copy()
    term_s = 2.0 * h * eye
    S = term_s.copy()
    for k in range(1, 40):
        term_m = (-h / k) * (A @ term_m)
        AX = A @ term_s
        term_s = (-h / (k + 1)) * (AX + AX.T)
        M += term_m
        S += term_s
        if (
            np.abs(term_m).max() <= 1e-18 * np.abs(M).max()
            and np.abs(term_s).max() <= 1e-18 * np.abs(S).max()
        ):
            break
    for _ in range(s):
        S = sym(M @ S @ M.T + S)
        M = M @ M
    return M, S


# ---------------------------------------------------------------------------- gDDIM factor
# Nodes of the three-point Gauss-Legendre rule on [0, 1] (sixth-order Magnus).
_GL3 = (0.5 - math.sqrt(15.0) / 10.0, 0.5, 0.5 + math.sqrt(15.0) / 10.0)
#: Local error allowed in one Magnus step of the rotation ``O_t`` (largest entry of
#: the difference between one step and two half steps).
_MAGNUS_TOL = 1e-11


def _exact_pairs(A: np.ndarray, ts) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_exact_pair` for many times at once: stacks (n, d, d) of ``M_t`` and
    ``Sigma_t`` (the same scaling and squaring, vectorised over the times).

    ``A`` may also be a stack of blocks (m, g, g) (a block-diagonal drift, e.g. in a
    frequency basis): then the stacks are (n, m, g, g), every block exact, with the
    scaling chosen by the largest block norm."""
    ts = np.asarray(ts, dtype=np.float64).reshape(-1)
    n, g = ts.size, A.shape[-1]
    lead = (1,) * A.ndim  # broadcasts a per-time scalar over blocks and entries
    axes = tuple(range(1, A.ndim + 1))
    norm = np.linalg.norm(A, 1) if A.ndim == 2 else float(np.abs(A).sum(axis=-2).max())
    with np.errstate(divide="ignore"):
        s = np.where(
            ts * norm <= _TAYLOR_THETA,
            0,
            np.ceil(np.log2(np.maximum(ts * norm, 1e-300) / _TAYLOR_THETA)),
        )
    s = s.astype(int)
    h = ts / 2.0**s
    eye = np.broadcast_to(np.eye(g), (n, *A.shape))
    M = eye.copy()
    term_m = eye.copy()
    term_s = (2.0 * h).reshape(n, *lead) * eye
    S = term_s.copy()
    for k in range(1, 40):
        term_m = (-h / k).reshape(n, *lead) * (A @ term_m)
        AX = A @ term_s
        term_s = (-h / (k + 1)).reshape(n, *lead) * (AX + np.swapaxes(AX, -1, -2))
        M += term_m
        S += term_s
        if (np.abs(term_m).max(axis=axes) <= 1e-18 * np.abs(M).max(axis=axes)).all() and (
            np.abs(term_s).max(axis=axes) <= 1e-18 * np.abs(S).max(axis=axes) + 0.0
        ).all():
            break
    for j in range(int(s.max(initial=0))):
        sel = s > j
        Mj = M[sel]
        Sj = Mj @ S[sel] @ np.swapaxes(Mj, -1, -2) + S[sel]
        S[sel] = 0.5 * (Sj + np.swapaxes(Sj, -1, -2))
        M[sel] = Mj @ Mj
    return M, S


def _nearest_orthogonal(O: np.ndarray) -> np.ndarray:
    """The orthogonal polar factor of ``O`` (a stack or one matrix): the nearest
    orthogonal matrix, removing the rounding drift of long products."""
    u, _, vt = np.linalg.svd(O)
    return u @ vt


_LOWER: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _rotation_rates(A: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``Omega`` in ``O' = Omega O`` for ``R_t = L_t O_t`` (``L_t`` the Cholesky factor
    of ``Sigma_t``), for a stack (n, d, d) of ``Sigma``s (or (n, m, g, g) with ``A`` a stack of
    blocks): antisymmetric and bounded as
    ``t -> 0``.

    From ``R' = (-A + Sigma^{-1}) R`` and ``L^{-1} L' = Phi(L^{-1} Sigma' L^{-T})``
    (``Phi``: strictly lower part plus half the diagonal), with ``B = L^{-1} A L`` and
    ``N = L^{-1} L^{-T}``,

        Omega = -B + Phi(B + B^T) + (triu(N, 1) - tril(N, -1)).

    The diagonal of ``N`` (``~ 1/(2t)``) cancels exactly and is never used, so no
    term of size ``Sigma_t^{-1}`` enters.
    """
    d = A.shape[-1]
    if d not in _LOWER:
        _LOWER[d] = (np.tril(np.ones((d, d)), -1), np.eye(d), np.triu(np.ones((d, d)), 1))
    lo, di, up = _LOWER[d]
    L = np.linalg.cholesky(0.5 * (S + np.swapaxes(S, -1, -2)))
    Linv = np.linalg.inv(L)
    B = Linv @ A @ L
    N = Linv @ np.swapaxes(Linv, -1, -2)
    X = B + np.swapaxes(B, -1, -2)
    W = -B + X * lo + 0.5 * X * di + N * up - N * lo
    return 0.5 * (W - np.swapaxes(W, -1, -2))


def _magnus6_batch(A, S, O, h, n) -> tuple[np.ndarray, np.ndarray]:
    """Integrate ``O' = Omega O`` for a batch of starts (``S``, ``O``: (q, d, d) at
    their start times) over ``n[i]`` substeps of length ``h[i]``; returns the ``O``s
    and the ``Sigma``s at the ends (by the exact semigroup steps)."""
    S, O = S.copy(), O.copy()
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    n = np.asarray(n)
    q = h.size
    Ms, Ss = _exact_pairs(A, np.concatenate([c * h for c in (*_GL3, 1.0)]))
    pairs = [(Ms[i * q : (i + 1) * q], Ss[i * q : (i + 1) * q]) for i in range(4)]
    r15 = math.sqrt(15.0)
    T = lambda a: np.swapaxes(a, -1, -2)  # noqa: E731
    comm = lambda a, b: a @ b - b @ a  # noqa: E731
    for j in range(int(n.max(initial=0))):
        sel = n > j
        Sj, hj = S[sel], h[sel].reshape(-1, *(1,) * (S.ndim - 1))
        W = [hj * _rotation_rates(A, m[sel] @ Sj @ T(m[sel]) + sg[sel]) for (m, sg) in pairs[:3]]
        a1 = W[1]
        a2 = (r15 / 3.0) * (W[2] - W[0])
        a3 = (10.0 / 3.0) * (W[2] - 2.0 * W[1] + W[0])
        c1 = comm(a1, a2)
        c2 = -comm(a1, 2.0 * a3 + c1) / 60.0
        Wm = a1 + a3 / 12.0 + comm(-20.0 * a1 - a3 + c1, a2 + c2) / 240.0
        O[sel] = scipy.linalg.expm(0.5 * (Wm - T(Wm))) @ O[sel]
        mh, sh = pairs[3][0][sel], pairs[3][1][sel]
        Sn = mh @ Sj @ T(mh) + sh
        S[sel] = 0.5 * (Sn + T(Sn))
    return O, S


class Frame:
    """Checkpoints of a frame integration ``R = chol(S) O``, ``O' = Omega O``, started
    at ``t0`` with ``O = I`` and covariance ``S0`` (``Sigma_0 = 0`` by default: the
    gDDIM factor), for a drift ``A`` (d, d) or a stack of blocks (m, g, g).

    Any ``S`` that obeys the Lyapunov ODE ``S' = 2I - A S - S A^T`` (e.g.
    ``G_t = M_t C M_t^T + Sigma_t``) has the frame ``R = chol(S) O`` with
    ``R' = (-A + S^{-1}) R`` integrated by the same rates (``_rotation_rates``); the
    flow map ``R(s) R(t)^{-1}`` does not depend on ``t0``. Steps are adaptive (one
    Magnus step of ``h`` against two of ``h / 2``, accepted within ``_MAGNUS_TOL``,
    the largest entry over all blocks), and the accepted points are kept, so a later
    call takes one Magnus step from the nearest checkpoint below each time.
    """

    def __init__(self, A: np.ndarray, t0: float = 0.0, S0=None, process=None):
        self.A = A
        # for the cost check and progress (MagnusProgress); a weak reference, since the
        # process keeps its gDDIM frame: a cycle would hold its arrays until a full gc
        self._process = None if process is None else weakref.ref(process)
        eye = np.broadcast_to(np.eye(A.shape[-1]), A.shape).copy()
        S0 = np.zeros_like(eye) if S0 is None else np.asarray(S0, dtype=np.float64)
        norm = np.linalg.norm(A, 1) if A.ndim == 2 else float(np.abs(A).sum(axis=-2).max())
        self.t, self.O, self.S = [float(t0)], [eye], [sym(S0)]
        self.h = 1e-3 / (1.0 + norm)

    def rotations(self, ts: np.ndarray) -> np.ndarray:
        """``O_t`` at each time (at or after the start): one Magnus step from the
        nearest checkpoint below it (all at once), after extending the checkpoints past
        ``max(ts)`` when needed."""
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        self._extend(float(ts.max()))
        knots = np.asarray(self.t)
        k = np.maximum(np.searchsorted(knots, ts, side="right") - 1, 0)
        rest = np.maximum(ts - knots[k], 0.0)
        O0 = np.stack([self.O[i] for i in k])
        S0 = np.stack([self.S[i] for i in k])
        return _nearest_orthogonal(_magnus6_batch(self.A, S0, O0, rest, (rest > 0).astype(int))[0])

    def rate_bound(self) -> float:
        """``max_t ||Omega_t||`` of this frame (48 probes from 1e-6 to ``30 / rate``),
        for covariances ``M_t S0 M_t^T + Sigma_t`` from its start ``S0``."""
        rate = float(np.linalg.eigvals(self.A).real.min())
        probe = np.geomspace(1e-6, 30.0 / max(rate, 1e-12), 48)
        M, S = _exact_pairs(self.A, probe)
        G = M @ self.S[0] @ np.swapaxes(M, -1, -2) + S
        W = _rotation_rates(self.A, 0.5 * (G + np.swapaxes(G, -1, -2)))
        return float(np.linalg.norm(W, 2, axis=(-2, -1)).max())

    def step_seconds(self) -> float:
        """Seconds of one Magnus step evaluation from the last checkpoint (timed)."""
        t0 = time.perf_counter()
        _magnus6_batch(self.A, self.S[-1][None], self.O[-1][None], [self.h], [1])
        return time.perf_counter() - t0

    def factor(self, ts: np.ndarray, S: np.ndarray) -> np.ndarray:
        """``R = chol(S) O_t`` at the times ``ts`` with their covariances ``S``."""
        return np.linalg.cholesky(S) @ self.rotations(ts)

    def _extend(self, t_end: float) -> None:
        """Add checkpoints ``(t, O_t, S_t)`` until the last one is past ``t_end``:
        accepted (keeping the two half steps) when one step and two half steps differ
        by at most ``_MAGNUS_TOL``; ``h`` is rescaled by the usual ``(tol / err)^(1/7)``
        rule either way. Every accepted step is at least as long as the gap to the
        next checkpoint, so one step from a checkpoint to any time before the next is
        within the same tolerance."""
        A = self.A
        process = None if self._process is None else self._process()
        progress = (
            None if process is None else MagnusProgress(process, self, t_end)
        )  # refuses/warns before a long run
        while self.t[-1] <= t_end:
            if progress is not None:
                progress.step(self)
            t0, O0, S0, h = self.t[-1], self.O[-1][None], self.S[-1][None], self.h
            big = _magnus6_batch(A, S0, O0, [h], [1])[0][0]
            half, S1 = (a[0] for a in _magnus6_batch(A, S0, O0, [0.5 * h], [2]))
            err = float(np.abs(big - half).max())
            factor = 0.9 * (_MAGNUS_TOL / max(err, 1e-300)) ** (1.0 / 7.0)
            if err <= _MAGNUS_TOL:
                self.t.append(float(t0 + h))
                self.O.append(_nearest_orthogonal(half))  # no drift across checkpoints
                self.S.append(S1)
                self.h = h * min(4.0, factor)
            else:
                self.h = h * max(0.2, factor)
                if t0 + self.h == t0:  # rounding alone exceeds the tolerance: no progress
                    raise FloatingPointError(
                        f"gDDIM factor: the Magnus step underflowed at t = {t0:.6g} (step "
                        f"error {err:.2g} > {_MAGNUS_TOL:g} at every step size); U or Q "
                        "is too ill-conditioned for float64"
                    )


#: The methods and attributes every kind of kernel offers the rooms above the process
#: (OUProcess and nonrev.process.SpectralProcess): see docs/ARCHITECTURE.md.
BLOCK_INTERFACE = (
    "dim",
    "basis",
    "drift_blocks",
    "precision_blocks",
    "stationary_cov_blocks",
    "pair_blocks",
    "kernel_blocks",
    "gddim_blocks",
    "frame",
    "to_blocks",
    "vector_to_blocks",
    "vector_from_blocks",
    "operators",
    "relaxation_rate",
)


def has_block_interface(process) -> bool:
    """Whether ``process`` offers :data:`BLOCK_INTERFACE` (any kind of kernel)."""
    return all(hasattr(process, a) for a in BLOCK_INTERFACE)


def sample_inputs(dim: int, x0, t, generator):
    """The checked inputs of a process's ``sample(x0, t, generator)``: ``x0`` as a
    (B, dim) tensor, the times (one, or one per row: ValueError otherwise), whether
    there was one, and standard normal noise of ``x0``'s shape drawn from
    ``generator`` (on its device) and moved to ``x0``'s."""
    x0 = as_batch("x0", x0, dim)
    times, scalar = as_times("t", t.detach().cpu().numpy() if torch.is_tensor(t) else t)
    if not scalar and times.shape[0] != x0.shape[0]:
        raise ValueError(
            f"t must be a scalar or have one time per row of x0 "
            f"({x0.shape[0]}), got {times.shape[0]}"
        )
    z = torch.randn(
        x0.shape,
        generator=generator,
        dtype=x0.dtype,
        device=generator.device if generator is not None else x0.device,
    )
    return x0, times, scalar, z.to(x0.device)


@dataclass(frozen=True)
class Kernel:
    """The exact kernel of an :class:`OUProcess` on an increasing grid of times.

    Attributes (torch tensors on one device and dtype; ``n`` grid points):

    * ``times`` (n,): the grid, strictly increasing, in the process's intrinsic time.
    * ``M`` (n, d, d): ``exp(-t_i A)``.
    * ``Sigma`` (n, d, d): ``Sigma_{t_i}``.
    * ``L`` (n, d, d): lower-triangular factors, ``L_i L_i^T = Sigma_i`` (zero at t = 0).
    * ``step_M``, ``step_Sigma`` (n-1, d, d): the kernel of each gap, mapping
      ``t_i`` to ``t_{i+1}``: ``M_{i+1} = step_M[i] M_i`` and
      ``Sigma_{i+1} = step_M[i] Sigma_i step_M[i]^T + step_Sigma[i]``.
    * ``R`` (n, d, d): the gDDIM factor (:meth:`OUProcess.gddim_factor`),
      ``R_i R_i^T = Sigma_i`` with ``dR/dt = (-A + Sigma_t^{-1}) R``: the square
      root in which the noise of a point mass is constant along the probability-flow
      ODE. Computed on first access (it costs a Magnus integration, see
      :meth:`OUProcess.gddim_factor`) and then kept.
    """

    times: torch.Tensor
    M: torch.Tensor
    Sigma: torch.Tensor
    L: torch.Tensor
    step_M: torch.Tensor
    step_Sigma: torch.Tensor
    process: "OUProcess | None" = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def R(self) -> torch.Tensor:
        """The gDDIM factor on the grid, (n, d, d), in the kernel's dtype and device."""
        if self.process is None:
            raise ValueError("this Kernel was built without its process; use OUProcess.kernel")
        times = self.times.detach().cpu().double().numpy()
        R = self.process.gddim_factor(times)
        return torch.from_numpy(R).to(device=self.M.device, dtype=self.M.dtype)

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def index(self, t: float) -> int:
        """Index of grid time ``t`` (to 1e-9 relative); ValueError if ``t`` is not on the grid."""
        times = self.times.detach().cpu().double()
        i = int(torch.argmin((times - float(t)).abs()))
        if abs(float(times[i]) - float(t)) > 1e-9 * max(1.0, abs(float(t))):
            raise ValueError(f"t = {t} is not a time of this kernel grid")
        return i


class OUProcess:
    """The forward process ``dx = -(I + Q) U x dt + sqrt(2) dW``.

    Parameters
    ----------
    U : (d, d) array_like
        Symmetric positive definite. Fixes the stationary law ``N(0, U^{-1})``.
    Q : (d, d) array_like, optional
        Antisymmetric (``Q^T = -Q``). ``None`` means ``Q = 0`` (reversible).

    Attributes ``U``, ``Q``, ``A = (I + Q) U``, ``stationary_cov = U^{-1}`` and
    ``dim`` are float64 numpy arrays (``dim`` an int). The theory side (this class's
    methods that return numpy) runs in float64; :meth:`kernel` and :meth:`sample`
    return torch tensors on the device and dtype asked for.
    """

    def __init__(self, U, Q=None):
        self.U = as_spd("U", U)
        self.dim = int(self.U.shape[0])
        if Q is None:
            self.Q = np.zeros((self.dim, self.dim))
        else:
            self.Q = as_antisymmetric("Q", Q, dim=self.dim)
        self.A = (np.eye(self.dim) + self.Q) @ self.U
        self.stationary_cov = spd_inverse(self.U)
        self._cache: OrderedDict[float, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"OUProcess(dim={self.dim}, reversible={not np.any(self.Q)}, "
            f"relaxation_rate={self.relaxation_rate():.4g})"
        )

    @property
    def is_reversible(self) -> bool:
        """True when ``Q = 0`` (detailed balance holds)."""
        return not np.any(self.Q)

    # ------------------------------------------------------------------ kernel in blocks
    # What every kind of kernel offers the samplers (nonrev.operators): matrices as
    # stacks of blocks (..., m, g, g) in the kernel's basis. A dense kernel is one
    # block (m = 1, g = d) in the identity basis.
    @functools.cached_property
    def basis(self) -> IdentityBasis:
        """The kernel's basis (:class:`nonrev.operators.Basis`): the identity here."""
        return IdentityBasis(self.dim)

    @property
    def drift_blocks(self) -> np.ndarray:
        """``A`` as blocks, (1, d, d)."""
        return self.A[None]

    @property
    def precision_blocks(self) -> np.ndarray:
        """``U`` as blocks, (1, d, d)."""
        return self.U[None]

    @property
    def stationary_cov_blocks(self) -> np.ndarray:
        """``U^{-1}`` as blocks, (1, d, d)."""
        return self.stationary_cov[None]

    def pair_blocks(self, times) -> tuple[np.ndarray, np.ndarray]:
        """``(M_t, Sigma_t)`` at any times, each (n, 1, d, d), computed exactly per time
        (no semigroup steps)."""
        M, S = _exact_pairs(self.A, times)
        return M[:, None], S[:, None]

    def kernel_blocks(self, times):
        """The exact kernel on an increasing grid as float64 blocks (n, 1, d, d):
        ``(M, Sigma, L, step_M, step_Sigma)`` with ``L`` the Cholesky factors and the
        gap kernels (n - 1 of them) as in :class:`Kernel`."""
        M, S, L, sM, sS = self._kernel_arrays(times)
        n = M.shape[0]
        if sM.shape[0] != max(n - 1, 0):  # uniform: one gap stored
            sM = np.broadcast_to(sM, (n - 1, *sM.shape[1:]))
            sS = np.broadcast_to(sS, (n - 1, *sS.shape[1:]))
        return tuple(a[:, None] for a in (M, S, L, sM, sS))

    def gddim_blocks(self, times) -> np.ndarray:
        """The gDDIM factor (:meth:`gddim_factor`) at 1-D ``times`` as blocks (n, 1, d, d)."""
        return self.gddim_factor(np.asarray(times, dtype=np.float64).reshape(-1))[:, None]

    def to_blocks(self, name: str, matrix) -> np.ndarray:
        """A (d, d) matrix as blocks (1, d, d); ``name`` is for errors of kernels whose
        blocks cannot hold every matrix."""
        return np.asarray(matrix, dtype=np.float64)[None]

    def vector_to_blocks(self, v) -> np.ndarray:
        """A vector (..., d) in block coordinates (..., 1, d)."""
        return np.asarray(v, dtype=np.float64)[..., None, :]

    def vector_from_blocks(self, vb) -> np.ndarray:
        """Block coordinates (..., 1, d) back to a vector (..., d)."""
        return np.asarray(vb)[..., 0, :]

    def operators(self, blocks, *, dtype=torch.float64, device=None) -> OperatorStack:
        """Blocks (n, 1, d, d) as a :class:`nonrev.operators.DenseStack` in ``dtype``
        on ``device``."""
        return stack(blocks, self.basis, dtype=dtype, device=device)

    # ------------------------------------------------------------------ exact kernel
    def mean_matrix(self, t) -> np.ndarray:
        """``M_t = exp(-t A)``: (d, d) for a scalar ``t``, (len(t), d, d) for a 1-D array."""
        return self.mean_and_cov(t)[0]

    def cov(self, t) -> np.ndarray:
        """``Sigma_t``, the covariance of ``x_t | x_0``: (d, d) or (len(t), d, d)."""
        return self.mean_and_cov(t)[1]

    def mean_and_cov(self, t) -> tuple[np.ndarray, np.ndarray]:
        """``(M_t, Sigma_t)`` together, at the cost of one of them.

        Times kept by :meth:`prefetch` are looked up; others are computed exactly.
        """
        times, scalar = as_times("t", t)
        pairs = [self._pair(float(s)) for s in times]
        M = np.stack([p[0] for p in pairs])
        S = np.stack([p[1] for p in pairs])
        return (M[0], S[0]) if scalar else (M, S)

    # Pairs kept by prefetch(): a bounded LRU keyed by the exact float time.
    _CACHE_BYTES = 256 * 2**20

    def _pair(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(t)
        if hit is not None:
            self._cache.move_to_end(t)
            return hit
        return _exact_pair(self.A, t)

    @staticmethod
    def _is_uniform(grid: np.ndarray) -> bool:
        gaps = np.diff(grid)
        return gaps.size > 0 and bool(np.allclose(gaps, gaps[0], rtol=1e-12, atol=0.0))

    def _step_pairs(self, grid: np.ndarray):
        """Yield ``(M_t, Sigma_t, M_gap, Sigma_gap)`` along an increasing grid by the
        semigroup law; the gap pair of the first point is ``None``. One exact pair per
        gap, a single one on a uniform grid."""
        gaps = np.diff(grid)
        uniform = self._is_uniform(grid)
        if uniform:
            gM, gS = _exact_pair(self.A, float(gaps[0]))
        M, S = self._pair(float(grid[0]))
        yield M, S, None, None
        for g in gaps:
            if not uniform:
                gM, gS = _exact_pair(self.A, float(g))
            S = sym(gM @ S @ gM.T + gS)
            M = gM @ M
            yield M, S, gM, gS

    @single_threaded
    def prefetch(self, times) -> None:
        """Precompute ``(M_t, Sigma_t)`` on an increasing grid (three matrix products a
        point) and keep them for :meth:`mean_and_cov`, so that scores evaluated along a
        sampler's grid skip the per-time exact computation. Memory is bounded
        (256 MiB of pairs, least recently used dropped); grids that would not fit are
        kept only in part.
        """
        grid, _ = as_times("times", times)
        grid = np.unique(grid)
        cache = self._cache
        capacity = max(1, self._CACHE_BYTES // (16 * self.dim**2))
        if all(float(t) in cache for t in grid):
            return
        grid = grid[-capacity:]
        for t, (M, S, _, _) in zip(grid, self._step_pairs(grid)):
            cache[float(t)] = (M, S)
            cache.move_to_end(float(t))
        while len(cache) > capacity:
            cache.popitem(last=False)

    @single_threaded
    def kernel(self, times, *, device=None, dtype=torch.float32) -> Kernel:
        """Precompute the exact kernel on a strictly increasing grid of times.

        The work is O(d^3) per grid point (three matrix products and a Cholesky
        factorisation), plus one exact pair per distinct gap; a uniform grid has a
        single gap. Computed in float64 and stored in ``dtype`` on ``device``.
        """
        M_all, S_all, L_all, step_M, step_S = self._kernel_arrays(times)
        n, d = M_all.shape[0], self.dim
        uniform = step_M.shape[0] == 1 and n > 2

        def out(a):
            return torch.from_numpy(a).to(device=device, dtype=dtype)

        def steps(a):
            return out(a).expand(n - 1, d, d) if uniform else out(a)

        return Kernel(
            times=torch.as_tensor(self._grid_checked(times), dtype=dtype, device=device),
            M=out(M_all),
            Sigma=out(S_all),
            L=out(L_all),
            step_M=steps(step_M),
            step_Sigma=steps(step_S),
            process=self,
        )

    @staticmethod
    def _grid_checked(times) -> np.ndarray:
        grid, _ = as_times("times", times)
        if grid.size >= 2 and not np.all(np.diff(grid) > 0):
            raise ValueError("times must be strictly increasing")
        return grid

    def _kernel_arrays(self, times):
        """``(M, Sigma, L, step_M, step_Sigma)`` on an increasing grid, float64 numpy;
        a uniform grid stores its one gap kernel once (``step_*`` of length 1)."""
        grid = self._grid_checked(times)
        n, d = grid.size, self.dim
        # Everything is computed in numpy and handed to torch once at the end:
        # interleaving torch ops with numpy's BLAS makes the two thread pools fight
        # over the cores (measured 20x slower at d = 256 on 2 cores).
        M_all = np.empty((n, d, d))
        S_all = np.empty((n, d, d))
        L_all = np.empty((n, d, d))
        uniform = self._is_uniform(grid)  # then every step is the same: store one
        step_M = np.empty((1 if uniform else max(n - 1, 0), d, d))
        step_S = np.empty_like(step_M)
        beat = Heartbeat("exact kernel on the grid", n)  # silent unless it runs long
        for i, (M, S, gM, gS) in enumerate(self._step_pairs(grid)):
            beat.tick(i)
            M_all[i], S_all[i], L_all[i] = M, S, psd_factor(S)
            if i > 0 and (i == 1 or not uniform):
                step_M[i - 1], step_S[i - 1] = gM, gS
        return M_all, S_all, L_all, step_M, step_S

    # ------------------------------------------------------------------ gDDIM factor
    @single_threaded
    def gddim_factor(self, times) -> np.ndarray:
        """The gDDIM square root ``R_t`` of ``Sigma_t`` at each time (float64 numpy,
        (d, d) for a scalar, (n, d, d) for a 1-D array).

        ``R_t`` solves ``dR/dt = (-A + Sigma_t^{-1}) R`` with ``R_t ~ sqrt(2 t) I`` as
        ``t -> 0``; then ``R_t R_t^T = Sigma_t`` and, for data at a point ``a``,
        ``x_t = M_t a + R_t eps`` keeps ``eps`` constant along the probability-flow
        ODE (THEORY.md section 5). The equation is stiff near ``t = 0``
        (``Sigma_t^{-1} ~ 1/(2t)``), so it is never integrated as it stands: with
        ``L_t`` the Cholesky factor of ``Sigma_t`` (full relative accuracy from the
        exact kernel), ``R_t = L_t O_t`` with ``O_t`` orthogonal, ``O_0 = I``, and
        ``O' = Omega_t O`` where ``Omega_t`` is antisymmetric and bounded at every
        ``t`` (``_rotation_rates``: the ``1/(2t)`` parts cancel in closed form). ``O``
        is integrated by a sixth-order Magnus method (three Gauss points, an
        orthogonal exponential per step) with adaptive steps: a step is accepted when it
        differs from two half steps by at most 1e-11 (largest entry), and the accepted
        points are kept as checkpoints, so a later call takes one Magnus step from the
        nearest checkpoint below each time. ``R R^T = Sigma`` holds to rounding by
        construction; ``O`` is accurate to about 1e-9. The step is limited by how fast
        ``Omega_t`` *changes*, not by its size: ``Omega_t`` is large (about ``||A||``)
        under a strong current but settles with ``Sigma_t``, so the steps grow to many
        radians of rotation each once ``Sigma_t`` is near stationary.
        """
        grid, scalar = as_times("times", times)
        d = self.dim
        out = np.zeros((grid.size, d, d))
        pos = grid > 0
        if pos.any():
            tp = grid[pos]
            S = np.stack([self._pair(float(t))[1] for t in tp])
            out[pos] = np.linalg.cholesky(0.5 * (S + np.swapaxes(S, 1, 2))) @ self._rotations(tp)
        return out[0] if scalar else out

    def rotation_rate_bound(self) -> float:
        """``max_t ||Omega_t||_2``, the rate at which the gDDIM factor ``R_t`` rotates
        against the Cholesky factor ``L_t`` (sampled at 48 times from 1e-6 to
        ``30 / rate``, where ``Sigma_t`` has settled; see :meth:`gddim_factor`)."""
        if getattr(self, "_omega", None) is None:
            probe = np.geomspace(1e-6, 30.0 / max(self.relaxation_rate(), 1e-12), 48)
            W = _rotation_rates(self.A, _exact_pairs(self.A, probe)[1])
            self._omega = float(np.linalg.norm(W, 2, axis=(1, 2)).max())
        return self._omega

    def frame(self, t0: float = 0.0, S0=None) -> "Frame":
        """A frame ``R = chol(S) O`` with ``R' = (-A + S^{-1}) R`` started at ``t0`` with
        ``O = I`` and covariance ``S0`` (blocks (1, d, d) or a (d, d) matrix; any ``S``
        that obeys ``S' = 2I - A S - S A^T``, e.g. ``G_t = M_t C M_t^T + Sigma_t``).
        See :class:`Frame`; the gDDIM factor is the frame started at ``Sigma_0 = 0``."""
        if S0 is not None:
            S0 = np.asarray(S0, dtype=np.float64).reshape(self.drift_blocks.shape)
        return Frame(self.drift_blocks, t0, S0, process=self)

    def _rotations(self, ts: np.ndarray) -> np.ndarray:
        """``O_t`` of the gDDIM factor (``R_t = L_t O_t``), (n, d, d)."""
        rot = getattr(self, "_rot", None)
        if rot is None:  # O_0 = I at Sigma_0 = 0; the first step is grown by the control
            rot = self._rot = Frame(self.A, process=self)
        return rot.rotations(ts)

    def sample(self, x0, t, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``x_t | x_0`` exactly: ``M_t x_0 + L_t z``.

        ``x0``: (B, d) tensor (or array). ``t``: a scalar, or a (B,) tensor/array of
        per-row times. Returns a tensor on ``x0``'s device and dtype (float32 for arrays).
        """
        x0, times, scalar, z = sample_inputs(self.dim, x0, t, generator)
        if scalar:
            times = np.full(x0.shape[0], times[0])
        out = torch.empty_like(x0)
        for tv in np.unique(times):
            rows = torch.as_tensor(np.nonzero(times == tv)[0], device=x0.device)
            M, S = self._pair(float(tv))
            Mt = torch.as_tensor(M, dtype=x0.dtype, device=x0.device)
            Lt = torch.as_tensor(psd_factor(S), dtype=x0.dtype, device=x0.device)
            out[rows] = x0[rows] @ Mt.T + z[rows] @ Lt.T
        return out

    # ------------------------------------------------------------------ rates
    def relaxation_rate(self) -> float:
        """Slowest decay rate of the mean, ``min Re spec(A)``.

        ``lambda_min(U)`` when ``Q = 0``; at most ``Tr(U)/d`` for any ``Q``.
        """
        return float(np.linalg.eigvals(self.A).real.min())

    def contraction_rate(self) -> float:
        """Phase-space contraction rate ``Tr A = Tr U`` (``det M_t = exp(-t Tr U)``), any ``Q``."""
        return float(np.trace(self.A))

    def kl_to_stationary(self, t, mean0=None, cov0=None) -> np.ndarray | float:
        """``KL(P_t || N(0, U^{-1}))`` in closed form for ``P_0 = N(mean0, cov0)``.

        ``mean0`` defaults to 0 and ``cov0`` to 0 (a point mass: infinite KL at
        t = 0). Computed as ``1/2 [sum_i (x_i - log(1 + x_i)) + m^T U m]`` with
        ``x_i`` the eigenvalues of ``U^{1/2} M_t (C_0 - U^{-1}) M_t^T U^{1/2}`` and
        ``m = M_t mean0``, which stays accurate when the KL is tiny (large t).
        """
        d = self.dim
        times, scalar = as_times("t", t)
        m0 = np.zeros(d) if mean0 is None else as_vector("mean0", mean0, d)
        C0 = np.zeros((d, d)) if cov0 is None else as_psd("cov0", cov0, dim=d)
        half, _ = spd_sqrt(self.U)
        D0 = C0 - self.stationary_cov
        out = np.empty(times.shape)
        for i, s in enumerate(times):
            M = _exact_pair(self.A, float(s))[0]
            X = sym(half @ M @ D0 @ M.T @ half)
            x = np.linalg.eigvalsh(X)
            if np.any(x <= -1.0 + 1e-15):
                out[i] = np.inf
                continue
            small = np.abs(x) < 1e-4
            terms = np.where(small, x**2 / 2 - x**3 / 3 + x**4 / 4, x - np.log1p(x))
            m = M @ m0
            out[i] = 0.5 * (terms.sum() + m @ self.U @ m)
        return float(out[0]) if scalar else out
