"""ROS messages <-> numpy, and nothing else: no state, no policy, no I/O.

- ``/joint_states`` -> observation vector in the order of the bundle contract's obs names. A name
  is ``<joint>/<field>`` with field ``position``, ``velocity`` or ``effort`` (``.`` is accepted as
  the separator too). The message's own joint order is free (ros2_control publishes in its own
  order); the index map is cached per distinct name list so a 20 Hz stream costs one dict lookup.
- ``Float64MultiArray`` with ``layout.dim`` labels for commands, transitions and beliefs.
- ``DiagnosticArray`` builders (``diagnostic_msgs/DiagnosticStatus`` levels OK/WARN/ERROR/STALE).
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from pearl_robot.datalog.schema import DimSpec, TransitionLayout
from pearl_robot.errors import PearlRobotError

JOINT_FIELDS = ("position", "velocity", "effort")
"""JointState arrays an observation entry can come from."""

OK = 0
"""Diagnostic levels as ints (the message field is a ``byte``: ``bytes`` in Python)."""
WARN = 1
ERROR = 2
STALE = 3


class ConversionError(PearlRobotError, ValueError):
    """A message does not carry what the receiver needs; the message names what is missing."""


class ObsEntry(NamedTuple):
    """Where one observation entry comes from in a JointState."""

    joint: str
    field: str


def parse_obs_names(obs_names: Sequence[str]) -> tuple[ObsEntry, ...]:
    """Contract obs names (``shoulder/position``) -> (joint, field) pairs, in order."""
    out = []
    for name in obs_names:
        sep = "/" if "/" in name else "."
        joint, _, field = name.rpartition(sep)
        if not joint or field not in JOINT_FIELDS:
            raise ConversionError(
                f"observation name {name!r} is not '<joint>/<field>' with field in "
                f"{JOINT_FIELDS}: this bundle's observation cannot be built from /joint_states")
        out.append(ObsEntry(joint, field))
    return tuple(out)


class JointStateReader:
    """Builds the observation vector from JointState messages, by joint name."""

    def __init__(self, entries: Sequence[ObsEntry]) -> None:
        self.entries = tuple(entries)
        self._cache_key: tuple[str, ...] | None = None
        self._index: list[int] = []
        self._out = np.empty(len(self.entries), dtype=np.float64)

    @classmethod
    def from_obs_names(cls, obs_names: Sequence[str]) -> JointStateReader:
        return cls(parse_obs_names(obs_names))

    def read(self, msg: JointState) -> np.ndarray:
        """A fresh obs array; ConversionError for missing joints or short arrays. NaN/inf
        values are passed through: the runtime's safety layer decides what they mean."""
        names = tuple(msg.name)
        if names != self._cache_key:
            where = {n: i for i, n in enumerate(names)}
            missing = sorted({e.joint for e in self.entries if e.joint not in where})
            if missing:
                raise ConversionError(f"/joint_states lacks joint(s) {missing}; it has "
                                      f"{list(names)}")
            self._index = [where[e.joint] for e in self.entries]
            self._cache_key = names
        arrays = {"position": msg.position, "velocity": msg.velocity, "effort": msg.effort}
        out = self._out
        for k, (entry, i) in enumerate(zip(self.entries, self._index)):
            arr = arrays[entry.field]
            if i >= len(arr):
                raise ConversionError(
                    f"/joint_states has {len(arr)} {entry.field} values for {len(names)} "
                    f"joints; {entry.joint!r} (index {i}) has no {entry.field}")
            out[k] = arr[i]
        return out.copy()


def joint_state_msg(names: Sequence[str], position: np.ndarray, velocity: np.ndarray,
                    effort: np.ndarray, stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(v) for v in position]
    msg.velocity = [float(v) for v in velocity]
    msg.effort = [float(v) for v in effort]
    return msg


def labelled_array(fields: Mapping[str, np.ndarray | float | Sequence[float]]
                   ) -> Float64MultiArray:
    """Concatenate named fields; ``layout.dim[i]`` = (label, size, offset), like the
    transition schema, so every array this package publishes reads the same way."""
    msg = Float64MultiArray()
    data: list[float] = []
    for label, value in fields.items():
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        msg.layout.dim.append(MultiArrayDimension(label=label, size=int(arr.size),
                                                  stride=len(data)))
        data.extend(float(v) for v in arr)
    msg.data = data
    return msg


def command_msg(effort: np.ndarray) -> Float64MultiArray:
    """``/pearl/command``: one effort per joint, in the contract's joint order (the shape of a
    ros2_control forward_command_controller input)."""
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="effort", size=len(effort), stride=0)]
    msg.data = array.array("d", effort)  # the typed fast path: no per-element checks
    return msg


def command_from_msg(msg: Float64MultiArray, n_joints: int) -> np.ndarray:
    """The effort vector of a command; ConversionError for a wrong size or non-finite values."""
    data = np.asarray(msg.data, dtype=np.float64)
    if data.shape != (n_joints,):
        raise ConversionError(f"/pearl/command has {data.size} values, the robot has "
                              f"{n_joints} joints")
    if not np.all(np.isfinite(data)):
        raise ConversionError(f"/pearl/command carries non-finite values {data.tolist()}")
    return data


def transition_msg(layout: TransitionLayout, vec: np.ndarray) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=d.label, size=d.size, stride=d.stride)
                      for d in layout.dims()]
    msg.data = vec.tolist()
    return msg


def transition_from_msg(msg: Float64MultiArray) -> tuple[TransitionLayout, np.ndarray]:
    """Layout (checked against the schema) and the flat vector of a transition message."""
    layout = TransitionLayout.from_dims(
        [DimSpec(d.label, int(d.size), int(d.stride)) for d in msg.layout.dim])
    vec = np.asarray(msg.data, dtype=np.float64)
    if vec.shape != (layout.size,):
        raise ConversionError(f"/pearl/transition has {vec.size} values, its layout says "
                              f"{layout.size}")
    return layout, vec


def belief_msg(mean: np.ndarray, var: np.ndarray, context_size: int) -> Float64MultiArray:
    return labelled_array({"mean": mean, "var": var, "context_size": float(context_size)})


def change_msg(status: Any) -> Float64MultiArray:
    """The change detector's state after a tick (``runtime.change_detection.ChangeStatus``):
    surprise, standardized score, CUSUM, threshold, changed (0/1), run, changes, scored, warm
    (NaN surprise/score: the transition was not scored)."""
    return labelled_array({
        "surprise": float(status.surprise), "score": float(status.score),
        "cusum": float(status.cusum), "threshold": float(status.threshold),
        "changed": float(status.changed), "run": float(status.run),
        "changes": float(status.changes), "scored": float(status.scored),
        "warm": float(status.warm)})


def diagnostic_status(name: str, hardware_id: str, level: int, message: str,
                      values: Mapping[str, object]) -> DiagnosticStatus:
    """A status whose values print compactly (floats to 4 significant digits)."""
    status = DiagnosticStatus()
    status.level = bytes([level])
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
    return status


def diagnostic_array(stamp: Time, statuses: Iterable[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = list(statuses)
    return msg


def level_of(status: DiagnosticStatus) -> int:
    """The level as an int on every distro (Humble's is ``bytes``)."""
    level = status.level
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9
