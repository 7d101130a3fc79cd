"""PEARL's MuJoCo benchmark task families, with the reference's task distributions and splits.

- cheetah-vel: 100 train / 30 held out; velocity ~ U[0, 3] m/s (oyster seeds numpy with 1337
  and draws the same list).
- cheetah-dir: 2 tasks, eval = train; direction in {-1, +1}.
- ant-dir: 2 tasks, eval = train; direction in {0, pi} (the paper's Ant-Fwd-Back). With
  ``forward_backward=False``: angles ~ U[0, 2 pi), split with held-out tasks.
- ant-goal: 150 / 30; goal = r (cos a, sin a), a ~ U[0, 2 pi), r = 3 sqrt(U[0, 1]).
- humanoid-dir: 100 / 30; direction ~ U[0, 2 pi).
- walker-rand-params, hopper-rand-params: 40 / 10; physics multipliers per element
  (:data:`RAND_PARAMS_SPEC`).

Every list is drawn from ``np.random.RandomState(seed)`` (default 1337, the reference's seed; the
reference left ant, humanoid and rand-params unseeded, so their lists changed between runs).
Train tasks are the first ``n_tasks - n_eval``, held-out tasks the last ``n_eval``, as oyster's
``tasks[:n_train]`` / ``tasks[-n_eval:]``. The two-task direction families keep the reference's
protocol (eval = train) and say so with ``held_out = False``.

Pure numpy: the environments (and MuJoCo) are imported by ``make_env`` only.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

from pearl_robot.robot.randomization import ParamSpec
from pearl_robot.tasks.base import ListedTaskFamily, MetaEnv, Task

REFERENCE_SEED = 1337
LOCOMOTION_HORIZON = 200

# rand_param_envs (log_scale_limit = 3): every element of each field is multiplied by
# base ** U(-3, 3), i.e. log-uniform in [base^-3, base^3].
RAND_PARAMS_SPEC: tuple[ParamSpec, ...] = (
    # body masses x 1.5^U(-3,3): 0.30x .. 3.4x, per body
    ParamSpec("body_mass_scale", "log_uniform", 1.5 ** -3, 1.5 ** 3),
    # body inertias x 1.5^U(-3,3), per body and principal axis
    ParamSpec("body_inertia_scale", "log_uniform", 1.5 ** -3, 1.5 ** 3),
    # joint damping x 1.3^U(-3,3): 0.46x .. 2.2x, per dof
    ParamSpec("dof_damping_scale", "log_uniform", 1.3 ** -3, 1.3 ** 3),
    # geom friction x 1.5^U(-3,3), per geom and friction coefficient (slide, spin, roll)
    ParamSpec("geom_friction_scale", "log_uniform", 1.5 ** -3, 1.5 ** 3),
)

# Model field shapes (gymnasium's walker2d.xml / hopper.xml; a test checks them against MuJoCo),
# so task lists can be built without MuJoCo.
WALKER_SHAPES = {"body_mass_scale": (8,), "body_inertia_scale": (8, 3),
                 "dof_damping_scale": (9,), "geom_friction_scale": (8, 3)}
HOPPER_SHAPES = {"body_mass_scale": (5,), "body_inertia_scale": (5, 3),
                 "dof_damping_scale": (6,), "geom_friction_scale": (5, 3)}


class SeededFamily(ListedTaskFamily):
    """A fixed task list whose last ``n_eval`` tasks are held out (or, for the two-task
    direction families, ``held_out=False``: eval = train, the reference's protocol)."""

    env_class: str = ""
    """``module:Class`` of the environment, imported by ``make_env``."""

    def __init__(self, name: str, tasks: list[dict[str, Any]], n_eval: int,
                 horizon: int = LOCOMOTION_HORIZON, held_out: bool = True, seed: int = 0,
                 env_class: str = "") -> None:
        if horizon < 1:
            raise ValueError(f"{name}: horizon must be >= 1, got {horizon}")
        self.name = name
        self.horizon = horizon
        self.seed = seed
        self.env_class = env_class or self.env_class
        self._set_tasks([Task(i, p) for i, p in enumerate(tasks)], n_eval, held_out)

    def make_env(self, seed: int | None = None) -> MetaEnv:
        module, cls = self.env_class.split(":")
        return getattr(importlib.import_module(module), cls)(seed=seed, horizon=self.horizon)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(seed=self.seed, horizon=self.horizon, held_out=self.held_out)
        return d


_LOCO = "pearl_robot.twin.locomotion"


class CheetahVelFamily(SeededFamily):
    def __init__(self, n_tasks: int = 130, n_eval: int = 30, seed: int = REFERENCE_SEED,
                 horizon: int = LOCOMOTION_HORIZON, low: float = 0.0,
                 high: float = 3.0) -> None:
        self.low, self.high = low, high
        v = np.random.RandomState(seed).uniform(low, high, size=(n_tasks,))
        super().__init__("cheetah-vel", [{"velocity": float(x)} for x in v], n_eval, horizon,
                         seed=seed, env_class=f"{_LOCO}:HalfCheetahVelEnv")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(-1, {"velocity": float(v)}) for v in rng.uniform(self.low, self.high, n)]


