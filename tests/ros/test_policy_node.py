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
        "episode_steps": 1000, "reset_hold_s": 0.0, "stale_obs_s": 0.12, "tasks": "100",
        "fault_pause_s": 0.5,
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
                        and policy.command_pub.get_subscription_count() > 0
                        and policy.transition_pub.get_subscription_count() > 0, 10.0)
    assert policy.commands_sent == 0  # no tick before sim time starts

    def step(msg: JointState | None | str = "default", timeout: float = 5.0
             ) -> list[np.ndarray]:
        """Advance sim time one period, publishing ``msg`` (None: no state this period);
        the commands the policy sent during it (the period-end timer's tick, if the previous
        period had no state, then the state's tick)."""
        robot.t_ns += PERIOD_NS
        t = robot.t_ns * 1e-9 - 1e-9
        n = len(robot.commands)
        robot.publish_clock()
        assert g.spin_until(lambda: policy.timer_at >= t, timeout), "timer did not fire"
        if msg is not None:
            errors = policy._obs_errors
            robot.js_pub.publish(robot.joint_state() if isinstance(msg, str) else msg)
            assert g.spin_until(lambda: (policy._obs_received or 0.0) >= t
                                or policy._obs_errors > errors, timeout), "state not taken"
        assert g.spin_until(lambda: len(robot.commands) == policy.commands_sent, timeout)
        return robot.commands[n:]

    yield g, policy, robot, step
    robot.node.destroy_node()
    g.shutdown(drain_s=0.0)


def _start(policy, step) -> None:  # noqa: ANN001
    """Tick until the episode runs (the first states arrive, the schedule starts)."""
    for _ in range(20):
        step()
        if policy.controller.state == "running" and policy.controller.session.step > 2:
            return
    raise AssertionError(f"policy did not start an episode (state {policy.controller.state})")


