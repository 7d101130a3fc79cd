"""Task families by name. MuJoCo families are imported only when asked for, so the pure-numpy
families (and the robot-side code) never import MuJoCo."""

from __future__ import annotations

import importlib
from typing import Any

from pearl_robot.errors import ConfigError
from pearl_robot.tasks.base import TaskFamily

# name -> (module, factory attribute, fixed keyword arguments)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "point-robot": ("pearl_robot.tasks.point_robot", "PointRobotFamily", {"sparse": False}),
    "sparse-point-robot": ("pearl_robot.tasks.point_robot", "PointRobotFamily",
                           {"sparse": True}),
    "point-robot-switching": ("pearl_robot.tasks.switching", "point_robot_switching", {}),
}


def register(name: str, module: str, factory: str, **fixed: Any) -> None:
    """Add a family (the MuJoCo families are listed in ``tasks/mujoco_families.py``)."""
    FAMILIES[name] = (module, factory, fixed)


def make_family(name: str, **kwargs: Any) -> TaskFamily:
    """The task family called ``name`` (ConfigError naming the known ones otherwise)."""
    _load_optional()
    if name not in FAMILIES:
        raise ConfigError(f"unknown task family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    module, factory, fixed = FAMILIES[name]
    cls = getattr(importlib.import_module(module), factory)
    return cls(**{**fixed, **kwargs})


def _load_optional() -> None:
    """Register the MuJoCo families if their (lazy, MuJoCo-free at import) module exists."""
    try:
        entries = importlib.import_module("pearl_robot.tasks.mujoco_families").MUJOCO_FAMILIES
    except ModuleNotFoundError as exc:
        if exc.name != "pearl_robot.tasks.mujoco_families":
            raise
        return
    for name, entry in entries.items():
        FAMILIES.setdefault(name, entry)
