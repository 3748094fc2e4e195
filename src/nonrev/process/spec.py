"""The one parser of the U and Q specs that the command line and config files use.

``U``: ``identity``; ``data`` (:func:`nonrev.data.u_from_data`: the inverse
Ledoit-Wolf-shrunk covariance of the data, scaled to ``Tr(U)/d = 1``); ``data:<k>``
(the same with its condition number capped at ``k``); or a file holding a (d, d) SPD
matrix.

``Q``: ``none`` (reversible); ``optimal`` (:func:`nonrev.optimal_q` of ``U``);
``gamma:<x>`` (``x`` times the optimal current); ``rate:<x>`` (the fastest current
whose norm is at most ``x`` times the optimal current's:
:func:`nonrev.process.currents.fastest_q`; x > 0); or a file holding a (d, d) antisymmetric matrix.
"""

from __future__ import annotations

import math

import numpy as np

from nonrev.data.files import load_square_matrix, u_from_data
from nonrev.linalg import check_current
from nonrev.process.currents import fastest_q, optimal_q, scaled_q
from nonrev.process.ou import OUProcess

U_METAVAR = "identity|data|data:<k>|FILE"
Q_METAVAR = "none|optimal|gamma:<x>|rate:<x>|FILE"


def _number_after(prefix: str, spec: str, minimum: float, strict: bool = False) -> float | None:
    """The number ``x`` of a ``<prefix>:<x>`` spec (finite, >= minimum, or > minimum
    when ``strict``), or None for specs without that prefix."""
    if not spec.startswith(prefix + ":"):
        return None
    try:
        x = float(spec[len(prefix) + 1 :])
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and (x > minimum if strict else x >= minimum)):
        bound = "" if minimum == -math.inf else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{prefix}:<x> needs a finite number x{bound}, got {spec[:60]!r}")
    return x


def gamma_of(spec: str) -> float | None:
    """The ``x`` of a ``gamma:<x>`` Q spec, or None for other specs."""
    return _number_after("gamma", spec, -math.inf)


def rate_budget_of(spec: str) -> float | None:
    """The ``x`` of a ``rate:<x>`` Q spec (x > 0), or None for other specs."""
    return _number_after("rate", spec, 0.0, strict=True)


def condition_cap_of(spec: str) -> float | None:
    """The ``k`` of a ``data:<k>`` U spec (k >= 1), or None for other specs."""
    return _number_after("data", spec, 1.0)


def u_from_spec(spec: str, X: np.ndarray, *, option: str = "--u") -> np.ndarray:
    """The noise precision ``U`` named by ``spec`` for data ``X`` (n, d)."""
    d = X.shape[1]
    if spec == "identity":
        return np.eye(d)
    if spec == "data":
        return u_from_data(X)
    try:
        cap = condition_cap_of(spec)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None
    if cap is not None:
        return u_from_data(X, max_condition=cap)
    return load_square_matrix(spec, option, d, kind="spd")


def q_from_spec(spec: str, U: np.ndarray, *, option: str = "--q") -> tuple[str, np.ndarray | None]:
    """``(name, Q)`` for ``spec`` under ``U``: name is ``none``, ``optimal``,
    ``gamma=<x>``, ``rate=<x>`` or ``file``; ``Q`` is None for ``none``."""
    if spec == "none":
        return "none", None
    if spec == "optimal":
        return "optimal", optimal_q(U)
    try:
        gamma, budget = gamma_of(spec), rate_budget_of(spec)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None
    if gamma is not None:
        name, Q = f"gamma={gamma:g}", _scaled(optimal_q(U), gamma)
    elif budget is not None:
        Q0 = optimal_q(U)
        check_current(f"{option} {spec}", budget * Q0)
        name, Q = f"rate={budget:g}", fastest_q(U, budget * float(np.linalg.norm(Q0, 2)))
    else:
        name, Q = "file", load_square_matrix(spec, option, U.shape[0], kind="antisymmetric")
    check_current(f"{option} {spec}", Q)  # an overflowing scale, named before any work
    return name, Q


def _scaled(Q, gamma):
    with np.errstate(over="ignore", invalid="ignore"):
        return scaled_q(Q, gamma)


def process_from_spec(X, u: str, q: str) -> OUProcess:
    """The forward process for data ``X`` (n, d) from a ``u`` and a ``q`` spec."""
    U = u_from_spec(u, X)
    _, Q = q_from_spec(q, U)
    try:
        return OUProcess(U, Q)
    except ValueError as exc:
        raise ValueError(f"--u {u} / --q {q}: {exc}") from None


#: ``--image`` metavar: the shape of one data row as an image (the spectral process).
IMAGE_METAVAR = "CxHxW"


def image_shape_of(spec: str, d: int, *, option: str = "--image") -> tuple[int, int, int]:
    """``(C, H, W)`` from ``"CxHxW"`` (or ``"HxW"``, one channel); ValueError naming
    ``option`` unless the three sizes are positive integers whose product is ``d``."""
    parts = str(spec).lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 2:
        sizes = [1, *sizes]
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(
            f"{option}: an image shape CxHxW (or HxW) of positive integers, got {spec!r}"
        )
    if sizes[0] * sizes[1] * sizes[2] != d:
        raise ValueError(
            f"{option}: {spec} holds {sizes[0] * sizes[1] * sizes[2]} values but "
            f"each data row has d = {d}"
        )
    return sizes[0], sizes[1], sizes[2]
