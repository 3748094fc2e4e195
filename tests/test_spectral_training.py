"""Learned scores on the spectral kernel: the parameterisation in the kernel's blocks
equals its dense twin, training and checkpoints work end to end, bad input is named."""

import json

import numpy as np
import pytest
import torch
from problems import ENV, invoke  # noqa: F401  (ENV: the one-thread environment)

from nonrev.models.networks import MLPNet
from nonrev.operators import DenseStack
from nonrev.process.spectral import SpectralProcess
from nonrev.regimes.theory import covariance_blocks
from nonrev.scores import GaussianMixtureScore
from nonrev.scores.neural import NeuralScore, Parameterisation
from nonrev.training.loop import TrainConfig, load_checkpoint, train

T_MIN, T_MAX = 1e-2, 5.0
GRID = np.geomspace(T_MIN, T_MAX, 7)


def _images(rng, n=400, shape=(1, 8, 8)):
    """Smooth random images (cumulative sums of noise): a covariance far from
    diagonal in pixels, close to diagonal in the DCT."""
    return rng.standard_normal((n, *shape)).cumsum(-1).cumsum(-2)


def _pair(rng, current="optimal", shape=(1, 8, 8)):
    X = _images(rng, shape=shape)
    sp = SpectralProcess.from_data(X, k=100, current=current)
    Xf = X.reshape(X.shape[0], -1)
    Cb = covariance_blocks(sp, Xf)
    return sp, Cb, sp.dense(), sp.to_pixels(Cb)


@pytest.mark.parametrize("current", ["none", "optimal"])
def test_data_frame_parameterisation_equals_its_dense_twin(rng, current):
    """With the data-frame parametrisation (the default) every map is unique (symmetric
    roots in the whitened frame), so a network gives the same score and data prediction
    on the spectral process (blocks through the DCT) and on its dense twin, on grid
    times and between them: to 1e-10 relative."""
    sp, Cb, dn, Cd = _pair(rng, current)
    ps = Parameterisation(sp, Cb, kind="data_frame", t_range=(T_MIN, T_MAX))
    pd = Parameterisation(dn, Cd, kind="data_frame", t_range=(T_MIN, T_MAX))
    net = MLPNet(64, T_MIN, T_MAX, hidden=32, depth=1, emb_dim=8).double()
    s1 = NeuralScore(net, ps, ps.tables(GRID, dtype=torch.float64))
    s2 = NeuralScore(net, pd, pd.tables(GRID, dtype=torch.float64))
    x = torch.tensor(rng.standard_normal((5, 64)))
    for t in (GRID[2], 0.77, T_MAX):
        a, b = s1(x, t), s2(x, t)
        assert float((a - b).abs().max() / b.abs().max()) < 1e-10
        a, b = s1.denoise(x, t), s2.denoise(x, t)
        assert float((a - b).abs().max() / b.abs().max()) < 1e-10
    a, b = sp.to_pixels(s1.stiffness(0.3)), s2.stiffness(0.3)
    assert np.abs(a - b).max() < 1e-10 * np.abs(b).max()


def test_gaussian_parameterisation_in_blocks(rng):
    """The Gaussian kind picks block Cholesky roots (another root than the dense
    twin's); what does not depend on the root agrees: L L^T = Sigma_t,
    L^{-T} L^{-1} = Sigma_t^{-1}, L^{-T} A = G_t^{-1}; and with F = 0 the score is the
    exact score of N(0, C) with C the covariance blocks (1e-10)."""
    sp, Cb, dn, Cd = _pair(rng)
    ps = Parameterisation(sp, Cb, kind="gaussian")
    pd = Parameterisation(dn, Cd, kind="gaussian")
    ts, td = ps.tables(GRID, dtype=torch.float64), pd.tables(GRID, dtype=torch.float64)

    def invariants(t):
        L, Li = t.L.dense(), t.Linv.dense()
        return L @ L.mT, Li.mT @ Li, Li.mT @ t.A.dense()

    for a, b in zip(invariants(ts), invariants(td)):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-10
    net = MLPNet(64, T_MIN, T_MAX, hidden=8, depth=1, emb_dim=4).double()
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    score = NeuralScore(net, ps, ts)
    exact = GaussianMixtureScore(dn, np.zeros((1, 64)), Cd[None])
    x = torch.tensor(rng.standard_normal((4, 64)))
    for t in (GRID[1], 0.5):
        np.testing.assert_allclose(score(x, t).numpy(), exact(x, t).numpy(), rtol=1e-9, atol=1e-9)


