"""Steps each sampler needs: the d = 4 Gaussian case of issue 13 (exact error, no Monte
Carlo) and the d = 8 mixture of the sampler tests (sliced W2 with its Monte Carlo floor).

Gaussian case (:func:`gaussian_tables`): U eigenvalues 0.25..1.75, data covariance
eigenvalues 4..0.05, x_T drawn exactly from P_T, T = 6 / rate, t_min = 1e-3; W2 of
the exact output law (:func:`nonrev.samplers.gaussian_error`) per method, grid
(uniform, log, optimised by :func:`nonrev.samplers.optimise_grid`) and step count,
with the optimal current and without.

Mixture: the sliced W2 of n = 10000 samples fluctuates by several hundredths between
sample sets (compare the Monte Carlo floor and the ancestral row), and the
deterministic methods integrate different flows (ddim and gddim differ by an
antisymmetric term that leaves every marginal unchanged), so their converged values
differ within that noise. For each method and step count, samples from the exact
mixture score (float64, common random numbers across step counts) are compared with
fresh mixture samples by sliced W2 (fixed projections). The converged value is the
method's own value at the largest step count (at least the floor); "steps needed" is the smallest
step count whose sliced W2 is
within 10% of it. The Monte Carlo floor (sliced W2 between two fresh sets of the same
size) is reported beside it, since no method can go below it.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import torch

from nonrev import OUProcess, optimal_q
from nonrev.linalg import random_spd
from nonrev.metrics import sliced_wasserstein
from nonrev.samplers import gaussian_error, optimise_grid, time_grid
from nonrev.samplers.driver import METHODS, sample
from nonrev.samplers.steps import coefficients
from nonrev.scores import GaussianMixtureScore

from ._common import machine_info

SPACING = {
    "euler_maruyama": "uniform",
    "heun": "uniform",
    "ancestral": "log",
    "ddim": "log",
    "gddim": "log",
    "dpmpp_2m": "log",
}


def mixture_problem(seed: int = 0):
    """The reference mixture: d = 8, U eigenvalues 0.25..1.75, optimal Q, K = 3."""
    rng = np.random.default_rng(seed)
    d, K = 8, 3
    U, _ = random_spd(np.linspace(0.25, 1.75, d), rng)
    proc = OUProcess(U, optimal_q(U))
    means = 3 * rng.standard_normal((K, d))
    covs = []
    for _ in range(K):
        B = rng.standard_normal((d, d))
        covs.append(0.3 * B @ B.T / d + 0.05 * np.eye(d))
    return proc, means, np.stack(covs), np.array([0.5, 0.3, 0.2])


def draw_mixture(means, covs, w, n, rng):
    k = rng.choice(len(w), size=n, p=w)
    z = rng.standard_normal((n, means.shape[1]))
    return means[k] + np.einsum("nij,nj->ni", np.linalg.cholesky(covs)[k], z)


def gaussian_case(current: bool, seed: int = 0):
    """Issue 13's d = 4 Gaussian case: ``(process, mean, cov)``."""
    rng = np.random.default_rng(seed)
    U, _ = random_spd(np.linspace(0.25, 1.75, 4), rng)
    C, _ = random_spd(np.geomspace(4.0, 0.05, 4), rng)
    m = rng.standard_normal(4)
    return OUProcess(U, optimal_q(U) if current else None), m, C


def lambda_grid(proc, T, steps, t_min=1e-3):
    """``steps + 1`` times equally spaced in the log signal-to-noise ``lambda_t``."""
    from nonrev.samplers.gaussian import _family, _family_grid

    ts, maps = _family(proc, T, t_min)
    return _family_grid(ts, maps, (0.0, 1.0, 0.0), steps)


