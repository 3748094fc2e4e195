"""Reverse-time samplers.

* :func:`sample` (:mod:`.driver`): run a method on a grid;
* :mod:`.steps`: the per-method step functions and their per-grid coefficients
  (:func:`coefficients`, :func:`step`), the API that other front ends reuse;
* :mod:`.grids`: :func:`time_grid` and grid validation;
* :mod:`.gaussian`: :func:`gaussian_error` (the exact law of a sampler's output for
  Gaussian data) and :func:`optimise_grid`;
* :mod:`.design`: :func:`design_current` (the current, horizon and grid that minimise
  a method's exact error at a given NFE).
"""

from nonrev.samplers.grids import SPACINGS, as_grid, time_grid
from nonrev.samplers.steps import METHODS, Coefficients, coefficients, step
from nonrev.samplers.driver import sample
from nonrev.samplers.gaussian import gaussian_error, optimise_grid
from nonrev.samplers.design import design_current

__all__ = ["METHODS", "SPACINGS", "Coefficients", "as_grid", "coefficients", "design_current",
           "gaussian_error",
           "optimise_grid", "sample",
           "step", "time_grid"]
