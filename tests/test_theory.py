"""Predicted speciation and collapse times against closed forms and THEORY.md numbers."""

import time

import numpy as np
import pytest
from problems import random_spd
from scipy.optimize import brentq

from nonrev import OUProcess, optimal_q, random_q
from nonrev.linalg import sample_covariance
from nonrev.regimes import (
    class_covariances,
    collapse_entropy_gap,
    collapse_snr_spectrum,
    collapse_time,
    collapse_time_from_data,
    isotropic_collapse_time,
    predict_regimes,
    speciation_snr,
    speciation_time,
    speciation_time_from_data,
    theory,
)


def biroli_collapse(N, d, sigma2=1.0, c=1.0):
    """t_C for U = c I, C = sigma^2 I: (1/2c) log(1 + c sigma^2 / (N^{2/d} - 1))."""
    return np.log1p(c * sigma2 / np.expm1(2 * np.log(N) / d)) / (2 * c)


def general(fn, proc, *args):
    """Run a theory function on the general route (matrix exponentials), skipping
    the commuting-Q shortcut, by handing it a frame built without it."""
    saved = theory._frame
    theory._frame = lambda p, exploit_symmetry=True: saved(p, False)
    try:
        return fn(proc, *args)
    finally:
        theory._frame = saved


# ----------------------------------------------------------------------------- collapse
@pytest.mark.parametrize("d,expected", [(256, 1.30), (1024, 1.98), (4096, 2.67)])
def test_biroli_isotropic_collapse(d, expected):
    # THEORY.md section 4: N = 20000, sigma = 1.
    ref = biroli_collapse(20000, d)
    t = isotropic_collapse_time(1.0, np.ones(d), 20000)
    assert abs(t - ref) < 1e-4 * ref
    assert abs(t - expected) < 0.01 * expected
    if d == 256:  # the full route through a process (d = 4096 would build a 4096 process)
        assert abs(collapse_time(OUProcess(np.eye(d)), np.eye(d), 20000) - ref) < 1e-4 * ref


@pytest.mark.parametrize(
    "c,sigma2,N,d", [(1.0, 1.0, 500, 32), (2.5, 0.3, 2000, 16), (0.4, 4.0, 50, 8)]
)
def test_isotropic_collapse_any_q_general_route(c, sigma2, N, d):
    # U = c I: every Q gives the same t_C; the general route (matrix exponentials)
    # with a strong random current must reproduce the scalar closed form.
    ref = biroli_collapse(N, d, sigma2, c)
    Q = random_q(d, 3.0, seed=1)
    for proc in (OUProcess(c * np.eye(d)), OUProcess(c * np.eye(d), Q)):
        assert abs(collapse_time(proc, sigma2 * np.eye(d), N) - ref) < 1e-4 * ref
        assert abs(general(collapse_time, proc, sigma2 * np.eye(d), N) - ref) < 1e-4 * ref


def test_u_identity_any_q_leaves_times_unchanged(rng):
    # Anisotropic data, U = I: M_t = e^{-t} R_t with R_t a rotation, so the spectra
    # and both times are those of Q = 0, computed here on the general route.
    d = 12
    C, _, _ = random_spd(d, rng, 0.1, 3.0)
    Cb, _, _ = random_spd(d, rng, 0.0, 2.0)
    Cw = 0.5 * np.eye(d)
    rev = OUProcess(np.eye(d))
    t_c = collapse_time(rev, C, 300)
    t_s = speciation_time(rev, 10 * Cb, Cw)
    assert t_c > 0 and t_s > 0
    for seed in (0, 1):
        proc = OUProcess(np.eye(d), random_q(d, 2.0, seed=seed))
        assert abs(general(collapse_time, proc, C, 300) - t_c) < 1e-6 * t_c
        assert abs(general(speciation_time, proc, 10 * Cb, Cw) - t_s) < 1e-6 * t_s
        s_gen = general(collapse_snr_spectrum, proc, C, [0.1, 1.0])
        np.testing.assert_allclose(s_gen, collapse_snr_spectrum(rev, C, [0.1, 1.0]), rtol=1e-8)


