"""Replay buffers and context sampling semantics."""

import numpy as np
import pytest

from pearl_robot.core.replay import MultiTaskReplay, Path, context_from_path


def _path(task_value: float, n: int, obs_dim=2, act_dim=1) -> Path:
    obs = np.full((n, obs_dim), task_value, np.float32)
    obs[:, 1] = np.arange(n)
    return Path(obs, np.full((n, act_dim), 0.5, np.float32), np.full((n, 1), -1.0, np.float32),
                obs + 1, np.zeros((n, 1), np.float32), np.full((n, 1), 7.0, np.float32))


def test_samples_come_only_from_the_requested_task():
    buf = MultiTaskReplay(3, 100, 2, 1)
    for t in range(3):
        buf.add_path(t, _path(float(t), 30))
    rng = np.random.default_rng(0)
    tasks = np.array([2, 0, 2, 1])
    b = buf.sample_rl(tasks, 64, rng)
    assert b.obs.shape == (4, 64, 2) and b.obs.dtype == np.float32
    np.testing.assert_array_equal(b.obs[:, :, 0], np.repeat(tasks[:, None], 64, 1))
    np.testing.assert_array_equal(b.next_obs, b.obs + 1)


def test_context_rows_use_context_reward_and_optional_next_obs():
    buf = MultiTaskReplay(1, 10, 2, 1)
    buf.add_path(0, _path(3.0, 5))
    rng = np.random.default_rng(0)
    c = buf.sample_context(np.array([0]), 8, rng, use_next_obs=False)
    assert c.shape == (1, 8, 2 + 1 + 1)
    assert np.all(c[..., 3] == 7.0)  # the context reward, not the env reward (-1)
    c2 = buf.sample_context(np.array([0]), 8, rng, use_next_obs=True)
    assert c2.shape == (1, 8, 6)
    np.testing.assert_array_equal(c2[..., 4:], c2[..., :2] + 1)


def test_ring_buffer_keeps_newest_and_clear_empties():
    buf = MultiTaskReplay(1, 10, 2, 1)
    buf.add_path(0, _path(0.0, 8))
    buf.add_path(0, _path(1.0, 8))  # wraps: 6 of the old are overwritten
    assert buf.num_steps(0) == 10
    assert np.sum(buf.arrays["obs"][0, :, 0] == 1.0) == 8
    buf.clear(0)
    assert buf.num_steps(0) == 0
    with pytest.raises(ValueError, match="empty buffer"):
        buf.sample_rl(np.array([0]), 4, np.random.default_rng(0))


def test_state_dict_round_trip():
    buf = MultiTaskReplay(2, 20, 2, 1)
    buf.add_path(1, _path(5.0, 7))
    other = MultiTaskReplay(2, 20, 2, 1)
    other.load_state_dict(buf.state_dict())
    for k in buf.FIELDS:
        np.testing.assert_array_equal(other.arrays[k], buf.arrays[k])
    np.testing.assert_array_equal(other.sizes, buf.sizes)


def test_context_from_path_layout():
    p = _path(2.0, 4)
    rows = context_from_path(p, use_next_obs=True)
    assert rows.shape == (4, 2 + 1 + 1 + 2)
    np.testing.assert_array_equal(rows[:, 3], 7.0)


def test_trajectory_windows_start_at_a_trajectory_and_are_consecutive():
    buf = MultiTaskReplay(2, 100, 2, 1)
    for j in range(5):  # 5 trajectories of 10 steps; obs[:, 0] = trajectory id, obs[:, 1] = step
        buf.add_path(0, _path(float(j), 10))
    buf.add_path(1, _path(9.0, 10))
    rng = np.random.default_rng(0)
    seen_first = set()
    for _ in range(50):
        c = buf.sample_context(np.array([0, 1]), 20, rng, use_next_obs=False,
                               trajectories=True)
        traj, step = c[0, :, 0], c[0, :, 1]
        assert step[0] == 0  # begins where a trajectory begins
        seen_first.add(float(traj[0]))
        np.testing.assert_array_equal(step, np.tile(np.arange(10), 2))
        # two whole consecutive trajectories (wrapping from the newest to the oldest)
        assert traj[10] == (traj[0] + 1) % 5 and np.all(traj[:10] == traj[0])
        np.testing.assert_array_equal(c[1, :, 0], 9.0)  # a short buffer wraps on itself
    assert seen_first == {0.0, 1.0, 2.0, 3.0, 4.0}  # every trajectory can open a window


def test_uniform_context_is_not_in_trajectory_order():
    buf = MultiTaskReplay(1, 100, 2, 1)
    for j in range(5):
        buf.add_path(0, _path(float(j), 10))
    c = buf.sample_context(np.array([0]), 20, np.random.default_rng(0), use_next_obs=False)
    assert not np.array_equal(c[0, :, 1], np.tile(np.arange(10), 2))


def test_trajectory_starts_survive_state_dict_and_overwrites():
    buf = MultiTaskReplay(1, 25, 2, 1)
    for j in range(3):  # the third trajectory overwrites the first 5 steps of the first
        buf.add_path(0, _path(float(j), 10))
    other = MultiTaskReplay(1, 25, 2, 1)
    other.load_state_dict(buf.state_dict())
    np.testing.assert_array_equal(np.flatnonzero(other.starts[0]), [10, 20])
    c = other.sample_context(np.array([0]), 10, np.random.default_rng(1), use_next_obs=False,
                             trajectories=True)
    assert c[0, 0, 1] == 0
