"""The task's reward for one measured transition, as the policy node needs it online.

The reward belongs to the task family (``pearl_robot.tasks``); this module only picks the
family's function and binds the task, so the node's tick calls one function. A family that
offers ``transition_reward(task, obs, action, next_obs) -> (reward, context_reward)`` is used
as is; the families that predate that hook are bound here from their pure-numpy reward
functions (twin-arm: :func:`pearl_robot.tasks.twin_arm.twin_arm_reward` on the measured joint
state; point-robot: minus the distance to the goal, sparse variant's context reward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from pearl_robot.errors import ConfigError
from pearl_robot.tasks.base import Task, TaskFamily


class Reward(NamedTuple):
    """Reward of one transition."""

    reward: float
    """Task reward (what is logged and what the RL target uses)."""
    context: float
    """Context reward (what the encoder sees; equals ``reward`` unless the family has a
    separate context reward, like sparse point-robot)."""


RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Reward]
"""(obs, action, next_obs) -> Reward, physical units."""


def reward_function(family: TaskFamily, task: Task, obs_names: Sequence[str],
                    effort_max: np.ndarray | None = None,
                    velocity_max: np.ndarray | None = None) -> RewardFn:
    """The reward of ``task`` as a function of one transition (ConfigError if unknown)."""
    hook = getattr(family, "transition_reward", None)
    if callable(hook):
        def hooked(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> Reward:
            r, c = hook(task, obs, action, next_obs)
            return Reward(float(r), float(c))
        return hooked
    name = family.name
    if name.startswith("twin-arm"):
        from pearl_robot.tasks.twin_arm import twin_arm_reward

        if effort_max is None or velocity_max is None:
            raise ConfigError("twin-arm reward needs the robot's effort and velocity limits")
        pos_idx = [i for i, n in enumerate(obs_names) if n.endswith("position")]
        vel_idx = [i for i, n in enumerate(obs_names) if n.endswith("velocity")]
        goal = np.asarray(task.params["goal_qpos"], dtype=np.float64)
        if len(pos_idx) != goal.size or len(vel_idx) != goal.size:
            raise ConfigError(f"twin-arm reward needs {goal.size} position and velocity "
                              f"observations, the bundle observes {list(obs_names)}")
        emax = np.asarray(effort_max, dtype=np.float64)
        vmax = np.asarray(velocity_max, dtype=np.float64)

        def arm(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> Reward:
            r, _ = twin_arm_reward(next_obs[pos_idx], next_obs[vel_idx], action, goal, emax,
                                   vmax)
            return Reward(r, r)
        return arm
    if name in ("point-robot", "sparse-point-robot"):
        goal = np.asarray(task.params["goal"], dtype=np.float64)
        radius = float(getattr(family, "goal_radius", 0.2))
        sparse = name == "sparse-point-robot"

        def point(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> Reward:
            d = float(np.linalg.norm(next_obs[:2] - goal))
            ctx = (1.0 - d if d <= radius else 0.0) if sparse else -d
            return Reward(-d, ctx)
        return point
    raise ConfigError(f"task family {name!r} offers no transition reward; the policy node "
                      "cannot score episodes on the robot")
