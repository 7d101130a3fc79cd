"""The logger's buffer for what arrives before its dataset is open: replayed in arrival order,
so each transition keeps the task in force when it was recorded (ROS-free; the logger node
only hands messages to it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datalog_synthetic import LAYOUT

from pearl_robot.datalog.cdr import TransitionCodec
from pearl_robot.datalog.pending import PendingLog, apply_task
from pearl_robot.datalog.reader import manifest_entries
from pearl_robot.datalog.writer import DatasetWriter, WriterConfig

CODEC = TransitionCodec(LAYOUT)


def _cdr(episode: int, step: int, last: bool = False) -> bytes:
    t = episode * 10.0 + step * 0.05
    vec = LAYOUT.pack(np.zeros(3), np.zeros(2), -1.0, np.zeros(3), False, last, episode, step,
                      episode, (t, t, t), np.zeros(5))
    return CODEC.encode(vec)


def _task(episode: int, index: int, state: str = "running") -> dict[str, Any]:
    return {"family": "synthetic", "index": index, "episode": episode, "state": state}


class _Recorder:
    """The writer calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write_cdr(self, data: bytes, log_time_ns: int | None = None) -> bool:
        self.calls.append(("transition", data))
        return True

    def set_task(self, task: dict[str, Any], model_sha: str | None = None) -> None:
        self.calls.append(("task", task["index"]))

    def end_episode(self, reason: str = "stopped") -> None:
        self.calls.append(("end", reason))


def test_episodes_buffered_before_the_open_keep_their_own_task(tmp_path: Path) -> None:
    """Two episodes, and the task message of each, all arrive before the dataset opens: the
    first episode is logged under its task (the old logger gave both the latest task), and
    an end state sent while still opening closes the episode with that reason."""
    pending = PendingLog(max_transitions=100)
    pending.add_task(_task(0, 7), "sha-a")
    for s in range(5):
        pending.add_transition(_cdr(0, s))
    pending.add_task(_task(0, 7, state="stopped"), "sha-a")
    pending.add_task(_task(1, 9), "sha-b")
    for s in range(4):
        pending.add_transition(_cdr(1, s, last=s == 3))
    assert pending.transitions == 9
    with DatasetWriter(tmp_path, LAYOUT, WriterConfig(commit_every=2)) as writer:
        assert pending.drain_into(writer) == 0
    assert pending.transitions == 0
    entries = {e["episode"]: e for e in manifest_entries(tmp_path)}
    assert entries[0]["task"]["index"] == 7 and entries[0]["transitions"] == 5
    assert entries[0]["end_reason"] == "stopped"
    assert entries[1]["task"]["index"] == 9 and entries[1]["transitions"] == 4
    assert entries[0]["model_sha"] == "sha-a" and entries[1]["model_sha"] == "sha-b"


def test_a_full_buffer_drops_the_oldest_transition_but_keeps_the_task_in_force() -> None:
    pending = PendingLog(max_transitions=3)
    pending.add_task(_task(0, 1), None)
    for s in range(3):
        pending.add_transition(_cdr(0, s))
    pending.add_task(_task(1, 2), None)
    pending.add_transition(_cdr(1, 0))  # full: episode 0's step 0 goes
    assert pending.lost == 1 and pending.transitions == 3
    rec = _Recorder()
    pending.drain_into(rec)
    kinds = [c if c[0] != "transition" else ("transition", CODEC.decode(c[1])[-1])
             for c in rec.calls]
    assert kinds[0] == ("task", 1)  # the task of the transitions that remain
    assert [k for k, _ in rec.calls] == ["task", "transition", "transition", "task",
                                         "transition"]


def test_task_messages_collapse_only_when_nothing_is_lost() -> None:
    """Consecutive task messages with no transition between them: only the last applies,
    except an end state, which must still close the episode."""
    pending = PendingLog(max_transitions=10)
    pending.add_transition(_cdr(0, 0))
    pending.add_task(_task(0, 1, state="fault"), None)
    pending.add_task(_task(1, 2), None)
    pending.add_task(_task(1, 3), None)  # replaces task 2
    rec = _Recorder()
    pending.drain_into(rec)
    assert rec.calls[1:] == [("task", 1), ("end", "fault"), ("task", 3)]


def test_a_refused_first_transition_is_taken_back() -> None:
    pending = PendingLog(max_transitions=4)
    pending.add_task(_task(0, 1), None)
    pending.add_transition(b"not cdr")
    pending.discard_newest_transition()
    assert pending.transitions == 0
    rec = _Recorder()
    pending.drain_into(rec)
    assert rec.calls == [("task", 1)]
    with pytest.raises(ValueError):
        PendingLog(0)


def test_apply_task_ends_the_episode_on_end_states() -> None:
    rec = _Recorder()
    apply_task(rec, _task(0, 4, state="running"), None)
    apply_task(rec, _task(0, 4, state="estop"), None)
    assert rec.calls == [("task", 4), ("task", 4), ("end", "estop")]
