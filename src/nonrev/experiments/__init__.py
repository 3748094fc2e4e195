"""Experiments: each a function from a validated config to a plain results dict
(JSON-serialisable), so that reports and sweeps only consume results."""

from nonrev.experiments.headline import HeadlineConfig, quick_config, run_headline

__all__ = ["HeadlineConfig", "quick_config", "run_headline"]
