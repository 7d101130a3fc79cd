"""`ros2 launch pearl_robot adapt.launch.py`: the adapt graph, one process per node.

The graph (nodes, parameters, remappings) comes from ``pearl_robot.ros.graph.build_graph``,
the same function ``pearl-robot adapt`` composes in one process, so the two cannot drift.

    ros2 launch pearl_robot adapt.launch.py                       # twin, packaged bundle
    ros2 launch pearl_robot adapt.launch.py robot:=serial port:=/dev/ttyACM0 \\
        bundle:=/models/arm-v3 dataset_dir:=/data/night-12 episodes:=200
    ros2 launch pearl_robot adapt.launch.py --show-args           # every argument, described
"""

from __future__ import annotations

from pearl_robot.ros.graph import LAUNCH_ARGUMENTS, PACKAGE, NodeSpec, build_graph


def node_specs(values: dict[str, str]) -> tuple[NodeSpec, ...]:
    """The nodes this launch file starts for the given argument values."""
    return build_graph(values)


def _launch_setup(context, *args, **kwargs):
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    return [
        Node(package=PACKAGE, executable=spec.executable, name=spec.name,
             parameters=[spec.parameters], remappings=list(spec.remappings),
             output="screen", emulate_tty=True)
        for spec in node_specs(values)
    ]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [DeclareLaunchArgument(a.name, default_value=a.default,
                                      description=a.description)
                for a in LAUNCH_ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
