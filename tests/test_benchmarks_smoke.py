"""The benchmark suite cannot rot: each benchmark's core runs on a tiny case, and the
runner's table builder accepts every benchmark's output shape."""

import numpy as np

from benchmarks import __main__ as runner
from benchmarks import horizon, kernel, reference, samplers
from nonrev.scores import GaussianMixtureScore


def test_kernel_core_tiny():
    row = kernel.bench_d(8, n_points=12, n_sample=3, max_grid_bytes=1e9)
    assert row["own_points_timed"] == 12 and row["speedup_vs_expm"] > 0
    assert row["naive_full_sigma_rel_error_at_t1"] >= 0


def test_samplers_core_tiny():
    proc, means, covs, w = samplers.mixture_problem()
    ref = samplers.draw_mixture(means, covs, w, 200, np.random.default_rng(0))
    table = samplers.steps_table(proc, GaussianMixtureScore(proc, means, covs, w), ref, 200,
                                 [5, 10], T=4.0, methods=("ancestral", "ddim"))
    assert set(table) == {"ancestral", "ddim"}
    assert table["ddim"]["steps_needed"] in (5, 10)


def test_horizon_closed_form_tiny():
    res = horizon.closed_form(d=6, spike=4.0)
    assert res["T_reversible"] > res["T_optimal"] > 0
    assert 1.0 < res["speedup"] <= res["bound"] * 1.05


def test_reference_loop_tiny():
    mu = np.zeros(4)
    mu[0] = 3.0
    phi, lo, hi = reference.reference_phi(mu, 1.0, [0.5, 1.0], n_pairs=50, T=2.0, dt=0.05)
    assert phi.shape == (2,) and np.all(lo <= phi) and np.all(phi <= hi)


def test_runner_table_rows():
    rows = runner.headline_rows("horizon", {"bound": 4.0, "speedup": 3.0,
                                            "sample_level": {"speedup": 2.0}})
    assert rows[0][2] == "3.00"
    rows = runner.headline_rows("empirical_score", {"gemm_ratio": 0.7, "naive_speedup": 9.0})
    assert [r[2] for r in rows] == ["0.70", "9.0"]
