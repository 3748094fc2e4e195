"""The explicit methods: ``euler_maruyama`` (reverse SDE) and ``heun`` (probability
flow), with the stability guard that refuses a grid on which they blow up.

``euler_maruyama``  ``x_s = x + h (A x + 2 score) + sqrt(2 h) z``.
``heun``            Heun's method on ``dx/dtau = A x + score``; two model evaluations a
                    step (at ``t``, then at ``s`` on the predictor point), so
                    ``t_min > 0``.

Both take a score; a data prediction is turned into one by
``score = -Sigma_t^{-1} (x - M_t x0_hat)`` (:func:`to_score`), which is safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nonrev.samplers.gridkernel import GridKernel
from nonrev.samplers.registry import Method, register

#: Refuse an explicit method when its steps amplify perturbations by more than this
#: factor beyond the exact flow over the run (see :func:`explicit_growth`).
MAX_GROWTH = 2.0


def to_score(coef, k: int, x: torch.Tensor, x0_hat: torch.Tensor, stage: int = 0) -> torch.Tensor:
    """``score = -Sigma_t^{-1} (x - M_t x0_hat)`` at ``t = coef.eval_time(k, stage)``."""
    j = k + stage
    return -coef.kernel.Sinv.apply(j, x - coef.kernel.M.apply(j, x0_hat))


def _score(coef, k, x, out, kind, stage=0):
    return out if kind == "score" else to_score(coef, k, x, out, stage)


def _check(ker: GridKernel, options: dict, name: str, stages: int) -> dict:
    if not options.get("check_stability", True):
        return {}
    growth = explicit_growth(ker.process, ker.desc, name, ker.Sinv, options.get("stiffness"))
    if growth > MAX_GROWTH:
        raise ValueError(
            f"{name} is unstable with steps = {ker.n} on [t_min, T] = [{ker.desc[-1]:.4g}, "
            f"{ker.desc[0]:.4g}]: its steps amplify perturbations {growth:.3g} times "
            f"more than the exact reverse flow over the run (> {MAX_GROWTH}; from "
            "the rotation of A and the stiffness of the score). Use more steps or "
            "a smaller T, or an exact-kernel method ('gddim', 'dpmpp_2m', "
            "'ancestral', 'ddim')."
        )
    return {}


# ---------------------------------------------------------------------------- Euler-Maruyama
def _em_step(coef, k, x, out, kind, noise=None, state=None, affine=True):
    score = _score(coef, k, x, out, kind)
    hk = float(coef.h[k])
    return x + hk * (coef.kernel.A.apply(0, x) + 2.0 * score) + (2.0 * hk) ** 0.5 * noise, None


# ---------------------------------------------------------------------------- Heun
@dataclass(frozen=True)
class HeunStage:
    """Heun's state between its two stages: the step's start and first slope."""

    x: torch.Tensor
    slope: torch.Tensor


def _heun_step(coef, k, x, out, kind, noise=None, state=None, affine=True):
    stage = 0 if state is None else 1
    score = _score(coef, k, x, out, kind, stage)
    hk = float(coef.h[k])
    slope = coef.kernel.A.apply(0, x) + score
    if stage == 0:
        return x + hk * slope, HeunStage(x, slope)
    return state.x + 0.5 * hk * (state.slope + slope), None


register(
    Method(
        "euler_maruyama",
        build=lambda ker, opt: _check(ker, opt, "euler_maruyama", 1),
        step=_em_step,
        stochastic=True,
        output="score",
        explicit=True,
        summary="Euler-Maruyama on the reverse SDE",
    )
)
register(
    Method(
        "heun",
        build=lambda ker, opt: _check(ker, opt, "heun", 2),
        step=_heun_step,
        evaluations=2,
        output="score",
        explicit=True,
        positive_t_min=True,
        summary="Heun's method on the probability-flow ODE",
    )
)


# ---------------------------------------------------------------------------- stability
def explicit_growth(
    process,
    desc,
    method: str,
    Sinv=None,
    stiffness=None,
    linearisations=("score", "stationary", "drift"),
) -> float:
    """How much more an explicit method amplifies a perturbation over a grid
    (sampling order ``desc``) than the exact reverse flow does.

    Three linearisations of the score, ``score ~ -J_t x``: the score's own
    stiffness (``stiffness(t)`` when the score offers it, e.g.
    ``Gamma_t^{-1} = (M_t C M_t^T + Sigma_t)^{-1}`` for Gaussian data, else the worst
    case ``Sigma_t^{-1}`` of data at points: every score's Jacobian is
    ``-Sigma_t^{-1} + Sigma_t^{-1} M_t Cov(x_0 | x_t) M_t^T Sigma_t^{-1}``), data at
    the stationary law (``J = U``) and very broad data (``J = 0``, the drift ``A``
    alone, whose rotation an explicit step mis-integrates). For each step the
    method's step map ``Psi`` (``I + h (A - 2 J_t)`` for Euler-Maruyama; Heun's
    two-stage map with ``J_t``, ``J_s`` on the probability flow ``A - J``) is
    compared with the exact flow of the frozen linear drift ``B`` (``A - 2 Jbar``,
    resp. ``A - Jbar``, ``Jbar = (J_t + J_s) / 2``): the step counts
    ``max(1, rho(Psi) / max(1, rho(exp(h B))))``, i.e. only expansion beyond the
    exact one (a step that contracts less than the exact flow is inaccurate, not
    unstable), and the product over the steps is the numerical growth. Returned: the
    largest of the three. ``Sinv`` (n + 1, m, g, g) and every matrix here are the
    kernel's blocks (a block-diagonal map's spectral radius is the largest block's).
    """
    import scipy.linalg

    n = desc.size - 1
    A = process.drift_blocks
    eye = np.eye(A.shape[-1])
    if stiffness is not None:
        zero = np.zeros(A.shape)

        def blocks(J):  # a score's stiffness is a (d, d) matrix or already blocks
            J = np.asarray(J, dtype=np.float64)
            return J if J.shape == A.shape else process.to_blocks("stiffness(t)", J)

        Sinv = np.stack([blocks(stiffness(float(t))) if t > 0 else zero for t in desc])
    elif Sinv is None:
        S = process.pair_blocks(desc[desc > 0])[1]
        Sinv = np.zeros((desc.size, *A.shape))
        Sinv[desc > 0] = np.linalg.inv(S)
    c = 2.0 if method == "euler_maruyama" else 1.0
    worst = 1.0
    for lin in linearisations:
        log_growth = 0.0
        for k in range(n):
            h = float(desc[k] - desc[k + 1])
            if lin == "score":
                Jt, Js = Sinv[k], Sinv[k + 1]
                if desc[k + 1] <= 0:
                    Js = Jt
            elif lin == "stationary":
                Jt = Js = process.precision_blocks
            else:
                Jt = Js = np.zeros(A.shape)
            if method == "euler_maruyama":
                step = eye + h * (A - c * Jt)
            else:
                Kt, Ks = A - Jt, A - Js
                step = eye + 0.5 * h * (Kt + Ks @ (eye + h * Kt))
            exact = scipy.linalg.expm(h * (A - 0.5 * c * (Jt + Js)))
            rho = np.abs(np.linalg.eigvals(step)).max(axis=-1)  # per block
            rho_exact = np.abs(np.linalg.eigvals(exact)).max(axis=-1)
            # only expansion counts: a step that contracts less than the exact flow is
            # inaccurate, not unstable
            log_growth += float(
                np.max(
                    np.maximum(
                        0.0, np.log(np.maximum(rho, 1e-300)) - np.maximum(0.0, np.log(rho_exact))
                    )
                )
            )
        worst = max(worst, math.exp(log_growth))
    return worst
