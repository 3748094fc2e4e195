"""Steering the regimes (nonrev.steer_q and `nonrev steer`): the steered current beats
Q = 0 and the optimal current under the same budget, matches a grid search where one
is possible, respects its constraints, has exact gradients, refuses infeasible
requests before optimising, and its predicted t_S is confirmed by cloning."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from problems import random_spd
from scipy.optimize import brentq

from nonrev import OUProcess, optimal_q, random_q, steer_q
from nonrev.cli import main
from nonrev.data.files import u_from_data
from nonrev.regimes import (
    class_covariances,
    collapse_entropy_gap,
    collapse_time,
    speciation_snr,
    speciation_time,
    steering,
)
from nonrev.regimes.measure import clone_agreement, speciation_time_measured
from nonrev.regimes.steering import _problem, _project_ball, _q_norm, criteria_gradient
from nonrev.scores import GaussianMixtureScore


def mixture(d, seed, mu_norm2=20.0, sigma2=0.5):
    """Random U (eigenvalues 0.25..1.75) and two classes +-mu along a random direction."""
    rng = np.random.default_rng(seed)
    U, V, _ = random_spd(d, rng)
    mu = rng.standard_normal(d)
    mu *= np.sqrt(mu_norm2) / np.linalg.norm(mu)
    return U, V, np.outer(mu, mu), sigma2 * np.eye(d)


def t_s(U, Q, Cb, Cw):
    return speciation_time(OUProcess(U, Q), Cb, Cw)


# ----------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("d,seed,budget", [(4, 0, 1.0), (6, 1, 0.5), (8, 2, 1.0), (5, 3, 0.5)])
def test_steered_beats_zero_and_optimal_under_the_same_budget(d, seed, budget):
    U, _, Cb, Cw = mixture(d, seed)
    Q_opt = optimal_q(U)
    b = budget * np.linalg.norm(Q_opt, 2)
    refs = [t_s(U, None, Cb, Cw), t_s(U, min(1.0, b / np.linalg.norm(Q_opt, 2)) * Q_opt, Cb, Cw)]
    for objective in ("speciation_early", "speciation_late"):
        Q, info = steer_q(U, Cb, Cw, objective=objective, q_norm_max=b, generator=seed)
        assert np.array_equal(Q, -Q.T)
        assert np.linalg.norm(Q, 2) <= b * (1 + 1e-12)
        got = t_s(U, Q, Cb, Cw)  # recomputed by the library's own root search
        assert info["t_speciation"] == pytest.approx(got, rel=1e-9)
        assert [
            info["references"]["zero"]["t_speciation"],
            info["references"]["optimal"]["t_speciation"],
        ] == pytest.approx(refs, rel=1e-9)
        if objective == "speciation_early":
            assert got >= 1.05 * max(refs), (got, refs)
        else:
            assert got <= min(refs) / 1.05, (got, refs)
        assert info["value"] == pytest.approx(got, rel=1e-9)
        assert info["start"] in {s["name"] for s in info["starts"]}
        best = max if objective == "speciation_early" else min  # the search is nonmonotone
        assert best(info["trace"]) == pytest.approx(got, rel=1e-6)


def test_window_and_target_objectives():
    d = 6
    U, _, Cb, Cw = mixture(d, 4)
    C, N = Cb + Cw, 1000
    b = np.linalg.norm(optimal_q(U), 2)
    Q, info = steer_q(
        U, Cb, Cw, objective="window", q_norm_max=b, data_cov=C, n_train=N, generator=0
    )
    proc = OUProcess(U, Q)
    window = speciation_time(proc, Cb, Cw) - collapse_time(proc, C, N)
    assert info["value"] == pytest.approx(window, rel=1e-8)
    assert info["t_collapse"] == pytest.approx(collapse_time(proc, C, N), rel=1e-9)
    for ref in info["references"].values():
        assert window >= 1.05 * ref["value"]
        assert ref["value"] == pytest.approx(ref["t_speciation"] - ref["t_collapse"])
    # Any t_S between those of Q = 0 and the optimal current is reachable on the segment
    # between them, so the target objective must hit it.
    lo, hi = sorted(r["t_speciation"] for r in info["references"].values())
    target = lo + 0.3 * (hi - lo)
    Q, info = steer_q(
        U, Cb, Cw, objective="target_speciation", target=target, q_norm_max=b, generator=0
    )
    assert t_s(U, Q, Cb, Cw) == pytest.approx(target, rel=1e-6)
    assert info["value"] < 1e-6 * target


@pytest.mark.parametrize("objective", ["speciation_early", "speciation_late"])
def test_two_dimensions_match_a_grid_search(objective):
    # d = 2: Q = q [[0, 1], [-1, 0]], one parameter; compare with a dense grid on [-b, b].
    U = np.array([[1.5, 0.4], [0.4, 0.5]])
    mu = np.array([2.0, 3.0])
    Cb, Cw = np.outer(mu, mu), 0.3 * np.eye(2)
    b = 2.0
    J = np.array([[0.0, 1.0], [-1.0, 0.0]])
    grid = np.linspace(-b, b, 401)
    values = np.array([t_s(U, q * J, Cb, Cw) for q in grid])
    Q, info = steer_q(U, Cb, Cw, objective=objective, q_norm_max=b, generator=0)
    got = t_s(U, Q, Cb, Cw)
    if objective == "speciation_early":
        assert values.max() - 1e-7 <= got <= values.max() * (1 + 1e-3)
    else:
        assert values.min() / (1 + 1e-3) <= got <= values.min() + 1e-7
    assert values.max() > 1.2 * values.min()  # the current does matter here


# ----------------------------------------------------------------------------- constraints
@pytest.mark.parametrize("objective", ["speciation_early", "speciation_late"])
def test_constraints_hold_at_the_returned_current(objective):
    d = 6
    U, _, Cb, Cw = mixture(d, 5)
    bound = np.trace(U) / d
    b = np.linalg.norm(optimal_q(U), 2)
    min_rate = 0.95 * bound
    Q, info = steer_q(U, Cb, Cw, objective=objective, q_norm_max=b, min_rate=min_rate, generator=1)
    proc = OUProcess(U, Q)
    assert np.linalg.norm(Q, 2) <= b * (1 + 1e-12)
    assert proc.relaxation_rate() >= min_rate
    assert info["rate"] == pytest.approx(proc.relaxation_rate(), rel=1e-9)
    assert info["min_rate"] == min_rate and info["q_norm_max"] == b
    assert not info["references"]["zero"]["feasible"]  # lambda_min(U) = 0.25 < 0.95
    opt = info["references"]["optimal"]
    assert opt["feasible"]
    got = t_s(U, Q, Cb, Cw)
    if objective == "speciation_early":
        assert got >= opt["t_speciation"]
    else:
        assert got <= opt["t_speciation"]
    # The same search without the rate constraint goes further, so it was binding.
    _, free = steer_q(U, Cb, Cw, objective=objective, q_norm_max=b, generator=1)
    assert free["rate"] < min_rate
    sign = 1 if objective == "speciation_early" else -1
    assert sign * free["t_speciation"] > sign * got
    # A zero budget leaves Q = 0 only.
    Q0, info0 = steer_q(U, Cb, Cw, objective=objective, q_norm_max=0.0, n_random=1)
    assert not np.any(Q0) and info0["q_norm"] == 0.0


def test_projection_onto_the_norm_ball():
    rng = np.random.default_rng(0)
    d, r = 7, 1.3
    for k in range(5):
        X = random_q(d, 3.0, seed=k)
        P = _project_ball(X, r)
        assert np.allclose(P, -P.T, atol=1e-14)
        assert np.linalg.norm(P, 2) <= r * (1 + 1e-12)
        # Variational inequality of the Euclidean projection onto a convex set:
        # <X - P, Y - P> <= 0 for every Y in the set.
        for _ in range(20):
            Y = random_q(d, r * rng.uniform(), seed=rng)
            assert np.sum((X - P) * (Y - P)) <= 1e-10
    small = random_q(d, 0.5, seed=9)
    assert np.array_equal(_project_ball(small, r), small)
    huge = random_q(d, 1e20, seed=10)
    assert np.linalg.norm(_project_ball(huge, r), 2) <= r * (1 + 1e-12)


def test_same_seed_same_current_and_init_start():
    U, _, Cb, Cw = mixture(5, 6)
    b = np.linalg.norm(optimal_q(U), 2)
    Q1, _ = steer_q(U, Cb, Cw, q_norm_max=b, generator=3)
    Q2, _ = steer_q(U, Cb, Cw, q_norm_max=b, generator=np.random.default_rng(3))
    assert np.array_equal(Q1, Q2)
    Q3, info = steer_q(U, Cb, Cw, q_norm_max=b, n_random=0, init=Q1, max_iter=3)
    assert [s["name"] for s in info["starts"]] == ["zero", "optimal", "init"]
    assert t_s(U, Q3, Cb, Cw) >= t_s(U, Q1, Cb, Cw) * (1 - 1e-9)


def test_infeasible_requests_raise_before_any_optimisation(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the optimiser ran")

    monkeypatch.setattr(steering._Steerer, "evaluate", never)
    d = 5
    U, _, Cb, Cw = mixture(d, 7)
    bound = np.trace(U) / d
    b = np.linalg.norm(optimal_q(U), 2)
    cases = [
        (dict(min_rate=1.2 * bound), "not below Tr\\(U\\)/d"),
        (dict(min_rate=bound), "not below Tr\\(U\\)/d"),
        (dict(q_norm_max=-1.0), "q_norm_max must be >= 0"),
        (dict(q_norm_max=float("nan")), "q_norm_max must be finite"),
        (dict(q_norm_max=0.01 * b, min_rate=0.9 * bound), "out of reach"),
        (dict(q_norm_max=0.0, min_rate=0.5 * bound), "out of reach"),
        (dict(objective="fastest"), "objective must be one of"),
        (dict(objective="window"), "needs data_cov and n_train"),
        (dict(objective="target_speciation"), "needs target"),
        (dict(objective="target_speciation", target=-1.0), "target must be"),
        (dict(target=2.0), "target applies to objective 'target_speciation' only"),
        (dict(data_cov=np.eye(d)), "data_cov and n_train go together"),
        (dict(data_cov=np.eye(d), n_train=1), "n_train must be at least 2"),
        (dict(init=np.ones((d, d))), "init must be antisymmetric"),
        (dict(n_random=-1), "n_random"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            steer_q(U, Cb, Cw, **kwargs)
    with pytest.raises(ValueError, match="never speciate"):
        steer_q(U, Cb, 50.0 * np.eye(d))
    with pytest.raises(ValueError, match="between_cov must not be zero"):
        steer_q(U, np.zeros((d, d)), Cw)
    with pytest.raises(ValueError, match="U must be positive definite"):
        steer_q(-U, Cb, Cw)


# ----------------------------------------------------------------------------- gradients
def _root(f, t0):
    """Root of the decreasing ``f`` near ``t0`` to full precision (brentq on log t)."""
    return float(
        np.exp(
            brentq(
                lambda x: f(np.exp(x)), np.log(t0) - 0.5, np.log(t0) + 0.5, xtol=1e-14, rtol=1e-15
            )
        )
    )


@pytest.mark.parametrize("case", ["two_classes", "three_classes_no_within"])
def test_implicit_gradient_matches_finite_differences(case):
    d = 5
    rng = np.random.default_rng(11)
    U, _, _ = random_spd(d, rng)
    if case == "two_classes":
        mu = rng.standard_normal(d) * 2.0
        Cb, Cw = np.outer(mu, mu), np.diag(rng.uniform(0.3, 1.0, d))
    else:  # rank-2 between-class covariance, C_w = None
        X = rng.standard_normal((90, d)) + np.repeat(rng.standard_normal((3, d)) * 2, 30, axis=0)
        Cb, _, _ = class_covariances(X, np.repeat([0, 1, 2], 30))
        Cw = None
    C, N = Cb + (0 if Cw is None else Cw) + 0.1 * np.eye(d), 300
    Q = random_q(d, 1.5, seed=1)
    out = criteria_gradient(U, Q, Cb, Cw, data_cov=C, n_train=N)
    assert np.allclose(out["grad_speciation"], -out["grad_speciation"].T)

    def times(Qx):
        proc = OUProcess(U, Qx)
        ts = _root(lambda t: np.log(speciation_snr(proc, Cb, Cw, t)), out["t_speciation"])
        tc = _root(
            lambda t: np.log(collapse_entropy_gap(proc, C, t) / np.log(N)), out["t_collapse"]
        )
        return ts, tc

    assert times(Q) == pytest.approx((out["t_speciation"], out["t_collapse"]), rel=1e-9)
    h = 1e-5
    for k in range(3):
        E = random_q(d, 1.0, seed=20 + k)
        plus, minus = times(Q + h * E), times(Q - h * E)
        fd = [(p - m) / (2 * h) for p, m in zip(plus, minus)]
        exact = [np.sum(out["grad_speciation"] * E), np.sum(out["grad_collapse"] * E)]
        assert exact == pytest.approx(fd, rel=1e-5, abs=1e-9), (fd, exact)


def test_speciation_ratio_time_derivative():
    # d log r / dt = -2 |v|^2 with v the top generalised eigenvector (v^T Gamma v = 1):
    # r is strictly decreasing, so t_S is a unique root.
    d = 5
    U, _, Cb, Cw = mixture(d, 12)
    prob, proc = _problem(U, Cb, Cw, None, None, random_q(d, 2.0, seed=0))
    for t in (0.3, 1.0, 3.0):
        h = 1e-5 * t
        F, dF_dx, _ = prob.speciation_at(proc, t)
        fd = (
            np.log(speciation_snr(proc, Cb, Cw, t + h))
            - np.log(speciation_snr(proc, Cb, Cw, t - h))
        ) / (2 * h)
        assert dF_dx / t == pytest.approx(fd, rel=1e-6)
        assert dF_dx < 0
    assert _q_norm(random_q(d, 2.5, seed=0)) == pytest.approx(2.5)


# ----------------------------------------------------------------------------- cloning
def test_cloning_confirms_the_steered_speciation_time():
    # As in test_measure: d = 16, U eigenvalues 0.25..1.75, |mu|^2 = 40, sigma = 1; the
    # classes split along the fastest eigenvector and the current maximises t_S within
    # the optimal current's budget. t_S moves a long way (about 1.2 -> 4), and cloning
    # must find it within 10%.
    d, dt = 16, 0.01
    U, V, _ = random_spd(d, np.random.default_rng(0))
    mu = V[:, d - 1] * np.sqrt(40.0)
    Q, info = steer_q(
        U,
        np.outer(mu, mu),
        np.eye(d),
        objective="speciation_early",
        q_norm_max=np.linalg.norm(optimal_q(U), 2),
        generator=0,
    )
    t_pred = info["t_speciation"]
    assert t_pred > 1.5 * info["references"]["optimal"]["t_speciation"]
    proc = OUProcess(U, Q)
    score = GaussianMixtureScore(proc, np.stack([mu, -mu]), np.stack([np.eye(d)] * 2))
    axis = torch.tensor(mu, dtype=torch.float32)
    T = 2.0 * t_pred
    r = clone_agreement(
        score,
        proc,
        lambda x: (x @ axis > 0).long(),
        t_pred * np.array([0.7, 0.85, 1.0, 1.15, 1.3]),
        n_pairs=800,
        T=T,
        steps=int(T / dt),
        generator=torch.Generator().manual_seed(1),
    )
    meas = speciation_time_measured(r)
    assert meas["t"] == pytest.approx(t_pred, rel=0.10), (t_pred, meas, r["phi"])


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def data(two_class_files):
    return two_class_files


def invoke(*args):
    result = CliRunner().invoke(main, [*map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def assert_one_line_error(result, fragment):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0], result.output


def test_cli_steer_end_to_end(data):
    path, X, labels = data
    out = path / "q.npy"
    res = invoke(
        "steer",
        path / "x.npy",
        "--labels",
        path / "y.npy",
        "--objective",
        "speciation_early",
        "--out",
        out,
        "--json",
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    Q = np.load(out)
    U = u_from_data(X)
    b = np.linalg.norm(optimal_q(U), 2)
    assert Q.shape == (4, 4) and np.array_equal(Q, -Q.T)
    assert info["q_norm_max"] == pytest.approx(b) and np.linalg.norm(Q, 2) <= b * (1 + 1e-12)
    assert info["t_speciation"] > info["references"]["optimal"]["t_speciation"]
    assert info["t_speciation"] > info["references"]["zero"]["t_speciation"]
    assert info["reuse"].startswith("nonrev analyze")
    assert [p.name for p in path.iterdir() if "partial" in p.name] == []
    # `nonrev analyze --q` reads the file back and predicts the same times.
    ana = invoke(
        "analyze", path / "x.npy", "--labels", path / "y.npy", "--u", "data", "--q", out, "--json"
    )
    rep = json.loads(ana.output)
    assert rep["speciation"]["file"] == pytest.approx(info["t_speciation"], rel=1e-9)
    assert rep["collapse"]["file"] == pytest.approx(info["t_collapse"], rel=1e-9)
    assert rep["speciation"]["none"] == pytest.approx(
        info["references"]["zero"]["t_speciation"], rel=1e-9
    )
    # The table: before and after.
    table = invoke(
        "steer",
        path / "x.npy",
        "--objective",
        "speciation_late",
        "--min-rate",
        0.8,
        "--q-norm-max",
        3.0,
        "--out",
        path / "late.npy",
    )
    assert table.exit_code == 0, table.output
    for text in (
        "Q = none",
        "Q = optimal",
        "Q = steered",
        "t_S speciation",
        "t_C collapse",
        "rate >= 0.8",
        "||Q||_2 <= 3",
        "nonrev analyze",
    ):
        assert text in table.output, table.output
    late = np.load(path / "late.npy")
    assert np.linalg.norm(late, 2) <= 3.0 * (1 + 1e-12)
    assert OUProcess(U, late).relaxation_rate() >= 0.8


def test_cli_steer_errors(data):
    path, _, _ = data
    np.save(path / "q_old.npy", np.zeros((4, 4)))
    (path / "garbage.npy").write_bytes(b"\x93NUMPY nope")
    np.save(path / "u_bad.npy", np.eye(3))
    base = [path / "x.npy", "--objective", "speciation_early"]
    cases = [
        ([path / "missing.npy", "--objective", "speciation_late"], "no such file"),
        ([path / "garbage.npy", "--objective", "speciation_late"], "cannot read"),
        (base + ["--labels", path / "missing.npy"], "no such file"),
        (base + ["--u", path / "u_bad.npy"], "must be a (4, 4) matrix"),
        (base + ["--min-rate", 5.0], "not below Tr(U)/d"),
        (base + ["--q-norm-max", -1], "q_norm_max must be >= 0"),
        ([path / "x.npy", "--objective", "target_speciation"], "needs target"),
        (
            [path / "x.npy", "--objective", "window", "--q-norm-max", 0.01, "--min-rate", 0.9],
            "out of reach",
        ),
    ]
    for args, fragment in cases:
        assert_one_line_error(invoke("steer", *args, "--out", path / "q_old.npy"), fragment)
    # A failed run leaves an existing --out untouched and nothing beside it.
    assert np.array_equal(np.load(path / "q_old.npy"), np.zeros((4, 4)))
    for out, fragment in (
        (path / "nodir" / "q.npy", "does not exist"),
        (path / "q.txt", ".npy"),
        (path, "must end in .npy"),
    ):
        assert_one_line_error(invoke("steer", *base, "--out", out), fragment)
    usage = invoke("steer", path / "x.npy", "--out", path / "q.npy")
    assert usage.exit_code == 2 and "--objective" in usage.output
    assert [p.name for p in path.iterdir() if "partial" in p.name] == []


# ----------------------------------------------------------------------------- demo section
def test_demo_steering_section_and_switch(tmp_path):
    from nonrev.config import from_dict
    from nonrev.experiments.cell import spectrum_u
    from nonrev.experiments.headline import HeadlineConfig, run_headline
    from nonrev.experiments.steering import run_steering
    from nonrev.reports.headline import write_report

    tiny = {
        "dim": 4,
        "gammas": [0.0, 1.0],
        "speciation": {"n_pairs": 40, "branch_factors": [0.8, 1.2], "dt": 0.02},
        "collapse": {
            "dim": 4,
            "n_train": 20,
            "n_traj": 10,
            "dt": 0.05,
            "n_mc": 10,
            "entropy_times": 2,
        },
        "steering": {"n_random": 1, "max_iter": 20},
    }
    cfg = from_dict(HeadlineConfig, tiny)
    U, V, _ = spectrum_u(cfg.dim, cfg.spectrum_min, cfg.spectrum_max, cfg.seed)
    st = run_steering(cfg, U, V)
    json.dumps(st)
    assert [r["q"] for r in st["rows"]] == ["none", "optimal", "steered"]
    none, opt, steered = st["rows"]
    assert steered["t_predicted"] >= max(none["t_predicted"], opt["t_predicted"])
    assert steered["q_norm"] <= st["q_norm_max"] * (1 + 1e-12)
    assert np.array(st["Q"]).shape == (4, 4)
    off = from_dict(HeadlineConfig, {**tiny, "steering": {"enabled": False}})
    res = run_headline(off)
    assert res["steering"] is None
    files = write_report(res, tmp_path)
    assert "steering.png" not in files and not (tmp_path / "steering.png").exists()
    assert "## 4. Steering" not in (tmp_path / "report.md").read_text()
