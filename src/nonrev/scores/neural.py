"""Learned scores: networks trained by denoising score matching with the exact
matrix kernel of the process, and the score they define.

**The objective.** With the exact kernel ``x_t = M_t x_0 + L_t z`` (``L_t L_t^T =
Sigma_t``, ``z ~ N(0, I)``, :meth:`nonrev.OUProcess.kernel`), the conditional score is

    grad log p(x_t | x_0) = -Sigma_t^{-1} (x_t - M_t x_0) = -L_t^{-T} z,

so a noise prediction ``eps_theta(x, t)`` gives the score

    s_theta(x, t) = -L_t^{-T} eps_theta(x, t)        (one batched triangular solve).

The loss :func:`dsm_loss` is ``E_{t, x_0, z} |eps_theta(M_t x_0 + L_t z, t) - z|^2``.
Since ``eps_theta - z = -L_t^T (s_theta - grad log p(x_t | x_0))``, this is denoising
score matching with the matrix weight ``Sigma_t``,
``E |L_t^T (s_theta - s_target)|^2``: the matrix analogue of DDPM's ``sigma_t^2``
weighting, which keeps every time's contribution of order one. Its minimiser is
``eps* = -L_t^T grad log p_t``, i.e. ``s_theta = grad log p_t`` (Vincent 2011; the
argument is unchanged by the invertible matrix ``L_t``). Times are drawn from a
fixed grid (uniform over the grid indices: with a log-spaced grid, about uniform in
``log t``); :func:`perturb` draws ``x_t`` for groups of rows sharing a grid time.

**How the network output becomes eps_theta** (:class:`Parameterisation`): either
plain noise prediction, ``eps_theta = F(x, t)``, or (the default in training) a
Gaussian preconditioning ``eps_theta = A_t x - D_t F(K_t x, t)`` with fixed matrices
built from the process and the training covariance, exact for Gaussian data at
``F = 0``. Plain noise prediction is unusable with the exact samplers at few steps:
a step ``t -> s`` multiplies a noise error by ``M_{t-s}^{-1}``, ``e^{lambda (t-s)}``
in a mode of rate ``lambda`` (on digits with ``U = I``, 2000 training steps, 100
log-spaced ancestral steps from ``T = 8``, samples came out at +-400 pixel units
where the data live in 0..16); the preconditioned form carries ``M_t`` in ``D_t``
and stays bounded.

**Networks**: :mod:`nonrev.models` (re-exported here).

**Times at sampling.** :class:`NeuralScore` accepts any ``t`` in the training range
``[t_min, t_max]``: on a time of the training grid it uses the stored matrices;
elsewhere it computes them exactly (``process.mean_and_cov``, cached per ``t``) and
evaluates the network at that ``t`` (the time embedding interpolates between the
training times, which a fine grid makes harmless). Times outside the range raise
ValueError: the network has never seen them.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import nn

from nonrev.linalg import as_batch, as_time, psd_factor
from nonrev.models.networks import (  # noqa: F401  (re-exported)
    NETWORKS,
    ConvNet,
    MLPNet,
    SinusoidalTimeEmbedding,
    build_network,
)

__all__ = [
    "ConvNet",
    "KINDS",
    "MLPNet",
    "NETWORKS",
    "NeuralScore",
    "Parameterisation",
    "SinusoidalTimeEmbedding",
    "Tables",
    "build_network",
    "dsm_loss",
    "perturb",
    "predict_eps",
]


# ---------------------------------------------------------------------------- parameterisation
class Tables(NamedTuple):
    """Per-time matrices, stacked over ``n`` times (tensors (n,) and (n, d, d)).

    ``cond``: what the network is given as its time input (the time ``t`` itself, or
    a noise level: :meth:`Parameterisation.cond`); ``M``, ``L``: the kernel
    (``L L^T = Sigma_t``); ``K``: input map (the network sees ``y = K x``); ``A``,
    ``D``: ``eps_theta(x, t) = A x - D F(K x, cond)``.
    """

    times: torch.Tensor
    cond: torch.Tensor
    M: torch.Tensor
    L: torch.Tensor
    K: torch.Tensor
    A: torch.Tensor
    D: torch.Tensor

    def take(self, idx) -> "Tables":
        return Tables(*(a[idx] for a in self))


#: The parametrisations: plain noise prediction, the Gaussian preconditioning, and
#: the same Gaussian core with the network's input, output and time in the data frame.
KINDS = ("eps", "gaussian", "data_frame")


class Parameterisation:
    """How the raw network output ``F`` becomes the predicted noise ``eps_theta``.

    ``data_cov=None``: plain noise prediction, ``eps_theta(x, t) = F(x, t)``
    (``K = I``, ``A = 0``, ``D = -I``).

    With the training data's covariance ``C`` (zero mean: the data are centred), a
    Gaussian preconditioning. Under the Gaussian approximation ``x_0 ~ N(0, C)``,
    ``x_t ~ N(0, G_t)`` with ``G_t = M_t C M_t^T + Sigma_t``, the posterior of
    ``x_0`` given ``x_t = x`` has mean ``W_t x`` (``W_t = C M_t^T G_t^{-1}``) and
    covariance ``P_t = C - W_t M_t C``. The network predicts a whitened residual
    of the posterior mean,

        x0_hat = W_t x + R_t F(L_G^{-1} x, t),     R_t R_t^T = P_t,  L_G L_G^T = G_t,

    and the predicted noise is the one that ``x0_hat`` implies,

        eps_theta = L_t^{-1} (x - M_t x0_hat) = A_t x - D_t F,
        A_t = L_t^T G_t^{-1},     D_t = L_t^{-1} M_t R_t.

    ``F = 0`` is the exact answer for Gaussian data; the network only learns the
    non-Gaussian part, from whitened inputs ``L_G^{-1} x`` (about ``N(0, I)`` at every
    ``t``, whatever ``U`` and ``Q``). The singular values of ``D_t`` lie in [0, 1)
    (``D D^T = Sigma^{-1/2} M P M^T Sigma^{-1/2}``, eigenvalues ``s / (1 + s)`` of
    the whitened signal-to-noise): the eps-loss weights ``F`` fully where the data
    still show and not at all in modes that have relaxed to noise. That is what
    keeps learned scores usable with large steps of the exact samplers: in a step
    ``t -> s`` the ancestral and DDIM updates multiply a noise error ``delta`` by
    about ``M_h^{-1} L_t`` (``h = t - s``; ``e^{lambda h}`` in a mode of rate
    ``lambda``), and here ``delta = D_t (F - F*)`` carries the factor ``M_t``, so
    the product stays below ``M_s`` (plain noise prediction has no such factor: a
    fast mode of ``U = data`` with ``lambda = 4.5`` and ``h = 3`` amplifies its
    error by ``e^{13.5}``).

    ``kind="data_frame"`` keeps that Gaussian core (``F = 0`` is still exact for
    Gaussian data) but lets the network work in the frame of the data, which does not
    turn with ``t`` however strong the current. With ``S_t = C^{1/2} M_t^T
    Sigma_t^{-1} M_t C^{1/2}`` (the whitened signal-to-noise matrix, symmetric PSD):

        input   y = C^{-1/2} W_t x = C^{1/2} M_t^T G_t^{-1} x
                  = S_t (I + S_t)^{-1} C^{-1/2} x_0 + noise,
        output  x0_hat = W_t x + C^{1/2} (I + S_t)^{-1/2} F,

        (``C^{1/2} (I + S)^{-1} C^{1/2} = P_t``, so the output factor is a root of
        ``P_t``, the symmetric one in the whitened frame), and the time input is
        the noise level instead of ``t``: ``nu_t = d / Tr(S_t)``, the inverse mean
        whitened SNR, mapped log-affinely onto the training range ``t_range`` so that
        the networks' time embedding (``log t`` over ``[t_min, t_max]``) sees
        ``log nu`` rescaled to [0, 1]. Under ``kind="gaussian"`` the input ``L_G^{-1}
        x_t`` and output ``chol(P_t) F`` carry the rotation ``exp(-t Q U)`` of the
        kernel, so with a strong current the network must learn a function that spins
        in ``t``. ``C`` may be singular (constant pixels): no inverse of ``C`` is
        formed.
    """

    def __init__(self, process, data_cov=None, kind: str | None = None, t_range=None):
        self.process = process
        self.dim = int(process.dim)
        self.cov = None if data_cov is None else np.asarray(data_cov, dtype=np.float64)
        if self.cov is not None and self.cov.shape != (self.dim, self.dim):
            raise ValueError(f"data_cov must be ({self.dim}, {self.dim}), got {self.cov.shape}")
        self.kind = ("eps" if self.cov is None else "gaussian") if kind is None else kind
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if (self.kind == "eps") != (self.cov is None):
            raise ValueError(
                f"kind {self.kind!r} "
                + ("takes no data_cov" if self.kind == "eps" else "needs data_cov")
            )
        self._sqrt_cov = None
        self._nu_range = None
        if self.cov is not None:
            w, V = np.linalg.eigh(0.5 * (self.cov + self.cov.T))
            self._sqrt_cov = (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T
        if self.kind == "data_frame":
            if t_range is None:
                raise ValueError(
                    "kind 'data_frame' needs t_range = (t_min, t_max), the "
                    "training range its noise levels are mapped onto"
                )
            self.t_range = (float(t_range[0]), float(t_range[1]))
            if not (0 < self.t_range[0] < self.t_range[1]):
                raise ValueError(f"t_range must be 0 < t_min < t_max, got {t_range}")
            self._nu_range = tuple(
                self._log_nu(*self.process.mean_and_cov(t)) for t in self.t_range
            )
        self._at = functools.lru_cache(maxsize=256)(self._at_uncached)
        self._den = functools.lru_cache(maxsize=256)(self._denoise_uncached)

    @property
    def preconditioned(self) -> bool:
        return self.cov is not None

    # -- the Gaussian core ----------------------------------------------------------
    def _posterior(self, M: np.ndarray, S: np.ndarray):
        """``(W, R, G_inv, K)``: posterior mean map, a root of the posterior covariance
        (as the kind wants it), ``G_t^{-1}`` and the network's input map."""
        d = self.dim
        C = self.cov
        G = M @ C @ M.T + S
        LG = np.linalg.cholesky(0.5 * (G + G.T))
        LG_inv = scipy.linalg.solve_triangular(LG, np.eye(d), lower=True)
        G_inv = LG_inv.T @ LG_inv
        W = C @ M.T @ G_inv
        if self.kind == "data_frame":
            Ch = self._sqrt_cov
            w, V = np.linalg.eigh(self._snr(M, S))
            R = Ch @ ((V / np.sqrt(1.0 + np.clip(w, 0.0, None))) @ V.T)
            return W, R, G_inv, Ch @ M.T @ G_inv
        P = C - W @ M @ C
        return W, psd_factor(0.5 * (P + P.T)), G_inv, LG_inv

    def _snr(self, M: np.ndarray, S: np.ndarray) -> np.ndarray:
        """``S_t = C^{1/2} M^T Sigma^{-1} M C^{1/2}`` (symmetric PSD)."""
        B = np.linalg.solve(0.5 * (S + S.T), M @ self._sqrt_cov)
        X = (M @ self._sqrt_cov).T @ B
        return 0.5 * (X + X.T)

    def _log_nu(self, M: np.ndarray, S: np.ndarray) -> float:
        return math.log(self.dim / max(float(np.trace(self._snr(M, S))), 1e-300))

    def noise_level_grid(self, t_min: float, t_max: float, n: int) -> np.ndarray:
        """``n`` increasing times from ``t_min`` to ``t_max`` evenly spaced in the log
        noise level ``log nu_t = log(d / Tr S_t)`` (preconditioned kinds only): a
        training grid that spends its times where the data's signal-to-noise changes,
        whatever the rates of the modes. Found by inverting ``log nu`` (increasing in
        ``t``) on a fine log-spaced grid."""
        if self.cov is None:
            raise ValueError(
                "a noise-level grid needs the data covariance (a preconditioned parametrisation)"
            )
        fine = np.geomspace(t_min, t_max, max(20 * n, 400))
        ker = self.process.kernel(fine, dtype=torch.float64)
        Ms, Ss = ker.M.numpy(), ker.Sigma.numpy()
        log_nu = np.array([self._log_nu(Ms[i], Ss[i]) for i in range(len(fine))])
        log_nu = np.maximum.accumulate(log_nu)  # round-off only: it increases with t
        targets = np.linspace(log_nu[0], log_nu[-1], n)
        grid = np.exp(np.interp(targets, log_nu, np.log(fine)))
        grid[0], grid[-1] = t_min, t_max
        return grid

    def cond(self, t: float, M: np.ndarray | None = None, S: np.ndarray | None = None) -> float:
        """The network's time input at ``t``: ``t`` itself, or (``data_frame``) the
        noise level ``nu_t`` mapped log-affinely onto ``t_range``."""
        if self.kind != "data_frame":
            return float(t)
        if M is None:
            M, S = self.process.mean_and_cov(t)
        lo, hi = self._nu_range
        a = (self._log_nu(M, S) - lo) / (hi - lo)
        l0, l1 = (math.log(x) for x in self.t_range)
        return math.exp(l0 + a * (l1 - l0))

    def _matrices(self, M: np.ndarray, S: np.ndarray):
        """``(L, K, A, D)`` for one time from ``M_t`` and ``Sigma_t`` (float64)."""
        d = self.dim
        L = np.linalg.cholesky(0.5 * (S + S.T))
        if self.cov is None:
            return L, np.eye(d), np.zeros((d, d)), -np.eye(d)
        _, R, G_inv, K = self._posterior(M, S)
        A = L.T @ G_inv
        D = scipy.linalg.solve_triangular(L, M @ R, lower=True)
        return L, K, A, D

    def tables(self, times, *, device=None, dtype=torch.float32) -> Tables:
        """:class:`Tables` on a strictly increasing grid of positive times (the
        kernel from :meth:`OUProcess.kernel`, the rest per time, in float64)."""
        ker = self.process.kernel(times, dtype=torch.float64)
        Ms, Ss = ker.M.numpy(), ker.Sigma.numpy()
        if float(ker.times[0]) <= 0:
            raise ValueError("the training grid must start at t > 0")
        mats = [self._matrices(Ms[i], Ss[i]) for i in range(len(ker))]
        cond = [self.cond(float(t), Ms[i], Ss[i]) for i, t in enumerate(ker.times.tolist())]
        to = dict(device=device, dtype=dtype)
        stack = [torch.as_tensor(np.stack([m[k] for m in mats]), **to) for k in range(4)]
        return Tables(ker.times.to(**to), torch.tensor(cond, **to), ker.M.to(**to), *stack)

    def _at_uncached(self, t: float, device, dtype) -> Tables:
        M, S = self.process.mean_and_cov(t)
        to = dict(device=device, dtype=dtype)
        return Tables(
            torch.tensor([t], **to),
            torch.tensor([self.cond(t, M, S)], **to),
            *(torch.as_tensor(a, **to)[None] for a in (M, *self._matrices(M, S))),
        )

    def _denoise_uncached(self, t: float, device, dtype):
        """``(W_t, R_t)`` (preconditioned) or ``(M_t^{-1}, L_t)`` (plain) at ``t``, so
        that ``x0_hat = W x + R F`` resp. ``M^{-1} (x - L eps)``."""
        M, S = self.process.mean_and_cov(t)
        to = dict(device=device, dtype=dtype)
        if self.cov is None:
            L = np.linalg.cholesky(0.5 * (S + S.T))
            return torch.as_tensor(np.linalg.inv(M), **to), torch.as_tensor(L, **to)
        W, R, _, _ = self._posterior(M, S)
        return torch.as_tensor(W, **to), torch.as_tensor(R, **to)

    def denoise_matrices(self, t: float, *, device=None, dtype=torch.float32):
        """The matrices of the data prediction at ``t`` (cached, LRU of 256 times):
        ``(W_t, R_t)`` with ``x0_hat = W_t x + R_t F`` when preconditioned (``R_t``
        the posterior factor above), else ``(M_t^{-1}, L_t)`` with
        ``x0_hat = M_t^{-1} (x - L_t eps)``."""
        return self._den(float(t), torch.device(device or "cpu"), dtype)

    def at(self, t: float, *, device=None, dtype=torch.float32) -> Tables:
        """:class:`Tables` of one time ``t > 0`` (cached, LRU of 256 times)."""
        return self._at(float(t), torch.device(device or "cpu"), dtype)


