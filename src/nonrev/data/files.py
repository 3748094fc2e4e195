"""User data for the command line: arrays and labels from files, and a noise law
``U`` shaped like the data.

Loaders return float64 arrays and raise ``ValueError`` with a one-line message
(naming the file) for everything a user can get wrong: a missing or unreadable
file, an unsupported extension, the wrong rank, non-numeric entries, NaN/inf,
labels of another length, ``d = 1`` or fewer than 2 samples.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from nonrev.errors import one_line
from nonrev.linalg import as_labels, as_samples, sample_covariance, sym

__all__ = ["load_array", "load_labels", "ledoit_wolf_shrinkage", "u_from_data"]

_NUMERIC_KINDS = "biuf"


#: The first bytes of every .npy file (and of every array inside an .npz archive).
NPY_MAGIC = b"\x93NUMPY"


def _check_npy_header(fh, size: int, where: str) -> None:
    """Read the .npy header from ``fh`` (positioned at the start of the array's
    ``size`` bytes) and check it against ``size`` before numpy allocates what the
    header claims: ValueError (one line) for a file that is not .npy, holds Python
    objects, or is truncated or padded. Leaves ``fh`` anywhere."""
    import ast

    head = fh.read(len(NPY_MAGIC) + 2)
    if head[: len(NPY_MAGIC)] != NPY_MAGIC or len(head) < len(NPY_MAGIC) + 2:
        raise ValueError(
            f"{where}: cannot read: not a NumPy .npy array (it does not start "
            "with the .npy signature; a text or CSV file needs the .csv extension)"
        )
    version = (head[-2], head[-1])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"{where}: cannot read: corrupted .npy header (format version {version})")
    width = 2 if version == (1, 0) else 4
    raw = fh.read(width)
    hlen = int.from_bytes(raw, "little") if len(raw) == width else -1
    offset = len(NPY_MAGIC) + 2 + width
    if not 0 < hlen <= min(10_000, size - offset):
        raise ValueError(f"{where}: cannot read: corrupted .npy header (header length {hlen})")
    text = fh.read(hlen)
    try:
        header = ast.literal_eval(text.decode("utf-8" if version == (3, 0) else "latin1"))
        shape, dtype = tuple(header["shape"]), np.dtype(header["descr"])
        if not isinstance(header["fortran_order"], bool) or not all(
            isinstance(n, int) and n >= 0 for n in shape
        ):
            raise ValueError("bad shape or order")
    except (
        ValueError,
        SyntaxError,
        TypeError,
        KeyError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise ValueError(
            f"{where}: cannot read: corrupted .npy header ({type(exc).__name__})"
        ) from None
    if dtype.hasobject:
        raise ValueError(
            f"{where}: holds Python objects (dtype {dtype}); nonrev reads numeric "
            "arrays only and never unpickles"
        )
    need = math.prod(shape) * dtype.itemsize
    from nonrev.config import physical_memory

    memory = physical_memory()
    if memory is not None and 8 * math.prod(shape) > memory // 2:  # as float64
        raise ValueError(
            f"{where}: an array of shape {shape} needs "
            f"{8 * math.prod(shape) / 2**30:.3g} GiB as float64, more than half "
            f"of this machine's {memory / 2**30:.3g} GiB"
        )
    have = size - offset - hlen
    if need != have:
        raise ValueError(
            f"{where}: truncated or corrupted .npy file (its header announces "
            f"shape {shape} of {dtype}, {need} bytes; the file holds {have})"
        )


def _read_npy(path: Path) -> np.ndarray:
    from numpy.lib import format as npy_format

    with open(path, "rb") as fh:
        _check_npy_header(fh, path.stat().st_size, str(path))
        fh.seek(0)
        return npy_format.read_array(fh, allow_pickle=False)


def _names(keys, shown: int = 8) -> str:
    """The first ``shown`` names (each cut to 40 characters) and how many more."""
    cut = [k if len(k) <= 40 else k[:37] + "..." for k in keys[:shown]]
    more = f", ... ({len(keys)} in all)" if len(keys) > shown else ""
    return ", ".join(repr(k) if k == "" else k for k in cut) + more


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    """One array of an .npz archive, read member by member with zipfile (never through
    numpy's format sniffing, which takes a damaged archive for a pickle)."""
    import zipfile

    from numpy.lib import format as npy_format

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: cannot read: not an .npz archive (not a zip file)") from None
    with zf:
        members = {
            info.filename[:-4] if info.filename.endswith(".npy") else info.filename: info
            for info in zf.infolist()
        }
        keys = list(members)
        if key is None:
            if len(keys) != 1:
                raise ValueError(
                    f"{path}: holds {len(keys)} arrays ({_names(keys) or 'none'}); "
                    f"name one with key (--key on the command line)"
                )
            key = keys[0]
        elif key not in members:
            raise ValueError(f"{path}: no array named {key[:60]!r} (arrays: {_names(keys)})")
        info = members[key]
        with zf.open(info) as fh:
            _check_npy_header(fh, info.file_size, f"{path}[{key}]")
        with zf.open(info) as fh:
            return npy_format.read_array(fh, allow_pickle=False)


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        rows = [[field.strip() for field in row] for row in csv.reader(fh)]
    return [row for row in rows if any(row)]


def _read_csv(path: Path) -> np.ndarray:
    """Numeric CSV; a first row that is not all numbers is taken as a header."""
    rows = _read_csv_rows(path)
    if rows and any(_parse_float(f) is None for f in rows[0]):
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path}: no numeric rows")
    width = len(rows[0])
    out = np.empty((len(rows), width))
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{path}: row {i + 1} has {len(row)} fields, expected {width}")
        for j, field in enumerate(row):
            val = _parse_float(field)
            if val is None:
                raise ValueError(
                    f"{path}: non-numeric value {field!r} in row {i + 1}, column {j + 1}"
                )
            out[i, j] = val
    return out


