"""`nonrev study patches`: a tiny run end to end, and its config checks."""

import json

import pytest
from problems import invoke

TINY = """image_size: 16
n_patches: 300
train:
  network: mlp
  hidden: 16
  depth: 1
  emb_dim: 8
  steps: 5
  batch_size: 16
  time_groups: 16
  n_times: 40
  checkpoint_minutes: 0
  warmup: 2
nfe: [3, 5]
methods: [ddim, dpmpp_2m]
n_samples: 50
n_reference: 2
"""


def test_patch_study_tiny_end_to_end(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    r = invoke("study", "patches", "--config", cfg, "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"identity/none", "data/none", "data/optimal"}
    rates = {s: e["process"]["rate"] for s, e in res["models"].items()}
    assert rates["identity/none"] == pytest.approx(1.0)
    assert rates["data/optimal"] > rates["data/none"]  # the current speeds relaxation up
    for entry in res["models"].values():
        assert entry["T"] == pytest.approx(6.0 / entry["process"]["rate"])
        assert set(entry["seeds"]) == {"0", "1"}
        for seed in entry["seeds"].values():
            assert set(seed["best"]) == {"3", "5"}
            for nfe, best in seed["best"].items():
                rows = [a for a in seed["all"] if a["nfe"] == int(nfe)]
                assert best["sliced_w2"] == min(a["sliced_w2"] for a in rows)
    floor = res["references"]["floor"]
    assert 0 < floor["sliced_w2"] and floor["sliced_w2_sd"] >= 0
    report = (out / "report.md").read_text()
    assert "real vs real (floor)" in report and "Verdict" in report
    for name in ("real", "samples_identity_none", "samples_data_optimal"):
        assert (out / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize(
    "line, match",
    [
        ("models: [data/rate]", "models: each must be"),
        ("methods: [heun]", "methods: must be among"),
        ("nfe: [1]", "nfe: every NFE must be >= 2"),
        ("seeds: [0, 0]", "seeds: must be distinct"),
    ],
)
def test_patch_study_refuses_bad_config(tmp_path, line, match):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(line + "\n")
    r = invoke("study", "patches", "--config", cfg, "--out", tmp_path / "out")
    assert r.exit_code != 0 and match in r.output, r.output
    assert not (tmp_path / "out").exists()
