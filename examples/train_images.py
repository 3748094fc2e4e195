"""Train a diffusers UNet2DModel on images with a non-reversible spectral forward process,
save it as a NonReversiblePipeline and sample a PNG grid from the saved folder.

    python examples/train_images.py --patches 4000 --size 32 --iters 300 --out runs/patches
    python examples/train_images.py --images FOLDER --channels 3 --size 32 --out runs/folder
    accelerate launch examples/train_images.py --images FOLDER --channels 3 ...   # GPUs
    python examples/train_images.py --out runs/patches --sample-only --nfe 50    # sample again

The forward process is ``nonrev.process.SpectralProcess``: ``U = V^T diag(u) V`` with
``V`` the 2-D DCT per channel and ``Q = V^T B V`` with ``B`` antisymmetric and
block-diagonal over groups of ``--groups`` frequencies. ``--u identity``: ``u = 1``
(``U = I``, the standard DDPM process); ``--u data`` / ``data:<k>``: ``u`` the inverse
variance of each DCT coefficient of the training images (condition capped at ``k``,
``SpectralProcess.from_data``). ``--current optimal``: per group, the current that puts
every eigenvalue of the group's drift at the group's mean of ``u``; ``none``: reversible.
The scheduler is ``nonrev.integrations.diffusers.NonReversibleScheduler`` (linear betas
1e-4 .. 0.02 over ``--train-timesteps``, trailing spacing): its add_noise tables are the
process's blocks, ``O(N d g)`` instead of ``O(N d^2)``.

Data: ``--images FOLDER`` (any image folder that ``nonrev.data.load_dataset`` reads:
png, jpg, ...; converted to ``--channels`` 1 (grayscale) or 3 (RGB) and resized to
``--size`` square, bilinear, aspect not kept) or ``--patches N`` (N random
``--size``-square grayscale crops of the two photos that ship with scikit-learn,
``sklearn.datasets.load_sample_images``, positions from ``--seed``). Pixels are scaled
to [-1, 1] (the pipeline maps samples back with ``x / 2 + 0.5``).

Training: the network predicts ``x_0`` by default (``--prediction-type sample``): with
the optimal current the epsilon target ``R_t^{-1}(x_t - M_t x_0)`` turns fast with ``t``
and a small UNet did not learn it in the 8x8 digits example
(``examples/diffusers_digits.py``), while ``x_0`` does not turn. AdamW with a linear
warm-up and cosine decay, an EMA of the weights (decay ``min(--ema, (1 + i)/(10 + i))``),
run under ``accelerate`` (``Accelerator``: a plain ``python`` run is one process on the
CPU or the one GPU; ``accelerate launch`` shards the batches over several; two CPU
processes: ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/train_images.py``,
``--batch`` is then per process and the logged loss the mean over processes). The EMA
network and the scheduler are saved with ``NonReversiblePipeline.save_pretrained`` in
``--out``; the grid ``--out/samples_<method><nfe>.png`` is then drawn by
``NonReversiblePipeline.from_pretrained(--out)``; ``--out/train_log.json`` holds the
arguments, losses and timings. Needs ``pip install nonrev[diffusers]``.

Bad input exits with one line naming the option (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

#: The photos of ``load_sample_images`` are 427 x 640 pixels.
_PHOTO_SIDE = 427


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); no validation beyond argparse's."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--images", default=None, help="a folder of images")
    data.add_argument(
        "--patches",
        type=int,
        default=None,
        help="N grayscale patches of scikit-learn's sample photos "
        "(default 4000 when --images is not given)",
    )
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument(
        "--channels",
        type=int,
        default=None,
        help="1 or 3 (--images; default 1); patches are grayscale",
    )
    ap.add_argument("--u", default="data:100", help="identity, data or data:<k>")
    ap.add_argument("--current", default="optimal", help="none or optimal")
    ap.add_argument("--groups", type=int, default=2, help="frequencies per current group")
    ap.add_argument("--train-timesteps", type=int, default=1000)
    ap.add_argument("--prediction-type", default="sample", choices=["sample", "epsilon"])
    ap.add_argument(
        "--width",
        type=int,
        default=16,
        help="UNet channels: (width, 2 width, 2 width), no attention",
    )
    ap.add_argument("--iters", type=int, default=300, help="optimiser updates")
    ap.add_argument("--batch", type=int, default=32, help="batch per process")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20, help="warm-up updates")
    ap.add_argument("--ema", type=float, default=0.995, help="EMA decay")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--method", default="dpmpp_2m", help="sampler: ancestral, gddim, dpmpp_2m or ddim"
    )
    ap.add_argument("--nfe", type=int, default=20, help="sampling steps (network evaluations)")
    ap.add_argument("--n-samples", type=int, default=64, help="images in the grid")
    ap.add_argument("--out", default="runs/train_images", help="output folder")
    ap.add_argument(
        "--sample-only",
        action="store_true",
        help="skip training: sample a grid from the pipeline in --out",
    )
    ap.add_argument("--log-every", type=int, default=25, help="updates between progress lines")
    return ap.parse_args(argv)


def _positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_args(args: argparse.Namespace) -> None:
    """ValueError with one line naming the option for settings that cannot run."""
    _positive("--size", args.size, 4)
    if args.size % 4:
        raise ValueError(
            f"--size must be a multiple of 4 (the UNet halves it twice), got {args.size}"
        )
    if args.images is None:
        if args.patches is None:
            args.patches = 4000
        _positive("--patches", args.patches, 2)
        if args.size > _PHOTO_SIDE:
            raise ValueError(
                f"--size {args.size}: patches must fit in the sample photos "
                f"({_PHOTO_SIDE} pixels high)"
            )
        if args.channels not in (None, 1):
            raise ValueError(f"--channels: patches are grayscale (1), got {args.channels}")
        args.channels = 1
    else:
        if args.channels is None:
            args.channels = 1
        if args.channels not in (1, 3):
            raise ValueError(f"--channels must be 1 or 3, got {args.channels}")
    if args.u not in ("identity", "data") and not args.u.startswith("data:"):
        raise ValueError(f"--u must be identity, data or data:<k>, got {args.u!r}")
    if args.current not in ("none", "optimal"):
        raise ValueError(f"--current must be none or optimal, got {args.current!r}")
    _positive("--groups", args.groups, 2)
    if (args.channels * args.size**2) % args.groups:
        raise ValueError(
            f"--groups {args.groups} does not divide the {args.channels * args.size**2} frequencies"
        )
    _positive("--train-timesteps", args.train_timesteps, 2)
    _positive("--width", args.width, 8)
    if args.width % 8:
        raise ValueError(f"--width must be a multiple of 8 (group norm), got {args.width}")
    _positive("--iters", args.iters, 1)
    _positive("--batch", args.batch, 1)
    _positive("--warmup", args.warmup, 0)
    _positive("--nfe", args.nfe, 1)
    if args.nfe > args.train_timesteps:
        raise ValueError(
            f"--nfe must be at most --train-timesteps ({args.train_timesteps}), got {args.nfe}"
        )
    _positive("--n-samples", args.n_samples, 1)
    _positive("--log-every", args.log_every, 1)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if not (0.0 <= args.ema < 1.0):
        raise ValueError(f"--ema must lie in [0, 1), got {args.ema}")
    from nonrev.process import SpectralProcess

    try:  # the scheduler knows its methods: ask a tiny one
        make_scheduler(
            SpectralProcess((1, 2, 2), np.ones((1, 2, 2))), 100, args.prediction_type, args.method
        )
    except ValueError as exc:
        raise ValueError(f"--method {args.method}: {exc}") from None


def load_patches(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` grayscale ``size``-square crops (n, 1, size, size) in [-1, 1] of the two
    scikit-learn sample photos (:func:`nonrev.data.datasets.photo_patches`)."""
    from nonrev.data.datasets import photo_patches

    return (photo_patches(n, size, seed) / 127.5 - 1.0).astype(np.float32)


