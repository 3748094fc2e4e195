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

**Methods** (``t`` the current time, ``s`` the next, ``h = t - s``;
``R_t`` the gDDIM factor :attr:`nonrev.process.Kernel.R`, ``L_t`` the Cholesky
factor, both square roots of ``Sigma_t``):

``euler_maruyama``  ``x_s = x + h (A x + 2 score) + sqrt(2 h) z`` (reverse SDE).
``heun``            Heun's method on the probability-flow ODE ``dx/dtau = A x + score``;
                    two model evaluations a step (at ``t``, then at ``s`` on the
                    predictor point).
``ancestral``       Exact posterior ``q(x_s | x_t, x_0 = x0_hat)``:
                    ``x_s = M_s x0_hat + K (x - M_t x0_hat) + C z`` with
                    ``K = Sigma_s M_h^T Sigma_t^{-1}``, ``C C^T`` the posterior covariance.
``ddim``            ``x_s = M_s x0_hat + L_s L_t^{-1} (x - M_t x0_hat)`` (Cholesky
                    factors: exact marginals for a point mass, but the rotation between
                    ``L_t`` and ``R_t`` adds an antisymmetric term to the flow).
``gddim``           ``x_s = M_s x0_hat + R_s R_t^{-1} (x - M_t x0_hat)``: DDIM in the
                    gDDIM frame, the exact probability-flow step when ``x0_hat`` is
                    constant (a point mass). Equals ``ddim`` when ``U = I``, ``Q = 0``.
``dpmpp_2m``        The matrix DPM-Solver++(2M): the linear part exact (propagator
                    ``R_s R_t^{-1}``), ``x0_hat`` extrapolated linearly in the scalar
                    log signal-to-noise ``lambda_t = 1/2 log(tr(U M_t U^{-1} M_t^T) /
                    tr(U Sigma_t))`` from the previous step (``lambda = log(alpha /
                    sigma)`` for ``U = I``), the integral of the variation-of-constants
                    formula done by Gauss-Legendre quadrature in ``log t``:
                    ``x_s = Phi x + W_0 x0_k + W_1 (x0_k - x0_{k-1})`` with
                    ``W_0 = M_s - Phi M_t`` and ``W_1 = R_s int_s^t (-dE/dtau) phi(tau)
                    dtau``, ``E = R^{-1} M``, ``phi`` linear in lambda, 0 at ``t`` and -1
                    at the previous time. The first step, and with
                    ``lower_order_final`` the last one when there are fewer than 15
                    steps (or when it lands on ``t = 0``), are first order (= gddim).

