"""The failures a hostile probe found, one test per cause (each failed
before its fix): outputs checked before any work, bounded configs, integer option
ranges, pool workers that die with their parent, large-d cost messages, loader
messages, leftovers of killed runs, SIGTERM and file permissions."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from problems import ENV, TINY_TRAIN, invoke

from nonrev.config import SEED_MAX, ConfigError, load_file, show


def assert_one_line(res, *fragments, code=1):
    assert res.exit_code == code, res.output
    assert (
        "Traceback" not in res.output
        and res.exception is None
        or isinstance(res.exception, SystemExit)
    ), res.output
    error = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, res.output
    for fragment in fragments:
        assert fragment in error[0], res.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from nonrev.config import from_dict
    from nonrev.training.loop import TrainConfig, train

    folder = tmp_path_factory.mktemp("ck")
    train(from_dict(TrainConfig, {**TINY_TRAIN, "steps": 3}), folder)
    return folder


@pytest.fixture
def data_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    X[20:, 0] += 3.0
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.repeat([0, 1], 20))
    return tmp_path / "x.npy"


# ----------------------------------------------------------------------------- 1. outputs first
def _unwritable(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    yield blocker / "sub"
    if Path("/proc/self").is_dir():
        yield Path("/proc/nonrev-no-such-folder/sub")


def _never(*args, **kwargs):
    raise AssertionError("the work started before the outputs were checked")


def test_every_writing_command_checks_its_outputs_before_any_work(
    tmp_path, monkeypatch, checkpoint, data_file
):
    import nonrev.experiments.digits_study as digits
    import nonrev.experiments.headline as headline
    import nonrev.sweep.core as sweep_core
    import nonrev.training.loop as loop
    from nonrev.data import files

    for name, mod in (
        ("train", loop),
        ("run_headline", headline),
        ("run_digits_study", digits),
        ("run_cell", sweep_core),
    ):
        monkeypatch.setattr(mod, name, _never)
    monkeypatch.setattr(loop, "load_checkpoint", _never)
    monkeypatch.setattr(files, "load_array", _never)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"experiment": "regime", "grid": {"gamma": [0.0]}}))
    for bad in _unwritable(tmp_path):
        cases = [
            (["train", "--data", "moons", "--steps", 200, "--out", bad / "ck"], "--out"),
            (["demo", "--quick", "--out", bad / "run"], "--out"),
            (["study", "digits", "--quick", "--out", bad / "run"], "--out"),
            (
                ["sweep", sweep_file, "--backend", "local", "--workers", 1, "--out", bad / "sw"],
                "--out",
            ),
            (["sample", checkpoint, "--out", bad / "s.npy"], "--out"),
            (
                ["sample", checkpoint, "--out", tmp_path / "s.npy", "--grid", bad / "g.png"],
                "--grid",
            ),
            (
                ["steer", data_file, "--objective", "speciation_early", "--out", bad / "q.npy"],
                "--out",
            ),
        ]
        for args, option in cases:
            assert_one_line(invoke(*args), option, str(bad.parent))
    assert not (tmp_path / "s.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "sweep.yaml", "x.npy", "y.npy"]


def test_sample_grid_failure_leaves_no_samples(tmp_path, monkeypatch, checkpoint):
    import nonrev.reports.learned as learned

    def broken(path, x, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(learned, "write_sample_picture", broken)
    res = invoke(
        "sample",
        checkpoint,
        "--n",
        8,
        "--steps",
        2,
        "--out",
        tmp_path / "s.npy",
        "--grid",
        tmp_path / "g.png",
    )
    assert_one_line(res, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    res = invoke(
        "sample",
        checkpoint,
        "--n",
        8,
        "--steps",
        2,
        "--out",
        tmp_path / "s.npy",
        "--grid",
        tmp_path / "g.txt",
    )
    assert_one_line(res, "--grid", ".png")


# ----------------------------------------------------------------------------- 3. config bounds
def test_billion_laughs_is_refused_while_counting(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for k in range(1, 9):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]")
    lines.append("collapse: {dim: [" + ", ".join(["*a8"] * 10) + "]}")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_file(path)
    assert time.perf_counter() - t0 < 5.0  # counting stops at the budget, not at 1e10 values


def test_values_in_messages_are_bounded():
    nested = [1]
    for _ in range(30):
        nested = [nested] * 10  # 10^30 leaves when expanded
    assert len(show(nested)) <= 80
    assert len(show("x" * 10**6)) <= 80
    assert len(show(10**5000)) <= 80  # beyond Python's int-to-str limit
    from nonrev.config import from_dict
    from nonrev.experiments.headline import HeadlineConfig

    with pytest.raises(ConfigError) as err:
        from_dict(HeadlineConfig, {"device": nested})
    assert len(str(err.value)) < 200


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"collapse": {"dim": 100000}}, "collapse.dim: must be <= 4096"),
        ({"collapse": {"n_train": 10**7, "dim": 4096}}, "GiB"),
        ({"seed": 99999999999999999999}, f"seed: must be <= {SEED_MAX}"),
        ({"collapse": {"n_mc": 2**70}}, "collapse.n_mc: must be <="),
    ],
)
def test_config_sizes_are_bounded_before_any_allocation(tmp_path, content, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(content))
    res = invoke("demo", "--config", path, "--print-config")
    assert_one_line(res, fragment)


def test_nested_and_huge_config_files(tmp_path):
    (tmp_path / "deep.yaml").write_text("seed: " + "[" * 3000 + "]" * 3000)
    (tmp_path / "deep.toml").write_text("seed = " + "[" * 3000 + "]" * 3000)
    (tmp_path / "digits.yaml").write_text("seed: " + "9" * 5000)
    (tmp_path / "big.yaml").write_text("# " + "x" * (2 << 20))
    for name, fragment in (
        ("deep.yaml", "could not be parsed"),
        ("deep.toml", "could not be parsed"),
        ("digits.yaml", "could not be parsed"),
        ("big.yaml", "MiB"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            load_file(tmp_path / name)


# ----------------------------------------------------------------------------- 5. integer ranges
@pytest.mark.parametrize(
    "args, option",
    [
        (["train", "--data", "moons", "--out", "OUT", "--seed", "99999999999999999999"], "--seed"),
        (["sample", "CK", "--out", "OUT.npy", "--seed", "99999999999999999999"], "--seed"),
        (["demo", "--quick", "--out", "OUT", "--seed", "99999999999999999999"], "--seed"),
        (["analyze", "DATA", "--n-train", "99999999999999999999"], "--n-train"),
        (["analyze", "DATA", "--n-train", "1e21"], "--n-train"),
        (["steer", "DATA", "--objective", "window", "--out", "OUT.npy", "--seed", "-1"], "--seed"),
        (["sample", "CK", "--out", "OUT.npy", "--n", "99999999999999999999"], "--n"),
        (
            ["train", "--data", "moons", "--out", "OUT", "--steps", "99999999999999999999"],
            "--steps",
        ),
        (["sweep", "C.yaml", "--out", "OUT", "--workers", "99999999999999999999"], "--workers"),
    ],
)
def test_integer_options_have_ranges_that_name_the_option(
    tmp_path, data_file, checkpoint, args, option
):
    subst = {
        "OUT": tmp_path / "out",
        "OUT.npy": tmp_path / "o.npy",
        "CK": checkpoint,
        "DATA": data_file,
        "C.yaml": data_file,
    }
    res = invoke(*[subst.get(a, a) for a in args])
    assert res.exit_code == 2 and f"'{option}'" in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_n_train_beyond_float_precision_is_refused_by_the_library():
    from nonrev.linalg import as_count

    assert as_count("n_train", 10**12) == 10**12
    with pytest.raises(ValueError, match="n_train"):
        as_count("n_train", 99999999999999999999)


# ----------------------------------------------------------------------------- 4. orphans
def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != b"Z"


def _start_sweep(tmp_path, backend: str) -> subprocess.Popen:
    """A four-cell regime sweep with two workers, started as its own process."""
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "experiment": "regime",
                "fixed": {"dim": 8, "n_pairs": 4000, "n_traj": 400},
                "grid": {"gamma": [0.0, 0.5, 1.0, 1.5]},
            }
        )
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nonrev.cli import main; main()",
            "sweep",
            str(config),
            "--backend",
            backend,
            "--workers",
            "2",
            "--out",
            str(tmp_path / "out"),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_local_sweep_workers_die_with_their_parent(tmp_path):
    proc = _start_sweep(tmp_path, "local")
    try:
        workers = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [
                p
                for p in _children(proc.pid)
                if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()
                and b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
        assert len(workers) >= 2, "the pool did not start"
        everything = _children(proc.pid)
        time.sleep(2.0)  # the workers are importing or running cells
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in everything):
        time.sleep(0.2)
    left = [p for p in everything if _alive(p)]
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert left == [], f"processes outlived the sweep: {left}"


def _descendants(root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            kids.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for pid in kids.get(todo.pop(), ()):
            found.add(pid)
            todo.append(pid)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_ray_processes_die_with_the_sweep(tmp_path):
    # find_spec, not importorskip: importing ray here, before nonrev.sweep sets
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, would make a later Ray sweep in this worker
    # take a non-loopback address
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    proc = _start_sweep(tmp_path, "ray")
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            seen |= _descendants(proc.pid)
            if any(
                b"ray::" in Path(f"/proc/{p}/cmdline").read_bytes()
                for p in seen
                if Path(f"/proc/{p}").exists()
            ):
                break  # a Ray worker runs a cell
            time.sleep(0.5)
        for _ in range(6):  # a few more seconds of recording
            seen |= _descendants(proc.pid)
            time.sleep(0.5)
        assert len(seen) >= 3, "Ray did not start"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.5)
    left = [p for p in seen if _alive(p)]
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    assert left == [], f"Ray processes outlived the sweep: {left}"


def test_die_with_parent_exits_when_the_parent_is_already_gone():
    code = (
        "import os; from nonrev.sweep.core import die_with_parent; "
        "die_with_parent(os.getppid() + 10**6); print('survived')"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1 and "survived" not in res.stdout


# ----------------------------------------------------------------------------- 6. large inputs
def test_optimal_q_of_a_multiple_of_the_identity_is_zero_without_o_d3_work():
    from nonrev.linalg import is_diagonal
    from nonrev.process.currents import optimal_q

    U = 2.5 * np.eye(6)
    assert is_diagonal(U) and not is_diagonal(U + 1e-3 * np.ones((6, 6)))
    # the general construction (a U that is not diagonal) agrees in the limit
    Q_near = optimal_q(U + 1e-12 * (np.ones((6, 6)) - np.eye(6)))
    assert np.abs(Q_near).max() < 1e-9
    assert np.array_equal(optimal_q(U), np.zeros((6, 6)))


def test_cheap_checks_agree_with_the_eigenvalues():
    """as_psd proves PSD by a shifted Cholesky factorisation (no eigendecomposition
    for a singular covariance of d > n data) and accepts exactly what the
    eigenvalue test accepts; spectral_norm and smallest_eigenvalue take O(d^2)
    paths for zero and diagonal matrices, with the same values."""
    from nonrev.linalg import SYM_TOL, as_psd, psd_spectrum, smallest_eigenvalue, spectral_norm

    rng = np.random.default_rng(3)
    for trial in range(60):
        d = int(rng.integers(2, 12))
        F = rng.standard_normal((d, int(rng.integers(1, d + 1))))
        lam_top = float(np.linalg.eigvalsh(F @ F.T)[-1])
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        # a negative direction just inside or just outside the tolerance
        eps = SYM_TOL * max(lam_top, 1.0) * float(rng.choice([0.0, 0.3, 0.9, 1.1, 3.0]))
        X = F @ F.T - eps * np.outer(v, v)
        try:
            psd_spectrum("X", X)
            expected = True
        except ValueError:
            expected = False
        try:
            as_psd("X", X)
            got = True
        except ValueError:
            got = False
        assert got == expected, (trial, eps)
    for M in (np.zeros((4, 4)), np.diag([3.0, -5.0, 1.0]), rng.standard_normal((5, 5))):
        assert spectral_norm(M) == pytest.approx(np.linalg.norm(M, 2), rel=1e-14)
    S = np.diag([2.0, 0.5, 1.0])
    assert smallest_eigenvalue(S) == 0.5 == np.linalg.eigvalsh(S)[0]


def test_large_d_announces_its_cost_and_shows_progress(tmp_path, monkeypatch):
    import nonrev.cli.common as common
    import nonrev.regimes.analyze as analyze

    monkeypatch.setattr(common, "LARGE_D", 3)
    monkeypatch.setattr(common, "HEARTBEAT_S", 0.05)
    slow = analyze.predict_regimes

    def slow_predict(*args, **kwargs):
        time.sleep(0.3)  # stands for minutes of O(d^3) work
        return slow(*args, **kwargs)

    monkeypatch.setattr(analyze, "predict_regimes", slow_predict)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((30, 4)))
    res = invoke("analyze", tmp_path / "x.npy")
    assert res.exit_code == 0, res.output
    assert "d = 4; this takes about" in res.output and "so far" in res.output
    assert common.eigh_seconds(2000, probe=64) > 0


# ----------------------------------------------------------------------------- 7. smaller defects
def test_text_file_named_npy_gets_a_message_without_unsafe_advice(tmp_path):
    from nonrev.data.files import load_array

    (tmp_path / "t.npy").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError) as err:
        load_array(tmp_path / "t.npy")
    assert "allow_pickle" not in str(err.value) and ".csv" in str(err.value)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects") as err:
        load_array(tmp_path / "o.npy")
    assert "allow_pickle" not in str(err.value)


def test_a_header_that_announces_more_than_the_file_holds_is_refused_before_loading(tmp_path):
    from nonrev.data.files import load_array

    np.save(tmp_path / "x.npy", np.ones((5, 3)))
    blob = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "huge.npy").write_bytes(blob.replace(b"(5, 3)", b"(9999999999, 3)", 1)[: len(blob)])
    (tmp_path / "more.npy").write_bytes(blob.replace(b"(5, 3)", b"(9, 3)", 1))
    with pytest.raises(ValueError, match="needs .* GiB"):
        load_array(tmp_path / "huge.npy")
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_array(tmp_path / "more.npy")


def test_complex_matrices_with_imaginary_parts_are_refused():
    from nonrev.linalg import as_samples, as_spd
    from nonrev.process.ou import OUProcess

    U = np.eye(3) + 0.5j * np.eye(3)
    for check in (
        lambda: as_spd("U", U),
        lambda: OUProcess(U),
        lambda: as_samples("X", np.ones((4, 3)) * 1j),
    ):
        with pytest.raises(ValueError, match="must be real"):
            check()
    assert np.array_equal(as_spd("U", np.eye(3) + 0j), np.eye(3))


def test_continuous_labels_are_refused(tmp_path, data_file):
    from nonrev.data.files import load_labels

    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal(40))
    np.save(tmp_path / "ids.npy", np.arange(40))
    np.save(tmp_path / "codes.npy", np.repeat([0.0, 1.0], 20))
    with pytest.raises(ValueError, match="continuous"):
        load_labels(tmp_path / "f.npy", 40)
    with pytest.raises(ValueError, match="one sample each"):
        load_labels(tmp_path / "ids.npy", 40)
    assert load_labels(tmp_path / "codes.npy", 40).tolist() == [0.0] * 20 + [1.0] * 20
    assert_one_line(invoke("analyze", data_file, "--labels", tmp_path / "f.npy"), "continuous")


def test_more_dimensions_than_samples_warns(tmp_path):
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).standard_normal((6, 9)))
    res = invoke("analyze", tmp_path / "wide.npy", "--q", "none")
    assert res.exit_code == 0 and "warning:" in res.output and "d = 9" in res.output


def test_an_existing_empty_output_folder_is_accepted(tmp_path):
    from nonrev.outputs import atomic_dir

    out = tmp_path / "run"
    out.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ----------------------------------------------------------------------------- 8. leftovers
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_runs_leave_nothing_for_good(tmp_path):
    from nonrev.outputs import _host_tag, atomic_dir

    dead = tmp_path / f".run.partial-p{_dead_pid()}h{_host_tag()}-abc"
    live = tmp_path / f".run.partial-p{os.getpid()}h{_host_tag()}-def"
    other = tmp_path / f".other.partial-p{_dead_pid()}h{_host_tag()}-ghi"
    for p in (dead, live, other):
        p.mkdir()
        (p / "half.json").write_text("{")
    with atomic_dir(tmp_path / "run") as tmp:
        (tmp / "x").write_text("1")
    names = sorted(p.name for p in tmp_path.iterdir())
    # what dead writers left goes, whichever output it was for; a live writer's stays
    assert dead.name not in names and live.name in names and other.name not in names


def test_resume_removes_partial_weights_of_a_killed_write(tmp_path, checkpoint):
    import shutil

    from nonrev.training.loop import load_checkpoint

    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    stale = ck / ".weights-000000004.abc123.partial.safetensors"  # an older nonrev's name
    tagged = ck / f".weights-000000004.p{_dead_pid()}h0000abcd-x.partial.safetensors"
    stale.write_bytes(b"half")
    tagged.write_bytes(b"half")
    os.utime(tagged, (0, 0))  # from another host, long ago
    res = invoke("train", "--out", ck, "--resume", "--steps", 4)
    assert res.exit_code == 0, res.output
    assert not stale.exists() and not tagged.exists()
    assert load_checkpoint(ck).step == 4


def test_first_checkpoint_is_written_early(tmp_path, monkeypatch):
    import nonrev.training.loop as loop
    from nonrev.config import from_dict

    monkeypatch.setattr(loop, "FIRST_CHECKPOINT_S", 0.0)
    cfg = from_dict(loop.TrainConfig, {**TINY_TRAIN, "steps": 50, "checkpoint_minutes": 3.0})

    def killed(step, total, loss):
        if step == 3:
            raise KeyboardInterrupt  # stands for SIGKILL: no checkpoint written on the way out

    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, tmp_path / "ck", progress=killed)
    assert loop.load_checkpoint(tmp_path / "ck").step == 1


def test_sigterm_stops_training_with_a_checkpoint(tmp_path):
    import threading

    out = tmp_path / "ck"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nonrev.cli import main; main()",
            "train",
            "--data",
            "moons",
            "--steps",
            "1000000",
            "--out",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    err = bytearray()
    reader = threading.Thread(
        target=lambda: [err.extend(c) for c in iter(lambda: proc.stderr.read1(4096), b"")],
        daemon=True,
    )
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and b"/1000000" not in err:
            time.sleep(0.2)  # until the progress bar shows training steps
        proc.send_signal(signal.SIGTERM)
        out_text = proc.stdout.read().decode()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    assert proc.returncode == 143, bytes(err[-2000:]).decode(errors="replace")
    assert "--resume" in out_text
    from nonrev.training.loop import load_checkpoint

    assert load_checkpoint(out).step >= 1


def test_outputs_get_the_usual_permissions(tmp_path):
    from nonrev.outputs import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "run") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755


def test_a_long_sampler_run_reports_its_progress(monkeypatch, capsys):
    """A run past the heartbeat's delay says how far it is on stderr (sample's loop
    and the exact kernel's precompute); a short one stays silent."""
    import nonrev.progress as progress
    from nonrev import OUProcess, sample
    from nonrev.scores import GaussianMixtureScore

    proc = OUProcess(np.diag([0.5, 1.0, 2.0]))
    score = GaussianMixtureScore(proc, np.zeros((1, 3)), np.eye(3)[None])
    sample(score, proc, n=4, steps=50, method="ancestral")
    assert "nonrev:" not in capsys.readouterr().err
    monkeypatch.setattr(progress, "AFTER_S", 0.0)
    sample(score, proc, n=4, steps=50, method="ancestral")
    err = capsys.readouterr().err
    assert "nonrev: sample (ancestral): " in err and "of 50, t = " in err
    assert "nonrev: exact kernel on the grid: " in err


