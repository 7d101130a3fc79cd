"""A one-shot run's bridge node ends (exit 1, the reason on stderr) when its serial link stays
down for ``give_up_after_s``; with 0, the overnight default, it keeps reconnecting. Each case
runs the real node executable's ``main`` in its own process (rclpy's context is per process)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

REPO = Path(__file__).resolve().parents[2]
RUN = ("import sys; from pearl_robot.ros.node_main import bridge_node; "
       "sys.exit(bridge_node())")


def _start(port: str, give_up: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ROS_LOCALHOST_ONLY": "1",
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(random.randint(1, 200))}
    args = ["--ros-args", "-p", f"port:={port}", "-p", f"give_up_after_s:={give_up}",
            "-p", "check_joints:=false"]
    return subprocess.Popen([sys.executable, "-c", RUN, *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_dead_link_ends_a_one_shot_bridge_with_exit_1(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyPEARL-missing")
    p = _start(port, 0.5)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 1, (out, err)
    assert port in err and "giving up after give_up_after_s=0.5" in err, err


def test_the_overnight_default_keeps_waiting_for_the_link(tmp_path: Path) -> None:
    p = _start(str(tmp_path / "ttyPEARL-missing"), 0.0)
    try:
        time.sleep(4.0)  # well past any give-up a one-shot run would use in this test
        assert p.poll() is None, p.communicate()
        p.send_signal(2)  # SIGINT: a clean stop, as launch would send
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, (out, err)
