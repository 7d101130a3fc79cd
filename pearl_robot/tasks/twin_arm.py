"""twin-arm: the default robot's task family (sim-to-real meta-training).

Each task is a joint-space target the arm must reach and hold, *and* a draw of the physics the
real arm may show (payload, friction, damping, motor strength, latency, sensor noise). The goal
is not in the observation: the policy sees what /joint_states carries (positions and velocities
of base_yaw, shoulder, elbow) and PEARL infers the task from rewards.

The reward is computed from the *measured* joint state (what the robot's policy node has), so
the same function scores twin and hardware episodes (:func:`twin_arm_reward`, pure numpy):

    reward = -||q - q_goal||_2                       distance (rad)
             + 1.0 * exp(-(||q - q_goal|| / 0.1)^2)   precision (1 at the goal, 0.37 at 0.1 rad)
             - 0.05 * ||effort / effort_max||^2      effort (normalized command)
             - 0.2 * sum(max(0, |qd| - qd_max))      overspeed past the spec's velocity limit

The precision term exists because the distance term alone made precise reaching unlearnable:
the last 0.1 rad are worth about 1 % of an episode's return under it, and every policy
trained on it (PEARL, the pooled belief, even a policy told the true task) settled 0.1-0.2 rad
from the goal with 0 % success (docs/performance.md, "Task inference"). With it, holding the
goal is worth as much per step as the whole distance term 1 rad away.

``info["success"]`` is true within 0.1 rad of the goal. Episodes never terminate; they are
truncated after ``horizon`` control steps (60 = 3 s at 20 Hz by default).

This module imports no MuJoCo: task lists, the reward and the spec tables can be built on the
robot's computer; :meth:`TwinArmFamily.make_env` imports the twin lazily.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pearl_robot.robot.randomization import (
    ARM3_NOMINAL_PARAMS,
    ARM3_PHYSICS_SPEC,
    ParamSpec,
    check_params,
    sample_params,
)
from pearl_robot.tasks.base import LabelSpec, ListedTaskFamily, MetaEnv, Task

FAMILY_SEED = 1337
DISTANCE_WEIGHT = 1.0
PRECISION_WEIGHT = 1.0
PRECISION_SCALE = 0.1
"""rad: width of the precision bonus (the success radius)."""
EFFORT_WEIGHT = 0.05
OVERSPEED_WEIGHT = 0.2
SUCCESS_RADIUS = 0.1
"""rad: ``info["success"]`` when the measured joint vector is this close to the goal."""
DEFAULT_HORIZON = 60

ARM3_GOAL_SPEC: tuple[ParamSpec, ...] = (
    # joint target (base_yaw, shoulder, elbow) in rad: a margin inside the joint limits, in the
    # half of the workspace where the arm carries its payload without folding onto itself
    ParamSpec("goal_qpos", "uniform", (-1.5, -1.0, -1.6), (1.5, 1.0, 1.6), size=3, unit="rad"),
)

ARM3_START_NOISE = 0.05
"""rad: each episode starts at the home pose plus U(+-this) per joint, at rest."""


def twin_arm_reward(position: np.ndarray, velocity: np.ndarray, effort: np.ndarray,
                    goal_qpos: np.ndarray, effort_max: np.ndarray,
                    velocity_max: np.ndarray) -> tuple[float, dict[str, float]]:
    """Reward and its parts from one measured joint state and the command that led to it."""
    diff = np.asarray(position, dtype=np.float64) - goal_qpos
    distance = math.sqrt(float(diff @ diff))
    e = np.asarray(effort, dtype=np.float64) / effort_max
    effort_cost = float(e @ e)
    over = np.abs(velocity) - velocity_max
    overspeed = float(over[over > 0.0].sum())
    parts = {"distance": -DISTANCE_WEIGHT * distance,
             "precision": PRECISION_WEIGHT * math.exp(-(distance / PRECISION_SCALE) ** 2),
             "effort": -EFFORT_WEIGHT * effort_cost,
             "overspeed": -OVERSPEED_WEIGHT * overspeed}
    return parts["distance"] + parts["precision"] + parts["effort"] + parts["overspeed"], parts


def twin_arm_reward_batch(position: np.ndarray, velocity: np.ndarray, effort: np.ndarray,
                          goal_qpos: np.ndarray, effort_max: np.ndarray,
                          velocity_max: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`twin_arm_reward` over a leading batch axis (same arithmetic, same results)."""
    distance = np.linalg.norm(position - goal_qpos, axis=-1)
    effort_cost = np.sum((effort / effort_max) ** 2, axis=-1)
    overspeed = np.sum(np.maximum(0.0, np.abs(velocity) - velocity_max), axis=-1)
    parts = {"distance": -DISTANCE_WEIGHT * distance,
             "precision": PRECISION_WEIGHT * np.exp(-(distance / PRECISION_SCALE) ** 2),
             "effort": -EFFORT_WEIGHT * effort_cost,
             "overspeed": -OVERSPEED_WEIGHT * overspeed}
    return parts["distance"] + parts["precision"] + parts["effort"] + parts["overspeed"], parts


def sample_twin_arm_task_params(rng: np.random.Generator, physics: bool = True) -> dict[str, Any]:
    """One task: a goal, then (when ``physics``) a physics draw; nominal physics otherwise."""
    params = sample_params(ARM3_GOAL_SPEC, rng)
    if physics:
        params.update(sample_params(ARM3_PHYSICS_SPEC, rng))
    else:
        params.update({k: (list(v) if isinstance(v, list) else v)
                       for k, v in ARM3_NOMINAL_PARAMS.items()})
    return params


