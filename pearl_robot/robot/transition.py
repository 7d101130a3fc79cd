"""One control tick of the robot as a record: what it observed, what it sent, what followed.

The episode controller (``runtime/episodes.py``) builds one per finished step, the ROS policy
node packs it into ``/pearl/transition``, and the dataset reader (``datalog/schema.py``)
unpacks a logged vector into the same record. It lives here, below both, because the layer
table lets ``runtime`` and ``datalog`` import ``robot`` but not each other; the vector layout
itself (offsets, the schema marker) is ``datalog.schema.TransitionLayout``'s alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np


class TransitionPacker(Protocol):
    """What :meth:`Transition.pack` needs of a layout (``datalog.schema.TransitionLayout``)."""

    @property
    def belief_dim(self) -> int: ...

    def pack(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
             terminated: bool, truncated: bool, episode: int, step: int, task: int = -1,
             stamps: Any = (0.0, 0.0, 0.0), belief: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray: ...


class Transition(NamedTuple):
    """One finished transition, the fields of the ``/pearl/transition`` schema in order.
    Unpacked from a logged vector, the array fields are views into it (copy before
    mutating)."""

    obs: np.ndarray
    """Observation the action was computed from (physical units)."""
    action: np.ndarray
    """Command sent (physical units, after the safety clip)."""
    reward: float
    """Task reward of the transition."""
    next_obs: np.ndarray
    """Observation one control period later."""
    terminated: bool
    truncated: bool
    episode: int
    step: int
    task: int
    """Task index in the family's task list (-1: a sampled task)."""
    stamps: np.ndarray | tuple[float, float, float]
    """Measurement of ``obs``, time of acting, measurement of ``next_obs`` (seconds)."""
    belief: np.ndarray | None
    """Belief when acting: ``concat(mean, var, [context_size])``; None (or empty) without
    one."""

    def pack(self, layout: TransitionPacker, out: np.ndarray | None = None) -> np.ndarray:
        """The flat vector of a ``TransitionLayout`` (the schema the logger writes)."""
        return layout.pack(self.obs, self.action, self.reward, self.next_obs,
                           terminated=self.terminated, truncated=self.truncated,
                           episode=self.episode, step=self.step, task=self.task,
                           stamps=self.stamps,
                           belief=self.belief if layout.belief_dim else None, out=out)
