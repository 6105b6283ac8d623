# connect-collector: `make run` and `make test` do all the set-up on a fresh machine.
#   make run [PORT=8081]   runtime dependencies only, then the sandbox service
#   make test              + test tools (and promtool, from Debian's prometheus package, and chromium,
#                          from Debian's chromium package, if missing); ruff, mypy and the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# --no-compile: byte-compiling every dependency at install time costs more than compiling
# the modules a run actually imports, on first import.
PIP_INSTALL ?= $(PIP) install -q --no-compile --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-stamp
STAMP  := $(VENV)/.installed-stamp
PORT   ?=
# The embedded-Postgres smoke subset (.ci/run runs it with COLLECTOR_TEST_DATABASE_URL unset).
SMOKE  ?= tests/test_storage.py tests/test_packaging.py tests/test_end_to_end.py tests/test_write_races.py \
          tests/test_faults.py::test_database_connections_dropped_mid_collection \
          tests/test_cli_errors.py::test_sandbox_removes_its_temporary_config

.PHONY: run test lint typecheck unit unit-fast smoke-embedded wheel-check bench soak clean promtool chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

## the runtime dependencies and the package (editable), nothing for tests
$(RUNTIME_STAMP): pyproject.toml setup.py | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

## + the test and lint tools
$(STAMP): $(RUNTIME_STAMP)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

## run: the collector on its embedded defaults (embedded Postgres + built-in simulator)
run: $(RUNTIME_STAMP)
	$(BIN)/collector serve --sandbox $(if $(PORT),--port $(PORT))

## test: lint, type-check and the whole test suite against a real Postgres
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check collector tests .ci

typecheck: $(STAMP)
	$(BIN)/mypy collector tests

unit: $(STAMP) promtool chromium
	$(BIN)/pytest

## promtool (tests/test_ops.py runs the alert rules' unit tests with it): Debian's prometheus
## package ships it; installed when missing, with sudo only when not root. Nothing else needs it.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "promtool not found: installing Debian's prometheus package (it ships promtool)"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus && \
	  command -v promtool >/dev/null; }

## chromium (tests/test_wallboard_browser.py drives it headless with Playwright, from the dev
## extras; Playwright's own browser download is never used): Debian's chromium package,
## installed when missing, with sudo only when not root. Where it cannot be installed the
## suite still runs and that one test skips, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found: installing Debian's chromium package (the wallboard's browser test)"; \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  { $$SUDO apt-get update -q && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium && \
	    command -v chromium >/dev/null; } || \
	  echo "WARNING: chromium could not be installed: tests/test_wallboard_browser.py will skip"; }

## unit-fast: the fast tier alone (in-memory fakes; no Postgres, no simulator), in seconds
unit-fast: $(STAMP)
	$(BIN)/pytest -m unit tests/unit

## smoke-embedded: a smoke subset on the embedded Postgres (as on a fresh machine)
smoke-embedded: $(STAMP)
	env -u COLLECTOR_TEST_DATABASE_URL $(BIN)/pytest $(SMOKE)

## wheel-check: build the wheel, install it (not editable) in a fresh venv, migrate, collect
wheel-check: $(STAMP)
	$(BIN)/python .ci/wheel_check.py

bench: $(STAMP)
	$(BIN)/python -m bench

## soak: replicas under faults for a few minutes, then every slice checked (not in make test)
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .data build .pytest_cache .mypy_cache .ruff_cache
