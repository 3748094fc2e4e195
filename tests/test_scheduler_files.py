"""The diffusers scheduler's files and tensors (issue 23): a saved scheduler carries a
sha256 over both of its files and any change is refused on load, naming the file;
integer tensors are refused, mixed float dtypes follow one rule; bad trained_betas
name the field."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import nonrev  # noqa: E402
from nonrev.integrations.diffusers import (
    CHECKSUM_KEY,
    PROCESS_FILE,  # noqa: E402
    NonReversibleScheduler,
    SchedulerFileError,
)

CONFIG = NonReversibleScheduler.config_name


def _scheduler(**kw):
    U = np.diag([0.5, 1.0, 1.5, 2.0])
    return NonReversibleScheduler(U=U, Q=nonrev.optimal_q(U), num_train_timesteps=40, **kw)


@pytest.fixture
def saved(tmp_path):
    s = _scheduler(method="gddim")
    s.save_pretrained(tmp_path)
    return tmp_path, s


def _one_line(exc_info, name):
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 600 and name in msg, msg


def test_round_trip_keeps_the_checksum_out_of_the_config(saved):
    folder, s = saved
    assert len(json.loads((folder / CONFIG).read_text())[CHECKSUM_KEY]) == 64
    t = NonReversibleScheduler.from_pretrained(folder)
    assert t.U.tobytes() == s.U.tobytes() and t.Q.tobytes() == s.Q.tobytes()
    assert CHECKSUM_KEY not in t.config
    t.save_pretrained(folder / "again")  # a loaded scheduler saves and loads again
    NonReversibleScheduler.from_pretrained(folder / "again")


@pytest.mark.parametrize("name", [PROCESS_FILE, CONFIG])
def test_every_bit_flip_is_refused_naming_the_file(saved, name):
    folder, _ = saved
    path = folder / name
    orig = path.read_bytes()
    for i in range(len(orig)):  # every byte, a different bit of each
        flipped = bytearray(orig)
        flipped[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(SchedulerFileError) as info:
            NonReversibleScheduler.from_pretrained(folder)
        _one_line(info, str(path))
    path.write_bytes(orig)
    NonReversibleScheduler.from_pretrained(folder)


@pytest.mark.parametrize("name", [PROCESS_FILE, CONFIG])
@pytest.mark.parametrize("keep", [0, 1, 50])
def test_truncated_or_missing_files_name_the_file(saved, name, keep):
    folder, _ = saved
    path = folder / name
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(SchedulerFileError) as info:
        NonReversibleScheduler.from_pretrained(folder)
    _one_line(info, str(path))
    path.unlink()
    with pytest.raises(SchedulerFileError) as info:
        NonReversibleScheduler.from_pretrained(folder)
    _one_line(info, str(path))


def test_a_config_without_checksum_is_refused_but_explicit_matrices_load(saved):
    folder, s = saved
    doc = json.loads((folder / CONFIG).read_text())
    del doc[CHECKSUM_KEY]
    (folder / CONFIG).write_text(json.dumps(doc))
    with pytest.raises(SchedulerFileError, match="checksum"):
        NonReversibleScheduler.from_pretrained(folder)
    t = NonReversibleScheduler.from_pretrained(folder, U=s.U, Q=s.Q)
    assert np.array_equal(t.Q, s.Q)


def test_integer_tensors_are_refused():
    s = _scheduler()
    x = torch.randn(3, 1, 2, 2)
    ts = torch.tensor([1, 5, 9])
    for a, b, name in ((x.long(), x, "original_samples"), (x, x.long(), "noise")):
        with pytest.raises(ValueError) as info:
            s.add_noise(a, b, ts)
        _one_line(info, name)
    s.set_timesteps(4)
    k = s.timesteps[0]
    for out, smp, name in ((x.long(), x, "model_output"), (x, x.to(torch.int32), "sample")):
        with pytest.raises(ValueError) as info:
            s.step(out, k, smp)
        _one_line(info, name)


def test_noise_is_cast_to_the_samples_dtype():
    s = _scheduler()
    x, z = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4)
    ts = torch.tensor([1, 5, 9])
    out = s.add_noise(x, z, ts)
    assert out.dtype == torch.float64
    assert torch.allclose(out, s.add_noise(x, z.double(), ts))
    assert s.add_noise(x.float(), z.double(), ts).dtype == torch.float32


@pytest.mark.parametrize("betas", ["abc", [[0.1, 0.2]], [0.1, "x"], {"a": 1}, [0.1, 0.2]])
def test_bad_trained_betas_name_the_field(betas):
    with pytest.raises(ValueError) as info:
        NonReversibleScheduler(U=np.eye(2), trained_betas=betas, num_train_timesteps=3)
    _one_line(info, "trained_betas")


def test_tables_in_chunks_equal_the_whole_kernel(monkeypatch):
    import nonrev.integrations.diffusers as integ

    s = _scheduler()
    ts = torch.arange(40)
    x, z = torch.randn(40, 4, dtype=torch.float64), torch.randn(40, 4, dtype=torch.float64)
    whole = s.add_noise(x, z, ts)
    monkeypatch.setattr(integ, "_TABLE_CHUNK_BYTES", 8 * 30 * 16 * 7)  # chunks of 7 times
    t = _scheduler()
    assert torch.allclose(t.add_noise(x, z, ts), whole, rtol=1e-12, atol=1e-12)


def test_a_current_too_strong_is_refused_by_set_timesteps_at_once():
    U = np.diag([0.5, 1.0, 1.5, 2.0])
    s = NonReversibleScheduler(U=U, Q=1e6 * nonrev.optimal_q(U), method="dpmpp_2m")
    with pytest.raises(ValueError) as info:
        s.set_timesteps(10)
    _one_line(info, "Q")
