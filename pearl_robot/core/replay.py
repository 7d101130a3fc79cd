"""Per-task replay buffers and context sampling, preallocated float32, vectorised over tasks.

The reference keeps one ``SimpleReplayBuffer`` per task of float64 arrays and samples task by
task in a Python loop. Here each field is one ``[n_tasks, capacity, dim]`` float32 array (numpy
allocates lazily, so untouched capacity costs no memory) and a whole meta-batch is drawn with a
single fancy-indexing call per field.

Two instances make PEARL's pair of buffers: the RL buffer (all data, for actor-critic batches)
and the encoder buffer (cleared for a task whenever it is chosen for collection, so context is
recent, near on-policy data).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pearl_robot.core.inference import ContextLayout
from pearl_robot.core.types import NumpyRLBatch


class Path(NamedTuple):
    """One trajectory as arrays [steps, dim]; actions normalized to [-1, 1]."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminals: np.ndarray
    context_rewards: np.ndarray
    """The reward used in context rows (the env reward, or e.g. the sparse reward)."""


class ContextDraw(NamedTuple):
    """Context rows with what a relabelling needs beside them."""

    rows: np.ndarray
    """Context rows [T, n, ctx_dim] (``ContextLayout``)."""
    next_obs: np.ndarray
    """Each row's next observation [T, n, obs_dim] (raw), whether or not the row holds it."""
    layout: ContextLayout
    """The rows' layout (where the reward column is)."""


