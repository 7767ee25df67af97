# One local command runs what CI runs: `make check` (lint + tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The MNIST files: $DIGITLAB_DATA if set, else the shared copy beside the checkout.
DATA   ?= $(or $(DIGITLAB_DATA),$(abspath ../shared/data/mnist))
HOST   ?= 127.0.0.1
PORT   ?= 8000
export DIGITLAB_DATA := $(DATA)
# npm, when the machine has it: it installs onnxruntime-web for the page (package-lock.json).
NPM    ?= $(shell command -v npm 2>/dev/null)
# The page loads two of its files; they are copied into the package (package data, ignored by
# git), where digitlab.browser.find_runtime looks: the package never reaches into a checkout.
RUNTIME_DIR   := src/digitlab/vendor/onnxruntime-web
RUNTIME_FILES := $(RUNTIME_DIR)/ort.wasm.bundle.min.mjs $(RUNTIME_DIR)/ort-wasm-simd-threaded.wasm


.PHONY: install web-runtime no-npm system-deps run test test-all lint format check bench lock audit clean

install: $(VENV)/.installed web-runtime  ## virtualenv with digitlab (editable) and all extras, pinned

# The page's in-browser model runtime (onnxruntime-web, pinned by package-lock.json), served by
# `digitlab serve` from node_modules/. Without npm the page predicts on the server instead.
web-runtime: $(if $(NPM),$(RUNTIME_FILES),no-npm)

node_modules/.installed: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	touch $@

$(RUNTIME_DIR)/%: node_modules/.installed
	mkdir -p $(@D)
	cp node_modules/onnxruntime-web/dist/$* $@

no-npm:
	@echo "npm not found: the page will predict on the server (install Node.js/npm, then make install)"

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $@

system-deps:  ## Debian packages the browser and desktop tests drive (chromium, xvfb, xdotool)
	bash scripts/system-deps.sh

run: install  ## the main job: the web app with the bundled model at http://$(HOST):$(PORT)/
	$(VENV)/bin/digitlab serve --host $(HOST) --port $(PORT)

# Two tiers of tests; tests/conftest.py says which test is in which, and why. One pytest run
# per target: an empty selection (pytest's exit 5, "no tests collected") is a failure, never
# a tier that happened to be empty. Both print the 15 slowest tests (pyproject.toml).
test: install  ## the fast tier, after every change: about two minutes, no Chromium or Xvfb
	$(PY) -m pytest -m "not slow"

test-all: install system-deps  ## every tier: fast and slow (Chromium, Xvfb, training, full MNIST)
	$(PY) -m pytest -m ""

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts notebooks
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: install
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts notebooks

check: lint test-all  ## what CI runs (.ci/run): lint and every tier

bench: install  ## speed and accuracy benchmarks (ratios against baselines run in the same process)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

audit: install  ## pip-audit on the pinned set; says so plainly when the advisory database is out of reach
	bash scripts/audit.sh

lock:  ## re-pin requirements/constraints.txt from the current virtualenv
	{ echo "# Pinned versions for the dev/CI environment (make install). Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'; } > requirements/constraints.txt

clean:
	rm -rf $(VENV) node_modules src/digitlab/vendor .pytest_cache .ruff_cache build dist src/*.egg-info
