"""EmpiricalScore against the machine's GEMM rate and against a naive implementation.

For each (B, N, d), in float32 at a fixed t = 0.5 with the per-t cache warm (the
sampler's steady state: a sampler calls the score many times at each grid time; the
O(N d^2 + d^3) setup of a new t is timed separately as ``setup_s``):

* ``score_gflops``: 4 B N d flops per call (two B x N x d products) / median time;
* ``gemm_gflops``: the rate of one ``x @ points.T`` (2 B N d flops) on the same
  shapes, timed in the same run, alternating with the score;
  ``gemm_ratio`` = score rate / GEMM rate = ``2 t_gemm / t_score``, the median over
  back-to-back pairs (goal >= 0.6: everything besides the two GEMMs costs at most
  ~1.3 GEMM-times);
* ``naive_s``: a direct implementation that forms the B x N x d tensor of whitened
  differences ``L^{-1}(x - M a_mu)`` (its per-t whitened points precomputed, like our
  cache), chunked over B so that one chunk holds at most ~4 GB;
  ``naive_speedup = naive_s / score_s`` (goal >= 5);
* peak memory of one call of each: on CUDA ``torch.cuda.max_memory_allocated`` above
  what was allocated before the call; on CPU the rise of the process's peak resident
  set (``VmHWM`` reset through ``/proc/self/clear_refs``, Linux) above the resident
  set before the call, and in every case an analytic estimate from the largest
  tensors alive at once.

``python -m benchmarks.empirical_score [--full] [--device cuda]`` prints the results
dict as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time

import numpy as np
import torch

from nonrev import OUProcess, optimal_q
from nonrev.linalg import random_spd
from nonrev.scores import EmpiricalScore, default_chunk_size

from ._common import machine_info, median_time, sync

CASES = [(1024, 20000, 256), (256, 2000, 64)]
T = 0.5
NAIVE_BYTES = 4 * 2**30  # the naive B x N x d chunk holds at most this much
GOALS = {"gemm_ratio": 0.6, "naive_speedup": 5.0}


def _process(d: int, seed: int = 0) -> OUProcess:
    U, _ = random_spd(np.geomspace(0.1, 10.0, d), seed)
    return OUProcess(U, optimal_q(U))


class NaiveScore:
    """The direct formula: w_mu = softmax(-1/2 |L^{-1}(x - M a_mu)|^2), B x N x d at once."""

    def __init__(self, process, points, t):
        M, Sigma = process.mean_and_cov(t)
        Linv = np.linalg.inv(np.linalg.cholesky(Sigma))
        P = Linv.T @ Linv
        to = dict(dtype=points.dtype, device=points.device)
        self.points = points
        self.LinvT = torch.as_tensor(Linv.T, **to)
        self.images = points @ torch.as_tensor((Linv @ M).T, **to)  # rows (L^{-1} M a_mu)^T
        self.P = torch.as_tensor(P, **to)
        self.PM = torch.as_tensor(P @ M, **to)
        N, d = points.shape
        self.rows = max(1, NAIVE_BYTES // (N * d * points.element_size()))

    @torch.no_grad()
    def __call__(self, x):
        y = x @ self.LinvT
        abar = torch.empty_like(x)
        for s in range(0, x.shape[0], self.rows):
            diff = y[s : s + self.rows, None, :] - self.images[None]  # (b, N, d)
            sq = diff.pow_(2).sum(-1)
            del diff
            w = torch.softmax(-0.5 * sq, dim=1)
            abar[s : s + self.rows] = w @ self.points
        return abar @ self.PM.T - x @ self.P


def _rss_kb() -> tuple[int, int]:
    with open("/proc/self/status") as fh:
        text = fh.read()
    return tuple(int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM"))


def _peak_mb(fn, device: str) -> float | None:
    """Extra memory at the peak of one call of ``fn`` (MB), measured; None if unavailable."""
    if device.startswith("cuda"):
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident set
    except OSError:
        return None
    rss0, _ = _rss_kb()
    fn()
    _, hwm = _rss_kb()
    return max(hwm - rss0, 0) / 1024


def _interleaved(
    fns: dict, budget_s: float, device: str, min_repeats: int = 5, max_repeats: int = 500
) -> dict:
    """Times of each ``fn`` in ``fns``, run in turn (after one warm-up each), as many
    rounds as fit in about ``budget_s`` seconds (between ``min_repeats`` and
    ``max_repeats``), so that a shared machine's load falls on all of them alike."""
    times = {name: [] for name in fns}
    t0 = time.perf_counter()
    for fn in fns.values():
        fn()
    sync(device)
    round_s = max(time.perf_counter() - t0, 1e-9)
    repeats = int(min(max_repeats, max(min_repeats, budget_s / round_s)))
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_time(fn, repeats=1, warmup=0, device=device))
    return times


