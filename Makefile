# pearl_robot developer entry points. Every target sets up the venv first if needed.
#   make setup      venv with torch (CPU), the twin, ROS 2 wheels, Ray and test tools
#   make demo       the README's main command: the adapt graph on the twin with the bundled model
#   make test       fast test suite (CI runs exactly this)
#   make test-slow  long tests (learning runs, soak, full fuzz), not in CI
#   make bench      benchmarks -> bench/results/*.json and the tables in docs/performance.md
#   make lint       ruff
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench lint colcon-check clean

setup: $(STAMP)

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# torch is pinned on its own first: the CPU build on this machine's disk. A looser
	# requirement (from an extra) would otherwise pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,ros,distributed,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pearl-robot demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m bench.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check pearl_robot tests bench launch

colcon-check: $(STAMP)
	$(PY) -m bench.colcon_check

clean:
	rm -rf build install log .pytest_cache
