"""What reaches a logger before its dataset is open, kept in arrival order.

The logger node opens its dataset on a helper thread once the first transition tells the
layout (recovery of a crashed run can take a while); transitions and ``/pearl/task`` messages
that arrive meanwhile wait here. They are replayed into the writer in the order they came, so
every buffered transition is logged under the task in force when it was recorded, not under
whichever task came last (an episode that ended while the dataset was still opening keeps its
own task, and its end reason).

ROS-free, so the ordering is tested without rclpy; the node only hands messages over.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple, Protocol

END_STATES = ("stopped", "estop", "shutdown", "fault")
"""/pearl/task states that close the open episode."""


class TaskWriter(Protocol):
    """The part of :class:`~pearl_robot.datalog.writer.DatasetWriter` the replay uses."""

    def write_cdr(self, data: bytes, log_time_ns: int | None = None) -> bool: ...

    def set_task(self, task: dict[str, Any], model_sha: str | None = None) -> None: ...

    def end_episode(self, reason: str = "stopped") -> None: ...


class _Task(NamedTuple):
    task: dict[str, Any]
    model_sha: str | None


def apply_task(writer: TaskWriter, task: dict[str, Any], model_sha: str | None) -> None:
    """One ``/pearl/task`` message into the writer: the task of the episodes it names or that
    follow, and for an end state (:data:`END_STATES`) the close of the open episode."""
    writer.set_task(task, model_sha)
    if task.get("state") in END_STATES:
        writer.end_episode(str(task["state"]))


class PendingLog:
    """Transitions (serialized CDR) and task messages in arrival order, at most
    ``max_transitions`` transitions: when full, the oldest transition is dropped and counted
    in :attr:`lost`, and the task in force for the ones that remain is kept."""

    def __init__(self, max_transitions: int) -> None:
        if max_transitions < 1:
            raise ValueError(f"max_transitions must be >= 1, got {max_transitions}")
        self.max_transitions = int(max_transitions)
        self._events: collections.deque[bytes | _Task] = collections.deque()
        self._transitions = 0
        self.lost = 0
        """Transitions dropped because the buffer was full."""

    @property
    def transitions(self) -> int:
        """Transitions waiting."""
        return self._transitions

    def add_transition(self, data: bytes) -> None:
        if self._transitions >= self.max_transitions:
            self._drop_oldest_transition()
        self._events.append(bytes(data))
        self._transitions += 1

    def discard_newest_transition(self) -> None:
        """Take back the transition just added (it was refused: no layout to open with)."""
        for i in range(len(self._events) - 1, -1, -1):
            if isinstance(self._events[i], bytes):
                del self._events[i]
                self._transitions -= 1
                return

    def add_task(self, task: dict[str, Any], model_sha: str | None) -> None:
        """A task message. One that follows another with no transition between replaces it
        (only the latest applies to what comes next), unless the earlier one ends an episode:
        its end reason must still reach the writer."""
        last = self._events[-1] if self._events else None
        if isinstance(last, _Task) and last.task.get("state") not in END_STATES:
            self._events[-1] = _Task(dict(task), model_sha or last.model_sha)
        else:
            self._events.append(_Task(dict(task), model_sha))

    def drain_into(self, writer: TaskWriter) -> int:
        """Replay everything into ``writer`` in arrival order and empty the buffer; returns
        how many transitions the writer refused."""
        rejected = 0
        while self._events:
            ev = self._events.popleft()
            if isinstance(ev, _Task):
                apply_task(writer, ev.task, ev.model_sha)
            else:
                self._transitions -= 1
                if not writer.write_cdr(ev):
                    rejected += 1
        return rejected

    def _drop_oldest_transition(self) -> None:
        last_task: _Task | None = None
        while self._events:
            ev = self._events.popleft()
            if isinstance(ev, _Task):
                last_task = ev
                continue
            self._transitions -= 1
            self.lost += 1
            break
        if last_task is not None:  # still the task of the transitions that follow
            self._events.appendleft(last_task)
