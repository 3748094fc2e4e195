"""Quadrature and the scalar clock of the multistep methods.

* :func:`log_snr`: the scalar log signal-to-noise ``lambda_t = 1/2 log(tr(U M_t U^{-1}
  M_t^T) / tr(U Sigma_t))`` on a grid (``lambda = log(alpha / sigma)`` for ``U = I``),
  the variable in which dpmpp_2m extrapolates the data prediction; :func:`variable`
  and :func:`variable_at` give it (or ``log t``, ``t``) and its rate.
* :func:`gauss_legendre`: six-point Gauss-Legendre panels, and :func:`prior_panels`
  the panels of the prior's integrals.

Traces of block-diagonal matrices are sums over blocks (:func:`trace_sum`), so every
function here takes the kernel's blocks (``(..., m, g, g)``).
"""

from __future__ import annotations

import math

import numpy as np

from nonrev.samplers.gridkernel import T, trace_sum

VARIABLES = ("lambda", "logt", "t")
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(6)


def log_snr(process, desc, M, S) -> np.ndarray:
    """``lambda_t`` on the grid ``desc`` (``M``, ``S``: the kernel's blocks there;
    inf at ``t = 0``)."""
    U, Ui = process.precision_blocks, process.stationary_cov_blocks
    lam = np.empty(desc.size)
    for j, t in enumerate(desc):
        num = trace_sum(U @ M[j] @ Ui @ T(M[j]))
        den = trace_sum(U @ S[j])
        lam[j] = math.inf if t <= 0 else 0.5 * (math.log(num) - math.log(den))
    return lam


def variable(process, desc, M, S, name: str) -> np.ndarray:
    """The extrapolation variable ``name`` (``"lambda"``, ``"logt"``, ``"t"``) on the
    grid ``desc``."""
    if name == "logt":
        return -np.log(np.where(desc > 0, desc, np.nan))
    if name == "t":
        return -np.asarray(desc, dtype=np.float64)
    return log_snr(process, desc, M, S)


def variable_at(process, tau, Mj, Sj, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The extrapolation variable at times ``tau`` (``Mj``, ``Sj``: their kernel
    blocks) and its rate of decrease ``-dvariable/dtau``: for ``"lambda"`` in closed
    form, ``-lambda' = tr(U^2 Y) (1/tr(U Y) + 1/tr(U Sigma))`` with
    ``Y = M U^{-1} M^T``."""
    if name == "logt":
        return -np.log(tau), 1.0 / tau
    if name == "t":
        return -tau, np.ones_like(tau)
    U = process.precision_blocks
    Y = Mj @ process.stationary_cov_blocks @ T(Mj)
    num = np.einsum("mij,nmji->n", U, Y)
    den = np.einsum("mij,nmji->n", U, Sj)
    g = np.einsum("mij,nmji->n", U @ U, Y)
    return 0.5 * (np.log(num) - np.log(den)), g * (1.0 / num + 1.0 / den)


def gauss_legendre(edges) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the six-point Gauss-Legendre rule on each panel
    ``[edges[i], edges[i+1]]``, all panels concatenated."""
    a, b = np.asarray(edges[:-1])[:, None], np.asarray(edges[1:])[:, None]
    return (
        (0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)).ravel(),
        (0.5 * (b - a) * _GL_WEIGHTS).ravel(),
    )


def prior_panels(s: float, t: float, omega: float) -> np.ndarray:
    """Panel edges in ``log tau`` on ``[s, t]``, equally spaced in
    ``v = log(tau) / 0.25 + tau omega / 0.5``: at most 0.25 in ``log tau`` and 0.5 rad
    of the frame's rotation (``omega`` its rate bound) each."""
    f = np.linspace(math.log(s), math.log(t), 2001)
    v = f / 0.25 + np.exp(f) * omega / 0.5
    npan = max(1, int(math.ceil(v[-1] - v[0])))
    return np.interp(np.linspace(v[0], v[-1], npan + 1), v, f)
