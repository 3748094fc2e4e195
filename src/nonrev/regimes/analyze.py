"""The regimes of a data set under several currents, gathered in one report: the
predictions of :mod:`.theory` (``t_S``, ``t_C``) and, on request, of :mod:`.finite`
(``t_C`` at finite N). This is what ``nonrev analyze`` prints."""

from __future__ import annotations

import numpy as np

from nonrev.linalg import as_count, as_samples, psd_spectrum, sample_covariance
from nonrev.process.currents import current_summary
from nonrev.process.ou import OUProcess
from nonrev.regimes.finite import collapse_time_finite
from nonrev.regimes.theory import (
    class_covariances,
    collapse_time,
    speciation_time,
)


def predict_regimes(X, U, currents: dict, labels=None, n_train: int | None = None,
                    finite_n: bool = False, seed: int = 0) -> dict:
    """Predicted ``t_S`` and ``t_C`` of data ``X`` (n, d) for several currents.

    ``currents`` maps a name to an antisymmetric ``Q`` (or None for ``Q = 0``); every
    one uses the same ``U``. ``n_train`` defaults to ``n``. Returns a JSON-ready
    dict: ``n``, ``d``, ``n_train``, ``classes`` (0 without labels),
    ``covariance`` (min/median/max eigenvalue of the data covariance), ``rates``
    (``reversible = lambda_min(U)``, ``bound = Tr(U)/d`` and, per current, the
    relaxation rate ``min Re spec(A)``), ``speciation`` and ``collapse`` (per
    current name, a time). With ``finite_n``, also ``collapse_finite``: per current,
    the finite-N prediction of the median lock time
    (:func:`nonrev.regimes.collapse_time_finite`, seeded with ``seed``) for Gaussian
    data with the data's covariance; a Monte Carlo whose cost grows like
    ``N d`` per path and step.
    """
    X = as_samples("X", X)
    n, d = X.shape
    n_train = n if n_train is None else as_count("n_train", n_train, minimum=2)
    C = sample_covariance(X)
    _, gammas = psd_spectrum("data covariance", C)
    if not gammas[-1] > 0.0:
        raise ValueError("X has no variance (every row is the same point): there is no "
                         "speciation or collapse time to predict")
    if labels is not None:
        between, within, w = class_covariances(X, labels)
        if w.size < 2:
            raise ValueError(f"labels must name at least 2 classes, got {w.size}")
    else:
        between, within, w = C, None, np.zeros(0)
    base = OUProcess(U)
    ref = current_summary(base.U, None, transient=False)
    out = {
        "n": n, "d": d, "n_train": n_train, "classes": int(w.size),
        "covariance": {"min": float(gammas[0]), "median": float(np.median(gammas)),
                       "max": float(gammas[-1])},
        "rates": {"reversible": ref["rate_reversible"], "bound": ref["bound"]},
        "speciation": {}, "collapse": {},
    }
    if finite_n:
        out["collapse_finite"] = {}
    for name, Q in currents.items():
        proc = base if Q is None else OUProcess(base.U, Q)
        out["rates"][name] = ref["rate"] if Q is None else \
            current_summary(base.U, Q, transient=False)["rate"]
        out["speciation"][name] = speciation_time(proc, between, within)
        out["collapse"][name] = collapse_time(proc, C, n_train)
        if finite_n:
            out["collapse_finite"][name] = collapse_time_finite(proc, C, n_train, seed=seed)
    return out
