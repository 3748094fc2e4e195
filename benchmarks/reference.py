"""nonrev beside a plain per-step loop written the way published regime scripts are.

The isotropic Biroli et al. setting: U = I, Q = 0, two classes +-mu with
within-class variance sigma^2, the exact score (for U = I it is
``(-x + tanh(x.m_t / G_t) m_t) / G_t`` with ``m_t = e^{-t} mu``,
``G_t = sigma^2 e^{-2t} + 1 - e^{-2t}``), Euler-Maruyama. The reference is a plain
numpy loop over steps with that closed form; nonrev runs the same case through
``GaussianMixtureScore`` and ``clone_agreement``. Reported: phi(t) of both with 95%
bootstrap intervals (agreement: intervals overlap at every branch time) and the
speed ratio ``reference_seconds / nonrev_seconds`` measured in the same run.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from nonrev import OUProcess
from nonrev.regimes.measure import clone_agreement
from nonrev.scores import GaussianMixtureScore

from ._common import machine_info


def reference_phi(mu, sigma, branch_times, n_pairs, T, dt, seed=0, n_boot=1000):
    """Cloning with a plain per-step loop (numpy), as in published scripts."""
    rng = np.random.default_rng(seed)
    d = mu.size

    def score(x, t):
        m = np.exp(-t) * mu
        G = sigma**2 * np.exp(-2 * t) + 1 - np.exp(-2 * t)
        return (-x + np.tanh(x @ m / G)[:, None] * m[None, :]) / G

    def run(x, t_from, t_to):
        t = t_from
        n_steps = max(1, int(round((t_from - t_to) / dt)))
        h = (t_from - t_to) / n_steps
        for _ in range(n_steps):
            x = x + h * (x + 2 * score(x, t)) + np.sqrt(2 * h) * rng.standard_normal(x.shape)
            t -= h
        return x

    phis, lows, highs = [], [], []
    x = rng.standard_normal((n_pairs, d))
    t_hi = T
    results = {}
    for tb in sorted(branch_times, reverse=True):
        x = run(x, t_hi, tb)
        t_hi = tb
        end = run(np.concatenate([x, x]), tb, 1e-3)
        lab = end @ mu > 0
        same = (lab[:n_pairs] == lab[n_pairs:]).astype(float)
        boot = same[rng.integers(0, n_pairs, (n_boot, n_pairs))].mean(1)
        results[tb] = (same.mean(), *np.percentile(boot, [2.5, 97.5]))
    for tb in sorted(branch_times):
        p, lo, hi = results[tb]
        phis.append(p), lows.append(lo), highs.append(hi)
    return np.array(phis), np.array(lows), np.array(highs)


def run(quick: bool = True, device: str = "cpu") -> dict:
    d = 64 if quick else 256
    n_pairs = 1000 if quick else 4000
    sigma, dt, T = 1.0, 0.01, 6.0
    mu = np.zeros(d)
    mu[0] = np.sqrt(40.0)
    t_s = 0.5 * np.log(40.0 - sigma**2 + 1)
    branch = list(t_s * np.array([0.7, 1.0, 1.3]))

    t0 = time.perf_counter()
    ref, ref_lo, ref_hi = reference_phi(mu, sigma, branch, n_pairs, T, dt)
    t_ref = time.perf_counter() - t0

    proc = OUProcess(np.eye(d))
    score = GaussianMixtureScore(proc, np.stack([mu, -mu]), np.stack([sigma**2 * np.eye(d)] * 2))
    axis = torch.tensor(mu, dtype=torch.float32, device=device)
    t0 = time.perf_counter()
    res = clone_agreement(
        score,
        proc,
        lambda x: (x @ axis > 0).long(),
        branch,
        n_pairs,
        T=T,
        steps=int(round((T - 1e-3) / dt)),
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    t_ours = time.perf_counter() - t0
    overlap = bool(np.all((res["ci_low"] <= ref_hi) & (ref_lo <= res["ci_high"])))
    return {
        "d": d,
        "n_pairs": n_pairs,
        "dt": dt,
        "T": T,
        "t_S_predicted": t_s,
        "branch_times": branch,
        "phi_reference": ref.tolist(),
        "phi_reference_ci": [ref_lo.tolist(), ref_hi.tolist()],
        "phi_nonrev": res["phi"].tolist(),
        "phi_nonrev_ci": [res["ci_low"].tolist(), res["ci_high"].tolist()],
        "intervals_overlap": overlap,
        "reference_seconds": t_ref,
        "nonrev_seconds": t_ours,
        "speed_ratio": t_ref / t_ours,
        "machine": machine_info(device),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
