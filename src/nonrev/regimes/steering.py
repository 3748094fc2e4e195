"""Steering the regimes: choose the current ``Q`` for a goal on ``t_S`` and ``t_C``.

For a fixed noise precision ``U`` and fixed data covariances, :func:`steer_q` picks the
antisymmetric ``Q`` of ``A = (I + Q) U`` (docs/THEORY.md sections 3 and 4) that

* ``speciation_early``: maximises ``t_S``, so the backward run commits to a class
  sooner (at a larger forward time);
* ``speciation_late``: minimises ``t_S``;
* ``window``: maximises ``t_S - t_C``, the stretch of the backward run between
  commitment to a class and collapse onto the training points (needs ``data_cov``
  and ``n_train``);
* ``target_speciation``: brings ``t_S`` to ``target`` (minimises ``(t_S - target)^2``),
* ``rate``: maximises the relaxation rate ``min Re spec((I + Q) U)`` within the budget:
  the least stiff current for a given speed-up, e.g. for learned models that a
  stiff drift hurts. It ascends a soft minimum of the real parts (temperature
  ``2e-3 Tr(U)/d``), since the plain minimum is not differentiable where the best
  currents put it; ``value`` and ``rate`` report the true minimum.

subject to ``||Q||_2 <= q_norm_max`` (a stiffness budget) and
``rate(Q) = min Re spec((I + Q) U) >= min_rate``.

**Both criteria are monotone in t.** With ``B_t = M_t C_b M_t^T``,
``Gamma_t = M_t C_w M_t^T + Sigma_t`` and the top generalised eigenpair
``B_t v = r Gamma_t v`` (``v^T Gamma_t v = 1``), the envelope theorem with
``dM/dt = -A M`` and ``dSigma/dt = 2I - A Sigma - Sigma A^T`` gives

    dr/dt = v^T B' v - r v^T Gamma' v = -2 r |v|^2 < 0

(the terms in ``A`` cancel because ``B v = r Gamma v``): the class signal-to-noise
ratio only decreases, as it must for a noisier linear image of ``x_t``. So ``t_S``
is the unique root of ``log r(t) = 0``. For collapse
``g'(t) = tr G_t^{-1} - tr Sigma_t^{-1} < 0`` (:mod:`nonrev.regimes.theory`), with
``G_t = M_t C M_t^T + Sigma_t``, and ``t_C`` is the unique root of
``log g(t) = log log N``. Roots are found in ``x = log t`` by safeguarded Newton
steps with these exact derivatives (:func:`nonrev.regimes.criteria.solve_decreasing`,
the one root finder of the package, on the criteria of :mod:`nonrev.regimes.criteria`),
started from the first-order prediction of the root at the new ``Q``: two to four
O(d^3) evaluations per new ``Q``.

**Gradients by implicit differentiation at the root.** ``F(t, Q) = log r`` vanishes
at ``t_S``, so ``dt_S/dQ = -(dF/dQ) / (dF/dt)`` with ``dF/dt = -2 |v|^2``. At fixed
``t`` the envelope theorem and the identity ``Sigma_t = U^{-1} - M_t U^{-1} M_t^T``
(true for every antisymmetric ``Q``; used here for its derivative only, never for
its value, which cancels at small t) give

    dr = 2 v^T dM_t K M_t^T v,     K = C_b - r C_w + r U^{-1},

i.e. ``dr/dM_t = G_M = 2 v (K M_t^T v)^T``. For collapse,
``g = (1/2) (log det G_t - log det Sigma_t)`` gives
``dg/dM_t = G_t^{-1} M_t (C - U^{-1}) + Sigma_t^{-1} M_t U^{-1}``. The chain rule
through ``M_t = exp(-t A)`` uses the adjoint of the Frechet derivative of the
exponential, which is the Frechet derivative at the transpose:
``G_A = -t L_exp(-t A^T, G_M)`` (``scipy.linalg.expm_frechet``), then ``dA = dQ U``
gives ``G_Q = G_A U``, and for the strict upper triangle ``theta`` of
``Q = T - T^T``: ``d/d theta_ij = G_Q[i, j] - G_Q[j, i]``. This is the exact
gradient at every ``Q`` (to the root's tolerance), not only at the optimum, for
one Frechet derivative per accepted point and no autograd graph: the whole
computation stays in float64 numpy with the rest of the theory.
:func:`criteria_gradient` exposes it (checked against finite differences in the
tests). It is a gradient where the top eigenvalue of ``(B_t, Gamma_t)`` is simple
(always for two classes, where ``C_b`` has rank one); otherwise a subgradient.

**Optimiser.** Spectral projected gradient (SPG: Barzilai-Borwein steps, Armijo
backtracking along the projected direction; Birgin, Martinez & Raydan 2000) in
``theta``. The norm ball is handled by its exact Euclidean projection: the singular
values of ``Q`` clipped at ``q_norm_max`` (``Q f(-Q^2)`` is still antisymmetric).
The rate constraint by a log barrier ``mu log(rate - min_rate)`` added to the
objective, with ``d rate / dA`` from the left and right eigenvectors of the slowest
eigenvalue; trial points with ``rate <= min_rate`` are rejected. Two passes,
``mu`` = 1e-2 then 1e-4 times the reversible ``t_S``: the second moves the optimum
off the constraint by a relative amount of order 1e-4.
Starts: ``Q = 0``, the optimal current (:func:`nonrev.optimal_q`) scaled onto the
ball, ``n_random`` random currents (seeded by ``generator``) and ``init``; a start
that violates the rate constraint is moved toward the feasible scaled optimal
current until it satisfies it. Each start returns the best point it visited (the
line search is nonmonotone), so the result is never worse than the best start
(the scaled optimal current among them; with ``min_rate``, up to the barrier term). ``Q = 0`` is a
stationary point when the
class direction is an eigenvector of ``U`` (the gradient vanishes by symmetry),
which is one reason for the restarts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from nonrev.linalg import as_antisymmetric, as_count, as_positive_float, as_psd, as_spd, spd_inverse
from nonrev.process.currents import (
    RATE_TEMPERATURE,
    current_summary,
    optimal_q,
    random_q,
    soft_min_rate,
)
from nonrev.process.currents import project_q_norm as _project_ball
from nonrev.process.ou import OUProcess
from nonrev.regimes import criteria
from nonrev.regimes.theory import collapse_time, speciation_time

__all__ = ["OBJECTIVES", "criteria_gradient", "steer_q"]

#: The objectives of :func:`steer_q` and what each one does.
OBJECTIVES = {
    "speciation_early": "maximise t_S",
    "speciation_late": "minimise t_S",
    "window": "maximise t_S - t_C",
    "target_speciation": "minimise |t_S - target|",
    "rate": "maximise the relaxation rate min Re spec((I+Q)U) within the budget",
}


_ARMIJO = 1e-4
_MAX_HALVINGS = 15
_MEMORY = 5  # nonmonotone line search and stopping window
_STATIONARY = 1e-9  # |grad| below this * |phi| / scale: a stationary start


# ----------------------------------------------------------------------------- parameters
def _theta_index(d: int):
    return np.triu_indices(d, k=1)


def q_from_theta(theta: np.ndarray, d: int) -> np.ndarray:
    """``Q = T - T^T`` with ``T`` the strictly upper triangular matrix holding ``theta``."""
    T = np.zeros((d, d))
    T[_theta_index(d)] = theta
    return T - T.T


def theta_from_q(Q: np.ndarray) -> np.ndarray:
    """The strict upper triangle of an antisymmetric ``Q``, row by row."""
    return Q[_theta_index(Q.shape[0])].copy()


def _q_norm(Q: np.ndarray) -> float:
    """Spectral norm of an antisymmetric ``Q``: ``sqrt(lambda_max(-Q^2))``."""
    if not np.any(Q):
        return 0.0
    return float(math.sqrt(max(np.linalg.eigvalsh(-Q @ Q)[-1], 0.0)))


# ----------------------------------------------------------------------------- criteria
@dataclass
class _Problem:
    """The fixed data of a steering problem; evaluates criteria for a given ``Q``."""

    U: np.ndarray
    Cb: np.ndarray
    Cw: np.ndarray
    C: np.ndarray | None
    n_train: int | None
    U_inv: np.ndarray = field(init=False)
    kernels: int = 0  # (M_t, Sigma_t) pairs computed
    frechets: int = 0  # Frechet derivatives computed

    def __post_init__(self):
        self.U_inv = spd_inverse(self.U)
        self.log_n = None if self.n_train is None else math.log(self.n_train)

    def _pair(self, proc: OUProcess, t: float):
        self.kernels += 1
        return proc.mean_and_cov(t)

    # ---- speciation: F(x) = log r(e^x)
    def speciation_at(self, proc: OUProcess, t: float):
        M, S = self._pair(proc, t)
        pt = criteria.speciation_point(M, S, self.Cb, self.Cw)
        F = criteria.log_positive(pt["r"])
        return F, -2.0 * t * pt["vv"], {"t": t, "M": M, **pt}

    def speciation_root(self, proc: OUProcess, t0: float):
        x, st = criteria.solve_decreasing(
            lambda x: self.speciation_at(proc, math.exp(x)), math.log(t0), "speciation time"
        )
        return math.exp(x), st

    def speciation_grad(self, proc: OUProcess, st: dict) -> np.ndarray:
        """``dt_S/dQ`` as a (d, d) matrix ``G_Q`` (``dt_S = <G_Q, dQ>``; not antisymmetrised)."""
        t, M, r, v = st["t"], st["M"], st["r"], st["v"]
        K = self.Cb - r * self.Cw + r * self.U_inv
        G_M = 2.0 * np.outer(v, K @ (M.T @ v))
        dr_dQ = self._through_exp(proc, t, G_M)
        dr_dt = -2.0 * r * st["vv"]
        return -dr_dQ / dr_dt

    # ---- collapse: F(x) = log g(e^x) - log log N
    def collapse_at(self, proc: OUProcess, t: float):
        M, S = self._pair(proc, t)
        pt = criteria.collapse_point(M, S, self.C)
        g = max(pt["g"], 1e-300)
        F = criteria.log_positive(pt["g"]) - math.log(self.log_n)
        return F, t * pt["dg_dt"] / g, {"t": t, "M": M, **pt}

    def collapse_root(self, proc: OUProcess, t0: float):
        x, st = criteria.solve_decreasing(
            lambda x: self.collapse_at(proc, math.exp(x)), math.log(t0), "collapse time"
        )
        return math.exp(x), st

    def collapse_grad(self, proc: OUProcess, st: dict) -> np.ndarray:
        """``dt_C/dQ`` as a (d, d) matrix (not antisymmetrised)."""
        M = st["M"]
        G_M = st["G_inv"] @ M @ (self.C - self.U_inv) + st["S_inv"] @ M @ self.U_inv
        dg_dQ = self._through_exp(proc, st["t"], G_M)
        return -dg_dQ / st["dg_dt"]

    def _through_exp(self, proc: OUProcess, t: float, G_M: np.ndarray) -> np.ndarray:
        """Pull ``dphi/dM_t = G_M`` back to ``dphi/dQ`` through ``M_t = exp(-t (I+Q) U)``."""
        self.frechets += 1
        L = scipy.linalg.expm_frechet(-t * proc.A.T, G_M, compute_expm=False)
        return (-t * L) @ self.U


def _rate_and_grad(proc: OUProcess, with_grad: bool):
    """``min Re spec(A)`` and (optionally) its gradient with respect to ``Q``.

    For a simple eigenvalue ``lambda`` with right vector ``x`` and left vector ``y``
    (``y^H A = lambda y^H``), ``d lambda = y^H dA x / (y^H x)``, so
    ``d Re lambda / dA = Re(conj(y) x^T / (y^H x))`` and ``d/dQ = (d/dA) U``.
    """
    if not with_grad:
        return float(np.linalg.eigvals(proc.A).real.min()), None
    w, vl, vr = scipy.linalg.eig(proc.A, left=True, right=True)
    k = int(np.argmin(w.real))
    x, y = vr[:, k], vl[:, k]
    G_A = np.real(np.outer(y.conj(), x) / np.vdot(y, x))
    return float(w[k].real), G_A @ proc.U


def _soft_min_rate(proc: OUProcess, tau: float):
    """:func:`nonrev.process.currents.soft_min_rate` of the process's current."""
    return soft_min_rate(proc.U, proc.Q, tau)


