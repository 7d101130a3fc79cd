"""The demo: its ROS-free twin-only path, and the quick sim-to-real loop end to end."""

import argparse
import json

import pytest

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


@pytest.mark.ros
def test_quick_loop_runs_every_stage_end_to_end(tmp_path, capsys):
    """`pearl-robot demo --quick`: emulator on a pty + serial graph, a night on the twin, a
    retrain of a few steps, export + bundle check, hot-swap through the bundle parameter, the
    canary's verdict acted on, and the report files."""
    pytest.importorskip("rclpy")
    pytest.importorskip("mujoco")
    pytest.importorskip("torch")
    from pearl_robot import cli
    from pearl_robot.datalog.reader import check_datasets, manifest_entries

    out = tmp_path / "loop"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-screenshot"]) == 0
    result = json.loads((out / "loop.json").read_text())
    assert [s["stage"] for s in result["stages"]] == [
        "robot", "evening", "night", "morning", "hot-swap", "canary"]
    cfg = result["config"]
    n, ept = cfg["held_out_tasks"] * cfg["episodes_per_task"], cfg["episodes_per_task"]
    # the night's log: every planned episode, complete, on the night's tasks
    night = manifest_entries(out / "night-log")
    assert len(night) == cfg["night_episodes"]
    assert {e["task"]["task"] for e in night} == set(result["night_tasks"])
    assert check_datasets([out / "night-log"]) == []
    # the robot's log: shipped model, then the retrained one on the same tasks in order
    rows = result["episodes"]
    assert len(rows) == 2 * n + ept
    shipped, new = result["bundle_sha256"], result["retrain"]["bundle_sha256"]
    assert shipped != new
    before = [r for r in rows if r["phase"] == "before"]
    after = [r for r in rows if r["phase"] == "after"]
    assert {r["model_sha"] for r in before} == {shipped}
    assert {r["model_sha"] for r in after} == {new}
    assert [r["task"] for r in before] == [r["task"] for r in after]
    assert all(r["transitions"] == 60 for r in rows)
    # the canary judged every after-swap episode and the robot kept what it decided
    canary = result["canary"]
    assert canary is not None and len(canary["judged"]) == n
    kept = {r["model_sha"] for r in rows if r["phase"] == "confirm"}
    assert kept == ({shipped} if canary["decision"] == "rollback" else {new})
    # the retrained bundle passed the robot check; the report is there
    check = (out / "logs" / "bundle-check.log").read_text()
    assert "robot fit" in check and "check       OK" in check
    for name in ("report.html", "returns.png", "belief.png", "timing.png", "summary.json"):
        assert (out / name).stat().st_size > 1000, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["comparison"]["per_task"]) == {str(t) for t in result["held_out_tasks"]}
    assert "held-out tasks on the robot" in capsys.readouterr().out
