# The two commands of the README: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := build/.deps-installed

.PHONY: deps system-deps python-deps demo test unit e2e bench crds down clean

deps: system-deps python-deps

system-deps:
	bash scripts/install-system-deps.sh

# torch is pinned to the CPU wheel these machines carry; a bare `torch` would fetch a CUDA build.
python-deps:
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'

demo: deps
	$(PYTHON) -m aifactory dev up
	$(PYTHON) scripts/demo.py

test: deps
	$(PYTHON) -m pytest

unit: python-deps
	$(PYTHON) -m pytest -m "not e2e"

e2e: deps
	$(PYTHON) -m pytest -m e2e

# LiteLLM (B5's peer) gets its own venv: its pins would downgrade packages the project's environment uses.
LITELLM_VENV := build/litellm-venv

bench: deps
	test -x $(LITELLM_VENV)/bin/litellm || { $(PYTHON) -m venv $(LITELLM_VENV) && \
		$(LITELLM_VENV)/bin/pip install -q --disable-pip-version-check 'litellm[proxy]'; }
	$(PYTHON) -m aifactory dev up
	$(PYTHON) -m bench

# The chart ships the same files (a unit test compares them byte for byte).
crds:
	$(PYTHON) -m aifactory crds --output crds
	$(PYTHON) -m aifactory crds --output helm/aifactory/crds

down:
	$(PYTHON) -m aifactory dev down
