"""The robot-side logging code imports neither torch, MuJoCo nor rclpy."""

from __future__ import annotations

import subprocess
import sys


def test_datalog_and_schedule_import_no_torch_mujoco_or_rclpy() -> None:
    code = (
        "import sys\n"
        "import pearl_robot.datalog.schema, pearl_robot.datalog.writer, "
        "pearl_robot.datalog.reader, pearl_robot.datalog.recovery, pearl_robot.datalog.cli, "
        "pearl_robot.runtime.schedule\n"
        "bad = sorted(m for m in ('torch', 'mujoco', 'rclpy') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"robot-side modules pulled in {out}"
