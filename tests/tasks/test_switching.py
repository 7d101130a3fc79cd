"""Switching task families: the spec's schedule, and environments that apply it mid-episode."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.robot.randomization import ARM3_PHYSICS_SPEC, check_params
from pearl_robot.tasks.registry import make_family
from pearl_robot.tasks.switching_spec import (
    ARM3_SWITCHING_SPEC,
    SwitchingSpec,
    SwitchKind,
    sample_switches,
)
from pearl_robot.tasks.twin_arm import ARM3_GOAL_SPEC


def test_schedule_respects_the_spec_and_is_reproducible() -> None:
    base = {"goal_qpos": [0.0, 0.0, 0.0], "payload_mass": 0.1,
            "friction_scale": [1.0] * 3, "damping_scale": [1.0] * 3}
    a = sample_switches(ARM3_SWITCHING_SPEC, base, 24_000, 0.05, np.random.default_rng(3))
    b = sample_switches(ARM3_SWITCHING_SPEC, base, 24_000, 0.05, np.random.default_rng(3))
    assert a == b and len(a) > 20
    steps = np.array([s.step for s in a])
    assert steps[0] >= 200  # first_after_s = 10 s
    assert np.all(np.diff(steps) >= 200)  # min_interval_s = 10 s
    assert 300 <= np.diff(steps).mean() <= 500  # mean 20 s
    assert {s.kind for s in a} == {k.name for k in ARM3_SWITCHING_SPEC.kinds}
    for s in a:
        assert not check_params(ARM3_GOAL_SPEC, s.params)
        assert not check_params(tuple(p for p in ARM3_PHYSICS_SPEC if p.name in s.params),
                                s.params)
        if s.kind == "payload_dropped":
            assert s.params["payload_mass"] == 0.0
    assert base["payload_mass"] == 0.1  # the input is not modified
    few = SwitchingSpec(ARM3_SWITCHING_SPEC.kinds, max_switches=2)
    assert len(sample_switches(few, base, 24_000, 0.05, np.random.default_rng(0))) == 2


def test_spec_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="mean_interval_s"):
        SwitchingSpec(ARM3_SWITCHING_SPEC.kinds, min_interval_s=5, mean_interval_s=2)
    with pytest.raises(ValueError, match="redraws no parameter"):
        SwitchKind("nothing", ())
    with pytest.raises(KeyError, match="goal_moved"):
        ARM3_SWITCHING_SPEC.kind("teleported")


def test_point_robot_goal_moves_within_the_episode() -> None:
    fam = make_family("point-robot-switching")
    assert fam.eval_indices == make_family("point-robot").eval_indices
    env = fam.make_env(seed=0)
    env.set_task(fam.tasks[0])
    env.reset(seed=5)
    schedule = list(env.switches)
    assert schedule and schedule[0].step >= 8
    goals, switched = [], []
    for t in range(env.max_episode_steps):
        res = env.step(np.zeros(2))
        goals.append(env.env.goal.tolist())
        if "switch" in res.info:
            switched.append(t)
            # the reward of this very step already uses the new goal
            assert res.reward == pytest.approx(-np.linalg.norm(res.obs - env.env.goal))
    assert switched == [s.step for s in schedule]
    assert goals[schedule[0].step] == schedule[0].params["goal"]
    assert goals[schedule[0].step - 1] == fam.tasks[0].params["goal"]
    env.reset(seed=5)
    assert env.switches == schedule  # the seed reproduces the schedule
    env.reset(seed=5)
    assert env.task == fam.tasks[0]  # every episode starts from the base task