def test_reversible_collapse_against_eigen_formula(rng):
    # Q = 0, C = I: s_i(t) = lam_i / (e^{2 t lam_i} - 1) for U's eigenvalues lam_i,
    # whatever the basis. Both routes must find the same root of (1/2) sum log(1 + s_i).
    d, N = 32, 500
    U, _, lam = random_spd(d, rng)
    ref = brentq(
        lambda t: 0.5 * np.log1p(lam / np.expm1(2 * t * lam)).sum() - np.log(N),
        0.01,
        10,
        xtol=1e-14,
    )
    proc = OUProcess(U)
    assert abs(collapse_time(proc, np.eye(d), N) - ref) < 1e-6 * ref
    assert abs(general(collapse_time, proc, np.eye(d), N) - ref) < 1e-6 * ref
    assert abs(ref - 0.5739) < 1e-3  # THEORY.md section 4 quotes 0.568 (see report)


def test_collapse_gap_is_monotone_with_derivative_formula(rng):
    # g'(t) = tr(G_t^{-1}) - tr(Sigma_t^{-1}) <= 0 with G_t = M_t C M_t^T + Sigma_t,
    # for a non-normal A (strong random current, anisotropic U).
    d = 10
    U, _, _ = random_spd(d, rng, 0.1, 3.0, geometric=True)
    C, _, _ = random_spd(d, rng, 0.05, 4.0)
    proc = OUProcess(U, random_q(d, 5.0, seed=2))
    times = np.geomspace(1e-3, 20.0, 60)
    g = collapse_entropy_gap(proc, C, times)
    assert np.all(np.diff(g) <= 1e-12 * np.abs(g[:-1]))
    for t in (0.05, 0.7, 3.0):
        h = 1e-5 * t
        fd = (collapse_entropy_gap(proc, C, t + h) - collapse_entropy_gap(proc, C, t - h)) / (2 * h)
        M, S = proc.mean_and_cov(t)
        exact = np.trace(np.linalg.inv(M @ C @ M.T + S)) - np.trace(np.linalg.inv(S))
        assert exact <= 0
        assert abs(fd - exact) < 1e-5 * abs(exact)


def test_spectra_agree_with_direct_generalised_eigenvalues(rng):
    d = 8
    U, _, _ = random_spd(d, rng)
    C, _, _ = random_spd(d, rng, 0.0, 2.0)
    proc = OUProcess(U, optimal_q(U))
    times = np.array([0.01, 0.5, 2.0])
    s = collapse_snr_spectrum(proc, C, times)
    assert s.shape == (3, d)
    for i, t in enumerate(times):
        M, S = proc.mean_and_cov(t)
        ref = np.sort(np.linalg.eigvals(np.linalg.solve(S, M @ C @ M.T)).real)[::-1]
        np.testing.assert_allclose(s[i], ref, rtol=1e-8, atol=1e-12)
    g = collapse_entropy_gap(proc, C, times)
    np.testing.assert_allclose(g, 0.5 * np.log1p(s).sum(axis=1), rtol=1e-10)
    assert collapse_snr_spectrum(proc, C, 0.5).shape == (d,)
    assert isinstance(collapse_entropy_gap(proc, C, 0.5), float)
    # At the predicted times the criteria sit exactly on their thresholds.
    t_c = collapse_time(proc, C, 100)
    assert abs(collapse_entropy_gap(proc, C, t_c) - np.log(100)) < 1e-6
    mu = 3.0 * np.ones(d) / np.sqrt(d)
    t_s = speciation_time(proc, np.outer(mu, mu), 0.5 * C)
    assert abs(speciation_snr(proc, np.outer(mu, mu), 0.5 * C, t_s) - 1.0) < 1e-6
    Cw = 0.5 * C
    for t in (0.1, 1.0):
        M, S = proc.mean_and_cov(t)
        m = M @ mu
        ref = m @ np.linalg.solve(M @ Cw @ M.T + S, m)  # two classes: m^T Gamma^{-1} m
        assert abs(speciation_snr(proc, np.outer(mu, mu), Cw, t) - ref) < 1e-9 * ref


