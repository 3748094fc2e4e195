"""Learned scores on natural-image patches: does the frequency-shaped process pay, with
or without its current, at few sampler steps?

Data: grayscale ``image_size``-square crops of the two photos that ship with
scikit-learn (``patches``, :func:`nonrev.data.datasets.photo_patches`), split into
training and held-out patches. Three forward processes, all
:class:`~nonrev.process.spectral.SpectralProcess` (so the network, the parametrisation
and their costs are the same; only the process differs), by default

* ``identity/none``: ``U = I``, ``Q = 0`` (the standard process);
* ``data/none``: ``u`` the inverse variance of each DCT coefficient of the training
  patches, condition capped at ``k`` (``data:<k>``), ``Q = 0``;
* ``data/optimal``: the same ``u`` with the per-group optimal current (groups of
  ``groups`` frequencies, slow paired with fast).

Each is trained with one budget (the same ``train`` settings, the two ``seeds``), its
training range ending at the library's default horizon ``T = 6 / rate`` of its process
(where the reverse samplers start from ``N(0, U^{-1})``). Every model is sampled with
every method in ``methods`` at every NFE in ``nfe`` (steps = NFE - 1 on a log grid,
then one Tweedie step), ``n_samples`` patches each, and scored against the held-out
patches in pixel units scaled to [0, 1]:

* ``psd_db``: :func:`nonrev.metrics.power_spectrum_error_db`, the mean absolute
  log-ratio of the radially averaged power spectra (dB);
* ``sliced_w2``: :func:`nonrev.metrics.sliced_wasserstein` (200 directions).

The best method per setting, seed and NFE is the one with the lowest sliced W2 (its
``psd_db`` is reported with it; the full grid is in the results). References: the
real-vs-real floor (``n_reference`` random subsets of ``n_samples`` training patches
against the held-out ones: mean and spread) and ``gaussian_fit`` (draws of the
Gaussian with the training patches' mean and full pixel covariance: a model that does
not beat it has learned no more than second moments).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from nonrev.config import COUNT_MAX, ConfigError, check_device, field
from nonrev.data.datasets import Normaliser
from nonrev.linalg import sample_covariance
from nonrev.metrics import power_spectrum_error_db, sliced_wasserstein
from nonrev.samplers import default_horizon, method_names
from nonrev.training.loop import TrainConfig, make_process, prepare_data, train
from nonrev.version import __version__

__all__ = ["PatchStudyConfig", "quick_config", "run_patch_study"]


@dataclass
class PatchStudyConfig:
    models: list[str] = field(
        ["identity/none", "data/none", "data/optimal"],
        help="forward processes as u/q: u identity or data (capped at k), q none or optimal",
    )
    image_size: int = field(32, min=4, max=256, help="patch side in pixels")
    n_patches: int = field(6000, min=20, max=COUNT_MAX, help="patches in all (train + held out)")
    test_fraction: float = field(0.2, min=0.01, max=0.9)
    k: float = field(100.0, min=1.0, help="condition cap of u = data:<k>")
    groups: int = field(2, min=2, max=4096, help="frequencies per group of the current")
    train: TrainConfig = field(
        TrainConfig(
            network="mlp",
            hidden=512,
            depth=3,
            steps=1500,
            batch_size=256,
            time_groups=256,
            checkpoint_minutes=0.0,
        )
    )
    seeds: list[int] = field([0, 1], help="training seeds (every model trained once per seed)")
    nfe: list[int] = field([10, 20, 50], help="score evaluations per sample")
    methods: list[str] = field(["ancestral", "ddim", "gddim", "dpmpp_2m"])
    n_samples: int = field(1000, min=10, max=COUNT_MAX, help="samples per measurement")
    n_reference: int = field(5, min=2, max=COUNT_MAX, help="training subsets for the floor")
    seed: int = field(0, min=0, help="seed of the patches, the split and the sampling")
    device: str = field("cpu")

    def validate(self, prefix=""):
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"{prefix}models: must be distinct")
        for m in self.models:
            u, _, q = m.partition("/")
            if u not in ("identity", "data") or q not in ("none", "optimal"):
                raise ConfigError(
                    f"{prefix}models: each must be identity|data / none|optimal, got {m!r}"
                )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{prefix}seeds: must be distinct and at least one")
        if any(n < 2 for n in self.nfe):
            raise ConfigError(f"{prefix}nfe: every NFE must be >= 2 (steps + the final denoising)")
        known = method_names(explicit=False)
        bad = [m for m in self.methods if m not in known]
        if bad or not self.methods:
            raise ConfigError(
                f"{prefix}methods: must be among {', '.join(known)} (one evaluation a "
                f"step), got {bad or 'none'}"
            )
        check_device(prefix, self.device)


def quick_config() -> PatchStudyConfig:
    """``nonrev study patches --quick``: the same comparison at a small budget."""
    return PatchStudyConfig(
        n_patches=3000,
        train=TrainConfig(
            network="mlp",
            hidden=256,
            depth=2,
            steps=400,
            batch_size=128,
            time_groups=128,
            warmup=50,
            ema_decay=0.995,
            checkpoint_minutes=0.0,
        ),
        methods=["ddim", "dpmpp_2m"],
        n_samples=500,
        n_reference=3,
    )


# ---------------------------------------------------------------------------- pieces
def _train_cfg(cfg: PatchStudyConfig, spec: str, seed: int) -> TrainConfig:
    u, q = spec.split("/")
    return dataclasses.replace(
        cfg.train,
        data="patches",
        image_size=cfg.image_size,
        n_points=cfg.n_patches,
        test_fraction=cfg.test_fraction,
        split_seed=cfg.seed,
        kernel="spectral",
        groups=cfg.groups,
        u="identity" if u == "identity" else f"data:{cfg.k:g}",
        q=q,
        seed=int(seed),
        device=cfg.device,
    )


def _scores(X: np.ndarray, test: np.ndarray, shape) -> dict:
    """The two metrics of samples ``X`` against ``test`` (rows in 0..255 pixels)."""
    imgs = (X / 255.0).reshape(-1, *shape)
    ref = (test / 255.0).reshape(-1, *shape)
    return {
        "psd_db": power_spectrum_error_db(imgs, ref),
        "sliced_w2": sliced_wasserstein(X / 255.0, test / 255.0, seed=0),
    }


def _mean_sd(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        out[key] = float(np.mean(vals))
        out[key + "_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def _references(cfg: PatchStudyConfig, train_X, test, shape) -> dict:
    rng = np.random.default_rng(cfg.seed + 1)
    n = min(cfg.n_samples, len(train_X))
    floor = [
        _scores(train_X[rng.choice(len(train_X), size=n, replace=False)], test, shape)
        for _ in range(cfg.n_reference)
    ]
    mean, C = train_X.mean(axis=0), sample_covariance(train_X)
    fits = [
        _scores(np.clip(rng.multivariate_normal(mean, C, size=n), 0, 255), test, shape)
        for _ in range(cfg.n_reference)
    ]
    return {"floor": {**_mean_sd(floor), "n": n}, "gaussian_fit": _mean_sd(fits)}


def _process_summary(process) -> dict:
    m, g = process.groups.shape
    return {
        "rate": process.relaxation_rate(),
        "bound": float(process.u.mean()),
        "u_condition": float(process.u.max() / process.u.min()),
        "groups": [int(m), int(g)],
        "current": process.current,
    }


# ---------------------------------------------------------------------------- study
def run_patch_study(cfg: PatchStudyConfig, progress=None) -> dict:
    """Run the study; returns a JSON-serialisable results dict (module docstring).

    ``progress(stage, done, total)``: optional, called as stages start and finish.
    The samples of the best method at the largest NFE (first seed) are returned under
    ``"grids"`` (arrays, for the report; not JSON), with real held-out patches.
    """
    t_start = time.perf_counter()
    runs = [(spec, seed) for spec in cfg.models for seed in cfg.seeds]
    total = 1 + 2 * len(runs)
    done = [0]

    def report(stage, advance=False):
        if advance:
            done[0] += 1
        if progress is not None:
            progress(stage, done[0], total)

    ds, train_X = prepare_data(_train_cfg(cfg, cfg.models[0], cfg.seeds[0]))
    shape = tuple(ds.shape)
    test = ds.test
    report("references")
    refs = _references(cfg, train_X, test, shape)
    report("references", advance=True)
    Xn = Normaliser.fit(train_X).forward(train_X)
    results: dict = {
        "config": dataclasses.asdict(cfg),
        "data": {"shape": list(shape), "n_train": len(train_X), "n_test": len(test)},
        "references": refs,
        "models": {},
    }
    grids = {"real": test[: min(64, len(test))]}
    for spec, seed in runs:
        tcfg = _train_cfg(cfg, spec, seed)
        process = make_process(tcfg, Xn, shape)
        T = float(default_horizon(process))
        tcfg = dataclasses.replace(tcfg, t_max=T)
        label = f"{spec} seed {seed}"

        def on_step(step, total_steps, loss, label=label):
            if step % 100 == 0 or step == total_steps:
                report(f"train {label} {step}/{total_steps}")

        t0 = time.perf_counter()
        model = train(tcfg, progress=on_step)
        train_s = time.perf_counter() - t0
        report(f"train {label}", advance=True)
        grid_rows = {}
        t0 = time.perf_counter()
        for nfe in cfg.nfe:
            for method in cfg.methods:
                report(f"sample {label} {method} NFE {nfe}")
                X, used = model.sample(
                    cfg.n_samples, nfe - 1, method, spacing="log", seed=cfg.seed + 7
                )
                X = np.clip(X, 0.0, 255.0)
                grid_rows[(method, nfe)] = {"nfe": int(used), **_scores(X, test, shape)}
                if nfe == max(cfg.nfe) and seed == cfg.seeds[0]:
                    grids.setdefault(spec, {})[method] = X[:64]
        entry = results["models"].setdefault(
            spec, {"process": _process_summary(model.process), "T": T, "seeds": {}}
        )
        best = {}
        for nfe in cfg.nfe:
            method = min(cfg.methods, key=lambda m, n=nfe: grid_rows[(m, n)]["sliced_w2"])
            best[str(nfe)] = {"method": method, **grid_rows[(method, nfe)]}
        entry["seeds"][str(seed)] = {
            "train_s": train_s,
            "sample_s": time.perf_counter() - t0,
            "final_loss": model.loss_history[-1][1] if model.loss_history else None,
            "best": best,
            "all": [{"method": m, **row} for (m, _), row in grid_rows.items()],
        }
        report(f"sample {label}", advance=True)
    for spec in cfg.models:  # keep the grid of the method that was best at the largest NFE
        first = results["models"][spec]["seeds"][str(cfg.seeds[0])]["best"][str(max(cfg.nfe))]
        grids[spec] = grids[spec][first["method"]]
    results["runtime_s"] = time.perf_counter() - t_start
    results["version"] = __version__
    results["grids"] = grids
    return results
