"""``nonrev demo``: the headline experiment, its figures and its report."""

from __future__ import annotations

import click

from nonrev.cli.common import experiment_options, fail, threads_option


def _headline_config(quick: bool, config_file, seed, device):
    from nonrev.config import build
    from nonrev.experiments.headline import HeadlineConfig, quick_config

    return build(
        HeadlineConfig,
        quick_config() if quick else HeadlineConfig(),
        config_file,
        seed=seed,
        device=device,
    )


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder. Default: runs/demo-<timestamp>.",
)
@click.option("--quick", is_flag=True, help="Small sizes, same story (README: measured run times).")
@experiment_options
@threads_option
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

    import torch
    import yaml
    from tqdm import tqdm

    from nonrev.config import ConfigError, to_dict
    from nonrev.experiments.headline import run_headline, stage_count
    from nonrev.outputs import OutputError, atomic_dir
    from nonrev.reports.headline import summary_rows, write_report

    torch.set_num_threads(threads)
    try:
        cfg = _headline_config(quick, config_file, seed, device)
    except ConfigError as exc:
        raise fail(exc) from None
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
    except OutputError as exc:  # raised on entry, before any work
        raise fail(exc) from None
    except OSError as exc:  # e.g. the disk filled up: nothing was moved into place
        raise fail(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    click.echo(f"\n{'regime':<11} {'case':<26} {'predicted':>9} {'measured':>9} {'error':>7}")
    for regime, case, tp, tm, err in summary_rows(results):
        click.echo(f"{regime:<11} {case:<26} {tp:9.3f} {tm:9.3f} {100 * err:6.1f}%")
    rel = results["relaxation"]
    click.echo(
        f"\nrelaxation rate: reversible {rel['reversible_rate']:.3g}, optimal "
        f"{rel['optimal_rate']:.3g}, bound Tr(U)/d {rel['bound']:.3g}"
    )
    click.echo(f"runtime {results['runtime_s']:.0f} s; report: {out / 'report.md'}")
