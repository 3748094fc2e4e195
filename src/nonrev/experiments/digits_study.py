"""Learned scores on real data: what a non-reversible current changes on 8x8 digits.

Three models get one training budget (same network, steps, batch, seed; only the
forward process differs), by default

* ``identity/none``: the standard process, ``U = I``, ``Q = 0``;
* ``data/none``: ``U`` = inverse shrunk training covariance (``Tr(U)/d = 1``), ``Q = 0``;
* ``data/optimal``: the same ``U`` with the optimal current (every relaxation rate
  equal to ``Tr(U)/d = 1``).

Measured, against the held-out test split (never used in training):

1. Sample quality versus the number of score evaluations (NFE): sliced W2 and
   MMD^2 (Gaussian kernel, median bandwidth) in pixel units, the digits Frechet
   distance, classifier confidence and the class balance under the fixed digit
   classifier of :mod:`nonrev.experiments.digits_quality` (total-variation distance between the
   predicted-class frequencies of the samples
   and those of the test set), for the exact ancestral sampler on a log-spaced grid
   ending with one Tweedie step (NFE = steps + 1). Control: the same sampler with
   the exact score of the training set (:class:`~nonrev.scores.EmpiricalScore`),
   which separates what the sampler loses at few steps from what the network
   did not learn.
2. Sample quality versus the horizon ``T`` (the reverse process starts from the
   noise law ``N(0, U^{-1})`` at ``T``), beside the closed-form
   ``KL(P_T || N(0, U^{-1}))`` of the data's Gaussian moment match.
3. Speciation measured by cloning (:func:`nonrev.regimes.measure.clone_agreement`,
   classes from the classifier; trajectories start from exact draws of ``P_T``),
   beside the predicted ``t_S`` of the class means (THEORY.md section 3).
4. Memorisation versus the training-set size: each model is retrained on the
   first ``n`` training rows for every ``n`` in ``memorisation_sizes`` (same
   budget), and the memorised fraction (nearest / second-nearest training distance
   below 1/3) of its samples is measured, beside the predicted collapse time.

The reference values ("floor") are the same metrics for real training digits
against the test set, over ``n_reference`` random subsets of the sample size: a
perfect model would score about the floor, and the spread of the floor is the
noise level below which differences between models mean nothing. A second
reference, ``gaussian_fit``, scores samples of ``N(mean, C)`` with the training
mean and covariance: a model that does not beat it has learned no more than the
second moments.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from nonrev.config import COUNT_MAX, ConfigError, check_device, field
from nonrev.experiments.digits_quality import DigitsClassifier, digits_quality
from nonrev.linalg import sample_covariance
from nonrev.metrics import mmd_rbf, sliced_wasserstein
from nonrev.process.currents import current_summary
from nonrev.regimes.measure import (
    clone_agreement,
    memorised_fraction,
    speciation_time_measured,
)
from nonrev.regimes.theory import class_covariances, collapse_time, speciation_time
from nonrev.samplers import method_names
from nonrev.scores import EmpiricalScore
from nonrev.training.loop import TrainConfig, prepare_data, train
from nonrev.version import __version__

_MODEL_NAMES = {
    "identity/none": "standard (U = I)",
    "data/none": "U = data, Q = 0",
    "data/optimal": "U = data, Q = optimal",
}


def model_label(spec: str) -> str:
    """A readable name of a ``u/q`` model spec."""
    return _MODEL_NAMES.get(spec, f"U = {spec.split('/')[0]}, Q = {spec.split('/')[1]}")


@dataclass
class SpeciationStudyConfig:
    branch_times: list[float] = field(
        [0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], help="cloning branch times (intrinsic units)"
    )
    n_pairs: int = field(400, min=10, max=COUNT_MAX, help="clone pairs per branch time")
    T: float = field(6.0, min=0.01, help="start of the cloning runs (exact draws of P_T)")
    steps: int = field(300, min=10, max=COUNT_MAX, help="ancestral steps over [t_min, T] (uniform)")


@dataclass
class DigitsStudyConfig:
    models: list[str] = field(
        ["identity/none", "data/none", "data/optimal"],
        help="forward processes as u/q (see nonrev train --u/--q)",
    )
    # the study predates the data-frame parametrisation and U = data:10 (now the
    # training defaults) and keeps the Gaussian one, so its numbers stay comparable
    train: TrainConfig = field(
        TrainConfig(
            steps=12000,
            hidden=512,
            depth=3,
            t_max=8.0,
            checkpoint_minutes=0.0,
            parametrisation="gaussian",
        )
    )
    n_samples: int = field(2000, min=10, max=COUNT_MAX, help="samples per quality measurement")
    nfe: list[int] = field([10, 20, 50, 100, 250, 1000], help="score evaluations per sample")
    method: str = field("ancestral", choices=method_names(explicit=False))
    horizons: list[float] = field([0.5, 1.0, 2.0, 4.0, 8.0], help="start times T to compare")
    horizon_nfe: int = field(100, min=2, max=COUNT_MAX, help="NFE of the horizon comparison")
    speciation: SpeciationStudyConfig = field(SpeciationStudyConfig())
    memorisation_sizes: list[int] = field([100, 400], help="smaller training sets (rows)")
    memorisation_samples: int = field(1000, min=10)
    memorisation_nfe: int = field(100, min=2)
    n_reference: int = field(
        5, min=2, max=COUNT_MAX, help="training subsets for the reference floor"
    )
    seed: int = field(0, min=0)
    device: str = field("cpu")

    def validate(self, prefix=""):
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"{prefix}models: must be distinct")
        for m in self.models:
            if m.count("/") != 1 or not all(m.split("/")):
                raise ConfigError(
                    f"{prefix}models: each must be u/q (e.g. data/optimal), got {m!r}"
                )
        if self.train.data != "digits":
            raise ConfigError(
                f"{prefix}train.data: the digits study trains on digits, got {self.train.data!r}"
            )
        if any(n < 2 for n in self.nfe):
            raise ConfigError(f"{prefix}nfe: every NFE must be >= 2 (steps + the final denoising)")
        if any(not (self.train.t_min < T <= self.train.t_max) for T in self.horizons):
            raise ConfigError(
                f"{prefix}horizons: must lie in (train.t_min, train.t_max] = "
                f"({self.train.t_min}, {self.train.t_max}]"
            )
        sp = self.speciation
        if not (self.train.t_min < sp.T <= self.train.t_max):
            raise ConfigError(f"{prefix}speciation.T: must lie in (train.t_min, train.t_max]")
        if any(not (self.train.t_min < b < sp.T) for b in sp.branch_times):
            raise ConfigError(
                f"{prefix}speciation.branch_times: must lie in "
                f"(train.t_min, speciation.T) = ({self.train.t_min}, {sp.T})"
            )
        if any(n < 4 for n in self.memorisation_sizes):
            raise ConfigError(f"{prefix}memorisation_sizes: every size must be >= 4")
        check_device(prefix, self.device)


def quick_config() -> DigitsStudyConfig:
    """``nonrev study digits --quick``: the same comparison at a smaller budget
    (see the README for the measured time)."""
    return DigitsStudyConfig(
        train=TrainConfig(
            steps=3000,
            hidden=256,
            depth=3,
            t_max=8.0,
            ema_decay=0.995,
            warmup=100,
            checkpoint_minutes=0.0,
            parametrisation="gaussian",
        ),
        n_samples=500,
        nfe=[10, 20, 50, 100],
        horizons=[0.5, 1.0, 2.0, 4.0, 8.0],
        horizon_nfe=50,
        speciation=SpeciationStudyConfig(
            branch_times=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], n_pairs=200, T=5.0, steps=200
        ),
        memorisation_sizes=[100],
        memorisation_samples=500,
        memorisation_nfe=50,
        n_reference=3,
    )


# ---------------------------------------------------------------------------- pieces
def _quality(X, test, clf, ref_freq, seed: int) -> dict:
    return {
        "sliced_w2": sliced_wasserstein(X, test, seed=seed),
        "mmd": mmd_rbf(X, test, seed=seed),
        **digits_quality(X, test, clf, ref_freq),
    }


def _reference(train_X, test, clf, ref_freq, n: int, k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = [
        _quality(
            train_X[rng.choice(len(train_X), size=min(n, len(train_X)), replace=False)],
            test,
            clf,
            ref_freq,
            seed,
        )
        for _ in range(k)
    ]
    keys = ("sliced_w2", "mmd", "frechet", "class_tv", "confidence")
    return {
        **{key: float(np.mean([r[key] for r in rows])) for key in keys},
        **{key + "_sd": float(np.std([r[key] for r in rows], ddof=1)) for key in keys},
        "n": int(min(n, len(train_X))),
        "subsets": k,
    }


def _process_summary(model) -> dict:
    proc = model.process
    fig = current_summary(proc.U, proc.Q, transient=False)
    return {
        **{k: fig[k] for k in ("rate", "bound", "rate_reversible", "q_norm", "a_norm")},
        "u_condition": float(np.linalg.cond(proc.U)),
    }


def _train_cfg(cfg: DigitsStudyConfig, spec: str, n_train: int = 0) -> TrainConfig:
    u, q = spec.split("/")
    return dataclasses.replace(
        cfg.train, u=u, q=q, n_train=n_train, seed=cfg.seed, device=cfg.device, data="digits"
    )


def _train_one(cfg, spec, n_train, report, label):
    steps = cfg.train.steps

    def progress(step, total, loss):
        if step % 100 == 0 or step == total:
            report(f"train {label} {step}/{total}")

    t0 = time.perf_counter()
    model = train(_train_cfg(cfg, spec, n_train), progress=progress)
    return model, time.perf_counter() - t0, steps


# ---------------------------------------------------------------------------- study
def run_digits_study(cfg: DigitsStudyConfig, progress=None) -> dict:
    """Run the study; returns a JSON-serialisable results dict (module docstring).

    ``progress(stage, done, total)``: optional, called as stages start and finish.
    """
    t_start = time.perf_counter()
    n_models = len(cfg.models)
    total = n_models * (4 + 2 * len(cfg.memorisation_sizes)) + 1
    done = [0]

    def report(stage, advance=False):
        if advance:
            done[0] += 1
        if progress is not None:
            progress(stage, done[0], total)

    ds, _ = prepare_data(_train_cfg(cfg, cfg.models[0]))
    clf = DigitsClassifier(ds.train, ds.train_labels)  # fixed seed: runs compare
    test_acc = float(np.mean(clf.predict(ds.test) == ds.test_labels))
    ref_freq = np.bincount(clf.predict(ds.test), minlength=clf.n_classes) / len(ds.test)
    reference = _reference(
        ds.train, ds.test, clf, ref_freq, cfg.n_samples, cfg.n_reference, cfg.seed
    )
    rng = np.random.default_rng(cfg.seed)
    gauss = rng.multivariate_normal(
        ds.train.mean(0), sample_covariance(ds.train), size=cfg.n_samples
    )
    gaussian = _quality(gauss, ds.test, clf, ref_freq, cfg.seed)
    report("classifier", advance=True)
    models = []
    for spec in cfg.models:
        label = model_label(spec)
        model, secs, steps = _train_one(cfg, spec, 0, report, label)
        report(f"trained {label}", advance=True)
        row = {
            "spec": spec,
            "label": label,
            **_process_summary(model),
            "train_seconds": secs,
            "train_steps": steps,
            "final_loss": model.loss_history[-1][1] if model.loss_history else None,
            "loss_history": model.loss_history,
        }
        score = model.score()
        # 1. quality versus NFE
        row["nfe"] = []
        t0 = time.perf_counter()
        samples_last = None
        for nfe in cfg.nfe:
            X, used = model.sample(
                cfg.n_samples, nfe - 1, cfg.method, seed=cfg.seed + 1, score=score
            )
            row["nfe"].append({"nfe": used, **_quality(X, ds.test, clf, ref_freq, cfg.seed)})
            samples_last = X
        row["nfe_seconds"] = time.perf_counter() - t0
        row["samples"] = samples_last[:100].tolist()
        # control: the same sampler with the exact score of the training set
        exact = EmpiricalScore(
            model.process, torch.tensor(model.normaliser.forward(ds.train), dtype=torch.float32)
        )
        row["exact_score_nfe"] = []
        for nfe in cfg.nfe:
            X, used = model.sample(
                cfg.n_samples, nfe - 1, cfg.method, seed=cfg.seed + 1, score=exact
            )
            row["exact_score_nfe"].append(
                {"nfe": used, **_quality(X, ds.test, clf, ref_freq, cfg.seed)}
            )
        report(f"quality vs NFE {label}", advance=True)
        # 2. quality versus horizon
        C = sample_covariance(model.normaliser.forward(ds.train))
        row["horizon"] = []
        for T in cfg.horizons:
            X, used = model.sample(
                cfg.n_samples, cfg.horizon_nfe - 1, cfg.method, T=T, seed=cfg.seed + 2, score=score
            )
            kl = float(model.process.kl_to_stationary(T, cov0=C))
            row["horizon"].append(
                {
                    "T": T,
                    "nfe": used,
                    "kl_gaussian": kl,
                    **_quality(X, ds.test, clf, ref_freq, cfg.seed),
                }
            )
        report(f"quality vs T {label}", advance=True)
        # 3. speciation by cloning
        row["speciation"] = _speciation(cfg, model, score, ds, clf)
        report(f"speciation {label}", advance=True)
        row["memorisation"] = [_memorisation(cfg, model, score, ds.train, ds.train.shape[0])]
        models.append(row)
    # 4. memorisation versus training-set size (retrained at each smaller size)
    for n in sorted(cfg.memorisation_sizes):
        for row in models:
            label = f"{row['label']} n={n}"
            model, secs, _ = _train_one(cfg, row["spec"], n, report, label)
            report(f"trained {label}", advance=True)
            Xn = ds.train[:n]
            entry = _memorisation(cfg, model, model.score(), Xn, n)
            entry["train_seconds"] = secs
            row["memorisation"].append(entry)
            report(f"memorisation {label}", advance=True)
    for row in models:
        row["memorisation"].sort(key=lambda e: e["n_train"])
    results = {
        "experiment": "digits_study",
        "config": dataclasses.asdict(cfg),
        "versions": {
            "nonrev": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "data": {
            "name": "digits",
            "n_train": int(ds.train.shape[0]),
            "n_test": int(ds.test.shape[0]),
            "dim": ds.dim,
            "classifier": "MLP 64-128-16-10 on pixels/16, seed 0 (digits_quality)",
            "classifier_test_accuracy": test_acc,
            "test_class_freq": ref_freq.tolist(),
            "test_samples": ds.test[:100].tolist(),
        },
        "reference": reference,
        "gaussian_fit": gaussian,
        "models": models,
        "runtime_s": time.perf_counter() - t_start,
    }
    report("done", advance=True)
    return results


def _speciation(cfg: DigitsStudyConfig, model, score, ds, clf) -> dict:
    sp = cfg.speciation
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    Xn = model.normaliser.forward(ds.train)
    pick = torch.randint(0, Xn.shape[0], (sp.n_pairs,), generator=gen)
    x_T = model.process.sample(
        torch.tensor(Xn[pick.numpy()], dtype=torch.float32), sp.T, generator=gen
    )

    def classify(x):
        return clf.predict(model.normaliser.inverse(x.detach().cpu().double().numpy()))

    res = clone_agreement(
        score,
        model.process,
        classify,
        sp.branch_times,
        sp.n_pairs,
        T=sp.T,
        steps=sp.steps,
        method="ancestral",
        generator=gen,
        x_T=x_T,
        t_min=cfg.train.t_min,
        seed=cfg.seed,
    )
    meas = speciation_time_measured(res, n_classes=clf.n_classes)
    Cb, Cw, _ = class_covariances(Xn, ds.train_labels)
    return {
        "branch_times": res["branch_times"].tolist(),
        "phi": res["phi"].tolist(),
        "ci_low": res["ci_low"].tolist(),
        "ci_high": res["ci_high"].tolist(),
        "threshold": meas["threshold"],
        "t_measured": meas["t"],
        "t_measured_low": meas["t_low"],
        "t_measured_high": meas["t_high"],
        "t_predicted": float(speciation_time(model.process, Cb, Cw)),
        "n_pairs": sp.n_pairs,
        "T": sp.T,
    }


def _memorisation(cfg: DigitsStudyConfig, model, score, train_X, n: int) -> dict:
    X, used = model.sample(
        cfg.memorisation_samples,
        cfg.memorisation_nfe - 1,
        cfg.method,
        seed=cfg.seed + 4,
        score=score,
    )
    mem = memorised_fraction(X, train_X)
    Xn = model.normaliser.forward(train_X)
    C = sample_covariance(Xn)
    p = mem["fraction"]
    return {
        "n_train": int(n),
        "fraction": p,
        "fraction_se": float(
            np.sqrt(max(p * (1 - p), 1.0 / cfg.memorisation_samples) / cfg.memorisation_samples)
        ),
        "median_ratio": float(np.median(mem["ratios"])),
        "nfe": used,
        "t_collapse_predicted": float(collapse_time(model.process, C, n)),
    }
