"""What several ``nonrev`` commands share: the data options, the one error helper,
the threads option and the formatting of times. Command modules import this; it
imports no command."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

import click

from nonrev.config import SEED_MAX
from nonrev.errors import one_line

#: The value type of every --seed: what numpy, torch and scikit-learn all accept.
SEED = click.IntRange(min=0, max=SEED_MAX)


def count(minimum: int, maximum: int) -> click.IntRange:
    """The value type of an integer option: ``minimum..maximum``, so that an absurd
    value (``--steps 99999999999999999999``) is refused with the option's name
    before any work."""
    return click.IntRange(min=minimum, max=maximum)


#: Upper bounds of the integer options (far beyond any run that fits in memory).
MAX_STEPS = 10**9
MAX_SAMPLES = 10**7
MAX_N_TRAIN = 10**12
MAX_THREADS = 1024


def fail(error) -> "click.ClickException":
    """The ClickException that reports ``error`` (an exception or a text) in one line:
    ``raise fail(exc) from None``."""
    return click.ClickException(one_line(error))


def check_outputs(*outputs) -> None:
    """Check, before any work, that every output can be created: each item is
    ``(option, path, kwargs for nonrev.outputs.check_output)``, with None paths
    skipped. Raises the one-line ClickException of the first that cannot."""
    from nonrev.outputs import check_output

    for option, path, kwargs in outputs:
        if path is not None:
            try:
                check_output(path, option=option, **kwargs)
            except ValueError as exc:
                raise fail(exc) from None


def warn_shape(X, data: str) -> None:
    """Warn on stderr when the data have more dimensions than samples: the sample
    covariance is then singular (rank at most n - 1) and every prediction rests on
    the few directions the samples span."""
    n, d = X.shape
    if d > n:
        click.echo(
            f"warning: {data} has d = {d} dimensions but only n = {n} samples; the "
            f"sample covariance has rank at most {n - 1}, so the predictions rest on "
            f"{n - 1} of the {d} directions",
            err=True,
        )


#: Dimension from which the data commands announce their expected cost.
LARGE_D = 1000
#: Seconds between two "so far" lines of a long command.
HEARTBEAT_S = 15.0
#: O(d^3) steps (in units of one symmetric eigendecomposition of a d x d matrix) of
#: ``nonrev analyze`` with its default U and Q and two classes: the CPU-time ratio
#: measured by ``python -m benchmarks.large_d --d 5000`` (16.2).
ANALYZE_EIGH_UNITS = 16.0


def eigh_seconds(d: int, *, probe: int = 384) -> float:
    """Seconds one ``eigh`` of a d x d symmetric matrix takes here, extrapolated as
    d^3 from the fastest of three timed at ``probe`` (a fraction of a second each; the
    fastest, as one timing on a loaded machine moved the estimate by 40%)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((probe, probe))
    a = a + a.T
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.linalg.eigh(a)
        best = min(best, time.perf_counter() - t0)
    return best * (d / probe) ** 3


def announce_cost(X, data: str, units: float = ANALYZE_EIGH_UNITS) -> None:
    """For data with d >= :data:`LARGE_D`: print on stderr what the command will cost
    here (``units`` eigendecompositions of d x d matrices, timed on this machine) and
    then, until the command ends, the elapsed time every :data:`HEARTBEAT_S` seconds
    (the long steps are single LAPACK calls that show no progress of their own)."""
    from nonrev.data.files import check_dense_memory

    d = X.shape[1]
    check_dense_memory(d, data)  # refused before the estimate: it could not run at all
    warn_shape(X, data)
    if d < LARGE_D:
        return
    expected = units * eigh_seconds(d)
    click.echo(
        f"{data}: d = {d}; this takes about {_duration(expected)} here (dense d x d "
        f"linear algebra, O(d^3); {8 * d * d / 2**30:.2g} GiB per matrix)",
        err=True,
    )
    stop = _heartbeat("nonrev", time.monotonic(), HEARTBEAT_S)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(stop)


def _heartbeat(name: str, t0: float, every_s: float):
    done = threading.Event()

    def beat():  # every every_s at first, then less often (a quarter of the time so far)
        while not done.wait(max(every_s, 0.25 * (time.monotonic() - t0))):
            click.echo(f"  {name}: {_duration(time.monotonic() - t0)} so far", err=True)

    threading.Thread(target=beat, daemon=True).start()
    return done.set


def terminate_as_interrupt() -> None:
    """Handle SIGTERM (``kill``, a job scheduler, a container stop) like Ctrl-C, so
    that a stopped command cleans up as it does on KeyboardInterrupt (temporary
    output removed, checkpoint written) instead of dying at once."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@contextmanager
def user_errors(*types: type[BaseException]):
    """Report the ``types`` of errors (default ValueError) raised inside as one line,
    with exit code 1 and no traceback."""
    caught = types or (ValueError,)
    try:
        yield
    except caught as exc:
        raise fail(exc) from None


U_HELP = (
    "Noise precision U: identity; data (the inverse Ledoit-Wolf-shrunk covariance of "
    "the data, scaled to Tr(U)/d = 1); data:<k> (the same with its condition number "
    "capped at k); or FILE, a (d, d) SPD matrix (.npy/.npz/.csv)."
)
Q_HELP = (
    "optimal (the fastest relaxation, rate Tr(U)/d); gamma:<x> (x times the optimal "
    "current); rate:<x> (the fastest current whose norm is at most x times the "
    "optimal one's); or FILE, a (d, d) antisymmetric matrix."
)


def format_time(t: float) -> str:
    """A predicted time for a table; 0 means the criterion never holds."""
    return "0 (never)" if t == 0.0 else f"{t:.4g}"


def data_options(command):
    """The DATA argument and the --key, --labels, --labels-key options shared by the
    commands that read a user's data set (analyze, steer)."""
    decorators = [
        click.argument("data", type=click.Path(dir_okay=True, path_type=str)),
        click.option(
            "--key", default=None, metavar="NAME", help="Array to use in an .npz DATA file."
        ),
        click.option(
            "--labels",
            "labels_path",
            default=None,
            metavar="FILE",
            help="Class labels, one per sample (.npy/.npz/.csv/.txt). Without "
            "labels the total covariance plays the between-class covariance.",
        ),
        click.option(
            "--labels-key",
            default=None,
            metavar="NAME",
            help="Array to use in an .npz labels file.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


THREADS_HELP = (
    "CPU threads for torch and for numpy's BLAS. Small matrices and two thread "
    "pools (torch's and numpy's) contend on few cores, so 1 is the default; "
    "raise it on an idle machine with large problems (README: notes on "
    "performance)."
)


def threads_option(command):
    """The --threads option (default 1)."""
    return click.option(
        "--threads", type=count(1, MAX_THREADS), default=1, show_default=True, help=THREADS_HELP
    )(command)


def limit_threads(threads: int):
    """Set torch's threads; return a context that limits the BLAS/OpenMP pools too."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


def experiment_options(command):
    """The options of the commands that run an experiment into an output folder
    (demo, study): --overwrite, --seed, --device, --config and --print-config."""
    decorators = [
        click.option(
            "--overwrite",
            is_flag=True,
            help="Replace OUT if it exists (only once the new run has finished).",
        ),
        click.option("--seed", type=SEED, default=None, help="Overrides the config's seed."),
        click.option(
            "--device",
            default=None,
            help="torch device, e.g. cpu or cuda (default: the config's, cpu).",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="YAML or TOML file with any subset of the configuration keys.",
        ),
        click.option(
            "--print-config",
            is_flag=True,
            help="Print the configuration that would run (YAML) and exit.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command
