"""The reverse-time sampler :func:`sample`: a thin driver over :mod:`.steps`.

With ``p_t`` the law of ``x_t`` under ``dx = -A x dt + sqrt(2) dW`` and reverse time
``tau = T - t``, the reverse SDE and the probability-flow ODE are

    dx = [A x + 2 grad log p_t(x)] dtau + sqrt(2) dW,        (reverse SDE)
    dx/dtau = A x + grad log p_t(x).                         (probability flow)

The methods are the registered ones (``METHODS``, :mod:`nonrev.samplers.registry`):
``euler_maruyama`` and ``heun`` (explicit, :mod:`.explicit`), ``ancestral`` (exact
Gaussian posterior step, stochastic), ``ddim`` (Cholesky frame), ``gddim`` (DDIM in the
gDDIM frame ``R_t``; all three :mod:`.affine`) and ``dpmpp_2m`` (the matrix
DPM-Solver++(2M) in that frame, :mod:`.dpmpp`). The grid is either ``times=`` (any
increasing grid) or ``steps`` + ``spacing`` + ``t_min`` + ``T``
(:func:`nonrev.samplers.grids.resolve_grid`); :func:`nonrev.samplers.optimise_grid`
builds grids tuned on the exact Gaussian error.

Methods whose native output is the data prediction call ``score.denoise(x, t)`` (the
data prediction ``E[x_0 | x_t]``, see :mod:`nonrev.scores.base`) when the score object
has one, and the score otherwise; the others call the score. Inputs are validated once,
here and at the first model call; the loop itself does no checks (and no device
synchronisation).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from nonrev.linalg import as_batch
from nonrev.process.ou import has_block_interface
from nonrev.progress import Heartbeat
from nonrev.samplers.grids import SPACINGS, resolve_grid, time_grid
from nonrev.samplers.registry import METHODS, get_method
from nonrev.samplers.steps import coefficients, step
from nonrev.scores.base import evaluators, supports
from nonrev.threads import single_threaded

__all__ = ["METHODS", "SPACINGS", "sample", "time_grid"]


@single_threaded
def sample(
    score,
    process,
    n: int | None = None,
    x_T: torch.Tensor | None = None,
    *,
    T: float | None = None,
    steps: int = 200,
    method: str = "ancestral",
    t_min: float = 1e-3,
    spacing: str = "uniform",
    times=None,
    generator: torch.Generator | None = None,
    save_times=None,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
    denoise: bool = False,
    device=None,
    dtype: torch.dtype = torch.float32,
    prior=None,
):
    """Run the reverse process from time ``T`` down to ``t_min``.

    Parameters
    ----------
    score : ``score(x, t) -> grad log p_t(x)`` at a (B, d) batch (a
        :class:`nonrev.scores.base.Score`); its optional ``denoise(x, t)`` is used by
        the exact-kernel methods.
    process : the forward process (an :class:`~nonrev.process.OUProcess` or any kernel
        with the same block interface).
    n : number of samples drawn from the stationary law ``N(0, U^{-1})`` (when
        ``x_T`` is not given).
    x_T : (B, d) starting points at time ``T`` (e.g. to continue a trajectory);
        its device and dtype are used.
    T : start time. Default :func:`~nonrev.samplers.grids.default_horizon`,
        ``6 / relaxation_rate``: ``KL(p_T || N(0, U^{-1}))`` then carries a factor
        ``e^{-12}`` of its initial value.
    steps : number of steps (>= 1). method : a registered method's name (``METHODS``)
        or a :class:`~nonrev.samplers.registry.Method`.
    t_min : end time (> 0 unless ``spacing='uniform'`` and the method is not heun).
    spacing : ``uniform`` or ``log`` (see :func:`time_grid`).
    times : any strictly increasing grid of times (or decreasing, the sampling
        order); replaces ``T``, ``steps``, ``t_min`` and ``spacing``.
    generator : torch.Generator for the starting points and the noise; the same
        seed gives bitwise the same samples on CPU.
    save_times : times in ``[t_min, T]`` at which to store the batch; they are
        inserted into the grid.
    callback : ``callback(i, t, x)``, called with the start (i = 0, t = T) and after
        every step i = 1..steps with the new time and state.
    denoise : finish with a Tweedie step to ``E[x_0 | x_{t_min}]``.
    prior : ``(mean, cov)`` of a Gaussian prior whose score the methods with
        ``prior=True`` (``gddim``, ``dpmpp_2m``) integrate exactly, so that only the
        residual of the data prediction is approximated (e.g. the data's mean and
        covariance; see :mod:`nonrev.samplers.prior`). Needs ``t_min > 0`` and a score object with
        ``denoise``.

    Returns
    -------
    samples : (B, d) tensor at ``t_min`` (or denoised).
    info : dict with ``nfe`` (model evaluations), ``times`` (the grid, decreasing),
        ``method``, and, with ``save_times``, ``save_times`` and ``trajectory``
        (len(save_times), B, d) in the order given.
    """
    record = get_method(method)
    if not has_block_interface(process):
        raise ValueError(
            f"process must be an OUProcess (or a kernel with its block "
            f"interface), got {type(process).__name__}"
        )
    grid = resolve_grid(process, times, steps, T, t_min, spacing)
    if record.positive_t_min and grid[0] <= 0:
        raise ValueError(f"t_min must be > 0 for {record.name} (it evaluates the model at t_min)")
    saves = None
    if save_times is not None:
        saves = np.atleast_1d(np.asarray(save_times, dtype=float))
        if (
            saves.ndim != 1
            or not np.all(np.isfinite(saves))
            or np.any(saves < grid[0] - 1e-12)
            or np.any(saves > grid[-1] + 1e-12)
        ):
            raise ValueError(
                f"save_times must be finite times in [t_min, T] = [{grid[0]}, {grid[-1]}]"
            )
        grid = np.union1d(grid, np.clip(saves, grid[0], grid[-1]))

    d = process.dim
    if x_T is None:
        if n is None or isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer when x_T is not given, got {n!r}")
        device = torch.device("cpu") if device is None else torch.device(device)
        z = torch.randn(
            (int(n), d),
            generator=generator,
            dtype=dtype,
            device=generator.device if generator is not None else device,
        ).to(device)
        chol = process.operators(
            np.linalg.cholesky(process.stationary_cov_blocks)[None], dtype=dtype, device=device
        )
        x = chol.apply(0, z)
    else:
        x = as_batch("x_T", x_T, d)
        if n is not None and n != x.shape[0]:
            raise ValueError(f"n ({n}) does not match the rows of x_T ({x.shape[0]})")
        device, dtype = x.device, x.dtype
        x = x.clone()

    def noise():
        g_dev = generator.device if generator is not None else device
        return torch.randn(x.shape, generator=generator, dtype=dtype, device=g_dev).to(device)

    fns = evaluators(score)
    if prior is not None and fns.denoise is None:
        raise ValueError(
            "prior needs a model that gives the data prediction (a score "
            "object with denoise(x, t)); this one gives only the score"
        )
    process.prefetch(grid)  # scores look (M_t, Sigma_t) up instead of recomputing them
    stiff = score.stiffness if supports(score, "stiffness") else None
    coef = coefficients(
        process, grid, record, dtype=dtype, device=device, stiffness=stiff, prior=prior
    )
    use_x0 = record.output == "x0"
    model = fns.denoise if (use_x0 and fns.denoise is not None) else fns.score
    as_x0 = model is fns.denoise

    nfe = 0
    trajectory = {}
    times_desc = coef.times
    if callback is not None:
        callback(0, float(grid[-1]), x)
    if saves is not None and np.isclose(grid[-1], saves).any():
        trajectory[float(grid[-1])] = x.clone()
    state = None
    beat = Heartbeat(f"sample ({record.name})", coef.steps)  # a long run says how far it is
    for k in range(coef.steps):
        beat.tick(k, f"t = {times_desc[k]:.4g}")
        for stage in range(coef.stages):
            out = model(x, coef.eval_time(k, stage), first=nfe == 0)
            nfe += 1
            dz = noise() if coef.stochastic else None
            if as_x0:
                x, state = step(coef, k, x, out, noise=dz, state=state)
            else:
                x, state = step(coef, k, x, score=out, noise=dz, state=state)
        s = float(times_desc[k + 1])
        if callback is not None:
            callback(k + 1, s, x)
        if saves is not None:
            trajectory[s] = x.clone()
    if denoise:
        t = float(grid[0])
        if fns.denoise is not None:
            x = fns.denoise(x, t, first=True)
        else:
            M, S = process.pair_blocks([t])
            Minv = process.operators(np.linalg.inv(M), dtype=dtype, device=device)
            S = process.operators(S, dtype=dtype, device=device)
            x = Minv.apply(0, x + S.apply(0, score(x, t)))
        nfe += 1
    info = {"nfe": nfe, "times": times_desc.copy(), "method": record.name}
    if saves is not None:
        info["save_times"] = saves
        keys = np.array(sorted(trajectory))
        info["trajectory"] = torch.stack(
            [trajectory[float(keys[np.argmin(np.abs(keys - s))])] for s in saves]
        )
    return x, info
