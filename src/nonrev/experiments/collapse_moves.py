"""What a current does to the collapse time, across random problems (issue 16).

One cell: a random noise precision ``U`` (eigenvalues log-uniform in
``[spectrum_min, spectrum_max]``, random basis), two classes ``+-mu`` (``|mu|^2 =
mu_norm2``, random direction) with a random within-class covariance ``C_w``
(eigenvalues log-uniform in ``[0.1, 2]``, random basis), all from
``default_rng(seed)``; the training set is ``n_train`` points of the Gaussian with the
data covariance ``C = C_w + mu mu^T``. For the currents

* ``optimal``: :func:`nonrev.optimal_q`, and ``gamma`` times it for each ``gammas``;
* ``speciation_early`` and ``window``: :func:`nonrev.steer_q` with the budget
  ``||Q||_2 <= ||Q_opt||_2`` (``window`` with the same ``C`` and ``n_train``),

it reports the relative move of the collapse time ``t_C(Q) / t_C(0) - 1``: asymptotic
(:func:`nonrev.regimes.collapse_time`) always; finite-N
(:func:`nonrev.regimes.collapse_time_finite`, common random numbers for every
current) when ``finite`` is set; measured (median lock time of the reverse run,
common random numbers) when ``measured`` is set. Also the move of ``t_S`` for
context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nonrev.config import ConfigError, field
from nonrev.linalg import random_spd
from nonrev.process.currents import optimal_q
from nonrev.process.ou import OUProcess
from nonrev.regimes.finite import collapse_time_finite
from nonrev.regimes.measure import collapse_lock_times
from nonrev.regimes.steering import steer_q
from nonrev.regimes.theory import collapse_time, speciation_time

COUNT_MAX = 10**6


@dataclass
class CollapseMovesConfig:
    """One random (U, data) problem; every key a scalar, so that a sweep can vary it."""

    dim: int = field(16, min=2, max=512, help="dimension d")
    n_train: int = field(2000, min=2, max=COUNT_MAX, help="training points N")
    seed: int = field(0, min=0, help="seed of U, the classes and C_w")
    spectrum_min: float = field(0.2, min=1e-6, help="smallest eigenvalue of U")
    spectrum_max: float = field(2.0, min=1e-6, help="largest eigenvalue of U")
    mu_norm2: float = field(10.0, min=1e-6, help="|mu|^2 of the class means +-mu")
    gammas: list[float] = field([0.5, 2.0], help="scaled optimal currents gamma Q_opt")
    steered: bool = field(True, help="include the steered currents")
    finite: bool = field(False, help="also the finite-N prediction (a Monte Carlo)")
    measured: bool = field(False, help="also the measured median lock time")
    n_traj: int = field(2000, min=10, max=COUNT_MAX, help="paths of the finite-N/measured runs")
    dt: float = field(
        0.0, min=0.0, max=1.0, help="recording grid of the lock times; 0: t_C(Q = 0) / 200"
    )

    def validate(self, prefix=""):
        if self.spectrum_max < self.spectrum_min:
            raise ConfigError(f"{prefix}spectrum_max: must be >= spectrum_min")


def random_problem(dim: int, seed: int, lo: float, hi: float, mu_norm2: float):
    """``(U, mu, C_w)`` of one cell (module docstring)."""
    rng = np.random.default_rng(seed)
    U, _ = random_spd(np.exp(rng.uniform(np.log(lo), np.log(hi), dim)), rng)
    Cw, _ = random_spd(np.exp(rng.uniform(np.log(0.1), np.log(2.0), dim)), rng)
    mu = rng.standard_normal(dim)
    mu *= np.sqrt(mu_norm2) / np.linalg.norm(mu)
    return U, mu, Cw


def measured_median(proc, C, n_train, n_traj: int = 2000, dt: float = 0.005, seed: int = 0):
    """Median lock time of the reverse run (exact empirical score of ``n_train``
    Gaussian points of covariance ``C``, exact start at ``T = 1.8 t_C``)."""
    t_asym = collapse_time(proc, C, n_train)
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.standard_normal((n_train, proc.dim)) @ np.linalg.cholesky(C).T)
    g = torch.Generator().manual_seed(seed)
    from nonrev.scores.empirical import EmpiricalScore

    T = 1.8 * t_asym
    x_T = proc.sample(X[torch.randint(0, n_train, (n_traj,), generator=g)], T, generator=g)
    r = collapse_lock_times(
        EmpiricalScore(proc, X.float()),
        proc,
        n=n_traj,
        T=T,
        steps=int(round(T / dt)),
        generator=g,
        x_T=x_T.float(),
    )
    return r["median"]


def collapse_moves_cell(cfg: CollapseMovesConfig) -> dict:
    """The moves of one cell (module docstring), as a flat dict of floats:
    ``t_C_zero``, and per current ``<name>_dtC`` (asymptotic), ``<name>_dtC_finite``,
    ``<name>_dtC_measured``, ``<name>_dtS``, ``<name>_q_norm``."""
    U, mu, Cw = random_problem(cfg.dim, cfg.seed, cfg.spectrum_min, cfg.spectrum_max, cfg.mu_norm2)
    Cb = np.outer(mu, mu)
    C = Cw + Cb
    n = cfg.n_train
    Q_opt = optimal_q(U)
    budget = float(np.linalg.norm(Q_opt, 2))
    currents = {"zero": None, "optimal": Q_opt}
    for g in cfg.gammas:
        currents[f"gamma{g:g}"] = g * Q_opt
    if cfg.steered:
        for obj in ("speciation_early", "window"):
            extra = {"data_cov": C, "n_train": n} if obj == "window" else {}
            Q, _ = steer_q(
                U,
                Cb,
                Cw,
                objective=obj,
                q_norm_max=budget,
                generator=cfg.seed,
                n_random=1,
                max_iter=30,
                **extra,
            )
            currents[obj] = Q
    out = {}
    base = {}
    dt = cfg.dt or collapse_time(OUProcess(U), C, n) / 200.0
    for name, Q in currents.items():
        proc = OUProcess(U, Q)
        t_c = collapse_time(proc, C, n)
        t_s = speciation_time(proc, Cb, Cw)
        row = {"t_C": t_c, "t_S": t_s}
        if cfg.finite:
            row["t_C_finite"] = collapse_time_finite(
                proc, C, n, n_traj=cfg.n_traj, dt=dt, seed=cfg.seed
            )
        if cfg.measured:
            row["t_C_measured"] = measured_median(proc, C, n, cfg.n_traj, dt, cfg.seed)
        if name == "zero":
            base = row
            out.update({f"{k}_zero": v for k, v in row.items()})
            continue
        out[f"{name}_q_norm"] = float(np.linalg.norm(Q, 2))
        out[f"{name}_dtS"] = t_s / base["t_S"] - 1 if base["t_S"] > 0 else float("nan")
        out[f"{name}_dtC"] = t_c / base["t_C"] - 1
        for key, tag in (("t_C_finite", "finite"), ("t_C_measured", "measured")):
            if key in row:
                out[f"{name}_dtC_{tag}"] = row[key] / base[key] - 1
    return out
