"""PEARL's MuJoCo benchmark families: observation content, rewards by their definitions on
hand-built states, contact forces on modern MuJoCo, task splits, seeding, rand-params physics."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from pearl_robot.tasks.base import Task
from pearl_robot.tasks.locomotion import (
    HOPPER_SHAPES,
    RAND_PARAMS_SPEC,
    WALKER_SHAPES,
    SeededFamily,
)
from pearl_robot.tasks.registry import make_family

mujoco = pytest.importorskip("mujoco")

OBS_DIMS = {"cheetah-vel": 20, "cheetah-dir": 20, "ant-dir": 27, "ant-goal": 113,
            "humanoid-dir": 376, "walker-rand-params": 17, "hopper-rand-params": 11}
DTS = {"cheetah-vel": 0.05, "cheetah-dir": 0.05, "ant-dir": 0.05, "ant-goal": 0.05,
       "humanoid-dir": 0.015, "walker-rand-params": 0.01, "hopper-rand-params": 0.008}
SPLITS = {"cheetah-vel": (100, 30), "ant-goal": (150, 30), "humanoid-dir": (100, 30),
          "walker-rand-params": (40, 10), "hopper-rand-params": (40, 10)}


@pytest.fixture(scope="module")
def families() -> dict[str, SeededFamily]:
    return {name: make_family(name) for name in OBS_DIMS}


def _env(families, name, task=0, seed=0):
    fam = families[name]
    env = fam.make_env(seed=seed)
    env.set_task(fam.tasks[task])
    env.reset(seed=seed)
    return env


@pytest.mark.parametrize("name", sorted(OBS_DIMS))
def test_shapes_rates_and_names(families, name: str) -> None:
    env = _env(families, name)
    assert env.obs_dim == OBS_DIMS[name] == len(env.obs_names)
    assert env.control_period == pytest.approx(DTS[name])
    res = env.step(np.zeros(env.action_dim))
    assert res.obs.shape == (OBS_DIMS[name],)
    assert np.isclose(res.reward, sum(res.info["reward_parts"].values()))
    assert env.max_episode_steps == 200


def test_cheetah_obs_holds_qpos_qvel_and_torso_com(families) -> None:
    env = _env(families, "cheetah-vel")
    obs = env.step(np.full(6, 0.3)).obs
    d = env.data
    np.testing.assert_array_equal(obs[:8], d.qpos[1:])
    np.testing.assert_array_equal(obs[8:17], d.qvel)
    np.testing.assert_array_equal(obs[17:], d.xpos[env.model.body("torso").id])


def test_cheetah_vel_and_dir_rewards_by_definition(families) -> None:
    for name, key, value in (("cheetah-vel", "velocity", 1.7), ("cheetah-dir", "direction", -1)):
        env = _env(families, name)
        env.set_task(Task(0, {key: value}))
        qpos = env.init_qpos.copy()
        qvel = np.zeros(9)
        qvel[0] = 2.5  # hand-built: cheetah sliding forward at 2.5 m/s
        env.set_state(qpos, qvel)
        a = np.array([0.5, -1.0, 0.2, 0.0, 0.3, -0.4])
        x0 = env.data.qpos[0]
        res = env.step(np.append(a[:5], 3.0))  # last entry is clipped to 1
        a[5] = 1.0
        v = (env.data.qpos[0] - x0) / 0.05
        assert v > 1.0
        if name == "cheetah-vel":
            expect = -abs(v - 1.7) - 0.05 * np.sum(a ** 2)
        else:
            expect = -v - 0.05 * np.sum(a ** 2)
        assert res.reward == pytest.approx(expect)
        assert not res.terminated


def test_ant_goal_contact_forces_are_not_zero(families) -> None:
    """mujoco >= 2 fills cfrc_ext only in mj_rnePostConstraint; without it 84 of ant-goal's
    113 observation entries are zero (the suspected cause of oyster's ant-goal gap)."""
    env = _env(families, "ant-goal")
    for _ in range(10):
        res = env.step(np.zeros(8))
    contact = res.obs[29:]
    assert np.count_nonzero(contact) >= 6  # at least one body pushes on the floor
    assert np.all(np.abs(contact) <= 1.0)
    d = env.data
    expect_contact = -0.5e-3 * np.sum(np.clip(d.cfrc_ext, -1, 1) ** 2)
    assert expect_contact < 0
    assert res.info["reward_parts"]["contact"] == pytest.approx(expect_contact)


def test_ant_goal_and_dir_rewards_by_definition(families) -> None:
    env = _env(families, "ant-goal")
    env.set_task(Task(0, {"goal": [1.0, -2.0]}))
    qpos = env.init_qpos.copy()
    qpos[:2] = [0.5, 0.5]  # hand-built: torso at (0.5, 0.5), at rest
    env.set_state(qpos, np.zeros(14))
    a = np.full(8, 0.5)
    res = env.step(a)
    xy = env.data.xpos[env.model.body("torso").id][:2]
    assert np.abs(xy - [0.5, 0.5]).max() < 0.05
    contact = 0.5e-3 * np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2)
    assert res.reward == pytest.approx(-np.abs(xy - [1, -2]).sum() - 0.1 * 8 * 0.25 - contact)

    env = _env(families, "ant-dir")
    env.set_task(Task(0, {"direction": math.pi / 2}))
    qvel = np.zeros(14)
    qvel[1] = 1.0  # moving along +y = the goal direction
    env.set_state(env.init_qpos.copy(), qvel)
    before = env.data.xpos[env.model.body("torso").id].copy()
    res = env.step(np.zeros(8))
    after = env.data.xpos[env.model.body("torso").id]
    contact = 0.5e-3 * np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2)
    expect = (after[1] - before[1]) / 0.05 - contact + 1.0
    assert res.info["reward_parts"]["forward"] > 0.1
    assert res.reward == pytest.approx(expect, abs=1e-9)
    qpos = env.init_qpos.copy()
    qpos[2] = 1.5  # torso above 1.0 m: terminated, as the reference's notdone
    env.set_state(qpos, np.zeros(14))
    assert env.step(np.zeros(8)).terminated


