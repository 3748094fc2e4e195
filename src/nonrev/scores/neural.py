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
import torch
from torch import nn

from nonrev.linalg import as_batch, as_time, psd_factor, sym
from nonrev.models.networks import (  # noqa: F401  (re-exported)
    NETWORKS,
    ConvNet,
    MLPNet,
    SinusoidalTimeEmbedding,
    build_network,
)
from nonrev.operators import IdentityBasis, OperatorStack, apply_sum

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
    """Per-time maps, stacked over ``n`` times.

    ``times``, ``cond``: tensors (n,), ``cond`` what the network is given as its time
    input (the time ``t`` itself, or a noise level: :meth:`Parameterisation.cond`).
    The rest are :class:`nonrev.operators.OperatorStack` of ``n`` maps in the
    process's basis (dense ``(n, d, d)`` for an :class:`~nonrev.process.ou.OUProcess`,
    blocks ``(n, m, g, g)`` for a structured kernel such as
    :class:`~nonrev.process.spectral.SpectralProcess`): ``M``, ``L``: the kernel
    (``L L^T = Sigma_t``), ``Linv`` = ``L^{-1}``; ``K``: input map (the network sees
    ``y = K x``); ``A``, ``D``: ``eps_theta(x, t) = A x - D F(K x, cond)``.
    """

    times: torch.Tensor
    cond: torch.Tensor
    M: OperatorStack
    L: OperatorStack
    Linv: OperatorStack
    K: OperatorStack
    A: OperatorStack
    D: OperatorStack

    def take(self, idx) -> "Tables":
        """The tables at the indices ``idx`` (an index tensor or a slice)."""
        return Tables(*(a[idx] if torch.is_tensor(a) else a.take(idx) for a in self))

    def to(self, device=None, dtype=None) -> "Tables":
        return Tables(
            *(
                a.to(device=device, dtype=dtype)
                if torch.is_tensor(a)
                else a.to(dtype=dtype, device=device)
                for a in self
            )
        )

    @property
    def nbytes(self) -> int:
        return sum(
            a.element_size() * a.nelement() if torch.is_tensor(a) else a.nbytes for a in self
        )


#: The parametrisations: plain noise prediction, the Gaussian preconditioning, and
#: the same Gaussian core with the network's input, output and time in the data frame.
KINDS = ("eps", "gaussian", "data_frame")

#: Float64 numbers per (times x blocks) array while the tables are computed: the
#: times are taken in chunks so that each temporary stays near 32 MiB (64 times of
#: a spectral kernel, a few of a dense d = 784 one).
_CHUNK_NUMBERS = 2**22


