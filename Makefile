# Everything a developer or CI needs; `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lint format typecheck unit packaging test chaos bench demo demo-down sync-crds lock control-plane-up control-plane-down binaries clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv with the project and its test dependencies

lint: $(STAMP) ## ruff lint and format check, and the import boundaries (lint-imports)
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/ruff check hack/bench.py hack/bench
	$(VENV)/bin/ruff format --check hack/bench.py hack/bench
	$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix operator tests hack/bench.py hack/bench
	$(VENV)/bin/ruff format operator tests hack/bench.py hack/bench

typecheck: $(STAMP) ## mypy --strict, the package and the tests
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests
	$(VENV)/bin/mypy --strict hack/bench.py

binaries: ## build (once) etcd, kube-apiserver, kubectl and helm into the cache
	hack/control-plane build

unit: $(STAMP) ## fast hermetic unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

packaging: $(STAMP) ## what ships: the Dockerfile replay, chart and manifests, the lock
	$(PY) -m pytest tests/packaging $(PYTEST_ARGS)

test: $(STAMP) lint typecheck binaries ## everything: lint, types, unit and real-API-server tests
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

chaos: $(STAMP) binaries ## the long fault-injection variants
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

demo: $(STAMP) binaries ## control plane + sandbox + operator + the example, shown reconciled (KEEP=1 leaves it running)
	KEEP=$(KEEP) hack/demo

demo-down: ## stop a demo left running with KEEP=1
	hack/demo down

sync-crds: ## copy crds/ into the Helm chart and deploy/ (crds/ is the single source)
	hack/sync-crds

UV_VERSION ?= 0.9.30
lock: $(STAMP) ## re-pin the image's dependencies with hashes (requirements.lock) from pyproject.toml
	$(PY) -m pip install -q 'uv==$(UV_VERSION)'
	$(PY) hack/lock

BENCH_ARGS ?= --resources 200 --instances 20 --resync 20 --rps 10 --json bench.json
bench: $(STAMP) binaries ## the benchmark (docs/performance.md); prints a table, writes bench.json
	$(PY) hack/bench $(BENCH_ARGS)

control-plane-up: binaries ## start etcd + kube-apiserver on loopback
	hack/control-plane up

control-plane-down: ## stop them
	hack/control-plane down

clean: ## remove the virtualenv and caches inside the repository
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
