"""Sweeps: one experiment over a grid of parameters, cell by cell, resumable.

A sweep file (YAML or TOML) names an experiment of
:mod:`nonrev.experiments.registry`, the parameters every cell shares and the ones
that vary, either as a grid (the cartesian product of the listed values) or as an
explicit list of cells::

    experiment: regime
    fixed: {dim: 8, n_train: 300}
    grid:
      gamma: [0.0, 0.5, 1.0]
      direction: [slow, fast]

Each cell is identified by a stable hash of the experiment name and its resolved
parameters (every key of the experiment's config, defaults included), so the same
computation always has the same id, whatever the order or spelling of the file.

The output folder::

    DIR/sweep.json           the experiment, the varying keys and every cell (id, params)
    DIR/cells/<id>.json      one record per finished cell: status "ok" with its results,
                             or "failed" with the error; each written atomically
    DIR/results.parquet      one row per cell: parameters, scalar results (arrays are
    DIR/results.csv          left in the cell files), status, error, runtime
    DIR/*.png                figures, for experiments that have them

Running a sweep again into the same folder runs only the cells without an "ok"
record: a sweep killed at any point loses no finished cell and repeats none. Cell
records are written by the driving process (also on Ray: workers need no shared
disk), one file per cell, each with a temporary file and ``os.replace``.

Backends: ``local`` runs cells in this process (one worker) or in a pool of
spawned processes; ``ray`` runs each cell as a Ray task, on a Ray instance started
here on the loopback address or on an existing cluster (``address``). A cell asks
Ray for one GPU when its ``device`` parameter is a CUDA device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from nonrev.config import ConfigError, check_field, from_dict, load_file, to_dict
from nonrev.errors import one_line
from nonrev.experiments.registry import get_experiment, run_experiment
from nonrev.outputs import OutputError, atomic_file, check_output, remove_partials, write_json
from nonrev.version import __version__

SWEEP_KEYS = ("experiment", "fixed", "grid", "cells")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BACKENDS = ("ray", "local")


class SweepError(RuntimeError):
    """A sweep that cannot run as asked (output folder, backend), one-line message."""


@dataclass(frozen=True)
class Cell:
    """One cell: ``id`` (stable hash), ``params`` (every config key, resolved) and
    ``label`` (the varying parameters, for messages)."""

    id: str
    params: dict
    label: str


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the experiment, the keys that vary and the cells in order."""

    experiment: str
    varying: tuple[str, ...]
    cells: tuple[Cell, ...]


# ----------------------------------------------------------------------------- the sweep file
def cell_id(experiment: str, params: dict) -> str:
    """``<experiment>-<12 hex digits>``: a hash of the experiment name and ``params``
    (JSON with sorted keys, so the order of keys does not matter)."""
    blob = json.dumps({"experiment": experiment, "params": params}, sort_keys=True)
    return f"{experiment}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "(no varying keys)"


