"""Reference problems shared by the tests."""

import numpy as np
import pytest


def random_spd(d, rng, lo=0.25, hi=1.75, geometric=False):
    """SPD matrix with eigenvalues spread over [lo, hi] in a random orthonormal basis."""
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(lo, hi, d) if geometric else np.linspace(lo, hi, d)
    return (V * lam) @ V.T, V, lam


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
