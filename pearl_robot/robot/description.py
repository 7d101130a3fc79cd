"""The robot description, defined once: joint names, limits and units, read from the MJCF in sim/.

The twin (MuJoCo), the firmware emulator, the serial bridge, the ROS nodes and the bundle
contract all need the same joint names, order and limits. They live in the MJCF model file and
nowhere else; this module parses them with ``xml.etree`` so that robot-side code (which must not
import MuJoCo) can read them too.

Where values come from (SI units: rad, rad/s, N*m):
- joint order and names: the ``<actuator>`` elements, in file order (one per joint; each drives
  a hinge or slide ``joint``). Commands are efforts, one per joint, in this order.
- ``position_min``/``position_max``: the joint's ``range`` (converted from degrees when
  ``<compiler angle>`` is not ``radian``, MJCF's own default being degrees).
- ``effort_max``: the actuator's symmetric ``ctrlrange`` times its ``gear`` (or the joint's
  ``actuatorfrcrange`` when it is tighter).
- ``velocity_max``: ``<custom><numeric name="pearl/velocity_max/<joint>">``.
- ``control_period``: ``<numeric name="pearl/control_period">`` (seconds; required). This is
  the one source of the policy's control period: the twin steps by it, the trainer records it,
  the bundle contract carries it as ``control_period`` and the policy node's timer runs at it.
- ``command_interface``: ``<text name="pearl/command_interface">`` (default "effort").

A missing or inconsistent value raises :class:`RobotSpecError` naming the element, never a
silent default: a wrong limit on hardware is worse than a refusal to start.
"""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pearl_robot.errors import PearlRobotError

DEFAULT_MODEL = "arm3.xml"
"""File name of the default robot in sim/."""

_NUMERIC_PREFIX = "pearl/"
_ACTUATOR_TAGS = ("motor", "general", "position", "velocity", "intvelocity", "damper",
                  "cylinder", "muscle", "adhesion")


class RobotSpecError(PearlRobotError):
    """The robot's MJCF is missing, unreadable, or lacks a limit the stack needs."""


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint, in SI units."""

    name: str
    """Joint name as in the MJCF and on /joint_states."""
    position_min: float
    """Lower position limit (rad for hinges, m for slides)."""
    position_max: float
    """Upper position limit (rad for hinges, m for slides)."""
    velocity_max: float
    """Speed limit, symmetric (rad/s or m/s); exceeding it is a fault on the robot."""
    effort_max: float
    """Effort command limit, symmetric (N*m or N); commands are clipped to it."""


@dataclass(frozen=True)
class RobotSpec:
    """The robot as the control stack sees it: joints in command order and the control rate."""

    name: str
    """Model name (``<mujoco model=...>``)."""
    joints: tuple[JointSpec, ...]
    """Actuated joints in command order."""
    control_period: float
    """Policy control period in seconds (``pearl/control_period``; 0.05 for arm3's 20 Hz)."""
    command_interface: str = "effort"
    """What a command holds per joint; only "effort" (N*m) is supported."""

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def position_limits(self) -> tuple[list[float], list[float]]:
        """(lower, upper) position limits in joint order."""
        return [j.position_min for j in self.joints], [j.position_max for j in self.joints]

    def velocity_limits(self) -> list[float]:
        return [j.velocity_max for j in self.joints]

    def effort_limits(self) -> list[float]:
        return [j.effort_max for j in self.joints]

    def to_dict(self) -> dict[str, object]:
        """JSON-able form for bundle contracts and /pearl/task."""
        return {"name": self.name, "control_period": self.control_period,
                "command_interface": self.command_interface,
                "joints": [{"name": j.name, "position_min": j.position_min,
                            "position_max": j.position_max, "velocity_max": j.velocity_max,
                            "effort_max": j.effort_max, "position_unit": "rad",
                            "velocity_unit": "rad/s", "effort_unit": "N*m"}
                           for j in self.joints]}


def sim_dir() -> Path:
    """Where the MJCF models live: the source tree's sim/, else the package's share directory
    from the ament index (a colcon install), else the share directory of this Python prefix
    (a pip install)."""
    source = Path(__file__).resolve().parents[2] / "sim"
    candidates = [source]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("pearl_robot")) / "sim")
    except (ImportError, LookupError, ValueError, OSError):
        pass  # no ament index, or the package is not in it
    candidates.append(Path(sys.prefix) / "share" / "pearl_robot" / "sim")
    for c in candidates:
        if c.is_dir():
            return c
    raise RobotSpecError("no sim/ directory with MJCF models: looked in "
                         + ", ".join(str(c) for c in candidates))


def default_mjcf_path() -> Path:
    """Path of the default robot model (sim/arm3.xml)."""
    return sim_dir() / DEFAULT_MODEL


def _floats(text: str | None, where: str, n: int) -> list[float]:
    if text is None:
        raise RobotSpecError(f"{where} is missing")
    try:
        vals = [float(v) for v in text.split()]
    except ValueError:
        raise RobotSpecError(f"{where} is not numeric: {text!r}") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise RobotSpecError(f"{where} must hold {n} finite number(s), got {text!r}")
    return vals


