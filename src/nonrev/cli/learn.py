"""``nonrev train``, ``nonrev sample`` and ``nonrev study``: learned scores on real
data. Thin wrappers over :mod:`nonrev.training.loop` and
:mod:`nonrev.experiments.digits_study`; every error a user can cause is reported in
one line with a non-zero exit code. Registered on the main group by the last line
of :mod:`nonrev.cli.main`."""

from __future__ import annotations

import signal
from pathlib import Path

import click

_THREADS_HELP = ("CPU threads for torch and for numpy's BLAS. On a shared 2-core machine "
                 "one thread was 5x faster for training than two (other processes held the "
                 "second core), and an unlimited BLAS took 142 s instead of 3.6 s to set up "
                 "the digits process; raise it on an idle machine.")


def _limit_threads(threads: int):
    """Set torch's threads; return a context that limits the BLAS/OpenMP pools too."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _atomic_save_npy(path: Path, array) -> None:
    import numpy as np

    from nonrev.outputs import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


# ----------------------------------------------------------------------------- train
def _train_config(quick, config_file, overrides):
    from nonrev.config import build
    from nonrev.training.loop import TrainConfig, quick_config

    return build(TrainConfig, quick_config() if quick else TrainConfig(), config_file,
                 **overrides)


@click.command()
@click.option("--data", default=None, metavar="digits|moons|circles|ring|PATH",
              help="Training data: a bundled set, a .npy/.npz array ((n, d) vectors or "
                   "(n, H, W) / (n, C, H, W) images) or a folder of images. [default: digits]")
@click.option("--u", "u_spec", default=None, metavar="identity|data|FILE",
              help="Noise precision U: identity; data (inverse shrunk training covariance, "
                   "Tr(U)/d = 1); or a (d, d) SPD matrix file. [default: identity]")
@click.option("--q", "q_spec", default=None, metavar="none|optimal|gamma:<x>|FILE",
              help="Current Q: none; optimal; gamma:<x> (x times the optimal); or a (d, d) "
                   "antisymmetric matrix file. [default: none]")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoint folder (checkpoint.json + weights-<step>.safetensors).")
@click.option("--quick", is_flag=True,
              help="Small network (width 256) and 8000 steps: a usable digits model in a "
                   "few minutes on 2 CPU cores.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Total training steps (with --resume: extend or shorten the run).")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (its recorded "
                   "settings; only --steps and --device may change).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Training seed.")
@click.option("--key", default=None, help="Array to use in an .npz data file.")
@click.option("--image-size", type=click.IntRange(min=2, max=256), default=None,
              help="Side of the resized images of a folder. [default: 16]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML or TOML file with any subset of the training settings.")
@click.option("--print-config", is_flag=True, help="Print the settings (YAML) and exit.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help=_THREADS_HELP)
def train(data, u_spec, q_spec, out_dir, quick, steps, device, resume, seed, key, image_size,
          config_file, print_config, threads):
    """Train a score network by denoising score matching with the exact kernel of
    dx = -(I+Q) U x dt + sqrt(2) dW.

    Checkpoints are written atomically every few minutes and at the end; Ctrl-C
    finishes the current step, writes a checkpoint and stops (continue with
    --resume).
    """
    import yaml
    from tqdm import tqdm

    from nonrev.config import ConfigError, to_dict
    from nonrev.training.loop import CHECKPOINT_JSON, train as run_train

    out = Path(out_dir)
    fixed = {"--data": data, "--u": u_spec, "--q": q_spec, "--seed": seed, "--key": key,
             "--image-size": image_size, "--config": config_file}
    if resume:
        given = [name for name, val in fixed.items() if val is not None] + (
            ["--quick"] if quick else [])
        if given:
            raise click.ClickException(f"--resume continues the run recorded in {out}; drop "
                                       f"{', '.join(given)} (only --steps and --device may change)")
        if not (out / CHECKPOINT_JSON).is_file():
            raise click.ClickException(f"--out {out}: no checkpoint to resume "
                                       f"({CHECKPOINT_JSON} not found)")
        cfg = None
    else:
        try:
            cfg = _train_config(quick, config_file, {
                "data": data, "u": u_spec, "q": q_spec, "seed": seed, "key": key,
                "image_size": image_size, "steps": steps, "device": device})
        except ConfigError as exc:
            raise click.ClickException(_one_line(exc)) from None
        if print_config:
            click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
            return
        if (out / CHECKPOINT_JSON).exists():
            raise click.ClickException(f"--out {out}: already holds a checkpoint; pass --resume "
                                       "to continue it, or choose another folder")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise click.ClickException(f"--out {out}: exists and is not an empty folder")

    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted.append(True)

    bar = tqdm(desc="nonrev train", unit="step", dynamic_ncols=True)
    recent = []

    def progress(step, total, loss):
        if bar.total != total:
            bar.reset(total=total)
            bar.update(step - 1)
        recent.append(loss)
        del recent[:-50]
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix_str(f"loss {sum(recent) / len(recent):.4f}")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with _limit_threads(threads):
            model = run_train(cfg, out, resume=resume, steps=steps if resume else None,
                              device=device if resume else None, progress=progress,
                              should_stop=lambda: bool(interrupted))
    except (ValueError, FloatingPointError) as exc:
        bar.close()
        raise click.ClickException(_one_line(exc)) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    bar.close()
    hist = model.loss_history
    loss = f"{hist[-1][1]:.4f}" if hist else "n/a"
    if interrupted:
        click.echo(f"interrupted at step {model.step}; checkpoint written to {out}. "
                   f"Continue with: nonrev train --out {out} --resume")
        raise SystemExit(130)
    import json

    elapsed = json.loads((out / CHECKPOINT_JSON).read_text())["elapsed_s"]
    click.echo(f"trained {model.step} steps in {elapsed:.0f} s; loss {loss}; "
               f"checkpoint {out / CHECKPOINT_JSON}")


# ----------------------------------------------------------------------------- sample
@click.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True,
              help="Number of samples.")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="Sampler steps (score evaluations: steps, +1 for the final denoising; "
                   "heun: 2 per step).")
@click.option("--method", type=click.Choice(["ancestral", "ddim", "euler_maruyama", "heun"]),
              default="ancestral", show_default=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Samples in the data's original units, as .npy.")
@click.option("--grid", "grid_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: an image grid (image data) or a scatter plot (2-D data).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--T", "T", type=float, default=None,
              help="Start time of the reverse process [default: the training t_max].")
@click.option("--spacing", type=click.Choice(["log", "uniform"]), default="log",
              show_default=True, help="Sampler time grid.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of their EMA.")
@click.option("--no-denoise", is_flag=True, help="Skip the final Tweedie denoising step.")
@click.option("--device", default=None, help="torch device [default: the training device].")
@click.option("--batch-size", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help=_THREADS_HELP)
def sample(checkpoint, n, steps, method, out_file, grid_file, seed, T, spacing, no_ema,
           no_denoise, device, batch_size, threads):
    """Draw samples from a trained model (a `nonrev train` checkpoint folder)."""

    from nonrev.training.loop import load_checkpoint

    out = Path(out_file)
    if out.suffix.lower() != ".npy":
        raise click.ClickException(f"--out {out}: use a .npy file name")
    try:
        with _limit_threads(threads):
            model = load_checkpoint(checkpoint, ema=not no_ema, device=device)
            shape = model.data["shape"]
            if grid_file is not None and shape is None and model.data["dim"] != 2:
                raise ValueError(f"--grid needs image data or 2-D data; this model's data are "
                                 f"vectors of dimension {model.data['dim']}")
            x, nfe = model.sample(n, steps, method, T=T, spacing=spacing, seed=seed,
                                  batch_size=batch_size, denoise=not no_denoise)
    except ValueError as exc:
        raise click.ClickException(_one_line(exc)) from None
    from nonrev.data.datasets import to_source_layout

    arr = to_source_layout(x, shape, model.data["sample_shape"], model.data["channels_last"])
    _atomic_save_npy(out, arr)
    if grid_file is not None:
        _write_grid(Path(grid_file), x, model.data)
    click.echo(f"wrote {n} samples {tuple(arr.shape)} to {out} "
               f"({method}, {nfe} score evaluations per sample)"
               + (f"; picture: {grid_file}" if grid_file else ""))


def _write_grid(path: Path, x, data: dict) -> None:
    from nonrev.outputs import atomic_file

    with atomic_file(path) as tmp:
        if data["shape"] is not None:
            from nonrev.data.datasets import write_image_grid

            vr = data["value_range"]
            write_image_grid(x, data["shape"], tmp, value_range=None if vr is None else tuple(vr))
        else:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 5))
            ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6)
            ax.set_aspect("equal")
            ax.set_title(f"{len(x)} samples")
            fig.savefig(tmp, dpi=100)
            plt.close(fig)


# ----------------------------------------------------------------------------- study
@click.command()
@click.argument("name", type=click.Choice(["digits"]))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder (results.json, figures, report.md).")
@click.option("--quick", is_flag=True, help="Smaller budget: about 10-15 minutes on 2 CPU cores.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT if it exists (only once the new run has finished).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Overrides the config's seed.")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML or TOML file with any subset of the study's settings.")
@click.option("--print-config", is_flag=True, help="Print the settings (YAML) and exit.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help=_THREADS_HELP)
def study(name, out_dir, quick, overwrite, seed, device, config_file, print_config, threads):
    """Learned scores on real data with and without the non-reversible current.

    digits: three models with one training budget (U = I; U = data, Q = 0;
    U = data, Q = optimal); sample quality against the held-out test set versus
    the number of score evaluations and the horizon T, class balance under a
    classifier, measured speciation (cloning) and memorised fraction versus the
    training-set size. Writes OUT/results.json, figures and report.md atomically.
    """
    import json

    import yaml
    from tqdm import tqdm

    from nonrev.config import ConfigError, build, to_dict
    from nonrev.experiments.digits_study import DigitsStudyConfig, quick_config, run_digits_study
    from nonrev.outputs import atomic_dir
    from nonrev.reports.learned import summary_lines, write_digits_report

    try:
        cfg = build(DigitsStudyConfig, quick_config() if quick else DigitsStudyConfig(),
                    config_file, seed=seed, device=device)
    except ConfigError as exc:
        raise click.ClickException(_one_line(exc)) from None
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
                    with _limit_threads(threads):
                        results = run_digits_study(cfg, progress=progress)
                except ValueError as exc:
                    raise click.ClickException(_one_line(exc)) from None
            (tmp / "results.json").write_text(json.dumps(results, indent=1))
            write_digits_report(results, tmp)
    except FileExistsError:
        raise click.ClickException(f"--out {out}: already exists; choose a new folder "
                                   "or pass --overwrite") from None
    for line in summary_lines(results):
        click.echo(line)
    click.echo(f"runtime {results['runtime_s']:.0f} s; report: {out / 'report.md'}")


#: The commands this module adds to ``nonrev`` (see the last line of nonrev/cli.py).
LEARN_COMMANDS = (train, sample, study)