def criteria_gradient(U, Q, between_cov, within_cov=None, data_cov=None, n_train=None) -> dict:
    """Predicted ``t_S`` (and ``t_C``) at ``Q`` with their exact gradients in ``Q``.

    Returns ``t_speciation`` and ``grad_speciation`` (an antisymmetric (d, d) matrix
    ``D`` with ``t_S(Q + E) = t_S(Q) + <D, E> + O(|E|^2)`` for antisymmetric ``E``,
    ``<D, E> = sum_ij D_ij E_ij``), and with ``data_cov`` and ``n_train``
    ``t_collapse`` and ``grad_collapse`` alike. See the module docstring for the
    math (implicit differentiation at the root, adjoint Frechet derivative).
    """
    prob, proc = _problem(U, between_cov, within_cov, data_cov, n_train, Q)
    out = {}
    t_s, st = prob.speciation_root(proc, speciation_time(proc, prob.Cb, prob.Cw))
    G = prob.speciation_grad(proc, st)
    out["t_speciation"], out["grad_speciation"] = t_s, 0.5 * (G - G.T)
    if prob.C is not None:
        t_c, sc = prob.collapse_root(proc, collapse_time(proc, prob.C, prob.n_train))
        G = prob.collapse_grad(proc, sc)
        out["t_collapse"], out["grad_collapse"] = t_c, 0.5 * (G - G.T)
    return out


