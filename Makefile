# The two commands a fresh clone needs (README.md):
#   make run    start the whole system locally (control plane on moto, gateways, demo mail server)
#   make test   lint, type-check and run every test tier
# Both create the virtual environment and install what they need on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: run test lint typecheck venv system-deps schemas bench image clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the browser tier needs (headless Chromium) and the container tier needs
# (podman with runc, buildah, mmdebstrap, haproxy). Installed only when missing.
system-deps:
	@bash scripts/system-deps.sh
	@bash scripts/container-deps.sh

# The gateway image, with podman on the Debian-package base (no Docker, no registry):
# localhost/seg-gateway:latest in the project's podman storage (scripts/podman-env.sh).
# `docker build -t seg-gateway .` builds the same Dockerfile on python:3.11-slim.
image:
	@bash scripts/container-deps.sh
	@bash scripts/build-image.sh $(IMAGE)

run: $(STAMP)
	$(VENV)/bin/seg up $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint typecheck
	$(PY) -m seg_contract.schema --check
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

schemas: $(STAMP)
	$(PY) -m seg_contract.schema

bench: $(STAMP)
	@bash bench/run_all.sh

clean:
	rm -rf $(VENV) cdk.out .mypy_cache .ruff_cache .pytest_cache
