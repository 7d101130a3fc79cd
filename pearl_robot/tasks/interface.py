"""What an environment tells the bundle contract: the typed record the trainer saves and the
exporter reads, instead of a dict of whatever attributes an env happened to have.

The trainer builds it from its first environment (:meth:`EnvInterface.from_env`), stores
:meth:`EnvInterface.to_json` as the checkpoint's ``env_spec``, and the exporter reads it back
(:meth:`EnvInterface.from_json`) to fill the contract's observation, action, control period
and robot description. Every field is required: a value the environment does not give is an
:class:`EnvInterfaceError` when the record is made, not a default guessed at export.

What has a declared value instead of an error (docs/architecture.md, "Bundle contract"):
units and the command interface of an environment that has none to give (the abstract
benchmarks) are :data:`UNSPECIFIED`, stated by the environment's class; observation ranges
are None when the environment declares none (the runtime then does not range-check).

Checkpoints written before this record (``env_spec`` with ``dt`` and no ``control_period``)
still export: :meth:`EnvInterface.from_legacy` reads their entries over the record of the
task family's own environment, which is what the exporter did then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pearl_robot.errors import PearlRobotError

if TYPE_CHECKING:
    from pearl_robot.robot.description import RobotSpec
    from pearl_robot.tasks.base import MetaEnv

UNSPECIFIED = "unspecified"
"""The declared unit or command interface of an environment that has none (an abstract
benchmark's coordinates): a value the contract states, not a guess. Equal to
``runtime.contract.UNSPECIFIED`` (tasks cannot import runtime; a test checks they agree)."""

_LIMITS = {"position": lambda j: (j.position_min, j.position_max),
           "velocity": lambda j: (-j.velocity_max, j.velocity_max),
           "effort": lambda j: (-j.effort_max, j.effort_max)}
_UNITS = {"position": "rad", "velocity": "rad/s", "effort": "N*m"}
"""Per-quantity unit of a robot joint's entries (``RobotSpec.to_dict``'s ``*_unit``)."""


class EnvInterfaceError(PearlRobotError):
    """An environment or a checkpoint's ``env_spec`` lacks (or contradicts) a value the bundle
    contract needs; the message names it."""


@dataclass(frozen=True)
class EnvInterface:
    """An environment's robot-facing interface, as the bundle contract states it."""

    obs_names: tuple[str, ...]
    """Observation entries in order (``<joint>.position`` ... for a described robot)."""
    obs_units: tuple[str, ...]
    """Unit of each observation entry (:data:`UNSPECIFIED` where the env has none)."""
    obs_low: tuple[float, ...] | None
    """Expected range of each observation entry (joint limits); None: the env declares none."""
    obs_high: tuple[float, ...] | None
    """Upper end of that range; None together with ``obs_low``."""
    action_names: tuple[str, ...]
    """Command entries in order (``<joint>.effort`` for the robot arm)."""
    action_joints: tuple[str, ...]
    """The joint (or actuator) each command entry drives."""
    action_units: tuple[str, ...]
    """Unit of each command entry."""
    action_low: tuple[float, ...]
    """Lower command bound, physical units."""
    action_high: tuple[float, ...]
    """Upper command bound, physical units."""
    control_period: float
    """Seconds per environment step: the policy's control period (the robot description's
    ``pearl/control_period`` for the twin), written to the contract under the same name."""
    command_interface: str
    """What a command means (``effort``, ``position_delta``; :data:`UNSPECIFIED`)."""
    robot: Mapping[str, Any] | None
    """The robot description (``RobotSpec.to_dict()``) when the env drives one; else None."""

    KEYS = ("obs_names", "obs_units", "obs_low", "obs_high", "action_names", "action_joints",
            "action_units", "action_low", "action_high", "control_period", "command_interface",
            "robot")

    def __post_init__(self) -> None:
        o, a = len(self.obs_names), len(self.action_names)
        for key, names in (("obs_names", self.obs_names), ("action_names", self.action_names)):
            if not names or not all(isinstance(n, str) and n for n in names):
                raise EnvInterfaceError(f"{key} must be non-empty strings, got {names!r}")
            if len(set(names)) != len(names):
                raise EnvInterfaceError(f"{key} has duplicates: {names!r}")
        for key, n in (("obs_units", o), ("action_units", a), ("action_joints", a),
                       ("action_low", a), ("action_high", a)):
            if len(getattr(self, key)) != n:
                raise EnvInterfaceError(f"{key} has {len(getattr(self, key))} entries for "
                                        f"{n} names")
        if not all(hi > lo for lo, hi in zip(self.action_low, self.action_high)):
            raise EnvInterfaceError(f"action_high must exceed action_low "
                                    f"({self.action_low}, {self.action_high})")
        if (self.obs_low is None) != (self.obs_high is None) or (
                self.obs_low is not None and not len(self.obs_low) == len(self.obs_high or ())
                == o):
            raise EnvInterfaceError(f"obs_low/obs_high must both be None or {o} numbers each")
        if not (isinstance(self.control_period, (int, float)) and
                math.isfinite(self.control_period) and self.control_period > 0):
            raise EnvInterfaceError(f"control_period must be a number of seconds > 0, got "
                                    f"{self.control_period!r}")
        if not (isinstance(self.command_interface, str) and self.command_interface):
            raise EnvInterfaceError(f"command_interface must be a non-empty string (or "
                                    f"{UNSPECIFIED!r}), got {self.command_interface!r}")

    @property
    def obs_dim(self) -> int:
        return len(self.obs_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    # -- from an environment ------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: MetaEnv) -> EnvInterface:
        """The record of ``env``: its names, control period and bounds; units, ranges, joints
        and interface from its robot description when it has one (``env.robot_spec``), else
        the units and interface its class declares."""
        name = type(env).__name__
        obs_names, action_names = tuple(env.obs_names), tuple(env.action_names)
        if len(obs_names) != env.obs_dim or len(action_names) != env.action_dim:
            raise EnvInterfaceError(
                f"{name} names {len(obs_names)} observation and {len(action_names)} action "
                f"entries for sizes {env.obs_dim} and {env.action_dim}: every entry needs a "
                f"name (MetaEnv.obs_names / action_names)")
        common = dict(obs_names=obs_names, action_names=action_names,
                      action_low=tuple(float(x) for x in env.action_low),
                      action_high=tuple(float(x) for x in env.action_high),
                      control_period=float(env.control_period))
        spec = env.robot_spec
        if spec is not None:
            return cls(**common, **_robot_fields(spec, obs_names, action_names))
        o, a = len(obs_names), len(action_names)
        return cls(**common, obs_units=tuple(env.obs_units) or (UNSPECIFIED,) * o,
                   obs_low=None, obs_high=None,
                   action_joints=tuple(n.rpartition(".")[0] or n for n in action_names),
                   action_units=tuple(env.action_units) or (UNSPECIFIED,) * a,
                   command_interface=env.command_interface, robot=None)

    # -- the checkpoint's env_spec ------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The checkpoint's ``env_spec``: this record plus the sizes ``core.checkpoint`` reads
        to rebuild the networks' ``EnvSpec``."""
        out: dict[str, Any] = {"obs_dim": self.obs_dim, "action_dim": self.action_dim}
        for key in self.KEYS:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else \
                (dict(value) if isinstance(value, Mapping) else value)
        return out

    @staticmethod
    def is_legacy(raw: Mapping[str, Any]) -> bool:
        """A checkpoint ``env_spec`` written before this record (``dt``, no
        ``control_period``)."""
        return "control_period" not in raw and "dt" in raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> EnvInterface:
        """Parse a checkpoint's ``env_spec``; EnvInterfaceError naming a missing key."""
        missing = [k for k in cls.KEYS if k not in raw]
        if missing:
            hint = " (a checkpoint of an older trainer: read it with from_legacy)" \
                if cls.is_legacy(raw) else ""
            raise EnvInterfaceError(f"checkpoint env_spec lacks {missing}{hint}")

        def seq(key: str) -> tuple[Any, ...] | None:
            v = raw[key]
            if v is None and key in ("obs_low", "obs_high"):
                return None
            if not isinstance(v, (list, tuple)):
                raise EnvInterfaceError(f"checkpoint env_spec {key} must be a list, got {v!r}")
            return tuple(v)

        robot = raw["robot"]
        if robot is not None and not isinstance(robot, Mapping):
            raise EnvInterfaceError(f"checkpoint env_spec robot must be an object or null, "
                                    f"got {robot!r}"[:300])
        return cls(**{k: seq(k) for k in cls.KEYS
                      if k not in ("control_period", "command_interface", "robot")},
                   control_period=raw["control_period"],
                   command_interface=raw["command_interface"], robot=robot)

    @classmethod
    def from_legacy(cls, raw: Mapping[str, Any], family_env: EnvInterface | None
                    ) -> EnvInterface:
        """An old checkpoint's ``env_spec`` (names, ``dt``, maybe units and interface) over
        ``family_env``, the record of the task family's environment today; the checkpoint's
        own entries win, as they did. Without a family record, what the checkpoint lacks must
        be declarable: names are required (no generated ``obs_0``), units and interface are
        :data:`UNSPECIFIED`."""
        mapped = {k: raw[k] for k in ("obs_names", "action_names", "obs_units", "action_units",
                                      "command_interface", "action_low", "action_high")
                  if raw.get(k)}
        mapped = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in mapped.items()}
        mapped["control_period"] = float(raw["dt"])
        if family_env is not None:
            return replace(family_env, **mapped)
        for key in ("obs_names", "action_names", "action_low", "action_high"):
            if key not in mapped:
                raise EnvInterfaceError(f"checkpoint env_spec has no {key}, and its task "
                                        f"family's environment cannot be built to supply it")
        o, a = len(mapped["obs_names"]), len(mapped["action_names"])
        return cls(**{"obs_units": (UNSPECIFIED,) * o, "action_units": (UNSPECIFIED,) * a,
                      "command_interface": UNSPECIFIED, "obs_low": None, "obs_high": None,
                      "robot": None, "action_joints": tuple(
                          n.rpartition(".")[0] or n for n in mapped["action_names"]),
                      **mapped})


def _robot_fields(spec: RobotSpec, obs_names: tuple[str, ...], action_names: tuple[str, ...]
                  ) -> dict[str, Any]:
    """Units, ranges, joints and interface from a robot description: an entry named
    ``<joint>.<position|velocity|effort>`` gets its joint's unit and limit."""
    joints = {j.name: j for j in spec.joints}

    def describe(entry: str) -> tuple[str, tuple[float, float] | None]:
        joint, _, quantity = entry.rpartition(".")
        if joint in joints and quantity in _LIMITS:
            return _UNITS[quantity], _LIMITS[quantity](joints[joint])
        return UNSPECIFIED, None

    obs = [describe(n) for n in obs_names]
    ranged = all(lim is not None for _, lim in obs)
    return dict(obs_units=tuple(u for u, _ in obs),
                obs_low=tuple(lim[0] for _, lim in obs) if ranged else None,  # type: ignore
                obs_high=tuple(lim[1] for _, lim in obs) if ranged else None,  # type: ignore
                action_joints=tuple(n.rpartition(".")[0] or n for n in action_names),
                action_units=tuple(describe(n)[0] for n in action_names),
                command_interface=spec.command_interface, robot=spec.to_dict())
