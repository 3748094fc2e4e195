"""Choices of the antisymmetric current ``Q`` in ``A = (I + Q) U``.

* :func:`optimal_q`: the Lelievre-Nier-Pavliotis construction, every eigenvalue of
  ``A`` with real part ``Tr(U)/d`` (the largest relaxation rate any ``Q`` can give);
* :func:`scaled_q`: ``gamma * Q`` (``Q(gamma) = gamma Q_opt`` interpolates between
  reversible and optimal);
* :func:`random_q`: a seeded random antisymmetric matrix of a given norm;
* :func:`current_summary`: stiffness and transient figures of a choice.
"""

from __future__ import annotations

import math

import numpy as np

from nonrev.linalg import (
    as_antisymmetric,
    as_spd,
    is_diagonal,
    smallest_eigenvalue,
    spd_sqrt,
    spectral_norm,
)


def default_lambdas(dim: int) -> np.ndarray:
    """The default free numbers of :func:`optimal_q`: geometric from 1 to ``dim``."""
    return np.geomspace(1.0, float(max(dim, 2)), dim)


def constant_diagonal_basis(U: np.ndarray) -> np.ndarray:
    """An orthogonal ``Psi`` with ``diag(Psi^T U Psi)`` constant, equal to ``Tr(U)/d``.

    At most ``d - 1`` plane (Givens) rotations: rotate the plane of the largest and
    the smallest remaining diagonal entries until the largest equals the mean, then
    leave that index alone. O(d^2) work after the first product.
    """
    U = as_spd("U", U)
    d = U.shape[0]
    W = U.copy()
    Psi = np.eye(d)
    target = np.trace(U) / d
    free = list(range(d))
    scale = max(abs(target), 1e-300)
    while len(free) > 1:
        diag = np.diag(W)[free]
        i = free[int(np.argmax(diag))]
        j = free[int(np.argmin(diag))]
        a, c, b = W[i, i], W[j, j], W[i, j]
        if a - c <= 1e-15 * scale:  # all remaining entries already equal the mean
            break
        # With G = [[cos, -sin], [sin, cos]] acting on the (i, j) plane,
        # (G^T W G)_ii = (a+c)/2 + R cos(2 theta - phi); choose it equal to target.
        R = math.hypot((a - c) / 2, b)
        phi = math.atan2(b, (a - c) / 2)
        ratio = min(1.0, max(-1.0, (target - (a + c) / 2) / R))
        theta = (math.acos(ratio) + phi) / 2
        cs, sn = math.cos(theta), math.sin(theta)
        G = np.array([[cs, -sn], [sn, cs]])
        idx = [i, j]
        W[:, idx] = W[:, idx] @ G
        W[idx, :] = G.T @ W[idx, :]
        Psi[:, idx] = Psi[:, idx] @ G
        W[i, i] = target  # exact by construction; removes rounding drift
        free.remove(i)
    return Psi


def optimal_q(U, lambdas=None) -> np.ndarray:
    """The antisymmetric ``Q`` that maximises the relaxation rate of ``A = (I+Q)U``.

    Every eigenvalue of the returned ``A`` has real part ``Tr(U)/d``, the upper
    bound for any ``Q`` (Lelievre, Nier, Pavliotis 2013). Construction: in an
    orthonormal basis ``Psi`` where ``W = Psi^T U Psi`` has constant diagonal, set
    ``J_jk = (l_j + l_k)/(l_j - l_k) W_jk`` (``j != k``); then ``W + J`` satisfies
    ``(W+J) L + L (W+J)^T = 2 (Tr U/d) L`` with ``L = diag(l) > 0``, so every
    eigenvalue has real part ``Tr(U)/d``. Back in the original coordinates
    ``Q = U^{-1/2} Psi J Psi^T U^{-1/2}``.

    Parameters
    ----------
    U : (d, d) symmetric positive definite.
    lambdas : (d,) distinct positive numbers, optional
        The free numbers ``l_k``. They do not change the spectrum's real parts but
        set the stiffness ``||Q||`` and the transient ``max_t ||exp(-tA)||``. Only
        their ratios matter, through ``coth(log(l_j/l_k)/2)``.

        Default (:func:`default_lambdas`): geometric from 1 to ``d``. The identity
        above bounds the transient by ``sqrt(l_max / l_min)`` and the prefactors
        by about ``2 (d-1) / log(l_max / l_min)``, so a wide spread trades
        stiffness for eigenvector conditioning and, it turns out, for a longer
        horizon. Measured by ``python -m benchmarks.lambdas`` (U with eigenvalues
        evenly spread in [0.25, 1.75], random basis, d = 16..512; horizon = T with
        KL(P_T || noise) <= 1e-3 for data with a spike along the slowest direction):

        ============  ===============  ==========  ===========================
        l_k           ||Q|| d=64/512   transient   horizon speedup (bound 4)
        ============  ===============  ==========  ===========================
        linear 1..d   25 / 94          1.8 - 2.0   3.4 - 3.6
        geom. 1..d    8.7 / 20         1.4 - 1.8   3.3 - 3.35
        geom. 1..d^2  4.4 / 9.8        1.2 - 1.5   2.7 - 3.1
        geom. 1..1e6  2.8 / 8.9        1.0 - 1.5   2.2 - 3.0
        ============  ===============  ==========  ===========================

        Geometric 1..d keeps ||Q|| 3-5x below the linear choice and still gives
        over 80% of the bound on the horizon; wider spreads are less stiff but
        start later, and spreads like ``l_k = e^k`` make the eigenvalues so
        ill-conditioned that rounding alone moves their real parts by 10%.
    """
    U = as_spd("U", U)
    d = U.shape[0]
    if d == 1:
        return np.zeros((1, 1))
    if lambdas is None:
        lambdas = default_lambdas(d)
    lam = np.asarray(lambdas, dtype=float)
    if lam.shape != (d,):
        raise ValueError(f"lambdas must have shape ({d},), got {lam.shape}")
    if not np.all(np.isfinite(lam)) or not np.all(lam > 0):
        raise ValueError(
            "lambdas must be finite and positive (any common sign works; "
            "pass their absolute values)"
        )
    if np.unique(lam).size != d:
        raise ValueError("lambdas must be distinct")
    if is_diagonal(U) and np.all(np.diag(U) == U[0, 0]):
        # U = c I: W = c I has no off-diagonal entry, so J = 0 and Q = 0 exactly (every
        # Q already gives the rate c); O(d^2) instead of the O(d^3) steps below.
        return np.zeros((d, d))
    log_l = np.log(lam)
    Psi = constant_diagonal_basis(U)
    W = Psi.T @ U @ Psi
    diff = (log_l[:, None] - log_l[None, :]) / 2
    np.fill_diagonal(diff, 1.0)  # placeholder, zeroed below
    J = W / np.tanh(diff)  # (l_j + l_k)/(l_j - l_k) = coth(log(l_j/l_k)/2)
    np.fill_diagonal(J, 0.0)
    J = 0.5 * (J - J.T)
    _, inv_half = spd_sqrt(U)
    Q = inv_half @ Psi @ J @ Psi.T @ inv_half
    return 0.5 * (Q - Q.T)


