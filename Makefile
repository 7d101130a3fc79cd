# pearl_robot developer entry points. Every target sets up the venv first if needed.
#   make setup      venv with torch (CPU), the twin, ROS 2 wheels, Ray and test tools; the ROS launch
#                   tools (launch, launch_ros, launch_testing, ros2 CLI) from LAUNCH_WHEELS
#                   (default ../shared/ros-launch-wheels next to the checkout) when it exists
#   make demo       the README's main command: the sim-to-real loop (serial robot on the firmware
#                   emulator, a night of collection, retrain, hot-swap with canary, report), ~10 min
#   make demo-quick the same loop in about a minute (a retrain of a few steps)
#   make test       fast test suite (CI runs exactly this)
#   make test-slow  long tests (learning runs, soak, full fuzz), not in CI
#   make bench      benchmarks -> bench/results/*.json and the tables in docs/performance.md
#   make lint       ruff
#   make model      retrain the shipped bundle models/arm3 from its recipe (seeded; ~18 min);
#                   the bundle embeds its weights-only checkpoint, which the demo's morning
#                   retrain warm-starts from (MODEL_BUNDLE=DIR to write it elsewhere)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The launch tools are not on PyPI: wheels built from the ROS 2 sources sit next to the checkout
# (../shared/ros-launch-wheels, resolved from this Makefile's directory, not the caller's);
# without them (and without a ROS distro) the launch tests skip with a reason.
REPO_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
LAUNCH_WHEELS ?= $(abspath $(REPO_DIR)/../shared/ros-launch-wheels)
LAUNCH_STAMP := $(VENV)/.launch-tools

.PHONY: setup demo demo-quick test test-slow bench lint colcon-check clean model

setup: $(STAMP) $(LAUNCH_STAMP)

# The script says what it installs, the time and disk to expect, and shows pip's progress.
$(STAMP): setup.py
	bash tools/setup-venv.sh $(VENV)
	touch $(STAMP)

# Reinstalled when the wheels' requirements change; not stamped while neither the wheels nor a
# ROS distro provides the tools, so wheels that appear later are picked up by the next make.
$(LAUNCH_STAMP): $(STAMP) $(wildcard $(LAUNCH_WHEELS)/requirements.txt)
	@if [ -f "$(LAUNCH_WHEELS)/requirements.txt" ]; then \
	  echo "ROS launch tools: installing the wheels in $(LAUNCH_WHEELS)"; \
	  $(PIP) install -q --no-index --find-links "$(LAUNCH_WHEELS)" \
	    -r "$(LAUNCH_WHEELS)/requirements.txt" && $(PY) -m bench.colcon_check --launch-tools && \
	  touch $(LAUNCH_STAMP); \
	elif $(PY) -m bench.colcon_check --launch-tools --quiet; then \
	  echo "ROS launch tools: from the environment (a ROS distro)"; touch $(LAUNCH_STAMP); \
	else \
	  echo "ROS launch tools: not installed (no $(LAUNCH_WHEELS), no ROS distro);" \
	    "the launch tests will skip"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/pearl-robot demo

demo-quick: $(STAMP)
	$(VENV)/bin/pearl-robot demo --quick

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m bench.run_all

# The shipped model: the twin-arm "information" recipe (config/train/twin_arm_information.yaml:
# the pooled set encoder with the information belief head), seed 0, 130 iterations, then export
# (parity-checked, with the weights-only checkpoint.pt the demo's morning retrain warm-starts
# from) and the robot-side check. Wall clock and held-out numbers land in the bundle's
# provenance. The information head, not PEARL: on the twin it scores 0.63 against PEARL's 0.41
# on the policy node's per-tick schedule, 0.54 against 0.46 with z per episode
# (docs/performance.md, "The shipped model"); MODEL_CONFIG=... trains another (the PEARL
# recipe: MODEL_CONFIG=config/train/twin_arm.yaml MODEL_ITERATIONS=160).
# A smoke run of the recipe: make model MODEL_ITERATIONS=2 MODEL_RUN=/tmp/m MODEL_BUNDLE=/tmp/b
MODEL_CONFIG ?= config/train/twin_arm_information.yaml
MODEL_ITERATIONS ?= 130
MODEL_RUN ?= runs/model-arm3
MODEL_BUNDLE ?= models/arm3
model: $(STAMP)
	$(VENV)/bin/pearl-robot train --config $(MODEL_CONFIG) --seed 0 \
		--iterations $(MODEL_ITERATIONS) --out $(MODEL_RUN) --no-tensorboard
	$(VENV)/bin/pearl-robot export $(MODEL_RUN)/checkpoints/final.pt $(MODEL_BUNDLE) --force \
		--with-checkpoint
	$(VENV)/bin/pearl-robot bundle check $(MODEL_BUNDLE) --robot

lint: $(STAMP)
	$(VENV)/bin/ruff check pearl_robot tests bench launch tools

colcon-check: setup
	$(PY) -m bench.colcon_check

clean:
	rm -rf build install log .pytest_cache
