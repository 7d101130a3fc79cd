# pearl_robot developer entry points. Every target sets up the venv first if needed.
#   make setup      venv with torch (CPU), the twin, ROS 2 wheels and test tools
#   make demo       the README's main command: the sim-to-real loop (serial robot on the firmware
#                   emulator, a night of collection, retrain, hot-swap with canary, report), ~10 min
#   make demo-quick the same loop in about a minute (a retrain of a few steps)
#   make test       fast test suite (CI runs exactly this)
#   make test-slow  long tests (learning runs, soak, full fuzz), not in CI
#   make bench      benchmarks -> bench/results/*.json and the tables in docs/performance.md
#   make lint       ruff
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-quick test test-slow bench lint colcon-check clean

setup: $(STAMP)

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# torch is pinned on its own first: the CPU build on this machine's disk. A looser
	# requirement (from an extra) would otherwise pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,ros,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pearl-robot demo

demo-quick: $(STAMP)
	$(VENV)/bin/pearl-robot demo --quick

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
