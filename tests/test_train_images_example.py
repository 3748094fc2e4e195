"""The image training example (examples/train_images.py) runs end to end on a tiny
setting: it trains under accelerate, saves a NonReversiblePipeline that loads and samples
finite images of the right shape, and refuses bad options and mismatched shapes with one
line naming them."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from nonrev.integrations.diffusers import (  # noqa: E402
    NonReversiblePipeline,
    NonReversibleScheduler,
)
from nonrev.process import SpectralProcess  # noqa: E402

_PATH = Path(__file__).resolve().parents[1] / "examples" / "train_images.py"


def _example():
    spec = importlib.util.spec_from_file_location("train_images_example", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = [
    "--patches",
    "64",
    "--size",
    "16",
    "--iters",
    "20",
    "--width",
    "8",
    "--batch",
    "8",
    "--train-timesteps",
    "50",
    "--nfe",
    "4",
    "--n-samples",
    "9",
    "--log-every",
    "10",
]


def test_trains_saves_and_samples(tmp_path, capsys):
    ex = _example()
    out = tmp_path / "run"
    log = ex.main(TINY + ["--out", str(out), "--u", "data:100", "--current", "optimal"])
    assert len(log["losses"]) == 20 and np.all(np.isfinite(log["losses"]))
    assert (out / "samples_dpmpp_2m4.png").is_file()
    assert json.loads((out / "train_log.json").read_text())["args"]["size"] == 16
    assert "update 20/20" in capsys.readouterr().out
    pipe = NonReversiblePipeline.from_pretrained(out)
    proc = pipe.scheduler.process
    assert isinstance(proc, SpectralProcess) and proc.shape == (1, 16, 16)
    assert proc.current == "blocks" and np.abs(proc.current_blocks).max() > 0
    pipe.set_progress_bar_config(disable=True)
    x = pipe(
        batch_size=3,
        num_inference_steps=3,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()
    # a scheduler folder written for 1x16x16 with a unet of another shape: refused
    sch = NonReversibleScheduler.from_pretrained(out / "scheduler")
    for unet, words in (
        (ex.make_unet(8, 1, 8), "values"),  # 64 values, not 256
        (ex.make_unet(8, 4, 8), "built for images of shape"),
    ):  # 4x8x8 = 256
        with pytest.raises(ValueError, match=words) as info:
            NonReversiblePipeline(unet=unet, scheduler=sch)(batch_size=1, num_inference_steps=2)
        assert "\n" not in str(info.value)
    # a saved folder whose unet makes 4x8x8 images, its scheduler's process 1x16x16
    bad = tmp_path / "mismatch"
    NonReversiblePipeline(unet=ex.make_unet(8, 4, 8), scheduler=sch).save_pretrained(bad)
    with pytest.raises(ValueError, match="--out .*built for images of shape") as info:
        ex.main(["--out", str(bad), "--sample-only", "--nfe", "2", "--n-samples", "1"])
    assert "\n" not in str(info.value)
    # sampling again from the saved folder with another method
    again = ex.main(
        [
            "--out",
            str(out),
            "--sample-only",
            "--method",
            "ancestral",
            "--nfe",
            "3",
            "--n-samples",
            "4",
        ]
    )
    assert Path(again["grid"]).name == "samples_ancestral3.png"


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--size", "18"], "--size"),
        (["--patches", "1"], "--patches"),
        (["--patches", "10", "--size", "432"], "--size"),
        (["--channels", "3"], "--channels"),
        (["--u", "pca"], "--u"),
        (["--u", "data:x"], "--u"),
        (["--current", "gamma"], "--current"),
        (["--groups", "3", "--size", "16"], "--groups"),
        (["--method", "heun"], "--method"),
        (["--nfe", "60", "--train-timesteps", "50"], "--nfe"),
    ],
)
def test_bad_options_name_the_option(argv, option, tmp_path):
    ex = _example()
    with pytest.raises(ValueError, match=option) as info:
        ex.main(argv + ["--out", str(tmp_path / "x")])
    assert "\n" not in str(info.value)


def test_image_folder_errors_and_loading(tmp_path):
    from PIL import Image

    ex = _example()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="--images"):
        ex.main(["--images", str(empty), "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="--images"):
        ex.main(["--images", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    X = ex.load_images(str(folder), 8, 3)
    assert X.shape == (5, 3, 8, 8) and X.min() >= -1 and X.max() <= 1
    # data-shaped u from these images: a process of their shape
    proc = ex.make_process(X, "data:10", "optimal", 2)
    assert proc.shape == (3, 8, 8) and proc.u.max() / proc.u.min() <= 10 + 1e-9
