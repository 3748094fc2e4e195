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
    table = samplers.steps_table(
        proc,
        GaussianMixtureScore(proc, means, covs, w),
        ref,
        200,
        [5, 10],
        T=4.0,
        methods=("ancestral", "ddim"),
    )
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
    rows = runner.headline_rows(
        "horizon", {"bound": 4.0, "speedup": 3.0, "sample_level": {"speedup": 2.0}}
    )
    assert rows[0][2] == "3.00"
    rows = runner.headline_rows("empirical_score", {"gemm_ratio": 0.7, "naive_speedup": 9.0})
    assert [r[2] for r in rows] == ["0.70", "9.0"]


def test_image_scale_core_tiny():
    from benchmarks import image_scale

    res = {"batch": 64, "cases": [image_scale.bench_shape(4, repeats=1)]}
    c = res["cases"][0]
    d = 3 * 4 * 4
    # float64 blocks of M_t and R_t (d g values each per timestep) and their float32 copy
    assert c["d"] == d and c["tables_bytes"] == image_scale.N_TRAIN * 2 * d * 2 * (8 + 4)
    assert c["dense_bytes"] == 2 * image_scale.N_TRAIN * d * d * 8
    assert set(c["methods"]) == {"dpmpp_2m", "ancestral"}
    assert all(m["step_over_unet"] > 0 for m in c["methods"].values())
    rows = runner.headline_rows("image_scale", res)
    assert len(rows) == 2 and rows[0][2].startswith(f"{100 * 3 / d:.3f}%")  # 48 d / (16 d^2)
