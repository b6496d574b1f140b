# Two commands matter: `make demo` (the main job on the local platform) and `make test` (every check).
# Everything else is a building block of those two. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE ?= $(HOME)/.cache/chatmemory
UV_VERSION := 0.13.9
UV := $(CACHE)/uv-$(UV_VERSION)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
PLATFORM := python3 scripts/localplatform.py
# Point the tests at other servers by writing your own env file and setting this (see README).
export CHATMEMORY_PLATFORM_ENV ?= $(CURDIR)/.platform/env
PYTEST_ARGS ?=

.PHONY: help demo test test-faults bench lint check format crds platform-build platform-up platform-down platform-status venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(UV):
	@echo "[setup] installing uv $(UV_VERSION) from PyPI into $(CACHE)"
	python3 -m venv $(CACHE)/uv-$(UV_VERSION)
	$(CACHE)/uv-$(UV_VERSION)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml sdk/pyproject.toml operator/pyproject.toml
	@echo "[setup] installing the locked Python dependencies into $(VENV)"
	$(UV) sync --frozen --all-packages
	@touch $@

venv: $(VENV)/.synced  ## install the locked dependency set

lint: venv  ## ruff, mypy strict, import rules
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check sdk operator tests examples bench
	$(VENV)/bin/mypy sdk/src operator/src
	$(VENV)/bin/lint-imports

format: venv  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format sdk operator tests examples bench

crds: venv  ## regenerate crds/ and the chart's copy from the API models
	$(PY) -m chatmemory_operator.api.crdgen

platform-build:  ## install and build every server (cached under ~/.cache/chatmemory)
	$(PLATFORM) build

platform-up:  ## start the local platform on 127.0.0.1, endpoints in .platform/env
	$(PLATFORM) up

platform-down:  ## stop what platform-up started
	$(PLATFORM) down

platform-status:
	$(PLATFORM) status

# make test: bring the platform up if it isn't (unless an external env file is given), run every
# check, and leave the platform as it was found.
test: venv  ## every check: lint, types, unit, integration and e2e tests on real servers
	@started=0; \
	if [ "$(CHATMEMORY_PLATFORM_ENV)" = "$(CURDIR)/.platform/env" ] && ! $(PLATFORM) status -q; then \
	  $(PLATFORM) up || exit 1; started=1; \
	fi; \
	trap 'if [ $$started = 1 ]; then $(PLATFORM) down; fi' EXIT; \
	$(MAKE) --no-print-directory lint && \
	$(VENV)/bin/pytest tests -m "not faults" $(PYTEST_ARGS)

# make test-faults: the slow fault tier (servers paused, connections killed under load, about five
# minutes, failovers and an operator handover included); not in make test (about 13 minutes warm). .ci/run runs both.
test-faults: venv  ## the fault tier: a paused server, rotations under load with network blips
	@started=0; \
	if [ "$(CHATMEMORY_PLATFORM_ENV)" = "$(CURDIR)/.platform/env" ] && ! $(PLATFORM) status -q; then \
	  $(PLATFORM) up || exit 1; started=1; \
	fi; \
	trap 'if [ $$started = 1 ]; then $(PLATFORM) down; fi' EXIT; \
	$(VENV)/bin/pytest tests -m faults $(PYTEST_ARGS)

demo: venv  ## the main job: platform up, operator, one ChatMemory per backend, a conversation each
	@started=0; \
	if ! $(PLATFORM) status -q; then $(PLATFORM) up || exit 1; started=1; fi; \
	trap 'if [ $$started = 1 ] && [ -z "$$KEEP_PLATFORM" ]; then $(PLATFORM) down; fi' EXIT; \
	$(PY) -m examples.demo

# make bench: not part of make test. Installs the peers we compare against (the `bench` dependency
# group), runs bench/ against the platform and writes bench/results/latest.md (+ JSON, plot).
bench: venv  ## benchmarks: chatmemory side by side with LangChain's histories and checkpointers
	$(UV) sync --frozen --all-packages --group bench --inexact
	@started=0; \
	if [ "$(CHATMEMORY_PLATFORM_ENV)" = "$(CURDIR)/.platform/env" ] && ! $(PLATFORM) status -q; then \
	  $(PLATFORM) up || exit 1; started=1; \
	fi; \
	trap 'if [ $$started = 1 ]; then $(PLATFORM) down; fi' EXIT; \
	$(PY) -m bench $(BENCH_ARGS)
