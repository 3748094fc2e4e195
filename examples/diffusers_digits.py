"""Train a small diffusers UNet2DModel on 8x8 digits with nonrev's diffusers scheduler,
for three forward processes, and sample with NonReversiblePipeline.

    python examples/diffusers_digits.py --out runs/diffusers_digits

Settings (the same network, schedule, seed and number of updates for each):

* ``identity``: U = I, Q = 0 (the standard DDPM process);
* ``data``: U shaped like the data covariance (``u_from_data`` with its condition
  number capped at 10, the ``data:10`` of the learned-model study), Q = 0;
* ``data+optimal Q``: the same U with the optimal current ``optimal_q(U)``.

Each is trained on ``scheduler.add_noise`` (x_t = M_t x_0 + R_t eps) with the x_0 loss
(``--prediction-type epsilon``: the epsilon loss), then sampled with the pipeline
(prior N(0, U^{-1})) by the ancestral method and by dpmpp_2m with few steps. Printed per setting:
the digits Frechet distance
(:mod:`nonrev.experiments.digits_quality`; real training subsets of the same size
score about 1.7) and the sliced W2 to the test set, in pixels/16; one PNG grid per
setting and sampler in ``--out``, and ``results.json``. Needs
``pip install nonrev[diffusers]``.

With the optimal current the epsilon target ``R_t^{-1}(x_t - M_t x_0)`` turns fast with
``t`` (``R_t`` rotates at up to ``||Q U||``), and this small UNet did not learn it in
1200 updates (no digits), and with ``U = data`` the epsilon network's errors in the stiff
directions, amplified by ``M_t^{-1}``, spoilt dpmpp_2m at 20 steps; predicting ``x_0``
(which does not turn) gave digits in every setting and sampler with the same budget,
hence the default.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel

from nonrev.data import load_dataset, u_from_data, write_image_grid
from nonrev.experiments.digits_quality import DigitsClassifier, digits_quality
from nonrev.integrations.diffusers import NonReversiblePipeline, NonReversibleScheduler
from nonrev.metrics import sliced_wasserstein
from nonrev.process.currents import optimal_q


def make_unet() -> UNet2DModel:
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def train(
    scheduler: NonReversibleScheduler, X: torch.Tensor, iters: int, batch: int, lr: float, seed: int
) -> tuple[UNet2DModel, list[float]]:
    """Epsilon (or x_0) loss on x_t = scheduler.add_noise(x_0, eps, t), t uniform over the
    training timesteps; AdamW with a cosine learning rate; returns the EMA network."""
    torch.manual_seed(seed)
    unet = make_unet()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, iters) / iters))
    )
    gen = torch.Generator().manual_seed(seed)
    n_t = scheduler.config.num_train_timesteps
    losses = []
    for _ in range(iters):
        idx = torch.randint(0, X.shape[0], (batch,), generator=gen)
        x0 = X[idx]
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, n_t, (batch,), generator=gen)
        xt = scheduler.add_noise(x0, eps, t)
        target = eps if scheduler.config.prediction_type == "epsilon" else x0
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 0.01)
        losses.append(float(loss.detach()))
    return ema, losses


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/diffusers_digits", help="output folder")
    ap.add_argument("--iters", type=int, default=1200, help="training updates per setting")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument(
        "--train-timesteps",
        type=int,
        default=200,
        help="num_train_timesteps of the linear schedule (betas 0.1/N .. 20/N: "
        "DDPM's clock, t from 0 to about 5)",
    )
    ap.add_argument("--ancestral-steps", type=int, default=100)
    ap.add_argument("--dpm-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prediction-type",
        default="sample",
        choices=["epsilon", "sample"],
        help="what the network predicts: x_0 (default), or the noise eps of "
        "add_noise (fails with the optimal current, see above)",
    )
    ap.add_argument(
        "--settings",
        default="identity,data,data+optimal Q",
        help="comma-separated subset of the three settings",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ds = load_dataset("digits", split_seed=0)
    X = torch.as_tensor(ds.train / 8.0 - 1.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    test = ds.test  # pixels 0..16
    clf = DigitsClassifier(ds.train, ds.train_labels)
    rng = np.random.default_rng(args.seed)
    real = ds.train[rng.choice(len(ds.train), size=len(test), replace=False)]
    floor = {
        "frechet": digits_quality(real, test, clf)["frechet"],
        "sliced_w2": sliced_wasserstein(real / 16, test / 16, seed=args.seed),
    }
    print(
        f"reference: {len(test)} real training digits vs the test set: "
        f"Frechet {floor['frechet']:.2f}, sliced W2 {floor['sliced_w2']:.4f}"
    )

    U_data = u_from_data(X.reshape(len(X), -1).double().numpy(), max_condition=10)
    settings = [
        ("identity", np.eye(64), None),
        ("data", U_data, None),
        ("data+optimal Q", U_data, optimal_q(U_data)),
    ]
    wanted = [w.strip() for w in args.settings.split(",")]
    unknown = set(wanted) - {name for name, _, _ in settings}
    if unknown:
        ap.error(f"--settings: unknown {sorted(unknown)}")
    settings = [s for s in settings if s[0] in wanted]
    # trailing: sampling starts at the last training timestep (the largest t), where the
    # prior N(0, U^{-1}) is closest to the law of x_t ("leading" starts lower)
    # (not squaredcos_cap_v2: its last, clipped beta jumps from t = 4.9 to 8.3 in one
    # timestep, and a step that long multiplies the network's epsilon error by e^h)
    n_t = args.train_timesteps
    common = dict(
        num_train_timesteps=n_t,
        beta_start=0.1 / n_t,
        beta_end=20.0 / n_t,
        timestep_spacing="trailing",
        prediction_type=args.prediction_type,
    )
    results = {"reference": floor, "args": vars(args), "settings": []}
    for name, U, Q in settings:
        row = {"setting": name}
        scheduler = NonReversibleScheduler(U=U, Q=Q, **common)
        row["relaxation_rate"] = scheduler.process.relaxation_rate()
        row["q_norm"] = float(np.linalg.norm(scheduler.Q, 2))
        t0 = time.perf_counter()
        scheduler.add_noise(X[:1], X[:1], 0)  # builds the M_t, R_t tables
        row["tables_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        unet, losses = train(scheduler, X, args.iters, args.batch, args.lr, args.seed)
        row["train_s"] = time.perf_counter() - t0
        row["final_loss"] = float(np.mean(losses[-100:]))
        slug = name.replace("+", "_").replace(" ", "_")
        for method, steps in (("ancestral", args.ancestral_steps), ("dpmpp_2m", args.dpm_steps)):
            sch = NonReversibleScheduler.from_config(
                scheduler.config, U=scheduler.U, Q=scheduler.Q, method=method
            )
            pipe = NonReversiblePipeline(unet=unet, scheduler=sch)
            pipe.set_progress_bar_config(disable=True)
            t0 = time.perf_counter()
            images = pipe(
                batch_size=len(test),
                num_inference_steps=steps,
                output_type="np",
                generator=torch.Generator().manual_seed(args.seed),
            ).images
            row[f"{method}_s"] = time.perf_counter() - t0
            pixels = images.reshape(len(test), -1) * 16.0
            row[f"{method}_frechet"] = digits_quality(pixels, test, clf)["frechet"]
            row[f"{method}_sliced_w2"] = sliced_wasserstein(pixels / 16, test / 16, seed=args.seed)
            write_image_grid(
                pixels[:100],
                (1, 8, 8),
                out / f"{slug}_{method}{steps}.png",
                value_range=(0.0, 16.0),
            )
        results["settings"].append(row)
        print(
            f"{name:15s} rate {row['relaxation_rate']:.3f} |Q| {row['q_norm']:6.2f} | "
            f"tables {row['tables_s']:5.1f}s train {row['train_s']:6.1f}s "
            f"(loss {row['final_loss']:.4f}) | ancestral{args.ancestral_steps}: Frechet "
            f"{row['ancestral_frechet']:.2f} SW2 {row['ancestral_sliced_w2']:.4f} "
            f"({row['ancestral_s']:.1f}s) | dpmpp_2m{args.dpm_steps}: Frechet "
            f"{row['dpmpp_2m_frechet']:.2f} SW2 {row['dpmpp_2m_sliced_w2']:.4f} "
            f"({row['dpmpp_2m_s']:.1f}s)",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
