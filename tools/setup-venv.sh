#!/usr/bin/env bash
# Build the development venv (what `make setup` runs) and tell the user what is happening: what
# will be installed, the time and disk to expect, the free disk, each step with its elapsed
# time, pip's own progress (not -q: a silent pip looks hung for minutes), and the result.
#
#   tools/setup-venv.sh VENV          # e.g. .venv
#   SETUP_DRY_RUN=1 tools/setup-venv.sh VENV   # print the steps and commands, install nothing
#
# The expectation printed below was measured on a 2-core machine with a fast link and an empty
# pip cache: about 4 minutes, 1.8-2 GB (torch alone is ~750 MB, Ray ~240 MB). Slower links
# take longer; the torch download is the longest step.
set -euo pipefail

venv=${1:?usage: tools/setup-venv.sh VENV}
dry=${SETUP_DRY_RUN:-0}
need_mb=${SETUP_NEED_MB:-2500}
py=${SETUP_PYTHON:-python3}
start=$(date +%s)
steps=4

elapsed() {
  local s=$(( $(date +%s) - start ))
  printf '%dm%02ds' $((s / 60)) $((s % 60))
}
step() {
  local n=$1
  shift
  echo "[setup $n/$steps, $(elapsed)] $*"
}
run() {
  echo "+ $*"
  if [ "$dry" != 1 ]; then "$@"; fi
}

echo "Setting up $venv: torch (CPU build), MuJoCo, onnxruntime, the ROS 2 wheels, Ray and the" \
  "test tools."
echo "Expect about 4 minutes and about 2 GB of disk on a fresh machine (longer on a slow link:"\
  "torch is ~750 MB of it)."
parent=$(dirname "$venv")
mkdir -p "$parent"
free_mb=$(df -Pm "$parent" | awk 'NR == 2 {print $4}')
if [ -n "$free_mb" ] && [ "$free_mb" -lt "$need_mb" ]; then
  echo "warning: only ${free_mb} MB free under $parent; the venv needs about ${need_mb} MB" \
    "with pip's temporary files. Free some space or set VENV=DIR on a larger disk." >&2
else
  echo "Disk: ${free_mb:-?} MB free under $parent."
fi

step 1 "creating the virtual environment with $($py --version 2>&1)"
run "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
step 2 "upgrading pip"
run "${pip[@]}" install --progress-bar on -U pip
# torch is pinned on its own first: the CPU build. A looser requirement (from an extra) would
# otherwise pull a multi-GB CUDA build.
step 3 "torch==2.13.0, CPU build (the largest download, ~750 MB installed)"
run "${pip[@]}" install --progress-bar on torch==2.13.0
step 4 "pearl_robot (editable) with the train, ros, distributed and dev extras: MuJoCo," \
  "onnxruntime, ROS 2 Kilted wheels, Ray, pytest, ruff"
run "${pip[@]}" install --progress-bar on -e ".[train,ros,distributed,dev]"

if [ "$dry" = 1 ]; then
  echo "dry run: nothing installed ($(elapsed))"
else
  size=$(du -sm "$venv" | awk '{print $1}')
  echo "setup done in $(elapsed): $venv takes ${size} MB. Next: make test, make demo."
fi
