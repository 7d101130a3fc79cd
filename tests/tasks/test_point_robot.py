"""Point-robot families match the reference definitions."""

import numpy as np
import pytest

from pearl_robot.tasks.point_robot import PointEnv, oracle_action, rollout_return
from pearl_robot.tasks.registry import make_family


def test_dense_goals_are_the_reference_draws():
    # the reference seeds the *global* legacy generator in the env constructor
    np.random.seed(1337)  # noqa: NPY002
    ref = [[np.random.uniform(-1.0, 1.0), np.random.uniform(-1.0, 1.0)]  # noqa: NPY002
           for _ in range(100)]
    fam = make_family("point-robot")
    np.testing.assert_allclose([t.params["goal"] for t in fam.tasks], ref)
    assert fam.train_indices == list(range(80)) and fam.eval_indices == list(range(80, 100))


def test_sparse_goals_on_the_half_circle_and_disjoint_split():
    fam = make_family("sparse-point-robot")
    g = np.array([t.params["goal"] for t in fam.tasks])
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0)
    assert np.all(g[:, 1] >= -1e-12)
    angles = np.sort(np.arctan2(g[:, 1], g[:, 0]))
    np.testing.assert_allclose(angles, np.linspace(0, np.pi, 100), atol=1e-9)
    assert not set(fam.train_indices) & set(fam.eval_indices)


def test_dense_reward_is_distance_after_the_move_and_actions_are_clipped():
    env = PointEnv(seed=0)
    env.set_task(make_family("point-robot").tasks[0].__class__(0, {"goal": [0.5, 0.0]}))
    env.reset()
    env.reset_to(np.array([0.0, 0.0]))
    st = env.step(np.array([1.0, 0.0]))  # clipped to 0.1
    np.testing.assert_allclose(st.obs, [0.1, 0.0])
    assert st.reward == pytest.approx(-0.4)
    assert not st.terminated and not st.truncated


def test_sparse_reward_inside_radius_only_and_horizon():
    fam = make_family("sparse-point-robot")
    env = fam.make_env(seed=0)
    env.set_task(fam.tasks[0].__class__(0, {"goal": [0.0, 0.25]}))
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0.0, 0.0])  # reference start
    st = env.step(np.array([0.0, 0.0]))
    assert st.info["sparse_reward"] == 0.0 and st.reward == pytest.approx(-0.25)
    st = env.step(np.array([0.0, 0.1]))  # distance 0.15 <= 0.2
    assert st.info["sparse_reward"] == pytest.approx(0.85) and st.info["success"]
    for _ in range(17):
        st = env.step(np.zeros(2))
    assert not st.truncated
    assert env.step(np.zeros(2)).truncated  # 20 steps


def test_oracle_beats_still_and_is_greedy_optimal():
    start, goal = np.array([-0.9, 0.8]), np.array([0.7, -0.2])
    assert rollout_return(start, goal, "oracle") > rollout_return(start, goal, "still")
    a = oracle_action(start, goal)
    rng = np.random.default_rng(0)
    for _ in range(200):  # no action in the box gets closer in one step
        b = rng.uniform(-0.1, 0.1, 2)
        assert np.linalg.norm(start + a - goal) <= np.linalg.norm(start + b - goal) + 1e-12


def test_seeded_starts_reproduce():
    fam = make_family("point-robot")
    a, b = fam.make_env(seed=5), fam.make_env(seed=5)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    np.testing.assert_array_equal(a.reset(seed=9)[0], b.reset(seed=9)[0])


@pytest.mark.parametrize("name", ["point-robot", "sparse-point-robot"])
def test_transition_reward_equals_what_the_env_returned(name):
    fam = make_family(name)
    env = fam.make_env(seed=3)
    task = fam.tasks[5]
    env.set_task(task)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-0.1, 0.1, 2)
        st = env.step(a)
        r, c = fam.transition_reward(task, obs, a, st.obs)
        assert r == pytest.approx(st.reward)
        assert c == pytest.approx(st.info["sparse_reward"] if fam.sparse else st.reward)
        obs = st.obs
