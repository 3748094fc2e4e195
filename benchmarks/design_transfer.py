"""Does a current designed for the sampler transfer to learned digits models (issue 24,
point 4b)? ``python -m benchmarks.design_transfer [--design FILE] [--seeds 0,1]``.

The design comes from ``python -m benchmarks.design gaussian --quick --cases digits``
(its results file, ``benchmarks/results/design_gaussian_digits_none_quick.json``): the
current ``Q``, horizon ``T`` and 10-step grid that :func:`nonrev.samplers.design_current`
chose for dpmpp_2m on the digits' Gaussian summary (normalised training digits, U =
data:10, no prior), with the best reversible ``T`` and grid found with the same budget.

Two digits models per seed, one training budget (``nonrev train --quick``'s settings,
U = data:10, t in [1e-3, 12]): ``Q = 0`` and ``Q`` = the designed current. Each is
sampled with dpmpp_2m from N(0, U^-1) (1000 samples, no final Tweedie step, as in the
design) at NFE 10 on its own designed grid (the designed current's grid, or the
reversible one's), at NFE 5 / 10 / 20 on log grids from its ``T``, and the reversible
model also with a Gaussian prior (mean and covariance of 200 training rows) on its
grid. Scored by the digits Frechet distance against the held-out digits
(:mod:`nonrev.experiments.digits_quality`) and the sliced W2 in pixel units; the floor
is real training digits (5 subsets of 1000) against the held-out ones.

Results: ``benchmarks/results/design_transfer_digits.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nonrev.experiments.digits_quality import DigitsClassifier, digits_quality
from nonrev.metrics import sliced_wasserstein
from nonrev.samplers import sample
from nonrev.training.loop import prepare_data, quick_config, train

RESULTS = Path(__file__).resolve().parent / "results"
DESIGN = RESULTS / "design_gaussian_digits_none_quick.json"
ROW = "digits / prior none / NFE 10"
N_SAMPLES = 1000


def _design(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(
            f"{path}: not found; run `python -m benchmarks.design gaussian --quick "
            "--cases digits` first (it writes the design)"
        )
    row = json.loads(path.read_text())["rows"][ROW]
    return {k: np.asarray(row[k]) for k in ("Q", "T", "times", "T_reversible", "times_reversible")}


def _quality(X, test, clf, ref_freq) -> dict:
    q = digits_quality(X, test, clf, ref_freq)
    return {
        "frechet": q["frechet"],
        "class_tv": q["class_tv"],
        "sliced_w2": sliced_wasserstein(X, test, seed=0),
    }


def _draw(model, *, times=None, T=None, steps=None, prior=None, seed=0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    kw = dict(times=times) if times is not None else dict(T=float(T), steps=steps, spacing="log")
    x, _ = sample(
        model.score(),
        model.process,
        n=N_SAMPLES,
        method="dpmpp_2m",
        t_min=1e-3,
        generator=gen,
        prior=prior,
        **kw,
    )
    return np.clip(model.normaliser.inverse(x.double().numpy()), 0.0, 16.0)


def run(design_path: Path, seeds: list[int], steps: int | None) -> dict:
    des = _design(design_path)
    cfg0 = quick_config(u="data:10", t_min=1e-3, t_max=12.0, checkpoint_minutes=0.0)
    if steps:
        cfg0 = dataclasses.replace(cfg0, steps=int(steps))
    ds, train_X = prepare_data(cfg0)
    clf = DigitsClassifier(ds.train, ds.train_labels)
    ref_freq = np.bincount(clf.predict(ds.test), minlength=clf.n_classes) / len(ds.test)
    rng = np.random.default_rng(1)
    floor = [
        _quality(
            train_X[rng.choice(len(train_X), N_SAMPLES, replace=False)], ds.test, clf, ref_freq
        )
        for _ in range(5)
    ]
    out = {
        "design": {k: v.tolist() for k, v in des.items() if k != "Q"},
        "q_norm": float(np.linalg.norm(des["Q"], 2)),
        "floor": {k: float(np.mean([f[k] for f in floor])) for k in floor[0]}
        | {k + "_sd": float(np.std([f[k] for f in floor], ddof=1)) for k in floor[0]},
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        qfile = Path(tmp) / "q_designed.npy"
        np.save(qfile, des["Q"])
        for seed in seeds:
            for name, q in (("reversible", "none"), ("designed", str(qfile))):
                t0 = time.perf_counter()
                model = train(dataclasses.replace(cfg0, q=q, seed=int(seed)))
                train_s = time.perf_counter() - t0
                T = des["T"] if name == "designed" else des["T_reversible"]
                grid = des["times"] if name == "designed" else des["times_reversible"]
                runs = {"NFE 10, designed grid": dict(times=grid)}
                runs |= {f"NFE {n}, log grid": dict(T=T, steps=n) for n in (5, 10, 20)}
                if name == "reversible":
                    Xn = model.normaliser.forward(train_X)
                    pick = np.random.default_rng(100 + seed).choice(len(Xn), 200, replace=False)
                    prior = (Xn[pick].mean(0), np.cov(Xn[pick].T))
                    runs["NFE 10, designed grid, prior"] = dict(times=grid, prior=prior)
                for label, kw in runs.items():
                    X = _draw(model, seed=seed, **kw)
                    row = {"seed": seed, "model": name, "run": label, "train_s": train_s}
                    out["rows"].append(row | _quality(X, ds.test, clf, ref_freq))
                    print(json.dumps(out["rows"][-1]), flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--design", type=Path, default=DESIGN, help="results file of the design")
    ap.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: --quick)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args.design, [int(s) for s in args.seeds.split(",")], args.steps)
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "design_transfer_digits.json"
    path.write_text(json.dumps(res, indent=1))
    floor = res["floor"]
    print(f"floor: frechet {floor['frechet']:.3g} +- {floor['frechet_sd']:.2g}")
    for r in res["rows"]:
        print(
            f"seed {r['seed']} {r['model']:10s} {r['run']:30s} frechet {r['frechet']:.3g} "
            f"sliced W2 {r['sliced_w2']:.3g}"
        )
    print(f"wrote {path} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