def _flat(steps: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [c for cmds in steps for c in cmds]


def test_stale_joint_states_give_the_safe_command_within_one_tick(policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    active = [step() for _ in range(5)]
    assert all(len(c) == 1 for c in active), "one state-triggered tick per period"
    assert any(np.any(c != 0.0) for c in _flat(active)), "untrained policy commands non-zero"
    # /joint_states stops. The period of the last state already ticked; the next periods
    # tick at their end with the newest state, aged 0.10 (<= stale_obs_s 0.12: trusted),
    # then 0.15, 0.20, ... (stale: the safe command from that tick on).
    after = [step(msg=None) for _ in range(6)]
    assert [len(c) for c in after] == [0, 1, 1, 1, 1, 1]
    assert np.any(after[1][0] != 0.0)
    for c in _flat(after[2:]):
        np.testing.assert_array_equal(c, np.zeros(3))
    assert policy.controller.faults.get("obs_stale", 0) >= 4
    # fresh states: control resumes at once (the state's own tick)
    resumed = step()
    assert np.any(resumed[-1] != 0.0)


def test_nan_and_malformed_observations_do_not_kill_the_node(policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    bad = robot.joint_state(np.array([np.nan, 0.3, -0.2]))
    (cmd,) = step(bad)
    np.testing.assert_array_equal(cmd, np.zeros(3))
    assert policy.controller.faults.get("obs_nonfinite", 0) == 1
    n_transitions = len(robot.transitions)
    missing = robot.joint_state(names=("base_yaw", "shoulder"))  # elbow missing
    assert step(missing) == []  # refused by the reader: no state-triggered tick
    assert policy._obs_errors == 1
    good = _flat([step() for _ in range(4)])
    np.testing.assert_array_equal(good[0], np.zeros(3))  # the period with only the bad msg
    assert np.any(good[-1] != 0.0)
    g.spin_until(lambda: False, 0.2)
    # transitions went on, and none carries a non-finite observation
    assert len(robot.transitions) > n_transitions
    assert all(np.all(np.isfinite(t[:6])) for t in robot.transitions)


def test_impossible_observation_is_refused_and_never_logged(policy_setup) -> None:  # noqa: ANN001
    """A finite glitch (a joint at 1e6 rad): the safe command on its tick, counted as
    obs_range on /diagnostics' fault counters, no step taken, no transition carrying it."""
    g, policy, robot, step = policy_setup
    _start(policy, step)
    steps_before = policy.controller.session.step
    (cmd,) = step(robot.joint_state(np.array([1e6, 0.3, -0.2])))
    np.testing.assert_array_equal(cmd, np.zeros(3))
    assert policy.controller.faults.get("obs_range", 0) == 1
    assert policy.controller.session.step == steps_before
    good = _flat([step() for _ in range(4)])
    assert np.any(good[-1] != 0.0)
    g.spin_until(lambda: False, 0.2)
    assert robot.transitions
    # obs (0:6) and next_obs (10:16) of every logged transition are real states
    assert all(np.all(np.abs(t[:6]) < 100.0) and np.all(np.abs(t[10:16]) < 100.0)
               for t in robot.transitions)


def test_estop_holds_until_cleared_by_the_service(policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    robot.estop_pub.publish(Bool(data=True))
    assert g.spin_until(lambda: policy.controller.estop, 5.0)
    for c in _flat([step() for _ in range(5)]):
        np.testing.assert_array_equal(c, np.zeros(3))
    robot.estop_pub.publish(Bool(data=False))  # a false on the topic does not clear it
    g.spin_until(lambda: False, 0.2)
    for c in _flat([step() for _ in range(5)]):
        np.testing.assert_array_equal(c, np.zeros(3))
    assert policy.controller.estop
    run = robot.node.create_client(SetBool, "/pearl/run_episodes")
    clear = robot.node.create_client(Trigger, "/pearl/clear_estop")
    assert g.spin_until(lambda: run.service_is_ready() and clear.service_is_ready(), 5.0)
    refused = run.call_async(SetBool.Request(data=True))
    assert g.spin_until(refused.done, 5.0) and not refused.result().success
    fut = clear.call_async(Trigger.Request())
    assert g.spin_until(fut.done, 5.0) and fut.result().success
    assert not policy.controller.estop
    commands = _flat([step() for _ in range(10)])
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
        commands += step()
        if policy.runtime.swap_status().state == "failed" and \
                policy.get_parameter("bundle").value == original:
            break
    status = policy.runtime.swap_status()
    assert status.state == "failed" and "actor.onnx" in status.message
    assert policy.get_parameter("bundle").value == original
    commands += _flat([step() for _ in range(5)])
    assert any(np.any(c != 0.0) for c in commands[-5:])
    assert policy.runtime.bundle.sha256 == running


def test_logger_error_pauses_the_schedule_until_logging_persists_again(policy_setup) -> None:  # noqa: ANN001
    from diagnostic_msgs.msg import DiagnosticArray

    from pearl_robot.ros.conversions import ERROR, OK, diagnostic_array, diagnostic_status

    g, policy, robot, step = policy_setup
    _start(policy, step)
    diag = robot.node.create_publisher(DiagnosticArray, graph.DIAGNOSTICS, qos.status())
    assert g.spin_until(lambda: diag.get_subscription_count() > 0, 5.0)

    def logger_level(level: int) -> None:
        diag.publish(diagnostic_array(Time(), [diagnostic_status(
            "logger_node: episode log", "pearl_datalog", level, "disk full", {})]))

    logger_level(ERROR)
    assert g.spin_until(lambda: not policy.controller.log_ok, 5.0)
    commands = _flat([step() for _ in range(3)])
    ctl = policy.controller
    assert ctl.state == "paused" and ctl.returns[-1][0] == ctl.episode_id
    for c in commands:
        np.testing.assert_array_equal(c, np.zeros(3))
    logger_level(OK)
    assert g.spin_until(lambda: policy.controller.log_ok, 5.0)
    commands = _flat([step() for _ in range(6)])
    assert policy.controller.state == "running" and any(np.any(c != 0.0) for c in commands)


def test_silent_joint_states_end_the_episode_as_a_fault_and_the_schedule_resumes(
        policy_setup) -> None:  # noqa: ANN001
    g, policy, robot, step = policy_setup
    _start(policy, step)
    episode = policy.controller.episode_id
    steps = [step(msg=None) for _ in range(24)]  # 1.2 s of silence (fault after 1 s)
    assert policy.controller.state == "paused", policy.controller.schedule_message
    ctl = policy.controller
    assert ctl.returns[-1][0] == episode and ctl.session.history[-1].end_reason == "fault"
    for c in _flat(steps[4:]):
        np.testing.assert_array_equal(c, np.zeros(3))
    commands = _flat([step() for _ in range(16)])  # states again; pause of 0.5 s, then reset
    assert policy.controller.state == "running" and policy.controller.episode_id == episode + 1
    assert any(np.any(c != 0.0) for c in commands[-3:])


def test_one_control_period_from_the_mjcf_to_the_timer(policy_setup) -> None:  # noqa: ANN001
    """The node's timer, its loop statistics, the episode controller and the runtime all run
    at the contract's ``control_period``, which is the MJCF's ``pearl/control_period``."""
    from pearl_robot.robot.description import load_robot_spec

    _, policy, _, _ = policy_setup
    contract = policy.runtime.bundle.contract
    assert contract.control_period == load_robot_spec().control_period
    assert contract.raw["control_period"] == contract.robot["control_period"]
    assert policy.control_period == contract.control_period
    assert policy.timer.timer_period_ns == round(contract.control_period * 1e9) == PERIOD_NS
    assert policy.controller.config.control_period == contract.control_period
    assert policy.stats.period == contract.control_period
