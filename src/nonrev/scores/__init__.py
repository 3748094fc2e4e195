"""Scores: callables ``score(x, t) -> grad_x log p_t(x)`` for a process's marginals.

* :class:`GaussianMixtureScore`: exact score of a Gaussian mixture (full covariances,
  point masses allowed) pushed through the kernel.
* :class:`EmpiricalScore`: exact score of N equal-weight training points (the score
  that memorises), streamed over the points in chunks.
* :class:`NeuralScore` (:mod:`.neural`): a trained network's score, with its
  parametrisation and the denoising score matching loss.
* :class:`Score` (:mod:`.base`): the protocol, with the optional data prediction
  ``denoise(x, t)``, ``log_prob``, ``nearest`` and ``stiffness``; :func:`supports`.

``x`` is a (B, d) float32 or float64 torch tensor on any device and ``t`` a python
float; the result has ``x``'s shape, dtype and device.
"""

from nonrev.scores.base import Score, supports
from nonrev.scores.empirical import EmpiricalScore, default_chunk_size
from nonrev.scores.mixture import GaussianMixtureScore
from nonrev.scores.neural import NeuralScore

__all__ = [
    "EmpiricalScore",
    "GaussianMixtureScore",
    "NeuralScore",
    "Score",
    "default_chunk_size",
    "supports",
]
