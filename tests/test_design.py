"""Issue 24: optimise_grid with a free horizon and the fair (stationary) start, and
currents designed for the sampler (design_current)."""

import math

import numpy as np
import pytest

from problems import gaussian_case
from nonrev.samplers import gaussian_error, optimise_grid, time_grid


def test_optimise_grid_free_T_beats_a_brute_force_scan_of_T(rng):
    """d = 4 case, dpmpp_2m, 10 steps, started from N(0, U^{-1}): the log grid on 40
    horizons log-spaced over 0.5 / rate .. 40 / rate (a finer scan than
    optimise_grid's own 13) is never better than optimise_grid with T free, and the
    grid it returns ends at a horizon inside that range. With the exact start the
    same holds."""
    proc, m, C = gaussian_case(rng, current=False)
    rate = proc.relaxation_rate()
    for start in ("stationary", "exact"):
        scan = []
        for T in np.geomspace(0.5 / rate, 40.0 / rate, 40):
            try:
                scan.append(gaussian_error(proc, m, C, "dpmpp_2m", steps=10, T=T,
                                           start=start)["w2"])
            except ValueError:  # a singular step map at the longest horizons
                pass
        g = optimise_grid(proc, m, C, "dpmpp_2m", steps=10, start=start, maxiter=30)
        assert g.shape == (11,) and np.all(np.diff(g) > 0) and g[0] == pytest.approx(1e-3)
        assert 0.5 / rate <= g[-1] <= 40.0 / rate
        w2 = gaussian_error(proc, m, C, "dpmpp_2m", times=g, start=start)["w2"]
        assert w2 <= min(scan), start
    # the stationary start costs accuracy at short horizons: the scan's shortest
    # horizon is far worse than its best (so the free T is not a trivial choice)
    short = gaussian_error(proc, m, C, "dpmpp_2m", steps=10, T=0.5 / rate,
                           start="stationary")["w2"]
    assert short > 3 * w2


def test_optimise_grid_given_T_and_prior(rng):
    """T given: the grid ends there; the prior is passed to the exact error (the
    data's own law as prior: dpmpp_2m is exact to rounding on any grid)."""
    proc, m, C = gaussian_case(rng, current=False)
    g = optimise_grid(proc, m, C, "dpmpp_2m", steps=4, T=8.0, start="stationary", maxiter=10,
                      prior=(m, C))
    assert g[-1] == pytest.approx(8.0)
    exact = gaussian_error(proc, m, C, "dpmpp_2m", times=g, start="exact", prior=(m, C))["w2"]
    assert exact < 1e-6  # rounding (plain dpmpp_2m on this grid: ~0.05)


@pytest.mark.parametrize("kw, match", [
    (dict(start="fresh"), "start must be"),
    (dict(T_range=(2.0, 1.0)), "T_range must be"),
    (dict(T_scan=1), "T_scan must be"),
])
def test_optimise_grid_refuses_bad_input(rng, kw, match):
    proc, m, C = gaussian_case(rng, current=False)
    with pytest.raises(ValueError, match=match):
        optimise_grid(proc, m, C, "dpmpp_2m", steps=4, **kw)
