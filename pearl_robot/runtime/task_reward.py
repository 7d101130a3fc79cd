"""The task's reward for one measured transition, as the episode controller needs it online.

The reward belongs to the task family (``pearl_robot.tasks``); this module only picks the
family's function and binds the task, so the controller (``runtime/episodes.py``) scores each
transition with one call. A family offers ``transition_reward(task, obs, action, next_obs) ->
(reward, context_reward)`` (twin-arm and the point-robot families do); one without it cannot be
scored on a robot and is refused.
"""

from __future__ import annotations

from collections.abc import Callable
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


def reward_function(family: TaskFamily, task: Task) -> RewardFn:
    """The reward of ``task`` as a function of one transition (ConfigError if unknown)."""
    hook = getattr(family, "transition_reward", None)
    if callable(hook):
        def hooked(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> Reward:
            r, c = hook(task, obs, action, next_obs)
            return Reward(float(r), float(c))
        return hooked
    raise ConfigError(f"task family {family.name!r} offers no transition reward; the policy "
                      "node cannot score episodes on the robot")
