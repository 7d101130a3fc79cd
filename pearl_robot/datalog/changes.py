"""Where the task changed inside a logged episode, and splitting logged tasks there.

PEARL's context must come from one task. An episode log records two kinds of change within an
episode, both with fields the transition already has (no schema change):

- a **logged task switch**: the ``task`` field changes from one row to the next (a switching
  twin, or an episode manager that announces a new task mid-episode);
- a **belief reset or rebuild** by the runtime: the ``belief`` field's context size drops.
  The belief logged on a row is the one its action was computed with, so it holds the rows
  before it; a row ``r`` whose context size ``c_r`` is below the previous row's says the
  runtime rebuilt its belief from the ``c_r`` rows just before ``r`` (a detected change,
  ``runtime/change_detection.py``) or reset it (``c_r = 0``: the operator's reset service).
  The change point is row ``r - c_r``.

:func:`segment_starts` marks those rows; :func:`split_at_changes` turns everything after the
first change of an episode into tasks of their own (one per segment; their task is unknown, so
they train the encoder and the policy as separate tasks and are never evaluated), so a context
window, a uniform context batch or an RL batch of a logged task never mixes transitions from
before and after a change.

Pure numpy.
"""

from __future__ import annotations

import numpy as np

from pearl_robot.datalog.reader import LoadedDataset, TaskData

SEGMENT_SEPARATOR = "|after-change|"
"""Separates the logged task key from the segment's id in a split-off task's key."""


def segment_starts(episode: np.ndarray, task: np.ndarray | None,
                   context_size: np.ndarray | None) -> np.ndarray:
    """Rows (in episode order, each episode's rows contiguous and in step order) where a
    single-task segment starts: an episode's first row, a logged task switch, a change point
    implied by a drop in the logged context size (module doc). Bool array [rows]."""
    ep = np.asarray(episode)
    n = ep.shape[0]
    starts = np.zeros(n, dtype=bool)
    if n == 0:
        return starts
    first = np.ones(n, dtype=bool)
    first[1:] = ep[1:] != ep[:-1]
    starts |= first
    if task is not None:
        tk = np.asarray(task)
        starts[1:] |= (tk[1:] != tk[:-1]) & ~first[1:]
    if context_size is not None:
        c = np.asarray(context_size, dtype=np.float64)
        drop = np.zeros(n, dtype=bool)
        drop[1:] = (c[1:] < c[:-1]) & ~first[1:]
        ep_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        for r in np.flatnonzero(drop):
            starts[max(int(r - c[r]), int(ep_start[r]))] = True
    return starts


def _context_sizes(t: TaskData) -> np.ndarray | None:
    b = t.belief
    return None if b.ndim != 2 or b.shape[1] == 0 else b[:, -1]


def split_at_changes(loaded: LoadedDataset) -> LoadedDataset:
    """``loaded`` with each logged task cut at the changes inside its episodes: the rows
    before an episode's first change stay with the task, each later segment becomes a task
    keyed ``<task key>|after-change|<episode uid>.<step>`` (``task["index"]`` -1,
    ``task["after_change_of"]`` the logged task)."""
    tasks: dict[str, TaskData] = {}
    for key, t in loaded.tasks.items():
        # the reader groups rows by the episode's task and keeps no per-row task index: only
        # the context-size rule applies here (segment_starts takes the task column too)
        starts = segment_starts(t.episode, None, _context_sizes(t))
        first_of_ep = np.ones(len(t), dtype=bool)
        first_of_ep[1:] = t.episode[1:] != t.episode[:-1]
        cuts = np.flatnonzero(starts & ~first_of_ep)
        if cuts.size == 0:
            tasks[key] = t
            continue
        seg = np.cumsum(starts & ~first_of_ep)  # 0: before the episode's first change...
        seg -= np.maximum.accumulate(np.where(first_of_ep, seg, 0))  # ...counted per episode
        keep = seg == 0
        tasks[key] = _rows(t, key, t.task, keep)
        for c in cuts.tolist():
            uid = int(t.episode[c])
            end = c + 1
            while end < len(t) and not starts[end]:
                end += 1
            rows = np.zeros(len(t), dtype=bool)
            rows[c:end] = True
            k = f"{key}{SEGMENT_SEPARATOR}{uid}.{int(t.step[c])}"
            ident = {"family": t.task.get("family"), "index": -1, "params": {},
                     "after_change_of": t.task, "episode_uid": uid, "from_step": int(t.step[c])}
            tasks[k] = _rows(t, k, ident, rows)
    return LoadedDataset(loaded.layout, tasks, loaded.episodes, loaded.problems)


def _rows(t: TaskData, key: str, task: dict, rows: np.ndarray) -> TaskData:
    return TaskData(key=key, task=task, obs=t.obs[rows], action=t.action[rows],
                    reward=t.reward[rows], next_obs=t.next_obs[rows],
                    terminated=t.terminated[rows], truncated=t.truncated[rows],
                    episode=t.episode[rows], step=t.step[rows], stamps=t.stamps[rows],
                    belief=t.belief[rows])
