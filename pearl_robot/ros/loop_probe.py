"""The loop's operator console on the robot's ROS graph: what a person does with
``ros2 param set /policy_node bundle DIR`` and ``ros2 topic echo /diagnostics``, from Python.

:class:`OperatorProbe` runs one node in its own context (the robot graph's domain) on a
background executor thread; it sets parameters of a running node through the standard
``<node>/set_parameters`` service (exactly what ``ros2 param set`` calls), and records every
/diagnostics status (by name, with its receive time) for the loop's report. No decision lives
here: the loop (``pearl_robot.loop``) decides, this converts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import Trigger

from pearl_robot.errors import PearlRobotError
from pearl_robot.ros import graph, qos
from pearl_robot.ros.conversions import level_of


class ProbeError(PearlRobotError):
    """A parameter could not be set on the running graph."""


def _value(v: Any) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(v))


class OperatorProbe:
    """A node on the robot graph's domain: set parameters, record /diagnostics."""

    def __init__(self, domain_id: int, name: str = "pearl_loop_operator") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.diagnostics: list[tuple[float, str, int, str, dict[str, str]]] = []
        """(wall time, status name, level, message, values) of every /diagnostics status."""
        self._lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, graph.DIAGNOSTICS, self._on_diag,
                                      qos.status())
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="pearl-loop-probe",
                                        daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        now = time.time()
        with self._lock:
            for s in msg.status:
                self.diagnostics.append((now, s.name, level_of(s), s.message,
                                         {kv.key: kv.value for kv in s.values}))

    def latest(self, name_contains: str) -> tuple[int, str, dict[str, str]] | None:
        """Level, message and values of the newest status whose name contains the text."""
        with self._lock:
            for _, name, level, message, values in reversed(self.diagnostics):
                if name_contains in name:
                    return level, message, values
        return None

    def series(self, name_contains: str, key: str) -> list[float]:
        """Every recorded numeric value of ``key`` in statuses whose name contains the text."""
        out = []
        with self._lock:
            for _, name, _, _, values in self.diagnostics:
                if name_contains in name and key in values:
                    try:
                        out.append(float(values[key]))
                    except ValueError:
                        pass
        return out

    def set_parameters(self, node: str, values: dict[str, Any], timeout_s: float = 20.0
                       ) -> None:
        """``ros2 param set /NODE NAME VALUE`` for each item, in one request; ProbeError with
        the node's reason when it refuses (e.g. a hot-swap bundle that fails its checks)."""
        client = self.node.create_client(SetParameters, f"/{node}/set_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise ProbeError(f"/{node}/set_parameters is not available (is the graph "
                                 "running on this ROS_DOMAIN_ID?)")
            req = SetParameters.Request()
            req.parameters = [Parameter(name=k, value=_value(v)) for k, v in values.items()]
            future = client.call_async(req)
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                raise ProbeError(f"/{node}/set_parameters did not answer in {timeout_s:.0f} s")
            for (k, _), result in zip(values.items(), future.result().results, strict=True):
                if not result.successful:
                    raise ProbeError(f"/{node} refused {k}: {result.reason}")
        finally:
            self.node.destroy_client(client)

    def call_trigger(self, service: str, timeout_s: float = 10.0) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service (``ros2 service call SERVICE std_srvs/srv/Trigger``);
        (success, message)."""
        client = self.node.create_client(Trigger, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise ProbeError(f"{service} is not available")
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                raise ProbeError(f"{service} did not answer in {timeout_s:.0f} s")
            res = future.result()
            return bool(res.success), str(res.message)
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
