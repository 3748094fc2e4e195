"""One step of every reverse sampler, with its per-grid coefficients precomputed once.

This is the stepping API that :func:`nonrev.samplers.sample` drives and that other
front ends (e.g. a diffusers scheduler) reuse:

    coef = coefficients(process, times, method)      # float64 precompute, then cast
    state = None
    for k in range(coef.steps):                      # t = coef.times[k] -> coef.times[k+1]
        for stage in range(coef.stages):             # 2 for heun, else 1
            t = coef.eval_time(k, stage)
            x0_hat = model_x0(x, t)                  # or score=model_score(x, t)
            z = noise(x) if coef.stochastic and stage == 0 else None
            x, state = step(coef, k, x, x0_hat, noise=z, state=state)

``coef.times`` is the grid in sampling order (decreasing). ``step`` is pure: it
returns the new state and the new ``x`` (after stage 0 of heun, the predictor point
where stage 1 evaluates the model). Rows are samples: ``x`` and the model outputs
are (B, d) tensors in ``coef``'s dtype and device; matrices act as ``x @ P.T``.

**The model output.** Pass either the data prediction ``x0_hat = E[x_0 | x_t]``
(positional, the preferred form) or ``score=grad log p_t(x)``; they are related by
Tweedie, ``x0_hat = M_t^{-1} (x + Sigma_t score)``. Every method accepts both and
never converts a score to ``x0_hat`` (that product with ``M_t^{-1}``, up to
``e^{t max Re spec A}``, cancels catastrophically at large ``t``): the exact-kernel
methods keep a second set of coefficients for scores, the explicit ones
(``euler_maruyama``, ``heun``) turn an ``x0_hat`` into a score, which is safe
(``-Sigma_t^{-1} (x - M_t x0_hat)``). With ``x0_hat`` the exact-kernel steps have
no cancellation at all: ``x_s = M_s x0_hat + Phi (x - M_t x0_hat)`` with bounded
matrices. With a score the step multiplies ``x`` by ``M_h^{-1}`` (``h`` the step),
the same as before this API existed. Use one kind of output for a whole run.

**Methods** live in a registry (:mod:`.registry`, ``METHODS``), one file per family:
:mod:`.explicit` (``euler_maruyama``, ``heun``), :mod:`.affine` (``ancestral``,
``ddim``, ``gddim``), :mod:`.dpmpp` (``dpmpp_2m``), and :mod:`.prior` (a Gaussian prior
integrated exactly by ``gddim`` and ``dpmpp_2m``). Coefficients are operator stacks
(:mod:`nonrev.operators`) built from the process's kernel blocks, so a kernel with
structured matrices (block-diagonal in a fast transform) needs no change here.
"""

from __future__ import annotations

import numpy as np
import torch

from nonrev.samplers.gridkernel import GridKernel
from nonrev.samplers.prior import as_prior
from nonrev.samplers.quadrature import VARIABLES
from nonrev.samplers.registry import METHODS, Coefficients, KernelTerms, get_method
from nonrev.threads import single_threaded

__all__ = ["METHODS", "Coefficients", "as_prior", "coefficients", "step"]


@single_threaded
def coefficients(
    process,
    times,
    method,
    *,
    dtype=torch.float64,
    device=None,
    lower_order_final: bool = True,
    check_stability: bool = True,
    stiffness=None,
    variable: str = "lambda",
    prior=None,
) -> Coefficients:
    """Precompute ``method``'s per-step terms on an increasing grid ``times``
    (float64, then cast to ``dtype`` on ``device``). ``method``: a registered name or
    a :class:`~nonrev.samplers.registry.Method`. Explicit methods are checked for
    stability here (:func:`nonrev.samplers.explicit.explicit_growth`, with the
    score's ``stiffness(t)`` when given, else the worst case ``Sigma_t^{-1}``);
    ValueError names steps and T.

    ``dpmpp_2m`` only: ``variable`` is the scalar in which ``x0_hat`` is extrapolated
    (``"lambda"``, the log signal-to-noise, default; ``"logt"``; ``"t"``), and
    ``lower_order_final`` makes the last step first order when there are fewer than
    15 steps. On the d = 4 Gaussian benchmark case ``"lambda"`` was the most accurate
    of the three on log and log-SNR grids.

    ``prior``: ``(mean, cov)`` of a Gaussian ``N(m, C)`` whose score is integrated
    exactly (methods with ``prior=True``: ``gddim`` and ``dpmpp_2m``; ``t_min > 0``,
    x0_hat model outputs only): only the residual ``x0_hat - D_G(x)`` of the data
    prediction against the prior's posterior mean is held constant (``gddim``) or
    extrapolated (``dpmpp_2m``); see :mod:`nonrev.samplers.prior`. ``C = 0`` is the
    method without a prior."""
    record = get_method(method)
    if variable not in VARIABLES:
        raise ValueError(f"variable must be one of {', '.join(VARIABLES)}; got {variable!r}")
    grid = np.asarray(times, dtype=np.float64)
    if prior is not None:
        prior = as_prior(prior, process.dim)
        if not record.prior:
            supported = [n for n, m in METHODS.items() if m.prior]
            raise ValueError(
                f"prior is supported by {' and '.join(map(repr, supported))} "
                f"only, not {record.name!r}"
            )
        if not grid.size or grid.min() <= 0:
            raise ValueError(
                "prior needs t_min > 0 (the prior's frame starts at the grid's smallest time)"
            )
    if record.positive_t_min and grid.size and grid.min() <= 0:
        raise ValueError(f"t_min must be > 0 for {record.name} (it evaluates the model at t_min)")
    ker = GridKernel(process, grid, dtype=dtype, device=device)
    options = dict(
        lower_order_final=lower_order_final,
        check_stability=check_stability,
        stiffness=stiffness,
        variable=variable,
        prior=prior,
    )
    terms = record.build(ker, options)
    kernel = KernelTerms(M=ker.ops(ker.M), Sinv=ker.ops(ker.Sinv), A=ker.ops(ker.A[None]))
    return Coefficients(record=record, times=ker.desc, h=ker.h, kernel=kernel, prior=prior, **terms)


def step(
    coef: Coefficients,
    k: int,
    x: torch.Tensor,
    x0_hat: torch.Tensor | None = None,
    *,
    score: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    state=None,
    affine: bool = True,
):
    """Step ``k`` of ``coef.method`` (from ``coef.times[k]`` to ``coef.times[k+1]``).

    ``x``: (B, d) state; the model output at ``(x, coef.eval_time(k, stage))``, either
    ``x0_hat`` (data prediction) or ``score``; ``noise``: (B, d) standard normal for
    the stochastic methods (None otherwise); ``state``: what the previous call
    returned (None at the start). ``affine=False`` drops the constant term of a step
    with a prior, i.e. propagates differences of states (as
    :func:`nonrev.samplers.gaussian_error` does for its square-root rows). Returns
    ``(x_new, state)``.
    """
    if (x0_hat is None) == (score is None):
        raise ValueError("pass exactly one of x0_hat and score")
    if coef.prior is not None and score is not None:
        raise ValueError(
            "prior: coefficients with a Gaussian prior take the data prediction x0_hat, not score="
        )
    kind, out = ("x0", x0_hat) if score is None else ("score", score)
    return coef.record.step(coef, k, x, out, kind, noise, state, affine)
