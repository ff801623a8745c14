# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A demo key so `make run` works out of the box; it is printed at start. Never use it in production.
DEMO_KEY ?= recwatch-demo-key-change-me

.PHONY: run test venv lint send bench docs system-deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

## Start the service with the demo key (callback :8080, admin :8081).
run: venv
	GME_RECWATCH_SECRET_KEY="$${GME_RECWATCH_SECRET_KEY:-$(DEMO_KEY)}" $(BIN)/gme-recwatch serve --demo

## Send one signed demo callback to a service started with `make run`.
send: venv
	$(BIN)/gme-recwatch send --url http://127.0.0.1:8080/callback --secret "$${GME_RECWATCH_SECRET_KEY:-$(DEMO_KEY)}"

## Install the test dependencies and run every test (Prometheus tests skip if it is missing, except under CI=true).
test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mypy

## Regenerate the README's configuration and metrics tables from the code.
docs: venv
	$(BIN)/python tools/readme_tables.py --write

## Benchmarks (results and method in BENCHMARKS.md).
bench: venv
	bash benchmarks/run_all.sh

## System packages the tests and benchmarks use (Debian): Prometheus/promtool and wrk.
system-deps:
	bash .ci/system-deps

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