@pytest.mark.slow
def test_collapse_time_runs_at_d_2048():
    # Non-isotropic (diagonal: the basis is irrelevant) U and a dense data covariance.
    d = 2048
    rng = np.random.default_rng(0)
    proc = OUProcess(np.diag(np.linspace(0.25, 1.75, d)))
    G = rng.standard_normal((d, d)) / np.sqrt(2 * d)
    C = G @ G.T + 0.5 * np.eye(d)
    start = time.perf_counter()
    t = collapse_time(proc, C, 10_000)
    print(f"collapse_time at d = {d}: t_C = {t:.4f} in {time.perf_counter() - start:.1f} s")
    assert np.isfinite(t) and t > 0


# ----------------------------------------------------------------------------- speciation
@pytest.mark.parametrize("mu2,sigma2", [(40.0, 1.0), (9.0, 0.5), (2.0, 1.5), (5.0, 0.0)])
def test_two_symmetric_classes_isotropic(mu2, sigma2):
    # U = I, Q = 0, C_b = mu mu^T, C_w = sigma^2 I:
    # r(t) = |mu|^2 e^{-2t} / (sigma^2 e^{-2t} + 1 - e^{-2t}) = 1
    # <=> (|mu|^2 - sigma^2 + 1) e^{-2t} = 1 <=> t_S = (1/2) log(|mu|^2 - sigma^2 + 1).
    d = 6
    mu = np.zeros(d)
    mu[2] = np.sqrt(mu2)
    Cw = sigma2 * np.eye(d) if sigma2 > 0 else None
    ref = 0.5 * np.log(mu2 - sigma2 + 1)
    proc = OUProcess(np.eye(d))
    for fn in (speciation_time, lambda *a: general(speciation_time, *a)):
        assert abs(fn(proc, np.outer(mu, mu), Cw) - ref) < 1e-4 * ref


def test_overlapping_classes_never_speciate():
    # |mu|^2 < sigma^2: r(t) <= r(0) = |mu|^2 / sigma^2 < 1 for every t.
    d = 4
    mu = np.array([0.8, 0.0, 0.0, 0.0])
    proc = OUProcess(np.eye(d))
    assert speciation_time(proc, np.outer(mu, mu), np.eye(d)) == 0.0
    assert speciation_time(proc, np.zeros((d, d))) == 0.0
    # Data without variance have no collapse time: an error, not "never" (issue 17).
    for U in (np.eye(d), np.diag([1e-8, 1.0, 2.0, 3.0])):
        with pytest.raises(ValueError, match="no variance"):
            collapse_time(OUProcess(U), np.zeros((d, d)), 100)
    with pytest.raises(ValueError, match="no variance"):
        isotropic_collapse_time(1.0, np.zeros(d), 100)


def eigen_aligned_reversible_ts(lam, mu2, sigma2=1.0):
    """Q = 0, mu along an eigenvector of eigenvalue lam, C_w = sigma^2 I:
    mu2 e^{-2 lam t} = sigma^2 e^{-2 lam t} + (1 - e^{-2 lam t}) / lam
    <=> t_S = log(1 + lam (mu2 - sigma^2)) / (2 lam)."""
    return np.log1p(lam * (mu2 - sigma2)) / (2 * lam)


def section3_case(seed, lambdas=None):
    """d = 16, U eigenvalues 0.25..1.75 in a random basis, |mu|^2 = 40, sigma = 1:
    t_S for mu along the slowest and the fastest eigenvector, Q = 0 and optimal Q."""
    U, V, lam = random_spd(16, np.random.default_rng(seed))
    out = {}
    for name, Q in (("rev", None), ("opt", optimal_q(U, lambdas))):
        proc = OUProcess(U, Q)
        for where, k in (("slow", 0), ("fast", 15)):
            mu = np.sqrt(40.0) * V[:, k]
            out[name, where] = speciation_time(proc, np.outer(mu, mu), np.eye(16))
    return out


