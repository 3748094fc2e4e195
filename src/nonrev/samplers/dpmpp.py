"""``dpmpp_2m``: the matrix DPM-Solver++(2M), a multistep exponential integrator.

The linear part is exact (propagator ``Phi = R_s R_t^{-1}``, the gDDIM frame), and
``x0_hat`` is extrapolated linearly in a scalar variable (default the log
signal-to-noise ``lambda_t``, :mod:`.quadrature`) from the previous step; the integral
of the variation-of-constants formula is done by Gauss-Legendre quadrature in
``log t``:

    x_s = Phi x + W_0 x0_k + W_1 (x0_k - x0_{k-1}),
    W_0 = M_s - Phi M_t,   W_1 = R_s int_s^t (-dE/dtau) phi(tau) dtau,

``E = R^{-1} M``, ``phi`` linear in lambda, 0 at ``t`` and -1 at the previous time.
The first step, and with ``lower_order_final`` the last one when there are fewer than
15 steps (or when it lands on ``t = 0``), are first order (= gddim). The state passed
from step to step is one :class:`~nonrev.samplers.registry.Previous` (the previous
model output, and the previous ``x`` for the score form and the prior).
"""

from __future__ import annotations

import math

import numpy as np

from nonrev.samplers.gridkernel import GridKernel
from nonrev.samplers.prior import prior_terms
from nonrev.samplers.quadrature import gauss_legendre, variable, variable_at
from nonrev.samplers.registry import Method, register
from nonrev.samplers.update import affine_step, finish, frame_terms, second_order_step


def second_order_weight(process, desc, lam, k, Rs, Mh_inv, name="lambda") -> np.ndarray:
    """``W_1 M_t^{-1}`` of step ``k`` (``t = desc[k]``, ``s = desc[k+1]``, previous time
    ``p = desc[k-1]``), as blocks:

        W_1 M_t^{-1} = [M_h^{-1} (lambda_s - lambda_t) - R_s int_{lambda_t}^{lambda_s}
                        E~ dlambda] / (lambda_t - lambda_p),   E~ = R_tau^{-1} M_tau M_t^{-1},

    the integral by Gauss-Legendre panels in ``u = log tau`` with
    ``dlambda = -lambda'(tau) tau du`` (``lambda'`` in closed form). ``E~`` does not
    turn with ``R_tau`` or ``M_tau`` (their rotations cancel): ``dE~/dtau =
    -(R^T R)^{-1} E~`` and ``||(R^T R)^{-1}|| = ||Sigma_tau^{-1}||``, which is largest
    at a panel's left end (``Sigma_tau`` grows with ``tau``). So panels are at most
    0.5 long in ``u`` and ``tau_b ||Sigma_{tau_a}^{-1}|| du <= 1``, however strong the
    current.
    """
    t, s = float(desc[k]), float(desc[k + 1])
    span = math.log(t) - math.log(s)
    coarse = np.linspace(math.log(s), math.log(t), max(1, int(math.ceil(span / 0.5))) + 1)
    smallest = np.linalg.eigvalsh(process.pair_blocks(np.exp(coarse[:-1]))[1])[..., 0]
    stiff = 1.0 / smallest.min(axis=-1)
    pieces = np.maximum(1, np.ceil(np.diff(coarse) * np.exp(coarse[1:]) * stiff)).astype(int)
    edges = np.concatenate(
        [np.linspace(a, b, m + 1)[:-1] for a, b, m in zip(coarse[:-1], coarse[1:], pieces)]
        + [coarse[-1:]]
    )
    u, w = gauss_legendre(edges)
    tau = np.exp(u)
    R = process.gddim_blocks(tau)
    Mj, Sj = process.pair_blocks(tau)
    Mback = np.linalg.inv(process.pair_blocks(t - tau)[0])  # M_tau M_t^{-1}
    Et = np.linalg.solve(R, Mback)
    dlam = variable_at(process, tau, Mj, Sj, name)[1]  # -lambda'(tau)
    total = np.einsum("n,nmij->mij", w * dlam * tau, Et)
    return (Mh_inv * (lam[k + 1] - lam[k]) - Rs @ total) / (lam[k] - lam[k - 1])


def _build(ker: GridKernel, options: dict) -> dict:
    name = options.get("variable", "lambda")
    lower_order_final = options.get("lower_order_final", True)
    if options.get("prior") is not None:
        return prior_terms(ker, options, second=True)
    b = frame_terms(ker, ker.R)
    X0, G, F = b["X0"], b["G"], b["F"]
    Mh_inv = F.copy()
    X1, F1, G1 = np.zeros_like(X0), np.zeros_like(X0), np.zeros_like(X0)
    lam = variable(ker.process, ker.desc, ker.M, ker.S, name)
    Mt, St, Rs = ker.M[:-1], ker.S[:-1], ker.R[1:]
    for k in range(1, ker.n):
        if not second_order_step(ker.n, k, ker.desc, lower_order_final):
            continue
        W1t = second_order_weight(ker.process, ker.desc, lam, k, Rs[k], Mh_inv[k], name)
        X0[k] = X0[k] + W1t @ Mt[k]
        X1[k] = -W1t @ Mt[k]
        G[k] = G[k] + W1t @ St[k]
        # x0_{k-1} = M_p^{-1}(x_{k-1} + Sigma_p score_{k-1}), M_t M_p^{-1} = Mh[k-1]^{-1}
        F1[k] = -W1t @ Mh_inv[k - 1]
        G1[k] = F1[k] @ ker.S[k - 1]
        # score form of x: x F^T with F = Phi + X0 M_t^{-1}
        F[k] = F[k] + W1t
    return finish(ker, X=b["X"], X0=X0, F=F, G=G, X1=X1, F1=F1, G1=G1)


register(
    Method(
        "dpmpp_2m",
        build=_build,
        step=affine_step,
        multistep=True,
        prior=True,
        summary="matrix DPM-Solver++(2M) in the gDDIM frame",
    )
)
