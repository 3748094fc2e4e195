"""Finite-N collapse: the forward-path prediction of the median lock time against the
reverse dynamics under the exact empirical score (collapse_lock_times)."""

import numpy as np
import pytest
import torch

from nonrev import OUProcess, optimal_q
from nonrev.experiments.cell import spectrum_u
from nonrev.experiments.collapse_moves import measured_median
from nonrev.regimes import collapse_time, collapse_time_finite
from nonrev.regimes.finite import finite_lock_times

# Over three training-set seeds the finite-N error was +1.6/+0.7/-0.9% (iso) and
# +1.1/+2.4/+2.3% (aniso); the measured median of one training set itself spreads ~1%.
CASES = {
    "iso": (np.eye(32), None, np.eye(32), 500),
    "aniso-optimal-aniso-data": (
        spectrum_u(16, 0.25, 1.75, seed=1)[0],
        "optimal",
        np.diag(np.geomspace(0.25, 4.0, 16)),
        400,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_finite_prediction_within_3_percent_of_measured_lock_time(name):
    # Issue 16: within 3% of the measured median lock time (2000 trajectories), on an
    # independent training set; the asymptotic REM time misses by more (5-8% here).
    U, q, C, n_train = CASES[name]
    proc = OUProcess(U, optimal_q(U) if q else None)
    torch.manual_seed(0)
    measured = measured_median(proc, C, n_train)
    predicted = collapse_time_finite(proc, C, n_train, seed=7)
    asymptotic = collapse_time(proc, C, n_train)
    assert abs(predicted / measured - 1) < 0.03, (predicted, measured)
    assert abs(asymptotic / measured - 1) > abs(predicted / measured - 1)


def test_stopping_at_the_median_changes_nothing():
    proc = OUProcess(np.eye(8))
    full = finite_lock_times(proc, np.eye(8), 60, n_traj=300, dt=0.02, seed=3)
    early = finite_lock_times(proc, np.eye(8), 60, n_traj=300, dt=0.02, seed=3, stop_at_median=True)
    assert early["median"] == full["median"]
    assert early["steps"] < full["steps"]
    finite = np.isfinite(early["lock_times"])
    np.testing.assert_array_equal(early["lock_times"][finite], full["lock_times"][finite])


@pytest.mark.parametrize("q", [None, "optimal"])
def test_pruned_search_gives_the_same_lock_times(q):
    # Pruning (candidates + full search every `refresh` steps + bridge check) must not
    # change any lock time: same seed, same paths, every path equal.
    U = spectrum_u(12, 0.25, 1.75, seed=2)[0] if q else np.eye(12)
    proc = OUProcess(U, optimal_q(U) if q else None)
    kw = dict(n_traj=400, dt=0.01, seed=4)
    full = finite_lock_times(proc, np.eye(12), 300, candidates=0, **kw)
    pruned = finite_lock_times(proc, np.eye(12), 300, candidates=8, refresh=4, **kw)
    np.testing.assert_array_equal(pruned["lock_times"], full["lock_times"])
    if q is None:  # at this small d the anisotropic case redoes most windows (no saving)
        assert pruned["full_searches"] < full["full_searches"]


def test_given_training_set():
    proc = OUProcess(np.eye(6))
    X = np.random.default_rng(0).standard_normal((80, 6))
    r = finite_lock_times(proc, np.eye(6), 80, n_traj=100, dt=0.02, seed=1, points=X)
    assert np.all(r["lock_times"] > 0)
    with pytest.raises(ValueError, match="points"):
        finite_lock_times(proc, np.eye(6), 81, n_traj=100, points=X)


def test_finite_bad_inputs():
    proc = OUProcess(np.eye(4))
    for call, name in [
        (lambda: collapse_time_finite(np.eye(4), np.eye(4), 100), "process"),
        (lambda: collapse_time_finite(proc, np.eye(3), 100), "data_cov"),
        (lambda: collapse_time_finite(proc, np.eye(4), 1), "n_train"),
        (lambda: collapse_time_finite(proc, np.eye(4), 100, n_traj=0), "n_traj"),
        (lambda: collapse_time_finite(proc, np.eye(4), 100, dt=0.0), "dt"),
        (lambda: collapse_time_finite(proc, np.zeros((4, 4)), 100), "no variance"),
        (lambda: finite_lock_times(proc, np.eye(4), 100, candidates=-1), "candidates"),
        (lambda: finite_lock_times(proc, np.eye(4), 100, refresh=0), "refresh"),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


def test_predict_regimes_reports_both_collapse_times(rng):
    from nonrev.linalg import sample_covariance
    from nonrev.regimes import predict_regimes

    X = rng.standard_normal((300, 6))
    U = np.diag(np.linspace(0.5, 1.5, 6))
    out = predict_regimes(X, U, {"none": None, "optimal": optimal_q(U)}, finite_n=True, seed=2)
    assert set(out["collapse_finite"]) == {"none", "optimal"}
    for name, Q in (("none", None), ("optimal", optimal_q(U))):
        proc = OUProcess(U, Q)
        ref = collapse_time_finite(proc, sample_covariance(X), 300, seed=2)
        assert out["collapse_finite"][name] == ref
        # finite N sits above the asymptotic time here, as in every case measured
        assert out["collapse_finite"][name] > out["collapse"][name]
    assert "collapse_finite" not in predict_regimes(X, U, {"none": None})
