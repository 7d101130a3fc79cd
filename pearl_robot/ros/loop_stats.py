"""Control-loop quality: what the policy reports on /diagnostics about its own schedule.

The schedule is a grid of control periods ``[origin + w*P, origin + (w+1)*P)`` fixed when the
node starts (absolute: nothing accumulates drift). Each period gets exactly one tick: the
first fresh state in it triggers the tick, or the timer at the period's end does. A tick is
*late* when it happens more than one period after its period ended, and a period that got no
tick at all (the executor was stalled through it) counts as late too: "ticks later than one
period" in the benchmark. *Jitter* is the deviation of the interval between two ticks from P.

No rclpy: plain numbers in seconds, so it is tested without ROS.
"""

from __future__ import annotations

import collections
import math
from typing import NamedTuple

import numpy as np

TIMER_EARLY = 0.1
"""How early, as a fraction of the period, a timer may fire and still close the period whose
end it is for (a timer on another clock than the grid's fires a little before it): a firing
up to 0.9 period late still closes the period that ended, not the one running."""


class LoopSummary(NamedTuple):
    """A window of ticks, summarised for /diagnostics (seconds; NaN when the window is empty)."""

    ticks: int
    """Ticks since start."""
    late: int
    """Periods since start whose tick came more than a period after the period ended, or
    never came."""
    period_mean: float
    """Mean interval between ticks in the window."""
    jitter_p99: float
    """99th percentile of |interval - period| in the window."""
    jitter_max: float
    """Largest |interval - period| in the window."""
    work_p50: float
    """Median time spent inside the tick (inference, belief update, publishing)."""
    work_max: float
    """Longest time spent inside a tick in the window."""
    command_p50: float
    """Median time from the tick's start to its command leaving (the node's share of the
    state -> command latency; the rest is DDS and executor dispatch)."""
    obs_age_p50: float
    """Median age of the observation a tick acted on."""
    obs_age_max: float
    """Oldest observation a tick acted on in the window."""

    def diagnostic_values(self) -> dict[str, float]:
        """The /diagnostics key-values of the policy's control loop (milliseconds)."""
        return {
            "period_mean_ms": self.period_mean * 1e3, "jitter_p99_ms": self.jitter_p99 * 1e3,
            "jitter_max_ms": self.jitter_max * 1e3, "ticks": self.ticks,
            "late_ticks": self.late, "tick_work_p50_ms": self.work_p50 * 1e3,
            "tick_work_max_ms": self.work_max * 1e3,
            "tick_to_command_p50_ms": self.command_p50 * 1e3,
            "obs_age_p50_ms": self.obs_age_p50 * 1e3, "obs_age_max_ms": self.obs_age_max * 1e3}


def _pct(values: collections.deque[float], q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else math.nan


class LoopStats:
    """The period grid plus per-tick bookkeeping over a sliding window of ticks."""

    def __init__(self, period: float, window: int = 200) -> None:
        self.period = period
        self.origin = 0.0
        self.ticks = 0
        self.late = 0
        self.last_period: int | None = None
        self._last_time: float | None = None
        self._intervals: collections.deque[float] = collections.deque(maxlen=window)
        self._work: collections.deque[float] = collections.deque(maxlen=window)
        self._command: collections.deque[float] = collections.deque(maxlen=window)
        self._obs_age: collections.deque[float] = collections.deque(maxlen=window)

    def start(self, origin: float) -> None:
        """The grid starts at ``origin`` (the timer's creation time on the node clock)."""
        self.origin = origin
        self.last_period = None
        self._last_time = None

    def period_of(self, now: float) -> int:
        """Index of the control period that contains ``now``."""
        return math.floor((now - self.origin) / self.period + 1e-6)

    def period_ended_at(self, now: float) -> int:
        """Index of the period a timer firing at ``now`` closes: the newest one that has
        ended, counting a firing up to TIMER_EARLY of a period before the end as at the end.
        A starved executor fires the timer late; rounding to the nearest end would then
        close the period still running and drop the one that just ended (a lost command)."""
        return math.floor((now - self.origin) / self.period + TIMER_EARLY) - 1

    def due(self, index: int) -> bool:
        """Whether period ``index`` has not had its tick yet."""
        return self.last_period is None or index > self.last_period

    def tick(self, now: float, index: int) -> int:
        """Record the tick of period ``index`` at ``now``; returns how many periods became
        late with it (skipped periods plus this one if it is late)."""
        if self._last_time is not None and now < self._last_time:  # clock went back
            self.start(self.origin)
        late = 0
        if self.last_period is not None:
            late += max(0, index - self.last_period - 1)
        if now > self.origin + (index + 2) * self.period + 1e-9:
            late += 1
        if self._last_time is not None:
            self._intervals.append(now - self._last_time)
        self.ticks += 1
        self.late += late
        self.last_period = index
        self._last_time = now
        return late

    def command_sent(self, since_tick_start_s: float) -> None:
        self._command.append(since_tick_start_s)

    def tick_finished(self, work_s: float, obs_age_s: float | None) -> None:
        self._work.append(work_s)
        if obs_age_s is not None and math.isfinite(obs_age_s):
            self._obs_age.append(obs_age_s)

    def summary(self) -> LoopSummary:
        iv = self._intervals
        jitter = collections.deque(abs(v - self.period) for v in iv)
        return LoopSummary(
            ticks=self.ticks, late=self.late,
            period_mean=float(np.mean(np.fromiter(iv, float))) if iv else math.nan,
            jitter_p99=_pct(jitter, 99), jitter_max=max(jitter) if jitter else math.nan,
            work_p50=_pct(self._work, 50), work_max=max(self._work) if self._work else math.nan,
            command_p50=_pct(self._command, 50),
            obs_age_p50=_pct(self._obs_age, 50),
            obs_age_max=max(self._obs_age) if self._obs_age else math.nan)
