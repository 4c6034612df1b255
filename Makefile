# ccm developer entry points. `make demo` and `make test` set everything up from a fresh clone.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SRC := ccm tests bench chaos devtools
ARGS ?=

.PHONY: venv assets lint format test test-unit test-e2e demo clean

venv: $(VENV)/.installed

# setuptools prints an "Editable installation" banner for a flat layout at every editable install;
# set-up output stays quiet (errors still show).
QUIET_EDITABLE := PYTHONWARNINGS=ignore:::setuptools.command.editable_wheel

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(BIN)/pip install --quiet -e '.[dev]'
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
	$(BIN)/python -m devtools.demo $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Render (kustomize build, kustomize built with Go on first use) and validate an overlay of
# manifests/; prints the YAML: `make manifests OVERLAY=private-cloud | kubectl apply -f -`.
OVERLAY ?= fake
.PHONY: manifests
manifests: venv
	@$(BIN)/python -m devtools.manifests $(OVERLAY)

# Side-by-side benchmark of ccm and the upstream Go CCM (bench/, issue 8); results in bench/results/.
# The upstream CCM is built from bench/upstream with Go into the cache on first use.
BENCH_ARGS ?= --nodes 1000
.PHONY: bench
bench: assets
	$(QUIET_EDITABLE) $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Chaos run (chaos/, issue 13): the real control plane, three ccm replicas, a churning workload and
# injected faults; an invariant checker's table goes to chaos/results/. `make test` runs a short one.
CHAOS_ARGS ?= --duration 600
.PHONY: chaos
chaos: assets
	$(BIN)/python -m chaos $(CHAOS_ARGS)

# Samples (samples/, each with its README): installed editable into the venv (their dependencies
# are ccm's own); `make test` tests them and `make demo` runs the private-cloud one. The embedded
# main sample is a script and needs no install.
SAMPLES := samples/private-cloud samples/minimal-provider
.PHONY: samples lint-samples format-samples
samples: $(VENV)/.samples-installed

$(VENV)/.samples-installed: $(VENV)/.installed samples/private-cloud/pyproject.toml samples/minimal-provider/pyproject.toml
	$(QUIET_EDITABLE) $(BIN)/pip install --quiet --no-deps $(foreach s,$(SAMPLES),-e $(s))
	touch $@

lint-samples: venv
	$(BIN)/ruff format --check samples
	$(BIN)/ruff check samples

format-samples: venv
	$(BIN)/ruff format samples
	$(BIN)/ruff check --fix samples

lint: lint-samples
format: format-samples
test: samples
demo: samples
test-unit: samples
test-e2e: samples

# Real providers (providers/, each its own distribution with its README). Installed editable into
# the venv in one pip install with ccm's dev extras, so that pip resolves their dependencies
# together (botocore and the kubernetes test client disagree on python-dateutil; the AWS
# provider's test extra pins the client below the release that conflicts). Linted and tested by
# `make lint` and `make test` (their tests are in pytest's testpaths).
PROVIDERS := providers/aws providers/azure
.PHONY: providers lint-providers format-providers
providers: $(VENV)/.providers-installed

$(VENV)/.providers-installed: $(VENV)/.installed $(PROVIDERS:%=%/pyproject.toml)
	$(QUIET_EDITABLE) $(BIN)/pip install --quiet -e '.[dev]' $(foreach p,$(PROVIDERS),-e '$(p)[test]')
	touch $@

lint-providers: providers
	$(BIN)/ruff format --check $(PROVIDERS)
	$(BIN)/ruff check $(PROVIDERS)

format-providers: venv
	$(BIN)/ruff format $(PROVIDERS)
	$(BIN)/ruff check --fix $(PROVIDERS)

# lint-imports checks the installed provider and sample packages (root_packages in pyproject).
lint: lint-providers samples
format: format-providers
test: providers
test-unit: providers
test-e2e: providers

# Render (helm template, helm v4 built with Go on first use; CCM_HELM=/path/to/helm uses another)
# and validate the chart charts/ccm: `make chart VALUES=my-values.yaml | kubectl apply -f -`.
VALUES ?=
.PHONY: chart
chart: venv
	@$(BIN)/python -m devtools.helm $(foreach v,$(VALUES),-f $(v))
