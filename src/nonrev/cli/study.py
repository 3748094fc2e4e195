"""``nonrev study``: learned scores on real data, with and without the current."""

from __future__ import annotations

from pathlib import Path

import click

from nonrev.cli.common import experiment_options, fail, limit_threads, threads_option


@click.command()
@click.argument("name", type=click.Choice(["digits", "patches"]))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (results.json, figures, report.md).",
)
@click.option(
    "--quick", is_flag=True, help="Smaller budget, same story (README: measured run times)."
)
@experiment_options
@threads_option
def study(name, out_dir, quick, overwrite, seed, device, config_file, print_config, threads):
    """Learned scores on real data with and without the non-reversible current.

    digits: three models with one training budget (U = I; U = data, Q = 0;
    U = data, Q = optimal); sample quality against the held-out test set versus
    the number of score evaluations and the horizon T, class balance under a
    classifier, measured speciation (cloning) and memorised fraction versus the
    training-set size.

    patches: 32x32 grayscale patches of scikit-learn's sample photos, three spectral
    (DCT) processes (U = I; u = data:k, Q = 0; u = data:k with the per-group optimal
    current), one training budget, two seeds; at NFE 10 / 20 / 50 the best sampler's
    sliced W2 and radially averaged power-spectrum error against held-out patches,
    beside the real-vs-real floor and a Gaussian fit.

    Writes OUT/results.json, figures and report.md atomically.
    """
    import json

    import yaml
    from tqdm import tqdm

    from nonrev.config import ConfigError, build, to_dict
    from nonrev.outputs import OutputError, atomic_dir

    if name == "digits":
        from nonrev.experiments.digits_study import DigitsStudyConfig as Config
        from nonrev.experiments.digits_study import quick_config
        from nonrev.experiments.digits_study import run_digits_study as run
        from nonrev.reports.learned import summary_lines
        from nonrev.reports.learned import write_digits_report as write
    else:
        from nonrev.experiments.patch_study import PatchStudyConfig as Config
        from nonrev.experiments.patch_study import quick_config
        from nonrev.experiments.patch_study import run_patch_study as run
        from nonrev.reports.patches import summary_lines
        from nonrev.reports.patches import write_patch_report as write

    try:
        cfg = build(
            Config,
            quick_config() if quick else Config(),
            config_file,
            seed=seed,
            device=device,
        )
    except ConfigError as exc:
        raise fail(exc) from None
    if print_config:
        click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
        return
    out = Path(out_dir)
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            with tqdm(desc=f"nonrev study {name}", unit="stage") as bar:

                def progress(stage, done, total):
                    bar.total = total
                    bar.n = done
                    bar.set_postfix_str(stage)
                    bar.refresh()

                try:
                    with limit_threads(threads):
                        results = run(cfg, progress=progress)
                except ValueError as exc:
                    raise fail(exc) from None
            grids = results.pop("grids", None)  # arrays for the pictures, not JSON
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            if grids is None:
                write(results, tmp)
            else:
                write(results, tmp, grids)
    except OutputError as exc:  # raised on entry, before any work
        raise fail(exc) from None
    except OSError as exc:  # e.g. the disk filled up: nothing was moved into place
        raise fail(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    for line in summary_lines(results):
        click.echo(line)
    click.echo(f"runtime {results['runtime_s']:.0f} s; report: {out / 'report.md'}")
