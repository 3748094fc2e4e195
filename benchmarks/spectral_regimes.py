"""Regime predictions of the spectral process in its blocks against its dense twin (issue 22).

    python -m benchmarks.spectral_regimes [--n 2000] [--size 32] [--k 1e3] [--seed 0] [--json]

Data: ``n`` grayscale ``size x size`` patches of scikit-learn's two sample photos
(:func:`benchmarks.spectral.sample_patches`). The two photos' patches do not separate
as classes (``lambda_max(C_b, C_w) <= 1``: ``t_S = 0``), so ``t_S`` is the unlabelled
criterion (``C_b`` = the total covariance, ``C_w = 0``). Process:
:meth:`nonrev.process.SpectralProcess.from_data` with condition cap ``k``, without and
with the optimal per-group current.

For each current, ``t_S`` (two classes) and ``t_C`` (``N = n``) are computed

* in the blocks, from the data (:func:`nonrev.regimes.speciation_time_from_data`,
  :func:`nonrev.regimes.collapse_time_from_data`: the block-diagonal part of the
  data's covariances from the DCT coefficients, O(n d g), then O(d g^2) per criterion
  evaluation);
* by the dense twin (``process.dense()``, d x d matrices) on the same block-diagonal
  covariances (``basis.dense_np`` of the blocks): the same times, up to the root
  finder's 1e-8;
* by the dense twin on the full sample covariances, which the block part bounds
  (``t_C`` from above, ``t_S`` from below; :mod:`nonrev.regimes.theory`): how much
  the correlations between groups move the times on real patches.

Reported: the times, their relative differences, and wall time and peak traced memory
(``tracemalloc``: numpy's allocations) as ratios dense over blocks, all in one run:
``criteria`` (both given the block-diagonal covariances: the blocks as (m, g, g), the
dense twin as d x d) and ``from data`` (blocks: coefficients, block covariances and
criteria; dense: the full sample covariance and the criteria). Single-threaded (set
``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

from benchmarks.spectral import sample_patches
from nonrev.linalg import sample_covariance
from nonrev.process.spectral import SpectralProcess
from nonrev.regimes import (
    collapse_time,
    collapse_time_from_data,
    covariance_blocks,
    speciation_time,
    speciation_time_from_data,
)


def _measure(fn):
    """``(result, seconds, peak traced bytes)`` of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def run(n: int = 2000, size: int = 32, k: float = 1e3, seed: int = 0) -> dict:
    imgs = sample_patches(n, size, seed)
    X = imgs.reshape(n, -1)
    d = X.shape[1]
    rows = []
    for current in ("none", "optimal"):
        sp = SpectralProcess.from_data(imgs, k=k, current=current)
        dense = sp.dense()
        C = covariance_blocks(sp, X)
        C_d = sp.basis.dense_np(C)

        def blocks_criteria(sp=sp, C=C):
            return speciation_time(sp, C), collapse_time(sp, C, n)

        def dense_criteria(dense=dense, C_d=C_d):
            return speciation_time(dense, C_d), collapse_time(dense, C_d, n)

        def blocks_data(sp=sp):
            return speciation_time_from_data(sp, X), collapse_time_from_data(sp, X)

        def dense_data(dense=dense):
            C_full = sample_covariance(X)
            return speciation_time(dense, C_full), collapse_time(dense, C_full, n)

        (t_s, t_c), wall_b, peak_b = _measure(blocks_criteria)
        (t_s_d, t_c_d), wall_d, peak_d = _measure(dense_criteria)
        (t_s_x, t_c_x), wall_bx, peak_bx = _measure(blocks_data)
        (t_s_full, t_c_full), wall_dx, peak_dx = _measure(dense_data)
        assert (t_s_x, t_c_x) == (t_s, t_c)
        rows.append(
            {
                "current": current,
                "rate": sp.relaxation_rate(),
                "t_S": t_s,
                "t_C": t_c,
                "t_S_dense": t_s_d,
                "t_C_dense": t_c_d,
                "rel_diff_t_S": abs(t_s - t_s_d) / t_s_d,
                "rel_diff_t_C": abs(t_c - t_c_d) / t_c_d,
                "t_S_full_cov": t_s_full,
                "t_C_full_cov": t_c_full,
                "criteria": {
                    "blocks_wall_s": wall_b,
                    "dense_wall_s": wall_d,
                    "time_ratio": wall_d / wall_b,
                    "blocks_peak_bytes": peak_b,
                    "dense_peak_bytes": peak_d,
                    "memory_ratio": peak_d / peak_b,
                    "blocks_peak_over_one_dxd": peak_b / (8.0 * d * d),
                },
                "from_data": {
                    "blocks_wall_s": wall_bx,
                    "dense_wall_s": wall_dx,
                    "time_ratio": wall_dx / wall_bx,
                    "blocks_peak_bytes": peak_bx,
                    "dense_peak_bytes": peak_dx,
                    "memory_ratio": peak_dx / peak_bx,
                },
            }
        )
    return {"n": n, "shape": [1, size, size], "d": d, "k": k, "seed": seed, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--k", type=float, default=1e3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    res = run(args.n, args.size, args.k, args.seed)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{args.n} patches 1x{args.size}x{args.size} (d = {res['d']}), data:k = {args.k:g}")
    for r in res["rows"]:
        c, x = r["criteria"], r["from_data"]
        print(f"current {r['current']}: rate {r['rate']:.4f}")
        print(
            f"  t_S blocks / dense twin / dense full cov: {r['t_S']:.6g} / "
            f"{r['t_S_dense']:.6g} / {r['t_S_full_cov']:.6g} (rel diff {r['rel_diff_t_S']:.1e})"
        )
        print(
            f"  t_C blocks / dense twin / dense full cov: {r['t_C']:.6g} / "
            f"{r['t_C_dense']:.6g} / {r['t_C_full_cov']:.6g} (rel diff {r['rel_diff_t_C']:.1e})"
        )
        print(
            f"  criteria, dense over blocks: time {c['time_ratio']:.1f}x, peak memory "
            f"{c['memory_ratio']:.1f}x (blocks peak = {c['blocks_peak_over_one_dxd']:.3f} "
            f"of one d x d float64)"
        )
        print(
            f"  from data, dense over blocks: time {x['time_ratio']:.1f}x, peak memory "
            f"{x['memory_ratio']:.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
