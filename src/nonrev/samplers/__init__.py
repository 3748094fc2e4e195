"""Reverse-time samplers.

* :func:`sample` (:mod:`.driver`): run a method on a grid;
* :mod:`.registry`: the :class:`Method` records (``METHODS``, :func:`register`,
  :func:`get_method`, :func:`method_names`) and the coefficient types; one file per
  family of methods: :mod:`.explicit`, :mod:`.affine`, :mod:`.dpmpp`, :mod:`.prior`
  (with :mod:`.quadrature` and :mod:`.gridkernel`, the kernel's blocks on a grid);
* :mod:`.steps`: :func:`coefficients` and :func:`step`, the stepping API that other
  front ends reuse;
* :mod:`.grids`: :func:`time_grid`, grid validation and the one default horizon;
* :mod:`.gaussian`: :func:`gaussian_error` (the exact law of a sampler's output for
  Gaussian data) and :func:`optimise_grid`;
* :mod:`.design`: :func:`design_current` (the current, horizon and grid that minimise
  a method's exact error at a given NFE).
"""

# isort: off
# The families register their methods on import, in this order (the order of METHODS).
from nonrev.samplers import explicit  # noqa: F401
from nonrev.samplers import affine  # noqa: F401
from nonrev.samplers import dpmpp  # noqa: F401

# isort: on
from nonrev.samplers.design import design_current
from nonrev.samplers.driver import sample
from nonrev.samplers.gaussian import gaussian_error, optimise_grid
from nonrev.samplers.grids import SPACINGS, as_grid, default_horizon, time_grid
from nonrev.samplers.registry import (
    METHODS,
    Coefficients,
    Method,
    get_method,
    method_names,
    register,
    unregister,
)
from nonrev.samplers.steps import coefficients, step

__all__ = [
    "METHODS",
    "SPACINGS",
    "Coefficients",
    "Method",
    "as_grid",
    "coefficients",
    "default_horizon",
    "design_current",
    "gaussian_error",
    "get_method",
    "method_names",
    "optimise_grid",
    "register",
    "sample",
    "step",
    "time_grid",
    "unregister",
]
