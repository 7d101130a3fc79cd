"""The `/pearl/transition` record: one control tick as a flat float64 vector, defined once.

The policy node packs a tick into a ``std_msgs/Float64MultiArray`` with this module, the logger
writes the message as is, and the reader unpacks it again; nobody else decides offsets. The
message's ``layout.dim`` says what the vector holds, so a log opened in Foxglove (or read by a
future version of this package) is self-describing:

- ``dim[0]`` is a *schema marker*: label ``pearl_transition/<version>``, size 0, stride 0.
- ``dim[1:]`` are the fields in order: label = field name, ``size`` = number of entries,
  ``stride`` = offset of the field's first entry in ``data`` (``data_offset`` is 0).

Fields (physical units throughout, as on /joint_states and /pearl/command):

=============  ======================  ==========================================================
field          size                    meaning
=============  ======================  ==========================================================
obs            obs_dim                 observation the action was computed from
action         action_dim              command sent (physical units, after the safety clip)
reward         1                       reward of the transition (task reward, physical)
next_obs       obs_dim                 observation one control period later
terminated     1                       1.0 when the MDP reached a terminal state, else 0.0
truncated      1                       1.0 when the episode ended by time limit/stop, else 0.0
episode        1                       episode id (integer valued, unique within a dataset)
step           1                       step index within the episode, 0-based, contiguous
task           1                       task index in the family's task list (-1 for a sampled
                                       task; the task's parameters are on /pearl/task)
stamps         3                       obs, action and next_obs times, seconds (ROS clock)
belief         2 * latent_dim + 1      posterior mean, posterior variance, context size
                                       (0 entries when ``latent_dim`` is 0: a scripted policy)
=============  ======================  ==========================================================

Float64 represents integers exactly up to 2**53, far beyond any episode or step count.

Pure numpy: no ROS, torch or MuJoCo import (the ROS code builds the message from
:meth:`TransitionLayout.dims`). The unpacked record, :class:`~pearl_robot.robot.transition.
Transition`, is the one the episode controller builds (``robot/transition.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pearl_robot.errors import PearlRobotError
from pearl_robot.robot.transition import Transition

SCHEMA_NAME = "pearl_transition"
"""Prefix of the schema marker label in ``layout.dim[0]``."""
SCHEMA_VERSION = 1
"""Bumped whenever a field is added, removed, reordered or resized in meaning."""
SCHEMA_MARKER = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"
"""Label of ``layout.dim[0]``: tells a reader which schema the vector follows."""

FIELDS: tuple[str, ...] = (
    "obs", "action", "reward", "next_obs", "terminated", "truncated",
    "episode", "step", "task", "stamps", "belief",
)
"""Field names in vector order."""

N_STAMPS = 3
"""Entries of ``stamps``: obs time, action time, next_obs time (seconds)."""
STAMP_NAMES: tuple[str, ...] = ("obs", "action", "next_obs")
"""What each entry of ``stamps`` is the time of."""


class SchemaError(PearlRobotError, ValueError):
    """A transition vector or layout does not match the schema; the message says how."""


class DimSpec(NamedTuple):
    """One ``std_msgs/MultiArrayDimension``: what the ROS conversions copy into ``layout.dim``."""

    label: str
    size: int
    stride: int


class TransitionBatch(NamedTuple):
    """Many unpacked ticks, first axis = transition; views into the packed matrix."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    task: np.ndarray
    stamps: np.ndarray
    belief: np.ndarray


