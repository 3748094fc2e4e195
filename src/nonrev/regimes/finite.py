"""Collapse at finite N: the median lock time, predicted without the reverse dynamics.

:func:`nonrev.regimes.collapse_lock_times` runs the reverse process under the exact
empirical score of ``N`` training points and records, per trajectory, the time below
which the nearest training point (largest posterior weight) never changes again; the
median is the measured ``t_C``. :func:`collapse_time_finite` predicts that median for
Gaussian data ``N(m, C)`` and any ``U``, ``Q`` (docs/THEORY.md section 4, "Finite N").

**Why no reverse dynamics is needed.** With the exact score, the reverse process has
the path law of the forward process started at a uniformly chosen training point
``a_0`` (time reversal of a diffusion; the empirical law is its initial law). So, in
law, a reverse trajectory is ``x_s = M_s a_0 + xi_s``, ``xi`` the forward OU noise
path, read backwards, and its lock time is the *first* forward time at which some
other point ``a_mu`` takes the largest posterior weight:

    L = inf{ s : |x_s - M_s a_mu|_{Sigma_s^{-1}} < |x_s - M_s a_0|_{Sigma_s^{-1}}
                 for some mu != 0 }.

The forward path is simulated with exact Gaussian transitions on a uniform grid of
step ``dt`` (the recording grid of the measurement; a first exit observed on a grid
is later than in continuous time, by O(sqrt(dt)), exactly as in the measurement),
and the arg max is the same one the measurement uses
(:meth:`nonrev.scores.EmpiricalScore.nearest`). There is no score, no softmax mean
and no Euler-Maruyama error: the only errors are Monte Carlo ones (the sampled
training set and paths).

**Why not a formula.** The fixed-time probability that ``a_0`` holds the largest
weight at time ``t`` depends on ``U, Q`` only through the Mahalanobis SNR spectrum
``s_i(t)`` (as the REM criterion does), and can be computed in O(d) per sample. But
the lock time is a first-passage time: the median of the fixed-time statistic lies
9-17% *above* the median lock time at d = 32..64 (paths leave the cell of ``a_0``
and come back), and the annealed first-passage count (reflection principle, exact for
U = I) lies 25-30% *below* it, because exits are strongly correlated through the
shared path (docs/THEORY.md gives the numbers). The asymptotic criterion
(:func:`nonrev.regimes.collapse_time`) sits 4-8% below. So this module predicts the
statistic by sampling the one object it depends on, the forward path against N
Gaussian points.

**Cost.** O(n_traj * K * N * d) for ``K = t_hi / dt`` grid steps (one GEMM per step,
as one :meth:`EmpiricalScore.nearest` call), plus one ``(M_t, Sigma_t)`` pair per
step (O(d^3)); :func:`collapse_time_finite` stops once the median is known. It is a
simulation, not a closed form: a fraction of the cost of the measurement it
predicts, but nowhere near a theory call at d = 1024 (docs/THEORY.md has measured
costs).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nonrev.linalg import as_count, as_positive_float, as_psd, psd_factor
from nonrev.process.ou import OUProcess
from nonrev.regimes.theory import collapse_time

__all__ = ["collapse_time_finite", "finite_lock_times"]


def _check_process(process) -> OUProcess:
    if not isinstance(process, OUProcess):
        raise ValueError(f"process must be an OUProcess, got {type(process).__name__}")
    return process


@torch.no_grad()
def finite_lock_times(process: OUProcess, data_cov, n_train: int, *, n_traj: int = 2000,
                      dt: float = 0.005, seed: int = 0, t_max: float | None = None,
                      stop_at_median: bool = False, n_datasets: int = 4, device=None,
                      dtype=torch.float32) -> dict:
    """Lock times of ``n_traj`` forward paths against ``n_train`` Gaussian points.

    Draws ``n_datasets`` training sets of ``N = n_train`` points from
    ``N(0, data_cov)`` (the mean does not enter: every lock time is invariant under a
    common shift of the points), gives each an equal share of the paths, picks a
    source ``a_0`` uniformly in its set for each path, runs the forward process with exact
    transitions on the grid ``s_k = k dt`` up to ``t_max`` (default 3 times the
    asymptotic ``t_C``, doubled while more than half of the paths are still locked
    there) and records, per path, the last grid time before the first at which
    another point has the largest posterior weight (``t_max`` if none).
    ``stop_at_median=True`` stops as soon as more than half of the paths have left
    (the median is then known) and reports the paths still locked as ``inf``: about
    1/3 of the work, but ``q75`` may be ``inf``. Several training sets make the
    prediction one for the Gaussian data law rather than for one draw of it: at
    d = 8, N = 500 the median lock time of single draws spreads by about +-5%.

    Returns ``lock_times`` (n_traj,), ``median``, ``q25``, ``q75``, ``t_asymptotic``
    (:func:`nonrev.regimes.collapse_time`), ``t_max``, ``dt``, ``steps``.
    """
    from nonrev.scores.empirical import EmpiricalScore

    proc = _check_process(process)
    d = proc.dim
    C = as_psd("data_cov", data_cov, dim=d)
    n = as_count("n_train", n_train, minimum=2)
    n_traj = as_count("n_traj", n_traj, minimum=1)
    dt = as_positive_float("dt", dt)
    n_sets = min(as_count("n_datasets", n_datasets, minimum=1), n_traj)
    t_asym = collapse_time(proc, C, n)  # ValueError for C = 0 (no variance)
    t_hi = 3.0 * t_asym if t_max is None else as_positive_float("t_max", t_max)
    dev = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    F = torch.as_tensor(psd_factor(C), dtype=torch.float64)
    bounds = np.linspace(0, n_traj, n_sets + 1).astype(int)  # paths of set j: a block
    scores, starts, srcs = [], [], []
    for j in range(n_sets):
        points = torch.randn((n, d), generator=gen, dtype=torch.float64) @ F.T
        src = torch.randint(0, n, (int(bounds[j + 1] - bounds[j]),), generator=gen)
        scores.append(EmpiricalScore(proc, points.to(device=dev, dtype=dtype), cache_size=2))
        starts.append(points[src])
        srcs.append(src)
    src = torch.cat(srcs)
    block = torch.as_tensor(np.repeat(np.arange(n_sets), np.diff(bounds)))
    M_h, S_h = proc.mean_and_cov(dt)
    step_M = torch.as_tensor(M_h.T, dtype=torch.float64)
    step_L = torch.as_tensor(np.linalg.cholesky(S_h).T, dtype=torch.float64)
    x = torch.cat(starts)  # float64 paths, exact transitions
    lock = torch.full((n_traj,), -1.0, dtype=torch.float64)
    k = 0
    while True:
        steps = int(math.ceil(t_hi / dt - 1e-9))
        while k < steps:
            k += 1
            x = x @ step_M + torch.randn((n_traj, d), generator=gen, dtype=torch.float64) @ step_L
            alive = lock < 0
            if not bool(alive.any()):
                break
            for j, score in enumerate(scores):
                idx = torch.nonzero(alive & (block == j)).squeeze(1)
                if idx.numel() == 0:
                    continue
                near = score.nearest(x[idx].to(device=dev, dtype=dtype), k * dt).cpu()
                lock[idx[near != src[idx]]] = (k - 1) * dt
            if stop_at_median and int((lock >= 0).sum()) > n_traj // 2 + 1:
                break  # the median is known: every path still locked has a larger lock time
        exited = int((lock >= 0).sum())
        if exited > n_traj // 2 + 1 or t_max is not None:
            break
        t_hi *= 2.0  # more than half still locked: extend the horizon
    fill = math.inf if stop_at_median and k < steps else k * dt
    lock = torch.where(lock < 0, torch.full_like(lock, fill), lock).numpy()
    with np.errstate(invalid="ignore"):  # inf - inf between paths still locked
        q25, med, q75 = (float(v) for v in np.nan_to_num(
            np.percentile(lock, [25, 50, 75]), nan=math.inf))
    return {"lock_times": lock, "median": med, "q25": q25, "q75": q75,
            "t_asymptotic": float(t_asym), "t_max": float(k * dt), "dt": float(dt),
            "steps": int(k)}


def collapse_time_finite(process: OUProcess, data_cov, n_train: int, *, n_traj: int = 2000,
                         dt: float = 0.005, seed: int = 0, device=None,
                         dtype=torch.float32) -> float:
    """Predicted median lock time (the ``t_C`` that :func:`collapse_lock_times`
    measures) for ``n_train`` training points from a Gaussian of covariance
    ``data_cov``, under ``process`` (any ``U``, ``Q``).

    The median of :func:`finite_lock_times` (see the module docstring for why a
    forward-path Monte Carlo is exact in law for the reverse dynamics, and what it
    costs), over 4 training sets of 500 paths each. ``dt``: the recording grid of the
    measurement it predicts (the lock time observed on a grid grows like sqrt(dt)).
    ``seed`` fixes the sampled training sets and paths.
    """
    return finite_lock_times(process, data_cov, n_train, n_traj=n_traj, dt=dt, seed=seed,
                             stop_at_median=True, device=device, dtype=dtype)["median"]
