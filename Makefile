# Two commands set up a fresh clone and run:  `make test`  and  `make train`.
# Each creates the virtualenv $(VENV) (CPU JAX by default) and installs what it needs.
# Accelerators: `make test JAX_EXTRA=cuda12` (NVIDIA GPUs) or `make train JAX_EXTRA=tpu`.

PYTHON ?= python3
VENV ?= .venv
JAX_EXTRA ?=
BIN := $(VENV)/bin
comma := ,
EXTRA_SUFFIX := $(if $(JAX_EXTRA),$(comma)$(JAX_EXTRA),)
PYTEST_ARGS ?=

.PHONY: test train lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.train-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[train$(EXTRA_SUFFIX)]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test$(EXTRA_SUFFIX)]"
	touch $@ $(VENV)/.train-installed

test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

train: $(VENV)/.train-installed
	$(BIN)/python train.py --workdir runs/default $(TRAIN_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/bench_ssim.py

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