def _case(B: int, N: int, d: int, *, device: str, budget_s: float, naive_repeats: int) -> dict:
    wall0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(N, d, generator=gen).to(device)
    x = torch.randn(B, d, generator=gen).to(device)
    process = _process(d)
    score = EmpiricalScore(process, points)
    chunk = default_chunk_size(B, N, 4)

    t0 = time.perf_counter()
    ref = score(x, T)  # cold: builds the per-t cache
    sync(device)
    cold = time.perf_counter() - t0
    peak_score = _peak_mb(lambda: score(x, T), device)

    # The reference GEMM writes into a preallocated output, so that it pays no page
    # faults for a fresh B x N block (the score allocates its one block per call).
    gemm_out = torch.empty(B, N, device=device)
    times = _interleaved(
        {"score": lambda: score(x, T), "gemm": lambda: torch.mm(x, points.T, out=gemm_out)},  # noqa: F821
        budget_s,
        device,
    )
    t_score, t_gemm = (statistics.median(times[k]) for k in ("score", "gemm"))
    # Ratio of each (score, gemm) pair, measured back to back, then the median.
    pair_ratio = statistics.median(2.0 * g / s for s, g in zip(times["score"], times["gemm"]))
    del gemm_out

    # The naive version is slow: its first call gives the peak memory, a time and the
    # agreement with the score; ``naive_repeats - 1`` more calls are only timed.
    naive = NaiveScore(process, points, T)
    first = {}

    def naive_first():
        t0 = time.perf_counter()
        first["out"] = naive(x)
        sync(device)
        first["s"] = time.perf_counter() - t0

    peak_naive = _peak_mb(naive_first, device)
    naive_err = float((first["out"] - ref).norm() / ref.norm())
    naive_times = [first["s"]] + [
        median_time(lambda: naive(x), repeats=1, warmup=0, device=device)
        for _ in range(naive_repeats - 1)
    ]
    t_naive = statistics.median(naive_times)

    item = 4
    naive_rows = min(B, naive.rows)
    analytic = {
        # logits/weights block, B x d accumulator, v and the output
        "score": (B * chunk + 4 * B * d) * item / 2**20,
        # one b x N x d difference chunk, B x N logits and weights
        "naive": (naive_rows * N * d + 2 * naive_rows * N + 4 * B * d) * item / 2**20,
    }
    flops = 4.0 * B * N * d
    out = {
        "B": B,
        "N": N,
        "d": d,
        "t": T,
        "dtype": "float32",
        "chunk_size": chunk,
        "score_s": t_score,
        "setup_s": max(cold - t_score, 0.0),
        "score_gflops": flops / t_score / 1e9,
        "gemm_s": t_gemm,
        "gemm_gflops": 2.0 * B * N * d / t_gemm / 1e9,
        "naive_s": t_naive,
        "naive_rows_per_chunk": naive_rows,
        "naive_rel_diff": naive_err,
        "peak_mem_mb_measured": {"score": peak_score, "naive": peak_naive},
        "peak_mem_mb_analytic": analytic,
        "timed_pairs": len(times["score"]),
        "gemm_ratio": pair_ratio,
        "naive_speedup": t_naive / t_score,
    }
    out["case_wall_s"] = time.perf_counter() - wall0
    return out


def run(quick: bool = True, device: str = "cpu", threads: int | None = None) -> dict:
    """Benchmark EmpiricalScore on ``CASES``; see the module docstring for the fields.

    ``quick`` keeps the shapes and times fewer repeats (interleaved score/GEMM pairs
    for about 3 s per case, at least 5, and 1 naive call; ``full``: 10 s and 3 naive
    calls). ``threads`` sets ``torch.set_num_threads``
    for the run (default: torch's own choice). ``gemm_ratio`` is the median over the
    back-to-back pairs of ``2 t_gemm / t_score``. The 1-minute load average before and
    after is reported: on a shared machine other processes change the numbers.
    """
    torch.manual_seed(0)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    budget_s, naive_repeats = (3.0, 1) if quick else (10.0, 3)
    load_before = os.getloadavg()[0]
    try:
        cases = [
            _case(B, N, d, device=device, budget_s=budget_s, naive_repeats=naive_repeats)
            for B, N, d in CASES
        ]
    finally:
        info = machine_info(device)
        torch.set_num_threads(old_threads)
    summary = {k: min(c[k] for c in cases) for k in GOALS}
    return {
        "benchmark": "empirical_score",
        "quick": quick,
        "steady_state": f"per-t cache warm at t = {T} (setup of a new t timed as setup_s)",
        "flops_per_call": "4 B N d",
        "naive": (
            f"B x N x d whitened differences, chunked over B to <= {NAIVE_BYTES / 2**30:g} GiB"
        ),
        "peak_memory": (
            "cuda: torch.cuda.max_memory_allocated rise; cpu: VmHWM rise over VmRSS "
            "(clear_refs reset; memory the allocator reuses is not seen); "
            "analytic: largest tensors alive at once"
        ),
        "cases": cases,
        **summary,
        "goals": GOALS,
        "goals_met": {k: bool(summary[k] >= GOALS[k]) for k in GOALS},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "machine": info,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    print(json.dumps(run(quick=not args.full, device=args.device, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
