"""Logged changes inside episodes: where segments start, and splitting logged tasks there so
no context window mixes rows from before and after a change."""

from __future__ import annotations

import numpy as np

from pearl_robot.core.replay import MultiTaskReplay
from pearl_robot.core.replay import Path as ReplayPath
from pearl_robot.datalog.changes import SEGMENT_SEPARATOR, segment_starts, split_at_changes
from pearl_robot.datalog.reader import LoadedDataset, TaskData
from pearl_robot.datalog.schema import TransitionLayout


def test_segment_starts_from_context_size_drops_and_task_switches() -> None:
    episode = np.array([0] * 10 + [1] * 6)
    # window 4: grows, saturates, rebuilt at row 7 from the 2 rows before it (5, 6)
    ctx = np.array([0, 1, 2, 3, 4, 4, 4, 2, 3, 4] + [0, 1, 2, 0, 1, 2])
    task = np.array([3] * 10 + [3, 3, 3, 3, 5, 5])
    s = segment_starts(episode, task, ctx)
    # episode starts 0 and 10; the rebuild's change point 7 - 2 = 5; the operator reset at
    # row 13 (context 0); the logged task switch at row 14
    assert np.flatnonzero(s).tolist() == [0, 5, 10, 13, 14]
    assert np.flatnonzero(segment_starts(episode, None, None)).tolist() == [0, 10]


def _task(rows: int, episode: np.ndarray, ctx: np.ndarray) -> TaskData:
    obs = np.arange(rows, dtype=np.float64)[:, None]  # row id as the observation
    z = np.zeros((rows, 1))
    return TaskData(key="A", task={"family": "f", "index": 2, "params": {"g": 1}}, obs=obs,
                    action=z, reward=z[:, 0].copy(), next_obs=obs + 1, terminated=z[:, 0] > 1,
                    truncated=z[:, 0] > 1, episode=episode, step=np.concatenate(
                        [np.arange((episode == e).sum()) for e in np.unique(episode)]),
                    stamps=np.zeros((rows, 3)),
                    belief=np.concatenate([np.zeros((rows, 2)), ctx[:, None]], axis=1))


def test_split_moves_rows_after_a_change_to_their_own_task() -> None:
    episode = np.array([0] * 12 + [1] * 8)
    ctx = np.array([0, 1, 2, 3, 4, 4, 4, 4, 3, 4, 4, 4] + [0, 1, 2, 3, 4, 4, 4, 4],
                   dtype=np.float64)  # rebuilt at row 8 from rows 5..7: change point 5
    layout = TransitionLayout(1, 1, 1)
    loaded = split_at_changes(LoadedDataset(layout, {"A": _task(20, episode, ctx)}, [], []))
    assert set(loaded.tasks) == {"A", f"A{SEGMENT_SEPARATOR}0.5"}
    a, b = loaded.tasks["A"], loaded.tasks[f"A{SEGMENT_SEPARATOR}0.5"]
    assert a.obs[:, 0].tolist() == list(range(5)) + list(range(12, 20))
    assert b.obs[:, 0].tolist() == list(range(5, 12))
    assert b.task["index"] == -1 and b.task["after_change_of"]["index"] == 2
    # context windows drawn from the split buffers never straddle the change
    replay = MultiTaskReplay(2, 64, 1, 1)
    for slot, t in enumerate((a, b)):
        for u in np.unique(t.episode):
            r = t.episode == u
            replay.add_path(slot, ReplayPath(t.obs[r], t.action[r], t.reward[r],
                                             t.next_obs[r], t.terminated[r], t.reward[r]))
    ctx_rows = replay.sample_context(np.array([0, 1] * 50), 6, np.random.default_rng(0),
                                     use_next_obs=False, trajectories=True)
    for i, window in enumerate(ctx_rows):
        ids = window[:, 0]
        before = np.isin(ids, np.arange(5))
        after = np.isin(ids, np.arange(5, 12))
        assert not (before.any() and after.any()), (i, ids)


def test_no_change_leaves_the_dataset_as_it_was() -> None:
    episode = np.array([0] * 6 + [1] * 6)
    ctx = np.array([0, 1, 2, 3, 3, 3, 0, 1, 2, 3, 3, 3], dtype=np.float64)
    t = _task(12, episode, ctx)
    loaded = split_at_changes(LoadedDataset(TransitionLayout(1, 1, 1), {"A": t}, [], []))
    assert list(loaded.tasks) == ["A"] and loaded.tasks["A"] is t
