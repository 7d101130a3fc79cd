"""The hot-swap canary in the policy node: a worse bundle swapped in through the `bundle`
parameter is judged on its first episodes and rolled back; the status says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from rclpy.parameter import Parameter  # noqa: E402

from pearl_robot.datalog.reader import manifest_entries  # noqa: E402
from pearl_robot.ros.compose import ComposedGraph  # noqa: E402
from pearl_robot.ros.graph import build_graph  # noqa: E402

from .conftest import params_file, trained_bundle  # noqa: E402


@pytest.mark.skipif(trained_bundle() is None, reason="no trained twin-arm bundle in models/")
def test_an_untrained_bundle_is_rolled_back_by_the_canary(
        ros_context, untrained_bundle: Path, tmp_path: Path) -> None:
    shipped = trained_bundle()
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {
        "tasks": "100,101", "episodes_per_task": 1, "canary_episodes": 2,
        "canary_margin": 0.2, "seed": 1}})
    specs = build_graph({"bundle": str(shipped), "dataset_dir": str(ds), "params_file": pf,
                         "episodes": "2", "real_time_factor": "8"})
    g = ComposedGraph(specs, ros_context)
    policy = g.node("policy_node")
    try:
        assert g.spin_until(lambda: len(policy.controller.returns) >= 2, 60.0), \
            policy.controller.state
        old_sha = policy.runtime.bundle.sha256
        res = policy.set_parameters([Parameter("bundle", value=str(untrained_bundle))])
        assert res[0].successful, res[0].reason
        assert g.spin_until(lambda: policy.runtime.swap_status().state == "ready", 30.0)
        policy.set_parameters([Parameter("episodes", value=5)])  # 2 new-model episodes, 1 more
        assert g.spin_until(lambda: len(policy.controller.returns) >= 5, 90.0), \
            policy.controller.state
        verdict = policy.controller.canary.last
        swapped_back = policy.runtime.bundle.sha256
        bundle_param = policy.get_parameter("bundle").value
        faults = dict(policy.controller.faults)
        info = policy.controller.canary_info()  # what /pearl/task carries
    finally:
        g.shutdown(drain_s=0.5)
    assert verdict is not None and verdict.decision == "rollback", verdict
    assert verdict.new_mean < verdict.old_mean - verdict.threshold
    assert [j.task for j in verdict.judged] == [100, 101]
    assert swapped_back == old_sha and bundle_param == str(shipped)
    assert faults.get("canary_rollback") == 1
    assert info["state"] == "rollback" and info["last"]["decision"] == "rollback"
    entries = manifest_entries(ds)
    models = [e["model_sha"] for e in entries]
    assert models[:2] == [old_sha] * 2 and models[4] == old_sha
    assert models[2] == models[3] != old_sha
    assert json.dumps(entries[-1]["task"]["canary"]["last"]["decision"]) == '"rollback"'
