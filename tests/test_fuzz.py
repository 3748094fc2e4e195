"""Fuzzing the inputs a user hands to nonrev (issue 17), with hypothesis.

Loaders (.npy, .npz, .csv, labels), config files (YAML with anchors, TOML, large
values), U and Q matrix files, and checkpoint folders (truncated, bit-flipped,
edited JSON). The property, for every input: either a valid result, or a
``ValueError`` whose message is one line, of bounded length, naming the input;
never another exception (a traceback on the command line), never more memory
than a bound (``tracemalloc`` peak per case, which numpy and torch report), never
a hang (hypothesis deadlines). ``test_fuzz_under_a_memory_limit`` reruns the
suite in a child process with its address space capped (``RLIMIT_AS``), where a
blow-up is a MemoryError. A few hundred cases in about a minute of CPU.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonrev.config import ConfigError, build
from nonrev.data.files import load_array, load_labels
from nonrev.experiments.headline import HeadlineConfig
from nonrev.process.spec import q_from_spec, u_from_spec
from nonrev.training.loop import CheckpointError, TrainConfig, load_checkpoint

#: Largest Python-side allocation one fuzz case may make (inputs are < 100 KB).
PEAK_BYTES = 64 * 2**20

FUZZ = settings(
    max_examples=int(os.environ.get("NONREV_FUZZ_EXAMPLES", "60")),
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

if os.environ.get("NONREV_FUZZ_RLIMIT_AS"):  # set by test_fuzz_under_a_memory_limit
    import resource

    _vm = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _cap = _vm + int(os.environ["NONREV_FUZZ_RLIMIT_AS"])
    resource.setrlimit(resource.RLIMIT_AS, (_cap, _cap))


@contextmanager
def bounded_memory():
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"peak allocation {peak / 2**20:.0f} MiB"


def check_outcome(call, *names, errors=(ValueError,)):
    """Run ``call``; a result is returned, an error must be one short line naming
    one of ``names``. Anything else (another exception type) fails the test."""
    with bounded_memory():
        try:
            return call()
        except errors as exc:
            msg = str(exc)
            assert "\n" not in msg and len(msg) < 600, msg[:1000]
            assert any(str(n) in msg for n in names), msg
            assert "allow_pickle" not in msg
            return None


# ----------------------------------------------------------------------------- bytes of files
def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_X = np.random.default_rng(0).standard_normal((12, 3))
GOOD_FILES = {
    ".npy": _npy_bytes(GOOD_X),
    ".npz": _npz_bytes(x=GOOD_X),
    ".csv": ("a,b,c\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in GOOD_X)).encode(),
}


@st.composite
def mutated(draw, blob: bytes):
    """``blob`` truncated, bit-flipped, with bytes inserted or replaced."""
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "replace"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[i:]
        elif op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def data_file(draw):
    suffix = draw(st.sampled_from(sorted(GOOD_FILES)))
    kind = draw(st.sampled_from(["mutated", "random", "header"]))
    if kind == "mutated":
        blob = draw(mutated(GOOD_FILES[suffix]))
    elif kind == "random":
        blob = draw(st.binary(max_size=300))
    else:  # a valid header announcing another shape or dtype
        shape = draw(st.tuples(st.integers(0, 10**12), st.integers(0, 10**6)))
        dtype = draw(st.sampled_from(["<f8", "<i4", "|b1", "<c16", "<U3", "|O"]))
        header = {"descr": dtype, "fortran_order": False, "shape": shape}
        text = repr(header).encode()
        text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
        blob = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"\0" * 64
        suffix = ".npy"
    return suffix, blob


@given(data_file())
@FUZZ
def test_data_loader(tmp_path, case):
    suffix, blob = case
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(blob)
    X = check_outcome(lambda: load_array(path), path.name)
    if X is not None:
        assert X.dtype == np.float64 and X.ndim == 2 and X.shape[0] >= 2 and X.shape[1] >= 2
        assert np.all(np.isfinite(X))


csv_text = st.text(alphabet='0123456789.,-+eE\n naifNAIF"x;', max_size=200)


@given(csv_text)
@FUZZ
def test_csv_loader(tmp_path, text):
    path = tmp_path / "fuzz.csv"
    path.write_text(text)
    X = check_outcome(lambda: load_array(path), path.name)
    if X is not None:
        assert X.ndim == 2 and np.all(np.isfinite(X))


label_values = st.one_of(
    st.lists(st.integers(-3, 3), min_size=12, max_size=12).map(np.array),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=12, max_size=12).map(
        np.array
    ),
    st.lists(st.text(max_size=3), min_size=12, max_size=12).map(np.array),
    st.lists(st.integers(0, 2), min_size=0, max_size=20).map(np.array),
)


@given(label_values, st.sampled_from([".npy", ".csv", ".txt"]))
@FUZZ
def test_label_loader(tmp_path, labels, suffix):
    path = tmp_path / f"labels{suffix}"
    if suffix == ".npy":
        np.save(path, labels, allow_pickle=False)
    else:
        path.write_text("\n".join(str(v) for v in labels.tolist()))
    y = check_outcome(lambda: load_labels(path, 12), path.name)
    if y is not None:
        assert y.shape == (12,) and np.unique(y).size < 12  # never one class per sample


# ----------------------------------------------------------------------------- U and Q files
matrices = st.one_of(
    st.integers(1, 5).flatmap(
        lambda d: st.lists(
            st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=d * d, max_size=d * d
        ).map(lambda v: np.array(v).reshape(d, d))
    ),
    st.just(np.eye(3) + 0.5j * np.eye(3)),
    st.just(np.zeros((3, 3))),
    st.just(np.ones((3, 4))),
    st.just(np.eye(3) * 1e-300),
    st.just(np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])),
)


@given(matrices, st.sampled_from([".npy", ".csv"]))
@FUZZ
def test_u_and_q_matrix_files(tmp_path, M, suffix):
    path = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(path, M)
    else:
        np.savetxt(path, np.atleast_2d(M.real), delimiter=",")
    X = np.random.default_rng(1).standard_normal((20, 3))
    U = check_outcome(lambda: u_from_spec(str(path), X), "--u")
    if U is not None:
        assert np.all(np.linalg.eigvalsh(U) > 0)
    Q = check_outcome(lambda: q_from_spec(str(path), np.eye(3)), "--q")
    if Q is not None:
        assert np.allclose(Q[1], -Q[1].T)


# ----------------------------------------------------------------------------- config files
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "dim",
    "seed",
    "gammas",
    "device",
    "spectrum_min",
    "collapse",
    "speciation",
    "steering",
    "nonsense",
]
SUBKEYS = ["dim", "n_train", "n_traj", "n_mc", "dt", "n_pairs", "branch_factors", "enabled"]


@st.composite
def config_text(draw):
    fmt = draw(st.sampled_from(["yaml", "yaml-anchors", "toml"]))
    doc = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4, unique=True)):
        if key in ("collapse", "speciation", "steering"):
            doc[key] = {
                k: draw(values)
                for k in draw(st.lists(st.sampled_from(SUBKEYS), max_size=3, unique=True))
            }
        else:
            doc[key] = draw(values)
    if fmt == "toml":
        lines = []
        for k, v in doc.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {json.dumps(v)}")
        for k, v in doc.items():
            if isinstance(v, dict):
                lines.append(f"[{k}]")
                lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
        return "toml", draw(mutated("\n".join(lines).encode())) if draw(
            st.booleans()
        ) else "\n".join(lines).encode()
    text = yaml.safe_dump(doc)
    if fmt == "yaml-anchors":  # a chain of anchors, each repeating the previous one
        width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 12))
        chain = ["x0: &x0 [1, 2, 3]"] + [
            f"x{k}: &x{k} [" + ", ".join([f"*x{k - 1}"] * width) + "]" for k in range(1, depth)
        ]
        key = draw(st.sampled_from(["dim", "device", "gammas", "seed"]))
        text = "\n".join(chain) + f"\n{key}: *x{depth - 1}\n"
    return "yaml", text.encode()


@given(config_text())
@FUZZ
def test_config_files(tmp_path, case):
    fmt, blob = case
    path = tmp_path / f"fuzz.{fmt}"
    path.write_bytes(blob)
    check_outcome(
        lambda: build(HeadlineConfig, HeadlineConfig(), path),
        "fuzz.",
        "dim",
        "seed",
        "gammas",
        "device",
        "spectrum",
        "collapse",
        "speciation",
        "steering",
        "unknown key",
        errors=(ConfigError,),
    )


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from nonrev.config import from_dict
    from nonrev.training.loop import train

    folder = tmp_path_factory.mktemp("fuzzck")
    cfg = from_dict(
        TrainConfig,
        dict(
            data="moons",
            n_points=200,
            hidden=8,
            depth=1,
            emb_dim=4,
            batch_size=16,
            time_groups=4,
            n_times=20,
            t_max=4.0,
            checkpoint_minutes=0.0,
            warmup=2,
            steps=2,
        ),
    )
    train(cfg, folder)
    return folder


def _leaf_paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _leaf_paths(v, prefix + (k,))
    elif isinstance(obj, list) and obj:
        yield prefix + (0,)
        yield from _leaf_paths(obj[0], prefix + (0,))


@st.composite
def checkpoint_edit(draw, doc):
    kind = draw(st.sampled_from(["json-bytes", "json-value", "weights-bytes", "config"]))
    if kind == "json-value":
        paths = sorted(_leaf_paths(doc), key=str)
        return kind, draw(st.sampled_from(paths)), draw(values)
    if kind == "config":
        key = draw(
            st.sampled_from(
                [
                    "hidden",
                    "depth",
                    "emb_dim",
                    "n_times",
                    "network",
                    "u",
                    "q",
                    "t_max",
                    "precondition",
                ]
            )
        )
        big = {"hidden": 16384, "depth": 256, "emb_dim": 16384, "n_times": 100_000}
        return kind, ("config", key), draw(st.one_of(st.just(big.get(key, 3)), values))
    return kind, None, draw(st.integers(0, 2**32))


@given(st.data())
@FUZZ
def test_checkpoints(tmp_path, checkpoint, data):
    folder = tmp_path / "ck"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(checkpoint, folder)
    doc = json.loads((folder / "checkpoint.json").read_text())
    kind, path, payload = data.draw(checkpoint_edit(doc))
    if kind == "json-bytes":
        blob = (folder / "checkpoint.json").read_bytes()
        (folder / "checkpoint.json").write_bytes(data.draw(mutated(blob)))
    elif kind == "weights-bytes":
        wfile = folder / doc["weights"]["file"]
        wfile.write_bytes(data.draw(mutated(wfile.read_bytes())))
    else:
        target = doc
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = payload
        (folder / "checkpoint.json").write_text(json.dumps(doc))
    model = check_outcome(lambda: load_checkpoint(folder), str(folder), errors=(CheckpointError,))
    if model is not None:
        assert model.step >= 0


# ----------------------------------------------------------------------------- samplers (issue 23)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from([0.0, 1e-300, 1e300, -1.0, 2.0**62]),
)
matrices = st.one_of(
    st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=2, max_size=2),
    values,
    st.sampled_from([np.eye(2), -np.eye(2), 1e300 * np.eye(2), np.zeros((2, 2)), np.eye(3)]),
)
vectors = st.one_of(
    st.lists(numbers, min_size=2, max_size=2), values, st.sampled_from([np.zeros(2), np.ones(3)])
)
grids = st.one_of(
    st.lists(numbers, max_size=6),
    values,
    st.sampled_from([np.linspace(1e-3, 2.0, 4), [0.0, 1.0], [1.0, 0.5, 0.1]]),
)
#: The sampler and scheduler cases each build coefficients: fewer of them.
FUZZ_FEW = settings(FUZZ, max_examples=max(5, FUZZ.max_examples // 3))
SAMPLER_NAMES = (
    "times",
    "prior",
    "method",
    "t_min",
    "steps",
    "T",
    "mean",
    "cov",
    "start",
    "maxiter",
    "objective",
)


@pytest.fixture(scope="module")
def small_problem():
    from nonrev import OUProcess, optimal_q
    from nonrev.scores import GaussianMixtureScore

    U = np.diag([0.5, 1.5])
    proc = OUProcess(U, optimal_q(U))
    return proc, GaussianMixtureScore(
        proc, np.array([[2.0, 0.0], [-2.0, 0.0]]), np.stack([0.1 * np.eye(2)] * 2)
    )


@given(
    times=grids,
    prior=st.one_of(st.none(), values, st.tuples(vectors, matrices)),
    method=st.sampled_from(
        ["ancestral", "ddim", "gddim", "dpmpp_2m", "heun", "euler_maruyama", "dpm"]
    ),
)
@FUZZ_FEW
def test_sampler_times_and_prior(small_problem, monkeypatch, times, prior, method):
    import torch

    from nonrev import sample
    from nonrev.process import stiffness

    # a prior's frame may legitimately need 1e5 Magnus steps (minutes, with progress);
    # here the integrations past 3000 steps are refused, naming Q / prior
    monkeypatch.setattr(stiffness, "MAX_STEPS", 3000)

    proc, score = small_problem
    out = check_outcome(
        lambda: sample(
            score,
            proc,
            n=3,
            times=times,
            prior=prior,
            method=method,
            generator=torch.Generator().manual_seed(0),
        ),
        *SAMPLER_NAMES,
    )
    if out is not None:
        assert out[0].shape == (3, 2)


@given(
    mean=vectors,
    cov=matrices,
    method=st.sampled_from(["gddim", "dpmpp_2m", "heun", "x"]),
    steps=st.one_of(st.integers(-2, 4), st.just(10**12), st.booleans(), numbers),
    T=st.one_of(st.none(), numbers),
    t_min=st.one_of(st.just(1e-3), numbers),
    optimise=st.booleans(),
)
@FUZZ_FEW
def test_gaussian_error_and_optimise_grid(
    small_problem, mean, cov, method, steps, T, t_min, optimise
):
    from nonrev.samplers import gaussian_error, optimise_grid

    proc, _ = small_problem
    if optimise:
        out = check_outcome(
            lambda: optimise_grid(proc, mean, cov, method, steps, T=T, t_min=t_min, maxiter=2),
            *SAMPLER_NAMES,
        )
        if out is not None:
            assert np.all(np.diff(out) > 0)
            gaussian_error(proc, mean, cov, method, times=out)  # the result is usable
    else:
        out = check_outcome(
            lambda: gaussian_error(proc, mean, cov, method, steps=steps, T=T, t_min=t_min),
            *SAMPLER_NAMES,
        )
        if out is not None:
            assert out["w2"] >= 0


# ----------------------------------------------------------------------------- diffusers scheduler
SCHEDULER_FIELDS = (
    "U",
    "Q",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "method",
    "timestep_spacing",
    "steps_offset",
    "alphas_cumprod",
    "beta schedule",
)
scheduler_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "U": st.one_of(matrices, st.just(np.eye(4))),
        "Q": st.one_of(st.none(), matrices),
        "num_train_timesteps": st.one_of(
            st.integers(-2, 60), st.just(10**9), st.booleans(), numbers
        ),
        "beta_start": numbers,
        "beta_end": numbers,
        "beta_schedule": st.one_of(
            st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]), st.text(max_size=8)
        ),
        "trained_betas": st.one_of(st.none(), values, st.lists(numbers, max_size=4)),
        "prediction_type": st.sampled_from(["epsilon", "sample", "v_prediction"]),
        "method": st.sampled_from(["ancestral", "gddim", "dpmpp_2m", "ddim", "heun"]),
        "timestep_spacing": st.sampled_from(["leading", "linspace", "trailing", "random"]),
        "steps_offset": st.one_of(st.integers(-3, 100), numbers),
    },
)


@given(
    kwargs=scheduler_kwargs,
    n_steps=st.one_of(st.integers(-1, 70), numbers),
    dtype=st.sampled_from(["float32", "float64", "int64", "uint8", "bool"]),
    shape=st.sampled_from([(2, 1, 2, 2), (2, 4), (2, 5), (0, 4), (4,)]),
    timesteps=st.one_of(st.integers(-5, 70), st.lists(st.integers(-5, 70), max_size=3), numbers),
)
@FUZZ_FEW
def test_scheduler_surfaces(kwargs, n_steps, dtype, shape, timesteps):
    import torch

    pytest.importorskip("diffusers")
    from nonrev.integrations.diffusers import NonReversibleScheduler

    kwargs = {"U": np.eye(4), "num_train_timesteps": 30, **kwargs}
    s = check_outcome(lambda: NonReversibleScheduler(**kwargs), *SCHEDULER_FIELDS)
    if s is None:
        return
    x = torch.ones(shape).to(getattr(torch, dtype))
    check_outcome(lambda: s.add_noise(x, x, timesteps), "original_samples", "noise", "timesteps")
    if (
        check_outcome(
            lambda: s.set_timesteps(n_steps), "num_inference_steps", "timesteps", "Q", "spacing"
        )
        is None
        and s.num_inference_steps is None
    ):
        return
    check_outcome(lambda: s.step(x, s.timesteps[0], x), "sample", "model_output", "timestep")
    check_outcome(lambda: s.step(x, timesteps, x), "sample", "model_output", "timestep", "dpmpp_2m")


@pytest.fixture(scope="module")
def saved_scheduler(tmp_path_factory):
    pytest.importorskip("diffusers")
    from nonrev import optimal_q
    from nonrev.integrations.diffusers import NonReversibleScheduler

    folder = tmp_path_factory.mktemp("sched")
    U = np.diag([0.5, 1.0, 1.5])
    NonReversibleScheduler(U=U, Q=optimal_q(U), num_train_timesteps=20).save_pretrained(folder)
    return folder


@given(st.data())
@FUZZ
def test_scheduler_files(tmp_path, saved_scheduler, data):
    from nonrev.integrations.diffusers import NonReversibleScheduler

    folder = tmp_path / "s"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(saved_scheduler, folder)
    name = data.draw(st.sampled_from(["nonrev_process.safetensors", "scheduler_config.json"]))
    blob = (folder / name).read_bytes()
    new = data.draw(mutated(blob))
    (folder / name).write_bytes(new)
    out = check_outcome(lambda: NonReversibleScheduler.from_pretrained(folder), str(folder))
    assert (out is None) == (new != blob)


# ----------------------------------------------------------------------------- under a limit
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_fuzz_under_a_memory_limit():
    """The suite again in a child whose address space may grow by 1 GiB at most:
    any blow-up becomes a MemoryError, which the property rejects."""
    # the same (derandomized) cases as the suite's own run: at 40 examples hypothesis
    # drew a checkpoint whose config asks n_times = 1e5, whose legitimate tables (over
    # 100 MiB) exceed the per-case bound, and shrinking it ran past the timeout
    env = {
        **os.environ,
        "NONREV_FUZZ_RLIMIT_AS": str(2**30),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            __file__,
            "-k",
            "not memory_limit",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).parent.parent,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
