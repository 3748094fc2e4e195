"""``nonrev sweep``: run an experiment over a grid of parameters (engine:
:mod:`nonrev.sweep.core`), on Ray or locally, resumably, with the results as a table."""

from __future__ import annotations

import click

from nonrev.cli.common import MAX_THREADS, count, fail


@click.command(
    epilog="Exit code: the number of failed cells (at most 100), 0 when every "
    "cell succeeded; 1 also for an unusable CONFIG or --out (nothing runs "
    "then), 130 when interrupted."
)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Sweep folder: cells/<id>.json, results.parquet, results.csv, figures.",
)
@click.option(
    "--backend",
    type=click.Choice(["ray", "local"]),
    default="ray",
    show_default=True,
    help="ray: each cell a Ray task (a Ray instance is started here on 127.0.0.1 "
    "unless --address is given). local: cells in this process (--workers 1) "
    "or in a process pool.",
)
@click.option(
    "--address",
    default=None,
    metavar="HOST:PORT",
    help="Join an existing Ray cluster instead of starting one: run "
    "'ray start --head --port 6379' on the head machine ('ray start "
    "--address HEAD:6379' on the others), then pass --address HEAD:6379. "
    "With Ray's token authentication (the default of ray start) set "
    "RAY_AUTH_MODE=token here too; the token is read from ~/.ray/auth_token.",
)
@click.option(
    "--workers",
    type=count(1, MAX_THREADS),
    default=None,
    help="Cells run at once [default: the number of CPUs; with --address, as "
    "many as the cluster takes].",
)
@click.option(
    "--threads",
    type=count(1, MAX_THREADS),
    default=1,
    show_default=True,
    help="BLAS/torch threads per cell (a Ray cell then asks for as many CPUs).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Also run into an --out that holds a different sweep (e.g. after adding "
    "grid values), keeping its finished cells with the same parameters. "
    "Rerunning the same command always resumes: only cells without a "
    "finished record (missing or failed) run.",
)
def sweep(config, out_dir, backend, address, workers, threads, resume):
    """Run the experiment named in CONFIG for every cell of its grid.

    CONFIG (YAML or TOML) names the experiment, the parameters every cell shares
    ('fixed') and those that vary ('grid' or 'cells'), e.g.

    \b
      experiment: regime      # see nonrev.experiments.registry
      fixed:                  # shared by every cell
        dim: 8
        n_train: 300
      grid:                   # cartesian product (or cells: a list of mappings)
        gamma: [0.0, 0.5, 1.0]
        direction: [slow, fast]

    Each finished cell is written at once to OUT/cells/<id>.json (id: a hash of the
    experiment and the cell's parameters), with status ok or failed and the error;
    a failed cell does not stop the others. At the end OUT/results.parquet and
    results.csv hold one row per cell (parameters and scalar results) and, for the
    regime experiment, t_S_vs_gamma.png and t_C_vs_gamma.png plot predicted and
    measured times against gamma. A sweep that was killed loses no finished cell:
    run the same command again to finish it.
    """

    from tqdm import tqdm

    from nonrev.config import ConfigError
    from nonrev.reports.sweep import sweep_figures
    from nonrev.sweep.core import SweepError, experiment_columns, load_sweep, run_sweep

    try:
        spec = load_sweep(config)
    except ConfigError as exc:
        raise fail(f"{config}: {exc}") from None

    bar = None

    def on_start(n_cells, n_done):
        nonlocal bar
        if n_done:
            click.echo(f"{n_done} of {n_cells} cells already finished in {out_dir}", err=True)
        bar = tqdm(total=n_cells, initial=n_done, desc="nonrev sweep", unit="cell")

    failed_now = []

    def on_cell(cell, record):
        if record["status"] != "ok":
            failed_now.append(f"  {cell.label}: {record['error']}")
        bar.set_postfix_str(cell.label[:40] + (f"  failed {len(failed_now)}" if failed_now else ""))
        bar.update(1)

    try:
        outcome = run_sweep(
            spec,
            out_dir,
            backend=backend,
            address=address,
            workers=workers,
            threads=threads,
            resume=resume,
            on_start=on_start,
            on_cell=on_cell,
        )
    except SweepError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted; the finished cells are kept in {out_dir}/cells: run the "
            "same command again to finish the sweep",
            err=True,
        )
        click.get_current_context().exit(130)
    finally:
        if bar is not None:
            bar.close()

    table = outcome.table
    figures = sweep_figures(spec.experiment, table, out_dir)
    cols = [c for c in ("status", *spec.varying, *experiment_columns(spec)) if c in table]
    with _pandas_display():
        click.echo("\n" + table[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if failed_now:
        click.echo("\nfailed in this run:\n" + "\n".join(failed_now))
    click.echo(
        f"\n{len(table)} cells: {outcome.n_run} run now, {outcome.n_reused} already "
        f"finished, {outcome.n_failed} failed. Table: {out_dir}/results.parquet "
        "(and .csv)" + "".join(f"; {p.name}" for p in figures)
    )
    click.get_current_context().exit(min(outcome.n_failed, 100))


def _pandas_display():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", 50)