def test_training_with_a_current_too_stiff_to_sample_warns_before_it_starts():
    """`train --q gamma:1e10` used to train without a word (its samplers then refused
    it): the current is named in a warning before any training."""
    from nonrev import OUProcess, optimal_q
    from nonrev.process.stiffness import StiffCurrentWarning, warn_if_too_stiff

    U = np.diag([0.5, 1.0, 2.0])
    with pytest.warns(StiffCurrentWarning, match=r"--q gamma:1e10: the current Q"):
        assert warn_if_too_stiff(OUProcess(U, 1e10 * optimal_q(U)), 8.0, "--q gamma:1e10")
    assert not warn_if_too_stiff(OUProcess(U, optimal_q(U)), 8.0)


def test_the_finite_n_monte_carlo_reports_its_progress(monkeypatch, capsys):
    """`analyze --finite-n` ran minutes in silence at d = 256: its forward-path loop now
    reports on stderr once it runs past the heartbeat's delay."""
    import nonrev.progress as progress
    from nonrev import OUProcess
    from nonrev.regimes import collapse_time_finite

    monkeypatch.setattr(progress, "AFTER_S", 0.0)
    collapse_time_finite(OUProcess(np.eye(4)), np.eye(4), 50, seed=0)
    err = capsys.readouterr().err
    assert "nonrev: finite-N collapse (forward paths): " in err and "paths unlocked" in err
