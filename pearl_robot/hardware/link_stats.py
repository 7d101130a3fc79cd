"""Sequence tracking and link counters, shared by the host bridge and the firmware emulator.

Both ends number their frames (u16, +1 per frame, any type). The receiver compares each
frame's number with the one it expects next: a jump forward counts the frames skipped as
drops; a number at or behind the last one is a duplicate or a late (reordered) frame and is
discarded for state-carrying types, so a stale state or command is never applied over a newer
one. Half the sequence space ahead counts as "forward": a gap of 32768 frames cannot be told
from a reorder, and at 1 kHz that is 33 s of silence, far past every timeout.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import NamedTuple

from pearl_robot.hardware.protocol import SEQ_MOD

_HALF = SEQ_MOD // 2


class SeqVerdict(enum.Enum):
    FIRST = "first"
    """First frame since a reset of the tracker: accepted."""
    IN_ORDER = "in_order"
    GAP = "gap"
    """Accepted; frames in between were lost."""
    DUPLICATE = "duplicate"
    """Same number as the last accepted frame: discard."""
    LATE = "late"
    """Behind the last accepted frame (reordered): discard."""


class SeqResult(NamedTuple):
    verdict: SeqVerdict
    missing: int
    """Frames skipped (only for GAP)."""

    @property
    def accept(self) -> bool:
        return self.verdict in (SeqVerdict.FIRST, SeqVerdict.IN_ORDER, SeqVerdict.GAP)


class SeqTracker:
    """Classify incoming sequence numbers of one peer."""

    def __init__(self) -> None:
        self.last: int | None = None

    def reset(self, last: int | None = None) -> None:
        """Start over (new session or peer reboot); ``last`` marks an already-seen frame."""
        self.last = last

    def observe(self, seq: int) -> SeqResult:
        if self.last is None:
            self.last = seq
            return SeqResult(SeqVerdict.FIRST, 0)
        ahead = (seq - self.last) % SEQ_MOD
        if ahead == 0:
            return SeqResult(SeqVerdict.DUPLICATE, 0)
        if ahead >= _HALF:
            return SeqResult(SeqVerdict.LATE, 0)
        self.last = seq
        if ahead == 1:
            return SeqResult(SeqVerdict.IN_ORDER, 0)
        return SeqResult(SeqVerdict.GAP, ahead - 1)


class LinkCounters:
    """Counters of one end of the link. Not thread-safe by itself: one thread writes."""

    def __init__(self) -> None:
        self.frames_ok = 0
        self.frames_bad: Counter[str] = Counter()
        """Bad frames by reason (``FrameError.reason``)."""
        self.frames_tx = 0
        self.bytes_rx = 0
        self.bytes_tx = 0
        self.dropped = 0
        """Frames the peer sent that never arrived (sequence gaps)."""
        self.duplicates = 0
        self.late = 0
        """Frames that arrived behind a newer one (reordered) and were discarded."""
        self.unexpected = 0
        """Intact frames of a type the peer should not send (e.g. COMMAND from a device)."""

    def count_seq(self, result: SeqResult) -> None:
        if result.verdict is SeqVerdict.GAP:
            self.dropped += result.missing
        elif result.verdict is SeqVerdict.DUPLICATE:
            self.duplicates += 1
        elif result.verdict is SeqVerdict.LATE:
            self.late += 1

    def as_dict(self) -> dict[str, int]:
        out = {"frames_ok": self.frames_ok, "frames_bad": sum(self.frames_bad.values()),
               "frames_tx": self.frames_tx, "bytes_rx": self.bytes_rx,
               "bytes_tx": self.bytes_tx, "dropped": self.dropped,
               "duplicates": self.duplicates, "late": self.late,
               "unexpected": self.unexpected}
        for reason, n in sorted(self.frames_bad.items()):
            out[f"frames_bad.{reason}"] = n
        return out


class RttEstimator:
    """Round-trip times from ack numbers: remember when each frame left, match the echo."""

    def __init__(self, window: int = 256) -> None:
        self._sent: dict[int, float] = {}
        self._window = window
        self.count = 0
        self.last_s = float("nan")
        self.mean_s = float("nan")
        self.max_s = 0.0
        self._ewma_alpha = 0.05

    def sent(self, seq: int, t: float) -> None:
        self._sent[seq] = t
        if len(self._sent) > self._window:
            # dicts keep insertion order: drop the oldest
            self._sent.pop(next(iter(self._sent)))

    def acked(self, seq: int, t: float) -> float | None:
        """Record an ack; returns the RTT in seconds if ``seq`` was a pending frame."""
        t0 = self._sent.pop(seq, None)
        if t0 is None:
            return None
        rtt = t - t0
        self.count += 1
        self.last_s = rtt
        self.max_s = max(self.max_s, rtt)
        self.mean_s = rtt if self.count == 1 else (
            (1 - self._ewma_alpha) * self.mean_s + self._ewma_alpha * rtt)
        return rtt

    def clear(self) -> None:
        self._sent.clear()
