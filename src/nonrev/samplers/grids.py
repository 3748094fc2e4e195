"""Time grids for the reverse samplers.

A grid is an increasing array of intrinsic times ``t_min = t_0 < ... < t_n = T``;
the samplers walk it backwards. :func:`time_grid` builds the two standard ones,
:func:`as_grid` validates any grid a caller passes as ``times=``, and
:func:`nonrev.samplers.gaussian.optimise_grid` builds grids that minimise the exact
sampler error for Gaussian data.
"""

from __future__ import annotations

import numpy as np

from nonrev.config import show

SPACINGS = ("uniform", "log")
#: Bytes a sampler holds per grid point and per entry of a (d, d) matrix while it
#: builds a method's coefficients: the kernel, the gDDIM factor, the per-step matrices
#: and their temporaries, about 50 float64 (d, d) stacks (``nonrev sample --steps
#: 2000`` at d = 64 peaked at 3.25 GB).
GRID_BYTES_PER_ENTRY = 400.0

#: The default horizon is this many relaxation times: ``KL(p_T || N(0, U^{-1}))`` then
#: carries a factor ``e^{-2 HORIZON}`` of its initial value.
HORIZON = 6.0


def default_horizon(process) -> float:
    """The default start time ``T = 6 / relaxation_rate`` of the reverse samplers."""
    return HORIZON / process.relaxation_rate()


def resolve_grid(
    process,
    times=None,
    steps: int = 200,
    T: float | None = None,
    t_min: float = 1e-3,
    spacing: str = "uniform",
) -> np.ndarray:
    """The one way a sampler's grid is chosen: ``times`` (validated by :func:`as_grid`)
    when given, else :func:`time_grid` from ``T`` (default :func:`default_horizon`),
    ``steps``, ``t_min`` and ``spacing``. Increasing float64 array."""
    if times is not None:
        return as_grid(times, process=process)
    if T is None:
        T = default_horizon(process)
    return time_grid(T, steps, t_min, spacing, process=process)


def check_grid_size(n_points: int, process, name: str = "steps") -> None:
    """ValueError naming ``name`` when a grid of ``n_points`` times would need more
    memory for ``process``'s sampler coefficients than this machine has (checked
    before the grid is built; see :data:`GRID_BYTES_PER_ENTRY`, per entry of the
    kernel's blocks: ``d^2`` for a dense kernel, ``d g`` for blocks of ``g``)."""
    from nonrev.config import check_memory

    n_points = int(n_points)
    entries = max(int(process.drift_blocks.size), 1)
    check_memory(
        name,
        GRID_BYTES_PER_ENTRY * n_points * entries + 8.0 * n_points,
        f"a sampler's coefficients on {n_points} grid points at d = {process.dim}",
    )


#: Longest step, in units of the fastest decay ``1 / max Re spec(A)``: over a longer
#: one ``exp(-h A)`` underflows in float64 and the step's matrices are singular.
MAX_STEP_DECAY = 600.0


class StepTooLong(ValueError):
    """A step of a grid over which the kernel underflows (:func:`check_gaps`)."""


def check_gaps(grid: np.ndarray, process, name: str = "T") -> None:
    """ValueError naming ``name`` when a step of the increasing ``grid`` is so long
    that the process's kernel over it underflows (:data:`MAX_STEP_DECAY`)."""
    if grid.size < 2:
        return
    fastest = float(np.linalg.eigvals(process.drift_blocks).real.max())
    gaps = np.diff(grid)
    k = int(np.argmax(gaps))
    if gaps[k] * fastest > MAX_STEP_DECAY:
        raise StepTooLong(
            f"{name}: the step from t = {grid[k]:.4g} to {grid[k + 1]:.4g} is too long: "
            f"exp(-h A) underflows in float64 over it (h * max Re eig(A) = "
            f"{gaps[k] * fastest:.3g} > {MAX_STEP_DECAY:g}); use more steps (or times) or a "
            f"smaller T (default T = 6 / rate = {6.0 / process.relaxation_rate():.4g})"
        )


def time_grid(
    T: float, steps: int, t_min: float = 1e-3, spacing: str = "uniform", *, process=None
) -> np.ndarray:
    """``steps + 1`` increasing intrinsic times from ``t_min`` to ``T``: ``uniform`` in
    ``t``, or ``log`` (geometric in ``t``, i.e. about uniform in log signal-to-noise
    near ``t = 0`` where ``Sigma_t ~ 2 t I``). With ``process``, the grid is checked
    for that process's sampler: its size against memory before it is built
    (:func:`check_grid_size`), its steps for underflow (:func:`check_gaps`)."""
    T, t_min, steps = check_times(T, t_min, steps)
    if process is not None:
        check_grid_size(steps + 1, process)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}; got {show(spacing)}")
    if spacing == "log":
        if t_min <= 0:
            raise ValueError("t_min must be > 0 for a log-spaced grid")
        grid = np.geomspace(t_min, T, steps + 1)
    else:
        grid = np.linspace(t_min, T, steps + 1)
    if process is not None:
        check_gaps(grid, process)
    return grid


def check_times(T, t_min, steps):
    """Validated ``(T, t_min, steps)``: ``0 <= t_min < T`` finite, ``steps >= 1``."""
    try:
        T = float(T)
        t_min = float(t_min)
    except (TypeError, ValueError):
        raise ValueError(
            f"T and t_min must be numbers, got T={show(T)}, t_min={show(t_min)}"
        ) from None
    if not np.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a finite positive time, got {show(T)}")
    if not np.isfinite(t_min) or t_min < 0 or t_min >= T:
        raise ValueError(f"t_min must lie in [0, T) = [0, {T}), got {show(t_min)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {show(steps)}")
    return T, t_min, int(steps)


def as_grid(times, name: str = "times", *, process=None) -> np.ndarray:
    """A caller's grid as a float64 array: 1-D, at least two finite times, ``>= 0``,
    strictly increasing (a decreasing grid, the sampling order, is accepted and
    reversed). ValueError naming ``name`` otherwise, also, with ``process``, when
    that process's sampler on it would not fit in memory or a step underflows."""
    try:
        g = np.array(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of times, got {show(times)}") from None
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
    if process is not None:
        check_grid_size(g.size, process, name)
        check_gaps(g, process, name)
    return g
