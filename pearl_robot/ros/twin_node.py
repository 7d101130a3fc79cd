"""twin_node: the MuJoCo twin (``pearl_robot.twin.arm.ArmTwin``) acting as the robot.

Seen from the graph it is indistinguishable from the serial bridge: it publishes
``/joint_states`` every ``publish_period`` of simulated time, applies ``/pearl/command`` efforts
(the twin models the actuator latency), holds zero effort when commands stop for
``command_timeout_s`` or while ``/pearl/estop`` is latched (what the firmware does), and offers
``/pearl/robot/reset`` (std_srvs/Trigger), which puts the arm at home (plus the family's start
noise) with the physics of the task last announced on ``/pearl/task``. The reset response's
message is JSON naming the applied ``reset_id`` and task, so the episode manager can tell the
reset it asked for from one made before the robot had seen the new task.

Faster than real time (``real_time_factor`` > 1): the twin steps on a wall-clock timer and
publishes ``/clock``; the other nodes run on that sim time (``use_sim_time``), so a 20 Hz policy
ticks 20 times per simulated second however fast the twin goes.
"""

from __future__ import annotations

import json
import time

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from pearl_robot.errors import PearlRobotError
from pearl_robot.robot.randomization import ARM3_NOMINAL_PARAMS
from pearl_robot.ros import graph, qos
from pearl_robot.ros.conversions import (
    OK,
    WARN,
    ConversionError,
    command_from_msg,
    diagnostic_array,
    diagnostic_status,
    joint_state_msg,
)
from pearl_robot.ros.node_config import TwinNodeConfig
from pearl_robot.ros.node_main import StopRequest, run_node
from pearl_robot.ros.params import DeclaredConfig
from pearl_robot.tasks.twin_arm import ARM3_START_NOISE
from pearl_robot.twin.arm import ArmTwin, TwinError


