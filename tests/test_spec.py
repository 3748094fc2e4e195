"""The one parser of U and Q specs (nonrev.process.spec)."""

import numpy as np
import pytest

from nonrev import optimal_q
from nonrev.data.files import u_from_data
from nonrev.process.spec import process_from_spec, q_from_spec, u_from_spec


@pytest.fixture
def X(rng):
    return rng.standard_normal((200, 6)) * np.array([0.05, 0.2, 0.5, 1.0, 2.0, 4.0])


def test_u_specs(X, tmp_path):
    assert np.array_equal(u_from_spec("identity", X), np.eye(6))
    U = u_from_spec("data", X)
    assert np.allclose(U, u_from_data(X)) and np.trace(U) / 6 == pytest.approx(1.0)
    M = np.diag(np.arange(1.0, 7.0))
    np.save(tmp_path / "u.npy", M)
    assert np.array_equal(u_from_spec(str(tmp_path / "u.npy"), X), M)


@pytest.mark.parametrize("cap", [1.0, 10.0, 50.0])
def test_data_spec_with_a_condition_cap(X, cap):
    U0, U = u_from_spec("data", X), u_from_spec(f"data:{cap:g}", X)
    w0, V0 = np.linalg.eigh(U0)
    w = np.linalg.eigvalsh(U)
    assert np.linalg.cond(U0) > 100  # the data are ill-conditioned
    assert w[-1] / w[0] == pytest.approx(cap, rel=1e-9)
    assert np.trace(U) / 6 == pytest.approx(1.0, rel=1e-12)
    # same eigenvectors; the eigenvalues above lambda_max / cap keep their ratios
    D = V0.T @ U @ V0
    assert np.allclose(D, np.diag(np.diag(D)), atol=1e-10)
    kept = w0 >= w0[-1] / cap
    ratio = np.diag(D)[kept] / w0[kept]
    assert np.allclose(ratio, ratio[0], rtol=1e-9)


def test_q_specs(X):
    U = u_from_spec("data", X)
    assert q_from_spec("none", U) == ("none", None)
    name, Q = q_from_spec("optimal", U)
    assert name == "optimal" and np.allclose(Q, optimal_q(U))
    name, Q = q_from_spec("gamma:0.3", U)
    assert name == "gamma=0.3" and np.allclose(Q, 0.3 * optimal_q(U))
    proc = process_from_spec(X, "data:10", "gamma:0.5")
    assert np.allclose(proc.Q, 0.5 * optimal_q(u_from_spec("data:10", X)))


@pytest.mark.parametrize(
    "spec, option, match",
    [
        ("data:0.5", "--u", "--u: data:<x> needs a finite number x >= 1"),
        ("data:nan", "--u", "--u: data:<x>"),
        ("gamma:inf", "--q", "--q: gamma:<x> needs a finite number"),
        ("gamma:abc", "--q", "--q: gamma:<x>"),
        ("no-such-file.npy", "--u", "--u"),
    ],
)
def test_bad_specs_name_the_option(X, spec, option, match):
    with pytest.raises(ValueError, match=match):
        if option == "--u":
            u_from_spec(spec, X)
        else:
            q_from_spec(spec, np.eye(6))
