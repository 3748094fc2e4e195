"""The per-cell regime study: one process, one class direction, one seed.

The building blocks of the headline experiment, public so that a sweep can run
them one cell at a time (``nonrev sweep``) and the demo can loop over them
(:mod:`.headline`):

* :func:`spectrum_u`: ``U`` with eigenvalues evenly spread over ``[lo, hi]`` in a
  random orthonormal basis (seeded); its eigenvectors name the slow (smallest
  eigenvalue) and fast (largest) directions.
* :func:`speciation_row`: two classes ``+-mu`` with within-class ``sigma^2 I``;
  predicted ``t_S`` (:func:`~nonrev.regimes.speciation_time`) against the crossing
  of the cloning curve ``phi(t)`` with 0.775 (exact mixture score).
* :func:`collapse_row`: ``N`` training points; predicted ``t_C``
  (:func:`~nonrev.regimes.collapse_time` with their sample covariance) against the
  median lock time under the exact empirical score, and the memorised fraction of
  the end points (optionally the Monte Carlo excess entropy against theory).
* :func:`regime_cell`: both rows for one configuration (:class:`RegimeCellConfig`),
  as a flat results dict: the experiment ``regime`` of the sweep registry.

Reverse runs start from exact draws of ``P_T`` (data pushed forward with the exact
kernel), so ``T`` only has to be above the times being measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nonrev.config import COUNT_MAX, DIM_MAX, ConfigError, field, from_dict
from nonrev.linalg import random_spd
from nonrev.process.currents import current_summary, optimal_q, scaled_q
from nonrev.process.ou import OUProcess
from nonrev.regimes.measure import (
    clone_agreement,
    collapse_lock_times,
    excess_entropy,
    memorised_fraction,
    speciation_time_measured,
)
from nonrev.regimes.theory import collapse_entropy_gap, collapse_time, speciation_time
from nonrev.samplers import method_names
from nonrev.scores import EmpiricalScore, GaussianMixtureScore

DIRECTIONS = ("slow", "fast")


def spectrum_u(dim: int, lo: float, hi: float, seed: int):
    """``(U, V, lam)``: ``U = V diag(lam) V^T`` with ``lam = linspace(lo, hi, dim)``
    and ``V`` the Q factor of a Gaussian matrix drawn from ``default_rng(seed)``."""
    lam = np.linspace(lo, hi, dim)
    U, V = random_spd(lam, seed)
    return U, V, lam


def class_mean(V: np.ndarray, direction: str, mu_norm2: float) -> np.ndarray:
    """The class mean ``mu`` (``|mu|^2 = mu_norm2``) along the slowest (``"slow"``,
    first column of ``V``) or fastest (``"fast"``, last column) eigenvector of ``U``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return V[:, 0 if direction == "slow" else -1] * np.sqrt(mu_norm2)


def speciation_row(
    proc: OUProcess,
    mu: np.ndarray,
    *,
    sigma: float,
    n_pairs: int,
    dt: float,
    branch_factors,
    method: str,
    generator: torch.Generator,
    device="cpu",
) -> dict:
    """Predicted and measured speciation time for the classes ``+-mu``.

    The data are the equal mixture of ``N(+-mu, sigma^2 I)``. The cloning curve is
    measured at ``branch_factors`` times the predicted ``t_S``, from ``T = 1.5 x``
    the largest branch time with reverse step ``dt``; the start ``x_T`` is an exact
    draw of the mixture pushed forward to ``T``. ``generator`` is consumed in a
    fixed order (class signs, starting points, forward kernel, cloning), so the
    same generator state gives the same row.

    Returns ``t_predicted``, ``t_measured`` (with its 95% bootstrap interval
    ``t_measured_low``, ``t_measured_high``; nan where phi never crosses),
    ``rel_error``, ``threshold``, ``T``, ``steps`` and the curves
    ``branch_times``, ``phi``, ``ci_low``, ``ci_high`` (lists).
    Raises ValueError when the classes never speciate (predicted ``t_S = 0``).
    """
    d = mu.shape[0]
    means, covs = np.stack([mu, -mu]), np.stack([sigma**2 * np.eye(d)] * 2)
    axis = torch.tensor(mu, dtype=torch.float32, device=device)

    def classify(x):
        return (x @ axis > 0).long()

    t_pred = speciation_time(proc, np.outer(mu, mu), sigma**2 * np.eye(d))
    if t_pred <= 0:
        raise ValueError(
            f"the classes never speciate (predicted t_S = 0): |mu|^2 = "
            f"{float(mu @ mu):g} is too small against sigma^2 = {sigma**2:g}"
        )
    branch = t_pred * np.asarray(branch_factors)
    T = 1.5 * float(branch.max())
    steps = max(1, int(round(T / dt)))
    # exact start: the mixture pushed forward to T
    signs = torch.randint(0, 2, (n_pairs,), generator=generator) * 2 - 1
    x0 = signs[:, None].double() * torch.tensor(mu)[None, :] + sigma * torch.randn(
        n_pairs, d, generator=generator, dtype=torch.float64
    )
    x_T = proc.sample(x0, T, generator=generator).float().to(device)
    score = GaussianMixtureScore(proc, means, covs)
    res = clone_agreement(
        score,
        proc,
        classify,
        branch,
        n_pairs,
        T=T,
        steps=steps,
        method=method,
        generator=generator,
        x_T=x_T,
    )
    meas = speciation_time_measured(res)
    return {
        "t_predicted": t_pred,
        "t_measured": meas["t"],
        "t_measured_low": meas["t_low"],
        "t_measured_high": meas["t_high"],
        "rel_error": meas["t"] / t_pred - 1,
        "threshold": meas["threshold"],
        "T": T,
        "steps": steps,
        "branch_times": res["branch_times"].tolist(),
        "phi": res["phi"].tolist(),
        "ci_low": res["ci_low"].tolist(),
        "ci_high": res["ci_high"].tolist(),
    }


