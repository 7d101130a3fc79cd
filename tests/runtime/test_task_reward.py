"""The reward the policy node computes online equals the task family's own (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.errors import ConfigError
from pearl_robot.runtime.task_reward import reward_function
from pearl_robot.tasks.base import Task
from pearl_robot.tasks.registry import make_family


@pytest.mark.parametrize("name", ["point-robot", "sparse-point-robot"])
def test_point_robot_reward_matches_the_env(name: str) -> None:
    family = make_family(name)
    task = family.eval_tasks[3]
    env = family.make_env(seed=0)
    env.set_task(task)
    obs, _ = env.reset(seed=1)
    fn = reward_function(family, task)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-0.1, 0.1, 2)
        step = env.step(a)
        r = fn(obs, a, step.obs)
        assert r.reward == pytest.approx(step.reward)
        want_ctx = step.info.get("sparse_reward", step.reward)
        assert r.context == pytest.approx(want_ctx)
        obs = step.obs


def test_twin_arm_uses_the_family_hook() -> None:
    family = make_family("twin-arm")
    task = family.eval_tasks[0]
    fn = reward_function(family, task)
    goal = np.asarray(task.params["goal_qpos"])
    at_goal = fn(np.zeros(6), np.zeros(3), np.concatenate([goal, np.zeros(3)]))
    away = fn(np.zeros(6), np.zeros(3), np.concatenate([goal + 0.5, np.zeros(3)]))
    # at the goal: no distance cost, the full precision bonus (tasks/twin_arm.py)
    assert at_goal.reward == pytest.approx(1.0) and away.reward < at_goal.reward


def test_a_family_without_a_reward_is_refused() -> None:
    class Nameless:
        name = "mystery"

    with pytest.raises(ConfigError, match="mystery"):
        reward_function(Nameless(), Task(0, {}))  # type: ignore[arg-type]
