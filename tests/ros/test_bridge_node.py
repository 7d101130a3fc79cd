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
from pearl_robot.hardware.emulator import FirmwareEmulator, make_twin_plant  # noqa: E402
from pearl_robot.hardware.emulator_endpoints import PtyEndpoint  # noqa: E402
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
        # armed once the policy's commands flow (the bridge disarms when they stop, so the
        # check is made while the first episode runs, not after the last)
        assert g.spin_until(lambda: emu.status().armed, 20.0), emu.status()
        assert g.spin_until(lambda: len(policy.controller.returns) >= 2, 30.0), \
            policy.controller.state
        assert g.spin_until(lambda: any(lvl == 0 for lvl, _ in link), 5.0), link
        estop_pub.publish(Bool(data=True))
        assert g.spin_until(lambda: emu.status().estop and policy.controller.estop, 5.0)
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


def _bridge_only(port: str, tmp_path: Path, **bridge_params: object) -> list:
    pf = params_file(tmp_path, {"bridge_node": bridge_params})
    specs = build_graph({"robot": "serial", "port": port, "dataset_dir": str(tmp_path / "ds"),
                         "params_file": pf})
    return [s for s in specs if s.executable == "bridge_node"]


def test_bridge_node_arms_only_while_commands_flow(ros_context, tmp_path: Path,
                                                   emulator) -> None:  # noqa: ANN001
    """Before: the node armed the device as soon as the link was up, with nobody commanding,
    so the device's watchdog reported "no command for 100 ms while armed" at every start."""
    from std_msgs.msg import Float64MultiArray

    emu, port = emulator
    # re-arming after a reconnect keeps the arm intent if a loaded machine makes the link
    # flap (watchdog trips); without it the robot stays disarmed until someone arms it
    g = ComposedGraph(_bridge_only(port, tmp_path, rearm_after_reconnect=True), ros_context)
    bridge = g.node("bridge_node").bridge
    probe = rclpy.create_node("command_probe", context=ros_context)
    pub = probe.create_publisher(Float64MultiArray, graph.COMMAND, qos.stream_publisher(0.05))
    sending: list[bool] = [False]
    probe.create_timer(0.05, lambda: sending[0] and pub.publish(
        Float64MultiArray(data=[0.0, 0.0, 0.0])))
    g.executor.add_node(probe)
    try:
        assert g.spin_until(lambda: bridge.status().link.value == "ready", 20.0)
        g.spin_until(lambda: emu.status().armed, 1.0)
        assert not emu.status().armed, "armed with no command flowing"
        assert emu.events["command_timeouts"] == 0
        sending[0] = True
        assert g.spin_until(lambda: emu.status().armed, 10.0), dict(bridge.events)
        sending[0] = False
        assert g.spin_until(lambda: not emu.status().armed, 5.0), "still armed, no commands"
    finally:
        g.executor.remove_node(probe)
        probe.destroy_node()
        g.shutdown(drain_s=0.0)


def test_bridge_node_reports_error_naming_a_missing_port(ros_context, tmp_path: Path) -> None:
    port = str(tmp_path / "ttyNOPE")
    g = ComposedGraph(_bridge_only(port, tmp_path), ros_context)
    probe = rclpy.create_node("diag_probe", context=ros_context)
    seen: list[tuple[int, str, str]] = []
    probe.create_subscription(
        DiagnosticArray, graph.DIAGNOSTICS,
        lambda m: seen.extend((level_of(s), s.message, s.hardware_id) for s in m.status
                              if "serial link" in s.name), qos.status())
    g.executor.add_node(probe)
    try:
        assert g.spin_until(lambda: any("no such device" in m for _, m, _ in seen), 20.0), seen
    finally:
        g.executor.remove_node(probe)
        probe.destroy_node()
        g.shutdown(drain_s=0.0)
    level, message, hardware_id = next(s for s in seen if "no such device" in s[1])
    assert level == 2 and port in message and hardware_id == port


def _adapt(argv: list[str]) -> tuple[int, float]:
    from pearl_robot.cli import main

    t0 = time.monotonic()
    rc = main(["adapt", *argv])
    return rc, time.monotonic() - t0


def test_adapt_exit_when_done_on_a_missing_port_exits_non_zero(
        untrained_bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Before: one line, no episode, and exit status 0 (or a run holding on for ever)."""
    port = str(tmp_path / "ttyNOPE")
    rc, _ = _adapt(["--robot", "serial", "--port", port, "--bundle", str(untrained_bundle),
                    "--dataset-dir", str(tmp_path / "ds"), "--episodes", "1",
                    "--exit-when-done", "--link-timeout", "1", "--duration", "120"])
    err = capsys.readouterr().err
    assert rc == 1, err[-3000:]
    line = next(x for x in err.splitlines() if x.startswith("pearl-robot adapt: error:"))
    assert port in line and "no such device" in line and "0 episode(s) finished" in line
    assert "Traceback" not in err


def test_adapt_exit_when_done_stops_when_the_robot_is_unplugged(
        untrained_bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """The cable is pulled after the first episode and stays out: the run ends with exit
    status 1 after --link-timeout, and the episodes logged before are closed and intact."""
    import threading

    link = tmp_path / "ttyPEARL"
    endpoint = PtyEndpoint(link=link)
    emu = FirmwareEmulator(make_twin_plant(seed=0), endpoint).start()
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 10, "reset_hold_s": 0.2}})
    unplugged = threading.Event()

    def unplug_after_first_episode() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (ds / "manifest.jsonl").is_file():
            time.sleep(0.05)
        emu.stop()
        endpoint.close()
        unplugged.set()

    watcher = threading.Thread(target=unplug_after_first_episode, daemon=True)
    watcher.start()
    try:
        rc, _ = _adapt(["--robot", "serial", "--port", str(link), "--bundle",
                        str(untrained_bundle), "--dataset-dir", str(ds), "--params-file", pf,
                        "--episodes", "50", "--exit-when-done", "--link-timeout", "2",
                        "--duration", "300"])
    finally:
        emu.stop()
        endpoint.close()
    err = capsys.readouterr().err
    assert unplugged.is_set()
    assert rc == 1, err[-3000:]
    line = next(x for x in err.splitlines() if x.startswith("pearl-robot adapt: error:"))
    assert str(link) in line and "not ready for" in line
    entries = manifest_entries(ds)
    assert entries and all(e["status"] == "complete" for e in entries)
    assert check_datasets([ds]) == []
