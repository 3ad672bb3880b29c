# Two commands for a fresh machine (see README):  make quickstart   and   make test
# One environment, .venv, that grows: `quickstart` installs the user install only (rafter with its cli
# extra: torch plus a few small packages); `test` adds what the test suite needs (the dev extra, Ray and Ray Data).
# torch is pinned by constraints-dev.txt (the library itself declares torch>=2.4).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints-dev.txt
USER_STAMP := $(VENV)/.rafter-user
DEV_STAMP := $(VENV)/.rafter-dev

$(BIN)/python:
	$(PY) -m venv $(VENV)

# TORCH_INDEX=<a PyTorch wheel index> installs torch from there first, e.g. the CPU-only build:
#   make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

$(USER_STAMP): pyproject.toml constraints-dev.txt | $(BIN)/python
	$(if $(TORCH_INDEX),$(PIP) torch --index-url $(TORCH_INDEX))
	$(PIP) -e ".[cli]"
	touch $@

$(DEV_STAMP): $(USER_STAMP)
	$(PIP) -e ".[cli,data,dev,ray]"
	touch $@

.PHONY: venv quickstart test bench
venv: $(USER_STAMP)

quickstart: $(USER_STAMP)
	$(BIN)/python examples/quickstart.py

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -ra tests

bench: $(DEV_STAMP)
	$(BIN)/python bench/launch.py
