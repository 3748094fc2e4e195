"""What several ``nonrev`` commands share: the data options, the one error helper,
the threads option and the formatting of times. Command modules import this; it
imports no command."""

from __future__ import annotations

from contextlib import contextmanager

import click

from nonrev.errors import one_line


def fail(error) -> "click.ClickException":
    """The ClickException that reports ``error`` (an exception or a text) in one line:
    ``raise fail(exc) from None``."""
    return click.ClickException(one_line(error))


@contextmanager
def user_errors(*types: type[BaseException]):
    """Report the ``types`` of errors (default ValueError) raised inside as one line,
    with exit code 1 and no traceback."""
    try:
        yield
    except types or (ValueError,) as exc:
        raise fail(exc) from None


def format_time(t: float) -> str:
    """A predicted time for a table; 0 means the criterion never holds."""
    return "0 (never)" if t == 0.0 else f"{t:.4g}"


def data_options(command):
    """The DATA argument and the --key, --labels, --labels-key options shared by the
    commands that read a user's data set (analyze, steer)."""
    decorators = [
        click.argument("data", type=click.Path(dir_okay=True, path_type=str)),
        click.option("--key", default=None, metavar="NAME",
                     help="Array to use in an .npz DATA file."),
        click.option("--labels", "labels_path", default=None, metavar="FILE",
                     help="Class labels, one per sample (.npy/.npz/.csv/.txt). Without "
                          "labels the total covariance plays the between-class covariance."),
        click.option("--labels-key", default=None, metavar="NAME",
                     help="Array to use in an .npz labels file."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


THREADS_HELP = ("CPU threads for torch and for numpy's BLAS. Small matrices and two thread "
                "pools (torch's and numpy's) contend on few cores, so 1 is the default; "
                "raise it on an idle machine with large problems (README: notes on "
                "performance).")


def threads_option(command):
    """The --threads option (default 1)."""
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        help=THREADS_HELP)(command)


def limit_threads(threads: int):
    """Set torch's threads; return a context that limits the BLAS/OpenMP pools too."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)