def load_images(folder: str, size: int, channels: int) -> np.ndarray:
    """Every image of ``folder`` (n, channels, size, size) in [-1, 1], read by
    :func:`nonrev.data.load_dataset` (grayscale or RGB, resized to ``size`` square)."""
    from nonrev.data import load_dataset

    if not Path(folder).is_dir():
        raise ValueError(f"--images {folder}: no such folder")
    try:
        ds = load_dataset(
            folder, image_size=size, color="gray" if channels == 1 else "rgb", test_fraction=0.01
        )
    except ValueError as exc:
        raise ValueError(f"--images: {exc}") from None
    X = np.concatenate([ds.train, ds.test])  # the split is of no use here
    return (X / 127.5 - 1.0).astype(np.float32).reshape(-1, channels, size, size)


def make_process(images: np.ndarray, u: str, current: str, groups: int):
    """The :class:`~nonrev.process.SpectralProcess` of ``--u``, ``--current``,
    ``--groups`` for images (n, C, H, W)."""
    from nonrev.process import SpectralProcess

    shape = images.shape[1:]
    if u == "identity":
        return SpectralProcess(shape, np.ones(shape), current=current, groups=groups)
    k = None
    if u.startswith("data:"):
        try:
            k = float(u[5:])
        except ValueError:
            raise ValueError(f"--u data:<k> needs a number k >= 1, got {u!r}") from None
    try:
        return SpectralProcess.from_data(images, k=k, current=current, groups=groups)
    except ValueError as exc:
        raise ValueError(f"--u {u}: {exc}") from None


