"""The experiments a sweep can run, by name.

Each experiment is a function from its validated config dataclass to a plain,
JSON-serialisable results dict. A sweep names the experiment and gives values for
the config's keys; :func:`run_experiment` validates them and runs one cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nonrev.config import ConfigError, from_dict
from nonrev.experiments.cell import RegimeCellConfig, regime_cell
from nonrev.experiments.collapse_moves import CollapseMovesConfig, collapse_moves_cell
from nonrev.experiments.digits_grid import DigitsCellConfig, digits_cell
from nonrev.experiments.digits_study import DigitsStudyConfig, run_digits_study
from nonrev.experiments.headline import HeadlineConfig, run_headline


@dataclass(frozen=True)
class Experiment:
    """A named experiment: ``run(config_class instance) -> results dict``.

    ``columns``: the result columns a summary shows first.
    """

    name: str
    config_class: type
    run: Callable[[object], dict]
    columns: tuple[str, ...] = ()


EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` (a name is registered once)."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ConfigError naming the known ones otherwise."""
    try:
        return EXPERIMENTS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"experiment: unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})"
        ) from None


def run_experiment(name: str, params: dict) -> dict:
    """Validate ``params`` for experiment ``name`` and run it."""
    exp = get_experiment(name)
    return exp.run(from_dict(exp.config_class, params))


register(
    Experiment(
        name="regime",
        config_class=RegimeCellConfig,
        run=regime_cell,
        columns=(
            "t_S_predicted",
            "t_S_measured",
            "t_C_predicted",
            "t_C_measured",
            "memorised_fraction",
        ),
    )
)
register(
    Experiment(
        name="collapse_moves",
        config_class=CollapseMovesConfig,
        run=collapse_moves_cell,
        columns=("t_C_zero", "optimal_dtC", "speciation_early_dtC", "window_dtC"),
    )
)
register(
    Experiment(
        name="headline",
        config_class=HeadlineConfig,
        run=run_headline,
        columns=("runtime_s",),
    )
)
register(
    Experiment(
        name="digits",
        config_class=DigitsStudyConfig,
        run=run_digits_study,
        columns=("runtime_s",),
    )
)
register(
    Experiment(
        name="digits_cell",
        config_class=DigitsCellConfig,
        run=digits_cell,
        columns=("quality.gddim.20.frechet", "quality.dpmpp_2m.20.frechet", "rate", "a_norm"),
    )
)
