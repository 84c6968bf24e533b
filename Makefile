# Quick start: `make demo` (set up, evaluate the bundled example) and
# `make test` (set up, run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/cdss: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/cdss

setup: $(BIN)/cdss

demo: setup
	$(BIN)/cdss evaluate examples/case-diabetic-ckd.yaml --as-of last

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check engine cli.py tests bench
	$(BIN)/mypy
