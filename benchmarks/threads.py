"""Thread pools (issue 23): the README's Python worked example, run as written in a
fresh interpreter, against the same run with one thread per pool.

    python -m benchmarks.threads [--repeats 3] [--control]

Each run is a fresh ``python`` child (pools are sized when the libraries load), in
the order as-written, one-thread, as-written, ... so that slow drifts of the
machine's load hit both. "As written" removes ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``NONREV_THREADS`` from the
environment (the libraries' default pools, one thread per core); "one thread" sets
the first three to 1. The figure of merit is the ratio of the median wall times
(goal: at most 1.5). ``--control`` adds the same pair for a short piece of the
example (``nonrev.sample`` of the mixture at 50 steps, timed inside the child: the
sampling call only), with nonrev's own limits and with them switched off
(``NONREV_THREADS=none``): how slow the default pools are without
:mod:`nonrev.threads` (the full example took several minutes that way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info

README = Path(__file__).resolve().parent.parent / "README.md"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NONREV_THREADS")
GOAL = 1.5

PIECE = """
import numpy as np, torch, nonrev
from nonrev.scores import GaussianMixtureScore
d = 16
rng = np.random.default_rng(0)
V, _ = np.linalg.qr(rng.standard_normal((d, d)))
U = (V * np.linspace(0.25, 1.75, d)) @ V.T
proc = nonrev.OUProcess(U, nonrev.optimal_q(U))
mu = np.sqrt(40) * V[:, 0]
score = GaussianMixtureScore(proc, np.stack([mu, -mu]), np.stack([np.eye(d)] * 2))
import time
t0 = time.perf_counter()
nonrev.sample(score, proc, n=1000, steps=50, generator=torch.Generator().manual_seed(1))
print("SECONDS", time.perf_counter() - t0)
"""


def readme_example() -> str:
    """The first ```python block of README.md (the worked example)."""
    m = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    if m is None:
        raise RuntimeError(f"{README}: no ```python block")
    return m.group(1)


def environment(one_thread: bool, nonrev_threads: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if one_thread:
        env.update({k: "1" for k in THREAD_VARS[:3]})
    if nonrev_threads is not None:
        env["NONREV_THREADS"] = nonrev_threads
    return env


def time_child(code: str, env: dict, timeout: float) -> float:
    """Wall seconds of ``python -c code`` (a fresh interpreter, imports included), or
    the seconds the child prints on a line ``SECONDS x`` (a timed piece)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        timeout=timeout,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    wall = time.perf_counter() - t0
    own = [float(line.split()[1]) for line in out.splitlines() if line.startswith("SECONDS ")]
    return own[-1] if own else wall


def pair(code: str, repeats: int, timeout: float, nonrev_threads: str | None = None) -> dict:
    default, single = [], []
    for _ in range(repeats):
        default.append(time_child(code, environment(False, nonrev_threads), timeout))
        single.append(time_child(code, environment(True, nonrev_threads), timeout))
    ratio = statistics.median(default) / statistics.median(single)
    return {"default_s": default, "one_thread_s": single, "ratio": ratio}


def run(
    quick: bool = True, device: str = "cpu", repeats: int | None = None, control: bool | None = None
) -> dict:
    repeats = (1 if quick else 3) if repeats is None else repeats
    control = (not quick) if control is None else control
    res = {
        "machine": machine_info(device),
        "repeats": repeats,
        "load_average_before": os.getloadavg(),
        "example": pair(readme_example(), repeats, timeout=1800),
    }
    res["goals_met"] = {"example_within_1.5x_of_one_thread": res["example"]["ratio"] <= GOAL}
    if control:
        res["piece_with_nonrev_limits"] = pair(PIECE, repeats, timeout=900)
        res["piece_without_nonrev_limits"] = pair(
            PIECE, repeats, timeout=900, nonrev_threads="none"
        )
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--control", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=False, repeats=args.repeats, control=args.control), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
