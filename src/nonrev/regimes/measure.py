"""Measuring speciation and collapse in the reverse dynamics itself (torch, any device).

* :func:`clone_agreement`: Biroli et al.'s cloning experiment. Run the reverse
  process from ``T`` down to a branch time ``t``, copy every trajectory, finish both
  copies with independent noise and classify the end points: ``phi(t)`` is the
  probability that both copies land in the same class. It goes from 1 (branching
  late in the backward run, small ``t``) to chance ``1/K`` (large ``t``).
* :func:`speciation_time_measured`: where ``phi`` crosses a threshold.
* :func:`collapse_lock_times`: under the exact empirical score, per trajectory, the
  time after which its nearest training point (under the time-t map, i.e. the
  largest posterior weight) never changes again; the median is the measured t_C.
* :func:`memorised_fraction`: fraction of samples whose nearest training point is
  more than 3x closer than the second nearest.
* :func:`excess_entropy`: ``f(t) = log N / d + (1/2d) log det(2 pi e Sigma_t) - s(t)``
  with ``s(t) = -(1/d) E log P^e_t``, by Monte Carlo over the empirical law.
"""

from __future__ import annotations

import numpy as np
import torch

from nonrev.linalg import as_batch
from nonrev.metrics import nearest_neighbour_distances
from nonrev.process.ou import OUProcess
from nonrev.samplers import get_method, method_names, sample
from nonrev.scores.base import supports

#: phi at the speciation time for two classes (Biroli et al.; THEORY.md section 3).
PHI_AT_SPECIATION_TWO_CLASSES = 0.775


def speciation_threshold(n_classes: int) -> float:
    """phi at the speciation time for ``n_classes`` classes.

    0.775 for two classes (Biroli et al.), i.e. 55% of the way from chance (1/2) to
    certainty (1). For K classes nonrev uses the same fraction of the way from
    chance: ``1/K + 0.55 (1 - 1/K)``. This is a convention that reduces to the
    two-class value, not a derived result.
    """
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes!r}")
    frac = (PHI_AT_SPECIATION_TWO_CLASSES - 0.5) / 0.5
    return 1.0 / n_classes + frac * (1.0 - 1.0 / n_classes)


def _steps_between(t_hi: float, t_lo: float, dt: float) -> int:
    return max(1, int(round((t_hi - t_lo) / dt)))


def _labels(classify, x: torch.Tensor) -> np.ndarray:
    lab = classify(x)
    lab = lab.detach().cpu().numpy() if torch.is_tensor(lab) else np.asarray(lab)
    if lab.shape != (x.shape[0],):
        raise ValueError(
            f"classify must return one label per row, shape ({x.shape[0]},); got shape {lab.shape}"
        )
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise ValueError("classify must return integer labels")
        lab = lab.astype(np.int64)
    return lab


