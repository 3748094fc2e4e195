"""The forward process: :class:`OUProcess` and its exact kernel on a time grid
(:mod:`.ou`), its structured twin in a frequency basis for images
(:class:`SpectralProcess`, :mod:`.spectral`), choices of the current Q (:mod:`.currents`), clocks
mapped to
intrinsic time (:mod:`.schedules`) and the one parser of U / Q specs (:mod:`.spec`)."""

from nonrev.process import schedules
from nonrev.process.currents import current_summary, optimal_q, random_q, scaled_q
from nonrev.process.ou import Kernel, OUProcess
from nonrev.process.spectral import SpectralProcess

__all__ = [
    "Kernel",
    "OUProcess",
    "current_summary",
    "optimal_q",
    "random_q",
    "scaled_q",
    "schedules",
    "SpectralProcess",
]
