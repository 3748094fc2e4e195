"""``nonrev analyze`` on wide data (issue 17): time and peak memory of the default
path (``--u identity --q optimal``), and their ratio to one symmetric
eigendecomposition of a d x d matrix on the same machine (the unit in which
``nonrev analyze`` announces its cost, ``nonrev.cli.common.ANALYZE_EIGH_UNITS``).

    python -m benchmarks.large_d --d 5000 --n 100 [--u identity] [--q optimal]

Runs the command in a subprocess with one BLAS thread and reports wall and CPU time,
peak resident memory (``getrusage`` of the child) and ``units = cpu / eigh(d)``
(CPU time: on a shared machine the wall time mostly measures the other users).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def eigh_time(d: int) -> float:
    """Seconds of one ``numpy.linalg.eigh`` of a d x d symmetric matrix, in a child
    process with one thread (as the command runs)."""
    code = (
        "import time, numpy as np; a = np.random.default_rng(0).standard_normal((%d, %d)); "
        "a = a + a.T; t = time.process_time(); np.linalg.eigh(a); "
        "print(time.process_time() - t)" % (d, d)
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def run(d: int = 5000, n: int = 100, u: str = "identity", q: str = "optimal") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "wide.npy"
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, d))
        X[n // 2 :, 0] += 3.0
        np.save(data, X)
        np.save(Path(tmp) / "labels.npy", np.repeat([0, 1], [n // 2, n - n // 2]))
        cmd = [
            sys.executable,
            "-c",
            "from nonrev.cli import main; main()",
            "analyze",
            str(data),
            "--labels",
            str(Path(tmp) / "labels.npy"),
            "--u",
            u,
            "--q",
            q,
            "--json",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        peak_gib = after.ru_maxrss * 1024 / 2**30
    unit = eigh_time(d)
    return {
        "d": d,
        "n": n,
        "u": u,
        "q": q,
        "exit_code": proc.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gib": peak_gib,
        "eigh_s": unit,
        "units": cpu / unit,
        "stderr_tail": proc.stderr[-600:],
        "machine": machine_info(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=5000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--u", default="identity")
    ap.add_argument("--q", default="optimal")
    args = ap.parse_args()
    print(json.dumps(run(args.d, args.n, args.u, args.q), indent=1))


if __name__ == "__main__":
    main()