def clone_agreement(
    score,
    process: OUProcess,
    classify,
    branch_times,
    n_pairs: int,
    T: float,
    steps: int,
    method: str = "ancestral",
    generator=None,
    *,
    x_T=None,
    t_min: float = 1e-3,
    n_boot: int = 1000,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
    progress=None,
) -> dict:
    """phi(t): probability that two copies branched at ``t`` end in the same class.

    One set of ``n_pairs`` trajectories runs from ``T`` down through every branch
    time (a shared parent run; phi at different t is therefore positively
    correlated, which smooths the curve). At each branch time the set is copied and
    both copies finish to ``t_min`` with independent noise, with the step size of
    the parent run, ``(T - t_min) / steps``.

    Parameters
    ----------
    score : ``score(x, t)``; classify : ``classify(x) -> (B,)`` integer labels.
    branch_times : times in (t_min, T). n_pairs : trajectories per branch time.
    method : a stochastic sampler (``ancestral``, the default of
        :func:`~nonrev.samplers.sample`, or ``euler_maruyama``); deterministic ones
        give identical copies.
    x_T : optional (n_pairs, d) starting points at ``T``; default: the stationary
        law. Exact draws of ``P_T`` (the data pushed forward with
        :meth:`OUProcess.sample`) make any ``T`` exact, not only a large one.
    n_boot, seed : bootstrap resamples of the pairs for the 95% interval.
    progress : optional callable ``progress(k, n_branch)`` after each branch time.

    Returns a dict with ``branch_times`` (increasing), ``phi``, ``ci_low``,
    ``ci_high``, ``n_classes`` (distinct labels seen), ``n_pairs``, ``dt``,
    ``method``, ``T``.
    """
    if not get_method(method).stochastic:  # ValueError naming the methods if unknown
        raise ValueError(
            f"cloning needs a stochastic method "
            f"({', '.join(method_names(stochastic=True))}); "
            f"{method!r} would give identical copies"
        )
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    bt = np.atleast_1d(np.asarray(branch_times, dtype=float))
    if bt.ndim != 1 or bt.size == 0 or not np.all(np.isfinite(bt)):
        raise ValueError("branch_times must be a non-empty 1-D array of finite times")
    if np.any(bt <= t_min) or np.any(bt >= T):
        raise ValueError(f"branch_times must lie in (t_min, T) = ({t_min}, {T})")
    bt = np.unique(bt)
    dt = (float(T) - t_min) / steps
    # parent run: T -> each branch time in turn (decreasing)
    x = None
    if x_T is not None:
        x = as_batch("x_T", x_T, process.dim)
        if x.shape[0] != n_pairs:
            raise ValueError(f"x_T must have n_pairs = {n_pairs} rows, got {x.shape[0]}")
    t_hi = float(T)
    phis, lows, highs, seen = [], [], [], set()
    rng = np.random.default_rng(seed)
    results = {}
    for k, tb in enumerate(bt[::-1]):
        x, _ = sample(
            score,
            process,
            n=n_pairs if x is None else None,
            x_T=x,
            T=t_hi,
            t_min=float(tb),
            steps=_steps_between(t_hi, tb, dt),
            method=method,
            generator=generator,
            device=device,
            dtype=dtype,
        )
        t_hi = float(tb)
        both, _ = sample(
            score,
            process,
            x_T=torch.cat([x, x]),
            T=float(tb),
            t_min=t_min,
            steps=_steps_between(tb, t_min, dt),
            method=method,
            generator=generator,
        )
        lab = _labels(classify, both)
        seen.update(np.unique(lab).tolist())
        same = (lab[:n_pairs] == lab[n_pairs:]).astype(float)
        boot = same[rng.integers(0, n_pairs, size=(n_boot, n_pairs))].mean(1)
        results[float(tb)] = (same.mean(), *np.percentile(boot, [2.5, 97.5]))
        if progress is not None:
            progress(k + 1, bt.size)
    for tb in bt:
        p, lo, hi = results[float(tb)]
        phis.append(p), lows.append(lo), highs.append(hi)
    if len(seen) < 2:
        raise ValueError(
            "classify returned fewer than two classes over all end points; "
            "cloning needs at least two classes"
        )
    return {
        "branch_times": bt,
        "phi": np.array(phis),
        "ci_low": np.array(lows),
        "ci_high": np.array(highs),
        "n_classes": len(seen),
        "n_pairs": int(n_pairs),
        "dt": dt,
        "method": method,
        "T": float(T),
    }


def _crossing(times: np.ndarray, values: np.ndarray, level: float) -> float:
    """Largest t where ``values`` (sampled at increasing ``times``) crosses ``level``
    from above, by linear interpolation; nan when it never does."""
    above = values >= level
    for i in range(len(times) - 1, 0, -1):
        if above[i - 1] and not above[i]:
            v0, v1 = values[i - 1], values[i]
            return float(times[i - 1] + (v0 - level) / (v0 - v1) * (times[i] - times[i - 1]))
    if above.all():
        return float("nan")
    return float("nan") if not above[0] else float(times[0])


def speciation_time_measured(
    result: dict, threshold: float | None = None, n_classes: int | None = None
) -> dict:
    """Crossing of ``phi(t)`` with ``threshold`` and its 95% interval.

    ``result``: the dict of :func:`clone_agreement`. ``threshold`` defaults to
    :func:`speciation_threshold` of ``n_classes`` (default: the number of classes
    seen). The interval comes from the crossings of the bootstrap band; a bound is
    nan when the band never crosses inside the branch times.
    """
    K = result["n_classes"] if n_classes is None else int(n_classes)
    level = speciation_threshold(K) if threshold is None else float(threshold)
    t = np.asarray(result["branch_times"])
    return {
        "t": _crossing(t, np.asarray(result["phi"]), level),
        "t_low": _crossing(t, np.asarray(result["ci_low"]), level),
        "t_high": _crossing(t, np.asarray(result["ci_high"]), level),
        "threshold": level,
    }


