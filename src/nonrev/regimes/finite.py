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

**Cost.** Unpruned, each grid step is one full search: a GEMM of n_traj x N x d
(the logits of every point for every path, as :meth:`EmpiricalScore.nearest`) plus
``c_mu(t) = |R_t a_mu|^2 / 2`` for every point (N d^2 per training set). ``(M_t,
Sigma_t)`` follow the grid by the semigroup law (two d x d products per step) instead
of a matrix exponential per step, which alone cost ~2 s per step at d = 1024.

Pruning (default from d = 64 and N = 5000): a full search every ``refresh`` (8)
steps keeps per path the ``candidates`` (32) strongest rivals; the steps in between
evaluate the source and those rivals only, with ``c_mu(t)`` interpolated (``t c_mu(t)`` through
the last
three full-search times; the error is bounded by ``||G_t - G_interp||`` and a decision
within the bound is redone with the exact ``c``). The window is searched again in full,
step by step, for each path that left in it (so every lock time comes from a full
search) and for each path for which a point outside its candidates could have taken
the lead between two full searches: the margin ``l_0 - l_mu`` of such a point is
``g_mu`` at the window's start and ``h_mu`` at its end, and in between it moves like a
Brownian bridge of variance at most ``s_mu^2 = lambda_max(G_0 dV G_0) (|a_mu| +
|a_0|)^2``, so it crossed 0 with probability ``exp(-2 g_mu h_mu / s_mu^2)``; the sum
over mu must stay below ``tol`` (1e-6). That bound is exact for U = I, Q = 0 and first
order in the window length otherwise. On every case checked (d = 16..128, N = 100..
20000, Q = 0 and optimal, isotropic and anisotropic U) pruned and unpruned lock times
were identical on every path. The pruned cost is dominated by the full searches at
window ends, the redone windows of leaving paths, and ``c_mu`` at window ends: 2.5-4x
less than unpruned at d = 128, N = 20000; at d = 1024 the per-step d^2 work on the
paths and ``c_mu`` remains, and it is still minutes, not a theory call
(docs/THEORY.md, section 4 "Finite N", has the measured costs).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from nonrev.linalg import as_count, as_positive_float, as_psd, psd_factor
from nonrev.process.ou import OUProcess
from nonrev.progress import Heartbeat
from nonrev.regimes.theory import collapse_time

__all__ = ["collapse_time_finite", "finite_lock_times"]


def _check_process(process) -> OUProcess:
    if not isinstance(process, OUProcess):
        raise ValueError(f"process must be an OUProcess, got {type(process).__name__}")
    return process


#: Default pruning: rival candidates kept per path, and grid steps per full search.
DEFAULT_CANDIDATES = 32
DEFAULT_REFRESH = 8
#: Below this dimension or number of points the default is no pruning (measured: the
#: full search is then cheaper than the bookkeeping that pruning adds).
PRUNE_MIN_DIM = 64
PRUNE_MIN_POINTS = 5000
#: Default bound on the probability that one path misses an exit in one window.
DEFAULT_TOL = 1e-6
#: Logits block of a full search, in elements (64 MiB in float32).
_BLOCK = 2**24


class _Grid:
    """``(M_k, Sigma_k)`` on the grid ``k dt`` by the semigroup law (one exact pair for
    the step, then two d x d products per step: no matrix exponential per step), and
    what a search needs at step k: ``R = L^{-1} M`` (``L L^T = Sigma``), ``P M`` and
    the a-space metric ``G = M^T Sigma^{-1} M = R^T R``."""

    def __init__(self, proc: OUProcess, dt: float):
        self.M_h, self.S_h = proc.mean_and_cov(dt)
        self.M, self.S = np.eye(proc.dim), np.zeros((proc.dim, proc.dim))
        self.k = 0

    def advance(self):
        self.M = self.M_h @ self.M
        S = self.M_h @ self.S @ self.M_h.T + self.S_h
        self.S = 0.5 * (S + S.T)
        self.k += 1
        L = np.linalg.cholesky(self.S)
        self.R = scipy.linalg.solve_triangular(L, self.M, lower=True)  # L^{-1} M
        self.PM = scipy.linalg.solve_triangular(L.T, self.R, lower=False)  # Sigma^{-1} M
        self.G = self.R.T @ self.R


