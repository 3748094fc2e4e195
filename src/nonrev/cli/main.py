"""The ``nonrev`` command line: thin wrappers that parse, validate, call the library
and write outputs. Every error a user can cause is reported in one line with a
non-zero exit code, never a traceback."""

from __future__ import annotations

import click
import numpy as np

from nonrev import __version__
from nonrev.cli.options import data_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nonrev")
def main():
    """Diffusion models with non-reversible forward processes.

    The forward process is dx = -(I+Q) U x dt + sqrt(2) dW: U (symmetric positive
    definite) fixes the noise law N(0, U^-1) and the antisymmetric current Q adds
    rotating probability flux. nonrev predicts and measures when the backward
    dynamics commits to a class (speciation) and falls onto training points
    (collapse), for any U and Q.
    """


# ----------------------------------------------------------------------------- analyze
def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _format_time(t: float) -> str:
    return "0 (never)" if t == 0.0 else f"{t:.4g}"


def _print_table(report: dict, data_name: str, u_spec: str) -> None:
    names = list(report["speciation"])
    rows = [
        ("data", f"{data_name}  (n = {report['n']}, d = {report['d']})"),
        ("n_train", str(report["n_train"])),
        ("classes", str(report["classes"]) if report["classes"] else "none (total covariance)"),
        ("noise U", u_spec),
        ("covariance eig", "min {min:.4g}   median {median:.4g}   max {max:.4g}".format(
            **report["covariance"])),
        ("rates", f"reversible lambda_min(U) {report['rates']['reversible']:.4g}   "
                  f"bound Tr(U)/d {report['rates']['bound']:.4g}"),
    ]
    for key, val in rows:
        click.echo(f"{key:<16}{val}")
    click.echo("")
    click.echo(f"{'':<16}" + "".join(f"{'Q = ' + n:>14}" for n in names))
    table = [
        ("rate", [f"{report['rates'][n]:.4g}" for n in names]),
        ("t_S speciation", [_format_time(report["speciation"][n]) for n in names]),
        ("t_C collapse", [_format_time(report["collapse"][n]) for n in names]),
    ]
    for key, vals in table:
        click.echo(f"{key:<16}" + "".join(f"{v:>14}" for v in vals))


@main.command()
@data_options
@click.option("--u", "u_spec", default="identity", show_default=True,
              metavar="identity|data|FILE",
              help="Noise precision U: the identity, the inverse Ledoit-Wolf covariance of "
                   "the data scaled to Tr(U)/d = 1, or a (d, d) SPD matrix from a file.")
@click.option("--q", "q_spec", default="optimal", show_default=True,
              metavar="none|optimal|FILE",
              help="Currents to compare: 'optimal' reports Q = 0 ('none') and the optimal "
                   "current; 'none' only Q = 0; FILE (a (d, d) antisymmetric matrix) "
                   "reports Q = 0 and that Q (as 'file').")
@click.option("--n-train", type=click.IntRange(min=2), default=None,
              help="Number of training points N in the collapse criterion [default: n].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def analyze(data, key, labels_path, labels_key, u_spec, q_spec, n_train, as_json):
    """Predict speciation (t_S) and collapse (t_C) times for the data in DATA.

    DATA is an (n, d) array: .npy, .npz (see --key) or .csv (numbers, optional
    header). The times come from the Gaussian criteria of docs/THEORY.md, sections
    3 and 4, with the data's covariances. With U = identity every current gives
    the same times; use --u data or --u FILE to see the effect of Q.
    """
    import json

    from nonrev.process.currents import optimal_q
    from nonrev.data.files import load_array, load_labels, load_square_matrix, u_from_data
    from nonrev.regimes.theory import predict_regimes

    try:
        X = load_array(data, key)
        n, d = X.shape
        labels = None if labels_path is None else load_labels(labels_path, n, labels_key)
        if u_spec == "identity":
            U = np.eye(d)
        elif u_spec == "data":
            U = u_from_data(X)
        else:
            U = load_square_matrix(u_spec, "--u", d)
        currents = {"none": None}
        if q_spec == "optimal":
            currents["optimal"] = optimal_q(U)
        elif q_spec != "none":
            currents["file"] = load_square_matrix(q_spec, "--q", d)
        report = predict_regimes(X, U, currents, labels=labels, n_train=n_train)
    except ValueError as exc:
        raise click.ClickException(_one_line(exc)) from None
    report["u"] = u_spec
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report, data, u_spec)


