"""The twin's reset-stall fault hook (soak fault injection): off by default, and a stalled
reset times out in the policy, is retried, and the schedule still finishes its episodes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from pearl_robot.datalog.reader import check_datasets, manifest_entries  # noqa: E402
from pearl_robot.errors import ConfigError  # noqa: E402
from pearl_robot.ros.compose import ComposedGraph  # noqa: E402
from pearl_robot.ros.graph import build_graph  # noqa: E402
from pearl_robot.ros.node_config import TwinNodeConfig  # noqa: E402
from pearl_robot.ros.twin_node import ResetStall  # noqa: E402

from .conftest import params_file  # noqa: E402


def test_reset_stall_is_off_by_default() -> None:
    cfg = TwinNodeConfig()
    stall = ResetStall(cfg.fault_reset_stall_every, cfg.fault_reset_stall_s)
    assert not any(stall.refuse(float(t)) for t in range(50))
    assert stall.stalls == stall.refused == 0


def test_every_nth_reset_stalls_for_its_duration_then_succeeds() -> None:
    stall = ResetStall(every=3, stall_s=2.0)
    assert [stall.refuse(t) for t in (0.0, 1.0)] == [False, False]
    # the third reset stalls: refused until 2 s later, then the next request goes through
    assert [stall.refuse(t) for t in (10.0, 10.5, 11.9, 12.0)] == [True, True, True, False]
    assert [stall.refuse(t) for t in (13.0, 14.0)] == [False, False]
    assert stall.refuse(15.0)  # the sixth
    assert (stall.resets, stall.stalls, stall.refused) == (6, 2, 4)


def test_negative_stall_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="fault_reset_stall_every"):
        TwinNodeConfig(fault_reset_stall_every=-1)
    with pytest.raises(ConfigError, match="fault_reset_stall_s"):
        TwinNodeConfig(fault_reset_stall_s=-0.5)


def test_a_stalled_reset_times_out_is_retried_and_the_schedule_finishes(
        ros_context, untrained_bundle, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {
        "policy_node": {"episode_steps": 10, "tasks": "100,101", "reset_timeout_s": 0.5},
        "twin_node": {"fault_reset_stall_every": 2, "fault_reset_stall_s": 0.8}})
    specs = build_graph({"bundle": str(untrained_bundle), "dataset_dir": str(ds),
                         "params_file": pf, "episodes": "3", "real_time_factor": "5"})
    g = ComposedGraph(specs, ros_context)
    policy, twin = g.node("policy_node"), g.node("twin_node")
    try:
        finished = g.spin_until(lambda: policy.controller.state == "done", 90.0)
        stalls, refused = twin._stall.stalls, twin._stall.refused
    finally:
        g.shutdown(drain_s=0.5)
    assert finished, "the schedule did not finish 3 episodes through stalled resets"
    assert stalls >= 1 and refused >= 1
    entries = manifest_entries(ds)
    assert [e["episode"] for e in entries] == [0, 1, 2]
    assert all(e["status"] == "complete" and e["transitions"] == 10 for e in entries)
    assert check_datasets([ds]) == []
