# ccm developer entry points. `make demo` and `make test` set everything up from a fresh clone.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SRC := ccm tests
ARGS ?=

.PHONY: venv assets lint format test test-unit test-e2e demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Build (or reuse from the cache) kube-apiserver and etcd; honours KUBEBUILDER_ASSETS.
assets: venv
	$(BIN)/python -m ccm.testing.assets build

lint: venv
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

test: lint assets
	$(BIN)/pytest

test-unit: venv
	$(BIN)/pytest -m "not e2e"

test-e2e: assets
	$(BIN)/pytest -m e2e

demo: assets
	$(BIN)/python -m ccm.testing.demo $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Render (kustomize build, kustomize built with Go on first use) and validate an overlay of
# manifests/; prints the YAML: `make manifests OVERLAY=private-cloud | kubectl apply -f -`.
OVERLAY ?= fake
.PHONY: manifests
manifests: venv
	@$(BIN)/python -m ccm.testing.manifests $(OVERLAY)