def gaussian_tables(
    step_counts=(5, 10, 20, 50),
    methods=METHODS,
    optimise=(10,),
    opt_methods=("dpmpp_2m",),
    maxiter: int = 40,
    target: float = 0.05,
    grids=("uniform", "log", "lambda"),
) -> dict:
    """Exact W2 per (current, method, grid, steps) with grids uniform, log, lambda
    (equally spaced in log-SNR) and optimised; steps to reach W2 <= ``target``; and
    the issue's two checks. ``w2``: the sampler started from the exact ``P_T`` (its
    own error); ``w2_stationary``: from ``N(0, U^{-1})`` as a real sampler is (the
    fair start, same T and grid; the optimised grid re-optimised for it). The steps
    to the target and the checks use ``w2``."""
    out = {}
    for current in (False, True):
        proc, m, C = gaussian_case(current)
        T = 6.0 / proc.relaxation_rate()
        rows = {}
        for method in methods:
            explicit = method in ("euler_maruyama", "heun")
            counts = list(step_counts) + ([100, 200, 400] if explicit else [])
            for grid in grids:
                w, ws = [], []
                for n in counts:
                    g = lambda_grid(proc, T, n) if grid == "lambda" else time_grid(T, n, 1e-3, grid)
                    for out_list, start in ((w, "exact"), (ws, "stationary")):
                        try:
                            out_list.append(
                                gaussian_error(proc, m, C, method, times=g, start=start)["w2"]
                            )
                        except ValueError:  # refused as unstable
                            out_list.append(None)
                rows[f"{method}/{grid}"] = {
                    "steps": counts,
                    "w2": w,
                    "w2_stationary": ws,
                    "steps_to_target": next(
                        (n for n, v in zip(counts, w) if v is not None and v <= target), None
                    ),
                }
            if method in opt_methods:
                w, ws = [], []
                for n in optimise:
                    g = optimise_grid(proc, m, C, method, steps=n, T=T, maxiter=maxiter)
                    w.append(gaussian_error(proc, m, C, method, times=g)["w2"])
                    g = optimise_grid(
                        proc, m, C, method, steps=n, T=T, maxiter=maxiter, start="stationary"
                    )
                    ws.append(gaussian_error(proc, m, C, method, times=g, start="stationary")["w2"])
                rows[f"{method}/optimised"] = {
                    "steps": list(optimise),
                    "w2": w,
                    "w2_stationary": ws,
                }
        out["optimal_q" if current else "no_current"] = rows

    def at(cur, key, n):
        r = out[cur][key]
        return r["w2"][r["steps"].index(n)] if n in r["steps"] else None

    def best(cur, n):
        vals = {k: at(cur, k, n) for k in out[cur]}
        k = min((k for k in vals if vals[k] is not None), key=lambda k: vals[k])
        return vals[k], k

    def best_of(cur, method, n):
        vals = [at(cur, k, n) for k in out[cur] if k.startswith(method + "/")]
        return min(v for v in vals if v is not None)

    checks = {}
    for cur in out:
        checks[f"{cur}: dpmpp_2m/log at 10 <= ddim/log at 50"] = bool(
            at(cur, "dpmpp_2m/log", 10) <= at(cur, "ddim/log", 50)
        )
        checks[f"{cur}: dpmpp_2m at 10 <= ddim at 50 (each on its best grid)"] = bool(
            best_of(cur, "dpmpp_2m", 10) <= best_of(cur, "ddim", 50)
        )
    ratios, bests = {}, {}
    for n in (10, 20):
        (wq, kq), (w0, k0) = best("optimal_q", n), best("no_current", n)
        ratios[n] = wq / w0
        bests[n] = {"optimal_q": [kq, wq], "no_current": [k0, w0]}
        checks[f"best W2 with / without current at {n} steps <= 1.25"] = bool(ratios[n] <= 1.25)
    return {
        "problem": "d=4, U eig 0.25..1.75, data cov eig 4..0.05, x_T exact (w2) or from "
        "N(0, U^-1) (w2_stationary), T=6/rate, t_min=1e-3",
        "target_w2": target,
        "tables": out,
        "best": bests,
        "best_ratio_current": ratios,
        "checks": checks,
    }


def steps_table(
    proc,
    score,
    ref,
    n,
    step_counts,
    T,
    methods=METHODS,
    t_min=1e-3,
    seeds=(0,),
    floor: float = 0.0,
    times_for=None,
    prior=None,
) -> dict:
    """Sliced W2 (mean over ``seeds``) per method and step count. ``times_for``:
    optional ``times_for(method, steps) -> grid`` overriding the spacing; ``prior``:
    passed to :func:`nonrev.samplers.sample`."""
    out = {}
    for method in methods:
        values, nfes, secs = [], [], []
        for steps in step_counts:
            t0 = time.perf_counter()
            sw = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    for seed in seeds:
                        grid = (
                            dict(T=T, steps=steps, spacing=SPACING[method], t_min=t_min)
                            if times_for is None
                            else dict(times=times_for(method, steps))
                        )
                        if prior is not None:
                            grid["prior"] = prior
                        x, info = sample(
                            score,
                            proc,
                            n=n,
                            method=method,
                            dtype=torch.float64,
                            generator=torch.Generator().manual_seed(seed),
                            **grid,
                        )
                        sw.append(sliced_wasserstein(x, ref, n_projections=500, seed=0))
                except ValueError:  # explicit method refused: unstable step
                    values.append(None), nfes.append(None), secs.append(None)
                    continue
            secs.append((time.perf_counter() - t0) / len(seeds))
            values.append(float(np.mean(sw)))
            nfes.append(info["nfe"])
        converged = max(float(np.median([v for v in values[-2:] if v is not None])), floor)
        needed = next(
            (s for s, v in zip(step_counts, values) if v is not None and v <= 1.1 * converged), None
        )
        out[method] = {
            "steps": list(step_counts),
            "sliced_w2": values,
            "nfe": nfes,
            "seconds": secs,
            "converged": converged,
            "steps_needed": needed,
            "spacing": SPACING[method],
        }
    return out


