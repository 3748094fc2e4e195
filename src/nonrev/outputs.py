"""Writing a run's outputs so that a failed or interrupted run leaves nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(out, *, overwrite: bool = False):
    """Yield a temporary folder beside ``out``; on success move it to ``out``.

    On any exception (KeyboardInterrupt included) the temporary folder is removed and
    ``out`` is left as it was. With ``overwrite``, an existing ``out`` is replaced only
    once the new contents are complete. Raises FileExistsError when ``out`` exists and
    ``overwrite`` is false (checked before any work).
    """
    out = Path(out)
    if out.exists() and not (overwrite and out.is_dir()):
        raise FileExistsError(f"{out}: already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Names of the temporary files of :func:`atomic_file` (hidden, marked ``.partial``);
#: a process killed outright (SIGKILL) can leave one behind.
PARTIAL_GLOB = ".*.partial*"


def remove_partials(folder) -> int:
    """Delete temporary files left in ``folder`` by killed writers; returns how many."""
    stale = list(Path(folder).glob(PARTIAL_GLOB))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path`` (same suffix, so format-by-extension
    writers work); on success it replaces ``path`` (after an fsync), on any exception
    it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj, *, indent: int = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    import json

    write_bytes(path, json.dumps(obj, indent=indent).encode())


def save_npy(path, array) -> None:
    """Save ``array`` (no pickled objects) as ``.npy`` at ``path`` atomically."""
    import numpy as np

    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
