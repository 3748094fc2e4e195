"""Collapse at finite N: measured median lock time against the asymptotic (REM)
prediction and the finite-N prediction (``nonrev.regimes.collapse_time_finite``).

Each case: data N(0, C) with N points in d dimensions, U isotropic (I) or anisotropic
(eigenvalues 0.25..1.75 in a random basis, ``experiments.cell.spectrum_u``), Q = 0 or
the optimal current. The measurement is ``collapse_lock_times`` under the exact
empirical score (float32), ``n_traj`` trajectories started from exact draws of the
empirical law at ``T = start * t_C`` (asymptotic), Euler-Maruyama with step ``dt``,
nearest index recorded every step. The finite-N prediction is the forward-path
Monte Carlo of ``nonrev.regimes.finite`` on an independent training set (another
seed), recorded on the same grid ``dt``.

    python -m benchmarks.finite_size            # quick cases
    python -m benchmarks.finite_size --full     # the table of docs/THEORY.md section 4
    python -m benchmarks.finite_size --speed    # pruned against unpruned search (cost)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from nonrev import OUProcess, optimal_q
from nonrev.experiments.cell import spectrum_u
from nonrev.regimes import collapse_lock_times, collapse_time
from nonrev.regimes.finite import finite_lock_times
from nonrev.scores import EmpiricalScore

from ._common import machine_info

#: (d, N, U kind, Q kind, C kind)
QUICK = [(16, 100, "iso", "zero", "iso"), (32, 2000, "aniso", "optimal", "iso")]
FULL = [
    (16, 100, "iso", "zero", "iso"),
    (16, 20000, "aniso", "optimal", "iso"),
    (32, 2000, "aniso", "zero", "iso"),
    (32, 2000, "aniso", "optimal", "iso"),
    (32, 500, "aniso", "optimal", "aniso"),
    (64, 500, "iso", "zero", "iso"),
    (64, 20000, "aniso", "zero", "iso"),
    (128, 2000, "aniso", "optimal", "iso"),
    (128, 20000, "iso", "zero", "iso"),
]


def problem(d: int, u_kind: str, q_kind: str, c_kind: str):
    U = np.eye(d) if u_kind == "iso" else spectrum_u(d, 0.25, 1.75, seed=1)[0]
    Q = optimal_q(U) if q_kind == "optimal" else None
    C = np.eye(d) if c_kind == "iso" else np.diag(np.geomspace(0.25, 4.0, d))
    return OUProcess(U, Q), C


def measure(
    proc: OUProcess, C: np.ndarray, n_train: int, *, n_traj: int, dt: float, start: float, seed: int
) -> dict:
    """Median lock time of the reverse dynamics under the exact empirical score."""
    t_asym = collapse_time(proc, C, n_train)
    rng = np.random.default_rng(seed)
    F = np.linalg.cholesky(C)
    X = torch.tensor(rng.standard_normal((n_train, proc.dim)) @ F.T)
    g = torch.Generator().manual_seed(seed)
    T = start * t_asym
    x_T = proc.sample(X[torch.randint(0, n_train, (n_traj,), generator=g)], T, generator=g)
    score = EmpiricalScore(proc, X.float())
    r = collapse_lock_times(
        score, proc, n=n_traj, T=T, steps=int(round(T / dt)), generator=g, x_T=x_T.float()
    )
    return {"median": r["median"], "locked_at_T": float(np.mean(r["lock_times"] >= T * (1 - 1e-9)))}


def case(
    d, n_train, u_kind, q_kind, c_kind, *, n_traj=2000, dt=0.005, start=1.8, measured=True
) -> dict:
    proc, C = problem(d, u_kind, q_kind, c_kind)
    t_asym = collapse_time(proc, C, n_train)
    t0 = time.perf_counter()
    fin = finite_lock_times(proc, C, n_train, n_traj=n_traj, dt=dt, seed=1000 + d)
    t_fin = time.perf_counter() - t0
    row = {
        "d": d,
        "n_train": n_train,
        "U": u_kind,
        "Q": q_kind,
        "C": c_kind,
        "t_asymptotic": t_asym,
        "t_finite": fin["median"],
        "finite_s": t_fin,
    }
    if measured:
        t0 = time.perf_counter()
        m = measure(proc, C, n_train, n_traj=n_traj, dt=dt, start=start, seed=d)
        row.update(
            t_measured=m["median"],
            locked_at_T=m["locked_at_T"],
            measured_s=time.perf_counter() - t0,
            err_asymptotic=t_asym / m["median"] - 1,
            gap=m["median"] / t_asym - 1,
            err_finite=fin["median"] / m["median"] - 1,
        )
    return row


def run(quick: bool = True, device: str = "cpu") -> dict:
    t0 = time.perf_counter()
    rows = []
    for c in QUICK if quick else FULL:
        rows.append(case(*c))
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "seconds": time.perf_counter() - t0, "machine": machine_info(device)}


def table(rows) -> str:
    out = [
        "| d | N | U | Q | C | asymptotic | finite-N | measured | asym. err | finite err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['d']} | {r['n_train']} | {r['U']} | {r['Q']} | {r['C']} | "
            f"{r['t_asymptotic']:.3f} | {r['t_finite']:.3f} | {r['t_measured']:.3f} | "
            f"{100 * r['err_asymptotic']:+.1f}% | {100 * r['err_finite']:+.1f}% |"
        )
    return "\n".join(out)


#: (d, N, n_traj, t_max): t_max None runs to the median; a number stops there (partial runs at d =
#: 1024, where a full run takes minutes).
SPEED = [(128, 20000, 500, None), (1024, 2000, 2000, 0.05), (1024, 20000, 2000, 0.05)]


def speed() -> list[dict]:
    """Wall time of ``finite_lock_times`` with and without pruning (U = I, C = I),
    same seed; the lock times must agree path by path."""
    rows = []
    for d, n_train, n_traj, t_max in SPEED:
        proc, C = problem(d, "iso", "zero", "iso")
        kw = dict(n_traj=n_traj, seed=5, t_max=t_max, stop_at_median=t_max is None)
        out = {}
        for name, k in (("pruned", None), ("unpruned", 0)):
            t0 = time.perf_counter()
            out[name] = finite_lock_times(proc, C, n_train, candidates=k, **kw)
            out[name + "_s"] = time.perf_counter() - t0
        a, b = out["pruned"]["lock_times"], out["unpruned"]["lock_times"]
        both = np.isfinite(a) & np.isfinite(b)
        rows.append(
            {
                "d": d,
                "n_train": n_train,
                "n_traj": n_traj,
                "steps": out["pruned"]["steps"],
                "pruned_s": out["pruned_s"],
                "unpruned_s": out["unpruned_s"],
                "ratio": out["unpruned_s"] / out["pruned_s"],
                "differ": int((a[both] != b[both]).sum()),
                "compared": int(both.sum()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.speed:
        speed()
        raise SystemExit
    res = run(quick=not args.full)
    print(table(res["rows"]))