class MultiTaskReplay:
    """Ring buffers for ``n_tasks`` tasks, each holding up to ``capacity`` transitions."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals", "context_rewards")

    def __init__(self, n_tasks: int, capacity: int, obs_dim: int, action_dim: int) -> None:
        if n_tasks <= 0 or capacity <= 0:
            raise ValueError(f"n_tasks and capacity must be > 0, got {n_tasks}, {capacity}")
        self.n_tasks, self.capacity = n_tasks, capacity
        self.obs_dim, self.action_dim = obs_dim, action_dim
        dims = {"obs": obs_dim, "actions": action_dim, "rewards": 1, "next_obs": obs_dim,
                "terminals": 1, "context_rewards": 1}
        self.arrays = {k: np.zeros((n_tasks, capacity, d), dtype=np.float32)
                       for k, d in dims.items()}
        self.starts = np.zeros((n_tasks, capacity), dtype=bool)
        """True where a trajectory begins (for trajectory-window context sampling)."""
        self.sizes = np.zeros(n_tasks, dtype=np.int64)
        self.tops = np.zeros(n_tasks, dtype=np.int64)

    def add_path(self, task: int, path: Path) -> None:
        n = len(path.obs)
        if n == 0:
            return
        if n > self.capacity:  # keep the newest
            path = Path(*(np.asarray(a)[-self.capacity:] for a in path))
            n = self.capacity
        idx = (self.tops[task] + np.arange(n)) % self.capacity
        for k, a in zip(self.FIELDS, path):
            self.arrays[k][task, idx] = np.asarray(a, dtype=np.float32).reshape(n, -1)
        self.starts[task, idx] = False
        self.starts[task, idx[0]] = True
        self.tops[task] = (self.tops[task] + n) % self.capacity
        self.sizes[task] = min(self.capacity, self.sizes[task] + n)

    def clear(self, task: int) -> None:
        self.sizes[task] = 0
        self.tops[task] = 0

    def num_steps(self, task: int | None = None) -> int:
        return int(self.sizes.sum() if task is None else self.sizes[task])

    def _indices(self, tasks: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        sizes = self.sizes[tasks]
        if np.any(sizes == 0):
            empty = tasks[sizes == 0].tolist()
            raise ValueError(f"cannot sample from empty buffer(s) of task(s) {empty}")
        return (rng.random((len(tasks), n)) * sizes[:, None]).astype(np.int64)

    def sample_rl(self, tasks: np.ndarray, batch_size: int, rng: np.random.Generator
                  ) -> NumpyRLBatch:
        """Uniform transitions, ``batch_size`` per task, shape [T, B, dim]."""
        tasks = np.asarray(tasks, dtype=np.int64)
        idx = self._indices(tasks, batch_size, rng)
        t = tasks[:, None]
        a = self.arrays
        return NumpyRLBatch(a["obs"][t, idx], a["actions"][t, idx], a["rewards"][t, idx],
                            a["next_obs"][t, idx], a["terminals"][t, idx])

    def _window_indices(self, tasks: np.ndarray, n: int, rng: np.random.Generator
                        ) -> np.ndarray:
        """``n`` consecutive transitions per task from a random trajectory start: whole
        trajectories in the order they were collected (oyster's ``sample_data(sequence=True)``).
        A task whose buffer holds fewer than ``n`` transitions wraps to its oldest ones."""
        sizes = self.sizes[tasks]
        if np.any(sizes == 0):
            empty = tasks[sizes == 0].tolist()
            raise ValueError(f"cannot sample from empty buffer(s) of task(s) {empty}")
        first = np.empty(len(tasks), dtype=np.int64)
        for j, (t, size) in enumerate(zip(tasks, sizes)):
            starts = np.flatnonzero(self.starts[t, :size])
            first[j] = starts[rng.integers(starts.size)] if starts.size \
                else rng.integers(size)
        return (first[:, None] + np.arange(n)[None, :]) % sizes[:, None]

    def sample_context(self, tasks: np.ndarray, n: int, rng: np.random.Generator,
                       use_next_obs: bool, trajectories: bool = False) -> np.ndarray:
        """Context rows (obs, action, context reward[, next_obs]), shape [T, n, ctx_dim]:
        ``n`` independent uniform transitions per task (the reference), or with
        ``trajectories`` a window of consecutive whole trajectories (what the online context
        looks like after the first trajectories of an evaluation)."""
        return self.sample_context_draw(tasks, n, rng, use_next_obs, trajectories).rows

    def sample_context_draw(self, tasks: np.ndarray, n: int, rng: np.random.Generator,
                            use_next_obs: bool, trajectories: bool = False) -> ContextDraw:
        """:meth:`sample_context` with the transitions' next observations kept beside the
        rows, so a caller can recompute their rewards (task relabelling) whatever the row
        layout holds. Draws exactly what :meth:`sample_context` draws from ``rng``."""
        tasks = np.asarray(tasks, dtype=np.int64)
        idx = self._window_indices(tasks, n, rng) if trajectories \
            else self._indices(tasks, n, rng)
        t = tasks[:, None]
        a = self.arrays
        layout = ContextLayout(self.obs_dim, self.action_dim, use_next_obs)
        next_obs = a["next_obs"][t, idx]
        rows = layout.rows(a["obs"][t, idx], a["actions"][t, idx], a["context_rewards"][t, idx],
                           next_obs if use_next_obs else None)
        return ContextDraw(rows, next_obs, layout)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The filled prefix of every task's buffer, plus sizes and write positions."""
        n = int(self.sizes.max()) if self.n_tasks else 0
        out: dict[str, np.ndarray] = {"sizes": self.sizes.copy(), "tops": self.tops.copy(),
                                      "starts": self.starts[:, :n].copy()}
        out.update({k: v[:, :n].copy() for k, v in self.arrays.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for k in self.FIELDS:
            src = np.asarray(state[k])
            dst = self.arrays[k]
            if src.ndim != 3 or src.shape[0] != dst.shape[0] or src.shape[2] != dst.shape[2] \
                    or src.shape[1] > dst.shape[1]:
                raise ValueError(f"replay field {k!r} has shape {src.shape}, which does not fit "
                                 f"buffers of shape {dst.shape}")
            dst[:, : src.shape[1]] = src
        self.starts[:] = False
        if "starts" in state:  # absent in buffers saved before trajectory windows existed
            st = np.asarray(state["starts"], dtype=bool)
            self.starts[:, : st.shape[1]] = st
        self.sizes[:] = np.asarray(state["sizes"])
        self.tops[:] = np.asarray(state["tops"])


def context_from_path(path: Path, use_next_obs: bool) -> np.ndarray:
    """Context rows of one trajectory, [steps, ctx_dim] (online accumulation in evaluation)."""
    obs, act = np.asarray(path.obs), np.asarray(path.actions)
    n = len(obs)
    layout = ContextLayout(obs.reshape(n, -1).shape[1], act.reshape(n, -1).shape[1],
                           use_next_obs)
    return layout.rows(obs.reshape(n, -1), act.reshape(n, -1),
                       np.asarray(path.context_rewards).reshape(n, 1),
                       np.asarray(path.next_obs).reshape(n, -1) if use_next_obs else None)
