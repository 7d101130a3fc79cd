"""VectorMetaEnv gives bit-identical results to single-env stepping with the same seeds."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.tasks.registry import make_family
from pearl_robot.twin.arm import TwinError
from pearl_robot.twin.vector import VectorMetaEnv


def _single(family, tasks, seeds, actions):
    obs, rew = [], []
    for j, (task, seed) in enumerate(zip(tasks, seeds, strict=True)):
        env = family.make_env(seed=100 + j)
        env.set_task(task)
        o = [env.reset(seed=seed)[0]]
        r = []
        for t in range(actions.shape[0]):
            res = env.step(actions[t, j])
            o.append(res.obs)
            r.append(res.reward)
        obs.append(o)
        rew.append(r)
    return np.array(obs).transpose(1, 0, 2), np.array(rew).T


@pytest.mark.parametrize("name, n_threads", [("twin-arm", 2), ("twin-arm", 3),
                                             ("cheetah-vel", 2), ("ant-goal", 2)])
def test_vector_equals_single_stepping(name: str, n_threads: int) -> None:
    family = make_family(name)
    n, steps = 5, 12
    tasks = [family.tasks[i] for i in (0, 3, 7, 9, 1)]
    seeds = [11, 12, 13, 11, 40]
    env0 = family.make_env()
    actions = np.random.default_rng(0).uniform(env0.action_low, env0.action_high,
                                               (steps, n, env0.action_dim))
    ref_obs, ref_rew = _single(family, tasks, seeds, actions)
    with VectorMetaEnv.from_family(family, n, seed=100, n_threads=n_threads) as vec:
        vec.set_tasks(tasks)
        obs, _ = vec.reset(seeds)
        got_obs, got_rew = [obs], []
        for t in range(steps):
            out = vec.step(actions[t])
            got_obs.append(out.obs)
            got_rew.append(out.reward)
            assert len(out.infos) == n and "reward_parts" in out.infos[0]
    np.testing.assert_array_equal(np.array(got_obs), ref_obs)
    np.testing.assert_array_equal(np.array(got_rew), ref_rew)


def test_mask_skips_envs_and_errors_surface() -> None:
    family = make_family("twin-arm")
    with VectorMetaEnv.from_family(family, 3, seed=0, n_threads=2) as vec:
        vec.set_tasks(family.tasks[:3])
        obs0, _ = vec.reset([0, 1, 2])
        out = vec.step(np.ones((3, 3)), mask=np.array([True, False, True]))
        np.testing.assert_array_equal(out.obs[1], obs0[1])
        assert out.reward[1] == 0.0 and out.infos[1] == {}
        assert not np.array_equal(out.obs[0], obs0[0])
        with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
            vec.step(np.ones((2, 3)))
        bad = np.ones((3, 3))
        bad[2, 0] = np.nan
        with pytest.raises(TwinError, match="finite"):
            vec.step(bad)
        with pytest.raises(ValueError, match="need 3 tasks"):
            vec.set_tasks(family.tasks[:2])
