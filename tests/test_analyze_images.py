"""``nonrev analyze --image CxHxW``: the regime predictions of the spectral process
for rows read as images, equal to the library's, and its option errors."""

import json

import numpy as np
from click.testing import CliRunner

from nonrev.cli import main
from nonrev.process import SpectralProcess
from nonrev.regimes import predict_regimes


def _run(*args):
    return CliRunner().invoke(main, ["analyze", *map(str, args)])


def test_analyze_image_rows_with_the_spectral_process(tmp_path, rng):
    X = rng.standard_normal((200, 1, 8, 8)).cumsum(-1).cumsum(-2).reshape(200, 64)
    np.save(tmp_path / "x.npy", X)
    res = _run(
        tmp_path / "x.npy", "--image", "1x8x8", "--u", "data:100", "--q", "optimal", "--json"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["image"] == [1, 8, 8]
    images = X.reshape(200, 1, 8, 8)
    ref = predict_regimes(
        X,
        processes={
            "none": SpectralProcess.from_data(images, k=100.0),
            "optimal": SpectralProcess.from_data(images, k=100.0, current="optimal"),
        },
    )
    for key in ("speciation", "collapse"):
        for name in ("none", "optimal"):
            assert abs(out[key][name] - ref[key][name]) <= 1e-9 * abs(ref[key][name])
    assert out["rates"]["optimal"] > 5 * out["rates"]["none"]


def test_analyze_image_errors_name_the_option(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((50, 64)))
    for args, msg in (
        (("--image", "1x8x9"), "--image: 1x8x9 holds 72 values"),
        (("--image", "banana"), "--image: an image shape"),
        (("--image", "8x8", "--q", "rate:0.3"), "--q: with an image shape"),
        (("--image", "8x8", "--u", "identity", "--finite-n"), "--finite-n"),
    ):
        res = _run(tmp_path / "x.npy", *args)
        assert res.exit_code != 0 and msg in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1
