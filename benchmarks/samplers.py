"""Steps each sampler needs on the d = 8 mixture of the sampler tests.

For each method and step count, samples from the exact mixture score (float64,
common random numbers across step counts) are compared with fresh mixture samples by
sliced W2 (fixed projections). The converged value is the method's own value at the
largest step count; "steps needed" is the smallest step count whose sliced W2 is
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
from nonrev.samplers.driver import METHODS, sample
from nonrev.scores import GaussianMixtureScore

from ._common import machine_info

SPACING = {"euler_maruyama": "uniform", "heun": "uniform", "ancestral": "log", "ddim": "log"}


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


def steps_table(proc, score, ref, n, step_counts, T, methods=METHODS, t_min=1e-3,
                seeds=(0,), floor: float = 0.0) -> dict:
    """Sliced W2 (mean over ``seeds``) per method and step count."""
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
                        x, info = sample(score, proc, n=n, T=T, steps=steps, method=method,
                                         spacing=SPACING[method], t_min=t_min,
                                         dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(seed))
                        sw.append(sliced_wasserstein(x, ref, n_projections=500, seed=0))
                except ValueError:  # explicit method refused: unstable step
                    values.append(None), nfes.append(None), secs.append(None)
                    continue
            secs.append((time.perf_counter() - t0) / len(seeds))
            values.append(float(np.mean(sw)))
            nfes.append(info["nfe"])
        converged = max(float(np.median([v for v in values[-2:] if v is not None])), floor)
        needed = next((s for s, v in zip(step_counts, values)
                       if v is not None and v <= 1.1 * converged), None)
        out[method] = {"steps": list(step_counts), "sliced_w2": values, "nfe": nfes,
                       "seconds": secs, "converged": converged, "steps_needed": needed,
                       "spacing": SPACING[method]}
    return out


def run(quick: bool = True, device: str = "cpu") -> dict:
    proc, means, covs, w = mixture_problem()
    score = GaussianMixtureScore(proc, means, covs, w)
    n = 10000 if quick else 30000
    seeds = (0,) if quick else (0, 1, 2)
    step_counts = ([10, 20, 50, 100, 200, 400, 800] if quick
                   else [10, 20, 50, 100, 200, 400, 800, 1600, 3200])
    rng = np.random.default_rng(1)
    ref = draw_mixture(means, covs, w, n, rng)
    floor = float(np.median([sliced_wasserstein(draw_mixture(means, covs, w, n, rng), ref,
                                                n_projections=500, seed=0) for _ in range(3)]))
    table = steps_table(proc, score, ref, n, step_counts, T=12.0, seeds=seeds, floor=floor)
    em = table["euler_maruyama"]["steps_needed"]
    best_exact = min((table[m]["steps_needed"] for m in ("ancestral", "ddim")
                      if table[m]["steps_needed"] is not None), default=None)
    ratio = (best_exact / em) if (em and best_exact) else None
    return {
        "problem": "d=8, U eigenvalues 0.25..1.75, optimal Q, 3-component mixture, T=12",
        "n": n, "seeds": list(seeds), "mc_floor_sliced_w2": floor, "methods": table,
        "exact_over_euler_steps": ratio,
        "goals": {"exact_over_euler_steps": 0.25},
        "goals_met": {"exact_over_euler_steps": bool(ratio is not None and ratio <= 0.25)},
        "machine": machine_info(device),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
