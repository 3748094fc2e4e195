"""The spectral diffusers scheduler at image scale (issue 22): table memory and the cost
of a sampler step against one UNet evaluation.

    python -m benchmarks run --only image_scale [--full]
    python -m benchmarks.image_scale [--full]

Process: :class:`~nonrev.process.SpectralProcess` ``data:100`` with the optimal current
(groups of 2), ``u`` from 512 random RGB patches of scikit-learn's two sample photos,
scaled to [-1, 1]; scheduler: the image example's (``examples/train_images.py``,
``make_scheduler``: 1000 training timesteps, ``x_0`` prediction).

For each shape (quick: 3x32x32; full: 3x32x32 and 3x64x64):

* (a) memory: the scheduler's add_noise tables ``M_t``, ``R_t`` at all 1000 timesteps,
  float64 blocks (``sch._tables``) plus the float32 copy that training uses
  (``sch._train_tables(torch.float32, "cpu")``), against the dense tables' size
  ``2 * 1000 * d^2 * 8`` bytes (computed, not built). Goals: under 1% of dense and under
  256 MB at 3x32x32. The time to build them is reported (the gDDIM factor ``R_t`` is a
  Magnus integration per group; it dominates).
* (b) time: everything in one sampler step except the network, i.e. ``scheduler.step``
  with a given model output (batch 64, float32, 20 steps, ``dpmpp_2m`` and ``ancestral``;
  per-step time = a full pass divided by the steps) against one forward evaluation of the
  example's UNet (``make_unet(size, 3)``, default width) on the same batch of 64, in the
  same run, interleaved (each repeat times one UNet evaluation and one pass of each
  method, each after a warm-up call), medians over the repeats. Goal: step / UNet <= 0.1.
  ``set_timesteps`` (the coefficients, once per sampling run) is reported beside.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import machine_info, median_time

N_TRAIN = 1000
BATCH = 64
STEPS = 20
METHODS = ("dpmpp_2m", "ancestral")
GOALS = {"tables_over_dense": 0.01, "tables_mb": 256.0, "step_over_unet": 0.10}
_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_images.py"


def _example():
    """examples/train_images.py as a module (its make_unet and make_scheduler)."""
    spec = importlib.util.spec_from_file_location("train_images_example", _EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rgb_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` RGB ``size``-square crops (n, 3, size, size) in [-1, 1] of scikit-learn's
    two sample photos (:func:`nonrev.data.datasets.photo_patches`)."""
    from nonrev.data.datasets import photo_patches

    return photo_patches(n, size, seed, color="rgb") / 127.5 - 1.0


def bench_shape(size: int, device: str = "cpu", repeats: int = 5) -> dict:
    """Memory (a) and step-versus-UNet time (b) at 3 x size x size (module docstring)."""
    from nonrev.process import SpectralProcess

    ex = _example()
    proc = SpectralProcess.from_data(rgb_patches(512, size), k=100, current="optimal")
    d = proc.dim
    row: dict = {
        "shape": [3, size, size],
        "d": d,
        "groups": int(proc.groups.shape[1]),
        "relaxation_rate": float(proc.relaxation_rate()),
    }
    sch = ex.make_scheduler(proc, N_TRAIN, "sample", "dpmpp_2m")
    t0 = time.perf_counter()
    M32, R32 = sch._train_tables(torch.float32, "cpu")
    row["tables_build_s"] = time.perf_counter() - t0
    tables = sum(a.nbytes for a in sch._tables) + M32.nbytes + R32.nbytes
    dense = 2 * N_TRAIN * d * d * 8
    row.update(
        tables_bytes=int(tables),
        float64_bytes=int(sum(a.nbytes for a in sch._tables)),
        dense_bytes=int(dense),
        tables_over_dense=tables / dense,
        tables_mb=tables / 2**20,
        dense_gb=dense / 2**30,
    )

    unet = ex.make_unet(size, 3).to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(BATCH, 3, size, size, generator=gen).to(device)
    t_unet = torch.full((BATCH,), N_TRAIN - 1, device=device)
    out = torch.tanh(x)  # a fixed "network output" (an x_0 prediction)
    passes = {}
    row["methods"] = {}
    for method in METHODS:
        s = ex.make_scheduler(proc, N_TRAIN, "sample", method)
        t0 = time.perf_counter()
        s.set_timesteps(STEPS, device=device)
        row["methods"][method] = {"set_timesteps_s": time.perf_counter() - t0}

        def run_steps(s=s):
            y = x
            g = torch.Generator(device=device).manual_seed(1)
            for k in s.timesteps:
                y = s.step(out, k, y, generator=g).prev_sample
            return y

        passes[method] = run_steps
    # interleaved: one UNet evaluation, then one pass of each method, per repeat, so that
    # a change in the machine's load falls on both sides of the ratio
    times: dict = {"unet": [], **{m: [] for m in METHODS}}
    with torch.no_grad():
        for _ in range(repeats):
            times["unet"].append(
                median_time(lambda: unet(x, t_unet).sample, repeats=1, device=device)
            )
            for method, fn in passes.items():
                times[method].append(median_time(fn, repeats=1, device=device) / STEPS)
    row["unet_s"] = statistics.median(times["unet"])
    for method in METHODS:
        per_step = statistics.median(times[method])
        row["methods"][method].update(step_s=per_step, step_over_unet=per_step / row["unet_s"])
    row["goals_met"] = {
        "tables_over_dense": bool(row["tables_over_dense"] < GOALS["tables_over_dense"]),
        "tables_mb": bool(row["tables_mb"] < GOALS["tables_mb"]),
        "step_over_unet": bool(
            max(m["step_over_unet"] for m in row["methods"].values()) <= GOALS["step_over_unet"]
        ),
    }
    return row


def run(quick: bool = True, device: str = "cpu") -> dict:
    """Quick: 3x32x32; full: 3x32x32 and 3x64x64 (the tables at 3x64x64 take about
    four times as long to build as at 3x32x32)."""
    sizes = (32,) if quick else (32, 64)
    cases = [bench_shape(s, device=device, repeats=5 if quick else 7) for s in sizes]
    first = cases[0]  # the goals are stated at 3x32x32
    return {
        "machine": machine_info(device),
        "n_train": N_TRAIN,
        "batch": BATCH,
        "steps": STEPS,
        "goals": GOALS,
        "cases": cases,
        "goals_met": first["goals_met"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="3x32x32 and 3x64x64")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(run(quick=not args.full, device=args.device), indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
