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
    _has_blocks,
    class_covariance_blocks,
    class_covariances,
    collapse_time,
    covariance_blocks,
    speciation_time,
)

#: Relative agreement asked of the processes' ``lambda_min(U)`` and ``Tr(U)/d``
#: (``processes=``: one ``U`` shared by every current).
SAME_U_TOL = 1e-10


def _is_dense(process) -> bool:
    return isinstance(process, OUProcess)


def _check_processes(processes, d: int) -> dict:
    """``processes`` as a non-empty dict of OUProcess or kernels with blocks, all of
    dimension ``d``."""
    if not isinstance(processes, dict) or not processes:
        raise ValueError(
            "processes must be a non-empty dict mapping a name to a process "
            f"(OUProcess or SpectralProcess), got {type(processes).__name__}"
        )
    for name, proc in processes.items():
        if not _is_dense(proc) and not _has_blocks(proc):
            raise ValueError(
                f"processes[{name!r}] must be an OUProcess or a kernel with its "
                f"block interface (e.g. a SpectralProcess), got "
                f"{type(proc).__name__}"
            )
        if proc.dim != d:
            raise ValueError(
                f"processes[{name!r}] has dimension {proc.dim} but X has d = {d} columns"
            )
    return processes


def _reference_rates(process) -> tuple[float, float]:
    """``(lambda_min(U), Tr(U)/d)`` of a process (from its blocks for a kernel with
    blocks)."""
    if _is_dense(process):
        ref = current_summary(process.U, None, transient=False)
        return ref["rate_reversible"], ref["bound"]
    U = np.asarray(process.precision_blocks, dtype=np.float64)
    lam = np.linalg.eigvalsh(U)
    return float(lam.min()), float(np.trace(U, axis1=-2, axis2=-1).sum() / process.dim)


def predict_regimes(
    X,
    U=None,
    currents: dict | None = None,
    labels=None,
    n_train: int | None = None,
    finite_n: bool = False,
    seed: int = 0,
    *,
    processes: dict | None = None,
) -> dict:
    """Predicted ``t_S`` and ``t_C`` of data ``X`` (n, d) for several currents.

    Either ``U`` and ``currents``: ``currents`` maps a name to an antisymmetric ``Q``
    (or None for ``Q = 0``), every one with the same ``U``, each run as
    ``OUProcess(U, Q)``. Or ``processes``: a dict mapping a name to a process, an
    :class:`~nonrev.process.ou.OUProcess` or a kernel with blocks such as
    :class:`nonrev.process.SpectralProcess` (then ``X`` holds flattened images,
    ``d = C H W``); they must share one ``U`` (checked through ``lambda_min(U)`` and
    ``Tr(U)/d``, to ``SAME_U_TOL`` relative). For a kernel with blocks the data
    covariances are their block-diagonal parts in its basis, computed from the
    data's coefficients in O(n d g) (:func:`nonrev.regimes.covariance_blocks`,
    :func:`nonrev.regimes.class_covariance_blocks`; no d x d matrix), which bounds
    ``t_C`` from above and ``t_S`` from below (:mod:`nonrev.regimes.theory`).

    ``n_train`` defaults to ``n``. Returns a JSON-ready dict: ``n``, ``d``,
    ``n_train``, ``classes`` (0 without labels), ``covariance`` (min/median/max
    eigenvalue of the data covariance; when every process has blocks, of its
    block-diagonal part in the first process's basis, and ``"part": "blocks"``),
    ``rates`` (``reversible = lambda_min(U)``, ``bound = Tr(U)/d`` and, per current,
    the relaxation rate ``min Re spec(A)``), ``speciation`` and ``collapse`` (per
    current name, a time). With ``finite_n``, also ``collapse_finite``: per current,
    the finite-N prediction of the median lock time
    (:func:`nonrev.regimes.collapse_time_finite`, seeded with ``seed``) for Gaussian
    data with the data's covariance; a Monte Carlo whose cost grows like
    ``N d`` per path and step (dense processes only: a ValueError for a kernel with
    blocks).
    """
    if processes is not None:
        if U is not None or currents is not None:
            raise ValueError("give either U and currents, or processes, not both")
        return _predict_processes(X, processes, labels, n_train, finite_n, seed)
    if U is None or currents is None:
        raise ValueError("U and currents are required (or give processes)")
    X = as_samples("X", X)
    n, d = X.shape
    n_train = n if n_train is None else as_count("n_train", n_train, minimum=2)
    C = sample_covariance(X)
    _, gammas = psd_spectrum("data covariance", C)
    if not gammas[-1] > 0.0:
        raise ValueError(
            "X has no variance (every row is the same point): there is no "
            "speciation or collapse time to predict"
        )
    if labels is not None:
        between, within, w = class_covariances(X, labels)
        if w.size < 2:
            raise ValueError(f"labels must name at least 2 classes, got {w.size}")
    else:
        between, within, w = C, None, np.zeros(0)
    base = OUProcess(U)
    ref = current_summary(base.U, None, transient=False)
    out = {
        "n": n,
        "d": d,
        "n_train": n_train,
        "classes": int(w.size),
        "covariance": {
            "min": float(gammas[0]),
            "median": float(np.median(gammas)),
            "max": float(gammas[-1]),
        },
        "rates": {"reversible": ref["rate_reversible"], "bound": ref["bound"]},
        "speciation": {},
        "collapse": {},
    }
    if finite_n:
        out["collapse_finite"] = {}
    for name, Q in currents.items():
        proc = base if Q is None else OUProcess(base.U, Q)
        out["rates"][name] = (
            ref["rate"] if Q is None else current_summary(base.U, Q, transient=False)["rate"]
        )
        out["speciation"][name] = speciation_time(proc, between, within)
        out["collapse"][name] = collapse_time(proc, C, n_train)
        if finite_n:
            out["collapse_finite"][name] = collapse_time_finite(proc, C, n_train, seed=seed)
    return out


