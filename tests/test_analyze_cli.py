"""`nonrev analyze` end to end, and the data loaders behind it (nonrev.data.files)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from nonrev import OUProcess, optimal_q
from nonrev.cli import main
from nonrev.data.files import ledoit_wolf_shrinkage, load_array, load_labels, u_from_data
from nonrev.regimes import collapse_time_from_data, speciation_time_from_data


@pytest.fixture
def data(two_class_files):
    return two_class_files


def run(*args):
    result = CliRunner().invoke(main, ["analyze", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def run_json(*args):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ----------------------------------------------------------------------------- success
def test_json_schema_and_values(data):
    path, X, labels = data
    rep = run_json(path / "x.npy", "--labels", path / "y.npy", "--u", "data")
    assert rep["n"] == 60 and rep["d"] == 4 and rep["n_train"] == 60 and rep["classes"] == 2
    assert set(rep["speciation"]) == set(rep["collapse"]) == {"none", "optimal"}
    assert set(rep["rates"]) == {"reversible", "bound", "none", "optimal"}
    assert set(rep["covariance"]) == {"min", "median", "max"}
    assert rep["u"] == "data"
    # The numbers are the library's.
    U = u_from_data(X)
    for name, Q in (("none", None), ("optimal", optimal_q(U))):
        proc = OUProcess(U, Q)
        assert rep["speciation"][name] == pytest.approx(
            speciation_time_from_data(proc, X, labels), rel=1e-12
        )
        assert rep["collapse"][name] == pytest.approx(collapse_time_from_data(proc, X), rel=1e-12)
        assert rep["rates"][name] == pytest.approx(proc.relaxation_rate(), rel=1e-9)
    assert rep["rates"]["none"] == pytest.approx(rep["rates"]["reversible"])
    assert rep["rates"]["optimal"] == pytest.approx(rep["rates"]["bound"]) == pytest.approx(1.0)
    assert rep["speciation"]["optimal"] != pytest.approx(rep["speciation"]["none"], rel=1e-3)
    eig = np.linalg.eigvalsh(np.cov(X.T, bias=True))
    assert rep["covariance"]["min"] == pytest.approx(eig[0])
    assert rep["covariance"]["max"] == pytest.approx(eig[-1])


def test_table_output(data):
    path, _, _ = data
    result = run(path / "x.npy", "--labels", path / "y.npy", "--u", "data")
    assert result.exit_code == 0, result.output
    for text in (
        "n = 60, d = 4",
        "classes         2",
        "Q = none",
        "Q = optimal",
        "t_S speciation",
        "t_C collapse",
        "lambda_min(U)",
        "Tr(U)/d",
        "median",
    ):
        assert text in result.output


def test_formats_give_the_same_answer(data):
    path, _, _ = data
    ref = run_json(path / "x.npy", "--labels", path / "y.npy")
    for args in (
        [path / "xy.npz", "--key", "x", "--labels", path / "xy.npz", "--labels-key", "y"],
        [path / "x.csv", "--labels", path / "y.txt"],
        [path / "plain.csv", "--labels", path / "y.npy"],
    ):
        rep = run_json(*args)
        for part in ("speciation", "collapse"):
            for name in ("none", "optimal"):
                assert rep[part][name] == pytest.approx(ref[part][name], rel=1e-9)


def test_identity_u_makes_every_current_equal(data):
    path, _, _ = data
    rep = run_json(path / "x.npy")
    assert rep["classes"] == 0 and rep["u"] == "identity"
    assert rep["speciation"]["none"] == pytest.approx(rep["speciation"]["optimal"], rel=1e-6)
    assert rep["collapse"]["none"] == pytest.approx(rep["collapse"]["optimal"], rel=1e-6)


def test_q_and_u_files_and_n_train(data):
    path, X, _ = data
    U = u_from_data(X)
    Q = optimal_q(U)
    np.save(path / "u.npy", U)
    np.save(path / "q.npy", Q)
    rep = run_json(path / "x.npy", "--u", path / "u.npy", "--q", path / "q.npy")
    assert set(rep["speciation"]) == {"none", "file"}
    ref = run_json(path / "x.npy", "--u", "data")
    assert rep["speciation"]["file"] == pytest.approx(ref["speciation"]["optimal"], rel=1e-9)
    only = run_json(path / "x.npy", "--q", "none")
    assert set(only["collapse"]) == {"none"}
    more = run_json(path / "x.npy", "--n-train", 100000)
    assert more["n_train"] == 100000
    assert more["collapse"]["none"] < only["collapse"]["none"]


# ----------------------------------------------------------------------------- bad files
def bad_files(tmp_path):
    """(name, file content writer) pairs, each a file that analyze must refuse."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    nan = X.copy()
    nan[2, 1] = np.nan
    inf = X.copy()
    inf[0, 0] = np.inf
    np.save(tmp_path / "rank1.npy", X[:, 0])
    np.save(tmp_path / "rank3.npy", X.reshape(10, 3, 1))
    np.save(tmp_path / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "complex.npy", X + 1j)
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "inf.npy", inf)
    np.save(tmp_path / "d1.npy", X[:, :1])
    np.save(tmp_path / "n1.npy", X[:1])
    np.savez(tmp_path / "two.npz", a=X, b=X)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY this is not an array")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 broken zip")
    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,oops\n")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    (tmp_path / "nan.csv").write_text("1,2\nnan,4\n5,6\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "data.json").write_text("[[1, 2], [3, 4]]")
    (tmp_path / "folder.npy").mkdir()
    return {
        "missing": (tmp_path / "missing.npy", "no such file"),
        "folder": (tmp_path / "folder.npy", "not a regular file"),
        "extension": (tmp_path / "data.json", "unsupported file type"),
        "rank1": (tmp_path / "rank1.npy", "shape"),
        "rank3": (tmp_path / "rank3.npy", "shape"),
        "strings": (tmp_path / "strings.npy", "non-numeric"),
        "complex": (tmp_path / "complex.npy", "complex numbers"),
        "object": (tmp_path / "obj.npy", "holds Python objects"),
        "nan": (tmp_path / "nan.npy", "NaN or inf"),
        "inf": (tmp_path / "inf.npy", "NaN or inf"),
        "d1": (tmp_path / "d1.npy", "at least 2 columns"),
        "n1": (tmp_path / "n1.npy", "at least 2 rows"),
        "npz_keys": (tmp_path / "two.npz", "holds 2 arrays (a, b)"),
        "garbage_npy": (tmp_path / "garbage.npy", "corrupted .npy header"),
        "garbage_npz": (tmp_path / "garbage.npz", "not an .npz archive"),
        "text_csv": (tmp_path / "text.csv", "non-numeric value 'oops' in row 2"),
        "ragged_csv": (tmp_path / "ragged.csv", "row 2 has 2 fields"),
        "nan_csv": (tmp_path / "nan.csv", "NaN or inf"),
        "empty_csv": (tmp_path / "empty.csv", "no numeric rows"),
    }