def _problem(U, between_cov, within_cov, data_cov, n_train, Q=None):
    U = as_spd("U", U)
    d = U.shape[0]
    Cb = as_psd("between_cov", between_cov, dim=d)
    Cw = np.zeros((d, d)) if within_cov is None else as_psd("within_cov", within_cov, dim=d)
    if not np.any(Cb):
        raise ValueError(
            "between_cov must not be zero: without a class separation there "
            "is no speciation to steer"
        )
    if (data_cov is None) != (n_train is None):
        raise ValueError("data_cov and n_train go together: give both (for t_C) or neither")
    C, n = None, None
    if data_cov is not None:
        C = as_psd("data_cov", data_cov, dim=d)
        n = as_count("n_train", n_train, minimum=2)
        if not np.any(C):
            raise ValueError("data_cov must not be zero")
    proc = OUProcess(U, None if Q is None else as_antisymmetric("Q", Q, dim=d))
    return _Problem(U, Cb, Cw, C, n), proc


# ----------------------------------------------------------------------------- points
@dataclass
class _Point:
    """One evaluated current: its times, rate, objective and barrier-augmented value."""

    theta: np.ndarray
    proc: OUProcess
    t_s: float
    st_s: dict
    t_c: float | None
    st_c: dict | None
    rate: float
    value: float  # the objective in its natural units (see OBJECTIVES)
    phi: float  # maximised: sign * objective + barrier
    dts: np.ndarray | None = None  # d t_S / d theta, once the gradient is computed
    dtc: np.ndarray | None = None  # d t_C / d theta (window only)


