"""Reverse-time samplers: see :mod:`nonrev.samplers.driver` for the methods."""

from nonrev.samplers.driver import METHODS, SPACINGS, sample, time_grid

__all__ = ["METHODS", "SPACINGS", "sample", "time_grid"]
