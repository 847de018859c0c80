# One command to start the platform, one to run every test. CI (.ci/run) calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup serve test lint typecheck unit e2e-deps bench bench-smoke clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

serve: setup
	$(BIN)/squall standalone

e2e-deps:
	cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error

lint: setup
	$(BIN)/ruff check src tests $(wildcard bench)

typecheck: setup
	$(BIN)/mypy

test: setup e2e-deps lint typecheck
	$(BIN)/pytest -q -ra

bench: setup
	$(BIN)/python -m bench

bench-smoke: setup
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) tests/e2e/node_modules .pytest_cache .mypy_cache .ruff_cache
