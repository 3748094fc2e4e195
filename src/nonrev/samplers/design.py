"""Currents designed for the sampler (:func:`design_current`).

The families of :mod:`nonrev.process.currents` choose ``Q`` for the relaxation rate;
measured with the exact Gaussian error of the few-step samplers, none of them makes
``dpmpp_2m`` more accurate at a fixed number of model evaluations (issue 24). Here
``Q`` is chosen for the sampler itself: the antisymmetric ``Q``, the horizon ``T``
and the time grid that minimise the exact W2 (:func:`nonrev.samplers.gaussian_error`)
of a method at a given NFE for data ``N(mean, cov)``, by a derivative-free search
with restarts. The mechanism, and when it cannot help, is in docs/THEORY.md
(section 5, "Currents designed for the sampler").
"""

from __future__ import annotations

import math

import numpy as np

from nonrev.linalg import as_psd, as_spd, as_vector, spectral_norm
from nonrev.process.currents import fastest_q, optimal_q, project_q_norm, random_q
from nonrev.process.ou import OUProcess
from nonrev.samplers.gaussian import gaussian_error, optimise_grid
from nonrev.samplers.grids import time_grid
from nonrev.samplers.prior import as_prior
from nonrev.samplers.registry import get_method

__all__ = ["FULL_MAX_DIM", "design_current"]

#: Largest dimension whose ``Q`` is searched entry by entry (``d (d-1) / 2`` numbers);
#: above it the search runs in random-and-structured subspaces (see ``n_directions``).
FULL_MAX_DIM = 6


def _upper(d):
    return np.triu_indices(d, k=1)


def _q_of(x, d):
    Q = np.zeros((d, d))
    Q[_upper(d)] = x
    return Q - Q.T


def _unit(Q):
    n = float(np.linalg.norm(Q))
    return Q / n if n > 0 else None


def _directions(U, C, Q_opt, n_random, rng):
    """Antisymmetric unit directions (Frobenius) for the subspace search: the optimal
    current, the commutators ``[U, C]``, ``[U^{-1}, C]``, ``[U, C U]`` and
    ``n_random`` random ones; duplicates and zero directions dropped."""
    Ui = np.linalg.inv(U)
    cands = [Q_opt, U @ C - C @ U, Ui @ C - C @ Ui, U @ C @ U @ U - U @ U @ C @ U]
    cands += [random_q(U.shape[0], 1.0, seed=rng) for _ in range(n_random)]
    out = []
    for B in cands:
        B = _unit(0.5 * (B - B.T))
        if B is None:
            continue
        # Gram-Schmidt against the directions kept so far
        for D in out:
            B = B - float(np.sum(B * D)) * D
        B = _unit(B)
        if B is not None and float(np.linalg.norm(B)) > 0.5:
            out.append(B)
    return out


