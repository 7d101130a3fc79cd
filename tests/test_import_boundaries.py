"""The house rules on imports, checked on the real package.

- Only ``pearl_robot/ros/`` imports rclpy (source scan: catches lazy imports too).
- The robot-side packages (runtime, datalog, hardware) and the pure-numpy task families import
  neither torch nor mujoco nor rclpy: a fresh interpreter imports every module in them and
  must not end up with those in ``sys.modules``.
- ``core`` imports torch and numpy, never MuJoCo or rclpy.
"""

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pearl_robot

PKG = Path(pearl_robot.__file__).parent
RCLPY_IMPORT = re.compile(r"^\s*(import rclpy|from rclpy)", re.MULTILINE)


def test_rclpy_is_imported_only_under_ros():
    offenders = [str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py")
                 if p.relative_to(PKG).parts[0] != "ros" and RCLPY_IMPORT.search(p.read_text())]
    assert offenders == []


def _modules(sub: str) -> list[str]:
    path = PKG / sub
    return [f"pearl_robot.{sub}"] + [f"pearl_robot.{sub}.{m.name}"
                                     for m in pkgutil.iter_modules([str(path)])]


def _imported_after(modules: list[str]) -> set[str]:
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("sub", ["runtime", "datalog", "hardware"])
def test_robot_side_imports_neither_torch_nor_mujoco(sub):
    mods = _modules(sub) + \
        ["pearl_robot.tasks.point_robot", "pearl_robot.tasks.registry"]
    loaded = _imported_after(mods)
    assert not loaded & {"torch", "mujoco", "rclpy", "gymnasium"}, sorted(loaded)


def test_core_imports_no_mujoco_or_rclpy():
    loaded = _imported_after(_modules("core"))
    assert "torch" in loaded
    assert not loaded & {"mujoco", "rclpy", "gymnasium"}


def test_cli_help_imports_nothing_heavy():
    loaded = _imported_after(["pearl_robot.cli"])
    assert not loaded & {"torch", "mujoco", "rclpy", "onnxruntime"}
