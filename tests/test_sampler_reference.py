"""Same numbers as before the registry reshape: every method's samples and exact
Gaussian errors on the reference problems (tests/sampler_reference.py), and the
diffusers scheduler's outputs, against the values the pre-reshape samplers wrote to
tests/data/sampler_reference.npz. float64 results to 1e-10 relative (they agreed to
4e-15 on the machine that made the file: the margin is for other BLAS builds);
float32 samples to 1e-4."""

from pathlib import Path

import numpy as np
import pytest
from sampler_reference import compute

REFERENCE = Path(__file__).parent / "data" / "sampler_reference.npz"


@pytest.fixture(scope="module")
def now():
    return compute()


def test_every_reference_number_is_unchanged(now):
    ref = np.load(REFERENCE)
    assert set(now) == set(ref.files)
    for key in ref.files:
        a, b = ref[key], np.asarray(now[key])
        if a.dtype.kind in "US":  # a refusal: the same message
            assert str(a) == str(b), key
            continue
        tol = 1e-4 if key.endswith("_32") else 1e-10
        scale = max(float(np.abs(a).max()), 1e-300)
        assert float(np.abs(a - b).max()) <= tol * scale, key
