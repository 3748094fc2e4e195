"""The free numbers l_k of the optimal current: stiffness, transient and horizon.

Every choice of distinct positive l_k gives the same relaxation rate Tr(U)/d; they
differ in ||Q||_2 (stiffness), the transient max_t ||exp(-tA)||_2 and the horizon
(the T where KL(P_T || N(0, U^-1)) falls to 1e-3 for Gaussian data with a spike
along the slowest eigenvector of U, as in benchmarks/horizon.py). U has eigenvalues
evenly spread over [0.25, 1.75] in a random basis. This is the measurement behind the
default of ``nonrev.process.currents.default_lambdas``.
"""

from __future__ import annotations

import json

import numpy as np

from nonrev import OUProcess, current_summary, optimal_q

from ._common import machine_info
from .horizon import _u, horizon

CHOICES = {
    "linear 1..d": lambda d: np.arange(1, d + 1, dtype=float),
    "geometric 1..d": lambda d: np.geomspace(1, d, d),
    "geometric 1..d^2": lambda d: np.geomspace(1, d * d, d),
    "geometric 1..1e6": lambda d: np.geomspace(1, 1e6, d),
}


def run(quick: bool = True, device: str = "cpu") -> dict:
    dims = [16, 64] if quick else [16, 64, 256, 512]
    rows = []
    for d in dims:
        U, V = _u(d)
        cov0 = np.eye(d) + 25.0 * np.outer(V[:, 0], V[:, 0])
        T_rev = horizon(OUProcess(U), cov0)
        bound = np.trace(U) / d / np.linalg.eigvalsh(U)[0]
        for name, make in CHOICES.items():
            Q = optimal_q(U, make(d))
            s = current_summary(U, Q, n_times=60)
            ev = np.linalg.eigvals((np.eye(d) + Q) @ U).real
            rows.append(
                {
                    "d": d,
                    "lambdas": name,
                    "q_norm": s["q_norm"],
                    "a_norm": s["a_norm"],
                    "transient": s["transient"],
                    "max_rel_dev_real_parts": float(np.abs(ev - s["bound"]).max() / s["bound"]),
                    "horizon_speedup": T_rev / horizon(OUProcess(U, Q), cov0),
                    "bound": float(bound),
                }
            )
    return {"rows": rows, "machine": machine_info(device)}


if __name__ == "__main__":
    res = run(quick=False)
    print("| d | l_k | ||Q|| | ||A|| | transient | Re dev | horizon speedup (bound) |")
    print("|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(
            f"| {r['d']} | {r['lambdas']} | {r['q_norm']:.3g} | {r['a_norm']:.3g} | "
            f"{r['transient']:.3g} | {r['max_rel_dev_real_parts']:.1e} | "
            f"{r['horizon_speedup']:.2f} ({r['bound']:.2f}) |"
        )
    print(json.dumps(res["machine"]))
