"""The start-up line's plan: what is left of the overnight schedule."""

from __future__ import annotations

import dataclasses

from pearl_robot.runtime.schedule import ScheduleConfig, describe_plan


def test_the_start_up_plan_names_only_the_tasks_the_budget_reaches() -> None:
    cfg = ScheduleConfig(task_indices=(40, 41, 42, 43, 44, 45, 46, 47), episodes_per_task=2,
                         max_episodes=4)
    assert describe_plan(cfg, 0) == "4 of 4 episodes left, tasks [40, 41] x2"
    assert describe_plan(cfg, 3) == "1 of 4 episodes left, tasks [41] x1"
    three = dataclasses.replace(cfg, max_episodes=3)  # a budget that cuts a task short
    assert describe_plan(three, 0) == "3 of 3 episodes left, tasks [40 x2, 41 x1]"
    assert describe_plan(dataclasses.replace(cfg, episodes_per_task=3, max_episodes=2), 0) == \
        "2 of 2 episodes left, tasks [40] x2"
    assert describe_plan(cfg, 4) == "0 of 4 episodes left, no task left"
    forever = dataclasses.replace(cfg, max_episodes=None)
    assert describe_plan(forever, 0) == "until stopped, tasks [40, 41, 42, 43, 44, 45]... x2"