class _Steerer:
    def __init__(self, prob: _Problem, objective: str, target, min_rate, mu):
        self.prob, self.objective, self.target = prob, objective, target
        self.min_rate, self.mu = min_rate, mu
        self.d = prob.U.shape[0]
        self.needs_collapse = objective == "window"
        self.tau = RATE_TEMPERATURE * float(np.trace(prob.U)) / self.d

    def value_and_score(self, t_s, t_c, proc: OUProcess):
        """(objective value in natural units, the quantity to maximise)."""
        if self.objective == "rate":
            return _rate_and_grad(proc, False)[0], _soft_min_rate(proc, self.tau)[0]
        if self.objective == "speciation_early":
            return t_s, t_s
        if self.objective == "speciation_late":
            return t_s, -t_s
        if self.objective == "window":
            return t_s - t_c, t_s - t_c
        err = t_s - self.target
        return abs(err), -err * err / self.target

    def evaluate(self, theta, warm: _Point | None, t_s0=None, t_c0=None) -> _Point | None:
        """The point at ``theta``; None if it violates the rate constraint."""
        proc = OUProcess(self.prob.U, q_from_theta(theta, self.d))
        rate = None
        if self.min_rate is not None:
            rate, _ = _rate_and_grad(proc, False)
            if not rate > self.min_rate:
                return None
        if warm is not None:  # first-order predictions start the root searches
            t_s0 = _predict(warm.t_s, warm.dts, theta - warm.theta)
            t_c0 = _predict(warm.t_c, warm.dtc, theta - warm.theta)
        t_s, st_s = self.prob.speciation_root(proc, t_s0)
        t_c = st_c = None
        if self.needs_collapse:
            t_c, st_c = self.prob.collapse_root(proc, t_c0)
        value, score = self.value_and_score(t_s, t_c, proc)
        phi = score
        if self.min_rate is not None:
            phi += self.mu * math.log(rate - self.min_rate)
        return _Point(theta, proc, t_s, st_s, t_c, st_c, rate, value, phi)

    def gradient(self, p: _Point) -> np.ndarray:
        """``d phi / d theta`` at ``p`` (also stores ``p.dts`` and ``p.dtc``)."""
        iu = _theta_index(self.d)

        def to_theta(G):
            return G[iu] - G.T[iu]

        p.dts = to_theta(self.prob.speciation_grad(p.proc, p.st_s))
        if self.objective == "speciation_early":
            g = p.dts
        elif self.objective == "speciation_late":
            g = -p.dts
        elif self.objective == "window":
            p.dtc = to_theta(self.prob.collapse_grad(p.proc, p.st_c))
            g = p.dts - p.dtc
        elif self.objective == "rate":
            g = to_theta(_soft_min_rate(p.proc, self.tau)[1])
        else:
            g = (-2.0 * (p.t_s - self.target) / self.target) * p.dts
        if self.min_rate is not None:
            _, G_rate = _rate_and_grad(p.proc, True)
            g = g + (self.mu / (p.rate - self.min_rate)) * to_theta(G_rate)
        return g

    def spg(self, start: _Point, radius, scale: float, max_iter: int, tol: float):
        """Spectral projected gradient ascent of ``phi`` from ``start``.

        Nonmonotone Armijo search (Grippo-Lampariello-Lucidi: sufficient increase over
        the smallest of the last ``_MEMORY`` values) along ``P(x + alpha g) - x``,
        ``alpha`` the Barzilai-Borwein step. ``scale`` (a norm of ``theta``) sets the
        first step. Stops when the best value has gained less than ``tol`` (relative)
        over ``_MEMORY`` iterations. Returns ``(best point, trace of the objective
        at accepted points, iterations)``.
        """
        x, g = start, self.gradient(start)
        best = x
        trace = [x.value]
        recent = [x.phi]
        gnorm = float(np.linalg.norm(g))
        if gnorm <= _STATIONARY * max(abs(x.phi), 1e-300) / scale:
            return x, trace, 0  # a stationary start (e.g. Q = 0 by symmetry) stays put
        step_max = 2.0 * scale  # longer steps only cross the feasible ball
        alpha = 0.1 * scale / gnorm
        alpha_min = 1e-10 * alpha
        it = 0
        best_at = [best.phi]
        for it in range(1, max_iter + 1):  # noqa: B007  (it is returned: iterations used)
            gnorm = float(np.linalg.norm(g))
            if gnorm == 0.0:
                break
            alpha = min(alpha, step_max / gnorm)
            target = theta_from_q(_project_ball(q_from_theta(x.theta + alpha * g, self.d), radius))
            step = target - x.theta
            slope = float(g @ step)
            if not slope > 0:
                break  # the projected gradient vanishes: stationary on the feasible set
            ref = min(recent[-_MEMORY:])
            lam, trial = 1.0, None
            for _ in range(_MAX_HALVINGS):
                trial = self.evaluate(x.theta + lam * step, warm=x)
                if trial is not None and trial.phi >= ref + _ARMIJO * lam * slope:
                    break
                trial = None
                lam *= 0.5
            if trial is None:
                break
            g_new = self.gradient(trial)
            s, y = trial.theta - x.theta, g_new - g
            sy = float(s @ y)
            alpha = max(alpha_min, float(s @ s) / -sy) if sy < 0 else np.inf  # capped above
            x, g = trial, g_new
            trace.append(x.value)
            recent.append(x.phi)
            if x.phi > best.phi:
                best = x
            best_at.append(best.phi)
            if len(best_at) > _MEMORY and best_at[-1] - best_at[-1 - _MEMORY] <= tol * max(
                abs(best_at[-1]), 1e-12
            ):
                break
        return best, trace, it