def _read(path, key: str | None, *, labels_for: int | None = None) -> np.ndarray:
    """The raw array of a .npy / .npz / .csv file; with ``labels_for = n``, .csv and
    .txt files are read as ``n`` labels, one per line."""
    text_labels = labels_for is not None
    path = Path(path)
    suffix = path.suffix.lower()
    allowed = (".npy", ".npz", ".csv") + ((".txt",) if text_labels else ())
    if suffix not in allowed:
        raise ValueError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(allowed)}"
        )
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    if key is not None and suffix != ".npz":
        raise ValueError(f"{path}: a key only applies to .npz files")
    try:
        if suffix == ".npy":
            return _read_npy(path)
        if suffix == ".npz":
            return _read_npz(path, key)
        if text_labels:
            return _read_label_text(path, labels_for)
        return _read_csv(path)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(
            msg if msg.startswith(str(path)) else f"{path}: cannot read ({msg})"
        ) from None
    except Exception as exc:  # OSError, zipfile.BadZipFile, EOFError, UnicodeDecodeError...
        raise ValueError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


#: Dense d x d float64 matrices that analyze, steer and train hold at once for data
#: of dimension d (U, Q, A, the covariances, eigenvectors and their temporaries).
DENSE_MATRICES = 12


def check_dense_memory(d: int, name: str, count: int = DENSE_MATRICES) -> None:
    """ConfigError (a ValueError) naming ``name`` when ``count`` dense d x d float64
    matrices would not fit in this machine's memory; checked before any is made."""
    from nonrev.config import check_memory

    check_memory(
        name,
        8.0 * count * d * d,
        f"{count} dense {d} x {d} float64 matrices (U, Q, the covariances and their eigenvectors)",
    )


def load_array(path, key: str | None = None) -> np.ndarray:
    """Load a data matrix ``X`` of shape (n, d), n >= 2 samples of d >= 2 numbers.

    ``.npy``; ``.npz`` (``key`` picks the array; without a key the file must hold
    exactly one); ``.csv`` (comma separated numbers, an optional header row). Returns
    float64. ValueError (one line, naming the file) for every bad input.
    """
    arr = _read(path, key)
    if arr.dtype.kind == "c":
        raise ValueError(f"{path}: complex numbers (dtype {arr.dtype}); nonrev needs real data")
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"{path}: non-numeric data (dtype {arr.dtype})")
    try:
        return as_samples(str(path), arr, min_rows=2, min_cols=2)
    except ValueError as exc:
        raise ValueError(one_line(exc)) from None


def _read_label_text(path: Path, n: int) -> np.ndarray:
    """One label per line (.csv / .txt, first field of each line).

    The first line is a header when the file has ``n + 1`` lines, or when it is the
    only non-numeric one. Numbers when every label is a number (int64 when all are
    integral), strings otherwise.
    """
    fields = [row[0] for row in _read_csv_rows(path)]
    if len(fields) == n + 1 or (
        len(fields) > 1
        and _parse_float(fields[0]) is None
        and all(_parse_float(f) is not None for f in fields[1:])
    ):
        fields = fields[1:]
    numbers = [_parse_float(f) for f in fields]
    if fields and all(v is not None for v in numbers):
        values = np.array(numbers)
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return values.astype(np.int64)
        return values
    return np.array(fields)


def load_labels(path, n: int, key: str | None = None) -> np.ndarray:
    """Load one class label per sample: a 1-D array of length ``n``.

    ``.npy`` / ``.npz`` (``key`` as in :func:`load_array`) holding a 1-D (or (n, 1))
    array of integers, strings or finite numbers; ``.csv`` / ``.txt`` with one label
    per line (an optional header line: see :func:`_read_label_text`). Integral numbers come back
    as int64.
    """
    arr = _read(path, key, labels_for=n)
    try:
        labels = as_labels(f"{path}: labels", arr, n)
    except ValueError as exc:
        raise ValueError(one_line(exc)) from None
    k = np.unique(labels).size
    if n > 2 and k == n:
        raise ValueError(
            f"{path}: labels name {k} classes for {n} samples, one sample each; "
            "labels must be classes (continuous values?)"
        )
    return labels


