"""Exact score of a Gaussian mixture pushed through the process's kernel.

If ``x_0 ~ sum_k w_k N(mu_k, C_k)`` and ``x_t | x_0 ~ N(M_t x_0, Sigma_t)``, then

    P_t = sum_k w_k N(m_k, S_k),    m_k = M_t mu_k,    S_k = M_t C_k M_t^T + Sigma_t,

and with the responsibilities ``r_k(x) = w_k N(x; m_k, S_k) / P_t(x)``

    grad log P_t(x) = -sum_k r_k(x) S_k^{-1} (x - m_k).

With ``S_k = L_k L_k^T`` (Cholesky) and ``z_k = L_k^{-1} (x - m_k)``:

    log w_k N(x; m_k, S_k) = log w_k - 1/2 |z_k|^2 - sum_i log (L_k)_ii - d/2 log(2 pi),
    S_k^{-1} (x - m_k) = L_k^{-T} z_k,

so a call is two batched products with the K triangular inverses, O(B K d^2), and a
log-sum-exp over ``k`` that stays finite however far apart the components are.

For a structured kernel (blocks of ``g`` frequencies in a fast basis, e.g.
:class:`nonrev.process.SpectralProcess`) the component covariances must be
block-diagonal in the kernel's basis; then every ``S_k`` and ``L_k`` is too, and a call
costs O(B K d g) plus the basis transforms.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from nonrev.linalg import as_array, as_batch, as_count, as_psd, as_time, as_weights


class _Setup(NamedTuple):
    """Per-(t, device, dtype) constants (K components, dimension d)."""

    means: torch.Tensor  # (K, d): m_k = M_t mu_k
    linv: torch.Tensor  # (K, d, d): L_k^{-1}, lower triangular
    const: torch.Tensor  # (K,): log w_k - sum log diag L_k - d/2 log 2 pi
    gain: torch.Tensor  # (K, d, d): L_k^{-1} M_t C_k (row form of the posterior-mean gain)
    means0: torch.Tensor  # (K, d): mu_k, the data means


class GaussianMixtureScore:
    """Exact score of ``P_t = sum_k w_k N(M_t mu_k, M_t C_k M_t^T + Sigma_t)``.

    Parameters
    ----------
    process : OUProcess
        The forward process (gives ``M_t`` and ``Sigma_t``).
    means : (K, d) array_like
        Component means ``mu_k``.
    covs : (K, d, d) array_like
        Component covariances ``C_k``: symmetric positive semi-definite. Zero (point
        masses) or rank-deficient covariances are fine for ``t > 0``, where
        ``Sigma_t`` is positive definite; at ``t = 0`` they raise ValueError.
    weights : (K,) array_like, optional
        Non-negative, summing to 1 (within 1e-6). Uniform by default.
    cache_size : int
        Number of times ``t`` (per device and dtype) whose setup is kept (LRU).

    Calling ``score(x, t)`` with ``x`` a (B, d) float32 or float64 tensor on any
    device returns ``grad log P_t(x)`` as a (B, d) tensor of the same dtype and
    device; the result is differentiable in ``x``. The per-t setup (``M_t``,
    ``Sigma_t``, a Cholesky factor per component, in float64 numpy, then cast) is
    cached, so repeated calls at one ``t`` cost O(B K d^2).
    """

    def __init__(self, process, means, covs, weights=None, *, cache_size: int = 8):
        self.process = process
        d = int(process.dim)
        self.dim = d
        self.means = as_array("means", means, (None, d))
        K = self.means.shape[0]
        basis = getattr(process, "basis", None)
        #: the kernel's basis when it is structured (more than one block), else None
        self._basis = basis if basis is not None and basis.blocks[0] > 1 else None
        if self._basis is not None:
            m, g = self._basis.blocks
            covs = (
                np.asarray(covs, dtype=np.float64)
                if not torch.is_tensor(covs)
                else covs.detach().cpu().double().numpy()
            )
            if covs.shape == (K, m, g, g):  # already blocks in the kernel's basis
                blocks = covs
            else:
                covs_arr = as_array("covs", covs, (K, d, d))
                blocks = np.stack([process.to_blocks(f"covs[{k}]", covs_arr[k]) for k in range(K)])
            self.cov_blocks = np.stack(
                [
                    np.stack(
                        [as_psd(f"covs[{k}] block {j}", blocks[k, j], dim=g) for j in range(m)]
                    )
                    for k in range(K)
                ]
            )
            self.covs = None  # never materialised: d x d per component at image sizes
        else:
            covs_arr = as_array("covs", covs, (K, d, d))
            self.covs = np.stack([as_psd(f"covs[{k}]", covs_arr[k], dim=d) for k in range(K)])
        self.weights = np.full(K, 1.0 / K) if weights is None else as_weights("weights", weights, K)
        self.n_components = K
        self._setup = functools.lru_cache(maxsize=as_count("cache_size", cache_size))(
            self._build_setup
        )

    def __repr__(self) -> str:
        return f"GaussianMixtureScore(dim={self.dim}, n_components={self.n_components})"

    # ------------------------------------------------------------------ setup
    def _build_setup(self, t: float, device: torch.device, dtype: torch.dtype) -> _Setup:
        if self._basis is not None:
            return self._build_block_setup(t, device, dtype)
        M, Sigma = self.process.mean_and_cov(t)
        K, d = self.n_components, self.dim
        means = self.means @ M.T
        linv = np.empty((K, d, d))
        gain = np.empty((K, d, d))
        const = np.empty(K)
        with np.errstate(divide="ignore"):  # a zero weight gives log 0 = -inf
            logw = np.log(self.weights)
        for k in range(K):
            S = M @ self.covs[k] @ M.T + Sigma
            S = 0.5 * (S + S.T)
            try:
                L = np.linalg.cholesky(S)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"covs[{k}] gives a singular covariance M_t C M_t^T + Sigma_t at "
                    f"t = {t:g}; at t = 0 every covariance must be positive definite"
                ) from None
            linv[k] = scipy.linalg.solve_triangular(L, np.eye(d), lower=True)
            gain[k] = linv[k] @ M @ self.covs[k]
            const[k] = logw[k] - np.log(np.diag(L)).sum() - 0.5 * d * math.log(2 * math.pi)
        to = dict(device=device, dtype=dtype)
        return _Setup(
            torch.as_tensor(means, **to),
            torch.as_tensor(linv, **to),
            torch.as_tensor(const, **to),
            torch.as_tensor(gain, **to),
            torch.as_tensor(self.means, **to),
        )

    def _build_block_setup(self, t, device, dtype) -> _Setup:
        """The setup in the kernel's blocks: ``linv`` and ``gain`` are (K, m, g, g)."""
        proc = self.process
        M, Sigma = (a[0] for a in proc.pair_blocks([t]))  # (m, g, g)
        d = self.dim
        mb = proc.vector_to_blocks(self.means)  # (K, m, g)
        means = proc.vector_from_blocks(np.einsum("mij,kmj->kmi", M, mb))
        C = self.cov_blocks
        S = M @ C @ np.swapaxes(M, -1, -2) + Sigma
        S = 0.5 * (S + np.swapaxes(S, -1, -2))
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            raise ValueError(
                f"covs give a singular covariance M_t C M_t^T + Sigma_t at t = {t:g}; at "
                "t = 0 every covariance must be positive definite"
            ) from None
        linv = np.linalg.inv(L)
        gain = linv @ M @ C
        with np.errstate(divide="ignore"):  # a zero weight gives log 0 = -inf
            logw = np.log(self.weights)
        logdiag = np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=(-2, -1))
        const = logw - logdiag - 0.5 * d * math.log(2 * math.pi)
        to = dict(device=device, dtype=dtype)
        return _Setup(
            torch.as_tensor(means, **to),
            torch.as_tensor(linv, **to),
            torch.as_tensor(const, **to),
            torch.as_tensor(gain, **to),
            torch.as_tensor(self.means, **to),
        )

    def _logits(self, x, t) -> tuple[torch.Tensor, torch.Tensor, _Setup]:
        """``(z, logits, setup)``: z (K, B, d) whitened residuals ``L_k^{-1}(x - m_k)``,
        logits (B, K) = ``log w_k N(x; m_k, S_k)``."""
        x = as_batch("x", x, self.dim)
        if x.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"x must be float32 or float64, got {x.dtype}")
        return self._logits_unchecked(x, as_time("t", t))

    def _logits_unchecked(self, x, t):
        S = self._setup(float(t), x.device, x.dtype)
        diff = x.unsqueeze(0) - S.means.unsqueeze(1)  # (K, B, d)
        if self._basis is not None:  # z in block coordinates (K, B, m, g)
            K, B = diff.shape[:2]
            y = self._basis.forward(diff.reshape(K * B, -1)).reshape(K, B, *self._basis.blocks)
            z = torch.einsum("kmij,kbmj->kbmi", S.linv, y)
            logits = S.const - 0.5 * (z * z).sum((-2, -1)).T
            return z, logits, S
        z = diff @ S.linv.transpose(1, 2)  # rows z_k^T = (x - m_k)^T L_k^{-T}
        logits = S.const - 0.5 * (z * z).sum(-1).T  # (B, K)
        return z, logits, S

    # ------------------------------------------------------------------ public
    def __call__(self, x, t) -> torch.Tensor:
        """``grad log P_t(x) = -sum_k r_k S_k^{-1} (x - m_k)``, shape (B, d)."""
        return self._score(*self._logits(x, t))

    def score_unchecked(self, x, t) -> torch.Tensor:
        """``__call__`` without input checks (for sampler loops that checked once)."""
        return self._score(*self._logits_unchecked(x, t))

    def _score(self, z, logits, S) -> torch.Tensor:
        r = torch.softmax(logits, dim=1)  # (B, K)
        if self._basis is not None:
            w = torch.einsum("kmji,kbmj->bmi", S.linv, r.T[:, :, None, None] * z)
            return -self._basis.inverse(w)
        # sum_k r_k L_k^{-T} z_k, in row form: sum_k (r_k z_k)^T L_k^{-1}.
        return -((r.T.unsqueeze(-1) * z) @ S.linv).sum(0)

    def denoise(self, x, t) -> torch.Tensor:
        """The data prediction ``E[x_0 | x_t = x] = sum_k r_k (mu_k + C_k M_t^T S_k^{-1}
        (x - m_k))``, shape (B, d): bounded at every ``t`` (no ``M_t^{-1}``)."""
        return self._denoise(*self._logits(x, t))

    def denoise_unchecked(self, x, t) -> torch.Tensor:
        """:meth:`denoise` without input checks."""
        return self._denoise(*self._logits_unchecked(x, t))

    def _denoise(self, z, logits, S) -> torch.Tensor:
        r = torch.softmax(logits, dim=1)  # (B, K)
        if self._basis is not None:  # sum_k r_k (mu_k + V^T gain_k^T z_k)
            w = torch.einsum("kmji,kbmj->bmi", S.gain, r.T[:, :, None, None] * z)
            return r @ S.means0 + self._basis.inverse(w)
        # per component: mu_k + C_k M^T L_k^{-T} z_k, rows z_k^T (L_k^{-1} M C_k)
        comp = S.means0.unsqueeze(1) + z @ S.gain  # (K, B, d)
        return (r.T.unsqueeze(-1) * comp).sum(0)

    def stiffness(self, t) -> np.ndarray:
        """The stiffest component's precision ``(M_t C_k M_t^T + Sigma_t)^{-1}`` (the
        largest eigenvalue over ``k``), float64 (d, d) (the kernel's blocks (m, g, g)
        for a structured kernel): the Gaussian part of ``-grad score`` for the
        samplers' stability check."""
        if self._basis is not None:  # as the kernel's blocks (m, g, g)
            M, Sigma = (a[0] for a in self.process.pair_blocks([as_time("t", t)]))
            MCM = M @ self.cov_blocks @ np.swapaxes(M, -1, -2)
            P = np.linalg.inv(0.5 * (MCM + np.swapaxes(MCM, -1, -2)) + Sigma)
            P = 0.5 * (P + np.swapaxes(P, -1, -2))
            return P[int(np.argmax(np.linalg.eigvalsh(P)[..., -1].max(axis=-1)))]
        M, Sigma = self.process.mean_and_cov(as_time("t", t))
        best, top = None, -np.inf
        for k in range(self.n_components):
            P = np.linalg.inv(0.5 * (M @ self.covs[k] @ M.T + (M @ self.covs[k] @ M.T).T) + Sigma)
            lam = np.linalg.eigvalsh(0.5 * (P + P.T))[-1]
            if lam > top:
                best, top = 0.5 * (P + P.T), lam
        return best

    def log_prob(self, x, t) -> torch.Tensor:
        """``log P_t(x) = logsumexp_k [log w_k + log N(x; m_k, S_k)]``, shape (B,)."""
        _, logits, _ = self._logits(x, t)
        return torch.logsumexp(logits, dim=1)

    def posterior(self, x, t) -> torch.Tensor:
        """Responsibilities ``r_k(x) = w_k N(x; m_k, S_k) / P_t(x)``, shape (B, K)."""
        _, logits, _ = self._logits(x, t)
        return torch.softmax(logits, dim=1)

    def cache_info(self):
        """``functools.lru_cache`` statistics of the per-(t, device, dtype) setup."""
        return self._setup.cache_info()
