"""Slowest relaxation rates of the spectral process on natural-image patches (issue 22).

    python -m benchmarks.spectral [--n 4000] [--size 32] [--seed 0] [--json]

Patches: ``n`` random ``size x size`` grayscale crops (RGB mean) of the two photos that
ship with scikit-learn (``sklearn.datasets.load_sample_images``, alternating), scaled
from [0, 255] to [-1, 1]. ``u`` is the data:K recipe in the DCT basis
(:meth:`nonrev.process.SpectralProcess.from_data`: inverse variance of each DCT
coefficient, condition capped at ``k``, scaled to ``mean(u) = Tr(U)/d = 1``).

For each group size ``g`` (2, 4, 8) and cap ``k`` (none, 1e3) the table gives the slowest rate
``min Re spec(A)`` of

* the reversible process (``min(u)``),
* the optimal per-group current with nonrev's grouping (:func:`balanced_groups`),
* the same current on the serpentine grouping of sorted ``u`` (the baseline that
  :func:`balanced_groups` improves on; for ``g = 2`` it is the same pairing),
* against the dense bound ``Tr(U)/d = mean(u) = 1`` that a full (d x d) current reaches,

and the stiffness of the optimal current, ``max_j ||(I + B_j) diag(u_j)||_2`` over
``max(u)`` (the largest drift block against the reversible drift's norm).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from nonrev.data.datasets import photo_patches
from nonrev.process.spectral import SpectralProcess


def sample_patches(n: int = 4000, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` grayscale patches (n, 1, size, size) in [-1, 1] from scikit-learn's two
    sample photos (:func:`nonrev.data.datasets.photo_patches`)."""
    return photo_patches(n, size, seed) / 127.5 - 1.0


def serpentine(u: np.ndarray, g: int) -> np.ndarray:
    """Groups of ``g`` from sorted ``u`` dealt in a serpentine: rank block ``r`` of
    ``m = d/g`` goes to groups ``0..m-1`` forwards when ``r`` is even, backwards when odd."""
    order = np.argsort(u.reshape(-1), kind="stable")
    m = order.size // g
    return np.stack(
        [order[r * m : (r + 1) * m][:: 1 if r % 2 == 0 else -1] for r in range(g)], axis=1
    )


def run(n: int = 4000, size: int = 32, seed: int = 0, groups=(2, 4, 8), caps=(None, 1e3)) -> dict:
    images = sample_patches(n, size, seed)
    rows = []
    for k in caps:
        base = SpectralProcess.from_data(images, k=k)
        u = base.u
        for g in groups:
            opt = SpectralProcess(u.shape, u, "optimal", groups=g)
            snake = SpectralProcess(u.shape, u, "optimal", groups=serpentine(u, g))
            stiff = float(np.linalg.norm(opt.drift_blocks, 2, axis=(1, 2)).max() / u.max())
            rows.append(
                {
                    "k": k,
                    "g": g,
                    "cond_u": float(u.max() / u.min()),
                    "bound": float(u.mean()),
                    "reversible": base.relaxation_rate(),
                    "optimal": opt.relaxation_rate(),
                    "serpentine": snake.relaxation_rate(),
                    "stiffness": stiff,
                }
            )
    return {"n": n, "size": size, "seed": seed, "rows": rows}


def table(res: dict) -> str:
    head = (
        "| k | g | cond(u) | reversible min(u) | optimal, nonrev groups | "
        "optimal, serpentine | bound mean(u) | optimal / bound | optimal / reversible "
        "| stiffness |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in res["rows"]:
        cap = "none" if r["k"] is None else f"{r['k']:g}"
        lines.append(
            f"| {cap} | {r['g']} | {r['cond_u']:.3g} "
            f"| {r['reversible']:.3g} | {r['optimal']:.4f} | {r['serpentine']:.4f} "
            f"| {r['bound']:.4f} | {r['optimal'] / r['bound']:.3f} "
            f"| {r['optimal'] / r['reversible']:.3g} | {r['stiffness']:.3g} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    res = run(args.n, args.size, args.seed)
    print(
        json.dumps(res, indent=1)
        if args.json
        else f"{args.n} patches {args.size}x{args.size}, seed {args.seed}\n" + table(res)
    )


if __name__ == "__main__":
    main()