def make_unet(size: int, channels: int, width: int = 16):
    """A small UNet2DModel: block channels (width, 2 width, 2 width), one ResNet layer per
    block, no attention (a few hundred updates at 32x32 fit in minutes on a CPU)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(width, 2 * width, 2 * width),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
    )


def make_scheduler(process, train_timesteps: int, prediction_type: str, method: str):
    """The NonReversibleScheduler of ``process`` (linear betas 1e-4 .. 0.02 rescaled to
    ``train_timesteps``, trailing spacing: sampling starts at the last timestep)."""
    from nonrev.integrations.diffusers import NonReversibleScheduler

    n = train_timesteps
    return NonReversibleScheduler(
        process=process,
        num_train_timesteps=n,
        beta_start=0.1 / n,
        beta_end=20.0 / n,
        timestep_spacing="trailing",
        prediction_type=prediction_type,
        method=method,
    )


def train(args, images: np.ndarray, scheduler, say) -> tuple[torch.nn.Module, list, bool]:
    """``args.iters`` AdamW updates of the x_0 (or epsilon) loss on
    ``x_t = scheduler.add_noise(x_0, eps, t)``, ``t`` uniform over the training timesteps,
    under accelerate; returns the EMA network (on the CPU), the losses (averaged over the
    processes) and whether this is the main process."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator()
    say(
        f"accelerate: process {accelerator.process_index} of {accelerator.num_processes} "
        f"on {accelerator.device}"
    )
    if not accelerator.is_main_process:  # progress from the main process only
        say = lambda msg: None  # noqa: E731
    set_seed(args.seed)  # the same initial weights in every process
    unet = make_unet(args.size, args.channels, args.width)
    ema = make_unet(args.size, args.channels, args.width).requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-4)
    warm, total = args.warmup, args.iters
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            min(1.0, (i + 1) / max(warm, 1)) * 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
        ),
    )
    data = torch.utils.data.TensorDataset(torch.from_numpy(images))
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.batch,
        shuffle=True,
        drop_last=len(images) >= args.batch,
        generator=torch.Generator().manual_seed(args.seed),
    )
    unet, opt, loader, lr_sched = accelerator.prepare(unet, opt, loader, lr_sched)
    ema.to(accelerator.device)
    set_seed(args.seed, device_specific=True)  # different noise and t in each process
    n_t = args.train_timesteps
    losses, step, t0 = [], 0, time.perf_counter()
    unet.train()
    while step < total:
        for (x0,) in loader:
            eps = torch.randn_like(x0)
            t = torch.randint(0, n_t, (x0.shape[0],), device=x0.device)
            xt = scheduler.add_noise(x0, eps, t)
            target = x0 if args.prediction_type == "sample" else eps
            loss = torch.nn.functional.mse_loss(unet(xt, t).sample, target)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            lr_sched.step()
            decay = min(args.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, p in zip(
                    ema.parameters(), accelerator.unwrap_model(unet).parameters(), strict=True
                ):
                    pe.lerp_(p, 1.0 - decay)
            losses.append(float(accelerator.gather(loss.detach()).mean()))
            step += 1
            if step % args.log_every == 0 or step == total:
                recent = float(np.mean(losses[-args.log_every :]))
                say(f"update {step}/{total}  loss {recent:.4f}  {time.perf_counter() - t0:.0f}s")
            if step == total:
                break
    accelerator.wait_for_everyone()
    return ema.cpu(), losses, accelerator.is_main_process


def sample_grid(out: Path, method: str, nfe: int, n: int, seed: int) -> Path:
    """Load the pipeline saved in ``out`` with ``NonReversiblePipeline.from_pretrained``,
    draw ``n`` images in ``nfe`` steps of ``method`` and save them as a PNG grid; the
    path of the grid."""
    from nonrev.data import write_image_grid
    from nonrev.integrations.diffusers import NonReversiblePipeline, NonReversibleScheduler

    try:
        pipe = NonReversiblePipeline.from_pretrained(out)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"--out {out}: cannot load a NonReversiblePipeline ({' '.join(str(exc).split())[:200]})"
        ) from None
    sch = pipe.scheduler
    if sch.config.method != method:
        pipe.scheduler = NonReversibleScheduler.from_config(
            sch.config, process=sch.process, method=method
        )
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    try:  # e.g. a unet whose image shape is not the scheduler's process's
        images = pipe(
            batch_size=n,
            num_inference_steps=nfe,
            output_type="np",
            generator=torch.Generator().manual_seed(seed),
        ).images  # (n, H, W, C)
    except ValueError as exc:
        raise ValueError(f"--out {out}: {' '.join(str(exc).split())}") from None
    if not np.all(np.isfinite(images)):
        raise RuntimeError(f"{out}: the samples contain NaN or inf")
    C = images.shape[-1]
    path = out / f"samples_{method}{nfe}.png"
    write_image_grid(
        images.transpose(0, 3, 1, 2).reshape(n, -1),
        (C, *images.shape[1:3]),
        path,
        value_range=(0.0, 1.0),
    )
    return path


