"""`nonrev sweep`: the sweep file, the table, failures, resuming after a kill, and the
local and Ray backends agreeing cell for cell."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from nonrev.cli import main
from nonrev.config import ConfigError, from_dict
from nonrev.experiments import cell as cell_mod
from nonrev.experiments import headline
from nonrev.sweep.core import cell_id, load_sweep, parse_sweep

# Tiny cells: d = 4, 40 clone pairs, big steps; about 0.2 s each.
TINY = {
    "dim": 4,
    "n_train": 30,
    "mu_norm2": 10.0,
    "n_pairs": 40,
    "branch_factors": [0.6, 1.0, 1.6],
    "speciation_dt": 0.05,
    "n_traj": 20,
    "collapse_dt": 0.02,
    "seed": 1,
}
GRID = {"gamma": [0.0, 1.0], "direction": ["slow", "fast"]}
RESULT_COLUMNS = [
    "t_S_predicted",
    "t_S_measured",
    "t_C_predicted",
    "t_C_measured",
    "memorised_fraction",
    "rate",
    "rate_reversible",
    "rate_bound",
]


def write_config(path, content):
    path.write_text(yaml.safe_dump(content, sort_keys=False) if path.suffix == ".yaml" else content)
    return path


def sweep(*args):
    return CliRunner().invoke(main, ["sweep", *map(str, args)])


def cell_files(out):
    return sorted(p.name for p in (out / "cells").iterdir())


# ----------------------------------------------------------------------------- the file
def test_cells_of_a_grid_and_stable_ids():
    sw = parse_sweep({"experiment": "regime", "fixed": TINY, "grid": GRID})
    assert sw.varying == ("gamma", "direction")
    assert [(c.params["gamma"], c.params["direction"]) for c in sw.cells] == [
        (0.0, "slow"),
        (0.0, "fast"),
        (1.0, "slow"),
        (1.0, "fast"),
    ]
    assert all(c.params["dim"] == 4 and c.params["spectrum_max"] == 1.75 for c in sw.cells)
    assert len({c.id for c in sw.cells}) == 4
    # the id depends on the computation, not on how the file spells it
    same = parse_sweep(
        {
            "experiment": "regime",
            "fixed": {**TINY, "sigma": 1},
            "cells": [{"direction": "fast", "gamma": 1}],
        }
    )
    assert same.cells[0].id == sw.cells[3].id
    assert same.cells[0].id == cell_id("regime", sw.cells[3].params)
    other = parse_sweep(
        {
            "experiment": "regime",
            "fixed": {**TINY, "seed": 2},
            "cells": [{"direction": "fast", "gamma": 1}],
        }
    )
    assert other.cells[0].id != sw.cells[3].id


@pytest.mark.parametrize(
    "content,match",
    [
        ({"grid": GRID}, "experiment: missing"),
        ({"experiment": "regimes", "grid": GRID}, "experiment: unknown experiment 'regimes'"),
        ({"experiment": "regime", "gird": GRID}, "unknown key gird"),
        ({"experiment": "regime", "fixed": {"dimm": 3}, "grid": GRID}, "unknown key fixed.dimm"),
        (
            {"experiment": "regime", "fixed": {"dim": "four"}, "grid": GRID},
            "fixed.dim: must be an integer",
        ),
        (
            {"experiment": "regime", "grid": {"gama": [0.0]}},
            "unknown key grid.gama (valid keys: dim",
        ),
        ({"experiment": "regime", "grid": {"gamma": ["x"]}}, "grid.gamma[0]: must be a number"),
        ({"experiment": "regime", "grid": {"gamma": 0.5}}, "grid.gamma: must be a non-empty list"),
        (
            {"experiment": "regime", "grid": {"direction": ["slow", "up"]}},
            "grid.direction[1]: must be one of slow, fast",
        ),
        ({"experiment": "regime", "grid": {"gamma": [0, 0.0]}}, "grid.gamma[1]: repeats"),
        ({"experiment": "regime", "fixed": {"gamma": 0.0}, "grid": GRID}, "grid.gamma: also set"),
        ({"experiment": "regime", "fixed": TINY}, "give exactly one"),
        ({"experiment": "regime", "grid": GRID, "cells": [{"gamma": 0.0}]}, "give exactly one"),
        (
            {"experiment": "regime", "cells": [{"gamma": 1}, {"gamma": 1.0}]},
            "cells[1]: same parameters as cells[0]",
        ),
        ({"experiment": "regime", "cells": [{"n_pairs": 3}]}, "cells[0].n_pairs: must be >= 10"),
        (
            {"experiment": "regime", "fixed": {"spectrum_min": 2.0}, "grid": {"gamma": [0.0]}},
            "grid cell gamma=0.0: spectrum_max: must be >= spectrum_min",
        ),
    ],
)
def test_bad_sweep_file_one_line_error(tmp_path, content, match):
    cfg = write_config(tmp_path / "bad.yaml", content)
    res = sweep(cfg, "--out", tmp_path / "o", "--backend", "local")
    assert res.exit_code == 1
    assert match in res.output
    errors = [line for line in res.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: ")
    assert not (tmp_path / "o").exists()


def test_unparseable_or_missing_sweep_file(tmp_path):
    bad = write_config(tmp_path / "bad.toml", "experiment = = 'regime'")
    res = sweep(bad, "--out", tmp_path / "o")
    assert res.exit_code == 1 and "could not be parsed" in res.output
    res = sweep(tmp_path / "nope.yaml", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "does not exist" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_toml_sweep_file(tmp_path):
    cfg = write_config(
        tmp_path / "s.toml", 'experiment = "regime"\n[fixed]\ndim = 4\n[grid]\ngamma = [0, 0.5]\n'
    )
    sw = load_sweep(cfg)
    assert [c.params["gamma"] for c in sw.cells] == [0.0, 0.5]


# ----------------------------------------------------------------------------- running
def test_sweep_end_to_end_and_resume_guard(tmp_path):
    cfg = write_config(tmp_path / "s.yaml", {"experiment": "regime", "fixed": TINY, "grid": GRID})
    out = tmp_path / "run"
    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "4 run now" in res.output and "0 failed" in res.output
    assert {
        "sweep.json",
        "cells",
        "results.parquet",
        "results.csv",
        "t_S_vs_gamma.png",
        "t_C_vs_gamma.png",
    } <= {p.name for p in out.iterdir()}
    spec = load_sweep(cfg)
    assert cell_files(out) == sorted(f"{c.id}.json" for c in spec.cells)

    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 4 and list(table["cell_id"]) == [c.id for c in spec.cells]
    assert (table["status"] == "ok").all() and table["error"].isna().all()
    assert {"gamma", "direction", "dim", "seed", *RESULT_COLUMNS} <= set(table.columns)
    assert not any(c in table.columns for c in ("speciation.phi", "collapse.lock_times"))
    assert (table["t_S_predicted"] > 0).all() and (table["t_C_predicted"] > 0).all()
    np.testing.assert_allclose(table["rate"], [0.25, 0.25, 1.0, 1.0], rtol=1e-8)  # Tr(U)/d = 1
    csv = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(csv["t_S_measured"], table["t_S_measured"], rtol=1e-12)

    # each cell file holds the whole results dict, arrays included
    record = json.loads((out / "cells" / f"{spec.cells[0].id}.json").read_text())
    assert record["status"] == "ok" and record["params"] == spec.cells[0].params
    assert len(record["results"]["speciation"]["phi"]) == 3
    assert len(record["results"]["collapse"]["lock_times"]) == 20

    # the same command again runs nothing and rewrites no cell
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 0 and "0 run now, 4 already finished" in res.output
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}

    # a changed sweep into the same folder needs --resume, then runs only the new cells
    wider = write_config(
        tmp_path / "w.yaml",
        {"experiment": "regime", "fixed": TINY, "grid": {**GRID, "gamma": [0.0, 0.5, 1.0]}},
    )
    res = sweep(wider, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 1 and "holds a different sweep" in res.output
    res = sweep(wider, "--out", out, "--backend", "local", "--workers", "1", "--resume")
    assert res.exit_code == 0 and "2 run now, 4 already finished" in res.output
    assert len(pd.read_parquet(out / "results.parquet")) == 6

    # a folder that holds something else is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    res = sweep(cfg, "--out", tmp_path / "other", "--backend", "local")
    assert res.exit_code == 1 and "holds no sweep" in res.output


def test_failed_cell_is_recorded_and_the_rest_complete(tmp_path):
    # |mu|^2 < sigma^2: the classes never speciate, the experiment raises
    cells = [
        {"gamma": 0.0, "mu_norm2": 10.0},
        {"gamma": 1.0, "mu_norm2": 0.5},
        {"gamma": 1.0, "mu_norm2": 10.0},
    ]
    fixed = {k: v for k, v in TINY.items() if k != "mu_norm2"}
    cfg = write_config(
        tmp_path / "s.yaml", {"experiment": "regime", "fixed": fixed, "cells": cells}
    )
    out = tmp_path / "run"
    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "2")  # a process pool
    assert res.exit_code == 1, res.output
    assert "never speciate" in res.output and "1 failed" in res.output
    spec = load_sweep(cfg)
    bad = json.loads((out / "cells" / f"{spec.cells[1].id}.json").read_text())
    assert bad["status"] == "failed"
    assert bad["error"].startswith("ValueError: the classes never speciate")
    assert "Traceback" in bad["traceback"]
    table = pd.read_parquet(out / "results.parquet")
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert "never speciate" in table["error"][1] and np.isnan(table["t_S_measured"][1])
    assert table["t_S_predicted"][[0, 2]].notna().all()

    # a rerun tries the failed cell again, and only it
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 1 and "1 run now, 2 already finished" in res.output
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    changed = {name for name in stamps if stamps[name] != after[name]}
    assert changed == {f"{spec.cells[1].id}.json"}


def test_interrupted_sweep_keeps_finished_cells(tmp_path, monkeypatch):
    import nonrev.sweep.core as sweep_mod

    cfg = write_config(tmp_path / "s.yaml", {"experiment": "regime", "fixed": TINY, "grid": GRID})
    out = tmp_path / "run"
    real, calls = sweep_mod.run_experiment, []

    def interrupt_third(name, params):
        calls.append(params)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(name, params)

    monkeypatch.setattr(sweep_mod, "run_experiment", interrupt_third)
    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 130 and "run the same command again" in res.output
    assert len(cell_files(out)) == 2 and not (out / "results.parquet").exists()
    monkeypatch.setattr(sweep_mod, "run_experiment", real)
    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 0 and "2 run now, 2 already finished" in res.output
    assert len(cell_files(out)) == 4


def test_sweep_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path):
    # slower cells (about 0.7 s each) so that the kill lands in the middle
    slow = {**TINY, "n_pairs": 250, "speciation_dt": 0.01}
    del slow["seed"]
    cfg = write_config(
        tmp_path / "s.yaml",
        {"experiment": "regime", "fixed": slow, "grid": {"seed": [0, 1, 2, 3, 4]}},
    )
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nonrev.cli import main; main()",
            "sweep",
            str(cfg),
            "--out",
            str(out),
            "--backend",
            "local",
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "cells").is_dir() and len(list((out / "cells").glob("[!.]*.json"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # finished cells only: a cell being written when the kill lands is a hidden partial file
    done = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "cells").glob("[!.]*.json")
    }
    assert 2 <= len(done) < 5, "the kill should land between the second and the last cell"
    assert not (out / "results.parquet").exists()
    for p in (out / "cells").glob("[!.]*.json"):
        assert json.loads(p.read_text())["status"] == "ok"

    res = sweep(cfg, "--out", out, "--backend", "local", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert f"{5 - len(done)} run now, {len(done)} already finished" in res.output
    for name, (stamp, data) in done.items():  # the finished cells were not run again
        p = out / "cells" / name
        assert (p.stat().st_mtime_ns, p.read_bytes()) == (stamp, data)
    spec = load_sweep(cfg)
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["cell_id"]) == sorted(c.id for c in spec.cells)
    assert table["cell_id"].is_unique and (table["status"] == "ok").all()
    assert sorted(table["seed"]) == [0, 1, 2, 3, 4]
    assert [p.name for p in (out / "cells").iterdir() if p.name.startswith(".")] == []


def test_local_and_ray_backends_give_identical_tables(tmp_path):
    cfg = write_config(tmp_path / "s.yaml", {"experiment": "regime", "fixed": TINY, "grid": GRID})
    res = sweep(cfg, "--out", tmp_path / "local", "--backend", "local", "--workers", "1")
    assert res.exit_code == 0, res.output
    res = sweep(cfg, "--out", tmp_path / "ray", "--workers", "2")  # ray is the default
    assert res.exit_code == 0, res.output
    assert "4 run now" in res.output
    a = pd.read_parquet(tmp_path / "local" / "results.parquet").drop(columns="runtime_s")
    b = pd.read_parquet(tmp_path / "ray" / "results.parquet").drop(columns="runtime_s")
    assert a["t_S_measured"].notna().sum() >= 2
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for p in (tmp_path / "local" / "cells").iterdir():  # arrays too, not only the table
        ra = json.loads(p.read_text())["results"]
        rb = json.loads((tmp_path / "ray" / "cells" / p.name).read_text())["results"]
        assert ra == rb


# ----------------------------------------------------------------------------- the cell
def test_regime_cell_reproduces_the_demo_row():
    """With the demo's sizes, a cell's speciation equals the demo's first row."""
    sizes = {"n_pairs": 40, "branch_factors": [0.6, 1.0, 1.6], "dt": 0.05, "mu_norm2": 10.0}
    cfg = from_dict(
        headline.HeadlineConfig, {"dim": 4, "gammas": [1.0], "seed": 5, "speciation": sizes}
    )
    U, V, _ = headline._spectrum_u(cfg.dim, cfg.spectrum_min, cfg.spectrum_max, cfg.seed)
    proc = headline.OUProcess(U, headline.optimal_q(U))
    demo_rows = headline._speciation(
        cfg, V, {1.0: proc}, torch.Generator().manual_seed(5), lambda name: None
    )
    res = cell_mod.regime_cell({**TINY, "seed": 5, "gamma": 1.0, "direction": "slow"})
    assert demo_rows[0]["direction"] == "slow"
    assert res["t_S_predicted"] == demo_rows[0]["t_predicted"]
    assert res["t_S_measured"] == demo_rows[0]["t_measured"]
    assert res["speciation"]["phi"] == demo_rows[0]["phi"]
    assert res["rate"] == pytest.approx(res["rate_bound"], rel=1e-8)


def test_regime_cell_rejects_bad_input():
    with pytest.raises(ConfigError, match="direction: must be one of"):
        cell_mod.regime_cell({"direction": "sideways"})
    with pytest.raises(ValueError, match="direction must be one of"):
        cell_mod.class_mean(np.eye(3), "up", 1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            cell_mod.regime_cell({**TINY, "device": "cuda"})


def test_sweep_help_documents_the_cluster_setup():
    res = CliRunner().invoke(main, ["sweep", "--help"])
    assert res.exit_code == 0
    assert "ray start --head" in res.output and "--address HEAD:6379" in res.output
    assert "results.parquet" in res.output and "RAY_AUTH_MODE=token" in res.output
