"""Plot helpers shared by the reports.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`),
which renders to PNG without pyplot: nothing here selects a backend, so a report
written from a notebook leaves the notebook's backend alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nonrev.outputs import atomic_file


def figure(nrows: int = 1, ncols: int = 1, *, figsize, squeeze: bool = True):
    """``(fig, axes)`` like ``pyplot.subplots``, without pyplot's global state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def save_figure(fig, path, *, dpi: int = 110) -> Path:
    """Lay out ``fig`` and write it to ``path`` (PNG) atomically."""
    path = Path(path)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def colormap(name: str):
    """A matplotlib colormap by name."""
    import matplotlib

    return matplotlib.colormaps[name]


def colour(name: str, k: int, fixed: dict) -> str:
    """``fixed[name]``, or the k-th of a few viridis shades for names it lacks."""
    return fixed.get(name, colormap("viridis")(0.2 + 0.6 * (k % 4) / 3))


def fmt(x, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits; ``n/a`` for None, nan and inf."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def plot_phi(ax, row: dict, colour_, label: str, *, predicted: bool = True) -> None:
    """One cloning curve phi(t) of a measured speciation row: dots, the 95% band, and
    the predicted t_S as a dashed line."""
    t = np.asarray(row["branch_times"])
    ax.plot(
        t, row["phi"], "o-", color=colour_, label=f"{label} measured t_S = {fmt(row['t_measured'])}"
    )
    ax.fill_between(t, row["ci_low"], row["ci_high"], color=colour_, alpha=0.2)
    tp = row["t_predicted"]
    if predicted and tp is not None and math.isfinite(tp) and tp > 0:
        ax.axvline(tp, color=colour_, ls="--", lw=1.2, label=f"{label} predicted t_S = {fmt(tp)}")
