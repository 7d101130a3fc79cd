"""Per-episode bookkeeping shared by the writer and recovery: counts, return, step contiguity,
stamps, and the manifest entry built from them."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pearl_robot.datalog.dataset import MANIFEST_SCHEMA
from pearl_robot.datalog.schema import TransitionLayout


@dataclass
class EpisodeStats:
    """Running summary of the transitions of one episode, updated per record (O(1))."""

    layout: TransitionLayout
    """Layout of the vectors fed to :meth:`add`."""
    transitions: int = 0
    """Transitions recorded."""
    episode_return: float = 0.0
    """Sum of rewards."""
    first_step: int | None = None
    """Step index of the first transition."""
    last_step: int | None = None
    """Step index of the last transition."""
    step_gaps: int = 0
    """Transitions whose step did not follow the previous one (dropped or reordered ticks)."""
    stamp_first: float | None = None
    """obs stamp of the first transition (seconds)."""
    stamp_last: float | None = None
    """next_obs stamp of the last transition (seconds)."""
    stamp_regressions: int = 0
    """Transitions whose obs stamp went backwards."""
    nonfinite: int = 0
    """Transitions holding NaN/inf in obs, action, reward or next_obs."""
    terminated: bool = False
    """The last transition was terminal."""
    truncated: bool = False
    """The last transition was truncated."""
    task_indices: set[int] = field(default_factory=set)
    """Task indices seen in the transitions."""
    episode_field: set[int] = field(default_factory=set)
    """Values of the transitions' own ``episode`` field."""

    def __post_init__(self) -> None:
        sl = self.layout.slices()
        self._reward = sl["reward"].start
        self._step = sl["step"].start
        self._term = sl["terminated"].start
        self._trunc = sl["truncated"].start
        self._task = sl["task"].start
        self._episode = sl["episode"].start
        self._stamp0 = sl["stamps"].start
        self._stamp2 = sl["stamps"].stop - 1
        self._finite_end = sl["next_obs"].stop

    def add(self, vec: np.ndarray) -> None:
        step = int(vec[self._step])
        if self.last_step is not None and step != self.last_step + 1:
            self.step_gaps += 1
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        self.transitions += 1
        self.episode_return += float(vec[self._reward])
        t0 = float(vec[self._stamp0])
        if self.stamp_last is not None and t0 < self.stamp_last - 1e-9:
            self.stamp_regressions += 1
        if self.stamp_first is None:
            self.stamp_first = t0
        self.stamp_last = float(vec[self._stamp2])
        if not np.isfinite(vec[: self._finite_end]).all():
            self.nonfinite += 1
        self.terminated = bool(vec[self._term] != 0.0)
        self.truncated = bool(vec[self._trunc] != 0.0)
        self.task_indices.add(int(vec[self._task]))
        self.episode_field.add(int(vec[self._episode]))

    def add_batch(self, mat: np.ndarray) -> None:
        """The same as :meth:`add` for each row of ``mat`` (N, layout.size), vectorized (the
        writer folds each commit group in at once)."""
        n = mat.shape[0]
        if n == 0:
            return
        steps = mat[:, self._step].astype(np.int64)
        prev = np.empty(n, dtype=np.int64)
        prev[0] = steps[0] - 1 if self.last_step is None else self.last_step
        prev[1:] = steps[:-1]
        self.step_gaps += int(np.count_nonzero(steps != prev + 1))
        if self.first_step is None:
            self.first_step = int(steps[0])
        self.last_step = int(steps[-1])
        self.transitions += n
        self.episode_return += float(mat[:, self._reward].sum())
        t0 = mat[:, self._stamp0]
        t2 = mat[:, self._stamp2]
        prev_t = np.empty(n)
        prev_t[0] = t0[0] if self.stamp_last is None else self.stamp_last
        prev_t[1:] = t2[:-1]
        self.stamp_regressions += int(np.count_nonzero(t0 < prev_t - 1e-9))
        if self.stamp_first is None:
            self.stamp_first = float(t0[0])
        self.stamp_last = float(t2[-1])
        self.nonfinite += int(np.count_nonzero(~np.isfinite(mat[:, : self._finite_end]).all(1)))
        self.terminated = bool(mat[-1, self._term] != 0.0)
        self.truncated = bool(mat[-1, self._trunc] != 0.0)
        self.task_indices.update(np.unique(mat[:, self._task]).astype(np.int64).tolist())
        self.episode_field.update(np.unique(mat[:, self._episode]).astype(np.int64).tolist())

    def to_json(self) -> dict[str, Any]:
        duration = (self.stamp_last - self.stamp_first
                    if self.stamp_first is not None and self.stamp_last is not None else 0.0)
        return {"transitions": self.transitions,
                "return": self.episode_return if np.isfinite(self.episode_return) else None,
                "first_step": self.first_step, "last_step": self.last_step,
                "step_gaps": self.step_gaps, "stamp_first": self.stamp_first,
                "stamp_last": self.stamp_last, "duration_s": duration,
                "stamp_regressions": self.stamp_regressions, "nonfinite": self.nonfinite,
                "terminated": self.terminated, "truncated": self.truncated}


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


VOLATILE_TASK_FIELDS = ("episode", "state", "reset_id", "model_sha", "stamp", "time", "step")
"""/pearl/task fields that change within one task (episode id, episode-manager state, model)."""
IDENTITY_TASK_FIELDS = ("family", "index", "task", "params")
"""Fields that identify a task: family, index in its task list (``index``, or ``task`` as the
policy node publishes it) and parameters."""


def task_identity(task: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a task message that names the task (see IDENTITY_TASK_FIELDS); a message
    with none of those fields is identified by everything but the volatile fields."""
    t = dict(task or {})
    ident = {k: t[k] for k in IDENTITY_TASK_FIELDS if k in t}
    if ident:
        if "task" in ident and "index" not in ident:
            ident["index"] = ident.pop("task")
        ident.pop("task", None)
        return ident
    return {k: v for k, v in t.items() if k not in VOLATILE_TASK_FIELDS}


def task_key(task: dict[str, Any] | None) -> str:
    """Canonical string identifying a task (same family, index and parameters -> same key),
    used to group transitions into per-task buffers across episodes, nights and robots."""
    return json.dumps(task_identity(task), sort_keys=True, separators=(",", ":"))


def manifest_entry(*, episode: int, status: str, end_reason: str, task: dict[str, Any] | None,
                   model_sha: str, stats: EpisodeStats, files: list[dict[str, Any]],
                   layout: TransitionLayout, session: str, robot: str,
                   quarantined: list[str] | None = None, dropped: int = 0,
                   source_episode: int | None = None, note: str = "") -> dict[str, Any]:
    """One manifest line. ``status``: complete | recovered | quarantined."""
    entry: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA, "episode": episode, "status": status,
        "end_reason": end_reason, "task": task or {}, "task_key": task_key(task),
        "model_sha": model_sha, "layout": layout.to_json(), "files": files,
        "quarantined": quarantined or [], "dropped": dropped, "session": session,
        "robot": robot, "host": socket.gethostname(),
        "closed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    entry.update(stats.to_json())
    if source_episode is not None and source_episode != episode:
        entry["source_episode"] = source_episode
    if note:
        entry["note"] = note
    return entry