def parse_sweep(data: dict) -> Sweep:
    """Validate a sweep read from a file; ConfigError naming the key on any problem."""
    if not isinstance(data, dict):
        raise ConfigError("sweep: must be a mapping with keys experiment, fixed, grid or cells")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]} (valid keys: {', '.join(SWEEP_KEYS)})")
    if "experiment" not in data:
        raise ConfigError("experiment: missing (the name of the experiment to run, e.g. regime)")
    exp = get_experiment(data["experiment"])
    cls = exp.config_class

    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"fixed: must be a mapping of keys to values, got {fixed!r}")
    fixed = {k: check_field(cls, k, v, key=f"fixed.{k}") for k, v in fixed.items()}

    if ("grid" in data) == ("cells" in data):
        raise ConfigError(
            "grid, cells: give exactly one of them (grid: lists of values "
            "whose cartesian product is swept; cells: a list of parameter sets)"
        )
    if "grid" in data:
        raw = data["grid"]
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(
                f"grid: must be a non-empty mapping of keys to lists of values, got {raw!r}"
            )
        grid = {}
        for k, values in raw.items():
            if k not in {f.name for f in dataclasses.fields(cls)}:
                check_field(cls, k, None, key=f"grid.{k}")  # raises: unknown key grid.<k>
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{k}: must be a non-empty list of values, got {values!r}")
            if k in fixed:
                raise ConfigError(f"grid.{k}: also set in fixed; set it in one place")
            grid[k] = [check_field(cls, k, v, key=f"grid.{k}[{i}]") for i, v in enumerate(values)]
            seen = [json.dumps(v) for v in grid[k]]
            for i, v in enumerate(seen):
                if v in seen[:i]:
                    raise ConfigError(f"grid.{k}[{i}]: repeats the value {grid[k][i]!r}")
        varying = tuple(grid)
        combos = [dict(zip(varying, vals)) for vals in itertools.product(*grid.values())]
        where = [f"grid cell {_label(c)}" for c in combos]
    else:
        cells = data["cells"]
        if not isinstance(cells, list) or not cells:
            raise ConfigError(f"cells: must be a non-empty list of mappings, got {cells!r}")
        combos = []
        for i, c in enumerate(cells):
            if not isinstance(c, dict):
                raise ConfigError(f"cells[{i}]: must be a mapping of keys to values, got {c!r}")
            for k in c:
                if k in fixed:
                    raise ConfigError(f"cells[{i}].{k}: also set in fixed; set it in one place")
            combos.append({k: check_field(cls, k, v, key=f"cells[{i}].{k}") for k, v in c.items()})
        varying = tuple(dict.fromkeys(k for c in combos for k in c))
        where = [f"cells[{i}]" for i in range(len(combos))]

    out, ids = [], {}
    for combo, place in zip(combos, where):
        try:
            params = to_dict(from_dict(cls, {**fixed, **combo}))
        except ConfigError as exc:
            raise ConfigError(f"{place}: {exc}") from None
        cid = cell_id(exp.name, params)
        if cid in ids:
            raise ConfigError(f"{place}: same parameters as {ids[cid]}")
        ids[cid] = place
        out.append(Cell(cid, params, _label({k: params[k] for k in varying})))
    return Sweep(exp.name, varying, tuple(out))


def load_sweep(path) -> Sweep:
    """Read and validate a sweep file (.yaml, .yml or .toml)."""
    return parse_sweep(load_file(path))


# ----------------------------------------------------------------------------- one cell
def run_cell(experiment: str, params: dict, threads: int = 1) -> dict:
    """Run one cell with ``threads`` BLAS/torch threads; return its record.

    An exception in the experiment does not propagate: the record then has
    ``status = "failed"``, ``error`` (one line) and ``traceback``. Runs in whichever
    process executes the cell (this one, a pool worker or a Ray worker).
    """
    import torch
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    before = torch.get_num_threads()
    record = {"host": socket.gethostname(), "versions": {"nonrev": __version__}}
    try:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            results = run_experiment(experiment, params)
        json.dumps(results)  # a results dict must be JSON-serialisable
        record.update(status="ok", results=results)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        record.update(
            status="failed",
            error=one_line(f"{type(exc).__name__}: {exc}"),
            traceback=traceback.format_exc(),
        )
    finally:
        torch.set_num_threads(before)
    record["runtime_s"] = time.perf_counter() - t0
    return record


# ----------------------------------------------------------------------------- backends
def die_with_parent(parent_pid: int, *, poll_s: float = 1.0) -> None:
    """Make this process end when process ``parent_pid`` (its parent) ends, even by
    SIGKILL: the initializer of the local backend's pool workers.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl
    PR_SET_PDEATHSIG``); everywhere a daemon thread also checks every ``poll_s``
    seconds that the parent is still the same process, and exits otherwise (the
    worker has then been re-parented). A worker whose parent is already gone
    exits at once.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="nonrev-parent-watch", daemon=True).start()


#: The watchdog process of :func:`reaper` (standard library only, started with ``-c``):
#: it remembers every descendant of the sweep's process (pid and start time, read
#: from /proc twice a second) and, when its pipe from that process reaches EOF
#: without the goodbye byte a normal end writes (the process died: only the kernel
#: closed the pipe), SIGKILLs those that still run (and were not replaced by a new
#: process with the same pid).
_REAPER = r"""
import os, select, signal, sys
parent = int(sys.argv[1])
me = os.getpid()