def test_theory_section3_numbers():
    # THEORY.md section 3 quotes t_S = 4.75 / 1.50 (slow, Q = 0 / optimal) and
    # 1.21 / 2.27 (fast). The reversible values depend only on the eigenvalue
    # (4.7498, 1.2108 in every basis). The optimal-Q values depend on the basis and
    # on the free numbers of optimal_q: they are reproduced to 1% with seed 1 and the
    # linear choice l_k = 1..16 used for the documented check.
    ts = section3_case(1, np.arange(1, 17))
    assert abs(ts["rev", "slow"] - eigen_aligned_reversible_ts(0.25, 40)) < 1e-6
    assert abs(ts["rev", "fast"] - eigen_aligned_reversible_ts(1.75, 40)) < 1e-6
    assert abs(ts["rev", "slow"] - 4.75) < 0.01 and abs(ts["rev", "fast"] - 1.21) < 0.01
    assert abs(ts["opt", "slow"] - 1.50) < 0.015
    assert abs(ts["opt", "fast"] - 2.27) < 0.0227


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_optimal_current_equalises_directions(seed):
    # Basis-independent part of section 3, with the default optimal_q: the slow
    # split speciates at less than half its reversible time, the fast one at more
    # than 1.5 times it (measured over bases: 0.34-0.44 and 1.7-2.1).
    ts = section3_case(seed)
    assert abs(ts["rev", "slow"] - 4.7498) < 1e-3 and abs(ts["rev", "fast"] - 1.2108) < 1e-3
    assert ts["opt", "slow"] < 0.5 * ts["rev", "slow"]
    assert ts["opt", "fast"] > 1.5 * ts["rev", "fast"]


@pytest.mark.parametrize("d,N", [(32, 500), (64, 2000)])
def test_optimal_current_moves_collapse_little_and_speciation_a_lot(d, N):
    # THEORY.md section 4: anisotropic U (0.25..1.75), data N(0, I). Optimal Q moves
    # t_C by under 3% (measured here: +1.4% at d = 32, +2.6% at d = 64) while t_S of a
    # class split along the slowest direction moves by a factor above 2.
    U, V, _ = random_spd(d, np.random.default_rng(0))
    rev, opt = OUProcess(U), OUProcess(U, optimal_q(U))
    tc_rev, tc_opt = collapse_time(rev, np.eye(d), N), collapse_time(opt, np.eye(d), N)
    assert abs(tc_opt / tc_rev - 1) < 0.03
    mu = np.sqrt(40.0) * V[:, 0]
    ts_rev = speciation_time(rev, np.outer(mu, mu), np.eye(d))
    ts_opt = speciation_time(opt, np.outer(mu, mu), np.eye(d))
    assert ts_rev / ts_opt > 2.0


def test_speciation_snr_shapes_and_scan_finds_largest_crossing(rng):
    d = 5
    U, _, _ = random_spd(d, rng)
    proc = OUProcess(U, random_q(d, 4.0, seed=5))
    Cb = np.diag([6.0, 3.0, 0.0, 0.0, 0.0])
    r = speciation_snr(proc, Cb, None, [0.01, 0.1, 1.0])
    assert r.shape == (3,) and isinstance(speciation_snr(proc, Cb, None, 0.1), float)
    t_s = speciation_time(proc, Cb)
    grid = np.linspace(1.0001 * t_s, 30.0, 400)
    assert np.all(speciation_snr(proc, Cb, None, grid) < 1.0)
    assert speciation_snr(proc, Cb, None, 0.9999 * t_s) > 1.0


# ----------------------------------------------------------------------------- from data
def two_class_data(rng, n=400, d=6):
    labels = rng.integers(0, 2, n)
    X = rng.standard_normal((n, d)) * np.linspace(0.5, 1.5, d)
    X[labels == 1, 0] += 4.0
    return X, labels


def test_class_covariances(rng):
    X, labels = two_class_data(rng)
    between, within, w = class_covariances(X, labels)
    np.testing.assert_allclose(between + within, np.cov(X.T, bias=True), atol=1e-12)
    np.testing.assert_allclose(w, np.bincount(labels) / len(labels))
    mu = [X[labels == k].mean(0) for k in (0, 1)]
    ref_b = w[0] * w[1] * np.outer(mu[1] - mu[0], mu[1] - mu[0])  # two-class identity
    np.testing.assert_allclose(between, ref_b, atol=1e-12)
    ref_w = sum(w[k] * np.cov(X[labels == k].T, bias=True) for k in (0, 1))
    np.testing.assert_allclose(within, ref_w, atol=1e-12)
    # String labels name the same classes.
    b2, w2, _ = class_covariances(X, np.where(labels == 1, "b", "a"))
    np.testing.assert_allclose(b2, between) and np.testing.assert_allclose(w2, within)


