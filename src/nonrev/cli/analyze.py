"""``nonrev analyze``: predicted speciation and collapse times for a user's data."""

from __future__ import annotations

import click

from nonrev.cli.common import (
    MAX_N_TRAIN,
    Q_HELP,
    U_HELP,
    announce_cost,
    count,
    data_options,
    format_time,
    user_errors,
)
from nonrev.process.spec import IMAGE_METAVAR, Q_METAVAR, U_METAVAR


def _print_table(report: dict, data_name: str, u_spec: str) -> None:
    names = list(report["speciation"])
    rows = [
        ("data", f"{data_name}  (n = {report['n']}, d = {report['d']})"),
        ("n_train", str(report["n_train"])),
        ("classes", str(report["classes"]) if report["classes"] else "none (total covariance)"),
        ("noise U", u_spec),
        (
            "covariance eig",
            "min {min:.4g}   median {median:.4g}   max {max:.4g}".format(**report["covariance"]),
        ),
        (
            "rates",
            f"reversible lambda_min(U) {report['rates']['reversible']:.4g}   "
            f"bound Tr(U)/d {report['rates']['bound']:.4g}",
        ),
    ]
    for key, val in rows:
        click.echo(f"{key:<16}{val}")
    click.echo("")
    # columns as wide as the longest header or value, two spaces apart, so that long
    # current names (gamma=1e+10, rate=0.5) never run together
    header = [f"Q = {n}" for n in names]
    table = [
        ("rate", [f"{report['rates'][n]:.4g}" for n in names]),
        ("t_S speciation", [format_time(report["speciation"][n]) for n in names]),
        ("t_C collapse", [format_time(report["collapse"][n]) for n in names]),
    ]
    if "collapse_finite" in report:
        table.append(("t_C finite N", [format_time(report["collapse_finite"][n]) for n in names]))
    width = [
        max(12, len(h), *(len(vals[j]) for _, vals in table)) + 2 for j, h in enumerate(header)
    ]
    click.echo(f"{'':<16}" + "".join(f"{h:>{w}}" for h, w in zip(header, width)))
    for key, vals in table:
        click.echo(f"{key:<16}" + "".join(f"{v:>{w}}" for v, w in zip(vals, width)))


@click.command()
@data_options
@click.option(
    "--u", "u_spec", default="identity", show_default=True, metavar=U_METAVAR, help=U_HELP
)
@click.option(
    "--q",
    "q_spec",
    default="optimal",
    show_default=True,
    metavar=Q_METAVAR,
    help="Current to compare with Q = 0: " + Q_HELP + " A FILE is reported as "
    "'file'; 'none' reports Q = 0 alone.",
)
@click.option(
    "--n-train",
    type=count(2, MAX_N_TRAIN),
    default=None,
    help="Number of training points N in the collapse criterion [default: n].",
)
@click.option(
    "--finite-n",
    "finite_n",
    is_flag=True,
    help="Also predict t_C at finite N (the median lock time, row 't_C finite N'): "
    "a Monte Carlo of 2000 forward paths against N Gaussian points, whose "
    "cost grows like N * d per path and step; the asymptotic t_C sits "
    "4-8% below the median lock time at d = 16..128.",
)
@click.option(
    "--image",
    "image",
    default=None,
    metavar=IMAGE_METAVAR,
    help="Read each row as an image of this shape (e.g. 3x32x32) and use the "
    "spectral process: U and Q block-diagonal in the DCT basis "
    "(nonrev.process.SpectralProcess; --u identity, data or data:<k> from "
    "the data's per-frequency variance; --q none, optimal or gamma:<x> on "
    "pairs of frequencies), O(d) memory instead of d x d.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def analyze(data, key, labels_path, labels_key, u_spec, q_spec, n_train, finite_n, image, as_json):
    """Predict speciation (t_S) and collapse (t_C) times for the data in DATA.

    DATA is an (n, d) array: .npy, .npz (see --key) or .csv (numbers, optional
    header). The times come from the Gaussian criteria of docs/THEORY.md, sections
    3 and 4, with the data's covariances. With U = identity every current gives
    the same times; use --u data or --u FILE to see the effect of Q.
    """
    import json

    from nonrev.data.files import load_array, load_labels
    from nonrev.process.spec import image_shape_of, q_from_spec, u_from_spec
    from nonrev.process.spectral import spectral_from_spec
    from nonrev.regimes.analyze import predict_regimes

    with user_errors():
        X = load_array(data, key)
        n = X.shape[0]
        labels = None if labels_path is None else load_labels(labels_path, n, labels_key)
        if image is not None:  # blocks in the DCT basis: no d x d work to announce
            shape = image_shape_of(image, X.shape[1])
            if finite_n:
                raise ValueError(
                    "--finite-n: not available with --image (the finite-N "
                    "Monte Carlo needs a dense process)"
                )
            processes = spectral_from_spec(shape, u_spec, q_spec, X)
            report = predict_regimes(X, labels=labels, n_train=n_train, processes=processes)
        else:
            announce_cost(X, data)
            U = u_from_spec(u_spec, X)
            name, Q = q_from_spec(q_spec, U)
            currents = {"none": None} if Q is None else {"none": None, name: Q}
            report = predict_regimes(
                X, U, currents, labels=labels, n_train=n_train, finite_n=finite_n
            )
    report["u"] = u_spec
    if image is not None:
        report["image"] = list(shape)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report, data, u_spec)
