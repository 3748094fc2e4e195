"""The experiments a sweep can run, by name.

Each experiment is a function from its validated config dataclass to a plain,
JSON-serialisable results dict. A sweep names the experiment and gives values for
the config's keys; :func:`run_experiment` validates them and runs one cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nonrev.experiments.cell import RegimeCellConfig, regime_cell
from nonrev.config import ConfigError, from_dict


@dataclass(frozen=True)
class Experiment:
    """A named experiment: ``run(config_class instance) -> results dict``.

    ``columns``: the result columns a summary shows first.
    """

    name: str
    config_class: type
    run: Callable[[object], dict]
    summary: str
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
        raise ConfigError(f"experiment: unknown experiment {name!r} (known: "
                          f"{', '.join(sorted(EXPERIMENTS))})") from None


def run_experiment(name: str, params: dict) -> dict:
    """Validate ``params`` for experiment ``name`` and run it."""
    exp = get_experiment(name)
    return exp.run(from_dict(exp.config_class, params))


register(Experiment(
    name="regime",
    config_class=RegimeCellConfig,
    run=regime_cell,
    summary="rates, predicted and measured t_S (cloning) and t_C (median lock time), "
            "memorised fraction, for one U spectrum, gamma, class direction and seed",
    columns=("t_S_predicted", "t_S_measured", "t_C_predicted", "t_C_measured",
             "memorised_fraction"),
))