@dataclass(frozen=True)
class TransitionLayout:
    """Sizes that fix the vector layout for one robot/model combination."""

    obs_dim: int
    """Observation size (what the bundle contract's obs names list)."""
    action_dim: int
    """Action size (one effort per joint for the robot twin)."""
    latent_dim: int = 0
    """Size of the latent task variable z; 0 when no belief is logged (scripted policy)."""

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise SchemaError(f"{name} must be an integer, got {value!r}")
        if self.obs_dim < 1 or self.action_dim < 1 or self.latent_dim < 0:
            raise SchemaError(
                f"bad layout sizes obs_dim={self.obs_dim} action_dim={self.action_dim} "
                f"latent_dim={self.latent_dim} (need obs_dim>=1, action_dim>=1, latent_dim>=0)")

    @property
    def belief_dim(self) -> int:
        """Entries of ``belief``: mean and variance of z plus the context size, or 0."""
        return 2 * self.latent_dim + 1 if self.latent_dim else 0

    def sizes(self) -> dict[str, int]:
        """Field name -> number of entries, in vector order."""
        return {
            "obs": self.obs_dim, "action": self.action_dim, "reward": 1,
            "next_obs": self.obs_dim, "terminated": 1, "truncated": 1, "episode": 1,
            "step": 1, "task": 1, "stamps": N_STAMPS, "belief": self.belief_dim,
        }

    def slices(self) -> dict[str, slice]:
        """Field name -> slice into the flat vector."""
        out: dict[str, slice] = {}
        offset = 0
        for name, size in self.sizes().items():
            out[name] = slice(offset, offset + size)
            offset += size
        return out

    @property
    def size(self) -> int:
        """Length of the packed vector."""
        return sum(self.sizes().values())

    def dims(self) -> list[DimSpec]:
        """The ``layout.dim`` entries: the schema marker, then one per field (stride=offset)."""
        out = [DimSpec(SCHEMA_MARKER, 0, 0)]
        out += [DimSpec(name, s.stop - s.start, s.start) for name, s in self.slices().items()]
        return out

    def to_json(self) -> dict[str, int]:
        """JSON form for manifests and dataset headers."""
        return {"schema_version": SCHEMA_VERSION, "obs_dim": self.obs_dim,
                "action_dim": self.action_dim, "latent_dim": self.latent_dim}

    @classmethod
    def from_json(cls, data: dict) -> TransitionLayout:
        version = int(data.get("schema_version", SCHEMA_VERSION))
        if version != SCHEMA_VERSION:
            raise SchemaError(f"transition schema version {version} is not supported "
                              f"(this package reads version {SCHEMA_VERSION})")
        return cls(int(data["obs_dim"]), int(data["action_dim"]), int(data["latent_dim"]))

    @classmethod
    def from_dims(cls, dims: Sequence[object]) -> TransitionLayout:
        """Rebuild the layout from a received message's ``layout.dim`` (DimSpec tuples or
        objects with ``label``/``size``/``stride``), checking every label, size and offset."""
        specs = [d if isinstance(d, tuple) else DimSpec(d.label, d.size, d.stride)  # type: ignore[attr-defined]
                 for d in dims]
        if not specs:
            raise SchemaError("transition message has an empty layout.dim (expected the "
                              f"{SCHEMA_MARKER!r} marker and {len(FIELDS)} labelled fields)")
        marker = specs[0][0]
        if not str(marker).startswith(SCHEMA_NAME + "/"):
            raise SchemaError(f"layout.dim[0] label is {marker!r}, expected {SCHEMA_MARKER!r}")
        if marker != SCHEMA_MARKER:
            raise SchemaError(f"transition schema {marker!r} is not supported "
                              f"(this package reads {SCHEMA_MARKER!r})")
        labels = [str(s[0]) for s in specs[1:]]
        if tuple(labels) != FIELDS:
            raise SchemaError(f"layout.dim labels {labels} do not match the schema {list(FIELDS)}")
        size = {str(s[0]): int(s[1]) for s in specs[1:]}
        belief = size["belief"]
        if belief and belief % 2 != 1:
            raise SchemaError(f"belief size {belief} is not 2 * latent_dim + 1")
        layout = cls(size["obs"], size["action"], (belief - 1) // 2 if belief else 0)
        if layout.dims() != [DimSpec(str(a), int(b), int(c)) for a, b, c in specs]:
            raise SchemaError(f"layout.dim sizes/offsets {[tuple(s) for s in specs]} are "
                              f"inconsistent with the schema (expected {layout.dims()})")
        return layout

    # ---------------------------------------------------------------- pack / unpack

    def pack(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
             terminated: bool, truncated: bool, episode: int, step: int, task: int = -1,
             stamps: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
             belief: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """One tick -> flat float64 vector (into ``out`` when given, no allocation).

        ``belief`` is ``concat(mean, var, [context_size])``; None logs NaN mean/var and a
        context size of 0 (the policy had no belief yet). Wrong sizes raise SchemaError."""
        vec = np.empty(self.size, dtype=np.float64) if out is None else out
        if vec.shape != (self.size,) or vec.dtype != np.float64:
            raise SchemaError(f"pack output must be float64 of shape ({self.size},), got "
                              f"{vec.dtype} {vec.shape}")
        sl = self.slices()
        _put(vec, sl["obs"], obs, "obs")
        _put(vec, sl["action"], action, "action")
        vec[sl["reward"].start] = reward
        _put(vec, sl["next_obs"], next_obs, "next_obs")
        vec[sl["terminated"].start] = 1.0 if terminated else 0.0
        vec[sl["truncated"].start] = 1.0 if truncated else 0.0
        vec[sl["episode"].start] = episode
        vec[sl["step"].start] = step
        vec[sl["task"].start] = task
        _put(vec, sl["stamps"], stamps, "stamps")
        if self.belief_dim:
            if belief is None:
                vec[sl["belief"]] = np.nan
                vec[sl["belief"].stop - 1] = 0.0
            else:
                _put(vec, sl["belief"], belief, "belief")
        elif belief is not None and np.size(belief):
            raise SchemaError(f"belief given ({np.size(belief)} values) but the layout has "
                              "latent_dim=0")
        return vec

    def unpack(self, vec: np.ndarray) -> Transition:
        """Flat vector -> :class:`Transition` (array fields are views)."""
        v = np.asarray(vec, dtype=np.float64)
        if v.shape != (self.size,):
            raise SchemaError(f"transition vector has shape {v.shape}, layout "
                              f"{self.to_json()} needs ({self.size},)")
        sl = self.slices()
        return Transition(
            obs=v[sl["obs"]], action=v[sl["action"]], reward=float(v[sl["reward"].start]),
            next_obs=v[sl["next_obs"]], terminated=bool(v[sl["terminated"].start] != 0.0),
            truncated=bool(v[sl["truncated"].start] != 0.0),
            episode=int(v[sl["episode"].start]), step=int(v[sl["step"].start]),
            task=int(v[sl["task"].start]), stamps=v[sl["stamps"]], belief=v[sl["belief"]])

    def unpack_batch(self, mat: np.ndarray) -> TransitionBatch:
        """Matrix (N, size) -> :class:`TransitionBatch` of views (scalars as shape (N,))."""
        m = np.asarray(mat, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != self.size:
            raise SchemaError(f"transition matrix has shape {m.shape}, layout needs "
                              f"(N, {self.size})")
        sl = self.slices()

        def col(name: str) -> np.ndarray:
            return m[:, sl[name].start]

        return TransitionBatch(
            obs=m[:, sl["obs"]], action=m[:, sl["action"]], reward=col("reward"),
            next_obs=m[:, sl["next_obs"]], terminated=col("terminated") != 0.0,
            truncated=col("truncated") != 0.0, episode=col("episode").astype(np.int64),
            step=col("step").astype(np.int64), task=col("task").astype(np.int64),
            stamps=m[:, sl["stamps"]], belief=m[:, sl["belief"]])


def _put(vec: np.ndarray, sl: slice, value: object, name: str) -> None:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != sl.stop - sl.start:
        raise SchemaError(f"{name} has {arr.size} entries, the layout needs "
                          f"{sl.stop - sl.start}")
    vec[sl] = arr
