# Two entry points: `make demo` (the headline experiment) and `make test` (the suite).
# Each creates .venv and installs nonrev on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch; a bare `torch` would pull a multi-gigabyte CUDA build.
TORCH_CPU ?= torch==2.13.0

.PHONY: install demo test lint bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_CPU)
	$(BIN)/python -m pip install -q -e ".[test,diffusers,lint]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nonrev demo --quick --out runs/demo-quick --overwrite

# One BLAS/OpenMP thread per pytest worker: two workers on two cores, each with
# thread pools of its own, oversubscribe the machine and small torch ops then wait
# tens of milliseconds for descheduled threads (measured: 30x slower sampling).
test: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	$(BIN)/python -m pytest -q -n 2 tests

# ruff (lint and format check) over the code, tests, benchmarks and examples; mypy on
# the rooms listed in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks run --full

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks run --quick

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis
