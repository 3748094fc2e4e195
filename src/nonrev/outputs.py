"""Writing a run's outputs so that a failed or interrupted run leaves nothing half-written.

* :func:`check_output` checks, before any work, that an output file or folder can be
  created where the user asked (one-line :class:`OutputError` naming the option);
* :func:`atomic_dir` and :func:`atomic_file` write into a hidden temporary folder or
  file beside the target and move it into place only on success;
* temporary names carry the writer's pid and host (``.<name>.partial-p<pid>h<host>-…``),
  so that what a killed writer (SIGKILL) left behind is recognised and removed by the
  next writer into the same folder: every writer here (:func:`atomic_file` and all
  that use it, :func:`atomic_dir`) first calls :func:`clean_folder` on its folder,
  never removing the files of a writer that is still running;
* everything is created with the permissions of the process's umask (like ``open``
  and ``mkdir``), not the 0600 / 0700 of :mod:`tempfile`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


class OutputError(ValueError):
    """An output location that cannot be used (one-line message naming the option)."""


# ----------------------------------------------------------------------------- ownership tags
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner_tag() -> str:
    """``p<pid>h<host hash>``: who writes a temporary file or folder."""
    return f"p{os.getpid()}h{_host_tag()}"


_TAG = re.compile(r"\.(?:partial|old)-?p(\d+)h([0-9a-f]{8})-|\.p(\d+)h([0-9a-f]{8})-[^/]*\.partial")

#: Temporary files or folders older than this are stale whoever wrote them (a tag
#: from another host, or none: written by an older nonrev).
STALE_AFTER_S = 24 * 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(path) -> bool:
    """Whether the temporary ``path`` was left by a writer that is gone: its tag names
    a process of this host that no longer runs, or it is older than
    :data:`STALE_AFTER_S` (untagged, or written on another host)."""
    path = Path(path)
    m = _TAG.search(path.name)
    if m:
        pid, host = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        if host == _host_tag():
            return int(pid) != os.getpid() and not _pid_alive(int(pid))
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- permissions
def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # pragma: no cover - not Linux
    os.umask(old)
    return old


def _usual_mode(path: Path, *, folder: bool) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would (0666 / 0777 less the umask)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


# ----------------------------------------------------------------------------- checks
def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe_folder(folder: Path, option: str, shown: Path) -> None:
    """OutputError unless a file can be created in the existing ``folder``."""
    if not folder.is_dir():
        raise OutputError(f"{option} {shown}: {folder} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{_owner_tag()}-", suffix=".partial-probe", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(
            f"{option} {shown}: cannot write in {folder} ({exc.strerror or type(exc).__name__})"
        ) from None


def check_output(
    path,
    *,
    option: str = "--out",
    folder: bool = False,
    overwrite: bool = False,
    suffixes: tuple[str, ...] = (),
    parents: bool = True,
) -> Path:
    """Check, before any work, that the output ``path`` can be created; return it.

    ``folder``: ``path`` is an output folder; it may be new, an existing empty
    folder or (``overwrite``) an existing folder. Otherwise ``path`` is a file: it
    may be new or an existing file (replaced), not a folder; ``suffixes`` lists the
    accepted extensions. The nearest existing parent must be a folder in which a
    file can be created (tried with a hidden probe file, removed at once; the
    missing parents are created only when the output is written; with ``parents``
    false the parent folder must exist already). Raises
    :class:`OutputError` (a ValueError) naming ``option``.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {path}: must end in {' or '.join(suffixes)}")
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option} {path}: exists and is not a folder")
        if (
            path.is_dir()
            and not overwrite
            and any(not p.name.startswith(".") or not is_stale(p) for p in path.iterdir())
        ):
            raise OutputError(
                f"{option} {path}: already exists and is not empty; choose a new "
                "folder or pass --overwrite"
            )
    elif path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    if not parents and not path.parent.is_dir():
        raise OutputError(f"{option} {path}: folder {str(path.parent)!r} does not exist")
    _probe_folder(_existing_ancestor(path.parent), option, path)
    if folder and path.is_dir():
        _probe_folder(path, option, path)
    return path


# ----------------------------------------------------------------------------- writers
def remove_stale(folder, name: str | None = None) -> int:
    """Delete the temporary files and folders in ``folder`` (those of target ``name``
    only, when given) that killed writers left (:func:`is_stale`); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    pattern = f".{name}.*" if name is not None else ".*"
    n = 0
    for p in folder.glob(pattern):
        if (".partial" in p.name or ".old-" in p.name) and is_stale(p):
            _remove(p)
            n += 1
    return n


_CLEANED: set = set()


def clean_folder(folder) -> int:
    """Remove the temporary files and folders that killed writers left in ``folder``
    (:func:`remove_stale`: tagged by a process of this host that is gone, or older
    than :data:`STALE_AFTER_S`); returns how many. Called by every writer before it
    writes, once per folder and process (a later writer of the same process finds
    nothing new of its own: its temporary files are removed by the writer itself)."""
    try:
        key = str(Path(folder).resolve())
    except OSError:
        return 0
    if key in _CLEANED:
        return 0
    n = remove_stale(folder)
    _CLEANED.add(key)
    return n


@contextmanager
def atomic_dir(out, *, overwrite: bool = False, option: str = "--out"):
    """Yield a temporary folder beside ``out``; on success move it to ``out``.

    On any exception (KeyboardInterrupt included) the temporary folder is removed and
    ``out`` is left as it was. ``out`` may be new or an existing empty folder; with
    ``overwrite``, an existing ``out`` is replaced only once the new contents are
    complete. Checked before any work (:func:`check_output`): OutputError (a
    ValueError) when ``out`` exists and is not empty without ``overwrite``, or cannot
    be created. Stale temporary folders of ``out`` left by killed runs are removed.
    """
    out = check_output(out, option=option, folder=True, overwrite=overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent, out.name)
        clean_folder(out.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{_owner_tag()}-", dir=out.parent))
        _usual_mode(tmp, folder=True)
    except OSError as exc:
        raise OutputError(f"{option} {out}: cannot be created ({exc.strerror or exc})") from None
    try:
        yield tmp
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{_owner_tag()}-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # a new name, or an empty folder (replaced by rename)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Names of the temporary files of :func:`atomic_file` (hidden, marked ``.partial``);
#: a process killed outright (SIGKILL) can leave one behind.
PARTIAL_GLOB = ".*.partial*"


def remove_partials(folder) -> int:
    """Delete temporary files left in ``folder`` by killed writers; returns how many.

    A file whose name tags a writer of this host that still runs is kept."""
    stale = [
        p
        for p in Path(folder).glob(PARTIAL_GLOB)
        if not p.is_dir() and (not _TAG.search(p.name) or is_stale(p))
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path`` (same suffix, so format-by-extension
    writers work); on success it replaces ``path`` (after an fsync), on any exception
    it is removed and ``path`` is left as it was. The file gets the usual
    permissions (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_folder(path.parent)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.{_owner_tag()}-", suffix=f".partial{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        _usual_mode(tmp, folder=False)
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
