"""Every method's samples and exact Gaussian errors on the reference problems, and the
diffusers scheduler's outputs: the numbers tests/data/sampler_reference.npz holds.

That file was written by the samplers as they stood before the registry reshape
(commit 4bbf24a): ``python tests/sampler_reference.py tests/data/sampler_reference.npz``
run there. tests/test_sampler_reference.py recomputes them with today's code.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from problems import gaussian_case  # noqa: E402

from nonrev.samplers import gaussian_error, sample
from nonrev.scores import GaussianMixtureScore


def compute() -> dict:
    out = {}
    _fill(out)
    return out


def _fill(out):
    methods = ("euler_maruyama", "ancestral", "ddim", "heun", "gddim", "dpmpp_2m")
    for current in (False, True):
        rng = np.random.default_rng(3)
        proc, m, C = gaussian_case(rng, current)
        tag = "q" if current else "r"
        for method in methods:
            for kw_name, kw in (
                ("log10", dict(steps=10, T=6.0, t_min=1e-2, spacing="log")),
                ("uni40", dict(steps=40, T=4.0, t_min=1e-2, spacing="uniform")),
                ("log25", dict(steps=25, T=8.0, t_min=1e-3, spacing="log")),
            ):
                try:
                    e = gaussian_error(proc, m, C, method, **kw)
                    out[f"ge_{tag}_{method}_{kw_name}_mean"] = e["mean"]
                    out[f"ge_{tag}_{method}_{kw_name}_cov"] = e["cov"]
                    e = gaussian_error(proc, m, C, method, start="stationary", target="data", **kw)
                    out[f"ges_{tag}_{method}_{kw_name}_cov"] = e["cov"]
                except ValueError as err:
                    out[f"ge_{tag}_{method}_{kw_name}_err"] = np.array(str(err)[:40])
                if method in ("gddim", "dpmpp_2m"):
                    e = gaussian_error(proc, m, C, method, prior=(0.9 * m, 1.1 * C), **kw)
                    out[f"gep_{tag}_{method}_{kw_name}_cov"] = e["cov"]
                    out[f"gep_{tag}_{method}_{kw_name}_mean"] = e["mean"]
            # samples with a mixture score (x0 and score paths)
            means = np.stack([m, -m, 0.5 * m])
            covs = np.stack([C, 0.5 * C, np.eye(4)])
            score = GaussianMixtureScore(proc, means, covs)
            for dt in (torch.float64, torch.float32):
                gen = torch.Generator().manual_seed(7)
                try:
                    x, info = sample(
                        score,
                        proc,
                        64,
                        steps=30,
                        method=method,
                        T=5.0,
                        t_min=1e-2,
                        spacing="log",
                        generator=gen,
                        dtype=dt,
                    )
                    out[f"s_{tag}_{method}_{str(dt)[-2:]}"] = x.double().numpy()
                except ValueError as err:
                    out[f"s_{tag}_{method}_{str(dt)[-2:]}_err"] = np.array(str(err)[:40])

            # score-only path
            class ScoreOnly:
                def __call__(self, x, t, score=score):
                    return score(x, t)

            gen = torch.Generator().manual_seed(8)
            try:
                x, _ = sample(
                    ScoreOnly(),
                    proc,
                    32,
                    steps=30,
                    method=method,
                    T=5.0,
                    t_min=1e-2,
                    spacing="log",
                    generator=gen,
                    dtype=torch.float64,
                )
                out[f"so_{tag}_{method}"] = x.numpy()
            except ValueError as err:
                out[f"so_{tag}_{method}_err"] = np.array(str(err)[:40])
            if method in ("gddim", "dpmpp_2m"):
                gen = torch.Generator().manual_seed(9)
                x, _ = sample(
                    score,
                    proc,
                    32,
                    steps=12,
                    method=method,
                    T=5.0,
                    t_min=1e-2,
                    spacing="log",
                    generator=gen,
                    dtype=torch.float64,
                    prior=(m, C),
                )
                out[f"sp_{tag}_{method}"] = x.numpy()
    # diffusers scheduler
    try:
        from nonrev.integrations.diffusers import NonReversibleScheduler

        rng = np.random.default_rng(1)
        proc, m, C = gaussian_case(rng, True)
        for method in ("ancestral", "gddim", "dpmpp_2m", "ddim"):
            for pt in ("epsilon", "sample"):
                sch = NonReversibleScheduler(
                    U=proc.U, Q=proc.Q, num_train_timesteps=200, method=method, prediction_type=pt
                )
                sch.set_timesteps(8)
                gen = torch.Generator().manual_seed(2)
                x = sch.sample_prior((16, 4), generator=gen, dtype=torch.float64)
                for t in sch.timesteps:
                    o = torch.sin(x * 0.3 + float(t) / 100.0)
                    x = sch.step(o, t, x, generator=gen).prev_sample
                out[f"sch_{method}_{pt}"] = x.numpy()
                x0 = torch.randn(16, 4, generator=gen, dtype=torch.float64)
                noisy = sch.add_noise(x0, torch.ones_like(x0), torch.arange(16) * 10)
                out[f"sch_add_{method}_{pt}"] = noisy.numpy()
    except ImportError:
        pass


if __name__ == "__main__":
    np.savez(sys.argv[1], **compute())
