"""Manual composition: the adapt graph's nodes in one process on one SingleThreadedExecutor.

This is what ``pearl-robot adapt`` runs where ``ros2 launch`` is not installed (a PyPI-only
machine, CI). The nodes are the same classes the console scripts start, built from the same
:class:`~pearl_robot.ros.graph.NodeSpec` list as the launch file; only the process layout differs.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence

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


class ComposedGraph:
    """The graph's nodes on one SingleThreadedExecutor in this process (and its context)."""

    def __init__(self, specs: Sequence[NodeSpec], context: Context | None = None) -> None:
        self.context = context
        self.nodes = create_nodes(specs, context)
        # Always the SingleThreadedExecutor: with the EventsExecutor a SIGINT here ran a
        # callback on an already destroyed publisher and the process exited 1 (measured,
        # docs/performance.md, run F); the nodes' ``executor`` parameter applies to launched
        # processes only.
        self.executor = SingleThreadedExecutor(context=context)
        for node in self.nodes:
            self.executor.add_node(node)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.get_name() == name)

    def spin_until(self, done: Callable[[], bool], timeout_s: float,
                   step_s: float = 0.02) -> bool:
        """Spin until ``done()`` or ``timeout_s`` wall seconds; the final ``done()``."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=step_s)
        return done()

    def shutdown(self, drain_s: float = 0.5) -> None:
        """Stop in order: the policy first (its destroy sends the safe command), ``drain_s``
        of spinning so the logger takes the transitions in flight, then the logger (closing
        the episode log) and the robot node. Before any of that, every node with a
        ``before_shutdown()`` gets it (the serial bridge disarms the robot, which would
        otherwise be armed with nobody commanding it while the others stop)."""
        for node in self.nodes:
            prepare = getattr(node, "before_shutdown", None)
            if callable(prepare):
                prepare()
        ctx_ok = (self.context.ok() if self.context is not None else rclpy.ok())
        order = sorted(self.nodes, key=lambda n: SHUTDOWN_ORDER.index(n.get_name())
                       if n.get_name() in SHUTDOWN_ORDER else len(SHUTDOWN_ORDER))
        for i, node in enumerate(order):
            self.executor.remove_node(node)
            node.destroy_node()
            if i == 0 and ctx_ok and drain_s > 0:
                deadline = time.monotonic() + drain_s
                while time.monotonic() < deadline:
                    self.executor.spin_once(timeout_sec=0.02)
        self.nodes = []
        self.executor.shutdown()


def spin_graph(specs: Sequence[NodeSpec], stop: threading.Event | None = None,
               args: list[str] | None = None, drain_s: float = 0.5,
               done: Callable[[ComposedGraph], bool] | None = None,
               on_stop: Callable[[ComposedGraph], None] | None = None) -> int:
    """Init rclpy, run the graph until ``stop`` is set (or an external shutdown), shut it
    down in order (:meth:`ComposedGraph.shutdown`) and rclpy with it. Returns 0.

    rclpy's own SIGINT handler is not installed: it would shut the context down before the
    logger could drain; the caller maps SIGINT/SIGTERM to ``stop``. ``done(graph)`` ends the
    run early when true; ``on_stop(graph)`` sees the nodes once more before they go.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    graph_: ComposedGraph | None = None
    try:
        graph_ = ComposedGraph(specs)
        while rclpy.ok() and (stop is None or not stop.is_set()):
            graph_.executor.spin_once(timeout_sec=0.1)
            if done is not None and done(graph_):
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if graph_ is not None:
            if on_stop is not None:
                on_stop(graph_)
            graph_.shutdown(drain_s)
        rclpy.try_shutdown()
    return 0