def ledoit_wolf_shrinkage(X) -> float:
    """The Ledoit-Wolf (2004) optimal shrinkage of the sample covariance toward ``mu I``.

    With centred samples ``x_k`` (n of them), ``S = (1/n) sum_k x_k x_k^T``,
    ``mu = Tr(S)/d`` and the scaled norm ``||A||^2 = Tr(A A^T)/d``:

        delta^2 = ||S - mu I||^2,
        beta^2  = min(delta^2, (1/n^2) sum_k ||x_k x_k^T - S||^2),
        rho     = beta^2 / delta^2   (0 when delta = 0),

    using ``sum_k ||x_k x_k^T - S||^2 d = sum_k |x_k|^4 - n Tr(S^2)``. The
    shrunk covariance is ``rho mu I + (1 - rho) S``.
    """
    X = as_samples("X", X)
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    S = sample_covariance(X)
    mu = np.trace(S) / d
    delta2 = (np.sum(S * S) - 2.0 * mu * np.trace(S) + d * mu * mu) / d
    sq_norms = np.sum(Xc * Xc, axis=1)
    beta2 = (np.sum(sq_norms**2) - n * np.sum(S * S)) / (d * n * n)
    beta2 = min(max(beta2, 0.0), delta2)
    return 0.0 if delta2 <= 0.0 else float(beta2 / delta2)


def u_from_data(
    X, shrinkage: float | None = None, max_condition: float | None = None
) -> np.ndarray:
    """A noise precision ``U`` shaped like the data: ``U ∝ (shrunk covariance)^{-1}``.

    ``C* = rho mu I + (1 - rho) S`` with ``S`` the sample covariance (1/n), ``mu =
    Tr(S)/d`` and ``rho`` = ``shrinkage`` in [0, 1], or the Ledoit-Wolf estimate
    (:func:`ledoit_wolf_shrinkage`) when None. ``U = C*^{-1}`` scaled so that
    ``Tr(U)/d = 1``: the noise has the data's correlation shape and the mean rate of
    the standard process (``Tr(U)/d`` is the best relaxation rate any current can
    give). ValueError when ``C*`` is singular (``rho = 0`` with ``n <= d``).

    ``max_condition``: cap the condition number of ``U`` at this value (>= 1) by
    raising its smallest eigenvalues to ``lambda_max / max_condition`` (same
    eigenvectors), before the scaling to ``Tr(U)/d = 1``. The slowest rate of ``U``
    then rises and the current needed to equalise the rates is less stiff.
    """
    X = as_samples("X", X, min_cols=1)
    n, d = X.shape
    if shrinkage is None:
        rho = ledoit_wolf_shrinkage(X)
    else:
        try:
            rho = float(shrinkage)
        except (TypeError, ValueError):
            raise ValueError(f"shrinkage must be a number in [0, 1], got {shrinkage!r}") from None
        if not (math.isfinite(rho) and 0.0 <= rho <= 1.0):
            raise ValueError(f"shrinkage must be a number in [0, 1], got {shrinkage!r}")
    S = sample_covariance(X)
    mu = np.trace(S) / d
    if mu <= 0.0:
        raise ValueError("X has zero variance in every column; U cannot be estimated")
    C = rho * mu * np.eye(d) + (1.0 - rho) * S
    lam, V = np.linalg.eigh(C)
    if lam[0] <= 1e-12 * lam[-1]:
        raise ValueError(
            f"the shrunk covariance is singular (shrinkage {rho:.3g}, n = {n}, "
            f"d = {d}); use shrinkage > 0"
        )
    prec = 1.0 / lam
    if max_condition is not None:
        try:
            kappa = float(max_condition)
        except (TypeError, ValueError):
            kappa = math.nan
        if not (math.isfinite(kappa) and kappa >= 1.0):
            raise ValueError(f"max_condition must be a number >= 1, got {max_condition!r}")
        prec = np.maximum(prec, prec.max() / kappa)
    U = sym((V * prec) @ V.T)
    return U * (d / np.trace(U))


def load_square_matrix(spec, option: str, d: int, *, kind: str | None = None) -> np.ndarray:
    """A (d, d) matrix from a .npy/.npz/.csv file given to a command-line ``option``
    (e.g. ``--u`` or ``--q``); ``kind`` ``"spd"`` or ``"antisymmetric"`` also checks
    that property (:func:`nonrev.linalg.as_spd`, ``as_antisymmetric``). ValueError
    naming the option and the file otherwise."""
    from nonrev.linalg import as_antisymmetric, as_spd

    try:
        M = load_array(spec)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None
    if M.shape != (d, d):
        raise ValueError(f"{option} {spec}: must be a ({d}, {d}) matrix, got {M.shape}")
    check = {"spd": as_spd, "antisymmetric": as_antisymmetric, None: None}[kind]
    if check is not None:
        try:
            M = check("the matrix", M)
        except ValueError as exc:
            raise ValueError(f"{option} {spec}: {one_line(exc)}") from None
    return M
