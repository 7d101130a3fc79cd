"""The demo's ROS-free path and report (the ROS path is the adapt graph, tested in tests/ros)."""

import argparse

from pearl_robot import demo
from pearl_robot.export.testing import write_test_bundle


def test_demo_without_ros_drives_the_runtime_and_reports(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    write_test_bundle(bundle, family="point-robot", seed=0,
                      hidden_sizes=(16, 16), encoder_hidden_sizes=(16,))
    args = argparse.Namespace(bundle=str(bundle), episodes=4, real_time_factor=1.0,
                              out=tmp_path / "out", timeout=60.0)
    rows = demo._run_without_ros(args, episodes_per_task=2)
    assert [r["task"] for r in rows] == ["task 80", "task 80", "task 81", "task 81"]
    assert all(r["steps"] == 20 and r["return"] < 0 for r in rows)
    demo._report(rows, tmp_path)
    out = capsys.readouterr().out
    assert "explore" in out and "adapt 1" in out
    assert (tmp_path / "adaptation.png").stat().st_size > 1000
