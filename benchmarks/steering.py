"""Cost of steering: ``nonrev.steer_q`` against the dimension.

U with eigenvalues evenly spaced in [0.25, 1.75] in a random basis, two classes
``+-mu`` (``|mu|^2 = 40``, within-class ``I``) along the fastest eigenvector of U,
objective ``speciation_early`` within the optimal current's norm budget, default
search (Q = 0, the optimal current and 2 random starts, up to 100 iterations each),
``data_cov``/``n_train`` given so that t_C is reported. Per d: wall time, the number
of O(d^3) kernel evaluations (exact (M_t, Sigma_t) pairs) and Frechet derivatives,
and t_S for Q = 0, the optimal current and the steered one.

``python -m benchmarks.steering --objectives`` prints the table of several objectives
with cloning-measured t_S (:func:`objectives_table`, also in the --full run).
Run with ``python -m benchmarks.steering`` (one BLAS thread:
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``, the setting of the test suite).
"""

from __future__ import annotations

import json
import time

import numpy as np

from nonrev import optimal_q, steer_q
from nonrev.linalg import random_spd

from ._common import machine_info


def case(d: int, objective: str = "speciation_early") -> dict:
    U, V = random_spd(np.linspace(0.25, 1.75, d), 0)
    mu = V[:, -1] * np.sqrt(40.0)
    Cb, Cw = np.outer(mu, mu), np.eye(d)
    budget = float(np.linalg.norm(optimal_q(U), 2))
    t0 = time.perf_counter()
    _, info = steer_q(
        U,
        Cb,
        Cw,
        objective=objective,
        q_norm_max=budget,
        data_cov=Cb + Cw,
        n_train=2000,
        generator=0,
    )
    wall = time.perf_counter() - t0
    refs = info["references"]
    return {
        "d": d,
        "objective": objective,
        "budget": budget,
        "wall_s": wall,
        "kernel_evaluations": info["kernel_evaluations"],
        "gradient_evaluations": info["gradient_evaluations"],
        "iterations": sum(s["iterations"] for s in info["starts"]),
        "start": info["start"],
        "t_S": {
            "none": refs["zero"]["t_speciation"],
            "optimal": refs["optimal"]["t_speciation"],
            "steered": info["t_speciation"],
        },
        "t_C": {
            "none": refs["zero"]["t_collapse"],
            "optimal": refs["optimal"]["t_collapse"],
            "steered": info["t_collapse"],
        },
        "rate_steered": info["rate"],
    }


def run(quick: bool = True, device: str = "cpu") -> dict:
    dims = (16, 32) if quick else (32, 64, 128)
    out = {"cases": [case(d) for d in dims], "machine": machine_info(device)}
    if not quick:
        out["objectives"] = objectives_table()
    return out


def objectives_table(d: int = 16, n_pairs: int = 800, seed: int = 0) -> list[dict]:
    """The issue-8 table: for several objectives, Q = 0, the optimal current and the
    steered one under the optimal current's norm budget, predicted t_S, t_S measured by
    cloning (``experiments.cell.speciation_row``), predicted t_C for N = 2000 points of
    the mixture, and the relaxation rate. U eigenvalues 0.25..1.75 in a random basis,
    classes +-mu with |mu|^2 = 40, sigma = 1."""
    import torch

    from nonrev import OUProcess
    from nonrev.experiments.cell import speciation_row
    from nonrev.regimes import collapse_time

    U, V = random_spd(np.linspace(0.25, 1.75, d), seed)
    Q_opt = optimal_q(U)
    budget = float(np.linalg.norm(Q_opt, 2))
    cases = [
        ("speciation_early", "fast", {}),
        ("speciation_late", "slow", {}),
        ("window", "fast", {}),
        ("target_speciation", "fast", {"target": 3.0}),
    ]
    rows = []
    for objective, direction, extra in cases:
        mu = V[:, d - 1 if direction == "fast" else 0] * np.sqrt(40.0)
        Cb, Cw = np.outer(mu, mu), np.eye(d)
        Q_s, _ = steer_q(
            U,
            Cb,
            Cw,
            objective=objective,
            q_norm_max=budget,
            data_cov=Cb + Cw,
            n_train=2000,
            generator=seed,
            **extra,
        )
        for name, Q in (("none", None), ("optimal", Q_opt), ("steered", Q_s)):
            proc = OUProcess(U, Q)
            row = speciation_row(
                proc,
                mu,
                sigma=1.0,
                n_pairs=n_pairs,
                dt=0.01,
                branch_factors=[0.7, 0.85, 1.0, 1.15, 1.3],
                method="euler_maruyama",
                generator=torch.Generator().manual_seed(seed),
            )
            rows.append(
                {
                    "objective": objective,
                    "direction": direction,
                    "q": name,
                    "budget": budget,
                    "t_S_predicted": row["t_predicted"],
                    "t_S_measured": row["t_measured"],
                    "t_C_predicted": collapse_time(proc, Cb + Cw, 2000),
                    "rate": proc.relaxation_rate(),
                    "q_norm": 0.0 if Q is None else float(np.linalg.norm(Q, 2)),
                }
            )
    return rows


if __name__ == "__main__":
    import sys

    if "--objectives" in sys.argv:
        print("| objective | split | Q | t_S predicted | t_S measured | t_C predicted | rate |")
        print("|---|---|---|---|---|---|---|")
        for r in objectives_table():
            print(
                f"| {r['objective']} | {r['direction']} | {r['q']} | {r['t_S_predicted']:.3f} | "
                f"{r['t_S_measured']:.3f} | {r['t_C_predicted']:.3f} | {r['rate']:.3f} |"
            )
        sys.exit(0)
    res = run(quick=False)
    print("| d | wall s | kernel evals | Frechet | iterations | t_S none / optimal / steered |")
    print("|---|---|---|---|---|---|")
    for c in res["cases"]:
        ts = c["t_S"]
        print(
            f"| {c['d']} | {c['wall_s']:.1f} | {c['kernel_evaluations']} | "
            f"{c['gradient_evaluations']} | {c['iterations']} | "
            f"{ts['none']:.3f} / {ts['optimal']:.3f} / {ts['steered']:.3f} |"
        )
    print(json.dumps(res["machine"]))
