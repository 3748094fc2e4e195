"""Reports: figures and report.md from results dicts. Nothing here is imported by the
library below experiments; matplotlib's non-interactive backend is chosen inside the
functions that write files, never at import."""
