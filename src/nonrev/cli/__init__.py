"""The ``nonrev`` command line: one module per command, the shared options and the one
error helper in :mod:`.common`. Nothing outside this package imports it.

Every error a user can cause is reported in one line with a non-zero exit code,
never a traceback. SIGTERM is handled like Ctrl-C (temporary outputs removed, a
training checkpoint written)."""

import click

from nonrev.cli.analyze import analyze
from nonrev.cli.common import terminate_as_interrupt
from nonrev.cli.demo import demo
from nonrev.cli.sample import sample
from nonrev.cli.steer import steer
from nonrev.cli.study import study
from nonrev.cli.sweep import sweep
from nonrev.cli.train import train
from nonrev.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nonrev")
def main():
    """Diffusion models with non-reversible forward processes.

    The forward process is dx = -(I+Q) U x dt + sqrt(2) dW: U (symmetric positive
    definite) fixes the noise law N(0, U^-1) and the antisymmetric current Q adds
    rotating probability flux. nonrev predicts and measures when the backward
    dynamics commits to a class (speciation) and falls onto training points
    (collapse), for any U and Q.
    """
    terminate_as_interrupt()  # SIGTERM cleans up like Ctrl-C in every command


for _command in (analyze, demo, steer, sweep, train, sample, study):
    main.add_command(_command)

__all__ = ["main"]