def design_current(
    U,
    mean,
    cov,
    method: str = "dpmpp_2m",
    nfe: int = 10,
    *,
    q_norm_max: float | None = None,
    prior=None,
    start: str = "stationary",
    seed=0,
    t_min: float = 1e-3,
    maxiter: int = 150,
    grid_maxiter: int = 60,
    restarts: int = 2,
    n_random: int = 2,
    n_directions: int = 8,
    T_range: tuple[float, float] = (0.5, 40.0),
    T_scan: int = 9,
    refine_grid: bool = True,
) -> dict:
    """The antisymmetric ``Q``, horizon ``T`` and grid that minimise the exact W2 of
    ``method`` at ``nfe`` model evaluations for data ``N(mean, cov)`` under the noise
    precision ``U`` (process ``A = (I + Q) U``), with the sampler started as ``start``
    says (``"stationary"``: from ``N(0, U^{-1})``, as a real sampler is; ``"exact"``:
    from ``P_T``) and the Gaussian ``prior`` of :func:`gaussian_error` (None: none; a
    prior equal to ``N(mean, cov)`` itself, to 1e-8 relative, is refused with
    ValueError: every setting is then exact to rounding and the objective is void).

    Steps: ``nfe`` divided by the method's evaluations per step (2 for ``heun``, 1
    otherwise; ValueError when it does not divide). Search, every evaluation one exact
    error (:func:`gaussian_error`, no Monte Carlo):

    1. starts: ``Q = 0``, the optimal current (:func:`nonrev.optimal_q`), 0.3 times
       it, the fastest current within 10% of its norm (``rate:0.1``) and
       ``n_random`` random currents of norm ``||U||_2`` (from ``seed``; a search
       from ``Q = 0`` alone can stall near it: Powell moved ``Q`` by 0.05 in 200
       exact errors on the d = 4 case of ``tests/problems.py``), each projected onto
       the budget, each with the best of ``T_scan`` horizons log-spaced over
       ``T_range / rate`` on the log grid;
    2. from the best ``restarts`` starts, Powell's method (at most ``maxiter``
       exact errors each) over ``Q`` (in units of ``||U||_2``) and ``log T`` on the
       log grid: for ``d <= FULL_MAX_DIM`` over the ``d (d-1) / 2`` upper entries
       of ``Q``; above,
       over the coefficients of ``n_directions`` unit directions added to the
       start (the optimal current, the commutators ``[U, C]``, ``[U^{-1}, C]``,
       ``[U, C U]`` with ``C = cov``, and random ones drawn from ``seed``), a
       second round in fresh random directions around the best ``Q`` found;
    3. the grid and ``T`` of the best ``Q`` refined by :func:`optimise_grid` with
       ``T`` free (``grid_maxiter`` iterations), kept only when it beats the log grid
       at the ``T`` of step 2. ``refine_grid=False`` skips this step (each
       :func:`optimise_grid` call costs about 100 exact errors at least, minutes
       for d = 64): both settings then use the log grid, each ``T`` refined by a
       bounded search in ``log T`` (one scan step either side, at most as many
       exact errors as the ``Q`` search used);
    4. the designed result is the better of the refined searched ``Q`` and the
       refined reversible setting below (``Q = 0`` is one of its starts), so it is
       never worse than ``w2_reversible``; when ``Q = 0`` wins, ``start`` is
       ``"zero (refined)"``, ``Q`` is zero and ``w2`` equals ``w2_reversible``
       (the search found no current that pays; ``w2_searched`` keeps the searched
       ``Q``'s own refined error).

    Stiffness budget: ``||Q||_2 <= q_norm_max`` (default ``4 ||U||_2``). A candidate
    outside is projected onto the ball (singular values clipped) and pays a penalty
    growing with the excess, so the search stays inside. A stiff current costs
    coefficient time (the gDDIM frame's Magnus steps follow its rotation rate; see
    the README's few-step notes), which the budget bounds.

    The reversible baseline gets the same refinement with ``Q = 0`` fixed and more
    iterations: :func:`optimise_grid` with ``T`` free and ``grid_maxiter`` plus the
    number of exact errors the ``Q`` search used (steps 1 and 2) as its iteration
    limit (each iteration costs at least one exact error), so it spends at least as
    many exact errors as the designed current, all on ``T`` and the grid. A
    searched ``Q`` can therefore come out worse than the reversible setting (the
    search is local and the budgets finite; step 4 then returns ``Q = 0``): a
    designed current pays only where ``w2 < w2_reversible``.
    Cost: the starts, ``restarts * maxiter`` (twice that above ``FULL_MAX_DIM``) and
    the two refinements, each evaluation a full coefficient precomputation (measured
    with ``benchmarks/design.py``: 5-9 minutes for d = 4 with its budget, 17 minutes
    for d = 16, on 2 shared cores). With a prior an exact error costs more, and grows
    with ``T ||Q||``: the prior's quadrature panels follow the frame's rotation
    (:mod:`nonrev.samplers.prior`), about ``2 T omega`` of them for its rotation rate
    ``omega``. Measured on the digits summary (d = 64, U = data:10, dpmpp_2m, 10
    steps), relative to ``Q = 0`` at ``T = 10.5`` with the prior: 2x without the prior
    at ``||Q|| = 3.76 ||U||``, ``T = 10``; 9x with it; 21x at ``T = 30``; 87x at the
    budget's corner (``||Q|| = 4 ||U||``, ``T = 40 / lambda_min(U)``), where the
    search's starts and ``T`` scan go; memory stays bounded (the quadrature runs in
    chunks).

    Returns a dict: ``Q``, ``T``, ``times`` (increasing grid), ``w2`` (equal to
    ``gaussian_error(OUProcess(U, Q), mean, cov, method, times=times, start=start,
    prior=prior)["w2"]``), ``w2_log_grid`` (the searched ``Q`` and ``T`` on the log grid,
    before the refinement), ``w2_searched`` (the searched ``Q`` after it), ``q_norm``,
    ``rate`` (relaxation rate),
    ``w2_reversible``, ``T_reversible``, ``times_reversible``, ``steps``, ``nfe``,
    ``q_norm_max``, ``start`` (which start the best ``Q`` came from),
    ``starts`` (per start name: its ``w2`` on the log grid at its best scanned
    ``T``), ``evaluations`` (exact errors in the ``Q`` search, before the grid
    refinements) and ``parametrisation`` (``"entries"`` or ``"subspace"``).
    """
    import scipy.optimize

    per_step = get_method(method).evaluations  # ValueError naming the methods if unknown
    if start not in ("exact", "stationary"):
        raise ValueError(f"start must be 'exact' or 'stationary', got {start!r}")
    if (
        isinstance(nfe, bool)
        or not isinstance(nfe, (int, np.integer))
        or nfe < per_step
        or nfe % per_step
    ):
        raise ValueError(
            f"nfe must be a positive integer multiple of {per_step} for "
            f"{method!r} ({per_step} evaluation(s) per step), got {nfe!r}"
        )
    for name, v in (
        ("maxiter", maxiter),
        ("grid_maxiter", grid_maxiter),
        ("restarts", restarts),
        ("n_directions", n_directions),
        ("T_scan", T_scan),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 0:
        raise ValueError(f"n_random must be an integer >= 0, got {n_random!r}")
    U = as_spd("U", U)
    d = U.shape[0]
    m = as_vector("mean", mean, d)
    C = as_psd("cov", cov, dim=d)
    lo_T, hi_T = (float(v) for v in T_range)
    if not (math.isfinite(lo_T) and math.isfinite(hi_T) and 0.0 < lo_T < hi_T):
        raise ValueError(f"T_range must be two finite numbers 0 < low < high, got {T_range!r}")
    radius = 4.0 * spectral_norm(U) if q_norm_max is None else float(q_norm_max)
    if not (math.isfinite(radius) and radius >= 0.0):
        raise ValueError(f"q_norm_max must be a finite number >= 0, got {q_norm_max!r}")
    if prior is not None:
        prior = as_prior(prior, d)  # ValueError naming prior
        c_norm = max(float(np.linalg.norm(C)), 1e-300)
        if np.linalg.norm(prior[1] - C) <= 1e-8 * c_norm and np.linalg.norm(
            prior[0] - m
        ) <= 1e-8 * (np.linalg.norm(m) + math.sqrt(c_norm)):
            raise ValueError(
                "prior equals the data law N(mean, cov): with it every method with a prior "
                "is exact to rounding for any Q, T and grid, so there is nothing to design; "
                "pass a prior estimated from data draws (e.g. the mean and covariance of 200 "
                "of them) or prior=None"
            )
    steps = int(nfe) // per_step
    rng = np.random.default_rng(seed)

    lam_min = float(np.linalg.eigvalsh(U)[0])
    bound = float(np.trace(U)) / d  # the largest rate any current gives
    log_T_lo, log_T_hi = math.log(max(lo_T / bound, 1.01 * t_min)), math.log(hi_T / lam_min)
    count = [0]

    def log_w2(Q, log_T):
        if not (log_T_lo <= log_T <= log_T_hi):
            return math.inf
        count[0] += 1
        try:
            v = gaussian_error(
                OUProcess(U, Q),
                m,
                C,
                method,
                times=time_grid(math.exp(log_T), steps, t_min, "log"),
                start=start,
                prior=prior,
            )["w2"]
        except ValueError:  # refused as unstable, or a singular step map
            return math.inf
        return math.log(v) if v > 0 and math.isfinite(v) else (math.inf if v != 0 else -1e9)

    def penalised(Q, log_T):
        n = spectral_norm(Q) if np.any(Q) else 0.0
        excess = max(0.0, n / radius - 1.0) if radius > 0 else (n > 0) * (1.0 + n)
        return log_w2(project_q_norm(Q, radius), log_T) + 10.0 * excess**2

    def best_T(Q):
        rate = OUProcess(U, Q).relaxation_rate()
        logs = np.linspace(max(math.log(lo_T / rate), log_T_lo), math.log(hi_T / rate), T_scan)
        vals = [log_w2(Q, s) for s in logs]
        k = int(np.argmin(vals))
        return vals[k], float(logs[k])

    # 1. starts
    Q_opt = optimal_q(U)
    n_opt = spectral_norm(Q_opt)
    starts = {"zero": np.zeros((d, d))}
    if n_opt > 0 and radius > 0:
        starts["optimal"] = project_q_norm(Q_opt, radius)
        starts["gamma:0.3"] = project_q_norm(0.3 * Q_opt, radius)
        starts["rate:0.1"] = project_q_norm(fastest_q(U, 0.1 * n_opt), radius)
    for i in range(n_random):  # Q = 0 is close to stationary: random starts leave it
        starts[f"random:{i}"] = project_q_norm(random_q(d, spectral_norm(U), seed=rng), radius)
    scored = {}
    for name, Q0 in starts.items():
        scored[name] = (*best_T(Q0), Q0)
    order = sorted(scored, key=lambda k: scored[k][0])

    # 2. Powell over Q and log T from the best starts
    full = d <= FULL_MAX_DIM
    scale = max(spectral_norm(U), 1e-12)
    best = (scored[order[0]][0], scored[order[0]][2], scored[order[0]][1], order[0])

    def search(Q0, log_T0, basis):
        k = len(basis)
        x0 = np.concatenate([np.zeros(k), [log_T0]])

        def Q_of(x):
            return Q0 + scale * sum(c * B for c, B in zip(x[:k], basis))

        r = scipy.optimize.minimize(
            lambda x: penalised(Q_of(x), x[-1]),
            x0,
            method="Powell",
            options={"maxfev": maxiter, "xtol": 1e-3, "ftol": 1e-4},
        )
        return float(r.fun), project_q_norm(Q_of(r.x), radius), float(r.x[-1])

    if full:
        iu = _upper(d)
        basis = []
        for i, j in zip(*iu):
            B = np.zeros((d, d))
            B[i, j], B[j, i] = 1.0, -1.0
            basis.append(B)
        rounds = [basis]
    else:
        C_dir = C if np.any(C) else np.eye(d)
        rounds = [
            _directions(U, C_dir, Q_opt, max(n_directions - 4, 0), rng)[:n_directions],
            [_unit(random_q(d, 1.0, seed=rng)) for _ in range(n_directions)],
        ]
    for name in order[:restarts]:
        _, log_T0, Q0 = scored[name]
        for basis in rounds:  # later rounds start from the previous round's Q and T
            f, Q0, log_T0 = search(Q0, log_T0, basis)
            if f < best[0]:
                best = (f, Q0, log_T0, name)
    evaluations = count[0]
    if not math.isfinite(best[0]):
        raise ValueError(
            f"{method} at nfe {nfe}: every candidate (Q, T) was refused as "
            "unstable or singular; raise nfe or use an exact-kernel method"
        )
    Q_best, T_best = best[1], math.exp(best[2])
    proc = OUProcess(U, Q_best)
    w2_log = gaussian_error(
        proc, m, C, method, times=time_grid(T_best, steps, t_min, "log"), start=start, prior=prior
    )["w2"]

    # 3. the grid and T of each setting by optimise_grid with T free (its own scan of
    # T, then the grid, then both jointly), kept only when it beats the log grid at
    # the horizon the search found
    def refine(process, T, it):
        log_grid = time_grid(T, steps, t_min, "log")
        try:
            g = optimise_grid(
                process,
                m,
                C,
                method,
                steps,
                t_min=t_min,
                start=start,
                maxiter=it,
                prior=prior,
                T_range=T_range,
                T_scan=T_scan,
            )
        except ValueError:
            return log_grid
        cands = [log_grid, g]
        vals = [
            gaussian_error(process, m, C, method, times=x, start=start, prior=prior)["w2"]
            for x in cands
        ]
        return cands[int(np.argmin(vals))]

    def refine_T(Q, log_T0):  # the log grid at the best T near log_T0 (bounded search)
        width = (log_T_hi - log_T_lo) / max(T_scan - 1, 1)
        f0 = log_w2(Q, log_T0)
        r = scipy.optimize.minimize_scalar(
            lambda s: log_w2(Q, s),
            method="bounded",
            bounds=(max(log_T0 - width, log_T_lo), min(log_T0 + width, log_T_hi)),
            options={"xatol": 1e-4, "maxiter": max(evaluations, 1)},
        )
        return time_grid(math.exp(float(r.x) if r.fun < f0 else log_T0), steps, t_min, "log")

    rev = OUProcess(U)
    zero = np.zeros((d, d))
    if refine_grid:
        times = refine(proc, T_best, grid_maxiter)
        times_rev = refine(rev, math.exp(scored["zero"][1]), grid_maxiter + evaluations)
    else:  # log grids; T by the same bounded search for both
        times = refine_T(Q_best, best[2])
        times_rev = refine_T(zero, scored["zero"][1])
    res = gaussian_error(proc, m, C, method, times=times, start=start, prior=prior)
    res_rev = gaussian_error(rev, m, C, method, times=times_rev, start=start, prior=prior)
    w2_searched, origin = float(res["w2"]), best[3]
    # Q = 0 is one of the designed path's starts: when its refined setting (the
    # reversible baseline, refined with the larger budget) beats the searched Q's, the
    # designed result is that setting, never worse than its own Q = 0 start
    if res_rev["w2"] <= res["w2"]:
        Q_best, proc, times, res, origin = zero, rev, times_rev, res_rev, "zero (refined)"
    times = np.asarray(times, dtype=float)
    return {
        "Q": Q_best,
        "T": float(times[-1]),
        "times": times,
        "w2": float(res["w2"]),
        "w2_log_grid": float(w2_log),
        "q_norm": spectral_norm(Q_best) if np.any(Q_best) else 0.0,
        "rate": proc.relaxation_rate(),
        "w2_reversible": float(res_rev["w2"]),
        "T_reversible": float(times_rev[-1]),
        "times_reversible": np.asarray(times_rev, float),
        "method": method,
        "steps": steps,
        "nfe": int(res["nfe"]),
        "q_norm_max": radius,
        "start": origin,
        "w2_searched": w2_searched,
        "starts": {k: math.exp(v[0]) for k, v in scored.items()},
        "evaluations": evaluations,
        "parametrisation": "entries" if full else "subspace",
        "sampler_start": start,
    }