def test_humanoid_dir_reward_and_termination(families) -> None:
    env = _env(families, "humanoid-dir")
    env.set_task(Task(0, {"direction": 0.0}))
    mass = env.model.body_mass[:, None]
    com = lambda: (mass * env.data.xipos).sum(0)[:2] / mass.sum()  # noqa: E731
    before = com()
    a = np.full(17, 0.2)
    res = env.step(a)
    impact = min(0.5e-6 * np.sum(env.data.cfrc_ext ** 2), 10)
    expect = 0.25 * (com() - before)[0] / 0.003 - 0.1 * np.sum(a ** 2) - impact + 5.0
    assert res.reward == pytest.approx(expect)
    qpos = env.init_qpos.copy()
    qpos[2] = 0.6  # fallen
    env.set_state(qpos, np.zeros(23))
    assert env.step(np.zeros(17)).terminated


def test_walker_hopper_reward_and_health(families) -> None:
    for name, fs in (("walker-rand-params", 5), ("hopper-rand-params", 4)):
        env = _env(families, name)
        x0 = env.data.qpos[0]
        a = np.full(env.action_dim, 0.5)
        res = env.step(a)
        dt = 0.002 * fs
        expect = (env.data.qpos[0] - x0) / dt + 1.0 - 1e-3 * np.sum(a ** 2)
        assert res.reward == pytest.approx(expect)
        assert not res.terminated
        assert np.all(np.abs(res.obs[env.model.nq - 1:]) <= 10.0)
        qpos = env.init_qpos.copy()
        qpos[1] = 0.5 if name.startswith("walker") else -0.6  # too low: unhealthy
        env.set_state(qpos, np.zeros(env.model.nv))
        assert env.step(np.zeros(env.action_dim)).terminated, name


def test_rand_param_shapes_match_the_models() -> None:
    from pearl_robot.twin.locomotion import rand_param_shapes

    for xml, shapes in (("walker2d.xml", WALKER_SHAPES), ("hopper.xml", HOPPER_SHAPES)):
        got = rand_param_shapes(xml)
        assert {f + "_scale": s for f, s in got.items()} == shapes


