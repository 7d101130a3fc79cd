"""Change detection through the policy node: its statistic on /pearl/change every tick and
its state on /diagnostics (lock-step simulated time, as in test_policy_node)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from std_msgs.msg import Float64MultiArray  # noqa: E402

from pearl_robot.ros import graph, qos  # noqa: E402
from pearl_robot.ros.compose import ComposedGraph  # noqa: E402
from pearl_robot.ros.graph import build_graph  # noqa: E402

from .conftest import params_file  # noqa: E402
from .test_policy_node import PERIOD_NS, ScriptedRobot  # noqa: E402


def test_change_statistic_is_published_every_running_tick(ros_context, untrained_bundle: Path,  # noqa: ANN001
                                                          tmp_path: Path) -> None:
    pf = params_file(tmp_path, {"policy_node": {
        "episode_steps": 1000, "reset_hold_s": 0.0, "stale_obs_s": 0.12, "tasks": "100",
        "change_detection": True, "change_action": "flag", "use_sim_time": True}})
    specs = build_graph({"robot": "serial", "bundle": str(untrained_bundle),
                         "params_file": pf, "dataset_dir": str(tmp_path / "ds")})
    g = ComposedGraph([s for s in specs if s.executable == "policy_node"], ros_context)
    robot = ScriptedRobot(ros_context)
    got: list[Float64MultiArray] = []
    robot.node.create_subscription(Float64MultiArray, graph.CHANGE, got.append, qos.status())
    g.executor.add_node(robot.node)
    policy = g.node("policy_node")
    try:
        assert g.spin_until(lambda: robot.js_pub.get_subscription_count() > 0
                            and policy.change_pub.get_subscription_count() > 0
                            and policy.transition_pub.get_subscription_count() > 0, 10.0)
        rng = np.random.default_rng(0)
        for _ in range(40):
            robot.t_ns += PERIOD_NS
            t = robot.t_ns * 1e-9 - 1e-9
            robot.publish_clock()
            assert g.spin_until(lambda t=t: policy.timer_at >= t, 5.0)
            robot.q = rng.uniform(-0.5, 0.5, 3)
            robot.js_pub.publish(robot.joint_state())
            assert g.spin_until(lambda t=t: (policy._obs_received or 0.0) >= t, 5.0)
        assert g.spin_until(lambda: len(got) >= 20, 5.0), f"{len(got)} /pearl/change messages"
        labels = [d.label for d in got[-1].layout.dim]
        assert {"surprise", "cusum", "threshold", "changes", "warm"} <= set(labels)
        values = policy.controller.change_values()
        assert values["change_detection"] == "flag"
        assert values["change_threshold"] > 0
        assert policy.runtime.change_monitor is not None
    finally:
        robot.node.destroy_node()
        g.shutdown(drain_s=0.0)
