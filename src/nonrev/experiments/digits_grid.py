"""One cell of the learned-model grid on 8x8 digits: train one score model for a
forward process (``u``, ``q``) and a training setting, then measure its samples at a
few numbers of score evaluations (NFE) with several samplers.

A sweep over these cells (``examples/digits_grid.yaml``, run with ``nonrev sweep``,
locally or on Ray) is the study of which current a learned model gains from:
:mod:`nonrev.reports.digits_grid` turns the sweep's table into report.md.

Measured against the held-out test split, for every (method, NFE): the digits
Frechet distance, sliced W2 (pixels), classifier confidence and class balance
(:mod:`nonrev.experiments.digits_quality`); and once, at the largest NFE of the
first method, the memorised fraction (nearest training digit 3x closer than the
second nearest). The classifier is fixed (seed 0), so cells with different training
seeds compare.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from nonrev.config import COUNT_MAX, ConfigError, check_device, field
from nonrev.experiments.digits_quality import DigitsClassifier, digits_quality
from nonrev.metrics import sliced_wasserstein
from nonrev.regimes.measure import memorised_fraction
from nonrev.samplers import METHODS, SPACINGS
from nonrev.training.loop import TrainConfig, prepare_data, train

__all__ = ["DigitsCellConfig", "digits_cell", "quick_train_config"]


def quick_train_config() -> TrainConfig:
    """The training budget of one grid cell: a width-256 MLP, 2000 steps."""
    return TrainConfig(
        steps=2000,
        hidden=256,
        depth=3,
        t_max=8.0,
        ema_decay=0.995,
        warmup=100,
        checkpoint_minutes=0.0,
    )


@dataclass
class DigitsCellConfig:
    u: str = field("data", help="noise precision spec (nonrev train --u)")
    q: str = field("none", help="current spec (nonrev train --q)")
    parametrisation: str = field(
        "gaussian",
        choices=("gaussian", "data_frame"),
        help="how the network output becomes the score (nonrev.scores.neural.Parameterisation)",
    )
    time_sampling: str = field(
        "log",
        choices=("log", "snr"),
        help="training grid: log-spaced in t, or evenly in the log noise level",
    )
    seed: int = field(0, min=0, max=2**31 - 1, help="training seed (the classifier's is fixed)")
    train: TrainConfig = field(
        quick_train_config(),
        help="the rest of the training budget (u, q, parametrisation, "
        "spacing and seed come from the keys above)",
    )
    nfe: list[int] = field([5, 10, 20, 50], help="score evaluations per sample")
    methods: list[str] = field(
        ["ancestral", "gddim", "dpmpp_2m"], help="samplers (nonrev.samplers.METHODS)"
    )
    sampler_spacing: str = field("log", choices=SPACINGS, help="sampler time grid")
    n_samples: int = field(1000, min=10, max=COUNT_MAX, help="samples per measurement")
    device: str = field("cpu")

    def validate(self, prefix=""):
        if self.train.data != "digits":
            raise ConfigError(
                f"{prefix}train.data: the digits grid trains on digits, got {self.train.data!r}"
            )
        if not self.nfe or any(n < 2 for n in self.nfe):
            raise ConfigError(f"{prefix}nfe: every NFE must be >= 2 (steps + the final denoising)")
        bad = [m for m in self.methods if m not in METHODS]
        if not self.methods or bad:
            raise ConfigError(
                f"{prefix}methods: each must be one of {', '.join(METHODS)}; got {self.methods}"
            )
        check_device(prefix, self.device)


def digits_cell(cfg: DigitsCellConfig, progress=None) -> dict:
    """Train the cell's model and measure it; a JSON-serialisable results dict."""
    t0 = time.perf_counter()
    tcfg = dataclasses.replace(
        cfg.train,
        u=cfg.u,
        q=cfg.q,
        seed=cfg.seed,
        device=cfg.device,
        parametrisation=cfg.parametrisation,
        spacing=cfg.time_sampling,
        precondition=True,
        data="digits",
    )
    model = train(tcfg)
    train_s = time.perf_counter() - t0
    ds, _ = prepare_data(tcfg)  # the same seeded split the model was trained on
    clf = DigitsClassifier(ds.train, ds.train_labels)
    ref_freq = np.bincount(clf.predict(ds.test), minlength=clf.n_classes) / len(ds.test)
    proc = model.process
    score = model.score()
    quality = {}
    memorised = None
    for method in cfg.methods:
        quality[method] = {}
        for nfe in sorted(cfg.nfe):
            X, used = model.sample(
                cfg.n_samples,
                nfe - 1,
                method,
                spacing=cfg.sampler_spacing,
                seed=cfg.seed + 1,
                score=score,
            )
            entry = digits_quality(X, ds.test, clf, ref_freq)
            entry.pop("class_freq")
            entry["sliced_w2"] = sliced_wasserstein(X, ds.test, seed=cfg.seed)
            entry["finite"] = bool(np.all(np.isfinite(X)))
            quality[method][str(used)] = entry
            if progress is not None:
                progress(f"{method} NFE {used}")
        if memorised is None:
            memorised = memorised_fraction(X, ds.train)["fraction"]
    w = np.linalg.eigvalsh(proc.U)
    return {
        "rate": proc.relaxation_rate(),
        "bound": float(np.trace(proc.U) / proc.dim),
        "u_condition": float(w[-1] / w[0]),
        "q_norm": float(np.linalg.norm(proc.Q, 2)),
        "a_norm": float(np.linalg.norm(proc.A, 2)),
        "final_loss": model.loss_history[-1][1] if model.loss_history else None,
        "train_seconds": train_s,
        "quality": quality,
        "memorised_fraction": memorised,
        "runtime_s": time.perf_counter() - t0,
    }