def _T(X: np.ndarray) -> np.ndarray:
    return np.swapaxes(X, -1, -2)


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

    **Structured kernels.** Every matrix above is computed and applied in the
    kernel's blocks (``process.pair_blocks``, ``process.operators``): for a
    :class:`~nonrev.process.spectral.SpectralProcess` each is block-diagonal in the
    DCT groups, so the tables cost ``O(n d g)`` memory and a map ``O(d log d + d g)``
    per row. ``data_cov`` is then the data's covariance blocks in the process's basis
    (``(m, g, g)``, :func:`nonrev.regimes.theory.covariance_blocks`: the part of the
    covariance inside the groups, the Gaussian core's approximation); a ``(d, d)``
    covariance is accepted when it is block-diagonal in the basis.
    """

    def __init__(self, process, data_cov=None, kind: str | None = None, t_range=None):
        self.process = process
        self.dim = d = int(process.dim)
        self.blocks = tuple(int(b) for b in process.basis.blocks)  # (m, g)
        m, g = self.blocks
        self.cov = None if data_cov is None else np.asarray(data_cov, dtype=np.float64)
        if self.cov is None:
            self.cov_blocks = None
        elif self.cov.shape == (m, g, g):
            self.cov_blocks = self.cov
        elif self.cov.shape == (d, d):
            self.cov_blocks = process.to_blocks("data_cov", self.cov)
        else:
            want = f"({d}, {d})" + ("" if (m, g) == (1, d) else f" or blocks ({m}, {g}, {g})")
            raise ValueError(f"data_cov must be {want}, got {self.cov.shape}")
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
        if self.cov_blocks is not None:
            w, V = np.linalg.eigh(sym(self.cov_blocks))
            self._sqrt_cov = (V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ _T(V)
        if self.kind == "data_frame":
            if t_range is None:
                raise ValueError(
                    "kind 'data_frame' needs t_range = (t_min, t_max), the "
                    "training range its noise levels are mapped onto"
                )
            self.t_range = (float(t_range[0]), float(t_range[1]))
            if not (0 < self.t_range[0] < self.t_range[1]):
                raise ValueError(f"t_range must be 0 < t_min < t_max, got {t_range}")
            M, S = process.pair_blocks(np.array(self.t_range))
            self._nu_range = tuple(float(v) for v in self._log_nu(M, S))
        self._chunk = max(1, min(64, _CHUNK_NUMBERS // (m * g * g)))
        self._at = functools.lru_cache(maxsize=256)(self._at_uncached)
        self._den = functools.lru_cache(maxsize=256)(self._denoise_uncached)

    @property
    def preconditioned(self) -> bool:
        return self.cov is not None

    # -- the Gaussian core (every function broadcasts over leading axes: times) --------
    def _posterior(self, M: np.ndarray, S: np.ndarray):
        """``(W, R, G_inv, K)`` as blocks: posterior mean map, a root of the posterior
        covariance (as the kind wants it), ``G_t^{-1}`` and the network's input map."""
        C = self.cov_blocks
        G = sym(M @ C @ _T(M)) + sym(S)
        LG_inv = np.linalg.inv(np.linalg.cholesky(G))
        G_inv = _T(LG_inv) @ LG_inv
        W = C @ _T(M) @ G_inv
        if self.kind == "data_frame":
            Ch = self._sqrt_cov
            w, V = np.linalg.eigh(self._snr(M, S))
            R = Ch @ ((V / np.sqrt(1.0 + np.clip(w, 0.0, None))[..., None, :]) @ _T(V))
            return W, R, G_inv, Ch @ _T(M) @ G_inv
        P = C - W @ M @ C
        return W, psd_factor(sym(P)), G_inv, LG_inv

    def _snr(self, M: np.ndarray, S: np.ndarray) -> np.ndarray:
        """``S_t = C^{1/2} M^T Sigma^{-1} M C^{1/2}`` (symmetric PSD) as blocks."""
        MC = M @ self._sqrt_cov
        return sym(_T(MC) @ np.linalg.solve(sym(S), MC))

    def _log_nu(self, M: np.ndarray, S: np.ndarray) -> np.ndarray:
        """``log(d / Tr S_t)`` for blocks (..., m, g, g): one value per leading index."""
        tr = np.trace(self._snr(M, S), axis1=-2, axis2=-1).sum(axis=-1)
        return np.log(self.dim / np.maximum(tr, 1e-300))

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
        log_nu = np.concatenate(
            [
                self._log_nu(*self.process.pair_blocks(fine[lo : lo + self._chunk]))
                for lo in range(0, fine.size, self._chunk)
            ]
        )
        log_nu = np.maximum.accumulate(log_nu)  # round-off only: it increases with t
        targets = np.linspace(log_nu[0], log_nu[-1], n)
        grid = np.exp(np.interp(targets, log_nu, np.log(fine)))
        grid[0], grid[-1] = t_min, t_max
        return grid

    def _cond(self, times: np.ndarray, M: np.ndarray, S: np.ndarray) -> np.ndarray:
        """The network's time input at ``times`` (kernel blocks ``M``, ``S`` (n, m, g,
        g)): the times themselves, or (``data_frame``) the noise level ``nu_t`` mapped
        log-affinely onto ``t_range``."""
        if self.kind != "data_frame":
            return np.asarray(times, dtype=np.float64)
        lo, hi = self._nu_range
        a = (self._log_nu(M, S) - lo) / (hi - lo)
        l0, l1 = (math.log(x) for x in self.t_range)
        return np.exp(l0 + a * (l1 - l0))

    def cond(self, t: float) -> float:
        """The network's time input at ``t`` (see :meth:`_cond`)."""
        M, S = self.process.pair_blocks([float(t)])
        return float(self._cond(np.array([float(t)]), M, S)[0])

    def _matrices(self, M: np.ndarray, S: np.ndarray):
        """``(L, L^{-1}, K, A, D)`` as blocks from ``M_t`` and ``Sigma_t`` (float64,
        leading axes free)."""
        L = np.linalg.cholesky(sym(S))
        Linv = np.linalg.inv(L)
        if self.cov is None:
            eye = np.broadcast_to(np.eye(L.shape[-1]), L.shape)
            return L, Linv, eye, np.zeros_like(L), -eye
        _, R, G_inv, K = self._posterior(M, S)
        return L, Linv, K, _T(L) @ G_inv, Linv @ M @ R

    def _tables(self, times: np.ndarray, device, dtype) -> Tables:
        parts = []
        for lo in range(0, times.size, self._chunk):
            t = times[lo : lo + self._chunk]
            M, S = self.process.pair_blocks(t)
            parts.append((self._cond(t, M, S), M, *self._matrices(M, S)))
        to = dict(device=device, dtype=dtype)
        cond, *mats = (np.concatenate([p[k] for p in parts]) for k in range(7))
        ops = [self.process.operators(a, **to) for a in mats]
        return Tables(torch.as_tensor(times, **to), torch.as_tensor(cond, **to), *ops)

    def tables(self, times, *, device=None, dtype=torch.float32) -> Tables:
        """:class:`Tables` on a strictly increasing grid of positive times (every
        time's kernel computed exactly, the rest per time, in float64; in chunks of
        times that keep each temporary near 32 MiB)."""
        grid = np.asarray(times, dtype=np.float64).reshape(-1)
        if grid.size == 0 or not np.all(np.isfinite(grid)):
            raise ValueError("the training grid must be a non-empty array of finite times")
        if float(grid[0]) <= 0:
            raise ValueError("the training grid must start at t > 0")
        if grid.size > 1 and not np.all(np.diff(grid) > 0):
            raise ValueError("the training grid must be strictly increasing")
        return self._tables(grid, device, dtype)

    def _at_uncached(self, t: float, device, dtype) -> Tables:
        return self._tables(np.array([t]), device, dtype)

    def _denoise_uncached(self, t: float, device, dtype):
        """``(W_t, R_t)`` (preconditioned) or ``(M_t^{-1}, L_t)`` (plain) at ``t``, as
        operator stacks of one time, so that ``x0_hat = W x + R F`` resp.
        ``M^{-1} (x - L eps)``."""
        M, S = self.process.pair_blocks([t])
        to = dict(device=device, dtype=dtype)
        if self.cov is None:
            L = np.linalg.cholesky(sym(S))
            pair = (np.linalg.inv(M), L)
        else:
            pair = self._posterior(M, S)[:2]
        return tuple(self.process.operators(a, **to) for a in pair)

    def denoise_matrices(self, t: float, *, device=None, dtype=torch.float32):
        """The maps of the data prediction at ``t`` (cached, LRU of 256 times), as
        :class:`~nonrev.operators.OperatorStack` of one time: ``(W_t, R_t)`` with
        ``x0_hat = W_t x + R_t F`` when preconditioned (``R_t`` the posterior factor
        above), else ``(M_t^{-1}, L_t)`` with ``x0_hat = M_t^{-1} (x - L_t eps)``."""
        return self._den(float(t), torch.device(device or "cpu"), dtype)

    def at(self, t: float, *, device=None, dtype=torch.float32) -> Tables:
        """:class:`Tables` of one time ``t > 0`` (cached, LRU of 256 times)."""
        return self._at(float(t), torch.device(device or "cpu"), dtype)


def predict_eps(net: nn.Module, x: torch.Tensor, tab: Tables) -> torch.Tensor:
    """``eps_theta = A x - D F(K x, cond)`` for groups of rows ``x`` (G, r, d), group
    ``k`` at the ``k``-th time of ``tab`` (:class:`Tables` of ``G`` times)."""
    G, r, d = x.shape
    y = tab.K.apply_groups(x).reshape(G * r, d)
    F = net(y, tab.cond.repeat_interleave(r)).reshape(G, r, d)
    return tab.A.apply_groups(x) - tab.D.apply_groups(F)


# ---------------------------------------------------------------------------- objective
def perturb(x0: torch.Tensor, tab: Tables, z: torch.Tensor) -> torch.Tensor:
    """``x_t = M_t x_0 + L_t z`` for groups of rows sharing a time: ``x0`` and ``z``
    (G, r, d), group ``k`` at the ``k``-th time of ``tab`` (memory O(G d g + G r d))."""
    return tab.M.apply_groups(x0) + tab.L.apply_groups(z)


def dsm_loss(net: nn.Module, x0: torch.Tensor, tab: Tables, z: torch.Tensor) -> torch.Tensor:
    """Denoising score matching in noise prediction, ``mean |eps_theta(x_t, t) - z|^2``.

    ``x0``, ``z``: (G, r, d); ``tab``: :class:`Tables` of G times, group ``k``
    perturbed at ``tab.times[k]`` (:func:`perturb`); ``r = 1`` gives every row its
    own time. The mean runs over the ``G r d`` entries, so the loss of a perfect
    denoiser of pure noise is 1.
    """
    xt = perturb(x0, tab, z)
    return (predict_eps(net, xt, tab) - z).square().mean()


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
    Evaluated under ``torch.no_grad`` with the network in eval mode. With a
    structured process every map acts through its basis (``O(d log d)`` per row).
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
        self.tables = tables.to(device=self.device, dtype=self.dtype)

    def __repr__(self) -> str:
        return (
            f"NeuralScore(dim={self.dim}, t in [{self.t_min:.4g}, {self.t_max:.4g}], "
            f"net={type(self.net).__name__}, parametrisation={self.param.kind})"
        )

    def _tables_at(self, t: float) -> Tables:
        """The :class:`Tables` of the one time ``t``: the training grid's when ``t`` is
        on it (to float32 rounding), else exact."""
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
                return self.tables.take(slice(j, j + 1))
        return self.param.at(t, device=self.device, dtype=self.dtype)

    def _eps(self, x: torch.Tensor, tab: Tables) -> torch.Tensor:
        self.net.eval()
        return predict_eps(self.net, x.to(device=self.device, dtype=self.dtype)[None], tab)[0]

    @torch.no_grad()
    def eps(self, x, t) -> torch.Tensor:
        """The predicted noise ``eps_theta(x, t)``, (B, d) in the network's dtype."""
        x = as_batch("x", x, self.dim)
        return self._eps(x, self._tables_at(as_time("t", t)))

    def stiffness(self, t) -> np.ndarray:
        """The Gaussian part of ``-grad score`` at ``t`` (float64): ``(M_t C M_t^T +
        Sigma_t)^{-1}`` with the training covariance ``C`` when preconditioned, else
        ``Sigma_t^{-1}``; (d, d) for a dense process, the kernel's blocks (m, g, g)
        for a structured one; for the samplers' stability check."""
        M, S = (a[0] for a in self.process.pair_blocks([as_time("t", t)]))
        G = S if self.param.cov is None else M @ self.param.cov_blocks @ _T(M) + S
        P = sym(np.linalg.inv(sym(G)))
        return P[0] if isinstance(self.process.basis, IdentityBasis) else P

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
        tab = self._tables_at(t)
        W, R = self.param.denoise_matrices(t, device=self.device, dtype=self.dtype)
        xn = x.to(device=self.device, dtype=self.dtype)
        self.net.eval()
        F = self.net(tab.K.apply(0, xn), tab.cond.expand(x.shape[0]))
        if self.param.preconditioned:
            out = apply_sum(0, [(W, xn), (R, F)])
        else:
            out = W.apply(0, xn - R.apply(0, F))
        return out.to(dtype=x.dtype)

    @torch.no_grad()
    def score_unchecked(self, x, t) -> torch.Tensor:
        """``__call__`` without input checks."""
        tab = self._tables_at(float(t))
        return -tab.Linv.apply_t(0, self._eps(x, tab)).to(dtype=x.dtype)

    @torch.no_grad()
    def __call__(self, x, t) -> torch.Tensor:
        """``-L_t^{-T} eps_theta(x, t)``: rows ``-eps^T L_t^{-1}``."""
        xb = as_batch("x", x, self.dim)
        tab = self._tables_at(as_time("t", t))
        s = -tab.Linv.apply_t(0, self._eps(xb, tab))
        return s.to(dtype=x.dtype if torch.is_tensor(x) else torch.float32)
