"""The ``nonrev`` command line: one module per command, shared options and one error
helper. Nothing outside this package imports it."""

from nonrev.cli.main import main

__all__ = ["main"]