def task_problems(params: dict[str, Any], physics: bool = True) -> list[str]:
    """Where a task leaves the family's spec (empty list: inside)."""
    problems = check_params(ARM3_GOAL_SPEC, params)
    if physics:
        problems += check_params(ARM3_PHYSICS_SPEC, params)
    return problems


LABELLED_PARAMS = ("goal_qpos", "payload_mass", "friction_scale", "damping_scale",
                   "strength_scale")
"""Task parameters the "pooled" inference regresses (latency and sensor noise are left to the
reward/dynamics evidence: they barely change what the policy should do)."""


def twin_arm_label_spec(physics: bool = True) -> LabelSpec:
    """Labels of the twin-arm family: the goal, and with ``physics`` the payload, friction,
    damping and strength of each joint, each normalized by its randomization range."""
    names: list[str] = []
    low: list[float] = []
    high: list[float] = []
    log: list[bool] = []
    specs = ARM3_GOAL_SPEC + (ARM3_PHYSICS_SPEC if physics else ())
    for p in specs:
        if p.name not in LABELLED_PARAMS:
            continue
        lo, hi = p.bounds()
        for i in range(p.size):
            names.append(f"{p.name}[{i}]" if p.size > 1 else p.name)
            low.append(float(lo[i]))
            high.append(float(hi[i]))
            log.append(p.distribution == "log_uniform")
    return LabelSpec(tuple(names), tuple(low), tuple(high), tuple(log))


class TwinArmFamily(ListedTaskFamily):
    """Goals x physics for the arm3 twin; the first ``n_tasks - n_eval`` tasks train, the rest
    are held out. ``physics=False`` gives the goal-only variant (twin-arm-reach)."""

    def __init__(self, n_tasks: int = 120, n_eval: int = 20, physics: bool = True,
                 horizon: int = DEFAULT_HORIZON, seed: int = FAMILY_SEED,
                 mjcf_path: str | None = None) -> None:
        if not 0 < n_eval < n_tasks:
            raise ValueError(f"n_eval must be in (0, n_tasks), got {n_eval} of {n_tasks}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 control step, got {horizon}")
        self.name = "twin-arm" if physics else "twin-arm-reach"
        self.label_spec = twin_arm_label_spec(physics)
        self.success_key = "success"
        self.physics = physics
        self.horizon = horizon
        self.seed = seed
        self.mjcf_path = mjcf_path
        rng = np.random.default_rng(seed)
        self._set_tasks([Task(i, sample_twin_arm_task_params(rng, physics))
                         for i in range(n_tasks)], n_eval)

    def make_env(self, seed: int | None = None) -> MetaEnv:
        from pearl_robot.twin.twin_arm_env import TwinArmEnv

        return TwinArmEnv(seed=seed, horizon=self.horizon, mjcf_path=self.mjcf_path)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [Task(-1, sample_twin_arm_task_params(rng, self.physics)) for _ in range(n)]

    def transition_reward(self, task: Task, obs: np.ndarray, action: np.ndarray,
                          next_obs: np.ndarray) -> tuple[float, float]:
        """(reward, context reward) of one measured transition, for the robot's policy node:
        the same number the twin returned. Observations are [positions, velocities] in spec
        joint order; the action is the effort command (N*m), clipped to the limits."""
        from pearl_robot.robot.description import load_robot_spec

        spec = self.__dict__.get("_spec") or load_robot_spec(self.mjcf_path)
        self.__dict__["_spec"] = spec  # parsed once: the node calls this at 20 Hz
        n = spec.n_joints
        next_obs = np.asarray(next_obs, dtype=np.float64)
        if next_obs.shape != (2 * n,):
            raise ValueError(f"twin-arm observations hold {2 * n} values, got {next_obs.shape}")
        emax = np.asarray(spec.effort_limits())
        a = np.clip(np.asarray(action, dtype=np.float64), -emax, emax)
        r, _ = twin_arm_reward(next_obs[:n], next_obs[n:], a, np.asarray(task.params["goal_qpos"]),
                               emax, np.asarray(spec.velocity_limits()))
        return r, r

    def baseline_returns(self, task: Task, start_obs: np.ndarray) -> tuple[float, float]:
        """(still, oracle) returns from the same start: zero effort, and a PD + exact gravity
        controller told the goal and physics. Evaluation normalizes returns with them
        (0 = doing nothing, 1 = the oracle)."""
        env = self.__dict__.get("_baseline_env")
        if env is None:
            env = self.__dict__["_baseline_env"] = self.make_env(seed=0)
        env.set_task(task)
        n = len(task.params["goal_qpos"])
        out = []
        for policy in ("still", "oracle"):
            obs = env.reset_to(np.asarray(start_obs)[:n], seed=0)
            total = 0.0
            for _ in range(env.max_episode_steps):
                a = env.oracle_action(obs) if policy == "oracle" else np.zeros(n)
                res = env.step(a)
                obs, total = res.obs, total + res.reward
            out.append(total)
        return out[0], out[1]

    def describe(self) -> dict[str, Any]:
        from pearl_robot.robot.randomization import spec_table

        d = super().describe()
        d.update(seed=self.seed, horizon=self.horizon, physics=self.physics,
                 goal_spec=spec_table(ARM3_GOAL_SPEC),
                 physics_spec=spec_table(ARM3_PHYSICS_SPEC) if self.physics else None)
        return d