def main(argv=None) -> dict:
    """Parse, check, load the data, build the process and scheduler, train, save the
    pipeline and sample the grid; returns the log that is written to train_log.json."""
    args = parse_args(argv)
    check_args(args)

    def say(msg: str) -> None:
        print(msg, flush=True)

    out = Path(args.out)
    log: dict = {"args": vars(args).copy()}
    if not args.sample_only:
        if args.images is not None:
            images = load_images(args.images, args.size, args.channels)
        else:
            images = load_patches(args.patches, args.size, args.seed)
        say(f"data: {len(images)} images of shape {images.shape[1:]}")
        t0 = time.perf_counter()
        process = make_process(images, args.u, args.current, args.groups)
        scheduler = make_scheduler(process, args.train_timesteps, args.prediction_type, args.method)
        scheduler._train_tables(torch.float64, "cpu")  # the M_t, R_t blocks, once
        log["tables_s"] = time.perf_counter() - t0
        log["relaxation_rate"] = float(process.relaxation_rate())
        say(
            f"process: u {args.u}, current {args.current}, groups of {args.groups}, slowest "
            f"rate {log['relaxation_rate']:.4g}; tables for {args.train_timesteps} timesteps "
            f"in {log['tables_s']:.1f}s"
        )
        t0 = time.perf_counter()
        ema, losses, main_process = train(args, images, scheduler, say)
        log["train_s"] = time.perf_counter() - t0
        log["losses"] = losses
        if not main_process:
            return log
        from nonrev.integrations.diffusers import NonReversiblePipeline

        NonReversiblePipeline(unet=ema, scheduler=scheduler).save_pretrained(out)
        say(f"saved the pipeline in {out} ({log['train_s']:.0f}s of training)")
    t0 = time.perf_counter()
    grid = sample_grid(out, args.method, args.nfe, args.n_samples, args.seed)
    log["sample_s"] = time.perf_counter() - t0
    log["grid"] = str(grid)
    say(
        f"{args.n_samples} samples, {args.method} at {args.nfe} steps, in "
        f"{log['sample_s']:.1f}s: {grid}"
    )
    name = "sample_log.json" if args.sample_only else "train_log.json"
    (out / name).write_text(json.dumps(log, indent=1) + "\n")
    return log


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
