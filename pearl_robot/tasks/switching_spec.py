"""Tasks that switch within an episode, written as a spec like the domain randomization.

A :class:`SwitchingSpec` says *what* can change under the robot (each :class:`SwitchKind`
redraws a few parameters from :class:`~pearl_robot.robot.randomization.ParamSpec` lines: the
payload is added or dropped, the friction or damping changes, the goal moves) and *when*
(a first quiet period, then gaps of ``min_interval_s`` plus an exponential with mean
``mean_interval_s - min_interval_s``, at most ``max_switches`` per episode).
:func:`sample_switches` is a pure function of the spec, the task's starting parameters and a
``np.random.Generator``: the schedule of one episode, each :class:`Switch` carrying the full
parameter dict that holds from its step on. Applying them is the environment's business
(:class:`pearl_robot.tasks.switching.SwitchingEnv`).

Pure numpy, no MuJoCo import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from pearl_robot.robot.randomization import ParamSpec, spec_table
from pearl_robot.tasks.twin_arm import ARM3_GOAL_SPEC


@dataclass(frozen=True)
class SwitchKind:
    """One kind of change: which parameters are redrawn, from what, how often."""

    name: str
    """Label in logs and benches ("goal_moved", "payload_added", ...)."""
    params: tuple[ParamSpec, ...]
    """The parameters it redraws (the others keep their values)."""
    weight: float = 1.0
    """Relative frequency among the spec's kinds."""

    def __post_init__(self) -> None:
        if not self.params:
            raise ValueError(f"switch kind {self.name!r} redraws no parameter")
        if not self.weight > 0:
            raise ValueError(f"switch kind {self.name!r}: weight must be > 0, got "
                             f"{self.weight}")


@dataclass(frozen=True)
class SwitchingSpec:
    """What switches within an episode and when (see module doc)."""

    kinds: tuple[SwitchKind, ...]
    """The changes that can happen (one is drawn per switch, by weight)."""
    first_after_s: float = 10.0
    """No switch before this many seconds into the episode (the belief forms first)."""
    min_interval_s: float = 10.0
    """Shortest gap between two switches."""
    mean_interval_s: float = 20.0
    """Mean gap between two switches (>= ``min_interval_s``)."""
    max_switches: int = 1_000_000
    """At most this many switches per episode."""

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("a switching spec needs at least one kind of switch")
        names = [k.name for k in self.kinds]
        if len(set(names)) != len(names):
            raise ValueError(f"switch kind names repeat: {names}")
        if self.first_after_s < 0 or self.min_interval_s <= 0:
            raise ValueError("first_after_s must be >= 0 and min_interval_s > 0")
        if self.mean_interval_s < self.min_interval_s:
            raise ValueError(f"mean_interval_s {self.mean_interval_s} below min_interval_s "
                             f"{self.min_interval_s}")
        if self.max_switches < 0:
            raise ValueError("max_switches must be >= 0")

    def kind(self, name: str) -> SwitchKind:
        for k in self.kinds:
            if k.name == name:
                return k
        raise KeyError(f"no switch kind {name!r}; known: {[k.name for k in self.kinds]}")

    def only(self, *names: str) -> SwitchingSpec:
        """The same timing with a subset of the kinds (benches run one kind at a time)."""
        return SwitchingSpec(tuple(self.kind(n) for n in names), self.first_after_s,
                             self.min_interval_s, self.mean_interval_s, self.max_switches)

    def describe(self) -> dict[str, Any]:
        """JSON-able (for logs, bundle contracts and benches)."""
        return {"first_after_s": self.first_after_s, "min_interval_s": self.min_interval_s,
                "mean_interval_s": self.mean_interval_s, "max_switches": self.max_switches,
                "kinds": [{"name": k.name, "weight": k.weight, "params": spec_table(k.params)}
                          for k in self.kinds]}


class Switch(NamedTuple):
    """One change within an episode."""

    step: int
    """Control step from which the new parameters hold (the transition ending at this step's
    observation is the first one of the new task)."""
    kind: str
    """Which :class:`SwitchKind`."""
    params: dict[str, Any]
    """The task's full parameter dict from ``step`` on."""


def sample_switches(spec: SwitchingSpec, params: dict[str, Any], horizon: int, dt: float,
                    rng: np.random.Generator) -> list[Switch]:
    """The switches of one episode of ``horizon`` control steps of ``dt`` seconds, starting
    from the task's ``params`` (not modified)."""
    if horizon < 0 or not dt > 0:
        raise ValueError(f"horizon must be >= 0 and dt > 0, got {horizon}, {dt}")
    weights = np.array([k.weight for k in spec.kinds], dtype=np.float64)
    weights /= weights.sum()
    extra = spec.mean_interval_s - spec.min_interval_s
    out: list[Switch] = []
    current = dict(params)
    t = spec.first_after_s
    while len(out) < spec.max_switches:
        step = int(math.ceil(t / dt))
        if step >= horizon:
            break
        kind = spec.kinds[int(rng.choice(len(spec.kinds), p=weights))]
        current = dict(current)
        for p in kind.params:
            current[p.name] = p.sample(rng)
        out.append(Switch(step, kind.name, current))
        t = step * dt + spec.min_interval_s + (rng.exponential(extra) if extra > 0 else 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# arm3 (sim/arm3.xml): the changes a working arm sees within a shift

ARM3_SWITCH_KINDS: tuple[SwitchKind, ...] = (
    SwitchKind("goal_moved", ARM3_GOAL_SPEC),
    # a part is picked up: 0.3 .. 0.5 kg at the flange (the family's payload range tops at 0.5)
    SwitchKind("payload_added", (ParamSpec("payload_mass", "uniform", 0.3, 0.5, unit="kg"),)),
    # the part is released: an empty flange
    SwitchKind("payload_dropped", (ParamSpec("payload_mass", "constant", 0.0, 0.0,
                                             unit="kg"),)),
    # the gearbox warms up or stiffens: a new dry-friction draw per joint
    SwitchKind("friction_changed", (ParamSpec("friction_scale", "log_uniform", 0.5, 2.0,
                                              size=3),)),
    # viscous damping drifts with temperature: a new draw per joint
    SwitchKind("damping_changed", (ParamSpec("damping_scale", "log_uniform", 0.5, 2.0,
                                             size=3),)),
)

ARM3_SWITCHING_SPEC = SwitchingSpec(ARM3_SWITCH_KINDS)
"""The twin-arm switching family's default: any of the five kinds, a switch every 20 s on
average (at least 10 s apart), the first after 10 s."""

POINT_SWITCHING_SPEC = SwitchingSpec(
    (SwitchKind("goal_moved", (ParamSpec("goal", "uniform", -1.0, 1.0, size=2, unit="m"),)),),
    first_after_s=0.4, min_interval_s=0.4, mean_interval_s=0.6)
"""point-robot: the goal moves within the 20-step (1 s) episode, at most once or twice."""
