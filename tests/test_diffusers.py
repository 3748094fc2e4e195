"""nonrev.integrations.diffusers: the scheduler against diffusers' own schedulers for
U = I, Q = 0, exact kernels for anisotropic U with a current, save/load, the
pipeline, and bad input. Skipped when diffusers is not installed
(``pip install nonrev[diffusers]``; ``make test`` installs it)."""

import json
import os

import numpy as np
import pytest
import scipy.linalg
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)

from nonrev.integrations.diffusers import (  # noqa: E402
    PROCESS_FILE,
    NonReversiblePipeline,
    NonReversibleScheduler,
)
from nonrev.process.currents import optimal_q  # noqa: E402

D = 16  # samples (B, 1, 4, 4)


def _model(x, t):
    """A fixed stand-in for a network's epsilon output (smooth in x, depends on t)."""
    return torch.sin(3.0 * x) + 1e-4 * float(t)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _anisotropic(d=4):
    rng = np.random.default_rng(3)
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    U = (V * np.linspace(0.3, 2.0, d)) @ V.T
    return U, optimal_q(U)


def _tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=4,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


# ---------------------------------------------------------------- U = I, Q = 0 = diffusers
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_identity_matches_ddpm_step_for_step(schedule):
    """Ancestral with U = I equals DDPMScheduler (same alphas_cumprod, same generator
    draws): every step from the same input, prev_sample and pred_original_sample to
    float32 round-off (1e-5 relative; a wrong coefficient is off by >= 1e-3)."""
    ours = NonReversibleScheduler(U=np.eye(D), beta_schedule=schedule)
    ref = DDPMScheduler(beta_schedule=schedule, clip_sample=False)
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    for s in (ours, ref):
        s.set_timesteps(25)
    assert torch.equal(ours.timesteps, ref.timesteps)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    for t in ours.timesteps:
        a = ours.step(_model(x, t), t, x, generator=g1)
        b = ref.step(_model(x, t), t, x, generator=g2)
        assert _rel(a.prev_sample, b.prev_sample) < 1e-5, int(t)
        assert _rel(a.pred_original_sample, b.pred_original_sample) < 1e-5, int(t)
        x = b.prev_sample
    # the noise really enters: another seed gives a different step
    ours.set_timesteps(25)
    t = ours.timesteps[0]
    other = ours.step(_model(x, t), t, x, generator=torch.Generator().manual_seed(5)).prev_sample
    ours.set_timesteps(25)
    same = ours.step(_model(x, t), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    assert (other - same).abs().max() > 1e-2


@pytest.mark.parametrize("steps", [10, 50])
def test_identity_gddim_matches_ddim_eta0(steps):
    ours = NonReversibleScheduler(U=np.eye(D), method="gddim")
    ref = DDIMScheduler(clip_sample=False)
    for s in (ours, ref):
        s.set_timesteps(steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    for t in ours.timesteps:
        a = ours.step(_model(x, t), t, x)
        b = ref.step(_model(x, t), t, x, eta=0.0)
        assert _rel(a.prev_sample, b.prev_sample) < 1e-5, int(t)
        x = b.prev_sample


@pytest.mark.parametrize("steps", [6, 20])
def test_identity_dpmpp_2m_matches_dpm_solver(steps):
    """dpmpp_2m with U = I is diffusers' DPM-Solver++(2M) with the exact phi_2 weight
    (solver_type='heun'; the default 'midpoint' uses 1/2 in its place), including the
    first-order first and (with < 15 steps) last step. float64 samples: 1e-6."""
    ours = NonReversibleScheduler(U=np.eye(D), method="dpmpp_2m", timestep_spacing="trailing")
    ref = DPMSolverMultistepScheduler(
        timestep_spacing="trailing",
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="heun",
    )
    for s in (ours, ref):
        s.set_timesteps(steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for t in ours.timesteps:
        a = ours.step(_model(x, t), t, x).prev_sample
        b = ref.step(_model(x, t), t, x).prev_sample
        assert _rel(a, b) < 1e-6, int(t)
        x = b


def test_identity_add_noise_matches_ddpm():
    ours = NonReversibleScheduler(U=np.eye(D))
    ref = DDPMScheduler()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 1, 4, 4, generator=gen)
    z = torch.randn(6, 1, 4, 4, generator=gen)
    ts = torch.tensor([0, 1, 10, 500, 998, 999])
    assert _rel(ours.add_noise(x0, z, ts), ref.add_noise(x0, z, ts)) < 1e-6
    assert ours.scale_model_input(x0, 3) is x0
    # intrinsic time: M_t = sqrt(alphas_cumprod), Sigma_t = 1 - alphas_cumprod
    t = ours.intrinsic_time(ts)
    ab = ref.alphas_cumprod[ts].double().numpy()
    assert np.allclose(np.exp(-t), np.sqrt(ab), rtol=1e-12)
    assert np.array_equal(ours.timestep_at(t), ts.numpy())


def test_pipeline_identity_equals_ddpm_pipeline():
    """With U = I the pipeline's prior and steps are DDPMPipeline's (clip_sample off)."""
    unet = _tiny_unet()
    pipe = NonReversiblePipeline(unet=unet, scheduler=NonReversibleScheduler(U=np.eye(D)))
    ref = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(clip_sample=False))
    for p in (pipe, ref):
        p.set_progress_bar_config(disable=True)
    a = pipe(
        batch_size=3,
        num_inference_steps=8,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
    ).images
    b = ref(
        batch_size=3,
        num_inference_steps=8,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
    ).images
    assert a.shape == (3, 4, 4, 1)
    assert np.abs(a - b).max() < 1e-5


# ---------------------------------------------------------------- anisotropic U, with a current
def test_add_noise_is_the_exact_kernel_with_a_current():
    """add_noise = M_t x0 + R_t z per sample: M_t against scipy's expm(-t A), and
    R_t R_t^T against the closed form U^{-1} - M U^{-1} M^T (moderate t), and R_t is
    the gDDIM factor of the samplers."""
    U, Q = _anisotropic(4)
    s = NonReversibleScheduler(U=U, Q=Q, num_train_timesteps=50)
    A = (np.eye(4) + Q) @ U
    ts = np.array([5, 20, 49])
    x0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros_like(x0)
    mean = s.add_noise(x0, zero, torch.as_tensor(ts))
    for i, k in enumerate(ts):
        t = s.intrinsic_time(k)
        M = scipy.linalg.expm(-t * A)
        assert np.allclose(mean[i].numpy(), M @ x0[i].numpy(), rtol=1e-10, atol=1e-12)
        cols = torch.eye(4, dtype=torch.float64)
        R = (
            s.add_noise(torch.zeros(4, 4, dtype=torch.float64), cols, torch.full((4,), int(k)))
            .numpy()
            .T
        )  # column j = R e_j
        Sigma = np.linalg.inv(U) - M @ np.linalg.inv(U) @ M.T
        assert np.allclose(R @ R.T, Sigma, rtol=1e-9, atol=1e-12)
        # the samplers' factor (gDDIM R_t), not the Cholesky one: eps means the same
        # in training (add_noise) and in step
        assert np.allclose(R, s.process.gddim_factor(t), rtol=1e-10, atol=1e-13)
    assert np.abs(R - np.linalg.cholesky(Sigma)).max() > 0.05 * np.abs(R).max()  # at t_49


@pytest.mark.parametrize("method", ["gddim", "dpmpp_2m", "ancestral"])
def test_point_mass_oracle_with_a_current(method):
    """Data at a point a: the exact epsilon is R_t^{-1}(x - M_t a). Every method then
    ends at a (x0_hat = a, and the last step lands on t = 0); gddim also keeps eps
    constant along the way (x = M_s a + R_s eps_0 at every step, the gDDIM property)."""
    U, Q = _anisotropic(4)
    s = NonReversibleScheduler(U=U, Q=Q, num_train_timesteps=100, method=method)
    s.set_timesteps(12)
    a = torch.tensor([[0.5, -1.0, 0.25, 2.0]], dtype=torch.float64)
    eps0 = torch.tensor([[1.0, -0.5, 0.3, 0.8]], dtype=torch.float64)

    def kernel(k):
        t = float(s.intrinsic_time(k))
        M = torch.as_tensor(s.process.mean_matrix(t))
        R = torch.as_tensor(s.process.gddim_factor(t))
        return M, R

    M, R = kernel(int(s.timesteps[0]))
    x = a @ M.T + eps0 @ R.T
    gen = torch.Generator().manual_seed(0)
    for i, t in enumerate(s.timesteps):
        M, R = kernel(int(t))
        eps = torch.linalg.solve(R, (x - a @ M.T).T).T
        out = s.step(eps, t, x, generator=gen)
        assert torch.allclose(out.pred_original_sample, a, atol=1e-8)
        x = out.prev_sample
        if method == "gddim" and i + 1 < len(s.timesteps):
            Ms, Rs = kernel(int(s.timesteps[i + 1]))
            assert torch.allclose(x, a @ Ms.T + eps0 @ Rs.T, atol=1e-8)
    assert torch.allclose(x, a, atol=1e-8)


def test_sample_prediction_uses_x0_directly():
    U, Q = _anisotropic(4)
    s = NonReversibleScheduler(
        U=U, Q=Q, num_train_timesteps=100, method="gddim", prediction_type="sample"
    )
    s.set_timesteps(5)
    a = torch.tensor([[0.5, -1.0, 0.25, 2.0]])
    x = s.sample_prior((1, 4), generator=torch.Generator().manual_seed(0))
    for t in s.timesteps:
        out = s.step(a, t, x)
        assert torch.equal(out.pred_original_sample, a)
        x = out.prev_sample
    assert torch.allclose(x, a, atol=1e-5)


def test_prior_is_stationary_law():
    """sample_prior = z L^T with L L^T = U^{-1} (exactly, from the same z), and its
    covariance is U^{-1} (Monte Carlo, n = 40000: entries within 0.04, > 6 sigma)."""
    U, Q = _anisotropic(4)
    s = NonReversibleScheduler(U=U, Q=Q)
    x = s.sample_prior(
        (40000, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    z = torch.randn(
        (40000, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).reshape(-1, 4)
    L = np.linalg.cholesky(np.linalg.inv(U))
    assert np.allclose(x.reshape(-1, 4).numpy(), z.numpy() @ L.T, atol=1e-12)
    C = np.cov(x.reshape(-1, 4).numpy().T)
    assert np.abs(C - np.linalg.inv(U)).max() < 0.04


# ---------------------------------------------------------------- files
def test_save_load_round_trip_is_bit_exact(tmp_path):
    U, Q = _anisotropic(4)
    s = NonReversibleScheduler(
        U=U,
        Q=Q,
        num_train_timesteps=60,
        method="dpmpp_2m",
        beta_schedule="squaredcos_cap_v2",
        timestep_spacing="trailing",
    )
    s.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([PROCESS_FILE, "scheduler_config.json"])
    config = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert "U" not in config and "Q" not in config  # the matrices live in safetensors only
    t = NonReversibleScheduler.from_pretrained(tmp_path)
    assert np.array_equal(t.U, s.U) and np.array_equal(t.Q, s.Q)
    assert t.U.tobytes() == s.U.tobytes() and t.Q.tobytes() == s.Q.tobytes()
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(t.config) == public(s.config)
    gen = torch.Generator().manual_seed(0)
    x0, z = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    ts = torch.tensor([0, 7, 30, 59, 12])
    assert torch.equal(s.add_noise(x0, z, ts), t.add_noise(x0, z, ts))
    for sch in (s, t):
        sch.set_timesteps(6)
    x1 = x2 = torch.randn(5, 4, generator=gen)
    for k in s.timesteps:
        x1 = s.step(_model(x1, k), k, x1).prev_sample
        x2 = t.step(_model(x2, k), k, x2).prev_sample
    assert torch.equal(x1, x2)


def test_pipeline_save_load_and_output_types(tmp_path):
    U, Q = _anisotropic(D)
    unet = _tiny_unet()
    pipe = NonReversiblePipeline(unet=unet, scheduler=NonReversibleScheduler(U=U, Q=Q))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(batch_size=2, num_inference_steps=4)
    a = pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    assert a.shape == (2, 4, 4, 1) and a.min() >= 0 and a.max() <= 1
    pt = pipe(generator=torch.Generator().manual_seed(0), output_type="pt", **kw).images
    assert pt.shape == (2, 1, 4, 4) and np.allclose(pt.permute(0, 2, 3, 1).numpy(), a)
    pil = pipe(generator=torch.Generator().manual_seed(0), output_type="pil", **kw).images
    assert len(pil) == 2 and pil[0].size == (4, 4)
    pipe.save_pretrained(tmp_path)
    again = NonReversiblePipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert again.scheduler.U.tobytes() == pipe.scheduler.U.tobytes()
    b = again(generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- bad input
def test_bad_input_names_the_field():
    U, Q = _anisotropic(4)
    with pytest.raises(ValueError, match="U must be positive definite"):
        NonReversibleScheduler(U=-np.eye(4))
    with pytest.raises(ValueError, match="U must be symmetric"):
        NonReversibleScheduler(U=np.triu(np.ones((4, 4))))
    with pytest.raises(ValueError, match="Q must be antisymmetric"):
        NonReversibleScheduler(U=U, Q=np.ones((4, 4)))
    with pytest.raises(ValueError, match="Q must have shape"):
        NonReversibleScheduler(U=U, Q=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="U is required"):
        NonReversibleScheduler()
    with pytest.raises(ValueError, match="method"):
        NonReversibleScheduler(U=U, method="euler")
    with pytest.raises(ValueError, match="prediction_type"):
        NonReversibleScheduler(U=U, prediction_type="v_prediction")
    s = NonReversibleScheduler(U=U, Q=Q, num_train_timesteps=40)
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="call set_timesteps"):
        s.step(x, 0, x)
    s.set_timesteps(4)
    with pytest.raises(ValueError, match=r"trained range \[0, 39\]"):
        s.step(x, 40, x)
    with pytest.raises(ValueError, match=r"trained range \[0, 39\]"):
        s.add_noise(x, x, torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="not one of the timesteps"):
        s.step(x, 1, x)
    bad = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="sample: each sample has 9 values"):
        s.step(bad, int(s.timesteps[0]), bad)
    with pytest.raises(ValueError, match="original_samples: each sample has 9 values"):
        s.add_noise(bad, bad, 0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(41)
    with pytest.raises(ValueError, match="scheduler's U is 4 x 4"):
        pipe = NonReversiblePipeline(unet=_tiny_unet(), scheduler=s)
        pipe(batch_size=1, num_inference_steps=2)
    with pytest.raises(ValueError, match="scheduler must be a NonReversibleScheduler"):
        NonReversiblePipeline(unet=_tiny_unet(), scheduler=DDPMScheduler())
    dpm = NonReversibleScheduler(U=U, num_train_timesteps=40, method="dpmpp_2m")
    dpm.set_timesteps(4)
    with pytest.raises(ValueError, match="multistep"):
        dpm.step(x, int(dpm.timesteps[1]), x)


def test_load_without_process_file(tmp_path):
    NonReversibleScheduler(U=np.eye(4)).save_config(tmp_path)  # config only
    with pytest.raises(ValueError, match=PROCESS_FILE):
        NonReversibleScheduler.from_pretrained(tmp_path)


def test_diffusers_is_imported_only_by_the_integration():
    import subprocess
    import sys

    code = (
        "import sys, nonrev, nonrev.samplers, nonrev.scores, nonrev.data, "
        "nonrev.integrations; "
        "assert 'diffusers' not in sys.modules, 'diffusers imported'; "
        "import nonrev.integrations.diffusers; assert 'diffusers' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
