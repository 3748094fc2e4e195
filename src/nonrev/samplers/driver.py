"""Reverse-time samplers for the non-reversible OU process.

With ``p_t`` the law of ``x_t`` under ``dx = -A x dt + sqrt(2) dW`` and reverse time
``tau = T - t``, the reverse SDE and the probability-flow ODE are

    dx = [A x + 2 grad log p_t(x)] dtau + sqrt(2) dW,        (reverse SDE)
    dx/dtau = A x + grad log p_t(x).                         (probability flow)

Every sampler here is a pure function of (score, kernel of the process on a time grid,
x_T, generator) with one signature; :func:`sample` is the entry point. A step goes
from grid time ``t`` down to ``s = t - h``; the score is evaluated at ``t`` (and at
``s`` for Heun's corrector). Methods:

``euler_maruyama``
    ``x_s = x + h (A x + 2 score(x, t)) + sqrt(2 h) z``. Explicit in ``A``: needs
    ``h ||A||_2`` small, which a stiff current (large ``||Q||``) breaks; the sampler
    refuses steps with ``h ||A||_2 > 2`` and warns above 0.5.

``ancestral``
    The exact Gaussian posterior step, the matrix form of DDPM's ancestral sampler.
    With ``x0_hat = M_t^{-1}(x + Sigma_t score(x, t))`` (Tweedie), draw
    ``x_s ~ q(x_s | x_t, x_0 = x0_hat)``. For these kernels
    ``x_s = M_h^{-1} x + (M_h^{-1} - K) Sigma_t score + L_post z`` with the gain
    ``K = Sigma_s M_h^T Sigma_t^{-1}`` and posterior covariance (Joseph form, PSD by
    construction) ``P = (I - K M_h) Sigma_s (I - K M_h)^T + K Sigma_h K^T``. The
    large ``M_t^{-1}`` is never formed. The linear drift is integrated exactly at any
    step size; with an exact score a point mass is reproduced in one step. Errors of an
    approximate (learned) score are not damped: the step multiplies them by up to
    ``||M_h^{-1}||``, about ``e^{h max Re spec A}``.

``ddim``
    The deterministic counterpart (DDIM, eta = 0): ``x_s = M_s x0_hat + L_s eps_hat``
    with ``eps_hat = L_t^{-1}(x - M_t x0_hat) = -L_t^T score``, i.e.
    ``x_s = M_h^{-1} x + (M_h^{-1} Sigma_t - L_s L_t^T) score``. It transports
    ``N(M_t a, Sigma_t)`` exactly onto ``N(M_s a, Sigma_s)`` for a point mass ``a``;
    with Cholesky factors ``L`` it integrates a probability-flow ODE that differs from
    the one above by ``-K_t grad log p_t`` with ``K_t`` antisymmetric, which leaves
    every marginal unchanged (``div(K grad p) = 0``).

``heun``
    Heun's second-order method on the probability-flow ODE (two score evaluations a
    step). Explicit in ``A`` like Euler-Maruyama, with the same step check.

Time grids (:func:`time_grid`) run from ``t_min`` to ``T``: ``uniform`` in ``t``, or
``log`` (geometric in ``t``, i.e. about uniform in log signal-to-noise near ``t = 0``
where ``Sigma_t ~ 2 t I``). The samples returned are at ``t_min`` (the final step
lands there, the score is never evaluated at ``t = 0``); ``denoise=True`` adds one
Tweedie step to the posterior mean ``E[x_0 | x_{t_min}]``.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

from nonrev.linalg import as_batch, psd_factor
from nonrev.process.ou import OUProcess

Score = Callable[[torch.Tensor, float], torch.Tensor]

METHODS = ("euler_maruyama", "ancestral", "ddim", "heun")
SPACINGS = ("uniform", "log")
_EXPLICIT = ("euler_maruyama", "heun")
#: Explicit methods: refuse above this ``h ||A||_2``, warn above ``_WARN_STEP``.
_MAX_STEP = 2.0
_WARN_STEP = 0.5


def time_grid(T: float, steps: int, t_min: float = 1e-3, spacing: str = "uniform") -> np.ndarray:
    """``steps + 1`` increasing intrinsic times from ``t_min`` to ``T``."""
    T, t_min, steps = _check_times(T, t_min, steps)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    if spacing == "log":
        if t_min <= 0:
            raise ValueError("t_min must be > 0 for a log-spaced grid")
        return np.geomspace(t_min, T, steps + 1)
    return np.linspace(t_min, T, steps + 1)


def _check_times(T, t_min, steps):
    try:
        T = float(T)
        t_min = float(t_min)
    except (TypeError, ValueError):
        raise ValueError(f"T and t_min must be numbers, got T={T!r}, t_min={t_min!r}") from None
    if not np.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a finite positive time, got {T!r}")
    if not np.isfinite(t_min) or t_min < 0 or t_min >= T:
        raise ValueError(f"t_min must lie in [0, T) = [0, {T}), got {t_min!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return T, t_min, int(steps)


def _step_matrices(process: OUProcess, grid: np.ndarray, method: str, dtype, device):
    """Per-step matrices ``(F, G, C)`` for the exact methods, step i going t_{i+1} -> t_i.

    ``x_s = x F^T + score G^T (+ z C^T)``; computed in float64 then cast.
    """
    ker = process.kernel(grid, dtype=torch.float64)
    S_t, S_s = ker.Sigma[1:], ker.Sigma[:-1]
    L_t, L_s = ker.L[1:], ker.L[:-1]
    Mh, Sh = ker.step_M, ker.step_Sigma
    F = torch.linalg.inv(Mh)
    if method == "ddim":
        G = F @ S_t - L_s @ L_t.transpose(1, 2)
        C = None
    else:  # ancestral
        # K = Sigma_s Mh^T Sigma_t^{-1}: solve Sigma_t K^T = Mh Sigma_s (Sigma_t SPD)
        K = torch.cholesky_solve(Mh @ S_s, L_t).transpose(1, 2)
        eye = torch.eye(process.dim, dtype=torch.float64)
        R = eye - K @ Mh
        P = R @ S_s @ R.transpose(1, 2) + K @ Sh @ K.transpose(1, 2)
        P = 0.5 * (P + P.transpose(1, 2))
        C, info = torch.linalg.cholesky_ex(P)
        for i in torch.nonzero(info).flatten().tolist():  # singular posterior (s = 0)
            C[i] = torch.from_numpy(psd_factor(P[i].numpy()))
        G = (F - K) @ S_t
    cast = dict(dtype=dtype, device=device)
    return F.to(**cast), G.to(**cast), (None if C is None else C.to(**cast)), ker


def sample(
    score: Score,
    process: OUProcess,
    n: int | None = None,
    x_T: torch.Tensor | None = None,
    *,
    T: float | None = None,
    steps: int = 200,
    method: str = "ancestral",
    t_min: float = 1e-3,
    spacing: str = "uniform",
    generator: torch.Generator | None = None,
    save_times=None,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
    denoise: bool = False,
    device=None,
    dtype: torch.dtype = torch.float32,
):
    """Run the reverse process from time ``T`` down to ``t_min``.

    Parameters
    ----------
    score : callable ``score(x, t) -> tensor``, ``grad log p_t`` at a (B, d) batch.
    process : the forward :class:`OUProcess`.
    n : number of samples drawn from the stationary law ``N(0, U^{-1})`` (when
        ``x_T`` is not given).
    x_T : (B, d) starting points at time ``T`` (e.g. to continue a trajectory);
        its device and dtype are used.
    T : start time. Default ``6 / relaxation_rate``: ``KL(p_T || N(0, U^{-1}))``
        then carries a factor ``e^{-12}`` of its initial value.
    steps : number of steps (>= 1). method : one of ``METHODS``.
    t_min : end time (> 0 unless ``spacing='uniform'`` and the method is not heun).
    spacing : ``uniform`` or ``log`` (see :func:`time_grid`).
    generator : torch.Generator for the starting points and the noise; the same
        seed gives bitwise the same samples on CPU.
    save_times : times in ``[t_min, T]`` at which to store the batch; they are
        inserted into the grid.
    callback : ``callback(i, t, x)``, called with the start (i = 0, t = T) and after
        every step i = 1..steps with the new time and state.
    denoise : finish with a Tweedie step to ``E[x_0 | x_{t_min}]``.

    Returns
    -------
    samples : (B, d) tensor at ``t_min`` (or denoised).
    info : dict with ``nfe`` (score evaluations), ``times`` (the grid, decreasing),
        ``method``, and, with ``save_times``, ``save_times`` and ``trajectory``
        (len(save_times), B, d) in the order given.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if not isinstance(process, OUProcess):
        raise ValueError(f"process must be an OUProcess, got {type(process).__name__}")
    if T is None:
        T = 6.0 / process.relaxation_rate()
    grid = time_grid(T, steps, t_min, spacing)
    if method == "heun" and grid[0] <= 0:
        raise ValueError("t_min must be > 0 for heun (its corrector evaluates the score at t_min)")
    saves = None
    if save_times is not None:
        saves = np.atleast_1d(np.asarray(save_times, dtype=float))
        if saves.ndim != 1 or not np.all(np.isfinite(saves)) or np.any(saves < grid[0] - 1e-12) \
                or np.any(saves > grid[-1] + 1e-12):
            raise ValueError(f"save_times must be finite times in [t_min, T] = [{grid[0]}, {grid[-1]}]")
        grid = np.union1d(grid, np.clip(saves, grid[0], grid[-1]))

    d = process.dim
    if x_T is None:
        if n is None or isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer when x_T is not given, got {n!r}")
        device = torch.device("cpu") if device is None else torch.device(device)
        z = torch.randn((int(n), d), generator=generator, dtype=dtype,
                        device=generator.device if generator is not None else device).to(device)
        chol = torch.as_tensor(np.linalg.cholesky(process.stationary_cov), dtype=dtype, device=device)
        x = z @ chol.T
    else:
        x = as_batch("x_T", x_T, d)
        if n is not None and n != x.shape[0]:
            raise ValueError(f"n ({n}) does not match the rows of x_T ({x.shape[0]})")
        device, dtype = x.device, x.dtype
        x = x.clone()

    def noise():
        g_dev = generator.device if generator is not None else device
        return torch.randn(x.shape, generator=generator, dtype=dtype, device=g_dev).to(device)

    process.prefetch(grid)  # scores look (M_t, Sigma_t) up instead of recomputing them
    h = np.diff(grid)  # step i goes from grid[i+1] down to grid[i]
    if method in _EXPLICIT:
        a_norm = np.linalg.norm(process.A, 2)
        worst = float(h.max() * a_norm)
        if worst > _MAX_STEP:
            raise ValueError(
                f"{method} is unstable here: step h = {h.max():.3g} times ||A||_2 = {a_norm:.3g} "
                f"is {worst:.3g} > {_MAX_STEP}. Use more steps, or method='ancestral' or 'ddim', "
                "which integrate the linear drift exactly.")
        if worst > _WARN_STEP:
            warnings.warn(f"{method}: h ||A||_2 = {worst:.3g} > {_WARN_STEP}; the explicit step "
                          "is inaccurate for this drift. Consider method='ancestral' or 'ddim'.",
                          RuntimeWarning, stacklevel=2)
        A = torch.as_tensor(process.A, dtype=dtype, device=device)
    else:
        F, G, C, _ = _step_matrices(process, grid, method, dtype, device)

    nfe = 0
    trajectory = {}
    times_desc = grid[::-1]
    if callback is not None:
        callback(0, float(grid[-1]), x)
    if saves is not None and np.isclose(grid[-1], saves).any():
        trajectory[float(grid[-1])] = x.clone()
    for k in range(len(grid) - 1):
        i = len(grid) - 2 - k
        t, s, hk = float(grid[i + 1]), float(grid[i]), float(h[i])
        sc = score(x, t)
        nfe += 1
        if method == "euler_maruyama":
            x = x + hk * (x @ A.T + 2.0 * sc) + (2.0 * hk) ** 0.5 * noise()
        elif method == "heun":
            k1 = x @ A.T + sc
            x_pred = x + hk * k1
            k2 = x_pred @ A.T + score(x_pred, s)
            nfe += 1
            x = x + 0.5 * hk * (k1 + k2)
        else:
            x = x @ F[i].T + sc @ G[i].T
            if C is not None:
                x = x + noise() @ C[i].T
        if callback is not None:
            callback(k + 1, s, x)
        if saves is not None:
            trajectory[s] = x.clone()
    if denoise:
        t = float(grid[0])
        M, S = process.mean_and_cov(t)
        Minv = torch.as_tensor(np.linalg.inv(M), dtype=dtype, device=device)
        S = torch.as_tensor(S, dtype=dtype, device=device)
        x = (x + score(x, t) @ S.T) @ Minv.T
        nfe += 1
    info = {"nfe": nfe, "times": times_desc.copy(), "method": method}
    if saves is not None:
        info["save_times"] = saves
        keys = np.array(sorted(trajectory))
        info["trajectory"] = torch.stack(
            [trajectory[float(keys[np.argmin(np.abs(keys - s))])] for s in saves])
    return x, info