def _predict_processes(X, processes, labels, n_train, finite_n, seed) -> dict:
    """:func:`predict_regimes` with ``processes``."""
    X = as_samples("X", X)
    n, d = X.shape
    processes = _check_processes(processes, d)
    n_train = n if n_train is None else as_count("n_train", n_train, minimum=2)
    if finite_n:
        blocked = [name for name, p in processes.items() if not _is_dense(p)]
        if blocked:
            raise ValueError(
                f"finite_n: the finite-N prediction needs a dense OUProcess; "
                f"{blocked[0]!r} is a {type(processes[blocked[0]]).__name__}"
            )
    names = list(processes)
    rates = {name: _reference_rates(p) for name, p in processes.items()}
    lam0, bound0 = rates[names[0]]
    for name in names[1:]:
        lam, bound = rates[name]
        if abs(lam - lam0) > SAME_U_TOL * abs(lam0) or abs(bound - bound0) > SAME_U_TOL * abs(
            bound0
        ):
            raise ValueError(
                f"processes must share one U: {names[0]!r} has lambda_min(U) = "
                f"{lam0:.6g}, Tr(U)/d = {bound0:.6g}; {name!r} has {lam:.6g}, "
                f"{bound:.6g}"
            )

    # Covariances per process: dense once for every OUProcess, blocks per kernel with
    # blocks (its own basis and groups).
    dense_cov: dict = {}
    covs: dict = {}
    for name, proc in processes.items():
        if _is_dense(proc):
            if not dense_cov:
                C = sample_covariance(X)
                if labels is not None:
                    between, within, w = class_covariances(X, labels)
                else:
                    between, within, w = C, None, np.zeros(0)
                dense_cov.update(C=C, between=between, within=within, w=w)
            covs[name] = dense_cov
        else:
            C = covariance_blocks(proc, X)
            if labels is not None:
                between, within, w = class_covariance_blocks(proc, X, labels)
            else:
                between, within, w = C, None, np.zeros(0)
            covs[name] = {"C": C, "between": between, "within": within, "w": w}
    w = covs[names[0]]["w"]
    if labels is not None and w.size < 2:
        raise ValueError(f"labels must name at least 2 classes, got {w.size}")
    if dense_cov:
        gammas = psd_spectrum("data covariance", dense_cov["C"])[1]
        summary = {}
    else:
        gammas = np.clip(np.sort(np.linalg.eigvalsh(covs[names[0]]["C"]).reshape(-1)), 0.0, None)
        summary = {"part": "blocks"}
    if not gammas[-1] > 0.0:
        raise ValueError(
            "X has no variance (every row is the same point): there is no "
            "speciation or collapse time to predict"
        )
    out = {
        "n": n,
        "d": d,
        "n_train": n_train,
        "classes": int(w.size),
        "covariance": {
            "min": float(gammas[0]),
            "median": float(np.median(gammas)),
            "max": float(gammas[-1]),
            **summary,
        },
        "rates": {"reversible": lam0, "bound": bound0},
        "speciation": {},
        "collapse": {},
    }
    if finite_n:
        out["collapse_finite"] = {}
    for name, proc in processes.items():
        cv = covs[name]
        out["rates"][name] = float(proc.relaxation_rate())
        out["speciation"][name] = speciation_time(proc, cv["between"], cv["within"])
        out["collapse"][name] = collapse_time(proc, cv["C"], n_train)
        if finite_n:
            out["collapse_finite"][name] = collapse_time_finite(proc, cv["C"], n_train, seed=seed)
    return out
