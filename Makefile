# Two commands for a fresh machine: `make run` (the service's own dependencies only) and
# `make test` (those plus the test and lint tools).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The demo key `make send` signs with: the one `serve --demo` uses when no key is set
# (gme_recwatch.settings.DEMO_KEY, which tests/test_cli.py checks it against). Never use it anywhere real.
DEMO_KEY ?= recwatch-demo-key-change-me
# The BizID (AppID) `make send` sends as; with GME_RECWATCH_KEYS_FILE it signs with that app's key.
BIZ_ID ?= 1400000000

# Every Python package comes from uv.lock (exact versions and hashes), installed by uv. A fresh
# machine has only python3 and pip, so uv itself is fetched with pip, at this version, into
# $(TOOLS); nothing is installed outside the checkout.
# renovate: datasource=pypi depName=uv
UV_VERSION ?= 0.13.9
TOOLS ?= .tools
UV := $(TOOLS)/uv-$(UV_VERSION)/bin/uv
# Trust the machine's CA store, as pip, curl and git do here: that is where a corporate or
# proxy CA lives. Use the python3 given above and never download another interpreter.
export UV_SYSTEM_CERTS ?= 1
export UV_PYTHON_DOWNLOADS ?= never
export UV_PROJECT_ENVIRONMENT := $(VENV)

# `make image`: the tag, and optionally the base image, the engine (docker, podman, buildah),
# and NO_CACHE=1 to build every step again.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' src/gme_recwatch/__init__.py)
IMAGE ?= gme-recwatch:$(VERSION)
BASE ?=
ENGINE ?=
NO_CACHE ?=

# Every Python tree `make lint` checks and `make format` formats.
PY_TREES := src tests benchmarks tools docker dashboards

.PHONY: format run test mutants venv venv-runtime lint lock upgrade send bench docs image system-deps clean

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
		--target $(TOOLS)/uv-$(UV_VERSION) uv==$(UV_VERSION)

# Two stamps, each true of what is installed: `.runtime` = the service's dependencies,
# `.dev` = those and the `dev` group (test and lint tools, ~6x the size). `make run` syncs
# without the dev group and `--inexact`, so after `make test` it removes nothing and the `.dev`
# stamp stays true; `make test` syncs exactly (runtime + dev), which keeps `.runtime` true too.
# The dev sync also writes the bytecode of every installed package: a Python that may not write
# it (PYTHONDONTWRITEBYTECODE, set on some machines) otherwise compiles some 600 modules from
# source at every start, about 0.6 s of CPU for each `gme-recwatch serve` the tests start (half
# of its start) and each test worker; it costs 6 s once. `make run` skips it: a first run is
# ready 2 s sooner without it, and its venv stays 101 MB, not 141 (BENCHMARKS.md, section 9).
$(BIN)/.runtime: pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --no-dev --inexact --python $(PYTHON)
	touch $@

$(BIN)/.dev: pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	touch $@ $(BIN)/.runtime

## The service's dependencies only (what `make run` needs).
venv-runtime: $(BIN)/.runtime

## Everything: the service and the test and lint tools (what `make test` and `make lint` need).
venv: $(BIN)/.dev

## Start the service in demo mode: the demo key unless one is set, deadlines of seconds
## (callback :8080, admin :8081; GME_RECWATCH_PORT=... moves it, for `make send` too).
run: venv-runtime
	$(BIN)/gme-recwatch serve --demo

## Send one signed demo callback to a service started with `make run` (same port and key variables:
## GME_RECWATCH_SECRET_KEY, or GME_RECWATCH_KEYS_FILE with the key of BIZ_ID, else the demo key).
send: venv-runtime
	$(BIN)/gme-recwatch send --url "http://127.0.0.1:$${GME_RECWATCH_PORT:-8080}$${GME_RECWATCH_CALLBACK_PATH:-/callback}" \
		--biz-id $(BIZ_ID) $(if $(GME_RECWATCH_SECRET_KEY)$(GME_RECWATCH_KEYS_FILE),,--secret "$(DEMO_KEY)")

# The tests run on a worker per core and one more (pytest-xdist; most end-to-end tests wait on
# real processes); the tests of a module that share a module-scoped fixture stay on one worker
# (tests/conftest.py). `make test XDIST=` runs them in one process.
XDIST ?= -n auto --dist loadgroup
## Install the test dependencies and run every test (Prometheus tests skip if it is missing, except under CI=true).
test: venv
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

## Mutation check of the lifecycle rules (both copies): every mutant must fail a test (tools/mutants.py).
mutants: venv
	$(BIN)/python tools/mutants.py --jobs 2 $(MUTANTS_ARGS)

## ruff (lint and format, checked: `make format` rewrites) and mypy --strict on src.
lint: venv
	$(BIN)/ruff check $(PY_TREES)
	$(BIN)/ruff format --check $(PY_TREES)
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format $(PY_TREES)
	$(BIN)/ruff check --fix $(PY_TREES)

## After editing dependencies in pyproject.toml: resolve them again into uv.lock.
lock: $(UV)
	$(UV) lock

## Move every locked package to the newest release its range allows (Renovate does this weekly).
upgrade: $(UV)
	$(UV) lock --upgrade

## Regenerate the configuration and metrics tables of docs/ from the code.
docs: venv-runtime
	$(BIN)/python tools/readme_tables.py --write

## Benchmarks (results and method in BENCHMARKS.md); PROFILE=1 adds py-spy and a profile.
bench: venv
	$(if $(PROFILE),$(UV) sync --locked --python $(PYTHON) --group profile)
	bash benchmarks/run_all.sh

## Build the container image with whichever of docker, podman or buildah works here.
image:
	IMAGE="$(IMAGE)" BASE="$(BASE)" ENGINE="$(ENGINE)" NO_CACHE="$(NO_CACHE)" bash tools/build-image.sh

## System packages the tests and benchmarks use (Debian): Prometheus/promtool, wrk, redis, buildah.
system-deps:
	bash .ci/system-deps

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
