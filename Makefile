# Quick start: `make demo` builds the INT8 host bundle on embedded defaults; `make test` runs the tests.
# Both create .venv and install everything on first use (CPU torch from the pinned wheel, never a CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup demo test data

$(BIN)/python:
	$(PY) -m venv $(VENV)

# The stamp is redone whenever pyproject.toml changes.
$(VENV)/.setup-done: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[host,dev]"
	touch $@

setup: $(VENV)/.setup-done data

# Fashion-MNIST (Debian package, MIT): the labelled set behind the accuracy gates.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; fi

demo: $(VENV)/.setup-done
	$(BIN)/python deploy/build_engine.py --precision int8

test: setup
	$(BIN)/python -m pytest -q