def _noise_bound(G0: np.ndarray, G1: np.ndarray) -> float:
    """``lambda_max(G0 (V1 - V0) G0)``, ``V = G^{-1}``: per unit ``|delta|^2``, the
    variance that the path adds over a window to a margin ``eta^T G0 delta``."""
    X = G0 @ np.linalg.solve(G1, G0) - G0
    return max(float(np.linalg.eigvalsh(0.5 * (X + X.T))[-1]), 0.0)


def _search(v, pts, c, src, k_top, prev=None, noise=None, floor=-60.0):
    """Logits ``l_mu = v.a_mu - c_mu`` of every point for every row of ``v``
    (``v = x P M``). Returns the arg max, the largest logit of a point other than the
    source, the source's logit, (``k_top > 0``) the ``k_top`` largest logits with their
    indices and the margins ``l_0 - l_mu`` (B, N), and (``prev`` given: the margins at
    the window's start, ``inf`` for the points evaluated at every step) the bridge bound
    ``sum_mu exp(-2 g_mu h_mu / s_mu^2)`` on an unseen lead over the window,
    ``s_mu^2 = noise (|a_mu| + |a_0|)^2``."""
    B, N = v.shape[0], pts.shape[0]
    chunk = max(1, min(N, _BLOCK // max(B, 1)))
    kk = max(k_top, 2)
    src = src.to(v.device)
    l_src = (v * pts[src]).sum(1) - c[src]
    best_v = best_i = None
    parts_v, parts_i = [], []
    margins = torch.empty((B, N), dtype=v.dtype, device=v.device) if k_top else None
    risk = torch.zeros(B, dtype=v.dtype, device=v.device) if prev is not None else None
    if prev is not None:
        norms = pts.norm(dim=1)
        n0 = norms[src][:, None]
    for s in range(0, N, chunk):
        lg = torch.addmm(-c[s : s + chunk], v, pts[s : s + chunk].T)
        cv, ci = lg.max(dim=1)
        if best_v is None:
            best_v, best_i = cv, ci
        else:
            better = cv > best_v
            best_v, best_i = torch.where(better, cv, best_v), torch.where(better, ci + s, best_i)
        tv, ti = lg.topk(min(kk, lg.shape[1]), dim=1)
        parts_v.append(tv)
        parts_i.append(ti + s)
        if k_top or prev is not None:
            h = torch.sub(l_src[:, None], lg, out=lg)  # margins now (lg is not used again)
            if prev is not None:
                s2 = (norms[None, s : s + chunk] + n0) ** 2 * noise
                e = (-2.0 * prev[:, s : s + chunk]) * h.clamp_min(0.0) / s2
                # terms below exp(floor) are raised to it (an upper bound that keeps exp
                # off denormals, which run ~10x slower on x86)
                risk += torch.nan_to_num(e, nan=floor).clamp_min_(floor).exp_().sum(1)
            if k_top:
                margins[:, s : s + chunk] = h
    tv, ti = torch.cat(parts_v, 1), torch.cat(parts_i, 1)
    tv, j = tv.topk(min(kk, tv.shape[1]), dim=1)
    ti = ti.gather(1, j)
    rival = torch.where(ti[:, 0] == src, tv[:, 1], tv[:, 0])
    top = (tv[:, :k_top], ti[:, :k_top], margins) if k_top else None
    return best_i, rival, l_src, top, risk


@torch.no_grad()
def finite_lock_times(
    process: OUProcess,
    data_cov,
    n_train: int,
    *,
    n_traj: int = 2000,
    dt: float = 0.005,
    seed: int = 0,
    t_max: float | None = None,
    stop_at_median: bool = False,
    n_datasets: int = 4,
    device=None,
    dtype=torch.float32,
    candidates: int | None = None,
    refresh: int = DEFAULT_REFRESH,
    tol: float = DEFAULT_TOL,
    points=None,
) -> dict:
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
    (checked every ``refresh`` steps; the median is then known) and reports the
    paths still locked as ``inf``: about 1/3 of the work, but ``q75`` may be ``inf``.
    Several training sets make the prediction one for the Gaussian data law rather
    than for one draw of it: at d = 8, N = 500 the median lock time of single draws
    spreads by about +-5%.

    Pruning (module docstring, "Cost"): every ``refresh`` grid steps a full search over
    the ``N`` points keeps, per path, its ``candidates`` strongest rivals; the steps in
    between evaluate only those (with ``c_mu(t)`` interpolated in t, its error bounded
    and any decision within the bound redone exactly). A window is searched again in
    full, step by step, for every path that left in it or for which a point outside
    its candidates could have taken the lead unseen with probability above ``tol``
    (Brownian-bridge bound summed over the points; exact for ``U = I, Q = 0``, first
    order in the window length otherwise). ``candidates=0`` (or ``refresh=1``)
    searches every step in full; the default (``None``) prunes from d = 64 and
    N = 5000 on, where it measured faster. ``points``: one given (N, d) training set
    instead of ``n_datasets`` draws from ``N(0, data_cov)`` (the prediction for that
    set).

    Returns ``lock_times`` (n_traj,), ``median``, ``q25``, ``q75``, ``t_asymptotic``
    (:func:`nonrev.regimes.collapse_time`), ``t_max``, ``dt``, ``steps``, and
    ``full_searches`` (path-steps searched over all ``N`` points, the dominant cost).
    """
    proc = _check_process(process)
    d = proc.dim
    C = as_psd("data_cov", data_cov, dim=d)
    n = as_count("n_train", n_train, minimum=2)
    n_traj = as_count("n_traj", n_traj, minimum=1)
    dt = as_positive_float("dt", dt)
    n_sets = min(as_count("n_datasets", n_datasets, minimum=1), n_traj)
    if candidates is None:  # pruning pays where the search's GEMM dominates
        candidates = DEFAULT_CANDIDATES if d >= PRUNE_MIN_DIM and n >= PRUNE_MIN_POINTS else 0
    if int(candidates) != candidates or candidates < 0:
        raise ValueError(f"candidates must be a count >= 0, got {candidates!r}")
    m = as_count("refresh", refresh, minimum=1)
    tol = as_positive_float("tol", tol)
    K = 0 if m == 1 else min(int(candidates), n - 1)
    if K == 0:
        m = 1
    t_asym = collapse_time(proc, C, n)  # ValueError for C = 0 (no variance)
    t_hi = 3.0 * t_asym if t_max is None else as_positive_float("t_max", t_max)
    dev = torch.device("cpu") if device is None else torch.device(device)
    to = dict(device=dev, dtype=dtype)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    F = torch.as_tensor(psd_factor(C), dtype=torch.float64)
    sets, starts, srcs = [], [], []
    given = None if points is None else torch.as_tensor(np.asarray(points, dtype=float))
    if given is not None:
        if given.shape != (n, d):
            raise ValueError(f"points must have shape ({n}, {d}), got {tuple(given.shape)}")
        n_sets = 1
    bounds = np.linspace(0, n_traj, n_sets + 1).astype(int)  # paths of set j: a block
    for j in range(n_sets):
        points = (
            torch.randn((n, d), generator=gen, dtype=torch.float64) @ F.T
            if given is None
            else given
        )
        src = torch.randint(0, n, (int(bounds[j + 1] - bounds[j]),), generator=gen)
        sets.append(points.to(**to))
        starts.append(points[src])
        srcs.append(src)
    blocks = [slice(int(bounds[j]), int(bounds[j + 1])) for j in range(n_sets)]
    src_all = torch.cat(srcs)
    grid = _Grid(proc, dt)
    step_M = torch.as_tensor(grid.M_h.T, dtype=torch.float64)
    step_L = torch.as_tensor(np.linalg.cholesky(grid.S_h).T, dtype=torch.float64)
    x = torch.cat(starts)  # float64 paths, exact transitions
    lock = torch.full((n_traj,), -1.0, dtype=torch.float64)
    # |a_mu|^2 bounds: the interpolation error of c_mu, and (largest |a_mu - a_0|^2 per
    # path) the noise of a margin over a window.
    sq = [(p.double() ** 2).sum(1) for p in sets]
    amax2 = [float(s.max()) for s in sq]
    full_searches = 0

    def exact_c():
        R = torch.as_tensor(grid.R.T, **to)
        return [0.5 * ((p @ R) ** 2).sum(1) for p in sets]  # c_mu = |R a_mu|^2 / 2

    def rows_of(mask):
        return [torch.nonzero(mask[bl]).squeeze(1) + bl.start for bl in blocks]

    nodes = []  # the last full-search steps: (t, t * G, [t * c per set])
    state = None  # per block: (paths, candidate indices with the source first, gap g)
    G0 = None
    k = 0
    done = False
    beat = Heartbeat("finite-N collapse (forward paths)", int(math.ceil(t_hi / dt - 1e-9)))
    while True:
        steps = int(math.ceil(t_hi / dt - 1e-9))
        while k < steps and not done:
            beat.total = steps
            beat.tick(k, f"t = {k * dt:.4g}, {int((lock < 0).sum())} of {n_traj} paths unlocked")
            alive0 = lock < 0
            if not bool(alive0.any()):
                break
            k0 = k
            k1 = min(k0 + m, steps) if state is not None else k0 + 1
            hist = []
            while k < k1:
                k += 1
                x = (
                    x @ step_M
                    + torch.randn((n_traj, d), generator=gen, dtype=torch.float64) @ step_L
                )
                grid.advance()
                if k < k1:
                    hist.append(
                        (
                            k,
                            x.to(**to) @ torch.as_tensor(grid.PM, **to),
                            grid.G.copy(),
                            grid.R.copy(),
                        )
                    )
            # full search at k1 for the paths alive at k0
            t1 = k * dt
            cs1 = exact_c()
            v1 = x.to(**to) @ torch.as_tensor(grid.PM, **to)
            alive_rows = rows_of(alive0)
            noise = _noise_bound(G0, grid.G) if state is not None and hist else None
            res = []
            for j, idx in enumerate(alive_rows):
                full_searches += int(idx.numel())
                prev = None
                if noise is not None and state[j] is not None:
                    # margins at k0 of the window's paths, on the rows of the paths alive now
                    prev = torch.full((idx.numel(), n), math.inf, **to)
                    prev[torch.searchsorted(idx, state[j][0])] = state[j][3]
                res.append(
                    _search(
                        v1[idx],
                        sets[j],
                        cs1[j],
                        src_all[idx],
                        K + 2 if K else 0,
                        prev,
                        noise,
                        math.log(tol / n) - 5.0,
                    )
                    if idx.numel()
                    else None
                )
            nodes = (nodes + [(t1, t1 * grid.G, [t1 * c for c in cs1])])[-3:]
            redo = torch.zeros(n_traj, dtype=torch.bool)
            interp = []
            if state is not None and hist:
                # c_mu(t) between full searches: Lagrange interpolation of t c_mu(t)
                # through the last (up to) three full-search times; its error is bounded
                # through ||G_k - interpolated G_k||.
                ts = [nd[0] for nd in nodes]
                for kk, vk, Gk, _Rk in hist:
                    t = kk * dt
                    w = [
                        math.prod((t - ts[b]) / (ts[a] - ts[b]) for b in range(len(ts)) if b != a)
                        for a in range(len(ts))
                    ]
                    Gi = sum(wa * nd[1] for wa, nd in zip(w, nodes)) / t
                    err = float(np.linalg.norm(Gk - Gi)) * (1.0 + 1e-6)
                    ci = [sum(wa * nd[2][j] for wa, nd in zip(w, nodes)) / t for j in range(n_sets)]
                    # margin error <= ||E|| (|a_mu|^2 + |a_0|^2) / 2, plus float rounding
                    eps = [err * amax2[j] + 1e-5 * float(ci[j].abs().max()) for j in range(n_sets)]
                    interp.append((ci, eps))
                    for j, st in enumerate(state):
                        if st is None:
                            continue
                        idx, cand, cpts, g = st
                        lg = torch.bmm(cpts, vk[idx][:, :, None]).squeeze(2) - ci[j][cand]
                        margin = lg[:, 1:].amax(1) - lg[:, 0]
                        redo[idx[(margin > -eps[j]).cpu()]] = True  # left, or too close to tell
                # a point outside the candidates taking the lead unseen (bridge bound)
                for j, st in enumerate(state):
                    if st is None:
                        continue
                    rows = torch.searchsorted(alive_rows[j], st[0])
                    risk = res[j][4][rows].cpu()
                    redo[st[0][risk > tol]] = True
            # window steps searched again in full, in order, for the paths at risk
            todo = redo & alive0
            for (kk, vk, _Gk, Rk), (ci, eps) in zip(hist, interp):
                if not bool(todo.any()):
                    break
                exact = None
                for j, idx in enumerate(rows_of(todo)):
                    if idx.numel() == 0:
                        continue
                    full_searches += int(idx.numel())
                    _, rival, l_src, _, _ = _search(vk[idx], sets[j], ci[j], src_all[idx], 0)
                    margin = rival - l_src
                    unsure = (margin.abs() <= eps[j]).cpu()
                    if bool(unsure.any()):  # within the interpolation error: exact c_mu(t)
                        if exact is None:
                            R = torch.as_tensor(Rk.T, **to)
                            exact = [0.5 * ((p @ R) ** 2).sum(1) for p in sets]
                        u = idx[unsure]
                        _, r2, l2, _, _ = _search(vk[u], sets[j], exact[j], src_all[u], 0)
                        margin[unsure.to(margin.device)] = r2 - l2
                    gone = idx[(margin > 0).cpu()]
                    lock[gone] = (kk - 1) * dt
                    todo[gone] = False
            # exits at k1 (the paths not already placed in the window)
            for j, idx in enumerate(alive_rows):
                if res[j] is None:
                    continue
                left = idx[(res[j][0] != src_all[idx].to(dev)).cpu()]
                left = left[lock[left] < 0]
                lock[left] = (k - 1) * dt
            # the next window's candidates: the K strongest rivals at k1
            if K:
                state = []
                for j, idx in enumerate(alive_rows):
                    if res[j] is None:
                        state.append(None)
                        continue
                    keep = lock[idx] < 0
                    if not bool(keep.any()):
                        state.append(None)
                        continue
                    keep_d = keep.to(dev)
                    tv, ti, marg = (t[keep_d] for t in res[j][3])
                    idx = idx[keep]
                    s = src_all[idx].to(dev)
                    tv = torch.where(ti == s[:, None], torch.full_like(tv, -math.inf), tv)
                    order = tv.argsort(dim=1, descending=True)
                    cand = torch.cat([s[:, None], ti.gather(1, order)[:, :K]], 1)  # source first
                    marg.scatter_(1, cand, math.inf)  # evaluated at every step
                    state.append((idx, cand, sets[j][cand], marg))
                G0 = grid.G
            if stop_at_median and int((lock >= 0).sum()) > n_traj // 2 + 1:
                done = True  # the median is known: every path still locked has a larger lock time
        exited = int((lock >= 0).sum())
        if exited > n_traj // 2 + 1 or t_max is not None:
            break
        t_hi *= 2.0  # more than half still locked: extend the horizon
    fill = math.inf if stop_at_median and k < steps else k * dt
    lock = torch.where(lock < 0, torch.full_like(lock, fill), lock).numpy()
    with np.errstate(invalid="ignore"):  # inf - inf between paths still locked
        q25, med, q75 = (
            float(v) for v in np.nan_to_num(np.percentile(lock, [25, 50, 75]), nan=math.inf)
        )
    return {
        "lock_times": lock,
        "median": med,
        "q25": q25,
        "q75": q75,
        "t_asymptotic": float(t_asym),
        "t_max": float(k * dt),
        "dt": float(dt),
        "steps": int(k),
        "full_searches": int(full_searches),
    }


def collapse_time_finite(
    process: OUProcess,
    data_cov,
    n_train: int,
    *,
    n_traj: int = 2000,
    dt: float = 0.005,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
) -> float:
    """Predicted median lock time (the ``t_C`` that :func:`collapse_lock_times`
    measures) for ``n_train`` training points from a Gaussian of covariance
    ``data_cov``, under ``process`` (any ``U``, ``Q``).

    The median of :func:`finite_lock_times` (see the module docstring for why a
    forward-path Monte Carlo is exact in law for the reverse dynamics, and what it
    costs), over 4 training sets of 500 paths each. ``dt``: the recording grid of the
    measurement it predicts (the lock time observed on a grid grows like sqrt(dt)).
    ``seed`` fixes the sampled training sets and paths.
    """
    return finite_lock_times(
        process,
        data_cov,
        n_train,
        n_traj=n_traj,
        dt=dt,
        seed=seed,
        stop_at_median=True,
        device=device,
        dtype=dtype,
    )["median"]
