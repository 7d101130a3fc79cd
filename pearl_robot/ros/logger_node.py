"""logger_node: every /pearl/transition into the episode log (``pearl_robot.datalog``).

A thin adapter over :class:`pearl_robot.datalog.writer.DatasetWriter`. The subscription takes
transitions as serialized CDR (``raw=True``): the callback only hands the bytes to the writer's
queue, and the writer's own thread decodes, writes MCAP chunks and group-commits with fsync, so
a slow disk never stalls the executor (which, composed, also runs the 20 Hz policy).

- The dataset is opened (recovery of a crashed run included) on a helper thread once the
  first transition tells the layout; transitions and task messages that arrive meanwhile wait
  in a bounded buffer, in arrival order (:class:`pearl_robot.datalog.pending.PendingLog`), so
  each is logged under the task in force when it was recorded.
- ``/pearl/task`` (latched) gives the writer the task and model of the episodes; a ``state`` of
  ``stopped``, ``estop``, ``shutdown`` or ``fault`` closes the open episode with that reason.
- ``destroy_node`` closes the writer: the open episode is closed and the manifest written.
- ``/diagnostics``: written, committed, queued, dropped, free disk, the writer's level (ERROR
  when logging cannot persist: the operator must know that data is being lost).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from std_msgs.msg import Float64MultiArray, String

from pearl_robot.datalog.pending import END_STATES, PendingLog, apply_task
from pearl_robot.datalog.writer import DatasetWriter, WriterConfig
from pearl_robot.errors import PearlRobotError
from pearl_robot.ros import graph, qos
from pearl_robot.ros.conversions import (
    ERROR,
    OK,
    WARN,
    ConversionError,
    diagnostic_array,
    diagnostic_status,
    transition_from_msg,
)
from pearl_robot.ros.node_config import LoggerNodeConfig
from pearl_robot.ros.node_main import StopRequest, run_node
from pearl_robot.ros.params import DeclaredConfig

__all__ = ["END_STATES", "LoggerNode", "main"]


class LoggerNode(Node):
    """Transitions -> DatasetWriter (its own thread does all I/O)."""

    def __init__(self, node_name: str = "logger_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = DeclaredConfig(self, LoggerNodeConfig)
        cfg: LoggerNodeConfig = self.params.value
        self.writer: DatasetWriter | None = None
        self.open_error: str | None = None
        self.received = 0
        self.rejected = 0
        self._pending = PendingLog(cfg.queue_size)
        self._lock = threading.Lock()
        self._opener: threading.Thread | None = None
        self.create_subscription(Float64MultiArray, graph.TRANSITION, self._on_transition,
                                 qos.transitions(), raw=True)
        self.create_subscription(String, graph.TASK, self._on_task, qos.latched())
        self.diag_pub = self.create_publisher(DiagnosticArray, graph.DIAGNOSTICS, qos.status())
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"logging /pearl/transition to {cfg.dataset_dir}")

    # ------------------------------------------------------------------ callbacks
    def _on_transition(self, data: bytes) -> None:
        self.received += 1
        writer = self.writer
        if writer is not None:
            if not writer.write_cdr(data):
                self.rejected += 1
            return
        with self._lock:
            if self.writer is not None:  # opened between the check and the lock
                if not self.writer.write_cdr(data):
                    self.rejected += 1
                return
            self._pending.add_transition(data)
            if self._opener is None and self.open_error is None:
                self._start_open(data)

    def _start_open(self, data: bytes) -> None:
        try:
            layout, _ = transition_from_msg(deserialize_message(data, Float64MultiArray))
        except (ConversionError, PearlRobotError) as exc:
            self.rejected += 1
            self._pending.discard_newest_transition()
            self.get_logger().error(f"transition refused: {exc}", throttle_duration_sec=5.0)
            return
        self._opener = threading.Thread(target=self._open, args=(layout,),
                                        name="logger-open", daemon=True)
        self._opener.start()

    def _open(self, layout: Any) -> None:
        cfg: LoggerNodeConfig = self.params.value
        try:
            writer = DatasetWriter(cfg.dataset_dir, layout,
                                   WriterConfig(robot=cfg.robot_id, queue_size=cfg.queue_size))
        except (PearlRobotError, OSError) as exc:
            self.open_error = str(exc)
            self.get_logger().error(f"cannot open dataset {cfg.dataset_dir}: {exc}; "
                                    "transitions are NOT logged")
            return
        if not writer.recovery.clean:
            self.get_logger().warning(f"dataset recovered: {writer.recovery.summary()}")
        # The policy node numbers the episodes (its session state); the logger only says what
        # was on disk before this run (taken before the buffered transitions claim their ids,
        # so a fresh dataset reads "no episodes" while the policy says "next episode id 0").
        on_disk = writer.episodes_on_disk()
        with self._lock:
            self.rejected += self._pending.drain_into(writer)
            self.writer = writer
        self.get_logger().info(f"dataset {cfg.dataset_dir} open; {on_disk}")

    def _on_task(self, msg: String) -> None:
        try:
            task = json.loads(msg.data)
            if not isinstance(task, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self.get_logger().error(f"/pearl/task is not a JSON object ({exc})")
            return
        model_sha = task.get("model_sha")
        with self._lock:
            writer = self.writer
            if writer is None:  # in order with the transitions buffered before the open
                self._pending.add_task(task, model_sha)
                return
        apply_task(writer, task, model_sha)

    # ------------------------------------------------------------------ diagnostics, shutdown
    def _publish_diagnostics(self) -> None:
        writer = self.writer
        values: dict[str, object] = {"received": self.received, "rejected": self.rejected,
                                     "buffered_before_open": self._pending.transitions,
                                     "lost_before_open": self._pending.lost}
        if writer is not None:
            st = writer.status()
            level = {0: OK, 1: WARN}.get(int(st.level), ERROR)
            message = st.message
            values.update(st.key_values())
        elif self.open_error is not None:
            level, message = ERROR, f"dataset not open: {self.open_error}"
        else:
            level, message = OK, "waiting for the first transition"
        status = diagnostic_status(f"{self.get_name()}: episode log", "pearl_datalog", level,
                                   message, values)
        self.diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def destroy_node(self) -> None:
        """Close the log: open episode closed, manifest written, lock released."""
        try:
            opener = getattr(self, "_opener", None)
            if opener is not None:
                opener.join(timeout=30.0)
            writer = getattr(self, "writer", None)
            if writer is not None:
                writer.close()
        finally:
            super().destroy_node()


def main(args: list[str] | None = None, stop: StopRequest | None = None) -> int:
    return run_node(LoggerNode, args, stop=stop)
