"""Fixtures shared by the tests (the reference problems are in problems.py)."""

import os

# One thread per worker (see the Makefile's test target); set before numpy/torch load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def two_class_files(tmp_path):
    """Two classes in d = 4, n = 60, saved in every supported data format
    (the user-data files of the analyze and steer command tests)."""
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1], 30)
    X = rng.standard_normal((60, 4)) * np.array([0.5, 1.0, 1.5, 2.0])
    X[labels == 1, 0] += 3.0
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", labels)
    np.savez(tmp_path / "xy.npz", x=X, y=labels)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="a,b,c,d", comments="")
    np.savetxt(tmp_path / "plain.csv", X, delimiter=",")
    (tmp_path / "y.txt").write_text("class\n" + "\n".join("ab"[k] for k in labels) + "\n")
    return tmp_path, X, labels
