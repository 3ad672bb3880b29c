# Two commands for a fresh machine (see README):  make quickstart   and   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rafter-installed

$(STAMP): pyproject.toml constraints-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-dev.txt -e ".[dev,ray]"
	touch $(STAMP)

.PHONY: venv quickstart test bench
venv: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests

bench: $(STAMP)
	$(BIN)/python bench/launch.py
