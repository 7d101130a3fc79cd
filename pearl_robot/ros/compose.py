"""Manual composition: the adapt graph's nodes in one process on one SingleThreadedExecutor.

This is what ``pearl-robot adapt`` runs where ``ros2 launch`` is not installed (a PyPI-only
machine, CI). The nodes are the same classes the console scripts start, built from the same
:class:`~pearl_robot.ros.graph.NodeSpec` list as the launch file; only the process layout differs.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Sequence

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from pearl_robot.ros.graph import NodeSpec

SHUTDOWN_ORDER = ("policy_node", "logger_node", "twin_node", "bridge_node")
"""Who stops first: the commander, then the log, then the robot (which holds zero effort)."""

NODE_CLASSES: dict[str, str] = {
    "policy_node": "pearl_robot.ros.policy_node:PolicyNode",
    "logger_node": "pearl_robot.ros.logger_node:LoggerNode",
    "twin_node": "pearl_robot.ros.twin_node:TwinNode",
    "bridge_node": "pearl_robot.ros.bridge_node:BridgeNode",
}
"""Executable name -> node class; imported on use, so robot:=serial never imports MuJoCo."""


def node_class(executable: str) -> type[Node]:
    module, _, attr = NODE_CLASSES[executable].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_node(spec: NodeSpec, context: Context | None = None) -> Node:
    """One node of the graph with exactly the spec's parameters and remappings."""
    cli_args: list[str] = []
    for src, dst in spec.remappings:
        cli_args += ["-r", f"{src}:={dst}"]
    overrides = [Parameter(k, value=v) for k, v in spec.parameters.items()]
    return node_class(spec.executable)(
        node_name=spec.name, context=context, parameter_overrides=overrides,
        cli_args=["--ros-args", *cli_args] if cli_args else None,
        use_global_arguments=False)


def create_nodes(specs: Sequence[NodeSpec], context: Context | None = None) -> list[Node]:
    """All nodes in spec order; on a failure the nodes already made are destroyed."""
    nodes: list[Node] = []
    try:
        for spec in specs:
            nodes.append(create_node(spec, context))
    except BaseException:
        for node in reversed(nodes):
            node.destroy_node()
        raise
    return nodes


def spin_graph(specs: Sequence[NodeSpec], stop: threading.Event | None = None,
               args: list[str] | None = None, drain_s: float = 0.5) -> int:
    """Init rclpy, create the nodes, spin them on one executor until ``stop`` is set (or an
    external shutdown), then stop in order: the policy first (its destroy sends the safe
    command), ``drain_s`` more spinning so the logger takes the transitions still in flight,
    then the logger (closing the episode log) and the robot node. Returns 0.

    rclpy's own SIGINT handler is not installed: it would shut the context down before the
    logger could drain; the caller maps SIGINT/SIGTERM to ``stop``.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    try:
        nodes = create_nodes(specs)
        for node in nodes:
            executor.add_node(node)
        while rclpy.ok() and (stop is None or not stop.is_set()):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        order = sorted(nodes, key=lambda n: SHUTDOWN_ORDER.index(n.get_name())
                       if n.get_name() in SHUTDOWN_ORDER else len(SHUTDOWN_ORDER))
        for i, node in enumerate(order):
            executor.remove_node(node)
            node.destroy_node()
            if i == 0 and rclpy.ok():
                deadline = time.monotonic() + drain_s
                while time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.02)
        executor.shutdown()
        rclpy.try_shutdown()
    return 0
