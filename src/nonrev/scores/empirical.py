"""Exact score of N training points pushed through the kernel (the memorising score).

With training points ``a_1..a_N`` (equal weights) the time-t marginal is

    p_t(x) = (1/N) sum_mu N(x; M_t a_mu, Sigma_t).

Write ``P = Sigma_t^{-1}`` and ``G = M_t^T P M_t``. Expanding the Gaussian exponent,

    log N(x; M a, Sigma) = -1/2 x^T P x + l_mu(x) - 1/2 log det(2 pi Sigma),
    l_mu(x) = x^T P M a_mu - c_mu,    c_mu = 1/2 a_mu^T G a_mu,

so the posterior weights of the points are ``w_mu(x) = softmax_mu l_mu(x)`` and

    grad log p_t(x) = -P x + P M abar(x),    abar(x) = sum_mu w_mu(x) a_mu,
    log p_t(x)      = logsumexp_mu l_mu(x) - 1/2 x^T P x - 1/2 log det(2 pi Sigma) - log N.

``abar`` is Tweedie's denoiser E[x_0 | x_t = x]. The logits of a batch are one matrix
product, ``(x @ (P M)) @ a^T - c`` (B x N), and ``abar`` another, ``w @ a``: the whole
call is two GEMMs of B x N x d, 4 B N d flops, plus a few passes over B x N numbers.
The N points are streamed in chunks with an online log-sum-exp (a running maximum
rescales the partial sums, as in flash attention), so memory stays O(B chunk + B d)
and no B x N x d tensor is ever formed. The logits are carried in base 2
(``l log2 e``, folded into ``v`` and ``c``) and exponentiated with ``exp2`` after
clamping at ``log2(tiny) + 1``: both keep the one transcendental pass off slow paths.

``c_mu`` depends on ``t`` only, and costs O(N d^2) (``c_mu = 1/2 |R a_mu|^2`` with
``R = L^{-1} M``, ``L L^T = Sigma``); it is computed once per distinct ``t`` and kept
in a small LRU cache together with ``P`` and ``P M`` (memory per entry:
``2 d^2 + N`` numbers on the points' device).

Precision: the logits are a difference of terms of size ~ ``|x| |P| |a|``, so their
absolute rounding error is ~ ``eps |P| |x| |a|`` (``|P| ~ 1 / (2 t)`` at small t).
Float32 is fine while that is well below 1; at very small ``t`` with large data use
float64.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from nonrev.linalg import as_batch, as_count, as_time

#: Default size of the (B x chunk) logits block, in bytes.
DEFAULT_BLOCK_BYTES = 2**26


def default_chunk_size(batch: int, n_points: int, itemsize: int = 4) -> int:
    """Points per chunk so that the (batch x chunk) logits block is about 64 MiB.

    ``max(1, 2**26 // (batch * itemsize))``, at most ``n_points``.
    """
    return int(min(n_points, max(1, DEFAULT_BLOCK_BYTES // (max(batch, 1) * itemsize))))


#: Logits are kept in base 2 (``l log2(e)``): ``exp2`` is ~3x cheaper than ``exp`` on
#: CPUs (torch 2.x, AVX-512) and the scaling is folded into ``v`` and ``c``.
LOG2E = 1.0 / math.log(2.0)


def _exp2_floor(dtype: torch.dtype) -> float:
    """Lower clamp for ``l2 - max l2`` before ``exp2``: ``log2(tiny) + 1`` (-125 in float32).

    ``exp2`` of more negative numbers gives denormals, which on x86 CPUs run several
    times slower than normal numbers (``exp`` up to 30x), and most logits of a peaked
    posterior are there. Raising those weights to ``2 tiny`` (relative to the largest
    weight, 1) changes the softmax by at most ``2 N tiny`` relative: ~2e-38 N in
    float32, far below rounding.
    """
    return math.log2(torch.finfo(dtype).tiny) + 1.0


class _Setup(NamedTuple):
    """Per-(t, device, dtype) constants."""

    PM: torch.Tensor  # (d, d): P M_t
    P: torch.Tensor  # (d, d): Sigma_t^{-1}
    neg_c2: torch.Tensor  # (N,): -log2(e) c_mu = -log2(e) / 2 a_mu^T G a_mu
    const: float  # -1/2 log det(2 pi Sigma_t) - log N


class _Stream(NamedTuple):
    lse: torch.Tensor  # (B,) logsumexp_mu l_mu (natural log)
    mean: torch.Tensor | None  # (B, d) abar = sum w_mu a_mu
    argmax: torch.Tensor | None  # (B,) int64 argmax_mu l_mu


class EmpiricalScore:
    """Exact score of ``p_t = (1/N) sum_mu N(M_t a_mu, Sigma_t)`` for ``t > 0``.

    Parameters
    ----------
    process : OUProcess
        The forward process.
    points : (N, d) tensor or array_like
        Training points ``a_mu``; kept on their device (arrays become float32 CPU
        tensors). Inputs ``x`` must be on the same device. When ``x`` has another
        floating dtype than ``points``, a copy of the points in that dtype is made
        once and kept.
    chunk_size : int, optional
        Points processed per step of the streaming log-sum-exp. Default:
        :func:`default_chunk_size`, ``max(1, 2**26 // (B * itemsize))`` bounded by
        N, i.e. a B x chunk logits block of about 64 MiB.
    cache_size : int
        Number of times ``t`` (per device and dtype) whose setup is kept (LRU).

    Calling ``score(x, t)`` costs O(B N d + B d^2) once the setup of ``t`` is cached
    (O(N d^2 + d^3) for a new ``t``). The outputs are not differentiable (computed
    under ``torch.no_grad``); use :class:`GaussianMixtureScore` with zero
    covariances for gradients.
    """

    def __init__(self, process, points, chunk_size: int | None = None, *, cache_size: int = 8):
        self.process = process
        self.dim = int(process.dim)
        self.points = as_batch("points", points, self.dim, min_rows=1)
        self.n_points = int(self.points.shape[0])
        self.chunk_size = None if chunk_size is None else as_count("chunk_size", chunk_size)
        self._points_by_dtype = {self.points.dtype: self.points}
        self._setup = functools.lru_cache(maxsize=as_count("cache_size", cache_size))(
            self._build_setup
        )

    def __repr__(self) -> str:
        return (
            f"EmpiricalScore(dim={self.dim}, n_points={self.n_points}, "
            f"device={self.points.device}, dtype={self.points.dtype})"
        )

    # ------------------------------------------------------------------ setup
    def _points(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._points_by_dtype:
            self._points_by_dtype[dtype] = self.points.to(dtype)
        return self._points_by_dtype[dtype]

    @torch.no_grad()
    def _build_setup(self, t: float, device: torch.device, dtype: torch.dtype) -> _Setup:
        M, Sigma = self.process.mean_and_cov(t)
        d = self.dim
        try:
            L = np.linalg.cholesky(Sigma)
        except np.linalg.LinAlgError:  # pragma: no cover - t > 0 is checked before
            raise ValueError(f"Sigma_t is singular at t = {t:g}") from None
        Linv = scipy.linalg.solve_triangular(L, np.eye(d), lower=True)
        P = Linv.T @ Linv
        P = 0.5 * (P + P.T)
        R = Linv @ M  # G = M^T P M = R^T R
        to = dict(device=device, dtype=dtype)
        Rt = torch.as_tensor(R.T, **to)
        pts = self._points(dtype)
        rows = default_chunk_size(d, self.n_points, pts.element_size())
        neg_c2 = torch.empty(self.n_points, **to)
        for s in range(0, self.n_points, rows):
            y = pts[s : s + rows] @ Rt  # rows (R a_mu)^T
            neg_c2[s : s + rows] = (-0.5 * LOG2E) * (y * y).sum(1)
        logdet = 2.0 * np.log(np.diag(L)).sum()
        const = -0.5 * (d * math.log(2 * math.pi) + logdet) - math.log(self.n_points)
        return _Setup(torch.as_tensor(P @ M, **to), torch.as_tensor(P, **to), neg_c2, const)

    def _check(self, x, t) -> tuple[torch.Tensor, float, _Setup]:
        device = x.device if torch.is_tensor(x) else torch.device("cpu")
        if device != self.points.device:
            raise ValueError(
                f"x is on {device} but points are on {self.points.device}; "
                "move x (or build the score with points on x's device)"
            )
        x = as_batch("x", x, self.dim)
        if x.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"x must be float32 or float64, got {x.dtype}")
        t = as_time("t", t)
        if t == 0.0:
            raise ValueError(
                "t must be positive: at t = 0 the empirical law is a sum of "
                "point masses and has no score"
            )
        return x, t, self._setup(t, x.device, x.dtype)

    # ------------------------------------------------------------------ streaming core
    def _stream(self, x, S: _Setup, *, mean: bool, argmax: bool) -> _Stream:
        """One pass over the points: online log-sum-exp of ``l_mu(x)``, optionally
        the softmax-weighted sum of the points and the arg max of the logits."""
        pts = self._points(x.dtype)
        B, N = x.shape[0], self.n_points
        chunk = self.chunk_size or default_chunk_size(B, N, x.element_size())
        v = (x @ S.PM).mul_(LOG2E)  # (B, d) rows log2(e) x^T P M: l2_mu = v.a_mu - log2(e) c_mu
        run_max = torch.full((B,), -math.inf, dtype=x.dtype, device=x.device)
        run_sum = torch.zeros((B,), dtype=x.dtype, device=x.device)
        acc = torch.zeros_like(x) if mean else None
        best = torch.zeros((B,), dtype=torch.int64, device=x.device) if argmax else None
        floor = _exp2_floor(x.dtype)
        block = torch.empty(B * min(chunk, N), dtype=x.dtype, device=x.device)  # reused
        for s in range(0, N, chunk):
            a = pts[s : s + chunk]
            n = a.shape[0]
            # (B, n) logits in base 2, l2 = log2(e) l = v a^T - log2(e) c.
            logits = torch.addmm(S.neg_c2[s : s + n], v, a.T, out=block[: B * n].view(B, n))
            if argmax:
                cmax, carg = logits.max(dim=1)
                best = torch.where(cmax > run_max, carg + s, best)
            else:
                cmax = logits.amax(dim=1)
            new_max = torch.maximum(run_max, cmax)
            scale = torch.exp2(run_max - new_max)  # 0 on the first chunk
            # In place: (B, n) unnormalised weights 2^(l2 - max) = e^(l - max l), in [2^floor, 1].
            w = torch.exp2(logits.sub_(new_max.unsqueeze(1)).clamp_min_(floor), out=logits)
            run_sum = run_sum * scale + w.sum(1)
            if mean:
                acc.mul_(scale.unsqueeze(1)).addmm_(w, a)
            run_max = new_max
        lse = (run_max + torch.log2(run_sum)) * math.log(2.0)
        return _Stream(lse, acc / run_sum.unsqueeze(1) if mean else None, best)

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def __call__(self, x, t) -> torch.Tensor:
        """``grad log p_t(x) = -P x + P M abar(x)``, shape (B, d), x's dtype and device."""
        x, t, S = self._check(x, t)
        abar = self._stream(x, S, mean=True, argmax=False).mean
        return abar @ S.PM.T - x @ S.P

    @torch.no_grad()
    def log_prob(self, x, t) -> torch.Tensor:
        """``log p_t(x)``, shape (B,)."""
        x, t, S = self._check(x, t)
        lse = self._stream(x, S, mean=False, argmax=False).lse
        return lse - 0.5 * ((x @ S.P) * x).sum(1) + S.const

    @torch.no_grad()
    def score_unchecked(self, x, t) -> torch.Tensor:
        """``__call__`` without input checks (for sampler loops that checked once)."""
        S = self._setup(float(t), x.device, x.dtype)
        abar = self._stream(x, S, mean=True, argmax=False).mean
        return abar @ S.PM.T - x @ S.P

    @torch.no_grad()
    def denoise(self, x, t) -> torch.Tensor:
        """The data prediction (Tweedie's denoiser) ``E[x_0 | x_t = x] = sum_mu
        w_mu(x) a_mu``, shape (B, d)."""
        x, t, S = self._check(x, t)
        return self._stream(x, S, mean=True, argmax=False).mean

    @torch.no_grad()
    def denoise_unchecked(self, x, t) -> torch.Tensor:
        """:meth:`denoise` without input checks."""
        S = self._setup(float(t), x.device, x.dtype)
        return self._stream(x, S, mean=True, argmax=False).mean

    def stiffness(self, t) -> np.ndarray:
        """``Sigma_t^{-1}`` (float64 (d, d)): the Gaussian part of ``-grad score`` of
        data at points, for the samplers' stability check."""
        _, Sigma = self.process.mean_and_cov(as_time("t", t))
        return np.linalg.inv(Sigma)

    #: The earlier name of :meth:`denoise`.
    posterior_mean_x0 = denoise

    @torch.no_grad()
    def nearest(self, x, t) -> torch.Tensor:
        """Index of the point with the largest posterior weight, shape (B,), int64.

        Equivalently the point ``a_mu`` whose image ``M_t a_mu`` is nearest to ``x`` in
        the Mahalanobis distance of ``Sigma_t``: ``argmin_mu |x - M_t a_mu|_P``.
        """
        x, t, S = self._check(x, t)
        return self._stream(x, S, mean=False, argmax=True).argmax

    def cache_info(self):
        """``functools.lru_cache`` statistics of the per-(t, device, dtype) setup."""
        return self._setup.cache_info()