def test_rand_params_stay_in_spec_and_change_the_physics(families) -> None:
    fam = families["walker-rand-params"]
    for t in fam.tasks:
        for p in RAND_PARAMS_SPEC:
            v = np.asarray(t.params[p.name])
            assert v.shape == WALKER_SHAPES[p.name]
            assert p.contains(v.ravel()[:1]) and v.min() >= p.low - 1e-12
            assert v.max() <= p.high + 1e-12
    env = fam.make_env(seed=0)
    ones = {k: np.ones(s).tolist() for k, s in WALKER_SHAPES.items()}
    heavy = dict(ones, body_mass_scale=np.full(8, 3.0).tolist(),
                 body_inertia_scale=np.full((8, 3), 3.0).tolist())
    damped = dict(ones, dof_damping_scale=np.full(9, 2.0).tolist())
    accel, passive = {}, {}
    for label, params in (("nominal", ones), ("heavy", heavy), ("damped", damped)):
        env.set_task(Task(0, params))
        env.reset(seed=0)
        qvel = np.zeros(9)
        qvel[3:] = 2.0  # leg joints swinging
        env.set_state(env.init_qpos.copy(), qvel)
        env.data.ctrl[:] = 1.0
        mujoco.mj_forward(env.model, env.data)
        accel[label] = env.data.qacc[3:].copy()
        passive[label] = env.data.qfrc_passive[3:].copy()
    np.testing.assert_allclose(env.model.dof_damping, 2.0 * env.nominal["dof_damping"])
    # same torque, three times the mass: the legs accelerate less
    assert np.linalg.norm(accel["heavy"]) < 0.6 * np.linalg.norm(accel["nominal"])
    # twice the damping: twice the braking torque on the swinging legs
    assert np.all(passive["nominal"] < 0)
    np.testing.assert_allclose(passive["damped"], 2.0 * passive["nominal"])


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_held_out_tasks_never_in_training(families, name: str) -> None:
    fam = families[name]
    n_train, n_eval = SPLITS[name]
    assert len(fam.train_indices) == n_train and len(fam.eval_indices) == n_eval
    assert not set(fam.train_indices) & set(fam.eval_indices)
    train = [fam.tasks[i].params for i in fam.train_indices]
    assert all(fam.tasks[i].params not in train for i in fam.eval_indices)


def test_two_task_direction_families_follow_the_reference(families) -> None:
    for name in ("cheetah-dir", "ant-dir"):
        fam = families[name]
        assert fam.held_out is False and len(fam.tasks) == 2
        assert fam.train_indices == fam.eval_indices == [0, 1]
    assert [t.params["direction"] for t in families["ant-dir"].tasks] == [0.0, math.pi]
    wide = make_family("ant-dir", forward_backward=False, n_tasks=40, n_eval=10)
    assert wide.held_out and not set(wide.train_indices) & set(wide.eval_indices)


def test_task_distributions_and_sampling(families) -> None:
    v = [t.params["velocity"] for t in families["cheetah-vel"].tasks]
    assert 0 <= min(v) < 0.2 and 2.8 < max(v) <= 3.0
    expect = np.random.RandomState(1337).uniform(0.0, 3.0, size=(130,))  # oyster's draw
    np.testing.assert_array_equal(v, expect)
    goals = np.array([t.params["goal"] for t in families["ant-goal"].tasks])
    assert np.linalg.norm(goals, axis=1).max() <= 3.0
    rng = np.random.default_rng(0)
    for fam in families.values():
        new = fam.sample_tasks(5, rng)
        assert len(new) == 5 and all(t.index == -1 for t in new)
        env = fam.make_env(seed=0)
        env.set_task(new[0])
        env.reset(seed=0)


@pytest.mark.parametrize("name", ["cheetah-vel", "ant-goal", "walker-rand-params"])
def test_seeds_reproduce_episodes(families, name: str) -> None:
    def run(seed: int) -> np.ndarray:
        env = _env(families, name, task=3, seed=seed)
        obs = []
        rng = np.random.default_rng(0)
        for _ in range(10):
            obs.append(env.step(rng.uniform(-1, 1, env.action_dim)).obs)
        return np.array(obs)

    np.testing.assert_array_equal(run(4), run(4))
    assert not np.array_equal(run(4), run(5))


def test_reset_needs_a_task_and_bad_actions_raise(families) -> None:
    from pearl_robot.twin.arm import TwinError

    env = families["cheetah-vel"].make_env(seed=0)
    with pytest.raises(TwinError, match="set_task"):
        env.reset(seed=0)
    env.set_task(families["cheetah-vel"].tasks[0])
    env.reset()
    with pytest.raises(TwinError, match="6 finite"):
        env.step(np.zeros(5))
    with pytest.raises(TwinError, match="has no 'goal'"):
        families["ant-goal"].make_env().set_task(Task(0, {"velocity": 1.0}))


def test_family_lists_build_without_mujoco() -> None:
    code = ("import sys; from pearl_robot.tasks.registry import make_family\n"
            "for n in ['cheetah-vel', 'cheetah-dir', 'ant-dir', 'ant-goal', 'humanoid-dir', "
            "'walker-rand-params', 'hopper-rand-params']:\n"
            "    make_family(n).describe()\n"
            "assert 'mujoco' not in sys.modules, 'mujoco imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
