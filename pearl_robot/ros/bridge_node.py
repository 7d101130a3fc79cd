"""bridge_node: the robot's microcontroller on the graph, through the serial bridge.

A thin adapter over :class:`pearl_robot.hardware.bridge.SerialBridge`, which owns the port on
its own thread and makes every safety decision (handshake, watchdogs, e-stop latch, reconnect
with backoff). This node only converts:

- device STATE frames -> ``/joint_states`` (published from the bridge's reader thread the
  moment a frame is decoded: no executor hop between the wire and DDS);
- ``/pearl/command`` -> :meth:`SerialBridge.send_command` (device joint order);
- ``/pearl/estop`` true -> :meth:`SerialBridge.estop`; false (what the policy publishes when
  its clear service runs) -> :meth:`SerialBridge.clear_estop`;
- ``/pearl/robot/arm`` and ``/pearl/robot/disarm`` (std_srvs/Trigger). Arming (on start with
  ``arm_on_start``, after an e-stop clear, or by the service) uses
  ``SerialBridge.arm(when_commanded=True)``: the device is armed only while /pearl/command
  flows and disarmed when it stops, so starting or stopping the graph never trips the
  device's command watchdog;
- :meth:`SerialBridge.diagnostics` -> ``/diagnostics`` (link state, frame/CRC errors,
  reconnects, round-trip time, device faults);
- with ``give_up_after_s`` > 0 (one-shot runs), :meth:`SerialBridge.link_failure` ends the
  node with exit code 1 and the reason on stderr, which ends a launch; overnight runs leave it
  at 0 and the bridge reconnects for ever.
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from pearl_robot.hardware.bridge import BridgeConfig, JointStateSample, SerialBridge
from pearl_robot.hardware.errors import CommandError, LinkDownError
from pearl_robot.hardware.transport import SerialConfig, serial_factory
from pearl_robot.robot.description import load_robot_spec
from pearl_robot.ros import graph, qos
from pearl_robot.ros.conversions import (
    ConversionError,
    command_from_msg,
    diagnostic_array,
    diagnostic_status,
    joint_state_msg,
)
from pearl_robot.ros.node_config import BridgeNodeConfig
from pearl_robot.ros.node_main import StopRequest, run_node
from pearl_robot.ros.params import DeclaredConfig


class BridgeNode(Node):
    """SerialBridge <-> topics; the bridge's thread does all serial I/O."""

    def __init__(self, node_name: str = "bridge_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = DeclaredConfig(self, BridgeNodeConfig)
        cfg: BridgeNodeConfig = self.params.value
        robot = load_robot_spec()  # the robot this package describes (sim/arm3.xml)
        expected = robot.joint_names if cfg.check_joints else None
        # the device streams its state once a control period; the QoS deadline offered is a
        # few of them (qos.DEADLINE_PERIODS)
        self.joint_pub = self.create_publisher(JointState, graph.JOINT_STATES,
                                               qos.stream_publisher(robot.control_period))
        self.diag_pub = self.create_publisher(DiagnosticArray, graph.DIAGNOSTICS, qos.status())
        self.bad_commands = 0
        self.bridge = SerialBridge(
            serial_factory(SerialConfig(url=cfg.port, baudrate=cfg.baudrate)),
            BridgeConfig(expected_joints=expected,
                         rearm_after_reconnect=cfg.rearm_after_reconnect),
            on_state=self._on_state, port_name=cfg.port)
        if cfg.arm_on_start:
            self.bridge.arm(when_commanded=True)
        self.create_subscription(Float64MultiArray, graph.COMMAND, self._on_command,
                                 qos.stream_subscription())
        self.create_subscription(Bool, graph.ESTOP, self._on_estop, qos.latched())
        self.create_service(Trigger, "/pearl/robot/arm", self._srv_arm)
        self.create_service(Trigger, "/pearl/robot/disarm", self._srv_disarm)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self.bridge.start()
        self.get_logger().info(f"serial bridge on {cfg.port}")

    # -- bridge thread -----------------------------------------------------------------------
    def _on_state(self, sample: JointStateSample) -> None:
        self.joint_pub.publish(joint_state_msg(sample.names, sample.position, sample.velocity,
                                               sample.effort,
                                               self.get_clock().now().to_msg()))

    # -- executor callbacks ------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        info = self.bridge.device_info
        if info is None:
            return
        try:
            effort = command_from_msg(msg, len(info.joint_names))
            self.bridge.send_command(effort)
        except (ConversionError, CommandError) as exc:
            # The bridge has already sent the safe command for a CommandError.
            self.bad_commands += 1
            self.get_logger().warning(f"command refused: {exc}", throttle_duration_sec=1.0)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.bridge.estop()
            self.get_logger().error("e-stop latched on the device")
        elif self.bridge.status().estop:
            self.bridge.clear_estop()
            if self.params.value.arm_on_start:
                self.bridge.arm(when_commanded=True)
                self.get_logger().warning("e-stop cleared; the robot arms again once "
                                          "commands flow")
            else:
                self.get_logger().warning("e-stop cleared; the robot stays disarmed until "
                                          "/pearl/robot/arm is called")

    def _srv_arm(self, request: Trigger.Request, response: Trigger.Response
                 ) -> Trigger.Response:
        try:
            self.bridge.arm(when_commanded=True)
            response.success = True
            response.message = "arming (the device is armed while /pearl/command flows)"
        except CommandError as exc:
            response.success, response.message = False, str(exc)
        return response

    def _srv_disarm(self, request: Trigger.Request, response: Trigger.Response
                    ) -> Trigger.Response:
        self.bridge.disarm()
        response.success, response.message = True, "disarmed"
        return response

    def _publish_diagnostics(self) -> None:
        d = self.bridge.diagnostics()
        values = dict(d.values)
        values["bad_commands"] = str(self.bad_commands)
        status = diagnostic_status(f"{self.get_name()}: serial link", self.params.value.port,
                                   d.level, d.message, values)
        self.diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def before_shutdown(self) -> None:
        """The graph is stopping and the policy goes first: disarm now, so the device never
        sees the commands stop while it is armed (``ComposedGraph.shutdown`` calls this; in
        a launch, the bridge's idle disarm does the same within the device's timeout)."""
        self.bridge.disarm()

    def destroy_node(self) -> None:
        """Safe command, disarm, close the port."""
        try:
            bridge = getattr(self, "bridge", None)
            if bridge is not None:
                bridge.stop()
        finally:
            super().destroy_node()


    def link_given_up(self) -> str | None:
        """Why this one-shot run stops waiting for the link (``give_up_after_s``), or None."""
        limit = self.params.value.give_up_after_s
        return self.bridge.link_failure(limit) if limit > 0 else None


def _raise_on_dead_link(node: BridgeNode) -> bool:
    why = node.link_given_up()
    if why is not None:  # run_node prints it, destroys the node (safe command) and exits 1
        raise LinkDownError(f"{why}; giving up after give_up_after_s="
                            f"{node.params.value.give_up_after_s:g}")
    return False


def main(args: list[str] | None = None, stop: StopRequest | None = None) -> int:
    return run_node(BridgeNode, args, stop_when=_raise_on_dead_link, stop=stop)