def assert_one_line_error(result, fragment):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0], result.output


def test_every_bad_data_file_is_one_line_error(tmp_path):
    cases = bad_files(tmp_path)
    for name, (path, fragment) in cases.items():
        result = run(path)
        assert_one_line_error(result, fragment)
        assert str(path.name) in result.output, name
        with pytest.raises(ValueError, match="^[^\n]*$"):
            load_array(path)


def test_bad_options_and_labels(data):
    path, X, _ = data
    np.save(path / "short.npy", np.zeros(59, dtype=int))
    np.save(path / "nan_labels.npy", np.full(60, np.nan))
    np.save(path / "one_class.npy", np.zeros(60, dtype=int))
    np.save(path / "labels2d.npy", np.zeros((60, 2), dtype=int))
    np.save(path / "u_shape.npy", np.eye(3))
    np.save(path / "u_indef.npy", np.diag([1.0, -1.0, 1.0, 1.0]))
    np.save(path / "q_sym.npy", np.ones((4, 4)))
    (path / "short.csv").write_text("1\n0\n")
    cases = [
        (["--labels", path / "short.npy"], "one label per sample (60), got 59"),
        (["--labels", path / "short.csv"], "one label per sample (60), got 2"),
        (["--labels", path / "nan_labels.npy"], "NaN or inf"),
        (["--labels", path / "one_class.npy"], "at least 2 classes"),
        (["--labels", path / "labels2d.npy"], "1-D"),
        (["--labels", path / "missing.npy"], "no such file"),
        (["--labels", path / "xy.npz"], "holds 2 arrays"),
        (["--key", "nope", "--labels", path / "y.npy"], "a key only applies to .npz"),
        (["--u", path / "u_shape.npy"], "must be a (4, 4) matrix"),
        (["--u", path / "u_indef.npy"], "positive definite"),
        (["--u", path / "nothing.npy"], "--u: "),
        (["--q", path / "q_sym.npy"], "antisymmetric"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run(path / "x.npy", *args), fragment)
    assert_one_line_error(run(path / "xy.npz", "--key", "z"), "no array named 'z'")
    usage = run(path / "x.npy", "--n-train", 1)
    assert usage.exit_code == 2 and "Traceback" not in usage.output
    assert "--n-train" in usage.output


# ----------------------------------------------------------------------------- nonrev.data.files
def test_load_array_and_labels(data):
    path, X, labels = data
    for name in ("x.npy", "x.csv", "plain.csv"):
        arr = load_array(path / name)
        assert arr.dtype == np.float64 and arr.shape == (60, 4)
        np.testing.assert_allclose(arr, X, rtol=1e-15 if name.endswith("npy") else 1e-12)
    np.save(path / "ints.npy", np.arange(12).reshape(6, 2))
    assert load_array(path / "ints.npy").dtype == np.float64
    assert load_array(path / "xy.npz", "x").shape == (60, 4)
    np.testing.assert_array_equal(load_labels(path / "y.npy", 60), labels)
    np.testing.assert_array_equal(load_labels(path / "xy.npz", 60, "y"), labels)
    text = load_labels(path / "y.txt", 60)
    assert text.dtype.kind == "U" and set(text) == {"a", "b"}
    (path / "num.csv").write_text("label\n" + "\n".join(map(str, labels)) + "\n")
    np.testing.assert_array_equal(load_labels(path / "num.csv", 60), labels)
    with pytest.raises(ValueError, match="one label per sample"):
        load_labels(path / "y.npy", 61)


def test_ledoit_wolf_shrinkage_matches_definition():
    rng = np.random.default_rng(3)
    n, d = 30, 8
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    Xc = X - X.mean(0)
    S = Xc.T @ Xc / n
    mu = np.trace(S) / d
    norm2 = lambda A: np.sum(A * A) / d  # noqa: E731 - <A, A> = Tr(A A^T) / d
    delta2 = norm2(S - mu * np.eye(d))
    beta2 = min(delta2, sum(norm2(np.outer(x, x) - S) for x in Xc) / n**2)
    assert ledoit_wolf_shrinkage(X) == pytest.approx(beta2 / delta2, rel=1e-10)
    # Isotropic Gaussian data in high dimension: shrink (nearly) all the way.
    assert ledoit_wolf_shrinkage(rng.standard_normal((20, 200))) > 0.9


def test_u_from_data():
    rng = np.random.default_rng(4)
    n, d = 200, 5
    X = rng.standard_normal((n, d)) * np.array([0.2, 0.5, 1.0, 2.0, 4.0])
    U = u_from_data(X)
    assert np.trace(U) / d == pytest.approx(1.0)
    rho = ledoit_wolf_shrinkage(X)
    S = np.cov(X.T, bias=True)
    C = rho * np.trace(S) / d * np.eye(d) + (1 - rho) * S
    Uref = np.linalg.inv(C)
    np.testing.assert_allclose(U, Uref * d / np.trace(Uref), rtol=1e-10)
    np.testing.assert_allclose(u_from_data(X, 1.0), np.eye(d), atol=1e-12)  # full shrinkage
    wide = rng.standard_normal((4, 10))
    assert np.all(np.linalg.eigvalsh(u_from_data(wide)) > 0)
    with pytest.raises(ValueError, match="singular"):
        u_from_data(wide, 0.0)
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="shrinkage"):
            u_from_data(X, bad)
    with pytest.raises(ValueError, match="X"):
        u_from_data(X[:1])