def predict_eps(net: nn.Module, x: torch.Tensor, t: torch.Tensor, K, A, D) -> torch.Tensor:
    """``eps_theta = A x - D F(K x, t)`` for rows ``x`` (B, d) sharing matrices
    ``K, A, D`` (d, d), or groups ``x`` (G, m, d) with matrices (G, d, d); ``t``
    holds the network's time input (:attr:`Tables.cond`) per row (B,) or per group
    (G,)."""
    if x.ndim == 2:
        y = x @ K.T
        return x @ A.T - net(y, t) @ D.T
    G, m, d = x.shape
    y = (x @ K.transpose(1, 2)).reshape(G * m, d)
    F = net(y, t.repeat_interleave(m)).reshape(G, m, d)
    return x @ A.transpose(1, 2) - F @ D.transpose(1, 2)


# ---------------------------------------------------------------------------- objective
def perturb(x0: torch.Tensor, M: torch.Tensor, L: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x_t = M_t x_0 + L_t z`` for groups sharing a time.

    ``x0`` and ``z``: (G, m, d), group ``g`` at the time whose kernel is ``M[g]``,
    ``L[g]`` ((G, d, d) each). Rows: ``x0 M^T + z L^T``, one batched product per
    term, memory O(G d^2 + G m d).
    """
    return x0 @ M.transpose(1, 2) + z @ L.transpose(1, 2)


def dsm_loss(net: nn.Module, x0: torch.Tensor, tab: Tables, z: torch.Tensor) -> torch.Tensor:
    """Denoising score matching in noise prediction, ``mean |eps_theta(x_t, t) - z|^2``.

    ``x0``, ``z``: (G, m, d); ``tab``: :class:`Tables` of G times, group ``g``
    perturbed at ``tab.times[g]`` (:func:`perturb`). The mean runs over the
    ``G m d`` entries, so the loss of a perfect denoiser of pure noise is 1.
    """
    xt = perturb(x0, tab.M, tab.L, z)
    return (predict_eps(net, xt, tab.cond, tab.K, tab.A, tab.D) - z).square().mean()


# ---------------------------------------------------------------------------- score
class NeuralScore:
    """``score(x, t) = -L_t^{-T} eps_theta(x, t)`` for every sampler in nonrev.

    Parameters
    ----------
    net : the network ``F``, ``net(y (B, d), t (B,)) -> (B, d)``.
    param : the :class:`Parameterisation` it was trained with (it holds the process).
    tables : the :class:`Tables` of the training grid (on the network's device and
        dtype); ``times[0]`` and ``times[-1]`` bound the valid ``t``.

    ``t`` may be any time in the training range: on a grid time the stored tables
    are used, elsewhere the exact ones (``param.at``). ``x`` is a (B, d) tensor on
    the network's device; the result has ``x``'s dtype (the network runs in its own).
    Evaluated under ``torch.no_grad`` with the network in eval mode.
    """

    def __init__(self, net: nn.Module, param: Parameterisation, tables: Tables):
        self.net = net
        self.param = param
        self.process = param.process
        self.dim = int(param.dim)
        times = tables.times.detach().cpu().double()
        self.t_min, self.t_max = float(times[0]), float(times[-1])
        self._grid = times
        p = next(net.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.tables = Tables(*(a.to(device=self.device, dtype=self.dtype) for a in tables))

    def __repr__(self) -> str:
        return (
            f"NeuralScore(dim={self.dim}, t in [{self.t_min:.4g}, {self.t_max:.4g}], "
            f"net={type(self.net).__name__}, parametrisation={self.param.kind})"
        )

    def _tables_at(self, t: float):
        """``(K, A, D, L, cond)`` at ``t``: the training grid's when ``t`` is on it (to
        float32 rounding), else exact."""
        tol = 1e-9 * max(1.0, abs(t))
        if t < self.t_min * (1 - 1e-6) - tol or t > self.t_max * (1 + 1e-6) + tol:
            raise ValueError(
                f"t = {t:.6g} is outside the range the network was trained on, "
                f"[{self.t_min:.6g}, {self.t_max:.6g}]; sample with T <= "
                f"{self.t_max:.6g} and t_min >= {self.t_min:.6g}"
            )
        i = int(torch.searchsorted(self._grid, torch.tensor(t, dtype=torch.float64)))
        for j in (i - 1, i):
            if 0 <= j < len(self._grid) and abs(float(self._grid[j]) - t) <= 1e-6 * t:
                tab = self.tables
                return tab.K[j], tab.A[j], tab.D[j], tab.L[j], tab.cond[j]
        tab = self.param.at(t, device=self.device, dtype=self.dtype)
        return tab.K[0], tab.A[0], tab.D[0], tab.L[0], tab.cond[0]

    @torch.no_grad()
    def eps(self, x, t) -> torch.Tensor:
        """The predicted noise ``eps_theta(x, t)``, (B, d) in the network's dtype."""
        x = as_batch("x", x, self.dim)
        t = as_time("t", t)
        K, A, D, _, c = self._tables_at(t)
        self.net.eval()
        return predict_eps(
            self.net, x.to(device=self.device, dtype=self.dtype), c.expand(x.shape[0]), K, A, D
        )

    def stiffness(self, t) -> np.ndarray:
        """The Gaussian part of ``-grad score`` at ``t`` (float64 (d, d)):
        ``(M_t C M_t^T + Sigma_t)^{-1}`` with the training covariance ``C`` when
        preconditioned, else ``Sigma_t^{-1}``; for the samplers' stability check."""
        M, S = self.process.mean_and_cov(as_time("t", t))
        G = S if self.param.cov is None else M @ self.param.cov @ M.T + S
        P = np.linalg.inv(0.5 * (G + G.T))
        return 0.5 * (P + P.T)

    @torch.no_grad()
    def denoise(self, x, t) -> torch.Tensor:
        """The data prediction ``x0_hat = E[x_0 | x_t = x]`` of the network, (B, d) in
        ``x``'s dtype. Preconditioned: ``W_t x + R_t F(K_t x, t)`` directly (no
        ``M_t^{-1}``, bounded at every ``t``); plain noise prediction:
        ``M_t^{-1} (x - L_t eps)``."""
        x = as_batch("x", x, self.dim)
        return self.denoise_unchecked(x, as_time("t", t))

    @torch.no_grad()
    def denoise_unchecked(self, x, t) -> torch.Tensor:
        """:meth:`denoise` without input checks."""
        t = float(t)
        K, A, D, L, c = self._tables_at(t)
        W, R = self.param.denoise_matrices(t, device=self.device, dtype=self.dtype)
        xn = x.to(device=self.device, dtype=self.dtype)
        self.net.eval()
        tt = c.expand(x.shape[0])
        if self.param.preconditioned:
            out = xn @ W.T + self.net(xn @ K.T, tt) @ R.T
        else:
            out = (xn - self.net(xn @ K.T, tt) @ R.T) @ W.T
        return out.to(dtype=x.dtype)

    @torch.no_grad()
    def score_unchecked(self, x, t) -> torch.Tensor:
        """``__call__`` without input checks."""
        t = float(t)
        K, A, D, L, c = self._tables_at(t)
        self.net.eval()
        e = predict_eps(
            self.net, x.to(device=self.device, dtype=self.dtype), c.expand(x.shape[0]), K, A, D
        )
        return -torch.linalg.solve_triangular(L, e, upper=False, left=False).to(dtype=x.dtype)

    @torch.no_grad()
    def __call__(self, x, t) -> torch.Tensor:
        """``-L_t^{-T} eps_theta(x, t)``: rows ``-eps^T L_t^{-1}`` (triangular solve)."""
        L = self._tables_at(as_time("t", t))[3]
        e = self.eps(x, t)
        s = -torch.linalg.solve_triangular(L, e, upper=False, left=False)
        return s.to(dtype=x.dtype if torch.is_tensor(x) else torch.float32)
