"""The graph with robot:=serial: policy and logger drive the firmware emulator (the MuJoCo
twin behind the serial protocol) through a real pseudo-terminal and the bridge node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from pearl_robot.datalog.reader import check_datasets, manifest_entries  # noqa: E402
from pearl_robot.hardware.emulator import (  # noqa: E402
    FirmwareEmulator,
    PtyEndpoint,
    make_twin_plant,
)
from pearl_robot.ros import graph, qos  # noqa: E402
from pearl_robot.ros.compose import ComposedGraph  # noqa: E402
from pearl_robot.ros.conversions import level_of  # noqa: E402
from pearl_robot.ros.graph import build_graph  # noqa: E402

from .conftest import params_file  # noqa: E402


@pytest.fixture
def emulator():  # noqa: ANN201
    endpoint = PtyEndpoint()
    emu = FirmwareEmulator(make_twin_plant(seed=0), endpoint).start()
    yield emu, endpoint.host_path
    emu.stop()
    endpoint.close()


def test_serial_graph_runs_episodes_logs_them_and_forwards_the_estop(
        ros_context, untrained_bundle: Path, tmp_path: Path, emulator) -> None:  # noqa: ANN001
    emu, port = emulator
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 10, "reset_hold_s": 0.2}})
    specs = build_graph({"robot": "serial", "port": port, "bundle": str(untrained_bundle),
                         "dataset_dir": str(ds), "params_file": pf, "episodes": "2"})
    g = ComposedGraph(specs, ros_context)
    probe = rclpy.create_node("bridge_probe", context=ros_context)
    link: list[tuple[int, str]] = []
    probe.create_subscription(
        DiagnosticArray, graph.DIAGNOSTICS,
        lambda m: link.extend((level_of(s), s.message) for s in m.status
                              if "serial link" in s.name), qos.status())
    estop_pub = probe.create_publisher(Bool, graph.ESTOP, qos.latched())
    g.executor.add_node(probe)
    policy = g.node("policy_node")
    try:
        assert g.spin_until(lambda: len(policy.returns) >= 2, 30.0), policy.state
        assert g.spin_until(lambda: any(lvl == 0 for lvl, _ in link), 5.0), link
        assert emu.status().armed
        estop_pub.publish(Bool(data=True))
        assert g.spin_until(lambda: emu.status().estop and policy.estop, 5.0)
        published = policy.published_transitions
    finally:
        g.executor.remove_node(probe)
        probe.destroy_node()
        g.shutdown(drain_s=0.5)
    time.sleep(0.1)
    entries = manifest_entries(ds)
    assert [e["transitions"] for e in entries] == [10, 10]
    assert published == 20
    assert check_datasets([ds]) == []
