"""Reference problems shared by the tests, imported like any module
(``from problems import random_spd``)."""

import numpy as np

from nonrev.linalg import random_spd as _random_spd


def random_spd(d, rng, lo=0.25, hi=1.75, geometric=False):
    """``(U, V, lam)``: an SPD matrix with ``d`` eigenvalues spread over [lo, hi]
    (linearly, or geometrically) in a random orthonormal basis."""
    lam = np.geomspace(lo, hi, d) if geometric else np.linspace(lo, hi, d)
    U, V = _random_spd(lam, rng)
    return U, V, lam
