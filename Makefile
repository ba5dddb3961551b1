# The two commands of README.md. Both are idempotent: the venv is (re)built only when
# pyproject.toml changes.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PEERS_STAMP := $(VENV)/.installed-peers
# compare's modelopt-fastnas peer, pinned to what was measured to work (pyproject.toml's
# peers extra says why these two go in without their declared dependencies)
PEERS := nvidia-modelopt==0.39.0 torchprofile==0.0.4

.PHONY: demo test lint peers clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# torch==2.13.0 is pinned in pyproject.toml: it is the CPU wheel on local disk.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e .
	touch $@

$(PEERS_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q --no-deps $(PEERS)
	$(VENV)/bin/pip install -q -e '.[peers]'
	touch $@

$(DEV_STAMP): $(PEERS_STAMP)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

peers: $(PEERS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/alphaprune demo

# the tests run single-threaded (tests/conftest.py), so one worker per core; a file's tests
# stay on one worker, which builds each module-scoped fixture once
test: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
