# Two commands set up a fresh clone and run:  `make test`  and  `make train`.
# Each creates the virtualenv $(VENV) (CPU JAX by default) and installs what it needs.
# Accelerators: `make test JAX_EXTRA=cuda12` (NVIDIA GPUs) or `make train JAX_EXTRA=tpu`.
# Then use that environment with `. .venv/bin/activate` (or call `.venv/bin/python` directly).
#
# Other targets: `make lint` (ruff + mypy), `make docs` (HTML in docs/_build/html),
# `make notebooks` (installs what the notebooks need), `make wheel-smoke` (builds the sdist and
# wheel and tries the wheel in a fresh venv), `make floors` (the core tests against the lowest
# declared dependency versions, in $(FLOORS_VENV)).

PYTHON ?= python3
VENV ?= .venv
JAX_EXTRA ?=
BIN := $(VENV)/bin
comma := ,
EXTRA_SUFFIX := $(if $(JAX_EXTRA),$(comma)$(JAX_EXTRA),)
PYTEST_ARGS ?=
SPHINXOPTS ?=
FLOORS_VENV ?= .venv-floors

.PHONY: test test-slow test-all train lint typecheck format bench docs notebooks wheel-smoke floors clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.train-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[train$(EXTRA_SUFFIX)]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test$(EXTRA_SUFFIX)]"
	touch $@ $(VENV)/.train-installed

$(VENV)/.docs-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[docs$(EXTRA_SUFFIX)]"
	touch $@ $(VENV)/.train-installed

$(VENV)/.notebooks-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[notebooks$(EXTRA_SUFFIX)]"
	touch $@ $(VENV)/.train-installed

$(VENV)/.release-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[release]"
	touch $@

# `make test`: lint and every test not marked slow (a few minutes on 2 cores);
# `make test-slow`: the slow ones (training runs, subprocesses, notebooks, experiments,
# Pallas in interpret mode, meshes; see tests/conftest.py); `make test-all`: both at once.
test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --durations=15 -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.test-installed
	$(BIN)/python -m pytest -n 2 --durations=15 -m slow $(PYTEST_ARGS)

test-all: $(VENV)/.test-installed
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
	$(BIN)/python -m mypy

typecheck: $(VENV)/.test-installed
	$(BIN)/python -m mypy

# HTML docs in docs/_build/html; CI passes SPHINXOPTS="-W --keep-going" (warnings fail).
docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -b html $(SPHINXOPTS) docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

notebooks: $(VENV)/.notebooks-installed
	@echo "notebooks: run  $(BIN)/jupyter lab notebooks/  (or $(BIN)/jupyter nbconvert --execute)"

wheel-smoke: $(VENV)/.release-installed
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/wheel_smoke.sh

floors: $(VENV)/.release-installed
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/floors.sh $(FLOORS_VENV)

format: $(VENV)/.test-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(FLOORS_VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info dist \
		docs/_build docs/api docs/notebooks
