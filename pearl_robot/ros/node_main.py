"""The console-script ``main`` every node shares (``ros2 run pearl_robot <node>``).

The init/spin/shutdown idiom that behaves the same on Humble, Jazzy and Kilted, whenever the
stop comes. ``ros2 launch`` sends SIGINT to every node the moment a required one dies, which can
be while a node is still importing MuJoCo or onnxruntime, inside ``rclpy.init`` or inside its
constructor. With rclpy's own handlers those three moments ended three different ways (a
KeyboardInterrupt traceback, an ``RCLError`` "context is invalid", and once a node that ignored
SIGINT and SIGTERM until launch killed it), and a policy node stopped during spin could not send
its safe command because the handler had already shut the context down. So the process owns the
two signals from its first line (:class:`StopRequest`, installed by the console-script entry
points below before the node module is imported), rclpy installs none
(``SignalHandlerOptions.NO``), and one loop checks the request between 0.1 s spins. A stop
before the node exists exits 0 without starting it; a stop while running leaves through
``destroy_node`` (safe command, closed files) with the context still up, then ``try_shutdown``.

Expected failures (a bad parameter, a refused bundle, a missing port) print one line and exit 1.
This module imports nothing heavy at its top so that its entry points are the first code to run.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rclpy.node import Node

SPIN_PERIOD_S = 0.1
"""Longest wait between two checks of the stop request (and of ``stop_when``)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

EXECUTOR_PARAM = "executor"
"""The parameter every node reads (``run_node`` declares it): which rclpy executor spins it."""
EXECUTORS = ("single", "events")
"""``single``: rclpy's SingleThreadedExecutor (Humble, Jazzy, Kilted). ``events``: rclpy's
EventsExecutor (``rclpy.experimental``, Jazzy and newer), a C++ event queue instead of a wait
set rebuilt in Python on every wake-up: 0.6 ms less from state to command in ``bench_ros``.
Experimental here: with it, the ROS suite's shutdown tests fail (a logger node that did not
finish cleanly at the end of a launch; docs/performance.md, "ROS 2 adapt graph", run F)."""
DEFAULT_EXECUTOR = "single"


def check_executor(name: str) -> str:
    """``name`` if it is one of :data:`EXECUTORS`, else a ConfigError naming the parameter."""
    from pearl_robot.errors import ConfigError

    if name not in EXECUTORS:
        raise ConfigError(f"{EXECUTOR_PARAM} must be one of {', '.join(EXECUTORS)}, got "
                          f"{name!r}")
    return name


def make_executor(name: str, context: object | None = None) -> object:
    """The executor called ``name`` (one of :data:`EXECUTORS`); a clear error where this
    rclpy lacks it."""
    from pearl_robot.errors import ConfigError

    if name == "single":
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=context)
    if name == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError as exc:
            raise ConfigError(f"{EXECUTOR_PARAM}:=events needs rclpy's EventsExecutor "
                              "(rclpy.experimental, ROS 2 Jazzy or newer); this rclpy has "
                              f"none ({exc}); use {EXECUTOR_PARAM}:=single") from exc
        return EventsExecutor(context=context)
    check_executor(name)
    raise AssertionError(f"EXECUTORS lists {name!r} but make_executor does not build it")


def node_executor(node: Node) -> object:
    """The executor the node's ``executor`` parameter names (declared here, default
    :data:`DEFAULT_EXECUTOR`), for the node's context."""
    if not node.has_parameter(EXECUTOR_PARAM):
        node.declare_parameter(EXECUTOR_PARAM, DEFAULT_EXECUTOR)
    name = node.get_parameter(EXECUTOR_PARAM).value
    return make_executor(str(name), context=node.context)


class StopRequest:
    """SIGINT or SIGTERM, remembered as a request to stop instead of raised where it lands."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        """Take over SIGINT and SIGTERM (main thread only: elsewhere Python refuses, and the
        caller's own handling stays in charge)."""
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._on_signal)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def run_node(factory: Callable[[], Node], args: list[str] | None = None,
             stop_when: Callable[[Node], bool] | None = None,
             stop: StopRequest | None = None) -> int:
    """Create the node with ``factory`` and spin it until a stop request (SIGINT/SIGTERM, or
    ``stop`` when the caller installed one earlier), an external shutdown, or ``stop_when(node)``
    (a node that finished its job); the process exit code."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from pearl_robot.errors import PearlRobotError

    owned = stop is None
    request = StopRequest().install() if stop is None else stop
    node: Node | None = None
    try:
        if request.is_set():
            return 0  # stopped before it started: nothing to undo
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = factory()
        executor = node_executor(node)
        executor.add_node(node)
        while rclpy.ok() and not request.is_set():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            if stop_when is not None and stop_when(node):
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except PearlRobotError as exc:
        name = node.get_name() if node is not None else "pearl_robot"
        print(f"[{name}] error: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        finally:
            if owned:
                request.restore()
    return 0


def _entry(module: str) -> int:
    """A node's console script: take the stop signals first, then import the node module (the
    slow part of a start) and run its ``main``."""
    stop = StopRequest().install()
    try:
        if stop.is_set():
            return 0
        return importlib.import_module(module).main(stop=stop)
    finally:
        stop.restore()


def policy_node() -> int:
    return _entry("pearl_robot.ros.policy_node")


def logger_node() -> int:
    return _entry("pearl_robot.ros.logger_node")


def twin_node() -> int:
    return _entry("pearl_robot.ros.twin_node")


def bridge_node() -> int:
    return _entry("pearl_robot.ros.bridge_node")