def collapse_row(
    proc: OUProcess,
    X: np.ndarray,
    *,
    n_traj: int,
    dt: float,
    start_factor: float,
    generator: torch.Generator,
    device="cpu",
    entropy_times: int | None = None,
    n_mc: int | None = None,
) -> dict:
    """Predicted and measured collapse time for the training points ``X`` (N, d).

    ``n_traj`` reverse trajectories under the exact empirical score of ``X`` start
    at ``T = start_factor x`` the predicted ``t_C`` from training points (drawn
    uniformly) pushed forward with the exact kernel, with step ``dt``. With
    ``entropy_times`` (and ``n_mc``) the Monte Carlo excess entropy is estimated at
    that many log-spaced times in ``[t_C / 4, 4 t_C]``, beside its theory curve.
    ``generator`` is consumed in a fixed order (starting points, forward kernel,
    reverse run, excess entropy).

    Returns ``t_predicted``, ``t_measured`` (median lock time) with its quartiles
    ``t_measured_q25``, ``t_measured_q75``, ``rel_error``, ``memorised_fraction``,
    ``T``, ``steps``, ``lock_times`` (list) and, with ``entropy_times``, ``entropy``
    (``times``, ``measured``, ``theory``).
    """
    n_train, dim = X.shape
    C = np.cov(X.T)
    pts = torch.tensor(X, dtype=torch.float32, device=device)
    t_pred = collapse_time(proc, C, n_train)
    score = EmpiricalScore(proc, pts)
    T = start_factor * t_pred
    steps = max(1, int(round(T / dt)))
    pick = torch.randint(0, n_train, (n_traj,), generator=generator)
    x_T = proc.sample(torch.tensor(X)[pick], T, generator=generator).float().to(device)
    lock = collapse_lock_times(
        score, proc, n=n_traj, T=T, steps=steps, generator=generator, x_T=x_T
    )
    mem = memorised_fraction(lock["samples"], pts)
    row = {
        "t_predicted": t_pred,
        "t_measured": lock["median"],
        "t_measured_q25": lock["q25"],
        "t_measured_q75": lock["q75"],
        "rel_error": lock["median"] / t_pred - 1,
        "memorised_fraction": mem["fraction"],
        "T": T,
        "steps": steps,
        "lock_times": lock["lock_times"].tolist(),
    }
    if entropy_times is not None:
        e_times = np.geomspace(0.25 * t_pred, 4.0 * t_pred, entropy_times)
        f_mc = excess_entropy(score, proc, pts, e_times, n_mc=n_mc, generator=generator)
        gap = collapse_entropy_gap(proc, C, e_times)
        f_th = np.maximum(0.0, (np.log(n_train) - gap) / dim)
        row["entropy"] = {
            "times": e_times.tolist(),
            "measured": f_mc.tolist(),
            "theory": f_th.tolist(),
        }
    return row


