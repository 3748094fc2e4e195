"""The ``nonrev`` command line: thin wrappers that parse, validate, call the library
and write outputs. Every error a user can cause is reported in one line with a
non-zero exit code, never a traceback."""

from __future__ import annotations

import click

from . import __version__


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
