"""Time grids for the reverse samplers.

A grid is an increasing array of intrinsic times ``t_min = t_0 < ... < t_n = T``;
the samplers walk it backwards. :func:`time_grid` builds the two standard ones,
:func:`as_grid` validates any grid a caller passes as ``times=``, and
:func:`nonrev.samplers.gaussian.optimise_grid` builds grids that minimise the exact
sampler error for Gaussian data.
"""

from __future__ import annotations

import numpy as np

SPACINGS = ("uniform", "log")
#: The default horizon is this many relaxation times: ``KL(p_T || N(0, U^{-1}))`` then
#: carries a factor ``e^{-2 HORIZON}`` of its initial value.
HORIZON = 6.0


def default_horizon(process) -> float:
    """The default start time ``T = 6 / relaxation_rate`` of the reverse samplers."""
    return HORIZON / process.relaxation_rate()


def resolve_grid(process, times=None, steps: int = 200, T: float | None = None,
                 t_min: float = 1e-3, spacing: str = "uniform") -> np.ndarray:
    """The one way a sampler's grid is chosen: ``times`` (validated by :func:`as_grid`)
    when given, else :func:`time_grid` from ``T`` (default :func:`default_horizon`),
    ``steps``, ``t_min`` and ``spacing``. Increasing float64 array."""
    if times is not None:
        return as_grid(times)
    if T is None:
        T = default_horizon(process)
    return time_grid(T, steps, t_min, spacing)


def time_grid(T: float, steps: int, t_min: float = 1e-3, spacing: str = "uniform") -> np.ndarray:
    """``steps + 1`` increasing intrinsic times from ``t_min`` to ``T``: ``uniform`` in
    ``t``, or ``log`` (geometric in ``t``, i.e. about uniform in log signal-to-noise
    near ``t = 0`` where ``Sigma_t ~ 2 t I``)."""
    T, t_min, steps = check_times(T, t_min, steps)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    if spacing == "log":
        if t_min <= 0:
            raise ValueError("t_min must be > 0 for a log-spaced grid")
        return np.geomspace(t_min, T, steps + 1)
    return np.linspace(t_min, T, steps + 1)


def check_times(T, t_min, steps):
    """Validated ``(T, t_min, steps)``: ``0 <= t_min < T`` finite, ``steps >= 1``."""
    try:
        T = float(T)
        t_min = float(t_min)
    except (TypeError, ValueError):
        raise ValueError(f"T and t_min must be numbers, got T={T!r}, t_min={t_min!r}") from None
    if not np.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a finite positive time, got {T!r}")
    if not np.isfinite(t_min) or t_min < 0 or t_min >= T:
        raise ValueError(f"t_min must lie in [0, T) = [0, {T}), got {t_min!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return T, t_min, int(steps)


def as_grid(times, name: str = "times") -> np.ndarray:
    """A caller's grid as a float64 array: 1-D, at least two finite times, ``>= 0``,
    strictly increasing (a decreasing grid, the sampling order, is accepted and
    reversed). ValueError naming ``name`` otherwise."""
    try:
        g = np.array(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of times, got {times!r}") from None
    if g.ndim != 1 or g.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least two times, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"{name} contains NaN or inf")
    if g[0] > g[-1]:
        g = g[::-1].copy()
    if not np.all(np.diff(g) > 0):
        raise ValueError(f"{name} must be strictly increasing (or strictly decreasing)")
    if g[0] < 0:
        raise ValueError(f"{name} must be >= 0, got a smallest time of {g[0]!r}")
    return g