def collapse_lock_times(
    score,
    process: OUProcess,
    n: int,
    T: float,
    steps: int,
    method: str = "euler_maruyama",
    generator=None,
    *,
    x_T=None,
    t_min: float = 1e-3,
    device=None,
    dtype=torch.float32,
    record_every: int = 1,
) -> dict:
    """Per-trajectory lock times under an exact empirical score.

    ``score`` must offer ``nearest(x, t)`` (as :class:`~nonrev.scores.EmpiricalScore`
    does): the index of the training point with the largest posterior weight at
    time ``t``. Along each reverse trajectory the nearest index is recorded every
    ``record_every`` steps; the lock time is the largest recorded time from which on
    the index equals its final value. A trajectory that never changes gets ``T``.
    ``x_T``: optional (n, d) starting points (default: the stationary law); exact
    draws of the empirical law at ``T`` (training points pushed forward with
    :meth:`OUProcess.sample`) make a moderate ``T`` exact.

    Returns ``lock_times`` (n,), ``median``, ``q25``, ``q75``, ``final_index`` (n,),
    ``samples`` (the end points, a tensor) and ``times`` (recorded times).
    """
    if not supports(score, "nearest"):
        raise ValueError("score must provide nearest(x, t) (use nonrev.scores.EmpiricalScore)")
    rec_t, rec_i = [], []

    def cb(i, t, x):
        if i % record_every == 0 or t <= t_min * (1 + 1e-9):
            rec_t.append(t)
            rec_i.append(score.nearest(x, t).cpu().numpy())

    x, _ = sample(
        score,
        process,
        n=None if x_T is not None else n,
        x_T=x_T,
        T=T,
        steps=steps,
        method=method,
        generator=generator,
        t_min=t_min,
        callback=cb,
        device=device,
        dtype=dtype,
    )
    times = np.array(rec_t)  # decreasing
    idx = np.stack(rec_i)  # (n_rec, n)
    final = idx[-1]
    same = idx == final[None, :]
    # last recorded position (in decreasing time) where the index differed from final
    differ = ~same
    last_diff = np.where(differ.any(0), differ.shape[0] - 1 - np.argmax(differ[::-1], axis=0), -1)
    lock = np.where(last_diff < 0, times[0], times[np.minimum(last_diff + 1, len(times) - 1)])
    return {
        "lock_times": lock,
        "median": float(np.median(lock)),
        "q25": float(np.percentile(lock, 25)),
        "q75": float(np.percentile(lock, 75)),
        "final_index": final,
        "samples": x,
        "times": times,
    }


def memorised_fraction(samples, points, ratio: float = 1.0 / 3.0) -> dict:
    """Fraction of samples with ``d_1 / d_2 < ratio`` (Bonnaire et al.), where ``d_1``
    and ``d_2`` are the Euclidean distances to the nearest and second-nearest
    training point. Returns ``fraction`` and the per-sample ``ratios``."""
    if not (0 < float(ratio) < 1):
        raise ValueError(f"ratio must lie in (0, 1), got {ratio!r}")
    dist, _ = nearest_neighbour_distances(samples, points, k=2)
    dist = dist.detach().cpu().double().numpy() if torch.is_tensor(dist) else np.asarray(dist)
    r = dist[:, 0] / np.maximum(dist[:, 1], np.finfo(float).tiny)
    return {"fraction": float(np.mean(r < ratio)), "ratios": r}


def excess_entropy(
    score, process: OUProcess, points, times, n_mc: int = 2000, generator=None
) -> np.ndarray:
    """Monte Carlo ``f(t)`` of the empirical law ``P^e_t = (1/N) sum N(M_t a, Sigma_t)``.

    ``f(t) = log N / d + (1/2d) log det(2 pi e Sigma_t) + (1/d) E log P^e_t(x)``,
    ``x ~ P^e_t``, with ``log P^e_t`` from ``score.log_prob`` (log-sum-exp over the
    points, chunked). It is about 0 in the collapsed phase (each x sits on one
    kernel) and approaches the Gaussian-approximation theory curve above t_C.
    ``score``: an :class:`~nonrev.scores.EmpiricalScore` of ``points``.
    """
    if not hasattr(score, "log_prob"):
        raise ValueError("score must provide log_prob(x, t) (use nonrev.scores.EmpiricalScore)")
    a = as_batch("points", points, process.dim)
    N, d = a.shape
    if N < 2:
        raise ValueError("points must hold at least two training points")
    ts = np.atleast_1d(np.asarray(times, dtype=float))
    if not np.all(np.isfinite(ts)) or np.any(ts <= 0):
        raise ValueError("times must be finite and positive")
    out = np.empty(ts.shape)
    for k, t in enumerate(ts):
        pick = torch.randint(
            0,
            N,
            (n_mc,),
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        )
        x0 = a[pick.to(a.device)]
        x = process.sample(x0, float(t), generator=generator)
        S = process.cov(float(t))
        logdet = np.linalg.slogdet(2 * np.pi * np.e * S)[1]
        lp = score.log_prob(x, float(t)).double().mean().item()
        out[k] = np.log(N) / d + logdet / (2 * d) + lp / d
    return out
