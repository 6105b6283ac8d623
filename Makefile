# connect-collector: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## run: the collector on its embedded defaults (embedded Postgres + built-in simulator)
run: $(STAMP)
	$(BIN)/collector serve --sandbox

## test: lint, type-check and the whole test suite against a real Postgres
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check collector tests

typecheck: $(STAMP)
	$(BIN)/mypy collector

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
