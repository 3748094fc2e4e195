"""The package version, in the one place every room may import it from."""

__version__ = "0.1.0"
