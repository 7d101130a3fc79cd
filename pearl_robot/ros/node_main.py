"""The console-script ``main`` every node shares (``ros2 run pearl_robot <node>``).

The init/spin/shutdown idiom that behaves the same on Humble, Jazzy and Kilted: ``rclpy.init``,
spin a SingleThreadedExecutor, treat Ctrl-C and an external shutdown as a normal stop, and always
``destroy_node`` (which closes files and stops worker threads) before ``try_shutdown``. Expected
failures (a bad parameter, a refused bundle, a missing port) print one line and exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from pearl_robot.errors import PearlRobotError


def run_node(factory: Callable[[], Node], args: list[str] | None = None,
             stop_when: Callable[[Node], bool] | None = None) -> int:
    """Create the node with ``factory`` and spin it until shutdown, or until
    ``stop_when(node)`` is true (a node that finished its job); the process exit code."""
    rclpy.init(args=args)
    node: Node | None = None
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if stop_when is None:
            executor.spin()
        else:
            while rclpy.ok() and not stop_when(node):
                executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except PearlRobotError as exc:
        print(f"[{getattr(node, 'get_name', lambda: 'pearl_robot')()}] error: {exc}",
              file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