class CheetahDirFamily(SeededFamily):
    def __init__(self, horizon: int = LOCOMOTION_HORIZON) -> None:
        super().__init__("cheetah-dir", [{"direction": -1.0}, {"direction": 1.0}], 0, horizon,
                         held_out=False, env_class=f"{_LOCO}:HalfCheetahDirEnv")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(-1, {"direction": float(d)}) for d in rng.choice([-1.0, 1.0], n)]


class AntDirFamily(SeededFamily):
    def __init__(self, forward_backward: bool = True, n_tasks: int = 2, n_eval: int = 0,
                 seed: int = REFERENCE_SEED, horizon: int = LOCOMOTION_HORIZON) -> None:
        self.forward_backward = forward_backward
        if forward_backward:
            if n_tasks != 2:
                raise ValueError(f"ant-dir forward_backward has exactly 2 tasks, got {n_tasks}")
            angles = np.array([0.0, math.pi])
        else:
            angles = np.random.RandomState(seed).uniform(0.0, 2 * math.pi, size=(n_tasks,))
        super().__init__("ant-dir", [{"direction": float(a)} for a in angles], n_eval, horizon,
                         held_out=not forward_backward, seed=seed,
                         env_class=f"{_LOCO}:AntDirEnv")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        a = rng.choice([0.0, math.pi], n) if self.forward_backward \
            else rng.uniform(0.0, 2 * math.pi, n)
        return [Task(-1, {"direction": float(x)}) for x in a]


def disc_goals(n: int, draw_uniform: Any, radius: float = 3.0) -> np.ndarray:
    """Goals uniform in a disc (oyster AntGoalEnv: a = 2 pi U, r = 3 sqrt(U))."""
    a = draw_uniform(n) * 2 * np.pi
    r = radius * draw_uniform(n) ** 0.5
    return np.stack((r * np.cos(a), r * np.sin(a)), axis=-1)


class AntGoalFamily(SeededFamily):
    def __init__(self, n_tasks: int = 180, n_eval: int = 30, seed: int = REFERENCE_SEED,
                 horizon: int = LOCOMOTION_HORIZON) -> None:
        goals = disc_goals(n_tasks, np.random.RandomState(seed).random_sample)
        super().__init__("ant-goal", [{"goal": [float(g[0]), float(g[1])]} for g in goals],
                         n_eval, horizon, seed=seed, env_class=f"{_LOCO}:AntGoalEnv")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(-1, {"goal": [float(g[0]), float(g[1])]})
                for g in disc_goals(n, rng.random)]


class HumanoidDirFamily(SeededFamily):
    def __init__(self, n_tasks: int = 130, n_eval: int = 30, seed: int = REFERENCE_SEED,
                 horizon: int = LOCOMOTION_HORIZON) -> None:
        a = np.random.RandomState(seed).uniform(0.0, 2 * math.pi, size=(n_tasks,))
        super().__init__("humanoid-dir", [{"direction": float(x)} for x in a], n_eval, horizon,
                         seed=seed, env_class=f"{_LOCO}:HumanoidDirEnv")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(-1, {"direction": float(x)}) for x in rng.uniform(0.0, 2 * math.pi, n)]


def sample_rand_params(shapes: dict[str, tuple[int, ...]],
                       rng: np.random.Generator | np.random.RandomState) -> dict[str, Any]:
    """One rand-params task: a multiplier per element of each field, by RAND_PARAMS_SPEC."""
    out: dict[str, Any] = {}
    for p in RAND_PARAMS_SPEC:
        shape = shapes[p.name]
        lo, hi = math.log(float(p.low)), math.log(float(p.high))  # type: ignore[arg-type]
        out[p.name] = np.exp(rng.uniform(lo, hi, size=shape)).tolist()
    return out


class RandParamsFamily(SeededFamily):
    """walker-rand-params / hopper-rand-params (``robot`` = "walker" or "hopper")."""

    def __init__(self, robot: str = "walker", n_tasks: int = 50, n_eval: int = 10,
                 seed: int = REFERENCE_SEED, horizon: int = LOCOMOTION_HORIZON) -> None:
        if robot not in ("walker", "hopper"):
            raise ValueError(f"rand-params robot must be 'walker' or 'hopper', got {robot!r}")
        self.shapes = WALKER_SHAPES if robot == "walker" else HOPPER_SHAPES
        rs = np.random.RandomState(seed)
        tasks = [sample_rand_params(self.shapes, rs) for _ in range(n_tasks)]
        cls = "WalkerRandParamsEnv" if robot == "walker" else "HopperRandParamsEnv"
        super().__init__(f"{robot}-rand-params", tasks, n_eval, horizon, seed=seed,
                         env_class=f"{_LOCO}:{cls}")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(-1, sample_rand_params(self.shapes, rng)) for _ in range(n)]
