"""The command line after a kill, and the errors it maps to one line (issue 23): no
partial file survives a SIGKILL of a writer followed by another ``nonrev sample`` in
the same folder; devices, shapes in a checkpoint, image bombs and huge archives give
one-line errors naming the input."""

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from problems import ENV, TINY_TRAIN, invoke


def error_line(res, *fragments):
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.output
    for f in fragments:
        assert f in lines[0], res.output
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from nonrev.config import from_dict
    from nonrev.training.loop import TrainConfig, train

    folder = tmp_path_factory.mktemp("ck")
    train(from_dict(TrainConfig, {**TINY_TRAIN, "steps": 3}), folder)
    return folder


KILLED_WRITER = """
import os, signal, sys
from nonrev.outputs import atomic_file
with atomic_file(sys.argv[1]) as tmp, atomic_file(sys.argv[2]) as tmp2:
    tmp.write_bytes(b"half of the samples")
    tmp2.write_bytes(b"half of a picture")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_no_partial_survives_a_sigkill_and_another_sample(tmp_path, checkpoint):
    out = tmp_path / "runs"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(out / "big.npy"), str(out / "big.png")], env=ENV
    )
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 2 and all(".partial" in n for n in left), left
    res = invoke("sample", checkpoint, "--n", 4, "--steps", 2, "--out", out / "other.npy")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["other.npy"]


@pytest.mark.parametrize(
    "device, fragment", [("banana", "--device"), ("cuda:7", "--device"), ("meta", "--device")]
)
def test_sample_device_errors_are_one_line(tmp_path, checkpoint, device, fragment):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    res = invoke(
        "sample",
        checkpoint,
        "--n",
        2,
        "--steps",
        2,
        "--out",
        tmp_path / "s.npy",
        "--device",
        device,
    )
    error_line(res, fragment)
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("key", ["shape", "sample_shape"])
@pytest.mark.parametrize("shape", [[-1, 8, 8], [0, 8, 8], [1e9, 1e9], [2, "a"], [3, 1]])
def test_checkpoint_data_shapes_are_validated(tmp_path, checkpoint, shape, key):
    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    doc = json.loads((ck / "checkpoint.json").read_text())
    doc["data"][key] = shape
    (ck / "checkpoint.json").write_text(json.dumps(doc))
    res = invoke(
        "sample",
        ck,
        "--n",
        2,
        "--steps",
        2,
        "--out",
        tmp_path / "s.npy",
        "--grid",
        tmp_path / "g.png",
    )
    error_line(res, "checkpoint.json", repr(key))


def test_an_image_bomb_names_the_file(tmp_path, monkeypatch):
    from PIL import Image

    from nonrev.data.datasets import load_dataset

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        Image.new("L", (40, 40), color=k * 40).save(folder / f"{k}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 x the limit
    with pytest.raises(ValueError) as info:
        load_dataset(str(folder), image_size=8)
    msg = str(info.value)
    assert "\n" not in msg and "0.png" in msg and "DecompressionBomb" in msg, msg


def test_an_archive_of_many_arrays_gives_a_short_error(tmp_path):
    from nonrev.data.files import load_array

    path = tmp_path / "many.npz"
    np.savez(path, **{f"member_with_a_long_name_{k:05d}": np.zeros(1) for k in range(20_000)})
    for key in (None, "x" * 10_000):
        with pytest.raises(ValueError) as info:
            load_array(path, key)
        msg = str(info.value)
        assert "\n" not in msg and len(msg) < 800 and "20000" in msg and str(path) in msg, msg


def test_sample_steps_beyond_memory_name_the_option(tmp_path, checkpoint):
    res = invoke("sample", checkpoint, "--n", 2, "--steps", 10**9, "--out", tmp_path / "s.npy")
    error_line(res, "--steps", "GiB")
    res = invoke(
        "sample", checkpoint, "--n", 2, "--steps", 2, "--T", 1e6, "--out", tmp_path / "s.npy"
    )
    error_line(res, "--T")
    assert not (tmp_path / "s.npy").exists()


def test_train_refuses_an_overflowing_current_and_wide_data_in_one_line(tmp_path):
    res = invoke(
        "train", "--data", "moons", "--q", "gamma:1e300", "--steps", 1, "--out", tmp_path / "a"
    )
    error_line(res, "--q gamma:1e300", "too strong")
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).standard_normal((10, 200_000)))
    res = invoke("train", "--data", tmp_path / "wide.npy", "--steps", 1, "--out", tmp_path / "b")
    error_line(res, "wide.npy", "GiB")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
