"""`colcon build` of the package into a temporary workspace, and the install space a robot gets
(`ros2 run pearl_robot <node>`, `ros2 launch pearl_robot adapt.launch.py`): bench/colcon_check.py
does the build and every check; this test runs it in CI."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("colcon_core") is None or shutil.which("git") is None,
                    reason="colcon (the 'dev' extra) or git is not installed")
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout (git ls-files)")
def test_colcon_build_gives_a_complete_install_space():
    out = subprocess.run([sys.executable, "-m", "bench.colcon_check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "install space OK" in out.stdout
