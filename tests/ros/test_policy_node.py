"""The policy node against a scripted robot on simulated time, in lock step: the test owns
/clock, publishes each /joint_states itself and reads the command of every tick, so the
safety rules (stale, NaN, e-stop, bad hot-swap) are checked tick by tick, not by timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from pearl_robot.ros import graph, qos  # noqa: E402
from pearl_robot.ros.compose import ComposedGraph  # noqa: E402
from pearl_robot.ros.conversions import transition_from_msg  # noqa: E402
from pearl_robot.ros.graph import build_graph  # noqa: E402

from .conftest import params_file  # noqa: E402

JOINTS = ("base_yaw", "shoulder", "elbow")
PERIOD_NS = 50_000_000


class ScriptedRobot:
    """Publishes /clock and /joint_states on command; records what the policy sends."""

    def __init__(self, context) -> None:  # noqa: ANN001
        self.node = rclpy.create_node("scripted_robot", context=context)
        self.clock_pub = self.node.create_publisher(Clock, graph.CLOCK, 10)
        self.js_pub = self.node.create_publisher(JointState, graph.JOINT_STATES,
                                                 qos.stream_publisher(0.05))
        self.estop_pub = self.node.create_publisher(Bool, graph.ESTOP, qos.latched())
        self.commands: list[np.ndarray] = []
        self.transitions: list[np.ndarray] = []
        self.node.create_subscription(Float64MultiArray, graph.COMMAND,
                                      lambda m: self.commands.append(np.array(m.data)),
                                      qos.stream_subscription())
        self.node.create_subscription(Float64MultiArray, graph.TRANSITION,
                                      lambda m: self.transitions.append(
                                          transition_from_msg(m)[1]), qos.transitions())
        self.t_ns = 1_000_000_000
        self.q = np.array([0.0, 0.3, -0.2])

    def publish_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=Time(sec=self.t_ns // 10**9,
                                                nanosec=self.t_ns % 10**9)))

    def joint_state(self, position: np.ndarray | None = None, names=JOINTS) -> JointState:  # noqa: ANN001
        msg = JointState()
        msg.header.stamp = Time(sec=self.t_ns // 10**9, nanosec=self.t_ns % 10**9)
        msg.name = list(names)
        pos = self.q if position is None else position
        msg.position = [float(v) for v in pos][:len(names)]
        msg.velocity = [0.1] * len(names)
        msg.effort = [0.0] * len(names)
        return msg


@pytest.fixture
def policy_setup(ros_context, untrained_bundle: Path, tmp_path: Path):  # noqa: ANN001, ANN201
    pf = params_file(tmp_path, {"policy_node": {
        "episode_steps": 1000, "reset_hold_s": 0.0, "stale_obs_s": 0.1, "tasks": "100",
        "use_sim_time": True}})
    specs = build_graph({"robot": "serial", "bundle": str(untrained_bundle),
                         "params_file": pf, "dataset_dir": str(tmp_path / "ds")})
    g = ComposedGraph([s for s in specs if s.executable == "policy_node"], ros_context)
    robot = ScriptedRobot(ros_context)
    g.executor.add_node(robot.node)
    # discovery: wait until the policy's subscriptions see the robot's publishers
    policy = g.node("policy_node")
    assert g.spin_until(lambda: robot.js_pub.get_subscription_count() > 0
                        and robot.clock_pub.get_subscription_count() > 0
                        and robot.node.count_publishers(graph.COMMAND) > 0, 10.0)

    def step(msg: JointState | None = "default", timeout: float = 5.0) -> np.ndarray:  # noqa: ANN001
        """Advance sim time one period (publishing ``msg`` unless None) -> that tick's
        command."""
        robot.t_ns += PERIOD_NS
        n = len(robot.commands)
        robot.publish_clock()
        if msg is not None:
            robot.js_pub.publish(robot.joint_state() if isinstance(msg, str) else msg)
            # let the state arrive before the timer of this instant fires
        assert g.spin_until(lambda: len(robot.commands) > n, timeout), "no command this tick"
        return robot.commands[-1]

    yield g, policy, robot, step
    robot.node.destroy_node()
    g.shutdown(drain_s=0.0)


def _start(policy, step) -> None:  # noqa: ANN001
    """Tick until the episode runs (the first states arrive, the schedule starts)."""
    for _ in range(20):
        step()
        if policy.state == "running" and policy.episode_ticks > 2:
            return
    raise AssertionError(f"policy did not start an episode (state {policy.state})")


def test_stale_joint_states_give_the_safe_command_within_one_tick(policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    active = [step() for _ in range(5)]
    assert any(np.any(c != 0.0) for c in active), "untrained policy should command non-zero"
    # /joint_states stops. Ages at the next ticks: 0.05, 0.10 (<= stale_obs_s), 0.15 (stale).
    after = [step(msg=None) for _ in range(6)]
    assert np.any(after[0] != 0.0) or np.any(after[1] != 0.0)
    for c in after[2:]:
        np.testing.assert_array_equal(c, np.zeros(3))
    assert policy.faults.get("obs_stale", 0) >= 4
    # fresh states: control resumes on the next tick
    resumed = step()
    assert np.any(resumed != 0.0)


def test_nan_and_malformed_observations_do_not_kill_the_node(policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    bad = robot.joint_state(np.array([np.nan, 0.3, -0.2]))
    np.testing.assert_array_equal(step(bad), np.zeros(3))
    assert policy.faults.get("obs_nonfinite", 0) == 1
    n_transitions = len(robot.transitions)
    missing = robot.joint_state(names=("base_yaw", "shoulder"))  # elbow missing
    step(missing)  # refused by the reader; the previous (NaN) sample is still the newest
    assert policy._obs_errors == 1
    good = [step() for _ in range(4)]
    assert np.any(good[-1] != 0.0)
    g.spin_until(lambda: False, 0.2)
    # no transition with a non-finite observation was published
    assert len(robot.transitions) > n_transitions
    assert all(np.all(np.isfinite(t[:6])) for t in robot.transitions)


def test_estop_holds_until_cleared_by_the_service(policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    robot.estop_pub.publish(Bool(data=True))
    assert g.spin_until(lambda: policy.estop, 5.0)
    for _ in range(5):
        np.testing.assert_array_equal(step(), np.zeros(3))
    robot.estop_pub.publish(Bool(data=False))  # a false on the topic does not clear it
    for _ in range(5):
        np.testing.assert_array_equal(step(), np.zeros(3))
    assert policy.estop
    run = robot.node.create_client(SetBool, "/pearl/run_episodes")
    clear = robot.node.create_client(Trigger, "/pearl/clear_estop")
    assert g.spin_until(lambda: run.service_is_ready() and clear.service_is_ready(), 5.0)
    refused = run.call_async(SetBool.Request(data=True))
    assert g.spin_until(refused.done, 5.0) and not refused.result().success
    fut = clear.call_async(Trigger.Request())
    assert g.spin_until(fut.done, 5.0) and fut.result().success
    assert not policy.estop
    commands = [step() for _ in range(10)]
    assert any(np.any(c != 0.0) for c in commands), "control did not resume after clearing"


def test_bad_bundle_on_hot_swap_is_refused_and_control_continues(
        policy_setup, corrupt_bundle: Path, tmp_path: Path) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    running = policy.runtime.bundle.sha256
    original = policy.get_parameter("bundle").value
    # a directory that is not there: refused by the parameter callback, with the reason
    result = policy.set_parameters([Parameter("bundle", value=str(tmp_path / "nope"))])[0]
    assert not result.successful and "not found" in result.reason
    assert policy.get_parameter("bundle").value == original
    # a bundle whose contract reads but whose actor.onnx was corrupted: accepted for
    # validation, refused off the control path, and the parameter goes back
    result = policy.set_parameters([Parameter("bundle", value=str(corrupt_bundle))])[0]
    assert result.successful
    commands = []
    for _ in range(40):
        commands.append(step())
        if policy.runtime.swap_status().state == "failed" and \
                policy.get_parameter("bundle").value == original:
            break
    status = policy.runtime.swap_status()
    assert status.state == "failed" and "actor.onnx" in status.message
    assert policy.get_parameter("bundle").value == original
    commands += [step() for _ in range(5)]
    assert len(commands) >= 5 and any(np.any(c != 0.0) for c in commands[-5:])
    assert policy.runtime.bundle.sha256 == running
