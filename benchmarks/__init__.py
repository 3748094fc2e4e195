"""nonrev's benchmarks: each module exposes ``run(quick: bool) -> dict`` and is run by
``python -m benchmarks run --quick|--full`` (``make bench-quick`` / ``make bench``)."""
