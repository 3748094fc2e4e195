"""Reference problems shared by the tests."""

import os

# One thread per worker (see the Makefile's test target); set before numpy/torch load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def random_spd(d, rng, lo=0.25, hi=1.75, geometric=False):
    """SPD matrix with eigenvalues spread over [lo, hi] in a random orthonormal basis."""
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(lo, hi, d) if geometric else np.linspace(lo, hi, d)
    return (V * lam) @ V.T, V, lam


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
