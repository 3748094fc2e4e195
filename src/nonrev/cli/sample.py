"""``nonrev sample``: draw samples from a ``nonrev train`` checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from nonrev.cli.common import (
    MAX_SAMPLES,
    MAX_STEPS,
    SEED,
    check_outputs,
    count,
    fail,
    limit_threads,
    threads_option,
)
from nonrev.samplers import METHODS


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option(
    "--n",
    "n",
    type=count(1, MAX_SAMPLES),
    default=100,
    show_default=True,
    help="Number of samples.",
)
@click.option(
    "--steps",
    type=count(1, MAX_STEPS),
    default=100,
    show_default=True,
    help="Sampler steps (score evaluations: steps, +1 for the final denoising; heun: 2 per step).",
)
@click.option("--method", type=click.Choice(list(METHODS)), default="ancestral", show_default=True)
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Samples in the data's original units, as .npy.",
)
@click.option(
    "--grid",
    "grid_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a PNG: an image grid (image data) or a scatter plot (2-D data). "
    "Written together with --out: both or neither.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--T",
    "T",
    type=float,
    default=None,
    help="Start time of the reverse process [default: the training t_max].",
)
@click.option(
    "--spacing",
    type=click.Choice(["log", "uniform"]),
    default="log",
    show_default=True,
    help="Sampler time grid.",
)
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of their EMA.")
@click.option("--no-denoise", is_flag=True, help="Skip the final Tweedie denoising step.")
@click.option("--device", default=None, help="torch device [default: the training device].")
@click.option("--batch-size", type=count(1, MAX_SAMPLES), default=2000, show_default=True)
@threads_option
def sample(
    checkpoint,
    n,
    steps,
    method,
    out_file,
    grid_file,
    seed,
    T,
    spacing,
    no_ema,
    no_denoise,
    device,
    batch_size,
    threads,
):
    """Draw samples from a trained model (a `nonrev train` checkpoint folder)."""

    from nonrev.training.loop import load_checkpoint

    out = Path(out_file)
    check_outputs(
        ("--out", out, {"suffixes": (".npy",)}), ("--grid", grid_file, {"suffixes": (".png",)})
    )
    if grid_file is not None and Path(grid_file).resolve() == out.resolve():
        raise fail(f"--grid {grid_file}: the same file as --out")
    if device is not None:
        from nonrev.config import ConfigError, check_device

        try:
            check_device("--", device)
        except ConfigError as exc:
            raise fail(exc) from None
        import torch

        kind = torch.device(device).type
        if kind not in ("cpu", "cuda", "mps") or (
            kind == "mps" and not torch.backends.mps.is_available()
        ):
            raise fail(
                f"--device {device}: not a device this build can sample on (cpu, cuda "
                "when available, mps when available)"
            )
    try:
        with limit_threads(threads):
            model = load_checkpoint(checkpoint, ema=not no_ema, device=device)
            shape = model.data["shape"]
            if grid_file is not None and shape is None and model.data["dim"] != 2:
                raise ValueError(
                    f"--grid needs image data or 2-D data; this model's data are "
                    f"vectors of dimension {model.data['dim']}"
                )
            x, nfe = model.sample(
                n,
                steps,
                method,
                T=T,
                spacing=spacing,
                seed=seed,
                batch_size=batch_size,
                denoise=not no_denoise,
            )
    except ValueError as exc:
        msg = str(exc)  # the library names steps / T; here they are options
        raise fail("--" + msg if msg.startswith(("steps:", "T:")) else msg) from None
    from nonrev.data.datasets import to_source_layout
    from nonrev.outputs import atomic_file, save_npy
    from nonrev.reports.learned import write_sample_picture

    arr = to_source_layout(x, shape, model.data["sample_shape"], model.data["channels_last"])
    try:
        if grid_file is None:
            save_npy(out, arr)
        else:
            # the picture first, into a temporary file that becomes --grid only once
            # the samples are written too: a failure leaves neither file
            with atomic_file(grid_file) as tmp_grid:
                write_sample_picture(tmp_grid, x, model.data)
                save_npy(out, arr)
    except OSError as exc:
        raise fail(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    click.echo(
        f"wrote {n} samples {tuple(arr.shape)} to {out} "
        f"({method}, {nfe} score evaluations per sample)"
        + (f"; picture: {grid_file}" if grid_file else "")
    )
