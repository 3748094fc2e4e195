"""nonrev: diffusion models whose forward noising process breaks detailed balance.

The forward process is ``dx = -A x dt + sqrt(2) dW`` with ``A = (I + Q) U``: ``U``
symmetric positive definite fixes the stationary law ``N(0, U^{-1})`` and the
antisymmetric ``Q`` adds probability currents that leave it unchanged.
See docs/THEORY.md in the repository for the math, docs/ARCHITECTURE.md for the rooms.
"""

from nonrev import regimes, scores
from nonrev.process import (
    Kernel,
    OUProcess,
    current_summary,
    optimal_q,
    random_q,
    scaled_q,
    schedules,
)
from nonrev.regimes import steer_q
from nonrev.samplers import sample, time_grid
from nonrev.version import __version__

__all__ = [
    "__version__",
    "Kernel",
    "OUProcess",
    "current_summary",
    "optimal_q",
    "random_q",
    "scaled_q",
    "regimes",
    "sample",
    "schedules",
    "scores",
    "steer_q",
    "time_grid",
]