def table():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    rest = fh.read().rsplit(b")", 1)[1].split()
                out[int(name)] = (int(rest[1]), rest[19])
            except (OSError, IndexError, ValueError):
                pass
    return out

def descendants(tab, root):
    kids = {}
    for pid, (ppid, _) in tab.items():
        kids.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for pid in kids.get(todo.pop(), ()):
            if pid != me:
                found.append(pid)
                todo.append(pid)
    return found

known = {}
while True:
    ready, _, _ = select.select([0], [], [], 0.5)
    if ready:
        message = os.read(0, 64)
        if b"q" in message:
            sys.exit(0)  # a normal end: the sweep said goodbye
        if not message:
            break  # EOF without goodbye: the sweep's process died
    tab = table()
    known.update({pid: tab[pid][1] for pid in descendants(tab, parent)})
tab = table()
for pid, st in known.items():
    if tab.get(pid, (0, None))[1] == st:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


@contextlib.contextmanager
def reaper():
    """While inside, a watchdog process (:data:`_REAPER`) ends every process this
    one has started, directly or not (pool workers, Ray's raylet, agents and
    workers), as soon as this process dies, even by SIGKILL. Linux (/proc) only;
    elsewhere a no-op."""
    if not os.path.isdir("/proc/self"):
        yield
        return
    import subprocess

    read_end, write_end = os.pipe()  # not inherited by the processes started later
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-S", "-c", _REAPER, str(os.getpid())],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    try:
        yield
    finally:
        os.write(write_end, b"q")  # goodbye: a normal end, kill nothing
        os.close(write_end)
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            watchdog.kill()