def test_apply_groups_matches_dense_maps(rng):
    """OperatorStack.apply_groups (a map per group of rows: the training batch) equals
    the dense maps, for the block stack (through the DCT) and the dense stack."""
    sp, Cb, _, _ = _pair(rng)
    blocks = rng.standard_normal((3, *sp.drift_blocks.shape))
    bs = sp.operators(blocks)
    ds = DenseStack(bs.dense())
    x = torch.tensor(rng.standard_normal((3, 5, 64)))
    want = torch.einsum("nij,nrj->nri", bs.dense(), x)
    for op in (bs, ds):
        np.testing.assert_allclose(op.apply_groups(x).numpy(), want.numpy(), atol=1e-12)


def _tiny(**kw):
    base = dict(
        data="digits",
        kernel="spectral",
        u="data:10",
        q="optimal",
        hidden=32,
        depth=1,
        emb_dim=8,
        steps=30,
        batch_size=32,
        time_groups=32,
        n_times=50,
        t_max=6.0,
        checkpoint_minutes=0.0,
        warmup=5,
    )
    return TrainConfig(**(base | kw))


def test_spectral_training_checkpoint_round_trip(tmp_path):
    """Digits (1x8x8) on the spectral process with its optimal current, one time per
    row: the loss falls, the checkpoint stores the process (kind spectral, arrays in the
    weights file), loading it gives the same process and the same samples."""
    out = tmp_path / "run"
    model = train(_tiny(steps=60), out)
    hist = model.loss_history
    assert hist[-1][1] < hist[0][1]
    doc = json.loads((out / "checkpoint.json").read_text())
    assert doc["process"] == {"kind": "spectral", "shape": [1, 8, 8]}
    back = load_checkpoint(out)
    assert isinstance(back.process, SpectralProcess)
    np.testing.assert_array_equal(back.process.drift_blocks, model.process.drift_blocks)
    reversible = SpectralProcess.from_arrays(
        {**back.process.to_arrays(), "current": 0 * back.process.current_blocks}
    )
    assert back.process.relaxation_rate() > 1.2 * reversible.relaxation_rate()
    a, _ = model.sample(8, 5, "dpmpp_2m", seed=3)
    b, _ = back.sample(8, 5, "dpmpp_2m", seed=3)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(a))


def test_spectral_training_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="kernel: spectral needs image data"):
        train(_tiny(data="moons", n_points=100), tmp_path / "a")
    with pytest.raises(ValueError, match="groups: .* not divisible by g"):
        train(_tiny(groups=3), tmp_path / "b")
    with pytest.raises(ValueError, match="q:"):
        train(_tiny(q="rate:0.5"), tmp_path / "c")


def test_spectral_checkpoint_for_another_shape_is_refused(tmp_path):
    """A checkpoint whose stored process was written for another image shape (edited
    arrays, a consistent checksum) is refused naming the shapes."""
    from safetensors.torch import load_file, save_file

    from nonrev.training.loop import CheckpointError

    out = tmp_path / "run"
    train(_tiny(steps=2), out)
    doc = json.loads((out / "checkpoint.json").read_text())
    wfile = out / doc["weights"]["file"]
    tensors = load_file(wfile)
    tensors["process.shape"] = torch.tensor([1, 4, 16])
    save_file(tensors, wfile)
    import hashlib

    doc["weights"]["sha256"] = hashlib.sha256(wfile.read_bytes()).hexdigest()
    (out / "checkpoint.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"written for images of shape \(1, 4, 16\)"):
        load_checkpoint(out)


def test_cli_train_and_sample_spectral(tmp_path):
    """`nonrev train --kernel spectral` on 16x16 photo patches, then `nonrev sample`
    writes the samples and a PNG grid."""
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "n_points: 200\nhidden: 16\ndepth: 1\nemb_dim: 8\nbatch_size: 16\n"
        "time_groups: 16\nn_times: 40\nt_max: 6.0\ncheckpoint_minutes: 0\nwarmup: 2\n"
    )
    r = invoke(
        "train", "--data", "patches", "--image-size", "16", "--kernel", "spectral",
        "--q", "optimal", "--groups", "4", "--steps", "5", "--config", cfg, "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke(
        "sample", out, "--n", "9", "--steps", "4", "--method", "ddim",
        "--out", tmp_path / "s.npy", "--grid", tmp_path / "s.png",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = np.load(tmp_path / "s.npy")
    assert s.shape[0] == 9 and s.size == 9 * 256 and np.all(np.isfinite(s))
    assert (tmp_path / "s.png").stat().st_size > 0
