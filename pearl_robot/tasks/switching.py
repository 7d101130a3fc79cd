"""Task families whose task switches at random times within an episode.

:class:`SwitchingFamily` wraps a family (same task list, same train/held-out split) and a
:class:`~pearl_robot.tasks.switching_spec.SwitchingSpec`. Its environments draw each episode's
switch schedule at ``reset`` from their own generator (so ``reset(seed=)`` reproduces it) and
apply a switch between two steps without resetting the state: the payload appears at the
flange, the friction changes under a moving joint, the goal jumps while the arm holds the old
one. What switched is in ``info``:

- ``info["switch"]``: the kind (str) on the step whose transition is the first of the new task,
  else absent;
- ``info["segment"]``: how many switches happened so far in this episode (0 before the first);
- ``info["task_params"]``: the parameters that produced this step, on switch steps.

``SwitchingEnv.switches`` is the episode's schedule (the ground truth benches score against).
Registered as ``twin-arm-switching`` and ``point-robot-switching`` (episodes of the base
family's horizon unless ``horizon=`` is given; a long horizon is the never-ending stream).

For meta-training, a switching episode is a sequence of single-task segments: split it at
``info["segment"]`` changes before it enters per-task buffers (the datalog does this for logged
episodes, see ``pearl_robot.datalog.changes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pearl_robot.tasks.base import MetaEnv, StepResult, Task, TaskFamily
from pearl_robot.tasks.switching_spec import (
    ARM3_SWITCHING_SPEC,
    POINT_SWITCHING_SPEC,
    Switch,
    SwitchingSpec,
    sample_switches,
)


class SwitchingEnv(MetaEnv):
    """``env`` whose task follows a switch schedule drawn at every reset."""

    def __init__(self, env: MetaEnv, spec: SwitchingSpec, seed: int | None = None) -> None:
        self.env = env
        self.spec = spec
        self.obs_dim, self.action_dim = env.obs_dim, env.action_dim
        self.action_low, self.action_high = env.action_low, env.action_high
        self.max_episode_steps = env.max_episode_steps
        self.control_period = env.control_period
        self.obs_names, self.action_names = env.obs_names, env.action_names
        self.obs_units, self.action_units = env.obs_units, env.action_units
        self.command_interface, self.robot_spec = env.command_interface, env.robot_spec
        self._rng = np.random.default_rng(seed)
        self._base: Task | None = None
        self._task: Task | None = None
        self.switches: list[Switch] = []
        self._next = 0
        self._t = 0

    def __getattr__(self, name: str) -> Any:  # units, command interface, oracle, ...
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def set_task(self, task: Task) -> None:
        """The task each episode starts from (switches are drawn at ``reset``)."""
        self.env.set_task(task)
        self._base = self._task = task

    @property
    def task(self) -> Task | None:
        """The task in force now (after the switches so far)."""
        return self._task

    @property
    def segment(self) -> int:
        return self._next

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if self._base is None:
            raise RuntimeError("SwitchingEnv.reset before set_task")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.env.set_task(self._base)
        self._task = self._base
        obs, info = self.env.reset(seed=int(self._rng.integers(2**63)))
        self.switches = sample_switches(self.spec, self._base.params, self.max_episode_steps,
                                        self.control_period, self._rng)
        self._next = 0
        self._t = 0
        info = dict(info)
        info["segment"] = 0
        return obs, info

    def step(self, action: np.ndarray) -> StepResult:
        switched = None
        if self._next < len(self.switches) and self.switches[self._next].step <= self._t:
            sw = self.switches[self._next]
            self._task = Task(-1, sw.params)
            self.env.set_task(self._task)
            apply_now = getattr(self.env, "apply_task_now", None)
            if apply_now is not None:
                apply_now()
            self._next += 1
            switched = sw.kind
        res = self.env.step(action)
        self._t += 1
        info = dict(res.info)
        info["segment"] = self._next
        if switched is not None:
            info["switch"] = switched
            info["task_params"] = dict(self._task.params) if self._task else {}
        return StepResult(res.obs, res.reward, res.terminated, res.truncated, info)

    def close(self) -> None:
        self.env.close()


class SwitchingFamily(TaskFamily):
    """``base`` with its tasks switching within episodes by ``spec``."""

    def __init__(self, base: TaskFamily, spec: SwitchingSpec, name: str | None = None) -> None:
        self.base = base
        self.spec = spec
        self.name = name or f"{base.name}-switching"
        self.context_reward_key = base.context_reward_key
        self.success_key = base.success_key

    @property
    def tasks(self) -> list[Task]:
        return self.base.tasks

    @property
    def train_indices(self) -> list[int]:
        return self.base.train_indices

    @property
    def eval_indices(self) -> list[int]:
        return self.base.eval_indices

    def make_env(self, seed: int | None = None) -> SwitchingEnv:
        return SwitchingEnv(self.base.make_env(seed=seed), self.spec, seed=seed)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return self.base.sample_tasks(n, rng)

    def __getattr__(self, name: str) -> Any:  # transition_reward, baseline_returns, ...
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def describe(self) -> dict[str, Any]:
        d = dict(self.base.describe())
        d.update(name=self.name, base=self.base.name, switching=self.spec.describe())
        return d


def twin_arm_switching(spec: SwitchingSpec = ARM3_SWITCHING_SPEC,
                       **kwargs: Any) -> SwitchingFamily:
    """twin-arm (goals x physics) whose goal, payload, friction or damping switch."""
    from pearl_robot.tasks.twin_arm import TwinArmFamily

    return SwitchingFamily(TwinArmFamily(**kwargs), spec, "twin-arm-switching")


def point_robot_switching(spec: SwitchingSpec = POINT_SWITCHING_SPEC,
                          **kwargs: Any) -> SwitchingFamily:
    """point-robot whose goal moves within the episode."""
    from pearl_robot.tasks.point_robot import PointRobotFamily

    return SwitchingFamily(PointRobotFamily(**kwargs), spec, "point-robot-switching")
