"""The Score protocol: what nonrev's samplers and measurements ask of a score.

Required:

* ``score(x, t) -> grad_x log p_t(x)``: ``x`` a (B, d) float tensor, ``t`` a python
  float; the result has ``x``'s shape, dtype and device.

Optional (checked with :func:`supports`):

* ``denoise(x, t) -> E[x_0 | x_t = x]``, the data prediction (Tweedie:
  ``M_t^{-1} (x + Sigma_t score)``, but computed without that product with
  ``M_t^{-1}``, which cancels catastrophically at large ``t``). The exact-kernel
  samplers use it when present.
* ``log_prob(x, t) -> log p_t(x)``, shape (B,).
* ``nearest(x, t) -> index`` of the training point with the largest posterior
  weight, shape (B,) int64 (memorising scores).
* ``stiffness(t) -> (d, d) array``: the Gaussian part of ``-grad_x score`` at ``t``
  (``Gamma_t^{-1} = (M_t C M_t^T + Sigma_t)^{-1}`` for data ``N(m, C)``), used by
  the stability check of the explicit samplers; without it they assume the worst
  case, ``Sigma_t^{-1}`` (data at points).
* ``score_unchecked(x, t)`` / ``denoise_unchecked(x, t)``: the same as ``__call__`` /
  ``denoise`` without validating the inputs, for loops that validated them once
  (a check such as ``isfinite(x).all()`` is a device synchronisation on GPUs).

:class:`~nonrev.scores.GaussianMixtureScore`, :class:`~nonrev.scores.EmpiricalScore`
and :class:`~nonrev.scores.NeuralScore` implement all of these (``log_prob`` and
``nearest`` where they are defined).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, runtime_checkable

import torch

OPTIONAL = ("denoise", "log_prob", "nearest", "score_unchecked", "denoise_unchecked", "stiffness")


@runtime_checkable
class Score(Protocol):
    """A callable ``score(x, t) -> grad log p_t(x)``; see the module for the optional
    members."""

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor: ...


def supports(score, member: str) -> bool:
    """Whether ``score`` offers the optional protocol member ``member``."""
    if member not in OPTIONAL:
        raise ValueError(f"member must be one of {', '.join(OPTIONAL)}; got {member!r}")
    return callable(getattr(score, member, None))


class Evaluators(NamedTuple):
    """``score(x, t, first=False)`` and ``denoise(x, t, first=False)`` (None when the
    score has none): the checked public method when ``first`` is true, the unchecked
    one (when offered) afterwards."""

    score: Callable[..., torch.Tensor]
    denoise: Callable[..., torch.Tensor] | None


def evaluators(score) -> Evaluators:
    """The model calls a sampler loop makes, validating only on the first call."""
    if not callable(score):
        raise ValueError(f"score must be callable as score(x, t), got {type(score).__name__}")
    fast = getattr(score, "score_unchecked", None) if supports(score, "score_unchecked") else None

    def call_score(x, t, first=False):
        return score(x, t) if (first or fast is None) else fast(x, t)

    den = None
    if supports(score, "denoise"):
        public = score.denoise
        dfast = score.denoise_unchecked if supports(score, "denoise_unchecked") else None

        def den(x, t, first=False):
            return public(x, t) if (first or dfast is None) else dfast(x, t)

    return Evaluators(call_score, den)
