"""Thread pools inside nonrev's own loops: one thread per pool by default.

nonrev's samplers, kernels and coefficient builds alternate small operations between
numpy/scipy (OpenBLAS, d x d matrices per time) and torch (MKL/OpenMP, a batch per
step). Each library keeps its own pool of worker threads, and each pool's workers
spin for a while after every call waiting for the next one; on a machine with few
cores (or one shared with other jobs) the two pools then take the cores from each
other and from the main thread, and every small operation waits for a descheduled
worker. Measured on the README's worked example (2 cores, a fresh interpreter,
``benchmarks/threads.py``): about 80x slower with the default pools than with
``OMP_NUM_THREADS=1``; limiting only one of the two libraries is not enough (both
pools must be limited).

:func:`limited` (a context manager) and :func:`single_threaded` (a decorator) scope
that limit to nonrev's entry points: inside them both pools (numpy's and scipy's
BLAS through threadpoolctl, torch's intra-op threads, which also drive its MKL) use
:func:`get_threads` threads, and the caller's settings are restored on exit. Nested
entry points take the limit once. The number comes from :func:`set_threads`, else
the environment variable ``NONREV_THREADS``, else 1 (the CLI's ``--threads``
default); ``set_threads(None)`` (or ``NONREV_THREADS=none``) leaves the pools alone,
e.g. on a large idle machine with big networks.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager

__all__ = ["get_threads", "limited", "set_threads", "single_threaded"]

ENV_VAR = "NONREV_THREADS"
_UNSET = object()
_setting = _UNSET  # set_threads(); _UNSET: read the environment
_local = threading.local()
_controller = None


def _parse(value, name: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or 'none', got {value!r}")
    return value


def set_threads(n: int | None) -> None:
    """Threads per pool inside nonrev's entry points (``None``: leave the pools as the
    caller set them). Overrides ``NONREV_THREADS``."""
    global _setting
    _setting = _parse(n, "threads")


def get_threads() -> int | None:
    """The current limit: :func:`set_threads`, else ``NONREV_THREADS``, else 1."""
    if _setting is not _UNSET:
        return _setting
    raw = os.environ.get(ENV_VAR)
    return 1 if raw is None else _parse(raw, ENV_VAR)


def _pools():
    # One controller for the process: looking the loaded libraries up costs about a
    # millisecond, too much for every call of a sampler.
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextmanager
def limited(n=_UNSET):
    """Run the block with ``n`` threads in numpy's/scipy's BLAS and in torch
    (default :func:`get_threads`); restore the caller's settings afterwards. Inside
    another ``limited`` block (of this thread) it does nothing."""
    n = get_threads() if n is _UNSET else _parse(n, "threads")
    if n is None or getattr(_local, "depth", 0) > 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    _local.depth = 1
    try:
        with _pools().limit(limits=n):
            if before != n:
                torch.set_num_threads(n)
            try:
                yield
            finally:
                if torch.get_num_threads() != before:
                    torch.set_num_threads(before)
    finally:
        _local.depth = 0


def single_threaded(fn):
    """Decorator: ``fn`` runs inside :func:`limited`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with limited():
            return fn(*args, **kwargs)

    return wrapper