def load_robot_spec(mjcf_path: str | Path | None = None) -> RobotSpec:
    """Parse the robot description from an MJCF file (default: sim/arm3.xml)."""
    path = Path(mjcf_path) if mjcf_path is not None else default_mjcf_path()
    root = _read_mjcf(path)
    compiler = root.find("compiler")
    angle = compiler.get("angle", "degree") if compiler is not None else "degree"
    to_rad = 1.0 if angle == "radian" else math.pi / 180.0
    numerics, texts = _custom_fields(root)
    joints_by_name = {j.get("name"): j for j in root.iter("joint") if j.get("name")}
    specs = [_joint_spec(act, joints_by_name, numerics, to_rad, path)
             for act in _actuators(root, path)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RobotSpecError(f"{path.name}: a joint is driven by more than one actuator: {names}")
    period_key = f"{_NUMERIC_PREFIX}control_period"
    (period,) = _floats(numerics.get(period_key), f"{path.name}: custom numeric "
                        f"{period_key!r} (the control period, seconds)", 1)
    if period <= 0:
        raise RobotSpecError(f"{path.name}: {period_key} must be positive, got {period}")
    interface = texts.get(f"{_NUMERIC_PREFIX}command_interface", "effort")
    if interface != "effort":
        raise RobotSpecError(f"{path.name}: command_interface {interface!r} is not supported "
                             "(only 'effort')")
    return RobotSpec(name=root.get("model", path.stem), joints=tuple(specs),
                     control_period=period, command_interface=interface)


def _read_mjcf(path: Path) -> ET.Element:
    """The model's root element, refused unless it is one self-contained MJCF file."""
    if not path.is_file():
        raise RobotSpecError(f"robot model {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise RobotSpecError(f"robot model {path} is not valid XML: {exc}") from None
    if root.tag != "mujoco":
        raise RobotSpecError(f"{path}: root element is <{root.tag}>, expected <mujoco>")
    if root.find(".//include") is not None:
        raise RobotSpecError(f"{path}: <include> is not supported by the spec parser; keep the "
                             "joints, actuators and custom fields in one file")
    return root


def _custom_fields(root: ET.Element) -> tuple[dict[str, str], dict[str, str]]:
    """``<custom>``'s numeric and text fields, name -> data."""
    numerics: dict[str, str] = {}
    texts: dict[str, str] = {}
    for custom in root.iter("custom"):
        for el in custom.findall("numeric"):
            numerics[el.get("name", "")] = el.get("data", "")
        for el in custom.findall("text"):
            texts[el.get("name", "")] = el.get("data", "")
    return numerics, texts


def _actuators(root: ET.Element, path: Path) -> list[ET.Element]:
    """The actuators in file order: the command order."""
    actuator_root = root.find("actuator")
    actuators = ([a for a in actuator_root if a.tag in _ACTUATOR_TAGS]
                 if actuator_root is not None else [])
    if not actuators:
        raise RobotSpecError(f"{path}: no <actuator> elements; the spec needs one per joint")
    return actuators


def _joint_spec(act: ET.Element, joints_by_name: dict[str | None, ET.Element],
                numerics: dict[str, str], to_rad: float, path: Path) -> JointSpec:
    """One actuator's joint: its range, the actuator's effort limit, the custom speed limit."""
    jname = act.get("joint")
    where = f"{path.name}: actuator {act.get('name', '?')!r}"
    if jname is None:
        raise RobotSpecError(f"{where} does not drive a joint (joint= attribute)")
    joint = joints_by_name.get(jname)
    if joint is None:
        raise RobotSpecError(f"{where} drives unknown joint {jname!r}")
    jtype = joint.get("type", "hinge")
    if jtype not in ("hinge", "slide"):
        raise RobotSpecError(f"{path.name}: joint {jname!r} has type {jtype!r}; only hinge "
                             "and slide joints can be commanded")
    if joint.get("limited", "auto") == "false":
        raise RobotSpecError(f"{path.name}: joint {jname!r} is unlimited; set range")
    lo, hi = _floats(joint.get("range"), f"{path.name}: joint {jname!r} range", 2)
    if jtype == "hinge":
        lo, hi = lo * to_rad, hi * to_rad
    if not lo < hi:
        raise RobotSpecError(f"{path.name}: joint {jname!r} range {lo}..{hi} is empty")
    clo, chi = _floats(act.get("ctrlrange"), f"{where} ctrlrange", 2)
    (gear,) = _floats(act.get("gear", "1").split()[0], f"{where} gear", 1)
    if clo != -chi or chi <= 0:
        raise RobotSpecError(f"{where} ctrlrange must be symmetric around 0, got {clo} {chi}")
    effort = abs(chi * gear)
    if joint.get("actuatorfrcrange") is not None:
        flo, fhi = _floats(joint.get("actuatorfrcrange"),
                           f"{path.name}: joint {jname!r} actuatorfrcrange", 2)
        effort = min(effort, abs(flo), abs(fhi))
    vkey = f"{_NUMERIC_PREFIX}velocity_max/{jname}"
    (vmax,) = _floats(numerics.get(vkey), f"{path.name}: custom numeric {vkey!r}", 1)
    if vmax <= 0:
        raise RobotSpecError(f"{path.name}: {vkey} must be positive, got {vmax}")
    return JointSpec(jname, lo, hi, vmax, effort)