def scaled_q(Q, gamma: float) -> np.ndarray:
    """``gamma * Q``: with ``Q = optimal_q(U)``, 0 is reversible and 1 optimal."""
    Q = as_antisymmetric("Q", Q)
    g = float(gamma)
    if not math.isfinite(g):
        raise ValueError(f"gamma must be finite, got {gamma!r}")
    return g * Q


def random_q(dim: int, norm: float = 1.0, *, seed=None) -> np.ndarray:
    """A random antisymmetric ``d x d`` matrix with spectral norm ``norm``.

    ``seed``: an int or ``numpy.random.Generator``; the same seed gives the same Q.
    """
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not (math.isfinite(float(norm)) and float(norm) >= 0):
        raise ValueError(f"norm must be a finite non-negative number, got {norm!r}")
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((dim, dim))
    K = G - G.T
    n2 = np.linalg.norm(K, 2)
    return K * (float(norm) / n2) if n2 > 0 else K


def current_summary(
    U, Q, *, t_max: float | None = None, n_times: int = 200, transient: bool = True
) -> dict:
    """Stiffness and transient figures of ``A = (I + Q) U``, as a plain dict.

    Keys: ``q_norm`` and ``a_norm`` (spectral norms), ``rate`` (min Re spec A),
    ``bound`` (Tr U / d), ``rate_reversible`` (lambda_min U), ``transient``
    (max over t of ``||exp(-tA)||_2``, on ``n_times`` log-spaced times up to ``t_max``,
    default ``10 / rate``) and ``transient_time`` (where the maximum sits).
    ``transient=False`` skips the last two (the ``n_times`` matrix exponentials).
    """
    from nonrev.process.ou import OUProcess

    proc = OUProcess(U, Q)
    rate = proc.relaxation_rate()
    figures = {
        "dim": proc.dim,
        "q_norm": spectral_norm(proc.Q),
        "a_norm": spectral_norm(proc.A),
        "rate": rate,
        "rate_reversible": smallest_eigenvalue(proc.U),
        "bound": float(np.trace(proc.U) / proc.dim),
    }
    if not transient:
        return figures
    t_max = 10.0 / rate if t_max is None else float(t_max)
    times = np.concatenate([[0.0], np.geomspace(1e-3 * t_max, t_max, n_times - 1)])
    norms = np.array([np.linalg.norm(M, 2) for M in proc.mean_matrix(times)])
    k = int(np.argmax(norms))
    return {
        **figures,
        "transient": float(norms[k]),
        "transient_time": float(times[k]),
    }


