"""Frozen dataclass config <-> declared ROS parameters, one mapping for every node.

A node's configuration is a frozen dataclass (``ros/node_config.py``) whose field docstrings are
the parameter descriptions that ``ros2 param describe`` shows, so the text lives once. The node
declares one parameter per field (typed from the field's default, read-only unless the field is
listed in the class's ``DYNAMIC`` set), builds the config from the declared values, and validates
every later ``ros2 param set`` by building a candidate config: a value that the config refuses is
rejected with the config's own message and the running config stays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from pearl_robot.errors import PearlRobotError
from pearl_robot.ros.node_config import (
    config_from_mapping,
    field_docs,
    from_ros_value,
    ros_type_name,
    to_ros_value,
)

C = TypeVar("C")


class DeclaredConfig:
    """Declares a config's parameters on a node and keeps the validated, current config.

    ``on_change(old, new)`` runs after a successful ``ros2 param set`` of a dynamic field; it may
    raise :class:`PearlRobotError` to refuse the change (for instance a bundle that fails
    validation), and the previous config stays.
    """

    def __init__(self, node: Node, cls: type[C], defaults: C | None = None,
                 on_change: Callable[[Any, Any], None] | None = None) -> None:
        self._node = node
        self._cls = cls
        self._on_change = on_change
        dynamic = getattr(cls, "DYNAMIC", frozenset())
        docs = field_docs(cls)
        base = defaults if defaults is not None else cls()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = getattr(base, f.name)
            ros_value = to_ros_value(value)
            descriptor = ParameterDescriptor(
                description=docs.get(f.name, f.name),
                read_only=f.name not in dynamic,
                type=int(Parameter.Type[ros_type_name(value)]),
            )
            if isinstance(value, tuple) and not value:
                # An empty list has no element type for rclpy to infer; declare by type.
                node.declare_parameter(f.name, Parameter.Type[ros_type_name(value)], descriptor)
            else:
                node.declare_parameter(f.name, ros_value, descriptor)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = node.get_parameter(f.name).value
            if value is None:  # an empty array declared by type and never set
                value = getattr(base, f.name)
            values[f.name] = value
        self.value = config_from_mapping(cls, values)
        node.add_on_set_parameters_callback(self._validate)

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        names = {f.name for f in dataclasses.fields(self._cls)}  # type: ignore[arg-type]
        mine = [p for p in params if p.name in names]
        if not mine:
            return SetParametersResult(successful=True)
        try:
            changes = {p.name: from_ros_value(getattr(self.value, p.name), p.value, p.name)
                       for p in mine}
            candidate = dataclasses.replace(self.value, **changes)
            if self._on_change is not None:
                self._on_change(self.value, candidate)
        except PearlRobotError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        except (TypeError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=f"invalid value: {exc}")
        self.value = candidate
        return SetParametersResult(successful=True)
