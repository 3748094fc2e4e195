"""An experiment over a grid of cells, on Ray or locally: see :mod:`nonrev.sweep.core`."""

from nonrev.sweep.core import (
    Cell,
    Sweep,
    SweepError,
    cell_id,
    load_sweep,
    parse_sweep,
    run_sweep,
    sweep_table,
)

__all__ = [
    "Cell",
    "Sweep",
    "SweepError",
    "cell_id",
    "load_sweep",
    "parse_sweep",
    "run_sweep",
    "sweep_table",
]
