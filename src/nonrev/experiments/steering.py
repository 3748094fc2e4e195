"""The steering section of the headline experiment: a current chosen for a goal,
beside ``Q = 0`` and the optimal current, each predicted and measured.

Setting (the headline's): ``U`` with eigenvalues evenly spread over
``[spectrum_min, spectrum_max]`` in a random basis, two classes ``+-mu`` along the
*fastest* eigenvector of ``U`` (``|mu|^2 = speciation.mu_norm2``, within-class
``sigma^2 I``). The steered current maximises ``t_S`` (objective
``speciation_early`` of :func:`nonrev.steer_q`) within the stiffness budget of the
optimal current, ``||Q||_2 <= ||Q_optimal||_2``. For each of ``Q = 0``, the optimal
current and the steered one: ``||Q||_2``, the relaxation rate, the predicted ``t_S``
against the crossing of the cloning curve (:func:`.cell.speciation_row`, with the
speciation section's sizes) and the predicted ``t_C`` of ``steering.n_train``
training points drawn from the mixture (:func:`nonrev.regimes.collapse_time` with
its covariance ``mu mu^T + sigma^2 I``).

Each cloning run has a torch generator of its own (seeded from ``seed``), so this
section's numbers do not depend on what the other sections drew.
"""

from __future__ import annotations

import numpy as np
import torch

from nonrev.experiments.cell import class_mean, speciation_row
from nonrev.process.currents import current_summary, optimal_q
from nonrev.process.ou import OUProcess
from nonrev.regimes.steering import steer_q
from nonrev.regimes.theory import collapse_time

DIRECTION = "fast"
OBJECTIVE = "speciation_early"
_SEED_OFFSET = 1000  # cloning generators: seed + _SEED_OFFSET + row index


def run_steering(cfg, U: np.ndarray, V: np.ndarray) -> dict:
    """The steering section for a headline config ``cfg`` (uses ``cfg.speciation``,
    ``cfg.steering``, ``seed`` and ``device``), ``U`` and its eigenvectors ``V``.

    Returns a JSON-serialisable dict: ``objective``, ``direction``, ``q_norm_max``
    (the budget), ``n_train``, ``search`` (the winning start, the objective trace,
    the O(d^3) evaluation counts and the run time of :func:`nonrev.steer_q`), ``Q``
    (the steered current, nested lists) and ``rows``: one per current (``q`` =
    ``none``, ``optimal``, ``steered``) with ``q_norm``, ``rate``, ``t_collapse``
    and the keys of :func:`.cell.speciation_row` (``t_predicted``, ``t_measured``
    and its interval, ``rel_error``, the cloning curve).
    """
    sc, st = cfg.speciation, cfg.steering
    d = U.shape[0]
    mu = class_mean(V, DIRECTION, sc.mu_norm2)
    between, within = np.outer(mu, mu), sc.sigma**2 * np.eye(d)
    data_cov = between + within
    Q_opt = optimal_q(U)
    budget = float(np.linalg.norm(Q_opt, 2))
    Q, info = steer_q(
        U,
        between,
        within,
        objective=OBJECTIVE,
        q_norm_max=budget,
        data_cov=data_cov,
        n_train=st.n_train,
        generator=cfg.seed,
        n_random=st.n_random,
        max_iter=st.max_iter,
    )
    rows = []
    for k, (name, Qk) in enumerate((("none", None), ("optimal", Q_opt), ("steered", Q))):
        proc = OUProcess(U, Qk)
        row = speciation_row(
            proc,
            mu,
            sigma=sc.sigma,
            n_pairs=sc.n_pairs,
            dt=sc.dt,
            branch_factors=sc.branch_factors,
            method=sc.method,
            generator=torch.Generator().manual_seed(cfg.seed + _SEED_OFFSET + k),
            device=cfg.device,
        )
        fig = current_summary(U, Qk, transient=False)
        rows.append(
            {
                "q": name,
                "q_norm": fig["q_norm"],
                "rate": fig["rate"],
                "t_collapse": collapse_time(proc, data_cov, st.n_train),
                **row,
            }
        )
    return {
        "objective": OBJECTIVE,
        "direction": DIRECTION,
        "q_norm_max": budget,
        "n_train": st.n_train,
        "search": {
            "start": info["start"],
            "trace": info["trace"],
            "kernel_evaluations": info["kernel_evaluations"],
            "gradient_evaluations": info["gradient_evaluations"],
            "runtime_s": info["runtime_s"],
        },
        "Q": Q.tolist(),
        "rows": rows,
    }
