"""`nonrev demo` end to end on a tiny configuration, its results schema and its errors."""

import json

import pytest
import yaml
from click.testing import CliRunner

from nonrev.cli import main

TINY = {
    "dim": 4,
    "gammas": [0.0, 1.0],
    "speciation": {"n_pairs": 40, "branch_factors": [0.8, 1.2], "dt": 0.02},
    "collapse": {"dim": 6, "n_train": 30, "n_traj": 20, "dt": 0.02, "n_mc": 30, "entropy_times": 3},
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_demo_end_to_end(tmp_path, tiny_config):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        main, ["demo", "--config", str(tiny_config), "--out", str(out), "--seed", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "speciation" in res.output and "collapse" in res.output
    files = {p.name for p in out.iterdir()}
    assert {
        "results.json",
        "report.md",
        "relaxation.png",
        "speciation.png",
        "collapse.png",
    } <= files
    r = json.loads((out / "results.json").read_text())
    assert r["config"]["seed"] == 3 and r["config"]["dim"] == 4
    rel = r["relaxation"]
    assert {"reversible_rate", "optimal_rate", "bound"} <= set(rel)
    assert rel["optimal_rate"] == pytest.approx(rel["bound"], rel=1e-8)
    assert len(r["speciation"]) == 4
    assert {(s["direction"], s["q"]) for s in r["speciation"]} == {
        ("slow", "none"),
        ("slow", "optimal"),
        ("fast", "none"),
        ("fast", "optimal"),
    }
    for s in r["speciation"]:
        assert {"direction", "q", "t_predicted", "t_measured"} <= set(s)
    assert [c["q"] for c in r["collapse"]] == ["none", "optimal"]
    for c in r["collapse"]:
        assert {"q", "t_predicted", "t_measured", "memorised_fraction"} <= set(c)
    assert "versions" in r and r["versions"]["nonrev"]
    st = r["steering"]
    assert {"objective", "direction", "q_norm_max", "n_train", "search", "Q", "rows"} <= set(st)
    assert [s["q"] for s in st["rows"]] == ["none", "optimal", "steered"]
    for s in st["rows"]:
        assert {"q", "q_norm", "rate", "t_predicted", "t_measured", "t_collapse"} <= set(s)
    assert "steering.png" in files
    report = (out / "report.md").read_text()
    assert "![speciation](speciation.png)" in report
    assert "![steering](steering.png)" in report
    # no partial folders left beside the output
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_demo_print_config_and_quick_defaults():
    res = CliRunner().invoke(main, ["demo", "--quick", "--print-config"])
    assert res.exit_code == 0
    cfg = yaml.safe_load(res.output)
    assert cfg["dim"] == 16 and cfg["collapse"]["n_train"] == 500


@pytest.mark.parametrize(
    "content,match",
    [
        ({"dimm": 3}, "unknown key dimm"),
        ({"speciation": {"n_pairs": "ten"}}, "speciation.n_pairs: must be an integer"),
        ({"speciation": {"n_pairs": 2}}, "speciation.n_pairs: must be >= 10"),
        ({"speciation": {"method": "ddim"}}, "speciation.method: must be one of"),
        ({"gammas": [0.0, 0.0]}, "gammas: must be distinct"),
        ({"spectrum_min": 2.0, "spectrum_max": 1.0}, "spectrum_max"),
        ({"device": "cuda:0"}, "device"),
    ],
)
def test_demo_bad_config(tmp_path, content, match):
    import torch

    if "device" in content and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    res = CliRunner().invoke(main, ["demo", "--config", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert match in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_demo_unparseable_or_missing_config_and_existing_out(tmp_path, tiny_config):
    bad = tmp_path / "bad.toml"
    bad.write_text("dim = = 3")
    runner = CliRunner()
    res = runner.invoke(main, ["demo", "--config", str(bad)])
    assert res.exit_code != 0 and "could not be parsed" in res.output
    res = runner.invoke(main, ["demo", "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code != 0 and "does not exist" in res.output
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "old.txt").write_text("an earlier run")
    res = runner.invoke(
        main, ["demo", "--config", str(tiny_config), "--out", str(tmp_path / "exists")]
    )
    assert res.exit_code != 0 and "already exists" in res.output
    res = runner.invoke(
        main,
        ["demo", "--config", str(tiny_config), "--out", str(tmp_path / "exists"), "--overwrite"],
    )
    assert res.exit_code == 0 and (tmp_path / "exists" / "report.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "exists", "tiny.yaml"]


def test_demo_interrupted_run_leaves_nothing(tmp_path, tiny_config, monkeypatch):
    import nonrev.experiments.headline as headline

    def boom(cfg, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(headline, "run_headline", boom)
    res = CliRunner().invoke(
        main, ["demo", "--config", str(tiny_config), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code != 0
    assert list(tmp_path.iterdir()) == [tiny_config]
