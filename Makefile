# Everything a developer or CI needs; `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lint format typecheck unit process packaging test e2e chaos bench demo demo-down sync-crds lock control-plane-up node-up control-plane-down binaries node-binaries image actionlint promtool argocd-binary clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv with the project and its test dependencies

# hack/control-plane, hack/argocd and hack/bench are thin launchers of the hack/controlplane and
# hack/argocdlib packages and of hack/bench.py: all are checked.
HACK_PY := hack/devkit hack/controlplane hack/control-plane hack/argocdlib hack/argocd hack/bench.py hack/bench hack/memory_peak.py hack/kopf_object_cost.py

lint: $(STAMP) ## ruff lint and format check, and the import boundaries (lint-imports)
	$(VENV)/bin/ruff check operator tests $(HACK_PY)
	$(VENV)/bin/ruff format --check operator tests $(HACK_PY)
	$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix operator tests $(HACK_PY)
	$(VENV)/bin/ruff format operator tests $(HACK_PY)

typecheck: $(STAMP) ## mypy --strict, the package, the tests and hack/control-plane
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests/unit
	$(VENV)/bin/mypy tests/cluster tests/process tests/packaging
	$(VENV)/bin/mypy hack/devkit hack/controlplane hack/control-plane
	$(VENV)/bin/mypy hack/argocdlib hack/argocd
	$(VENV)/bin/mypy --strict hack/bench.py hack/memory_peak.py hack/kopf_object_cost.py

binaries: ## build (once) etcd, kube-apiserver, kubectl and helm into the cache
	hack/control-plane build

node-binaries: binaries ## build (once) the node: containerd, runc, pause, kubelet, kube-proxy, kube-scheduler
	hack/control-plane build --node

# The last line of output is the image reference, NAME:TAG (for --set image.repository/tag).
image: ## build the image from the Dockerfile (buildah, local Debian base), load it into a running node
	@hack/control-plane image

actionlint: ## lint the GitHub Actions workflows with actionlint (built once from its Go module)
	hack/control-plane actionlint .github/workflows/*.yml

promtool: ## build (once) promtool from its Go module, which checks the chart's PrometheusRule
	hack/control-plane promtool --version >/dev/null

argocd-binary: ## build (once) argocd from its Go module into the cache
	hack/argocd build

# The unit Hypothesis profile (tests/unit/conftest.py) runs each property with a quarter of its
# examples; `make test` runs tests/unit with the full counts.
unit: $(STAMP) ## fast hermetic unit tests only (property tests with fewer examples)
	$(PY) -m pytest tests/unit --hypothesis-profile=unit $(PYTEST_ARGS)

process: $(STAMP) ## the commands as processes: the doctor, the sandbox, argocd on the health scripts
	$(PY) -m pytest tests/process $(PYTEST_ARGS)

packaging: $(STAMP) ## what ships: hadolint, the chart and manifests, the lock
	$(PY) -m pytest tests/packaging $(PYTEST_ARGS)

test: $(STAMP) lint typecheck actionlint promtool node-binaries image argocd-binary ## everything: lint, types, unit, API-server, Argo CD and node e2e tests
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

e2e: $(STAMP) node-binaries image ## only the e2e tests: the image in Pods on the node (helm, kustomize, kills)
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

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

control-plane-up: binaries ## start etcd + kube-apiserver + kube-controller-manager on loopback
	hack/control-plane up

node-up: node-binaries ## the same plus the node that runs Pods (hack/control-plane up --node)
	hack/control-plane up --node

control-plane-down: ## stop them
	hack/control-plane down

clean: ## remove the virtualenv and caches inside the repository
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
