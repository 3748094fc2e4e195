"""Cost of steering: ``nonrev.steer_q`` against the dimension.

U with eigenvalues evenly spaced in [0.25, 1.75] in a random basis, two classes
``+-mu`` (``|mu|^2 = 40``, within-class ``I``) along the fastest eigenvector of U,
objective ``speciation_early`` within the optimal current's norm budget, default
search (Q = 0, the optimal current and 2 random starts, up to 100 iterations each),
``data_cov``/``n_train`` given so that t_C is reported. Per d: wall time, the number
of O(d^3) kernel evaluations (exact (M_t, Sigma_t) pairs) and Frechet derivatives,
and t_S for Q = 0, the optimal current and the steered one.

Run with ``python -m benchmarks.steering`` (one BLAS thread:
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``, the setting of the test suite).
"""

from __future__ import annotations

import json
import time

import numpy as np

from nonrev import optimal_q, steer_q

from ._common import machine_info


def case(d: int, objective: str = "speciation_early") -> dict:
    rng = np.random.default_rng(0)
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    U = (V * np.linspace(0.25, 1.75, d)) @ V.T
    mu = V[:, -1] * np.sqrt(40.0)
    Cb, Cw = np.outer(mu, mu), np.eye(d)
    budget = float(np.linalg.norm(optimal_q(U), 2))
    t0 = time.perf_counter()
    _, info = steer_q(U, Cb, Cw, objective=objective, q_norm_max=budget, data_cov=Cb + Cw,
                      n_train=2000, generator=0)
    wall = time.perf_counter() - t0
    refs = info["references"]
    return {
        "d": d, "objective": objective, "budget": budget, "wall_s": wall,
        "kernel_evaluations": info["kernel_evaluations"],
        "gradient_evaluations": info["gradient_evaluations"],
        "iterations": sum(s["iterations"] for s in info["starts"]),
        "start": info["start"],
        "t_S": {"none": refs["zero"]["t_speciation"], "optimal": refs["optimal"]["t_speciation"],
                "steered": info["t_speciation"]},
        "t_C": {"none": refs["zero"]["t_collapse"], "optimal": refs["optimal"]["t_collapse"],
                "steered": info["t_collapse"]},
        "rate_steered": info["rate"],
    }


def run(quick: bool = True, device: str = "cpu") -> dict:
    dims = (16, 32) if quick else (32, 64, 128)
    return {"cases": [case(d) for d in dims], "machine": machine_info(device)}


if __name__ == "__main__":
    res = run(quick=False)
    print("| d | wall s | kernel evals | Frechet | iterations | t_S none / optimal / steered |")
    print("|---|---|---|---|---|---|")
    for c in res["cases"]:
        ts = c["t_S"]
        print(f"| {c['d']} | {c['wall_s']:.1f} | {c['kernel_evaluations']} | "
              f"{c['gradient_evaluations']} | {c['iterations']} | "
              f"{ts['none']:.3f} / {ts['optimal']:.3f} / {ts['steered']:.3f} |")
    print(json.dumps(res["machine"]))
