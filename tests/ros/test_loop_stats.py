"""The period grid and late-period accounting the policy reports (pure Python, no ROS)."""

from __future__ import annotations

import math

from pearl_robot.ros.loop_stats import LoopStats

P = 0.05


def test_state_triggered_ticks_anywhere_in_their_period_are_not_late() -> None:
    s = LoopStats(P)
    s.start(10.0)
    for k in range(100):
        phase = 0.01 if k % 2 else 0.049  # jittery arrival inside each period
        now = 10.0 + k * P + phase
        idx = s.period_of(now)
        assert idx == k and s.due(idx)
        s.tick(now, idx)
        assert not s.due(idx)  # one tick per period
    assert s.late == 0 and s.ticks == 100
    summary = s.summary()
    assert math.isclose(summary.period_mean, P, rel_tol=0.01)


def test_timer_ticks_close_the_period_that_just_ended() -> None:
    s = LoopStats(P)
    s.start(0.0)
    assert s.period_ended_at(0.05 + 0.003) == 0  # a timer 3 ms late closes period 0
    assert s.period_ended_at(0.10 - 0.002) == 1
    # a starved executor: the timer fires 30 ms late, and still closes period 0, not 1
    # (rounding to the nearest end closed the running period 1 and dropped period 0's tick)
    assert s.period_ended_at(0.05 + 0.030) == 0
    assert s.period_ended_at(0.05 + 0.040) == 0


def test_skipped_periods_and_ticks_more_than_a_period_late_count() -> None:
    s = LoopStats(P)
    s.start(0.0)
    s.tick(0.01, 0)
    assert s.tick(0.06, 1) == 0
    # an executor stall: periods 2 and 3 never ticked, period 4 ticks on time
    assert s.tick(0.21, 4) == 2
    # period 5 ticked 1.2 periods after it ended (0.30): late
    assert s.tick(0.30 + 0.06, 5) == 1
    assert s.late == 3


def test_clock_going_back_restarts_the_interval_statistics() -> None:
    s = LoopStats(P)
    s.start(100.0)
    s.tick(100.01, 0)
    s.start(0.0)  # sim time reset
    assert s.tick(0.01, 0) == 0 and s.late == 0
