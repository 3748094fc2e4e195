"""The headline experiment: what the optimal current does to relaxation, speciation
and collapse, each predicted and measured.

Setting: ``U`` with eigenvalues evenly spread over ``[spectrum_min, spectrum_max]``
in a random orthonormal basis (seeded), ``Q = gamma * optimal_q(U)`` for each gamma.

1. Relaxation: reversible rate ``lambda_min(U)``, the rate with each current, the
   bound ``Tr(U)/d``; ``||exp(-tA)||_2`` and the closed-form ``KL(P_t || N(0, U^-1))``
   for the speciation data's Gaussian moment match, and the horizon ``T`` where that
   KL falls to 1e-3.
2. Speciation: two classes ``+-mu`` (``|mu|^2 = mu_norm2``, within-class ``sigma^2 I``)
   split along the slowest and along the fastest eigenvector of ``U``; predicted
   ``t_S`` (``nonrev.regimes.speciation_time``) against the crossing of the cloning
   curve ``phi(t)`` with 0.775 (exact mixture score, Euler-Maruyama).
3. Collapse: ``n_train`` points from ``N(0, I)`` in ``collapse.dim`` dimensions;
   predicted ``t_C`` (``collapse_time`` with the sample covariance) against the
   median per-trajectory lock time under the exact empirical score, the memorised
   fraction of the final samples, and the Monte Carlo excess entropy against theory.

Reverse runs start from exact draws of ``P_T`` (data pushed forward with the exact
kernel), so ``T`` only has to be above the times being measured. The per-row work
(one speciation or collapse row) is in :mod:`.cell`, which sweeps run cell by cell.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from nonrev.config import COUNT_MAX, DIM_MAX, ConfigError, check_device, check_memory, field
from nonrev.experiments.cell import class_mean, collapse_row, speciation_row
from nonrev.experiments.cell import spectrum_u as _spectrum_u
from nonrev.experiments.steering import run_steering
from nonrev.linalg import sample_covariance
from nonrev.process.currents import current_summary, optimal_q, scaled_q
from nonrev.process.ou import OUProcess
from nonrev.regimes.finite import collapse_time_finite
from nonrev.samplers import method_names
from nonrev.version import __version__

KL_HORIZON = 1e-3


@dataclass
class SpeciationConfig:
    mu_norm2: float = field(40.0, min=1e-6, help="|mu|^2 of the two class means +-mu")
    sigma: float = field(1.0, min=1e-6, help="within-class standard deviation")
    n_pairs: int = field(8000, min=10, max=COUNT_MAX, help="clone pairs per branch time")
    dt: float = field(0.01, min=1e-5, max=1.0, help="step of the reverse SDE")
    branch_factors: list[float] = field(
        [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5],
        help="branch times as multiples of the predicted t_S",
    )
    method: str = field("euler_maruyama", choices=method_names(stochastic=True))

    def validate(self, prefix=""):
        if any(f <= 0 for f in self.branch_factors):
            raise ConfigError(f"{prefix}branch_factors: must all be > 0")


@dataclass
class CollapseConfig:
    dim: int = field(96, min=2, max=DIM_MAX, help="dimension of the collapse study")
    n_train: int = field(8000, min=2, max=COUNT_MAX, help="training points, drawn from N(0, I)")
    n_traj: int = field(1000, min=10, max=COUNT_MAX, help="reverse trajectories")
    dt: float = field(0.005, min=1e-5, max=1.0)
    start_factor: float = field(3.0, min=1.01, help="T = start_factor * predicted t_C")
    n_mc: int = field(2000, min=10, max=COUNT_MAX, help="Monte Carlo draws per excess-entropy time")
    entropy_times: int = field(12, min=2, max=10_000, help="times of the excess-entropy curve")

    def validate(self, prefix=""):
        # the (n_train | n_traj | n_mc, dim) arrays (a few copies) and the (dim, dim)
        # matrices, in float64: refused before any of them is allocated
        check_memory(
            f"{prefix}n_train",
            32.0 * (self.n_train + self.n_traj + self.n_mc) * self.dim + 64.0 * self.dim**2,
            "the collapse study's arrays",
        )


@dataclass
class SteeringConfig:
    """The steering section (:mod:`.steering`); cloning uses the speciation sizes."""

    enabled: bool = field(True, help="steer Q to maximise t_S of the fast-direction split")
    n_train: int = field(2000, min=2, max=COUNT_MAX, help="training points N of the predicted t_C")
    n_random: int = field(
        2, min=0, max=1000, help="random starts of the search (besides Q = 0, optimal)"
    )
    max_iter: int = field(100, min=1, max=COUNT_MAX, help="search iterations per start")


@dataclass
class HeadlineConfig:
    dim: int = field(
        32, min=2, max=DIM_MAX, help="dimension of the relaxation and speciation studies"
    )
    spectrum_min: float = field(0.25, min=1e-6)
    spectrum_max: float = field(1.75, min=1e-6)
    gammas: list[float] = field([0.0, 0.5, 1.0], help="Q = gamma * Q_optimal for each gamma")
    seed: int = field(0, min=0)
    device: str = field("cpu")
    speciation: SpeciationConfig = field(SpeciationConfig())
    collapse: CollapseConfig = field(CollapseConfig())
    steering: SteeringConfig = field(SteeringConfig())

    def validate(self, prefix=""):
        if self.spectrum_max < self.spectrum_min:
            raise ConfigError(f"{prefix}spectrum_max: must be >= spectrum_min")
        if len(set(self.gammas)) != len(self.gammas):
            raise ConfigError(f"{prefix}gammas: must be distinct")
        check_device(prefix, self.device)


def stage_count(cfg: HeadlineConfig) -> int:
    """Stages reported to ``progress`` by :func:`run_headline`: relaxation, two
    speciation rows and one collapse row per gamma, and steering when enabled."""
    return 1 + 3 * len(cfg.gammas) + int(cfg.steering.enabled)


def quick_config() -> HeadlineConfig:
    """Small sizes for ``nonrev demo --quick`` (README: measured run time)."""
    return HeadlineConfig(
        dim=16,
        gammas=[0.0, 1.0],
        speciation=SpeciationConfig(n_pairs=2000, branch_factors=[0.7, 0.85, 1.0, 1.15, 1.3]),
        collapse=CollapseConfig(dim=32, n_train=500, n_traj=400, n_mc=1000, entropy_times=8),
    )


def current_label(gamma: float) -> str:
    """'none' for gamma = 0, 'optimal' for 1, else 'gamma=<x>'."""
    return "none" if gamma == 0 else "optimal" if gamma == 1 else f"gamma={gamma:g}"


def _horizon(proc: OUProcess, cov0: np.ndarray, level: float = KL_HORIZON) -> float:
    """Smallest T on a fine grid with KL(P_T || stationary) <= level (closed form)."""
    t_hi = 1.0
    while proc.kl_to_stationary(t_hi, cov0=cov0) > level:
        t_hi *= 2
    grid = np.linspace(0, t_hi, 401)[1:]
    kl = proc.kl_to_stationary(grid, cov0=cov0)
    return float(grid[np.argmax(kl <= level)])


def _relaxation(cfg: HeadlineConfig, U, V, processes: dict) -> dict:
    d = cfg.dim
    mu = V[:, 0] * np.sqrt(cfg.speciation.mu_norm2)
    cov0 = cfg.speciation.sigma**2 * np.eye(d) + np.outer(mu, mu)
    rev_rate = float(np.linalg.eigvalsh(U)[0])
    t_max = 6.0 / rev_rate
    times = np.linspace(0, t_max, 121)
    rows = []
    for gamma, proc in processes.items():
        summary = current_summary(U, proc.Q, t_max=t_max)
        norms = [float(np.linalg.norm(M, 2)) for M in proc.mean_matrix(times)]
        kl = proc.kl_to_stationary(times[1:], cov0=cov0)
        rows.append(
            {
                "gamma": gamma,
                "q": current_label(gamma),
                "rate": proc.relaxation_rate(),
                "q_norm": summary["q_norm"],
                "a_norm": summary["a_norm"],
                "transient": summary["transient"],
                "horizon": _horizon(proc, cov0),
                "norm_curve": norms,
                "kl_curve": [float("inf")] + kl.tolist(),
            }
        )
    opt = [r for r in rows if r["gamma"] == 1.0]
    return {
        "reversible_rate": rev_rate,
        "optimal_rate": OUProcess(U, optimal_q(U)).relaxation_rate() if not opt else opt[0]["rate"],
        "bound": float(np.trace(U) / d),
        "kl_level": KL_HORIZON,
        "kl_data": "moment-matched Gaussian of the slow-direction speciation data",
        "times": times.tolist(),
        "currents": rows,
    }


def _speciation(cfg: HeadlineConfig, V, processes: dict, gen: torch.Generator, progress) -> list:
    sc = cfg.speciation
    rows = []
    for direction in ("slow", "fast"):
        mu = class_mean(V, direction, sc.mu_norm2)
        for gamma, proc in processes.items():
            row = speciation_row(
                proc,
                mu,
                sigma=sc.sigma,
                n_pairs=sc.n_pairs,
                dt=sc.dt,
                branch_factors=sc.branch_factors,
                method=sc.method,
                generator=gen,
                device=cfg.device,
            )
            rows.append({"direction": direction, "q": current_label(gamma), "gamma": gamma, **row})
            progress(f"speciation {direction}/{current_label(gamma)}")
    return rows


def _collapse(cfg: HeadlineConfig, gen: torch.Generator, progress) -> dict:
    cc = cfg.collapse
    U, _, _ = _spectrum_u(cc.dim, cfg.spectrum_min, cfg.spectrum_max, cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed + 2)
    X = rng.standard_normal((cc.n_train, cc.dim))
    Q_opt = optimal_q(U)
    rows = []
    for gamma in cfg.gammas:
        proc = OUProcess(U, scaled_q(Q_opt, gamma))
        row = collapse_row(
            proc,
            X,
            n_traj=cc.n_traj,
            dt=cc.dt,
            start_factor=cc.start_factor,
            generator=gen,
            device=cfg.device,
            entropy_times=cc.entropy_times,
            n_mc=cc.n_mc,
        )
        # Finite-N prediction of the median lock time with as many paths as the
        # measurement (so about its cost and its Monte Carlo spread); its own seeded
        # generator, so the demo's generator and every other number are untouched.
        row["t_predicted_finite"] = collapse_time_finite(
            proc, sample_covariance(X), cc.n_train, n_traj=cc.n_traj, dt=cc.dt, seed=cfg.seed
        )
        rows.append(
            {"q": current_label(gamma), "gamma": gamma, "n_train": cc.n_train, "dim": cc.dim, **row}
        )
        progress(f"collapse {current_label(gamma)}")
    return {"rows": rows, "rate_reversible": float(np.linalg.eigvalsh(U)[0])}


def run_headline(cfg: HeadlineConfig, progress=None) -> dict:
    """Run the study; returns a JSON-serialisable results dict (see module docstring).

    ``progress``: optional callable receiving a short stage name after each stage.
    """
    t0 = time.perf_counter()
    progress = progress or (lambda name: None)
    gen = torch.Generator().manual_seed(cfg.seed)
    U, V, _ = _spectrum_u(cfg.dim, cfg.spectrum_min, cfg.spectrum_max, cfg.seed)
    Q_opt = optimal_q(U)
    processes = {g: OUProcess(U, scaled_q(Q_opt, g)) for g in cfg.gammas}
    relaxation = _relaxation(cfg, U, V, processes)
    progress("relaxation")
    speciation = _speciation(cfg, V, processes, gen, progress)
    collapse = _collapse(cfg, gen, progress)
    steering = None
    if cfg.steering.enabled:
        steering = run_steering(cfg, U, V)
        progress("steering")
    return {
        "experiment": "headline",
        "config": dataclasses.asdict(cfg),
        "versions": {"nonrev": __version__, "torch": torch.__version__, "numpy": np.__version__},
        "relaxation": relaxation,
        "speciation": speciation,
        "collapse": collapse["rows"],
        "steering": steering,
        "runtime_s": time.perf_counter() - t0,
    }
