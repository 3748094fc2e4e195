"""The map of t_C moves: t_C(Q) / t_C(0) - 1 over random (U, data covariance) problems
for the optimal current, gamma-scaled currents and the steered currents
(speciation_early, window), asymptotic for every cell, finite-N and measured on
subsets (``nonrev.experiments.collapse_moves``; the same cells run as a sweep with
``nonrev sweep examples/sweep_collapse_moves.yaml``).

    python -m benchmarks.collapse_moves            # quick
    python -m benchmarks.collapse_moves --full     # the table of docs/THEORY.md section 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from nonrev.experiments.collapse_moves import CollapseMovesConfig, collapse_moves_cell

from ._common import machine_info

CURRENTS = ("optimal", "gamma0.5", "gamma2", "speciation_early", "window")


def plan(quick: bool, part: str = "all"):
    """(dim, n_train, seeds, finite, measured) blocks; ``part``: ``subset`` (the
    finite-N and measured cells), ``asymptotic`` (the others) or ``all``."""
    if quick:
        return [(8, 500, range(4), True, True), (16, 2000, range(4), False, False)]
    subset = [(8, 500, range(6), True, True), (16, 2000, range(6), True, False)]
    rest = [
        (16, 20000, range(8), False, False),
        (32, 2000, range(8), False, False),
        (32, 20000, range(8), False, False),
        (64, 5000, range(6), False, False),
    ]
    return {"subset": subset, "asymptotic": rest, "all": subset + rest}[part]


def run(quick: bool = True, device: str = "cpu", part: str = "all") -> dict:
    t0 = time.perf_counter()
    cells = []
    for dim, n_train, seeds, finite, measured in plan(quick, part):
        for seed in seeds:
            cfg = CollapseMovesConfig(
                dim=dim, n_train=n_train, seed=seed, finite=finite, measured=measured, n_traj=2000
            )
            row = {"dim": dim, "n_train": n_train, "seed": seed, **collapse_moves_cell(cfg)}
            cells.append(row)
            print(json.dumps(row), flush=True)
    return {
        "cells": cells,
        "summary": summary(cells),
        "seconds": time.perf_counter() - t0,
        "machine": machine_info(device),
    }


def summary(cells) -> list[dict]:
    out = []
    for name in CURRENTS:
        for tag in ("", "_finite", "_measured"):
            vals = np.array([c[f"{name}_dtC{tag}"] for c in cells if f"{name}_dtC{tag}" in c])
            if vals.size == 0:
                continue
            ds = np.array([c[f"{name}_dtS"] for c in cells if f"{name}_dtC{tag}" in c])
            out.append(
                {
                    "current": name,
                    "kind": tag.strip("_") or "asymptotic",
                    "cells": int(vals.size),
                    "min": float(vals.min()),
                    "median": float(np.median(vals)),
                    "max": float(vals.max()),
                    "earlier_than_1pct": int(np.sum(vals < -0.01)),
                    "dtS_median_abs": float(np.median(np.abs(ds))),
                }
            )
    return out


def table(rows) -> str:
    out = [
        "| current | t_C move | cells | min | median | max | moved earlier by > 1% "
        "| median abs t_S move |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['current']} | {r['kind']} | {r['cells']} | {100 * r['min']:+.1f}% | "
            f"{100 * r['median']:+.1f}% | {100 * r['max']:+.1f}% | "
            f"{r['earlier_than_1pct']} | {100 * r['dtS_median_abs']:.0f}% |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--part", choices=("all", "subset", "asymptotic"), default="all")
    ap.add_argument("--from-log", help="summarise the JSON lines of an earlier run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.from_log:
        with open(args.from_log) as fh:
            cells = [json.loads(line) for line in fh if line.startswith("{")]
        print(table(summary(cells)))
        raise SystemExit
    res = run(quick=not args.full, part=args.part)
    print(table(res["summary"]))
