"""`ros2 launch pearl_robot adapt.launch.py`: the adapt graph, one process per node.

The graph (nodes, parameters, remappings) comes from ``pearl_robot.ros.graph.build_graph``,
the same function ``pearl-robot adapt`` composes in one process, so the two cannot drift.

    ros2 launch pearl_robot adapt.launch.py                       # twin, packaged bundle
    ros2 launch pearl_robot adapt.launch.py robot:=serial port:=/dev/ttyACM0 \\
        bundle:=/models/arm-v3 dataset_dir:=/data/night-12 episodes:=200
    ros2 launch pearl_robot adapt.launch.py episodes:=4 exit_when_done:=true   # 4, then exit
    ros2 launch pearl_robot adapt.launch.py --show-args           # every argument, described

The policy node is the graph's reason to run: when its process ends (its episodes are done
with ``exit_when_done:=true``, or it could not start, e.g. a refused bundle) the launch shuts
down, which sends SIGINT to the logger (it closes the episode log) and the robot node. Each
node gets SIGINT_GRACE_S to stop cleanly before launch escalates to SIGTERM (launch's default,
5 s, can cut the log's final fsync short on a slow disk or a busy computer); the standard
``sigterm_timeout:=S`` launch argument still overrides it.
"""

from __future__ import annotations

from pearl_robot.ros.graph import LAUNCH_ARGUMENTS, PACKAGE, NodeSpec, build_graph

SIGINT_GRACE_S = "15"
"""Seconds from SIGINT to SIGTERM for every node (launch's sigterm_timeout)."""


def node_specs(values: dict[str, str]) -> tuple[NodeSpec, ...]:
    """The nodes this launch file starts for the given argument values."""
    return build_graph(values)


def _launch_setup(context, *args, **kwargs):
    from launch.actions import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    nodes = []
    for spec in node_specs(values):
        on_exit = None
        if spec.executable == "policy_node":
            reason = ("the policy ran its episodes (exit_when_done)"
                      if spec.parameters.get("exit_when_done") else "the policy node ended")
            on_exit = [Shutdown(reason=reason)]
        elif spec.executable == "bridge_node":  # no robot, no run (a dead link, a refused one)
            on_exit = [Shutdown(reason="the serial bridge ended")]
        nodes.append(Node(package=PACKAGE, executable=spec.executable, name=spec.name,
                          parameters=[spec.parameters], remappings=list(spec.remappings),
                          output="screen", emulate_tty=True, on_exit=on_exit,
                          sigterm_timeout=LaunchConfiguration("sigterm_timeout",
                                                              default=SIGINT_GRACE_S)))
    return nodes


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [DeclareLaunchArgument(a.name, default_value=a.default,
                                      description=a.description)
                for a in LAUNCH_ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
