"""Control-loop quality: what a node reports on /diagnostics about its own timer (no rclpy).

A tick is *late* when it starts more than one period after its deadline (the k-th deadline is
``start + k * period``, the absolute schedule an rcl timer keeps): that tick's command left a
whole period late, which is what the bench counts against a goal of zero. *Jitter* is the
deviation of the interval between two ticks from the nominal period.
"""

from __future__ import annotations

import collections
import math
from typing import NamedTuple

import numpy as np


class LoopSummary(NamedTuple):
    """A window of ticks, summarised for /diagnostics (seconds; NaN when the window is empty)."""

    ticks: int
    """Ticks since start."""
    late: int
    """Ticks since start that began more than one period after their deadline."""
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
    obs_age_p50: float
    """Median age of the observation a tick acted on."""
    obs_age_max: float
    """Oldest observation a tick acted on in the window."""


def _pct(values: collections.deque[float], q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else math.nan


class LoopStats:
    """Per-tick bookkeeping over a sliding window (O(1) per tick; summaries cost O(window))."""

    def __init__(self, period: float, window: int = 200) -> None:
        self.period = period
        self.ticks = 0
        self.late = 0
        self._origin: float | None = None
        self._last_start: float | None = None
        self._intervals: collections.deque[float] = collections.deque(maxlen=window)
        self._work: collections.deque[float] = collections.deque(maxlen=window)
        self._obs_age: collections.deque[float] = collections.deque(maxlen=window)

    def restart(self, now: float) -> None:
        """A new schedule begins at ``now`` (timer recreated, sim time jumped back)."""
        self._origin = now
        self._last_start = None

    def tick_started(self, now: float) -> bool:
        """Record a tick start; True when it is late by more than a period, i.e. a deadline
        passed without a tick (two or more deadlines since the previous tick)."""
        if self._origin is None or (self._last_start is not None and now < self._last_start):
            self.restart(now)
        assert self._origin is not None
        late = False
        if self._last_start is not None:
            self._intervals.append(now - self._last_start)
            eps = 1e-4 * self.period
            passed = (math.floor((now - self._origin + eps) / self.period)
                      - math.floor((self._last_start - self._origin + eps) / self.period))
            late = passed >= 2
        self.ticks += 1
        if late:
            self.late += 1
        self._last_start = now
        return late

    def tick_finished(self, work_s: float, obs_age_s: float | None) -> None:
        self._work.append(work_s)
        if obs_age_s is not None:
            self._obs_age.append(obs_age_s)

    def summary(self) -> LoopSummary:
        iv = self._intervals
        jitter = collections.deque(abs(v - self.period) for v in iv)
        return LoopSummary(
            ticks=self.ticks, late=self.late,
            period_mean=float(np.mean(np.fromiter(iv, float))) if iv else math.nan,
            jitter_p99=_pct(jitter, 99), jitter_max=max(jitter) if jitter else math.nan,
            work_p50=_pct(self._work, 50), work_max=max(self._work) if self._work else math.nan,
            obs_age_p50=_pct(self._obs_age, 50),
            obs_age_max=max(self._obs_age) if self._obs_age else math.nan)