def _time_msg(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class ResetStall:
    """Fault injection (off unless ``every`` > 0): every ``every``-th reset the reset routine
    stalls and refuses requests for ``stall_s`` seconds of the twin's clock; the first request
    after the stall succeeds. Counted so a soak can say how many faults it injected."""

    def __init__(self, every: int, stall_s: float) -> None:
        self.every = every
        self.stall_s = stall_s
        self.resets = 0
        """Resets begun (a stall and the request that ends it count as one)."""
        self.stalls = 0
        """Stalls injected."""
        self.refused = 0
        """Reset requests refused while stalled."""
        self._until: float | None = None

    def refuse(self, now: float) -> bool:
        """Called for each reset request at time ``now``; True: refuse it (stalled)."""
        if self.every <= 0:
            return False
        if self._until is not None:
            if now < self._until:
                self.refused += 1
                return True
            self._until = None
            return False
        self.resets += 1
        if self.resets % self.every == 0 and self.stall_s > 0:
            self._until = now + self.stall_s
            self.stalls += 1
            self.refused += 1
            return True
        return False


class TwinNode(Node):
    """The twin as a robot on the graph (one ArmTwin, stepped by a wall-clock timer)."""

    def __init__(self, node_name: str = "twin_node", **kwargs: object) -> None:
        super().__init__(node_name, **kwargs)
        self.params = DeclaredConfig(self, TwinNodeConfig)
        cfg: TwinNodeConfig = self.params.value
        self.twin = ArmTwin(seed=cfg.seed, mjcf_path=cfg.mjcf or None)
        self._rng = np.random.default_rng(cfg.seed)
        self.joint_names = self.twin.spec.joint_names
        self._period = cfg.publish_period
        # Sim time starts at 1 s (0 means "no time yet" to a ROS clock) and never goes back,
        # even across resets.
        self._sim_time = 1.0
        self._last_command_time = -np.inf
        self._estop = False
        self._task: dict | None = None
        self._applied: dict = {"episode": None, "task": None}
        self.commands = 0
        self.bad_commands = 0
        self.resets = 0
        self.steps = 0
        self._wall_start = time.monotonic()
        self._stall = ResetStall(cfg.fault_reset_stall_every, cfg.fault_reset_stall_s)

        self.joint_pub = self.create_publisher(JointState, graph.JOINT_STATES,
                                               qos.stream_publisher(cfg.publish_period))
        self.clock_pub = (self.create_publisher(ClockMsg, graph.CLOCK, 10)
                          if cfg.publishes_clock else None)
        self.diag_pub = self.create_publisher(type(diagnostic_array(Time(), [])),
                                              graph.DIAGNOSTICS, qos.status())
        self.create_subscription(Float64MultiArray, graph.COMMAND, self._on_command,
                                 qos.stream_subscription())
        self.create_subscription(String, graph.TASK, self._on_task, qos.latched())
        self.create_subscription(Bool, graph.ESTOP, self._on_estop, qos.latched())
        self.create_service(Trigger, graph.ROBOT_RESET, self._on_reset)
        # Stepping runs on the wall clock whatever use_sim_time says: the twin *is* the clock.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(cfg.publish_period / cfg.real_time_factor, self._step, clock=steady)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics, clock=steady)
        self._publish_state(self.twin.state())
        self.get_logger().info(
            f"twin {self.twin.spec.name} ({', '.join(self.joint_names)}) at "
            f"{1.0 / cfg.publish_period:.0f} Hz, real-time factor {cfg.real_time_factor:g}")

    # -- callbacks ----------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        try:
            effort = command_from_msg(msg, len(self.joint_names))
        except ConversionError as exc:
            self.bad_commands += 1
            self.twin.apply_command(np.zeros(len(self.joint_names)))
            self.get_logger().warning(f"{exc}; holding zero effort",
                                      throttle_duration_sec=1.0)
            return
        self.commands += 1
        self._last_command_time = self._sim_time
        if not self._estop:
            self.twin.apply_command(effort)

    def _on_task(self, msg: String) -> None:
        try:
            task = json.loads(msg.data)
            if not isinstance(task, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self.get_logger().error(f"/pearl/task is not a JSON object ({exc}): {msg.data!r}")
            return
        self._task = task

    def _on_estop(self, msg: Bool) -> None:
        self._estop = bool(msg.data)
        if self._estop:
            self.twin.apply_command(np.zeros(len(self.joint_names)))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        task = self._task or {}
        if self._stall.refuse(self._sim_time):
            response.success = False
            response.message = json.dumps({"error": "reset routine stalled (fault injection)"})
            return response
        # The task's physical parameters (payload, friction, ...); goals are not the twin's.
        physics = {k: v for k, v in (task.get("params") or {}).items()
                   if k in ARM3_NOMINAL_PARAMS}
        try:
            if physics:
                self.twin.set_params(physics)
            start = self.twin.home + self._rng.uniform(-ARM3_START_NOISE, ARM3_START_NOISE,
                                                       len(self.joint_names))
            self.twin.reset(start)
        except (TwinError, PearlRobotError, TypeError, ValueError) as exc:
            response.success = False
            response.message = json.dumps({"error": str(exc)})
            self.get_logger().error(f"reset refused: {exc}")
            return response
        self.resets += 1
        self._last_command_time = -np.inf
        self._applied = {"episode": task.get("episode"), "task": task.get("task"),
                         "reset_id": task.get("reset_id")}
        response.success = True
        response.message = json.dumps(self._applied)
        self._publish_state(self.twin.state())
        return response

    def _step(self) -> None:
        if self._sim_time - self._last_command_time > self.params.value.command_timeout_s:
            self.twin.apply_command(np.zeros(len(self.joint_names)))  # device watchdog
        sample = self.twin.advance(self._period)
        self._sim_time += self._period
        self.steps += 1
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=_time_msg(self._sim_time)))
        self._publish_state(sample)

    def _publish_state(self, sample) -> None:  # noqa: ANN001 - JointSample
        stamp = (_time_msg(self._sim_time) if self.clock_pub is not None
                 else self.get_clock().now().to_msg())
        self.joint_pub.publish(joint_state_msg(self.joint_names, sample.position,
                                               sample.velocity, sample.effort, stamp))

    def _publish_diagnostics(self) -> None:
        wall = time.monotonic() - self._wall_start
        sim = self.steps * self._period
        level = WARN if self._estop or self.bad_commands else OK
        message = "e-stop latched: zero effort" if self._estop else "running"
        status = diagnostic_status(
            f"{self.get_name()}: twin", self.twin.spec.name, level, message,
            {"sim_time_s": self._sim_time, "real_time_factor_achieved": sim / max(wall, 1e-9),
             "commands": self.commands, "bad_commands": self.bad_commands,
             "resets": self.resets, "reset_stalls": self._stall.stalls,
             "reset_requests_refused": self._stall.refused, "episode": self._applied["episode"],
             "task": self._applied["task"]})
        stamp = (_time_msg(self._sim_time) if self.clock_pub is not None
                 else self.get_clock().now().to_msg())
        self.diag_pub.publish(diagnostic_array(stamp, [status]))


def main(args: list[str] | None = None, stop: StopRequest | None = None) -> int:
    return run_node(TwinNode, args, stop=stop)
