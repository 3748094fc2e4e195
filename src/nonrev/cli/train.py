"""``nonrev train``: fit a score network by denoising score matching with the exact
kernel (:mod:`nonrev.training`), with atomic checkpoints and exact resume."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from nonrev.cli.common import (
    MAX_STEPS,
    Q_HELP,
    SEED,
    U_HELP,
    check_outputs,
    count,
    fail,
    limit_threads,
    threads_option,
)
from nonrev.process.spec import Q_METAVAR, U_METAVAR


def _train_config(quick, config_file, overrides):
    from nonrev.config import build
    from nonrev.training.loop import TrainConfig, quick_config

    return build(TrainConfig, quick_config() if quick else TrainConfig(), config_file, **overrides)


@click.command()
@click.option(
    "--data",
    default=None,
    metavar="digits|patches|moons|circles|ring|PATH",
    help="Training data: a bundled set (patches: grayscale crops of scikit-learn's two "
    "sample photos, --image-size square, n_points of them), a .npy/.npz array ((n, d) vectors or "
    "(n, H, W) / (n, C, H, W) images) or a folder of images. [default: digits]",
)
@click.option("--u", "u_spec", default=None, metavar=U_METAVAR, help=U_HELP + " [default: data:10]")
@click.option(
    "--q",
    "q_spec",
    default=None,
    metavar=Q_METAVAR,
    help="Current Q: none; " + Q_HELP + " [default: none]",
)
@click.option(
    "--kernel",
    type=click.Choice(["dense", "spectral"]),
    default=None,
    help="dense: U and Q as d x d matrices; spectral: U diagonal and Q block-diagonal "
    "in the images' 2-D DCT (image data; --u identity|data|data:<k>, --q "
    "none|optimal|gamma:<x>), O(d log d) per step, for images of any size. "
    "[default: dense]",
)
@click.option(
    "--groups",
    type=click.IntRange(min=2, max=4096),
    default=None,
    help="With --kernel spectral: frequencies per group of the current (g; it must "
    "divide d). [default: 2]",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Checkpoint folder (checkpoint.json + weights-<step>.safetensors).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Small network (width 256) and 8000 steps: a usable digits model "
    "on a CPU in minutes (README: measured run times).",
)
@click.option(
    "--steps",
    type=count(1, MAX_STEPS),
    default=None,
    help="Total training steps (with --resume: extend or shorten the run).",
)
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its last checkpoint (its recorded "
    "settings; only --steps and --device may change).",
)
@click.option("--seed", type=SEED, default=None, help="Training seed.")
@click.option("--key", default=None, help="Array to use in an .npz data file.")
@click.option(
    "--image-size",
    type=click.IntRange(min=2, max=256),
    default=None,
    help="Side of the resized images of a folder, or of patches. [default: 16]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML or TOML file with any subset of the training settings.",
)
@click.option("--print-config", is_flag=True, help="Print the settings (YAML) and exit.")
@threads_option
def train(
    data,
    u_spec,
    q_spec,
    kernel,
    groups,
    out_dir,
    quick,
    steps,
    device,
    resume,
    seed,
    key,
    image_size,
    config_file,
    print_config,
    threads,
):
    """Train a score network by denoising score matching with the exact kernel of
    dx = -(I+Q) U x dt + sqrt(2) dW.

    Checkpoints are written atomically soon after the start, then every few
    minutes and at the end; Ctrl-C or SIGTERM finishes the current step, writes a
    checkpoint and stops (continue with --resume).
    """
    import yaml
    from tqdm import tqdm

    from nonrev.config import ConfigError, to_dict
    from nonrev.outputs import remove_partials
    from nonrev.training.loop import CHECKPOINT_JSON
    from nonrev.training.loop import train as run_train

    out = Path(out_dir)
    # writable before any work (existing contents are checked below)
    check_outputs(("--out", out, {"folder": True, "overwrite": True}))
    fixed = {
        "--data": data,
        "--u": u_spec,
        "--q": q_spec,
        "--kernel": kernel,
        "--groups": groups,
        "--seed": seed,
        "--key": key,
        "--image-size": image_size,
        "--config": config_file,
    }
    if resume:
        given = [name for name, val in fixed.items() if val is not None] + (
            ["--quick"] if quick else []
        )
        if given:
            raise click.ClickException(
                f"--resume continues the run recorded in {out}; drop "
                f"{', '.join(given)} (only --steps and --device may change)"
            )
        if not (out / CHECKPOINT_JSON).is_file():
            raise click.ClickException(
                f"--out {out}: no checkpoint to resume ({CHECKPOINT_JSON} not found)"
            )
        cfg = None
    else:
        try:
            cfg = _train_config(
                quick,
                config_file,
                {
                    "data": data,
                    "u": u_spec,
                    "q": q_spec,
                    "kernel": kernel,
                    "groups": groups,
                    "seed": seed,
                    "key": key,
                    "image_size": image_size,
                    "steps": steps,
                    "device": device,
                },
            )
        except ConfigError as exc:
            raise fail(exc) from None
        if print_config:
            click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
            return
        if (out / CHECKPOINT_JSON).exists():
            raise click.ClickException(
                f"--out {out}: already holds a checkpoint; pass --resume "
                "to continue it, or choose another folder"
            )
        if out.is_dir():
            remove_partials(out)  # left by a killed run
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise click.ClickException(f"--out {out}: exists and is not an empty folder")

    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:  # second Ctrl-C (or SIGTERM): stop now
            raise KeyboardInterrupt
        interrupted.append(signum)

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

    previous = {sig: signal.signal(sig, on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with limit_threads(threads):
            model = run_train(
                cfg,
                out,
                resume=resume,
                steps=steps if resume else None,
                device=device if resume else None,
                progress=progress,
                should_stop=lambda: bool(interrupted),
            )
    except (ValueError, FloatingPointError) as exc:
        bar.close()
        raise fail(exc) from None
    except OSError as exc:  # the disk filled up, the folder was removed...
        bar.close()
        raise fail(
            f"--out {out}: cannot write the checkpoint ({exc.strerror or exc}); the "
            "last complete checkpoint there is kept"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bar.close()
    hist = model.loss_history
    loss = f"{hist[-1][1]:.4f}" if hist else "n/a"
    if interrupted:
        click.echo(
            f"interrupted at step {model.step}; checkpoint written to {out}. "
            f"Continue with: nonrev train --out {out} --resume"
        )
        raise SystemExit(128 + int(interrupted[0]))  # 130 after Ctrl-C, 143 after SIGTERM
    import json

    elapsed = json.loads((out / CHECKPOINT_JSON).read_text())["elapsed_s"]
    click.echo(
        f"trained {model.step} steps in {elapsed:.0f} s; loss {loss}; "
        f"checkpoint {out / CHECKPOINT_JSON}"
    )