# ------------------------------------------------------------------- fastest within a budget
def project_q_norm(Q: np.ndarray, radius: float | None) -> np.ndarray:
    """Euclidean (Frobenius) projection of antisymmetric ``Q`` onto ``||Q||_2 <= radius``.

    Clip the singular values at ``radius``: ``W diag(min(s, radius)) V^T`` from the
    SVD ``Q = W diag(s) V^T``. For an antisymmetric ``Q`` this equals
    ``Q f(Q^T Q)``, a function of ``Q^2`` times ``Q``, so it is antisymmetric; the
    final ``(P - P^T)/2`` removes rounding without raising the norm. The SVD (not an
    eigendecomposition of ``Q^T Q``) keeps the result within the ball even when ``Q``
    is huge, because every reconstructed singular value is at most ``radius``.
    """
    if radius is None or not np.any(Q):
        return Q
    if radius == 0.0:
        return np.zeros_like(Q)
    W, sv, Vt = np.linalg.svd(Q)
    if sv[0] <= radius:
        return Q
    P = (W * np.minimum(sv, radius)) @ Vt
    return 0.5 * (P - P.T)


def soft_min_rate(U: np.ndarray, Q: np.ndarray, tau: float) -> tuple[float, np.ndarray]:
    """A smooth stand-in for the relaxation rate ``min Re spec((I+Q)U)``: the soft
    minimum ``-tau log sum_i exp(-Re lambda_i / tau)`` (at most ``tau log d`` below
    the minimum), and its gradient in ``Q`` (a (d, d) matrix ``G`` with
    ``d value = <G, dQ>``; not antisymmetrised). The plain minimum is not
    differentiable where the fastest currents put it (all real parts equal). For a
    simple eigenvalue with right vector ``x`` and left vector ``y``,
    ``d lambda = y^H dA x / (y^H x)`` and ``dA = dQ U``; the gradient is their
    softmax-weighted sum."""
    import scipy.linalg

    A = (np.eye(U.shape[0]) + Q) @ U
    w, vl, vr = scipy.linalg.eig(A, left=True, right=True)
    re = w.real
    m = float(re.min())
    e = np.exp(-(re - m) / tau)
    weights = e / e.sum()
    G_A = np.zeros_like(A)
    for k in np.nonzero(weights > 1e-12)[0]:
        x, y = vr[:, k], vl[:, k]
        G_A += weights[k] * np.real(np.outer(y.conj(), x) / np.vdot(y, x))
    return m - tau * math.log(float(e.sum())), G_A @ U


#: Temperature of the soft minimum that :func:`fastest_q` ascends, relative to Tr(U)/d.
RATE_TEMPERATURE = 2e-3


def fastest_q(
    U, q_norm_max: float, *, n_random: int = 2, seed=0, max_iter: int = 500, tol: float = 1e-10
) -> np.ndarray:
    """The antisymmetric ``Q`` with ``||Q||_2 <= q_norm_max`` whose relaxation rate
    ``min Re spec((I+Q)U)`` is (locally) largest: the least stiff current for a given
    speed-up.

    Projected gradient ascent of :func:`soft_min_rate` (temperature
    ``RATE_TEMPERATURE * Tr(U)/d``) over the norm ball, from the optimal current
    scaled onto the budget, with Barzilai-Borwein steps and backtracking; returns the
    optimal current itself when it fits the budget (it reaches the bound Tr(U)/d).
    The result relaxes at least as fast as the scaled optimal current.
    :func:`nonrev.steer_q` with ``objective='rate'`` searches the same objective
    from several starts and reports the predicted regimes too.
    """
    U = as_spd("U", U)
    radius = float(q_norm_max)
    if not (math.isfinite(radius) and radius >= 0.0):
        raise ValueError(f"q_norm_max must be a finite number >= 0, got {q_norm_max!r}")
    Q_opt = optimal_q(U)
    n_opt = float(np.linalg.norm(Q_opt, 2))
    if n_opt <= radius:
        return Q_opt
    tau = RATE_TEMPERATURE * float(np.trace(U)) / U.shape[0]

    def value(Q):
        f, G = soft_min_rate(U, Q, tau)
        return f, 0.5 * (G - G.T)

    def ascend(Q):
        f, g = value(Q)
        alpha = 0.1 * max(radius, 1e-12) / max(float(np.linalg.norm(g)), 1e-300)
        for _ in range(max_iter):
            for _ in range(30):  # backtracking on the projected step
                trial = project_q_norm(Q + alpha * g, radius)
                f_new, g_new = value(trial)
                if f_new >= f + 1e-4 * float(np.sum(g * (trial - Q))):
                    break
                alpha *= 0.5
            else:
                break
            s, y = trial - Q, g_new - g
            gained = f_new - f
            Q, f, g = trial, f_new, g_new
            if gained <= tol * max(abs(f), 1e-12):
                break
            sy = float(np.sum(s * y))
            alpha = float(np.sum(s * s)) / -sy if sy < 0 else 2.0 * alpha
        return Q

    def rate(M):
        return float(np.linalg.eigvals((np.eye(U.shape[0]) + M) @ U).real.min())

    rng = np.random.default_rng(seed)
    scaled = (radius / n_opt) * Q_opt
    starts = [scaled] + [random_q(U.shape[0], 0.5 * radius, seed=rng) for _ in range(n_random)]
    return max([scaled] + [ascend(Q0) for Q0 in starts], key=rate)
