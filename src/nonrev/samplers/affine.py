"""The exact-kernel one-step methods: ``ancestral``, ``ddim`` and ``gddim``.

All three share one affine update (``t`` the current time, ``s`` the next,
``M_h = M_t M_s^{-1}`` the kernel of the gap):

    x0 form:     x_s = M_s x0_hat + Phi (x - M_t x0_hat) (+ C z)
    score form:  x_s = M_h^{-1} x + G score (+ C z),   G = M_h^{-1} Sigma_t - Phi Sigma_t

(the score form is the x0 form with Tweedie's ``x0_hat = M_t^{-1} (x + Sigma_t score)``
multiplied out, so no ``M_t^{-1}`` is ever applied to a model output), and differ in
``Phi``:

``ancestral``  the exact posterior ``q(x_s | x_t, x_0 = x0_hat)``:
               ``Phi = K = Sigma_s M_h^T Sigma_t^{-1}``, ``C C^T`` the posterior covariance.
``ddim``       ``Phi = L_s L_t^{-1}`` (Cholesky factors: exact marginals for a point mass,
               but the rotation between ``L_t`` and ``R_t`` adds an antisymmetric term
               to the flow).
``gddim``      ``Phi = R_s R_t^{-1}`` (the gDDIM factor): the exact probability-flow step
               when ``x0_hat`` is constant (a point mass). Equals ``ddim`` when ``U = I``,
               ``Q = 0``. With a Gaussian ``prior`` see :mod:`.prior`.
"""

from __future__ import annotations

import numpy as np
import torch

from nonrev.linalg import psd_factor
from nonrev.samplers.gridkernel import GridKernel, T
from nonrev.samplers.prior import prior_terms
from nonrev.samplers.registry import Method, register
from nonrev.samplers.update import affine_step, finish, frame_terms


def _build_gddim(ker: GridKernel, options: dict) -> dict:
    if options.get("prior") is not None:
        return prior_terms(ker, options, second=False)
    return finish(ker, **frame_terms(ker, ker.R))


def _build_ddim(ker: GridKernel, options: dict) -> dict:
    return finish(ker, **frame_terms(ker, ker.L))


def _build_ancestral(ker: GridKernel, options: dict) -> dict:
    Mh, Sh, St, Ss = ker.Mh, ker.Sh, ker.S[:-1], ker.S[1:]
    # K = Sigma_s Mh^T Sigma_t^{-1}: solve Sigma_t K^T = Mh Sigma_s (Sigma_t SPD)
    tL = torch.from_numpy(ker.L[:-1].copy())  # copy: a size-1 axis keeps a negative stride
    K = T(torch.cholesky_solve(torch.from_numpy((Mh @ Ss).copy()), tL).numpy())
    Rj = np.eye(Mh.shape[-1]) - K @ Mh
    P = Rj @ Ss @ T(Rj) + K @ Sh @ T(K)
    P = 0.5 * (P + T(P))
    C = np.empty_like(P)
    for k in range(ker.n):
        C[k] = psd_factor(P[k])
    Mh_inv = np.linalg.inv(Mh)
    return finish(ker, X=K, X0=ker.M[1:] - K @ ker.M[:-1], F=Mh_inv, G=(Mh_inv - K) @ St, noise=C)


register(
    Method(
        "ancestral",
        build=_build_ancestral,
        step=affine_step,
        stochastic=True,
        summary="exact Gaussian posterior step (DDPM for U = I)",
    )
)
register(Method("ddim", build=_build_ddim, step=affine_step, summary="DDIM in the Cholesky frame"))
register(
    Method(
        "gddim",
        build=_build_gddim,
        step=affine_step,
        prior=True,
        summary="DDIM in the gDDIM frame R_t (exact flow for a point mass)",
    )
)