def prior_tables(draws: int = 5, sizes=(50, 200), step_counts=(5, 10, 20)) -> dict:
    """dpmpp_2m with a Gaussian prior (``prior=(mean, cov)``: the prior's score is
    integrated exactly, only the residual of the data prediction is extrapolated) on
    the d = 4 Gaussian case, exact W2. Priors: none (plain dpmpp_2m), the exact data
    law (a check: rounding level), sample mean and covariance of ``n`` draws of the
    data (``draws`` seeds each), the right eigenvalues in a random basis, and the
    isotropic N(0, tr C / d I). Per prior and step count: the best of the log and
    log-SNR grids, with and without the optimal current, medians over the draws, and
    the ratio with / without (the issue's 1.25x target compares these)."""
    _, m, C = gaussian_case(False)
    d = C.shape[0]
    priors = {"none": [None], "exact": [(m, C)]}
    for n in sizes:
        priors[f"sample n={n}"] = []
        for seed in range(draws):
            X = np.random.default_rng(100 + seed).multivariate_normal(m, C, size=n)
            priors[f"sample n={n}"].append((X.mean(0), np.cov(X.T)))
    ev = np.linalg.eigvalsh(C)
    priors["eigenvalues, random basis"] = []
    for seed in range(draws):
        V, _ = np.linalg.qr(np.random.default_rng(200 + seed).standard_normal((d, d)))
        priors["eigenvalues, random basis"].append((m, V @ np.diag(ev) @ V.T))
    priors["isotropic"] = [(np.zeros(d), np.trace(C) / d * np.eye(d))]
    best = {}
    for current in (False, True):
        proc, _, _ = gaussian_case(current)
        T = 6.0 / proc.relaxation_rate()
        for steps in step_counts:
            grids = (time_grid(T, steps, 1e-3, "log"), lambda_grid(proc, T, steps))
            for name, lst in priors.items():
                best[name, current, steps] = np.array(
                    [
                        min(
                            gaussian_error(proc, m, C, "dpmpp_2m", times=g, prior=p)["w2"]
                            for g in grids
                        )
                        for p in lst
                    ]
                )
    table = {}
    for name in priors:
        for steps in step_counts:
            b0, b1 = best[name, False, steps], best[name, True, steps]
            table[f"{name}, {steps} steps"] = {
                "no_current": float(np.median(b0)),
                "optimal_q": float(np.median(b1)),
                "ratio": float(np.median(b1 / np.maximum(b0, 1e-300))),
            }
    return {
        "problem": "d=4 Gaussian case (gaussian_tables), dpmpp_2m, exact W2, best of "
        "log / log-SNR grids, medians over prior draws",
        "draws": draws,
        "table": table,
    }


def coefficient_cost(d: int = 64, steps: int = 20, T: float = 8.0, seed: int = 0) -> dict:
    """Cost of the per-grid coefficients under a stiff current: U with a digits-like
    spectrum (eigenvalues 0.005..4.2, condition number 850) and its optimal Q, a
    ``steps``-step log grid on [1e-3, T]. Seconds per method (a fresh process each,
    so the gDDIM factor is built from scratch) and their ratio to ``ddim``; the Magnus
    checkpoints of R_t against the substeps a step bound of 0.1 / max||Omega_t|| needs."""
    U = random_spd(np.geomspace(0.005, 4.2, d), seed)[0]
    Q = optimal_q(U)
    grid = time_grid(T, steps, 1e-3, "log")
    seconds = {}
    for method in ("ddim", "gddim", "dpmpp_2m"):
        proc = OUProcess(U, Q)
        t0 = time.perf_counter()
        coefficients(proc, grid, method)
        seconds[method] = time.perf_counter() - t0
    omega = proc.rotation_rate_bound()
    return {
        "d": d,
        "steps": steps,
        "T": T,
        "norm_A": float(np.linalg.norm(proc.A, 2)),
        "seconds": seconds,
        "over_ddim": {m: seconds[m] / seconds["ddim"] for m in ("gddim", "dpmpp_2m")},
        "magnus_checkpoints": len(proc._rot.t) - 1,
        "fixed_step_substeps": int(np.ceil(T * 1.25 * omega / 0.1)),
    }


