# The two commands of README.md. Both are idempotent: the venv is (re)built only when
# pyproject.toml changes.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# torch==2.13.0 is pinned in pyproject.toml: it is the CPU wheel on local disk.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/alphaprune demo

test: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest -q

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