def _predict(t: float | None, grad: np.ndarray | None, dtheta: np.ndarray) -> float | None:
    """First-order prediction of a root time after the step ``dtheta`` (kept within a
    factor e of ``t``): the start of the next Newton search."""
    if t is None or grad is None:
        return t
    return t * math.exp(max(-1.0, min(1.0, float(grad @ dtheta) / t)))


# ----------------------------------------------------------------------------- entry point
def steer_q(
    U,
    between_cov,
    within_cov=None,
    *,
    objective: str = "speciation_early",
    target: float | None = None,
    q_norm_max: float | None = None,
    min_rate: float | None = None,
    data_cov=None,
    n_train: int | None = None,
    init=None,
    generator=None,
    n_random: int = 2,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """Choose the antisymmetric current ``Q`` for a goal on the regimes.

    Parameters
    ----------
    U : (d, d) SPD noise precision. (With ``U = cI`` no current moves anything.)
    between_cov, within_cov : class covariances ``C_b`` and ``C_w`` of the speciation
        criterion (:func:`nonrev.regimes.speciation_time`); ``within_cov=None`` is 0.
    objective : one of :data:`OBJECTIVES` (see the module docstring).
    target : the wanted ``t_S`` (``objective='target_speciation'`` only).
    q_norm_max : stiffness budget ``||Q||_2 <= q_norm_max``; None: no budget.
    min_rate : require ``min Re spec((I+Q)U) >= min_rate``. It must lie below
        ``Tr(U)/d``, the best any current reaches (at ``Tr(U)/d`` itself only the
        optimal currents remain, a set without interior). Values at or below
        ``lambda_min(U)`` constrain nothing: every current is at least that fast.
    data_cov, n_train : covariance and size of the training set of the collapse
        criterion (:func:`nonrev.regimes.collapse_time`); needed by ``window``,
        otherwise only reported.
    init : an extra antisymmetric starting current (projected onto the budget).
    generator : numpy Generator or int seed of the random starts.
    n_random : number of random starts. max_iter : iterations per start.
    tol : a start stops when its best value gains less than ``tol`` (relative) over
        five iterations.

    Returns
    -------
    Q : (d, d) antisymmetric, within the constraints.
    info : dict with ``objective``, ``target``, ``value`` (the objective in natural
        units: ``t_S``, ``t_S - t_C`` or ``|t_S - target|``), ``t_speciation``,
        ``t_collapse`` (None without ``data_cov``), ``rate``, ``q_norm``, ``bound``
        (``Tr(U)/d``), ``rate_reversible`` (``lambda_min(U)``), ``q_norm_max``,
        ``min_rate`` (None when it constrains nothing), ``start`` (the winning
        start), ``trace`` (the winner's objective at each accepted iterate),
        ``starts`` (per start: ``name``, ``value_start``, ``value``,
        ``iterations``, ``trace``), ``references`` (``zero`` and ``optimal``, the
        optimal current scaled onto the budget by ``optimal_gamma``: their
        ``t_speciation``, ``t_collapse``, ``rate``, ``q_norm``, ``value`` and
        ``feasible``), ``kernel_evaluations`` and ``gradient_evaluations`` (the
        O(d^3) work of the search) and ``runtime_s``. All times are recomputed at
        the end by :mod:`nonrev.regimes.theory`.

    Raises ValueError before any optimisation for bad inputs and for requests that
    are infeasible or empty: an unknown objective, a negative budget, ``min_rate``
    at or above ``Tr(U)/d``, a ``min_rate`` that no scaled optimal current within
    the budget reaches, classes that never speciate (``t_S = 0`` for every ``Q``),
    ``window`` without ``data_cov`` and ``n_train``, ``target`` missing or given to
    another objective.
    """
    t_start = time.perf_counter()
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
    prob, proc0 = _problem(U, between_cov, within_cov, data_cov, n_train)
    U, d = prob.U, prob.U.shape[0]
    if objective == "target_speciation":
        if target is None:
            raise ValueError("objective 'target_speciation' needs target (the wanted t_S)")
        target = as_positive_float("target", target)
    elif target is not None:
        raise ValueError(f"target applies to objective 'target_speciation' only, not {objective!r}")
    if objective == "window" and prob.C is None:
        raise ValueError("objective 'window' needs data_cov and n_train (for t_C)")
    if objective == "rate" and min_rate is not None:
        raise ValueError("min_rate does not apply to objective 'rate', which maximises the rate")
    radius = None
    if q_norm_max is not None:
        radius = _finite("q_norm_max", q_norm_max)
        if radius < 0:
            raise ValueError(f"q_norm_max must be >= 0 (a norm budget), got {q_norm_max!r}")
    figures0 = current_summary(U, None, transient=False)
    bound, lam_min = figures0["bound"], figures0["rate_reversible"]
    if min_rate is not None:
        min_rate = _finite("min_rate", min_rate)
        if min_rate >= bound * (1.0 - 1e-9):
            raise ValueError(
                f"min_rate = {min_rate:.6g} is not below Tr(U)/d = {bound:.6g}, the largest "
                "relaxation rate any current reaches (at Tr(U)/d only the optimal currents "
                "remain); ask for less, e.g. 0.9 * Tr(U)/d"
            )
        if min_rate <= lam_min:
            min_rate = None  # every current relaxes at least at lambda_min(U)
    n_random = as_count("n_random", n_random, minimum=0)
    max_iter = as_count("max_iter", max_iter, minimum=0)
    tol = as_positive_float("tol", tol)
    init_q = None if init is None else as_antisymmetric("init", init, dim=d)
    rng = np.random.default_rng(generator)

    # The optimal current scaled onto the budget: a reference, a start, and (with
    # min_rate) the feasible anchor that infeasible starts are moved toward.
    Q_opt = optimal_q(U)
    n_opt = _q_norm(Q_opt)
    gamma_b = 1.0 if radius is None or n_opt <= radius else radius / n_opt
    anchor = _rate_anchor(U, Q_opt, gamma_b, min_rate, radius, bound)
    t_s_zero = speciation_time(proc0, prob.Cb, prob.Cw)
    if t_s_zero == 0.0:
        raise ValueError(
            "the classes never speciate (the speciation ratio "
            "lambda_max(C_b, C_w) <= 1 at every t, for every Q): nothing to steer"
        )
    t_c_zero = None
    if prob.C is not None:
        t_c_zero = collapse_time(proc0, prob.C, prob.n_train)
        if t_c_zero == 0.0:
            raise ValueError("the collapse time is 0 for Q = 0 (data_cov too small for n_train)")

    ref = radius if radius is not None else n_opt
    starts = [("zero", np.zeros((d, d))), ("optimal", gamma_b * Q_opt)]
    starts += [(f"random{k + 1}", random_q(d, 0.5 * ref, seed=rng)) for k in range(n_random)]
    if init_q is not None:
        starts.append(("init", _project_ball(init_q, radius)))
    if radius == 0.0:  # Q = 0 is the only feasible current
        starts, max_iter = starts[:1], 0
    scale = float(np.linalg.norm(theta_from_q(Q_opt))) * ref / n_opt if n_opt > 0 else 1.0
    # Barrier weights: a coarse pass, then one that moves the optimum by ~1e-4.
    mus = [1e-2 * t_s_zero, 1e-4 * t_s_zero] if min_rate is not None else [0.0]
    steer = _Steerer(prob, objective, target, min_rate, mus[0])
    results, best = [], None
    for name, Q0 in starts:
        steer.mu = mus[0]
        Q0 = _toward(Q0, anchor, U, min_rate)
        p0 = steer.evaluate(theta_from_q(Q0), None, t_s0=t_s_zero, t_c0=t_c_zero)
        p, trace, iters = p0, [p0.value], 0
        for mu in mus:
            if mu != steer.mu:
                steer.mu = mu
                p = steer.evaluate(p.theta, warm=p)
            if max_iter:
                p, tr, it = steer.spg(p, radius, scale, max_iter, tol)
                trace += tr[1:]
                iters += it
        results.append(
            {
                "name": name,
                "value_start": p0.value,
                "value": p.value,
                "iterations": iters,
                "trace": trace,
            }
        )
        if best is None or p.phi > best[1].phi:
            best = (name, p, trace)
    name, p, trace = best
    Q = q_from_theta(p.theta, d)
    if radius is not None and _q_norm(Q) > radius:  # rounding of the projection only
        Q *= radius / _q_norm(Q)

    def summary(proc: OUProcess) -> dict:
        t_s = speciation_time(proc, prob.Cb, prob.Cw)
        t_c = None if prob.C is None else collapse_time(proc, prob.C, prob.n_train)
        figures = current_summary(proc.U, proc.Q, transient=False)
        rate, q_norm = figures["rate"], figures["q_norm"]
        feasible = (radius is None or q_norm <= radius * (1 + 1e-12)) and (
            min_rate is None or rate >= min_rate
        )
        value = (
            None
            if objective == "window" and t_c is None
            else steer.value_and_score(t_s, t_c, proc)[0]
        )
        return {
            "t_speciation": t_s,
            "t_collapse": t_c,
            "rate": rate,
            "q_norm": q_norm,
            "value": value,
            "feasible": bool(feasible),
        }

    final = summary(OUProcess(U, Q))
    info = {
        "objective": objective,
        "target": target,
        "value": final["value"],
        "t_speciation": final["t_speciation"],
        "t_collapse": final["t_collapse"],
        "rate": final["rate"],
        "q_norm": final["q_norm"],
        "bound": bound,
        "rate_reversible": lam_min,
        "q_norm_max": radius,
        "min_rate": min_rate,
        "start": name,
        "trace": trace,
        "starts": results,
        "references": {"zero": summary(proc0), "optimal": summary(OUProcess(U, gamma_b * Q_opt))},
        "optimal_gamma": gamma_b,
        "kernel_evaluations": prob.kernels,
        "gradient_evaluations": prob.frechets,
        "runtime_s": time.perf_counter() - t_start,
    }
    return Q, info


def _finite(name: str, x) -> float:
    try:
        val = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not math.isfinite(val):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return val


def _rate_anchor(U, Q_opt, gamma_b, min_rate, radius, bound):
    """The scaled optimal current ``gamma Q_opt`` (``gamma`` in ``(0, gamma_b]``, on a
    grid of 8) with the largest rate, or None without a rate constraint; ValueError
    when none of them exceeds ``min_rate``."""
    if min_rate is None:
        return None
    gammas = gamma_b * np.linspace(0.0, 1.0, 9)[1:]
    rates = [OUProcess(U, g * Q_opt).relaxation_rate() for g in gammas]
    k = int(np.argmax(rates))
    if not rates[k] > min_rate:
        raise ValueError(
            f"min_rate = {min_rate:.6g} is out of reach within ||Q||_2 <= {radius:.6g}: no "
            f"scaled optimal current within that budget relaxes faster than {rates[k]:.6g} "
            f"(Tr(U)/d = {bound:.6g} needs ||Q||_2 = {_q_norm(Q_opt):.6g}); raise q_norm_max "
            "or lower min_rate"
        )
    return gammas[k] * Q_opt


def _toward(Q: np.ndarray, anchor, U, min_rate) -> np.ndarray:
    """``Q`` when it satisfies the rate constraint with a margin, else the first of
    ``(1 - s) Q + s anchor``, s = 1/8, ..., 1, that does. The anchor does, and the
    ball is convex, so every such point is within the budget."""
    if min_rate is None:
        return Q
    margin = min_rate + 0.1 * (OUProcess(U, anchor).relaxation_rate() - min_rate)
    for s in np.linspace(0.0, 1.0, 9):
        Qs = (1.0 - s) * Q + s * anchor
        if s == 1.0 or OUProcess(U, Qs).relaxation_rate() >= margin:
            return Qs
    return anchor  # pragma: no cover