@dataclass
class RegimeCellConfig:
    """One cell of the regime study: every key a scalar, so that a sweep can vary it."""

    dim: int = field(16, min=2, max=DIM_MAX, help="dimension d of the data and of the process")
    n_train: int = field(
        500, min=2, max=COUNT_MAX, help="training points N (from N(0, I)) for collapse"
    )
    spectrum_min: float = field(0.25, min=1e-6, help="smallest eigenvalue of U")
    spectrum_max: float = field(1.75, min=1e-6, help="largest eigenvalue of U")
    gamma: float = field(0.0, help="Q = gamma * Q_optimal(U)")
    direction: str = field(
        "slow", choices=DIRECTIONS, help="class split along the slowest or fastest eigenvector of U"
    )
    seed: int = field(0, min=0)
    device: str = field("cpu", help="torch device of the reverse runs, e.g. cpu or cuda")
    mu_norm2: float = field(40.0, min=1e-6, help="|mu|^2 of the two class means +-mu")
    sigma: float = field(1.0, min=1e-6, help="within-class standard deviation")
    n_pairs: int = field(2000, min=10, max=COUNT_MAX, help="clone pairs per branch time")
    speciation_dt: float = field(0.01, min=1e-5, max=1.0, help="step of the cloning runs")
    branch_factors: list[float] = field(
        [0.7, 0.85, 1.0, 1.15, 1.3], help="branch times as multiples of the predicted t_S"
    )
    method: str = field("euler_maruyama", choices=method_names(stochastic=True))
    n_traj: int = field(400, min=10, max=COUNT_MAX, help="reverse trajectories of the collapse run")
    collapse_dt: float = field(0.005, min=1e-5, max=1.0, help="step of the collapse run")
    start_factor: float = field(3.0, min=1.01, help="collapse run from T = start_factor * t_C")

    def validate(self, prefix=""):
        if self.spectrum_max < self.spectrum_min:
            raise ConfigError(f"{prefix}spectrum_max: must be >= spectrum_min")
        if any(f <= 0 for f in self.branch_factors):
            raise ConfigError(f"{prefix}branch_factors: must all be > 0")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"{prefix}device: {exc}") from None


def regime_cell(config) -> dict:
    """Rates, speciation and collapse for one cell (``config``: a
    :class:`RegimeCellConfig` or a dict of its keys).

    ``U`` comes from :func:`spectrum_u` with ``seed``, ``Q = gamma * optimal_q(U)``.
    Speciation: classes ``+-mu`` along the ``direction`` eigenvector, cloning with a
    torch generator seeded with ``seed``. Collapse: ``n_train`` points from
    ``N(0, I)`` (``default_rng(seed + 2)``), reverse run with a generator seeded
    with ``seed + 1``. The collapse data do not depend on ``direction``, so cells
    that differ only in ``direction`` share their collapse results.

    With the demo's sizes the speciation part equals the demo's row for the same
    direction when it is the first row the demo computes (same generator state).

    Returns a flat dict: ``rate_reversible`` (``lambda_min(U)``), ``rate`` (with the
    current), ``rate_bound`` (``Tr(U)/d``); ``t_S_predicted``, ``t_S_measured``
    (``_low``, ``_high``: its 95% interval), ``t_S_rel_error``; ``t_C_predicted``,
    ``t_C_measured`` (median lock time; ``_q25``, ``_q75``), ``t_C_rel_error``,
    ``memorised_fraction``; and the curves under ``speciation`` and ``collapse``.
    """
    cfg = from_dict(RegimeCellConfig, config) if isinstance(config, dict) else config
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} asked for, but CUDA is not available here")
    U, V, lam = spectrum_u(cfg.dim, cfg.spectrum_min, cfg.spectrum_max, cfg.seed)
    proc = OUProcess(U, scaled_q(optimal_q(U), cfg.gamma))
    s = speciation_row(
        proc,
        class_mean(V, cfg.direction, cfg.mu_norm2),
        sigma=cfg.sigma,
        n_pairs=cfg.n_pairs,
        dt=cfg.speciation_dt,
        branch_factors=cfg.branch_factors,
        method=cfg.method,
        generator=torch.Generator().manual_seed(cfg.seed),
        device=cfg.device,
    )
    X = np.random.default_rng(cfg.seed + 2).standard_normal((cfg.n_train, cfg.dim))
    c = collapse_row(
        proc,
        X,
        n_traj=cfg.n_traj,
        dt=cfg.collapse_dt,
        start_factor=cfg.start_factor,
        generator=torch.Generator().manual_seed(cfg.seed + 1),
        device=cfg.device,
    )
    fig = current_summary(U, proc.Q, transient=False)
    return {
        "rate_reversible": fig["rate_reversible"],
        "rate": fig["rate"],
        "rate_bound": fig["bound"],
        "t_S_predicted": s["t_predicted"],
        "t_S_measured": s["t_measured"],
        "t_S_measured_low": s["t_measured_low"],
        "t_S_measured_high": s["t_measured_high"],
        "t_S_rel_error": s["rel_error"],
        "t_C_predicted": c["t_predicted"],
        "t_C_measured": c["t_measured"],
        "t_C_measured_q25": c["t_measured_q25"],
        "t_C_measured_q75": c["t_measured_q75"],
        "t_C_rel_error": c["rel_error"],
        "memorised_fraction": c["memorised_fraction"],
        "speciation": {
            k: s[k] for k in ("threshold", "T", "steps", "branch_times", "phi", "ci_low", "ci_high")
        },
        "collapse": {k: c[k] for k in ("T", "steps", "lock_times")},
    }