def _run_local(experiment: str, cells: list[Cell], workers: int, threads: int) -> Iterator:
    """Yield ``(cell, record)`` as cells finish: in this process when ``workers`` is
    1, else in a pool of ``workers`` spawned processes, which end with this one
    (:func:`die_with_parent`) however it ends."""
    if workers == 1:
        for cell in cells:
            yield cell, run_cell(experiment, cell.params, threads)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures = {pool.submit(run_cell, experiment, c.params, threads): c for c in cells}
        for fut in as_completed(futures):
            try:
                record = fut.result()
            except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                record = {"status": "failed", "error": one_line(f"worker process died: {exc}")}
            yield futures[fut], record
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise SweepError(
            f"--backend ray: Ray cannot be imported ({exc}); install it with "
            "pip install ray, or use --backend local"
        ) from None
    return ray


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _check_reachable(address: str) -> None:
    """SweepError unless something accepts a TCP connection at ``address``
    (``host:port``); Ray itself would retry for minutes."""
    try:
        port = int(address.rpartition(":")[2])
        socket.create_connection((_host(address), port), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise SweepError(
            f"--address {address}: no Ray cluster answers there ({exc}); start "
            "one with 'ray start --head --port PORT' and pass HOST:PORT"
        ) from None


def _run_ray(
    experiment: str, cells: list[Cell], workers: int | None, threads: int, address: str | None
) -> Iterator:
    """Yield ``(cell, record)`` as Ray tasks finish.

    Without ``address``: a Ray instance started here, on 127.0.0.1 only, without
    dashboard, with ``workers`` CPUs (default: all), shut down at the end. With
    ``address`` (``host:port`` of ``ray start --head``): that cluster, with at most
    ``workers`` cells in flight when given. Workers get ``threads`` BLAS/OpenMP
    threads through their environment.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage anywhere
    if address is None or _is_loopback(_host(address)):
        # A Ray instance on this machine's loopback address: keep that address (on
        # Linux Ray otherwise replaces 127.0.0.1 with the address of the outgoing
        # interface). Read when ray is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = _import_ray()
    env = {"env_vars": {v: str(threads) for v in THREAD_VARS}}
    started = False
    if not ray.is_initialized():
        import logging

        common = dict(runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        if address is not None:
            try:
                ray.init(address=address, **common)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise SweepError(
                    f"--address {address}: cannot join a Ray cluster there ({one_line(exc)})"
                ) from None
        else:
            ray.init(
                address="local",
                num_cpus=workers or os.cpu_count(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **common,
            )
            node = ray.util.get_node_ip_address()
            if not ipaddress.ip_address(node).is_loopback:
                ray.shutdown()
                raise SweepError(
                    f"--backend ray: the Ray instance took the address {node}, not "
                    "the loopback address (was ray imported before nonrev.sweep.core "
                    "ran? set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 first)"
                )
        started = True
    try:
        task = ray.remote(run_cell)
        limit = workers if (address is not None and workers) else len(cells)
        queue, pending = list(cells), {}
        while queue or pending:
            while queue and len(pending) < limit:
                cell = queue.pop(0)
                opts = {"num_cpus": threads}
                if str(cell.params.get("device", "cpu")).startswith("cuda"):
                    opts["num_gpus"] = 1
                pending[task.options(**opts).remote(experiment, cell.params, threads)] = cell
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died, not the experiment
                    record = {"status": "failed", "error": one_line(f"{type(exc).__name__}: {exc}")}
                yield cell, record
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- files
def read_record(out, cell: Cell) -> dict | None:
    """The record of ``cell`` in sweep folder ``out``, or None when there is none
    (or it cannot be read, or belongs to other parameters)."""
    path = Path(out) / "cells" / f"{cell.id}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("params") != cell.params:
        return None
    return record


@contextlib.contextmanager
def _locked(out: Path):
    """Hold an exclusive lock on ``out`` (released when the process ends, even when
    it is killed), so that two sweeps never write into one folder at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"--out {out}: another nonrev sweep is writing there") from None
        yield


def _prepare(out: Path, sweep: Sweep, resume: bool) -> None:
    """Check that ``out`` is new, empty or holds this sweep (any sweep with
    ``resume``), create it and record the sweep in ``out/sweep.json``."""
    spec = out / "sweep.json"
    try:  # creatable and writable, before any work (contents are checked below)
        check_output(out, folder=True, overwrite=True)
    except OutputError as exc:
        raise SweepError(str(exc)) from None
    if out.is_dir() and not spec.is_file():
        if any(p.name != ".lock" for p in out.iterdir()):
            raise SweepError(
                f"--out {out}: exists and holds no sweep (no sweep.json); "
                "choose a new or empty folder"
            )
    elif spec.is_file() and not resume:
        try:
            old = json.loads(spec.read_text())
            same = sorted(c["id"] for c in old["cells"]) == sorted(c.id for c in sweep.cells)
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            raise SweepError(
                f"--out {out}: holds a different sweep; pass --resume to run this "
                "one there (its finished cells with the same parameters are "
                "kept), or choose a new folder"
            )
    (out / "cells").mkdir(parents=True, exist_ok=True)


def _record_sweep(out: Path, sweep: Sweep) -> None:
    write_json(
        out / "sweep.json",
        {
            "experiment": sweep.experiment,
            "varying": list(sweep.varying),
            "cells": [{"id": c.id, "params": c.params} for c in sweep.cells],
        },
    )