**A Gaussian prior** (``coefficients(..., prior=(m, C))`` for ``gddim`` and
``dpmpp_2m``; ``sample(..., prior=)``, ``gaussian_error(..., prior=)``): the score of
``N(m, C)`` is integrated exactly and only the residual of the data prediction is
approximated. With ``G_t = M_t C M_t^T + Sigma_t`` (it obeys the same Lyapunov ODE as
``Sigma_t``), its frame ``R_G' = (-A + G^{-1}) R_G`` (``R_G R_G^T = G``, integrated as
the gDDIM factor but from the grid's smallest time ``t_min > 0`` with ``O = I``; the
flow map ``Phi_G = R_G(s) R_G(t)^{-1}`` does not depend on that start), the prior's
posterior mean ``D_G(x) = m + C M_t^T G_t^{-1} (x - M_t m)`` and the residual
``e_t = x0_hat - D_G(x)``, the probability flow of ``y = x - M_t m`` is
``dy/dtau = (-A + G^{-1}) y - Sigma^{-1} M e`` and

    x_s = M_s m + Phi_G (x - M_t m) + W_0 e_t + W_1 (e_t - e_{k-1}),
    W_0 = M_s - Phi_G M_t + R_G(s) int_s^t K dtau,
    W_1 = M_s phi(s) + R_G(s) int_s^t [R_G^{-1} M phi' + K phi] dtau,
    K = R_G^{-1} Sigma^{-1} M C M^T G^{-1} M,

(``phi`` as in dpmpp_2m, ``W_1 = 0`` for gddim and the first-order steps), from
``W = R_G(s) int_s^t R_G^{-1} Sigma^{-1} M dtau`` split as ``Sigma^{-1} M = G^{-1} M +
Sigma^{-1} M C M^T G^{-1} M`` with ``d/dtau (R_G^{-1} M) = -R_G^{-1} G^{-1} M``; so ``C = 0`` is the method without a
prior to rounding, and with the data's own law as prior (Gaussian data) the residual
vanishes and every step is exact. Quadrature: six-point Gauss-Legendre panels in
``log tau``, at most 0.25 long and 0.5 rad of the frame's rotation
(:meth:`OUProcess.rotation_rate_bound`) each (refining them 4x changes the matrices
by ~1e-13 on the d = 4 case). x0_hat model outputs only; a step with ``score=``
raises. Measured (exact W2, d = 4 Gaussian case of the benchmark, best of log and
log-SNR grids, prior = mean and covariance of 200 data draws, median of five draws):
with the optimal current 0.018 / 0.0034 at 10 / 20 steps against dpmpp_2m's 0.080 /
0.034; without it 0.0068 / 0.0020 against 0.053 / 0.0049. A poor prior can cost
accuracy without the current (isotropic ``N(0, tr C / d I)``: 0.020 against 0.0049
at 20 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nonrev.linalg import as_psd, as_vector, psd_factor, sym
from nonrev.process.ou import OUProcess, _exact_pairs
from nonrev.threads import single_threaded

METHODS = ("euler_maruyama", "ancestral", "ddim", "heun", "gddim", "dpmpp_2m")
EXPLICIT = ("euler_maruyama", "heun")
STOCHASTIC = ("euler_maruyama", "ancestral")
#: Refuse an explicit method when its steps amplify perturbations by more than this
#: factor beyond the exact flow over the run (see :func:`explicit_growth`).
MAX_GROWTH = 2.0
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(6)


@dataclass(frozen=True)
class Coefficients:
    """Per-step matrices of one method on one grid, in sampling order.

    ``times`` (n + 1,) decreasing numpy grid; step ``k`` goes ``times[k] ->
    times[k+1]``. Per-step tensors have a leading axis of length ``n = steps``:

    * x0 form: ``x_s = x X[k]^T + x0_k X0[k]^T (+ x0_{k-1} X1[k]^T) (+ z C[k]^T)``;
    * score form: ``x_s = x F[k]^T + score_k G[k]^T (+ x_{k-1} F1[k]^T +
      score_{k-1} G1[k]^T) (+ z C[k]^T)``.

    ``M``, ``Sinv`` (n + 1, d, d): ``M_t`` and ``Sigma_t^{-1}`` at the grid times (to
    turn an ``x0_hat`` into a score); ``A`` the drift matrix; ``h`` the step lengths.

    With a Gaussian prior (``prior``: the validated ``(mean, cov)`` as numpy arrays)
    the x0 form gains the previous state and a constant:
    ``x_s = x X[k]^T + x0_k X0[k]^T (+ x0_{k-1} X1[k]^T + x_{k-1} XP[k]^T) + c[k]``;
    the score form is not offered (``F``, ``G`` are None).
    """

    method: str
    times: np.ndarray
    h: np.ndarray
    stochastic: bool
    stages: int
    X: torch.Tensor | None
    X0: torch.Tensor | None
    X1: torch.Tensor | None
    F: torch.Tensor | None
    G: torch.Tensor | None
    F1: torch.Tensor | None
    G1: torch.Tensor | None
    C: torch.Tensor | None
    M: torch.Tensor
    Sinv: torch.Tensor
    A: torch.Tensor
    XP: torch.Tensor | None = None
    c: torch.Tensor | None = None
    prior: tuple | None = None

    @property
    def steps(self) -> int:
        return int(self.h.size)

    def eval_time(self, k: int, stage: int = 0) -> float:
        """Time at which the model is evaluated in stage ``stage`` of step ``k``."""
        return float(self.times[k + stage])


@single_threaded
def coefficients(process: OUProcess, times, method: str, *, dtype=torch.float64,
                 device=None, lower_order_final: bool = True,
                 check_stability: bool = True, stiffness=None,
                 variable: str = "lambda", prior=None) -> Coefficients:
    """Precompute ``method``'s per-step matrices on an increasing grid ``times``
    (float64, then cast to ``dtype`` on ``device``). Explicit methods are checked for
    stability here (:func:`explicit_growth`, with the score's ``stiffness(t)`` when
    given, else the worst case ``Sigma_t^{-1}``); ValueError names steps and T.

    ``dpmpp_2m`` only: ``variable`` is the scalar in which ``x0_hat`` is extrapolated
    (``"lambda"``, the log signal-to-noise, default; ``"logt"``; ``"t"``), and
    ``lower_order_final`` makes the last step first order when there are fewer than
    15 steps. On the d = 4 Gaussian benchmark case ``"lambda"`` was the most accurate
    of the three on log and log-SNR grids.

    ``prior``: ``(mean, cov)`` of a Gaussian ``N(m, C)`` whose score is integrated
    exactly (``gddim`` and ``dpmpp_2m`` only, ``t_min > 0``, x0_hat model outputs
    only): only the residual ``x0_hat - D_G(x)`` of the data prediction against the
    prior's posterior mean is held constant (``gddim``) or extrapolated
    (``dpmpp_2m``); see the module docstring. ``C = 0`` is the method without a prior."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    grid = np.asarray(times, dtype=np.float64)
    n, d = grid.size - 1, process.dim
    if prior is not None:
        prior = as_prior(prior, d)
        if method not in ("gddim", "dpmpp_2m"):
            raise ValueError(f"prior is supported by 'gddim' and 'dpmpp_2m' only, not {method!r}")
        if not grid.size or grid.min() <= 0:
            raise ValueError("prior needs t_min > 0 (the prior's frame starts at the grid's "
                             "smallest time)")
    desc = grid[::-1].copy()
    h = -np.diff(desc)
    ker = process.kernel(grid, dtype=torch.float64)
    # sampling order: index j <-> time desc[j] = grid[n - j]
    M = ker.M.numpy()[::-1]
    S = ker.Sigma.numpy()[::-1]
    L = ker.L.numpy()[::-1]
    Mh = ker.step_M.numpy()[::-1]  # Mh[k]: kernel of the gap between desc[k+1] and desc[k]
    Sh = ker.step_Sigma.numpy()[::-1]
    Sinv = np.zeros_like(S)
    for j in range(n + 1):
        if desc[j] > 0:
            Sinv[j] = np.linalg.inv(S[j])
            Sinv[j] = 0.5 * (Sinv[j] + Sinv[j].T)
    X = X0 = X1 = F = G = F1 = G1 = C = XP = cvec = None
    if method in EXPLICIT:
        if method == "heun" and desc[-1] <= 0:
            raise ValueError("t_min must be > 0 for heun (its corrector evaluates the score "
                             "at t_min)")
        if check_stability:
            growth = explicit_growth(process, desc, method, Sinv, stiffness)
            if growth > MAX_GROWTH:
                raise ValueError(
                    f"{method} is unstable with steps = {n} on [t_min, T] = [{desc[-1]:.4g}, "
                    f"{desc[0]:.4g}]: its steps amplify perturbations {growth:.3g} times "
                    f"more than the exact reverse flow over the run (> {MAX_GROWTH}; from "
                    "the rotation of A and the stiffness of the score). Use more steps or "
                    "a smaller T, or an exact-kernel method ('gddim', 'dpmpp_2m', "
                    "'ancestral', 'ddim').")
    else:
        Fh = np.linalg.inv(Mh)  # M_h^{-1} = M_s M_t^{-1}
        F = Fh.copy()
        Mt, Ms, St, Ss = M[:-1], M[1:], S[:-1], S[1:]
        Lt, Ls = L[:-1], L[1:]
        if method == "ddim":
            Phi = _right_solve(Ls, Lt)
            G = F @ St - Ls @ _T(Lt)
        elif method == "ancestral":
            # K = Sigma_s Mh^T Sigma_t^{-1}: solve Sigma_t K^T = Mh Sigma_s (Sigma_t SPD)
            tL = torch.from_numpy(Lt.copy())  # copy: a size-1 axis keeps a negative stride
            K = _T(torch.cholesky_solve(torch.from_numpy((Mh @ Ss).copy()),
                                        tL).numpy())
            Phi = K
            eye = np.eye(d)
            Rj = eye - K @ Mh
            P = Rj @ Ss @ _T(Rj) + K @ Sh @ _T(K)
            P = 0.5 * (P + _T(P))
            C = np.empty_like(P)
            for k in range(n):
                try:
                    C[k] = np.linalg.cholesky(P[k])
                except np.linalg.LinAlgError:  # singular posterior (s = 0)
                    C[k] = psd_factor(P[k])
            G = (F - K) @ St
        else:  # gddim, dpmpp_2m: the R frame
            R = ker.R.numpy()[::-1]
            Rt, Rs = R[:-1], R[1:]
            Phi = _right_solve(Rs, Rt)  # R_s R_t^{-1}
            G = F @ St - Rs @ _T(Rt)
        X = Phi
        X0 = Ms - Phi @ Mt
        if prior is not None:
            lam = _variable(process, desc, M, S, variable)
            X, X0, X1, XP, cvec = _prior_coefficients(
                process, desc, M, S, prior, lam, variable, second=method == "dpmpp_2m",
                lower_order_final=lower_order_final)
            F = G = None
        elif method == "dpmpp_2m":
            X1 = np.zeros_like(X0)
            F1 = np.zeros_like(X0)
            G1 = np.zeros_like(X0)
            lam = _variable(process, desc, M, S, variable)
            for k in range(1, n):
                last = k == n - 1
                if desc[k + 1] <= 0 or (last and lower_order_final and n < 15):
                    continue
                W1t = _second_order_weight(process, desc, lam, k, Rs[k], Fh[k], variable)
                X0[k] = X0[k] + W1t @ Mt[k]
                X1[k] = -W1t @ Mt[k]
                G[k] = G[k] + W1t @ St[k]
                # x0_{k-1} = M_p^{-1}(x_{k-1} + Sigma_p score_{k-1}), M_t M_p^{-1} = Mh[k-1]^{-1}
                F1[k] = -W1t @ Fh[k - 1]
                G1[k] = F1[k] @ S[k - 1]
                # score form of x: x F^T with F = Phi + X0 M_t^{-1}
                F[k] = F[k] + W1t
    cast = dict(dtype=dtype, device=device)

    def out(a):
        return None if a is None else torch.as_tensor(np.array(a), **cast)  # a fresh copy: no negative strides

    return Coefficients(
        method=method, times=desc, h=h, stochastic=method in STOCHASTIC,
        stages=2 if method == "heun" else 1,
        X=out(X), X0=out(X0), X1=out(X1), F=out(F), G=out(G), F1=out(F1), G1=out(G1),
        C=out(C), M=out(M), Sinv=out(Sinv), A=out(process.A), XP=out(XP), c=out(cvec),
        prior=prior)


def _T(a):
    return np.swapaxes(a, -1, -2)


def _right_solve(B, A):
    """``B A^{-1}`` for stacks (solve ``A^T Y^T = B^T``)."""
    return _T(np.linalg.solve(_T(A), _T(B)))


def _log_snr(process: OUProcess, desc, M, S) -> np.ndarray:
    """``lambda_t = 1/2 log(tr(U M U^{-1} M^T) / tr(U Sigma))`` on the grid (inf at 0)."""
    U, Ui = process.U, process.stationary_cov
    lam = np.empty(desc.size)
    for j, t in enumerate(desc):
        num = np.trace(U @ M[j] @ Ui @ M[j].T)
        den = np.trace(U @ S[j])
        lam[j] = math.inf if t <= 0 else 0.5 * (math.log(num) - math.log(den))
    return lam


def _variable_at(process, tau, Mj, Sj, variable) -> tuple[np.ndarray, np.ndarray]:
    """The extrapolation variable at times ``tau`` (``Mj``, ``Sj``: their kernel) and
    its rate of decrease ``-dvariable/dtau``: for ``"lambda"`` (the log SNR of
    :func:`_log_snr`) in closed form, ``-lambda' = tr(U^2 Y) (1/tr(U Y) + 1/tr(U Sigma))``
    with ``Y = M U^{-1} M^T``."""
    if variable == "logt":
        return -np.log(tau), 1.0 / tau
    if variable == "t":
        return -tau, np.ones_like(tau)
    U = process.U
    Y = Mj @ process.stationary_cov @ _T(Mj)
    num = np.einsum("ij,nji->n", U, Y)
    den = np.einsum("ij,nji->n", U, Sj)
    g = np.einsum("ij,nji->n", U @ U, Y)
    return 0.5 * (np.log(num) - np.log(den)), g * (1.0 / num + 1.0 / den)


def _gauss_legendre(edges) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the six-point Gauss-Legendre rule on each panel
    ``[edges[i], edges[i+1]]``, all panels concatenated."""
    a, b = np.asarray(edges[:-1])[:, None], np.asarray(edges[1:])[:, None]
    return ((0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)).ravel(),
            (0.5 * (b - a) * _GL_WEIGHTS).ravel())


def _second_order_weight(process, desc, lam, k, Rs, Mh_inv, variable="lambda") -> np.ndarray:
    """``W_1 M_t^{-1}`` of step ``k`` (``t = desc[k]``, ``s = desc[k+1]``, previous time
    ``p = desc[k-1]``):

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
    A = process.A
    span = math.log(t) - math.log(s)
    coarse = np.linspace(math.log(s), math.log(t), max(1, int(math.ceil(span / 0.5))) + 1)
    stiff = 1.0 / np.linalg.eigvalsh(_exact_pairs(A, np.exp(coarse[:-1]))[1])[:, 0]
    pieces = np.maximum(1, np.ceil(np.diff(coarse) * np.exp(coarse[1:]) * stiff)).astype(int)
    edges = np.concatenate([np.linspace(a, b, m + 1)[:-1] for a, b, m in
                            zip(coarse[:-1], coarse[1:], pieces)] + [coarse[-1:]])
    u, w = _gauss_legendre(edges)
    tau = np.exp(u)
    R = process.gddim_factor(tau)
    Mj, Sj = _exact_pairs(A, tau)
    Mback = np.linalg.inv(_exact_pairs(A, t - tau)[0])  # M_tau M_t^{-1}
    Et = np.linalg.solve(R, Mback)
    dlam = _variable_at(process, tau, Mj, Sj, variable)[1]  # -lambda'(tau)
    total = np.einsum("n,nij->ij", w * dlam * tau, Et)
    return (Mh_inv * (lam[k + 1] - lam[k]) - Rs @ total) / (lam[k] - lam[k - 1])


def as_prior(prior, d: int):
    """Validate ``prior = (mean, cov)``: a (d,) vector and a symmetric PSD (d, d)
    matrix; returns them as float64 numpy arrays, or raises ValueError naming it."""
    if isinstance(prior, (str, bytes)) or not hasattr(prior, "__len__") or len(prior) != 2:
        raise ValueError("prior must be a pair (mean, cov) of a (d,) vector and a (d, d) "
                         f"covariance, got {type(prior).__name__}")
    mean, cov = prior
    if torch.is_tensor(mean):
        mean = mean.detach().cpu().double().numpy()
    if torch.is_tensor(cov):
        cov = cov.detach().cpu().double().numpy()
    return (as_vector("prior mean (prior[0])", mean, d),
            as_psd("prior cov (prior[1])", cov, dim=d))


def _variable(process, desc, M, S, variable) -> np.ndarray:
    """The extrapolation variable of dpmpp_2m on the grid (see :func:`coefficients`)."""
    if variable == "logt":
        return -np.log(np.where(desc > 0, desc, np.nan))
    if variable == "t":
        return -np.asarray(desc, dtype=np.float64)
    return _log_snr(process, desc, M, S)


def _prior_panels(s: float, t: float, omega: float) -> np.ndarray:
    """Panel edges in ``log tau`` on ``[s, t]``, equally spaced in
    ``v = log(tau) / 0.25 + tau omega / 0.5``: at most 0.25 in ``log tau`` and 0.5 rad
    of the frame's rotation (``omega`` its rate bound) each."""
    f = np.linspace(math.log(s), math.log(t), 2001)
    v = f / 0.25 + np.exp(f) * omega / 0.5
    npan = max(1, int(math.ceil(v[-1] - v[0])))
    return np.interp(np.linspace(v[0], v[-1], npan + 1), v, f)


def _prior_coefficients(process, desc, M, S, prior, lam, variable, second, lower_order_final):
    """The step matrices of gddim / dpmpp_2m with the Gaussian prior ``N(m, C)``
    integrated exactly (module docstring). Returns ``X, X0, X1, XP, c`` (``X1``,
    ``XP`` None when ``second`` is false)."""
    m, Cp = prior
    A = process.A
    n, d = desc.size - 1, process.dim
    T = _T
    Gd = sym(M @ Cp @ T(M) + S)
    rot = process._start_rotations(float(desc[-1]), Gd[-1])

    def frame(ts, G):
        return np.linalg.cholesky(G) @ process._rotations(ts, rot)

    Rg = frame(desc, Gd)
    B = T(np.linalg.solve(Gd, M @ Cp))  # C M^T G^{-1}: D_G(x) = m + B (x - M m)
    Mt, Ms, Rt, Rs = M[:-1], M[1:], Rg[:-1], Rg[1:]
    Phi = _right_solve(Rs, Rt)  # R_G(s) R_G(t)^{-1}
    W0 = np.empty((n, d, d))
    W1 = np.zeros((n, d, d))
    omega = process.rotation_rate_bound()
    for k in range(n):
        t, s = float(desc[k]), float(desc[k + 1])
        u, wt = _gauss_legendre(_prior_panels(s, t, omega))
        tau = np.exp(u)
        wt = wt * tau  # dtau = tau du
        Mj, Sj = _exact_pairs(A, tau)
        G = sym(Mj @ Cp @ T(Mj) + Sj)
        R = frame(tau, G)
        # K = R_G^{-1} Sigma^{-1} M C M^T G^{-1} M: the part of R_G^{-1} Sigma^{-1} M that
        # is not the derivative -d/dtau (R_G^{-1} M)
        K = np.linalg.solve(R, np.linalg.solve(Sj, Mj @ Cp @ T(Mj) @ np.linalg.solve(G, Mj)))
        W0[k] = Ms[k] - Phi[k] @ Mt[k] + Rs[k] @ np.einsum("n,nij->ij", wt, K)
        if not second or k == 0 or (k == n - 1 and lower_order_final and n < 15):
            continue
        lam_tau, rate = _variable_at(process, tau, Mj, Sj, variable)
        span = lam[k] - lam[k - 1]
        phi, dphi = (lam_tau - lam[k]) / span, -rate / span
        RinvM = np.linalg.solve(R, Mj)
        W1[k] = Ms[k] * ((lam[k + 1] - lam[k]) / span) + Rs[k] @ (
            np.einsum("n,nij->ij", wt * dphi, RinvM) + np.einsum("n,nij->ij", wt * phi, K))
    V = W0 + W1
    Bt, Bp = B[:-1], np.concatenate([np.zeros((1, d, d)), B[:-2]])
    X = Phi - V @ Bt
    Mm = M @ m  # M_t m on the grid
    r = np.einsum("nij,nj->ni", B, Mm) - m  # B_t M_t m - m: e_t = x0 - B_t x + r_t
    c = Mm[1:] - np.einsum("nij,nj->ni", Phi, Mm[:-1]) + np.einsum("nij,nj->ni", V, r[:-1])
    c[1:] -= np.einsum("nij,nj->ni", W1[1:], r[:-2])
    if not second:
        return X, V, None, None, c
    return X, V, -W1, W1 @ Bp, c


def explicit_growth(process: OUProcess, desc, method: str, Sinv=None,
                    stiffness=None, linearisations=("score", "stationary", "drift")) -> float:
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
    largest of the three.
    """
    import scipy.linalg

    n = desc.size - 1
    d = process.dim
    A = process.A
    eye = np.eye(d)
    if stiffness is not None:
        Sinv = np.stack([np.asarray(stiffness(float(t)), dtype=np.float64) if t > 0
                         else np.zeros((d, d)) for t in desc])
    elif Sinv is None:
        S = process.cov(desc[desc > 0])
        Sinv = np.zeros((desc.size, d, d))
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
                Jt = Js = process.U
            else:
                Jt = Js = np.zeros((d, d))
            if method == "euler_maruyama":
                step = eye + h * (A - c * Jt)
            else:
                Kt, Ks = A - Jt, A - Js
                step = eye + 0.5 * h * (Kt + Ks @ (eye + h * Kt))
            exact = scipy.linalg.expm(h * (A - 0.5 * c * (Jt + Js)))
            rho = float(np.abs(np.linalg.eigvals(step)).max())
            rho_exact = float(np.abs(np.linalg.eigvals(exact)).max())
            # only expansion counts: a step that contracts less than the exact flow is
            # inaccurate, not unstable
            log_growth += max(0.0, math.log(max(rho, 1e-300))
                              - max(0.0, math.log(max(rho_exact, 1e-300))))
        worst = max(worst, math.exp(log_growth))
    return worst


# ---------------------------------------------------------------------------- conversions
def to_score(coef: Coefficients, k: int, x: torch.Tensor, x0_hat: torch.Tensor,
             stage: int = 0) -> torch.Tensor:
    """``score = -Sigma_t^{-1} (x - M_t x0_hat)`` at ``t = coef.eval_time(k, stage)``."""
    j = k + stage
    return -(x - x0_hat @ coef.M[j].T) @ coef.Sinv[j].T


# ---------------------------------------------------------------------------- the step
def step(coef: Coefficients, k: int, x: torch.Tensor, x0_hat: torch.Tensor | None = None, *,
         score: torch.Tensor | None = None, noise: torch.Tensor | None = None, state=None,
         affine: bool = True):
    """Step ``k`` of ``coef.method`` (from ``coef.times[k]`` to ``coef.times[k+1]``).

    ``x``: (B, d) state; the model output at ``(x, coef.eval_time(k, stage))``, either
    ``x0_hat`` (data prediction) or ``score``; ``noise``: (B, d) standard normal for
    the stochastic methods (None otherwise); ``state``: what the previous call
    returned (None at the start). ``affine=False`` drops the constant term of a step
    with a prior (``coef.c``), i.e. propagates differences of states (as
    :func:`nonrev.samplers.gaussian_error` does for its square-root rows). Returns
    ``(x_new, state)``.
    """
    if (x0_hat is None) == (score is None):
        raise ValueError("pass exactly one of x0_hat and score")
    if coef.prior is not None and score is not None:
        raise ValueError("prior: coefficients with a Gaussian prior take the data "
                         "prediction x0_hat, not score=")
    m = coef.method
    if m == "euler_maruyama":
        if score is None:
            score = to_score(coef, k, x, x0_hat)
        hk = float(coef.h[k])
        return x + hk * (x @ coef.A.T + 2.0 * score) + (2.0 * hk) ** 0.5 * noise, None
    if m == "heun":
        stage = 0 if state is None else 1
        if score is None:
            score = to_score(coef, k, x, x0_hat, stage)
        hk = float(coef.h[k])
        if stage == 0:
            k1 = x @ coef.A.T + score
            return x + hk * k1, (x, k1)
        x_start, k1 = state
        k2 = x @ coef.A.T + score
        return x_start + 0.5 * hk * (k1 + k2), None
    kind = "x0" if score is None else "score"
    if x0_hat is not None:
        out = x @ coef.X[k].T + x0_hat @ coef.X0[k].T
    else:
        out = x @ coef.F[k].T + score @ coef.G[k].T
    new_state = None
    if m == "dpmpp_2m":
        if state is not None and k > 0:
            if state[0] != kind:
                raise ValueError("dpmpp_2m: use one kind of model output (x0_hat or score) "
                                 "for a whole run")
            if kind == "x0":
                out = out + state[1] @ coef.X1[k].T
                if coef.XP is not None:
                    out = out + state[2] @ coef.XP[k].T
            else:
                out = out + state[1] @ coef.F1[k].T + state[2] @ coef.G1[k].T
        new_state = (("x0", x0_hat) if coef.XP is None else ("x0", x0_hat, x)) \
            if kind == "x0" else ("score", x, score)
    if coef.c is not None and affine:
        out = out + coef.c[k]
    if coef.C is not None:
        out = out + noise @ coef.C[k].T
    return out, new_state
