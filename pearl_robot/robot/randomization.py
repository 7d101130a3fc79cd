"""Domain randomization written as a spec: one line per parameter and its distribution.

A spec is a tuple of :class:`ParamSpec`. :func:`sample_params` is a pure function of the spec
and a ``np.random.Generator`` (no global RNG, so parallel workers never repeat each other's
tasks); :func:`check_params` says whether a parameter dict lies inside its spec. Applying the
parameters to a compiled model is the twin's business (``pearl_robot.twin.arm``), which resolves
every named element with ``mj_name2id`` and fails loudly on a typo.

This module is pure numpy (no MuJoCo import) so the task list can be built, logged and checked
anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DISTRIBUTIONS = ("uniform", "log_uniform", "constant")


@dataclass(frozen=True)
class ParamSpec:
    """One randomized parameter: its distribution, bounds, unit and shape."""

    name: str
    """Key in the task's ``params`` dict."""
    distribution: str
    """"uniform" in [low, high], "log_uniform" (uniform in log between positive bounds) or
    "constant" (always ``low``)."""
    low: float | tuple[float, ...]
    """Lower bound, scalar or one per element."""
    high: float | tuple[float, ...]
    """Upper bound, scalar or one per element."""
    size: int = 1
    """Number of elements; 1 gives a float, more a list (one per joint, say)."""
    unit: str = ""
    """Physical unit of the value ("kg", "s", "rad", "" for a multiplier)."""
    quantum: float = 0.0
    """When positive, the value is rounded to a multiple of it (latency: the physics step)."""

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"{self.name}: unknown distribution {self.distribution!r}; "
                             f"use one of {DISTRIBUTIONS}")
        lo, hi = self.bounds()
        if np.any(lo > hi):
            raise ValueError(f"{self.name}: low {lo} above high {hi}")
        if self.distribution == "log_uniform" and np.any(lo <= 0):
            raise ValueError(f"{self.name}: log_uniform bounds must be positive, got {lo}")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-element (low, high) arrays of shape (size,)."""
        lo = np.broadcast_to(np.asarray(self.low, dtype=np.float64), (self.size,)).copy()
        hi = np.broadcast_to(np.asarray(self.high, dtype=np.float64), (self.size,)).copy()
        return lo, hi

    def sample(self, rng: np.random.Generator) -> float | list[float]:
        lo, hi = self.bounds()
        if self.distribution == "uniform":
            v = rng.uniform(lo, hi)
        elif self.distribution == "log_uniform":
            v = np.exp(rng.uniform(np.log(lo), np.log(hi)))
        else:
            v = lo.copy()
        if self.quantum > 0:
            v = np.clip(np.round(v / self.quantum) * self.quantum, lo, hi)
        return float(v[0]) if self.size == 1 else [float(x) for x in v]

    def contains(self, value: Any, tol: float = 1e-12) -> bool:
        v = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if v.shape != (self.size,) or not np.all(np.isfinite(v)):
            return False
        lo, hi = self.bounds()
        return bool(np.all(v >= lo - tol) and np.all(v <= hi + tol))


def sample_params(spec: tuple[ParamSpec, ...], rng: np.random.Generator) -> dict[str, Any]:
    """One draw of every parameter in the spec, in spec order (so a seed reproduces it)."""
    return {p.name: p.sample(rng) for p in spec}


def check_params(spec: tuple[ParamSpec, ...], params: dict[str, Any]) -> list[str]:
    """Problems with ``params`` against ``spec`` (empty list: inside the spec)."""
    problems = []
    for p in spec:
        if p.name not in params:
            problems.append(f"{p.name} missing")
        elif not p.contains(params[p.name]):
            lo, hi = p.bounds()
            problems.append(f"{p.name}={params[p.name]} outside [{lo.tolist()}, {hi.tolist()}]"
                            f" {p.unit}".rstrip())
    return problems


def spec_table(spec: tuple[ParamSpec, ...]) -> list[dict[str, Any]]:
    """JSON-able description (for docs, bundle contracts and the task topic)."""
    out = []
    for p in spec:
        lo, hi = p.bounds()
        out.append({"name": p.name, "distribution": p.distribution, "low": lo.tolist(),
                    "high": hi.tolist(), "unit": p.unit, "size": p.size})
    return out


# ---------------------------------------------------------------------------------------------
# The arm3 twin's physical parameters (sim/arm3.xml). Bounds follow what a lab sees between two
# builds of the same arm, a worn gearbox and a full day of picking parts.

PHYSICS_STEP = 0.002
"""sim/arm3.xml's timestep; latency is a whole number of physics steps."""

ARM3_PHYSICS_SPEC: tuple[ParamSpec, ...] = (
    # payload at the tool flange: empty flange .. a 0.5 kg part (point mass at site "ee")
    ParamSpec("payload_mass", "uniform", 0.0, 0.5, unit="kg"),
    # dry (Coulomb) joint friction, x the MJCF frictionloss: greased .. stiff gearbox
    ParamSpec("friction_scale", "log_uniform", 0.5, 2.0, size=3),
    # viscous joint damping (back-EMF + gear losses), x the MJCF damping
    ParamSpec("damping_scale", "log_uniform", 0.5, 2.0, size=3),
    # motor strength (torque per commanded N*m), x the actuator gear: weak supply .. hot-wound
    ParamSpec("strength_scale", "uniform", 0.7, 1.2, size=3),
    # command-to-torque latency (bus + driver), whole physics steps, below the 50 ms period
    ParamSpec("latency_s", "uniform", 0.0, 0.04, unit="s", quantum=PHYSICS_STEP),
    # encoder noise, std of a zero-mean Gaussian added to each measured position
    ParamSpec("position_noise_std", "uniform", 0.0, 0.004, unit="rad"),
    # velocity estimate noise, std of a zero-mean Gaussian added to each measured velocity
    ParamSpec("velocity_noise_std", "uniform", 0.0, 0.05, unit="rad/s"),
)

ARM3_NOMINAL_PARAMS: dict[str, Any] = {
    "payload_mass": 0.1,  # the MJCF's compiled payload mass
    "friction_scale": [1.0, 1.0, 1.0],
    "damping_scale": [1.0, 1.0, 1.0],
    "strength_scale": [1.0, 1.0, 1.0],
    "latency_s": 0.0,
    "position_noise_std": 0.0,
    "velocity_noise_std": 0.0,
}
"""The MJCF as written: what ``ArmTwin()`` simulates without parameters."""