def _flatten(d: dict, prefix: str = "") -> dict:
    """Scalars of a nested dict under dotted keys; lists and arrays are left out."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[prefix + k] = v
    return out


def sweep_table(out, sweep: Sweep):
    """A pandas DataFrame with one row per cell of ``sweep``, in sweep order:
    ``cell_id``, ``status`` (ok, failed or missing), the varying then the fixed
    parameters (list values as JSON text), the scalar results (nested keys dotted;
    a result named like a parameter gets the prefix ``result.``), ``runtime_s`` and
    ``error``."""
    import pandas as pd

    rows = []
    for cell in sweep.cells:
        record = read_record(out, cell) or {"status": "missing"}
        params = {k: cell.params[k] for k in sweep.varying}
        params.update({k: v for k, v in cell.params.items() if k not in params})
        row = {"cell_id": cell.id, "status": record["status"]}
        row.update({k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items()})
        for k, v in _flatten(record.get("results") or {}).items():
            row[f"result.{k}" if k in row else k] = v
        row["runtime_s"] = record.get("runtime_s")
        row["error"] = record.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(out, sweep: Sweep):
    """Write ``out/results.parquet`` and ``out/results.csv`` (atomically); return the table."""
    out = Path(out)
    table = sweep_table(out, sweep)
    with atomic_file(out / "results.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_file(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


# ----------------------------------------------------------------------------- the engine
@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the table, the number of cells run now, of cells
    found finished, and of failed cells in the table."""

    table: object
    n_run: int
    n_reused: int
    n_failed: int


def run_sweep(
    sweep: Sweep,
    out,
    *,
    backend: str = "ray",
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    resume: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_cell: Callable[[Cell, dict], None] | None = None,
) -> SweepOutcome:
    """Run the cells of ``sweep`` that have no "ok" record in ``out``, then write the
    table (figures are drawn by :mod:`nonrev.reports.sweep`).

    ``backend``: ``"ray"`` or ``"local"``; ``address``: an existing Ray cluster;
    ``workers``: parallel cells (default: every CPU; ``local`` with 1 runs in this
    process); ``threads``: BLAS/torch threads per cell; ``resume``: accept an ``out``
    that holds a different sweep. ``on_start(n_cells, n_finished)`` is called once
    before the cells run, ``on_cell(cell, record)`` after each, once its record is
    on disk. Raises SweepError when ``out`` or the backend cannot be used.
    """
    if backend not in BACKENDS:
        raise SweepError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise SweepError("--address: joins a Ray cluster; use it with --backend ray")
    if address is not None:
        _check_reachable(address)
    out = Path(out)
    _prepare(out, sweep, resume)
    with _locked(out):
        _record_sweep(out, sweep)
        if (out / "cells").is_dir():
            remove_partials(out / "cells")  # left by a killed run
        finished = {c.id for c in sweep.cells if (read_record(out, c) or {}).get("status") == "ok"}
        todo = [c for c in sweep.cells if c.id not in finished]
        if on_start is not None:
            on_start(len(sweep.cells), len(finished))
        if todo:
            if backend == "local":
                runs = _run_local(sweep.experiment, todo, workers or os.cpu_count() or 1, threads)
            else:
                runs = _run_ray(sweep.experiment, todo, workers, threads, address)
            with (
                reaper()
                if (backend == "ray" or (workers or os.cpu_count() or 1) > 1)
                else contextlib.nullcontext()
            ):
                for cell, record in runs:
                    record = {
                        "cell_id": cell.id,
                        "experiment": sweep.experiment,
                        "params": cell.params,
                        **record,
                    }
                    write_json(out / "cells" / f"{cell.id}.json", record)
                    if on_cell is not None:
                        on_cell(cell, record)
        table = write_table(out, sweep)
    return SweepOutcome(table, len(todo), len(finished), int((table["status"] != "ok").sum()))


def experiment_columns(sweep: Sweep) -> tuple[str, ...]:
    """The result columns that a summary of ``sweep`` shows."""
    return get_experiment(sweep.experiment).columns


__all__ = [
    "Cell",
    "Sweep",
    "SweepError",
    "SweepOutcome",
    "cell_id",
    "load_sweep",
    "parse_sweep",
    "read_record",
    "run_cell",
    "run_sweep",
    "sweep_table",
    "write_table",
]
