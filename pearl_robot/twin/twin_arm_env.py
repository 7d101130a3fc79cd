"""TwinArmEnv: the arm3 twin as a PEARL environment (task = joint goal + physics draw).

Observation: what /joint_states carries, in spec joint order: positions (rad) then velocities
(rad/s), measured with the task's sensor noise. Action: one effort per joint (N*m), clipped to
the spec's limits. The reward is :func:`pearl_robot.tasks.twin_arm.twin_arm_reward` of the
measured state and the command, so the robot can compute the same number online. The goal and
the physical parameters are never observed: the encoder has to infer them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from pearl_robot.robot.randomization import ARM3_NOMINAL_PARAMS
from pearl_robot.tasks.base import MetaEnv, StepResult, Task
from pearl_robot.tasks.twin_arm import (
    ARM3_START_NOISE,
    DEFAULT_HORIZON,
    SUCCESS_RADIUS,
    twin_arm_reward,
)
from pearl_robot.twin.arm import ArmTwin, TwinError, resolve_params

GOAL_KEY = "goal_qpos"
ORACLE_KP = 8.0
"""N*m/rad: the oracle's position gain (stable at 20 Hz with the arm's geared dynamics)."""
ORACLE_KD = 0.5
"""N*m*s/rad: the oracle's velocity gain."""


class TwinArmEnv(MetaEnv):
    """Reach-and-hold a hidden joint target with a hidden payload, friction and latency."""

    def __init__(self, seed: int | None = None, horizon: int = DEFAULT_HORIZON,
                 mjcf_path: str | Path | None = None) -> None:
        self.twin = ArmTwin(seed=seed, mjcf_path=mjcf_path)
        spec = self.twin.spec
        n = spec.n_joints
        self.spec = spec
        self.robot_spec = spec
        self.obs_dim = 2 * n
        self.action_dim = n
        self.action_high = np.array(spec.effort_limits())
        self.action_low = -self.action_high
        self.velocity_max = np.array(spec.velocity_limits())
        self.max_episode_steps = int(horizon)
        self.control_period = spec.control_period
        self.obs_names = tuple(f"{j}.position" for j in spec.joint_names) + tuple(
            f"{j}.velocity" for j in spec.joint_names)
        self.action_names = tuple(f"{j}.effort" for j in spec.joint_names)
        self._rng = np.random.default_rng(seed)
        self._task = Task(-1, {GOAL_KEY: self.twin.home.tolist(), **ARM3_NOMINAL_PARAMS})
        self._goal = self.twin.home
        self._applied: dict[str, Any] | None = None
        self._t = 0
        self._renderer: Any = None

    # -- task ------------------------------------------------------------------------------------
    def set_task(self, task: Task) -> None:
        params = dict(task.params)
        if GOAL_KEY not in params:
            raise TwinError(f"twin-arm task {task.index} has no {GOAL_KEY!r}")
        goal = np.asarray(params[GOAL_KEY], dtype=np.float64)
        if goal.shape != (self.action_dim,) or not np.all(np.isfinite(goal)):
            raise TwinError(f"{GOAL_KEY} must be {self.action_dim} finite values, got "
                            f"{params[GOAL_KEY]!r}")
        physics = resolve_params({k: v for k, v in params.items() if k != GOAL_KEY})
        if physics["latency_s"] >= self.control_period:
            raise TwinError(f"latency_s={physics['latency_s']} must stay below the control "
                            f"period {self.control_period} s")
        self._task = task
        self._goal = goal

    def apply_task_now(self) -> None:
        """Put the task's physics into effect without a reset (the state is kept): a task
        that switches within an episode (``pearl_robot.tasks.switching``)."""
        physics = {k: v for k, v in self._task.params.items() if k != GOAL_KEY}
        if physics != self._applied:
            self.twin.set_params(physics)
            self._applied = physics

    @property
    def task(self) -> Task:
        return self._task

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    # -- episode ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        physics = {k: v for k, v in self._task.params.items() if k != GOAL_KEY}
        if physics != self._applied:
            self.twin.set_params(physics)
            self._applied = physics
        self.twin.seed(int(self._rng.integers(2**63)))
        q0 = self.twin.home + self._rng.uniform(-ARM3_START_NOISE, ARM3_START_NOISE,
                                                self.action_dim)
        s = self.twin.reset(q0)
        self._t = 0
        return np.concatenate([s.position, s.velocity]), {"task": self._task.index}

    def reset_to(self, qpos: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Start an episode at rest at ``qpos`` (evaluation baselines replay a start)."""
        self.reset(seed=seed)
        s = self.twin.reset(np.asarray(qpos, dtype=np.float64))
        return np.concatenate([s.position, s.velocity])

    def oracle_action(self, obs: np.ndarray) -> np.ndarray:
        """A controller that knows the task: PD on the goal plus the model's exact gravity and
        Coriolis torque (``qfrc_bias``, which includes the payload). The upper reference of the
        normalized score; a learned policy has to infer what this one is told."""
        n = self.action_dim
        tau = self.twin.data.qfrc_bias[self.twin.nominal.dof_ids] \
            + ORACLE_KP * (self._goal - obs[:n]) - ORACLE_KD * obs[n:]
        return np.clip(tau, self.action_low, self.action_high)

    def step(self, action: np.ndarray) -> StepResult:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
            raise TwinError(f"action must be {self.action_dim} finite efforts (N*m), got "
                            f"{action!r}")
        a = np.clip(a, self.action_low, self.action_high)
        self.twin.apply_command(a)
        s = self.twin.advance(self.control_period)
        self._t += 1
        reward, parts = twin_arm_reward(s.position, s.velocity, a, self._goal,
                                        self.action_high, self.velocity_max)
        distance = -parts["distance"]
        true_err = self.twin.data.qpos[self.twin.nominal.joint_ids] - self._goal
        info = {"reward_parts": parts, "distance": distance,
                "true_distance": float(np.sqrt(true_err @ true_err)),
                "success": bool(distance < SUCCESS_RADIUS), "effort_applied": s.effort}
        obs = np.concatenate([s.position, s.velocity])
        return StepResult(obs, reward, False, self._t >= self.max_episode_steps, info)

    # -- pictures --------------------------------------------------------------------------------
    def goal_marker_position(self) -> np.ndarray:
        """World position of the tool flange at the goal joint vector (for rendering)."""
        scratch = mujoco.MjData(self.twin.model)
        scratch.qpos[self.twin.nominal.joint_ids] = self._goal
        mujoco.mj_kinematics(self.twin.model, scratch)
        return scratch.site_xpos[self.twin._ee_site].copy()

    @property
    def model(self) -> mujoco.MjModel:
        return self.twin.model

    @property
    def data(self) -> mujoco.MjData:
        return self.twin.data

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
