"""twin-arm family and TwinArmEnv: reward definition, spec, seeding, held-out split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pearl_robot.robot.randomization import ARM3_PHYSICS_SPEC
from pearl_robot.tasks.base import Task
from pearl_robot.tasks.registry import make_family
from pearl_robot.tasks.twin_arm import (
    ARM3_GOAL_SPEC,
    TwinArmFamily,
    task_problems,
    twin_arm_reward,
    twin_arm_reward_batch,
)
from pearl_robot.twin.arm import TwinError

EMAX = np.array([3.0, 6.0, 3.0])
VMAX = np.array([6.0, 6.0, 8.0])


@pytest.fixture(scope="module")
def family() -> TwinArmFamily:
    return make_family("twin-arm")


def test_reward_matches_definition_on_hand_built_states() -> None:
    goal = np.array([0.5, -0.2, 1.0])
    r, parts = twin_arm_reward(goal + [0.3, 0.4, 0.0], np.zeros(3), np.zeros(3), goal, EMAX,
                               VMAX)
    assert parts["distance"] == pytest.approx(-0.5)  # 3-4-5
    assert parts["precision"] == pytest.approx(np.exp(-25.0))  # 5 success radii away
    assert r == pytest.approx(-0.5 + np.exp(-25.0))
    r, parts = twin_arm_reward(goal, np.array([7.0, -6.5, 0.0]), np.array([3.0, -3.0, 0.0]),
                               goal, EMAX, VMAX)
    assert parts["distance"] == 0.0
    assert parts["precision"] == 1.0
    assert parts["effort"] == pytest.approx(-0.05 * (1.0 + 0.25))
    assert parts["overspeed"] == pytest.approx(-0.2 * (1.0 + 0.5))
    assert r == pytest.approx(sum(parts.values()))
    rb, pb = twin_arm_reward_batch(np.stack([goal, goal + 0.1]), np.zeros((2, 3)),
                                   np.ones((2, 3)), goal, EMAX, VMAX)
    r0, _ = twin_arm_reward(goal + 0.1, np.zeros(3), np.ones(3), goal, EMAX, VMAX)
    assert rb[1] == pytest.approx(r0)


def test_env_reward_is_the_function_of_obs_and_action(family: TwinArmFamily) -> None:
    env = family.make_env(seed=0)
    env.set_task(family.tasks[3])
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.uniform(-4, 4, 3)
        res = env.step(a)
        expect, parts = twin_arm_reward(res.obs[:3], res.obs[3:], np.clip(a, -EMAX, EMAX),
                                        np.array(family.tasks[3].params["goal_qpos"]), EMAX,
                                        VMAX)
        assert res.reward == pytest.approx(expect)
        assert res.info["reward_parts"] == pytest.approx(parts)
        assert set(res.info["reward_parts"]) == {"distance", "precision", "effort", "overspeed"}
        # the robot-side hook gives the same number from the logged transition
        hook = family.transition_reward(family.tasks[3], np.zeros(6), a, res.obs)
        assert hook == pytest.approx((res.reward, res.reward))


def test_observation_is_joint_state_without_goal(family: TwinArmFamily) -> None:
    env = family.make_env(seed=0)
    assert env.obs_dim == 6 and env.action_dim == 3
    assert env.obs_names[:3] == ("base_yaw.position", "shoulder.position", "elbow.position")
    assert env.action_names == ("base_yaw.effort", "shoulder.effort", "elbow.effort")
    np.testing.assert_allclose(env.action_high, EMAX)
    env.set_task(family.tasks[0])
    obs, _ = env.reset(seed=1)
    assert obs.shape == (6,)
    assert np.abs(obs[:3] - env.twin.home).max() < 0.06


def test_tasks_inside_spec_and_seeded() -> None:
    a, b, c = TwinArmFamily(seed=1), TwinArmFamily(seed=1), TwinArmFamily(seed=2)
    assert [t.params for t in a.tasks] == [t.params for t in b.tasks]
    assert [t.params for t in a.tasks] != [t.params for t in c.tasks]
    for t in a.tasks + a.sample_tasks(50, np.random.default_rng(0)):
        assert task_problems(t.params) == []
    goals = np.array([t.params["goal_qpos"] for t in a.tasks])
    lo, hi = ARM3_GOAL_SPEC[0].bounds()
    assert (goals.min(0) < lo + 0.3).all() and (goals.max(0) > hi - 0.3).all()  # spread out
    masses = [t.params["payload_mass"] for t in a.tasks]
    assert min(masses) < 0.1 and max(masses) > 0.4
    reach = TwinArmFamily(physics=False)
    assert all(t.params["payload_mass"] == 0.1 and t.params["latency_s"] == 0.0
               for t in reach.tasks)
    assert {p.name for p in ARM3_PHYSICS_SPEC} <= set(a.tasks[0].params)


def test_held_out_tasks_never_in_training(family: TwinArmFamily) -> None:
    train, held = set(family.train_indices), set(family.eval_indices)
    assert not train & held
    assert train | held == set(range(len(family.tasks)))
    train_params = [family.tasks[i].params for i in train]
    assert all(family.tasks[i].params not in train_params for i in held)
    assert len(held) == 20


def test_seeds_reproduce_episodes(family: TwinArmFamily) -> None:
    def run(seed: int) -> np.ndarray:
        env = family.make_env(seed=0)
        env.set_task(family.tasks[7])
        obs = [env.reset(seed=seed)[0]]
        for k in range(15):
            obs.append(env.step(np.array([np.sin(k), 2 * np.cos(k), 0.5])).obs)
        return np.array(obs)

    np.testing.assert_array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))


def test_set_task_applies_physics_at_reset(family: TwinArmFamily) -> None:
    env = family.make_env(seed=0)
    task = Task(0, dict(family.tasks[0].params, payload_mass=0.42))
    env.set_task(task)
    env.reset(seed=0)
    assert env.twin.model.body_mass[env.twin.nominal.payload_body] == pytest.approx(0.42)


def test_bad_tasks_and_actions_are_refused(family: TwinArmFamily) -> None:
    env = family.make_env(seed=0)
    with pytest.raises(TwinError, match="latency_s"):
        env.set_task(Task(0, dict(family.tasks[0].params, latency_s=0.06)))
    with pytest.raises(TwinError, match="goal_qpos"):
        env.set_task(Task(0, {"payload_mass": 0.1}))
    env.set_task(family.tasks[0])
    env.reset(seed=0)
    with pytest.raises(TwinError, match="finite efforts"):
        env.step(np.array([np.nan, 0, 0]))


def test_goal_knowing_controller_beats_doing_nothing(family: TwinArmFamily) -> None:
    """The tasks are solvable at 20 Hz with the effort limits (a PD + gravity oracle reaches
    the goal), so a learner has something to find."""
    env = family.make_env(seed=0)
    oracle, idle, successes = [], [], 0
    for i in family.eval_indices[:8]:
        for policy, out in (("pd", oracle), ("zero", idle)):
            env.set_task(family.tasks[i])
            obs, _ = env.reset(seed=i)
            total = 0.0
            for _ in range(env.max_episode_steps):
                a = env.oracle_action(obs) if policy == "pd" else np.zeros(3)
                res = env.step(a)
                obs, total = res.obs, total + res.reward
                successes += policy == "pd" and res.info["success"]
            out.append(total)
    assert np.mean(oracle) > -25 and np.mean(idle) < -60
    assert successes > 8 * env.max_episode_steps / 2


def test_family_module_does_not_import_mujoco() -> None:
    code = ("import sys; from pearl_robot.tasks.registry import make_family; "
            "f = make_family('twin-arm'); f.train_tasks; f.describe(); "
            "import pearl_robot.tasks.mujoco_families; "
            "assert 'mujoco' not in sys.modules, 'mujoco imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_baseline_returns_bracket_the_task(family: TwinArmFamily) -> None:
    task = family.tasks[family.eval_indices[0]]
    env = family.make_env(seed=0)
    env.set_task(task)
    start, _ = env.reset(seed=3)
    still, oracle = family.baseline_returns(task, start)
    assert oracle > still + 20
    assert family.baseline_returns(task, start) == (still, oracle)  # deterministic
    # replaying the still policy by hand from the same start gives the same number
    env.reset_to(start[:3], seed=0)
    total = sum(env.step(np.zeros(3)).reward for _ in range(env.max_episode_steps))
    assert total == pytest.approx(still)