def test_from_data_helpers_agree_with_covariance_versions(rng):
    X, labels = two_class_data(rng)
    d = X.shape[1]
    U, _, _ = random_spd(d, rng)
    proc = OUProcess(U, optimal_q(U))
    between, within, _ = class_covariances(X, labels)
    total = sample_covariance(X)
    # The one convention of the package: 1/n, numpy's bias=True (to round-off).
    np.testing.assert_allclose(total, np.cov(X.T, bias=True), rtol=1e-12, atol=1e-14)
    assert speciation_time_from_data(proc, X, labels) == speciation_time(proc, between, within)
    assert speciation_time_from_data(proc, X) == speciation_time(proc, total)
    assert collapse_time_from_data(proc, X) == collapse_time(proc, total, len(X))
    assert 0 < collapse_time_from_data(proc, X) < speciation_time_from_data(proc, X, labels)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs(rng):
    d = 4
    proc = OUProcess(np.eye(d))
    good = np.eye(d)
    X = rng.standard_normal((10, d))
    cases = [
        (lambda: speciation_time(proc, np.eye(3)), "between_cov"),
        (lambda: speciation_time(proc, -good), "between_cov"),
        (lambda: speciation_time(proc, good, np.ones((d, d)) - 2 * good), "within_cov"),
        (lambda: speciation_time(proc, good, np.full((d, d), np.nan)), "within_cov"),
        (lambda: speciation_snr(proc, good, None, [0.0, 1.0]), "times"),
        (lambda: collapse_time(proc, np.eye(5), 100), "data_cov"),
        (lambda: collapse_time(proc, good + np.triu(np.ones((d, d)), 1), 100), "data_cov"),
        (lambda: collapse_time(proc, np.diag([1, 1, 1, np.inf]), 100), "data_cov"),
        (lambda: collapse_time(proc, good, 1), "n_train"),
        (lambda: collapse_time(proc, good, 10.5), "n_train"),
        (lambda: collapse_time(proc, good, "many"), "n_train"),
        (lambda: collapse_snr_spectrum(proc, good, -1.0), "times"),
        (lambda: collapse_time(good, good, 100), "process"),
        (lambda: isotropic_collapse_time(0.0, np.ones(d), 100), "c"),
        (lambda: isotropic_collapse_time(1.0, -np.ones(d), 100), "data_eigvals"),
        (lambda: collapse_time_from_data(proc, X[:1]), "X"),
        (lambda: collapse_time_from_data(proc, X[:, :3]), "X"),
        (lambda: collapse_time_from_data(proc, np.where(X > 1, np.nan, X)), "X"),
        (lambda: speciation_time_from_data(proc, X, np.zeros(9)), "labels"),
        (lambda: speciation_time_from_data(proc, X, np.zeros(10)), "labels"),
        (lambda: speciation_time_from_data(proc, X, np.full(10, np.nan)), "labels"),
        (lambda: class_covariances(X, np.zeros((10, 2))), "labels"),
        (lambda: class_covariances(np.ones((3,)), np.zeros(3)), "X"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


# ----------------------------------------------------------------------------- any SPD U
@pytest.mark.parametrize("lam", [1e-8, 1e-7, 1e-4, 1e-12])
def test_ill_conditioned_u_speciation_and_collapse(lam):
    # Issue 17: U = diag(lam, 1, 1, 1, 1), classes +-mu along the first axis. The
    # envelope time is ~ 1/lam, far above the crossing near (|mu|^2 - sigma^2)/2; the
    # old fixed scan window reported 0 ("never") for lam = 1e-8. Closed form (Q = 0,
    # mu along an eigenvector): t_S = log(1 + lam (|mu|^2 - sigma^2)) / (2 lam).
    d, mu2, sigma2 = 5, 2.5, 1.0
    U = np.diag([lam, 1.0, 1.0, 1.0, 1.0])
    mu = np.zeros(d)
    mu[0] = np.sqrt(mu2)
    ref = eigen_aligned_reversible_ts(lam, mu2, sigma2)
    proc = OUProcess(U)
    for fn in (speciation_time, lambda *a: general(speciation_time, *a)):
        t = fn(proc, np.outer(mu, mu), sigma2 * np.eye(d))
        assert abs(t - ref) < 1e-6 * ref
    # Without labels (the total covariance, C_w = 0: the issue's `analyze --q none`),
    # Tr(U C) is ~4, so the envelope time is ~1e8 and the old scan floor ~100, far
    # above the crossing. Q = 0, U and C diagonal: r(t) = max_i lam_i c_i / (e^{2 lam_i t} - 1).
    lams, cs = np.diag(U), np.array([1.0 + mu2, 1.0, 1.0, 1.0, 1.0])

    def r(t):
        return np.max(lams * cs / np.expm1(2 * lams * t))

    with np.errstate(over="ignore"):  # e^{2 t} overflows for the unit eigenvalues at t ~ 1e3
        ref_total = brentq(lambda t: r(t) - 1.0, 1e-6, 1e3, xtol=1e-14, rtol=1e-14)
    for fn in (speciation_time, lambda *a: general(speciation_time, *a)):
        t = fn(proc, np.diag(cs))
        assert abs(t - ref_total) < 1e-6 * ref_total
    # Collapse, checked against a direct root of g(t) = log N on the same U.
    C = np.diag([4.0, 1.0, 1.0, 1.0, 1.0])
    t_c = collapse_time(proc, C, 50)

    def g(t):
        return collapse_entropy_gap(proc, C, t) - np.log(50)

    assert t_c > 0 and abs(g(t_c)) < 1e-6
    assert abs(general(collapse_time, proc, C, 50) - t_c) < 1e-6 * t_c


def test_ill_conditioned_u_from_data_matches_closed_form(rng):
    # The CLI's path (predict_regimes from a data file) on the case of issue 17.
    d, n = 5, 4000
    labels = np.repeat([0, 1], n // 2)
    X = rng.standard_normal((n, d))
    X[:, 0] += np.where(labels == 1, 1.5, -1.5)
    U = np.diag([1e-8, 1.0, 1.0, 1.0, 1.0])
    between, within, _ = class_covariances(X, labels)
    total = sample_covariance(X)
    for lab, args in ((labels, (between, within)), (None, (total, None))):
        out = predict_regimes(X, U, {"none": None}, labels=lab)
        # r(t) from the whitened pair, its crossing solved directly by brentq here.
        ref = brentq(lambda t, args=args: np.log(speciation_snr(OUProcess(U), *args, t)), 1e-3, 50)
        assert abs(out["speciation"]["none"] - ref) < 1e-6 * ref
        assert 0.5 < out["speciation"]["none"] < 3.0


def test_constant_data_is_an_error_not_never():
    X = np.ones((50, 4))
    with pytest.raises(ValueError, match="no variance"):
        predict_regimes(X, np.eye(4), {"none": None})
    with pytest.raises(ValueError, match="no variance"):
        collapse_time_from_data(OUProcess(np.eye(4)), X)


def test_root_finder_brackets_by_expansion_and_says_when_it_cannot():
    from nonrev.regimes.criteria import solve_decreasing

    # A root far from the start, on either side, with and without derivative.
    for root in (-200.0, -3.0, 0.5, 150.0):
        for x0 in (-100.0, 0.0, 100.0):
            x, _ = solve_decreasing(lambda x, root=root: (root - x, None, None), x0, "t")
            assert abs(x - root) < 1e-8
            x, _ = solve_decreasing(
                lambda x, root=root: (np.tanh(root - x), -1 / np.cosh(root - x) ** 2, None), x0, "t"
            )
            assert abs(x - root) < 1e-8
    with pytest.raises(ValueError, match="no crossing"):
        solve_decreasing(lambda x: (-1.0 - np.exp(-x), None, None), 0.0, "speciation time")
    with pytest.raises(ValueError, match="not finite"):
        solve_decreasing(lambda x: (np.nan, None, None), 0.0, "collapse time")
