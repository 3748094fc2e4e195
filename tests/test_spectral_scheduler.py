"""The diffusers scheduler with a structured (spectral) process: the same forward
noise and the same reverse steps as with its dense twin, tables in blocks, and the
process saved and loaded with the scheduler."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from nonrev.integrations.diffusers import (  # noqa: E402
    PROCESS_FILE,
    NonReversibleScheduler,
    SchedulerFileError,
)
from nonrev.process import SpectralProcess  # noqa: E402


def _pair(rng, method, prediction_type="sample", shape=(1, 4, 4)):
    proc = SpectralProcess(shape, np.exp(rng.uniform(-2, 1, shape)), current="optimal")
    dense = proc.dense()
    kw = dict(
        num_train_timesteps=200,
        method=method,
        prediction_type=prediction_type,
        timestep_spacing="trailing",
    )
    return (
        NonReversibleScheduler(process=proc, **kw),
        NonReversibleScheduler(U=dense.U, Q=dense.Q, **kw),
    )


@pytest.mark.parametrize(
    "method, prediction_type",
    [("gddim", "sample"), ("gddim", "epsilon"), ("dpmpp_2m", "sample"), ("dpmpp_2m", "epsilon")],
)
def test_spectral_scheduler_steps_as_its_dense_twin(method, prediction_type, rng):
    spec, dense = _pair(rng, method, prediction_type)
    x0 = torch.as_tensor(rng.standard_normal((8, 1, 4, 4)))
    noise = torch.as_tensor(rng.standard_normal((8, 1, 4, 4)))
    ks = torch.as_tensor(rng.integers(0, 200, 8))
    torch.testing.assert_close(
        spec.add_noise(x0, noise, ks), dense.add_noise(x0, noise, ks), rtol=1e-9, atol=1e-9
    )
    outs = []
    x_T = torch.as_tensor(rng.standard_normal((8, 1, 4, 4)))  # sample_prior's square
    for s in (spec, dense):  # root of U^{-1} differs between the two: start both here
        s.set_timesteps(6)
        x = x_T.clone()
        for k in s.timesteps:
            x = s.step(torch.tanh(x), k, x).prev_sample  # a fixed "network"
        outs.append(x)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-8, atol=1e-8)


def test_spectral_tables_are_blocks(rng):
    spec, dense = _pair(rng, "ancestral")
    x0 = torch.zeros(2, 16, dtype=torch.float64)
    spec.add_noise(x0, torch.ones_like(x0), torch.tensor([3, 150]))
    dense.add_noise(x0, torch.ones_like(x0), torch.tensor([3, 150]))
    (Ms, Rs), (Md, Rd) = (s._train_tables(torch.float64, "cpu") for s in (spec, dense))
    assert Ms.nbytes == 200 * 8 * 2 * 2 * 8 and Md.nbytes == 200 * 16 * 16 * 8
    # ancestral steps run (their noise factor is a Cholesky factor in the basis)
    spec.set_timesteps(5)
    x = spec.sample_prior((3, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    for k in spec.timesteps:
        x = spec.step(torch.zeros_like(x), k, x, generator=torch.Generator().manual_seed(2))
        x = x.prev_sample
    assert torch.isfinite(x).all() and x.dtype == torch.float32
    # the prior's draws have covariance U^{-1} = V^T diag(1/u) V
    z = (
        spec.sample_prior(
            (20000, 1, 4, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64
        )
        .reshape(20000, 16)
        .numpy()
    )
    cov = dense.process.stationary_cov
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / 20000)
    assert np.all(np.abs(np.cov(z.T) - cov) < 5 * se)


def test_spectral_scheduler_round_trips_and_refuses_tampering(tmp_path, rng):
    spec, _ = _pair(rng, "dpmpp_2m", shape=(1, 4, 6))
    spec.save_pretrained(tmp_path)
    again = NonReversibleScheduler.from_pretrained(tmp_path)
    assert isinstance(again.process, SpectralProcess) and again.process.shape == (1, 4, 6)
    np.testing.assert_array_equal(again.process.drift_blocks, spec.process.drift_blocks)
    assert again.U is None and again.config.method == "dpmpp_2m"
    blob = bytearray((tmp_path / PROCESS_FILE).read_bytes())
    blob[-3] ^= 0x10
    (tmp_path / PROCESS_FILE).write_bytes(bytes(blob))
    with pytest.raises(SchedulerFileError, match=PROCESS_FILE):
        NonReversibleScheduler.from_pretrained(tmp_path)


def test_process_and_u_together_are_refused(rng):
    proc = SpectralProcess((1, 2, 2), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="either process= or U="):
        NonReversibleScheduler(U=np.eye(4), process=proc)
    with pytest.raises(ValueError, match="process must be"):
        NonReversibleScheduler(process="spectral")