def run(quick: bool = True, device: str = "cpu") -> dict:
    proc, means, covs, w = mixture_problem()
    score = GaussianMixtureScore(proc, means, covs, w)
    n = 10000 if quick else 30000
    seeds = (0,) if quick else (0, 1, 2)
    step_counts = (
        [10, 20, 50, 100, 200, 400, 800] if quick else [10, 20, 50, 100, 200, 400, 800, 1600, 3200]
    )
    rng = np.random.default_rng(1)
    ref = draw_mixture(means, covs, w, n, rng)
    floor = float(
        np.median(
            [
                sliced_wasserstein(
                    draw_mixture(means, covs, w, n, rng), ref, n_projections=500, seed=0
                )
                for _ in range(3)
            ]
        )
    )
    table = steps_table(
        proc,
        score,
        ref,
        n,
        step_counts,
        T=12.0,
        seeds=seeds,
        floor=floor,
        methods=("ancestral", "ddim", "heun"),
    )
    # Euler-Maruyama: the stability guard refuses it below about 2000 uniform steps
    # here (the rotation of A, Im spec ~ 4, is amplified by its steps over T = 12)
    table = {
        "euler_maruyama": steps_table(
            proc,
            score,
            ref,
            n,
            [1000, 2000, 4000],
            T=12.0,
            methods=("euler_maruyama",),
            seeds=seeds,
            floor=floor,
        )["euler_maruyama"],
        **table,
    }
    fast_counts = [5, 10, 20, 50, 100] if quick else [5, 10, 20, 50, 100, 200, 400]
    fast = steps_table(
        proc,
        score,
        ref,
        n,
        fast_counts,
        T=12.0,
        methods=("gddim", "dpmpp_2m"),
        seeds=seeds,
        floor=floor,
    )
    # the mixture's own mean and covariance: the Gaussian surrogate of the optimised
    # grids, and the prior of dpmpp_2m with prior=
    wts = w[:, None]
    mean = (wts * means).sum(0)
    cov = (w[:, None, None] * (covs + np.einsum("ki,kj->kij", means - mean, means - mean))).sum(0)
    with_prior = steps_table(
        proc,
        score,
        ref,
        n,
        fast_counts,
        T=12.0,
        methods=("dpmpp_2m",),
        seeds=seeds,
        floor=floor,
        prior=(mean, cov),
    )["dpmpp_2m"]
    grids = {}

    def times_for(method, steps):
        if (method, steps) not in grids:
            grids[(method, steps)] = optimise_grid(
                proc, mean, cov, method, steps=steps, T=12.0, maxiter=20 if quick else 100
            )
        return grids[(method, steps)]

    transfer = (
        None
        if quick
        else steps_table(
            proc,
            score,
            ref,
            n,
            [10, 20],
            T=12.0,
            methods=("dpmpp_2m",),
            seeds=seeds,
            floor=floor,
            times_for=times_for,
        )
    )
    best_det = min(
        (
            v["steps_needed"]
            for k, v in {**table, **fast}.items()
            if k in ("ddim", "gddim", "dpmpp_2m", "heun") and v["steps_needed"]
        ),
        default=None,
    )
    em = table["euler_maruyama"]["steps_needed"]
    best_exact = min(
        (
            table[m]["steps_needed"]
            for m in ("ancestral", "ddim")
            if table[m]["steps_needed"] is not None
        ),
        default=None,
    )
    ratio = (best_exact / em) if (em and best_exact) else None
    gaussian = (
        gaussian_tables(optimise=(), grids=("log", "lambda"))
        if quick
        else gaussian_tables(maxiter=150, optimise=(10, 20), opt_methods=("gddim", "dpmpp_2m"))
    )
    return {
        "problem": "d=8, U eigenvalues 0.25..1.75, optimal Q, 3-component mixture, T=12",
        "n": n,
        "seeds": list(seeds),
        "mc_floor_sliced_w2": floor,
        "methods": table,
        "few_steps": fast,
        "dpmpp_2m_with_prior": with_prior,
        "optimised_grid_transfer": transfer,
        "best_deterministic_steps": best_det,
        "gaussian": gaussian,
        "exact_over_euler_steps": ratio,
        "coefficient_cost": coefficient_cost(d=32 if quick else 64),
        "prior": prior_tables(draws=3, sizes=(200,), step_counts=(10, 20))
        if quick
        else prior_tables(),
        "goals": {"exact_over_euler_steps": 0.25, "best_deterministic_steps": 50},
        "goals_met": {
            "exact_over_euler_steps": bool(ratio is not None and ratio <= 0.25),
            "best_deterministic_steps": bool(best_det is not None and best_det <= 50),
            # the d = 4 Gaussian targets of the few-step issue (exact errors)
            **{
                f"gaussian: {k}": bool(v)
                for k, v in gaussian.get("checks", {}).items()
                if "best grid" in k or "<= 1.25" in k
            },
        },
        "machine": machine_info(device),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