# ----------------------------------------------------------------------------- demo
def _headline_config(quick: bool, config_file, seed, device):
    from nonrev.config import build
    from nonrev.experiments.headline import HeadlineConfig, quick_config

    return build(HeadlineConfig, quick_config() if quick else HeadlineConfig(), config_file,
                 seed=seed, device=device)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder. Default: runs/demo-<timestamp>.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT if it exists (only once the new run has finished).")
@click.option("--quick", is_flag=True,
              help="Small sizes: under 3 minutes on 2 CPU cores, same story.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Overrides the config's seed.")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda (default: config, cpu).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML or TOML file with any subset of the configuration keys.")
@click.option("--print-config", is_flag=True,
              help="Print the configuration that would run (YAML) and exit.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads for torch. The demo's matrices are small, and two thread "
                   "pools (torch's and numpy's) contend on few cores: 1 was 12x faster "
                   "than 2 on a 2-core machine.")
def demo(out_dir, quick, seed, device, config_file, print_config, threads, overwrite):
    """The headline experiment: relaxation, speciation and collapse, with and
    without the optimal current, each predicted and measured.

    Writes OUT/results.json, relaxation.png, speciation.png, collapse.png,
    steering.png (unless steering.enabled is false) and report.md. Everything is
    written to a temporary folder beside OUT and moved into place at the end, so
    a failed or interrupted run leaves no partial OUT.
    """
    import datetime
    import json
    import os
    from pathlib import Path

    import yaml
    from tqdm import tqdm

    from nonrev.config import ConfigError, to_dict
    from nonrev.experiments.headline import run_headline, stage_count
    from nonrev.outputs import atomic_dir
    from nonrev.reports.headline import summary_rows, write_report

    import torch

    torch.set_num_threads(threads)
    try:
        cfg = _headline_config(quick, config_file, seed, device)
    except ConfigError as exc:
        raise click.ClickException(_one_line(exc)) from None
    if print_config:
        click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
        return
    if out_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = os.path.join("runs", f"demo-{'quick-' if quick else ''}{stamp}")
    out = Path(out_dir)
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            with tqdm(total=stage_count(cfg), desc="nonrev demo", unit="stage") as bar:
                def progress(name):
                    bar.set_postfix_str(name)
                    bar.update(1)

                results = run_headline(cfg, progress=progress)
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_report(results, tmp)
    except FileExistsError:
        raise click.ClickException(f"--out {out}: already exists; choose a new folder "
                                   "or pass --overwrite") from None
    click.echo(f"\n{'regime':<11} {'case':<26} {'predicted':>9} {'measured':>9} {'error':>7}")
    for regime, case, tp, tm, err in summary_rows(results):
        click.echo(f"{regime:<11} {case:<26} {tp:9.3f} {tm:9.3f} {100 * err:6.1f}%")
    rel = results["relaxation"]
    click.echo(f"\nrelaxation rate: reversible {rel['reversible_rate']:.3g}, optimal "
               f"{rel['optimal_rate']:.3g}, bound Tr(U)/d {rel['bound']:.3g}")
    click.echo(f"runtime {results['runtime_s']:.0f} s; report: {out / 'report.md'}")


from nonrev.cli.sweep import sweep  # noqa: E402  (nonrev sweep lives in its own module)
main.add_command(sweep)
from nonrev.cli.steer import steer  # noqa: E402  (nonrev steer lives in its own module)
main.add_command(steer)
from nonrev.cli.learn import LEARN_COMMANDS  # noqa: E402  (nonrev train, sample, study)
for _command in LEARN_COMMANDS:
    main.add_command(_command)
