"""The soak bench's ROS-free helpers: episode accounting and the fault plan (seconds)."""

from __future__ import annotations

import pytest

from bench.bench_soak import account, make_plan


def _e(ep: int, status: str = "complete", reason: str = "truncated") -> dict:
    return {"episode": ep, "status": status, "end_reason": reason, "transitions": 60,
            "duration_s": 3.0}


def test_a_clean_run_with_a_recovered_crash_loses_nothing() -> None:
    entries = [_e(0), _e(1, reason="shutdown"), _e(2, "recovered", "crash"), _e(3)]
    a = account(entries, file_ids={0, 1, 2, 3})
    assert (a.begun, a.closed, a.recovered, a.lost, a.duplicated, a.id_gaps) == \
        (4, 3, 1, 0, 0, 0)
    assert a.transitions == 240 and a.robot_s == 12.0
    assert a.end_reasons == {"truncated": 2, "shutdown": 1, "crash": 1}


def test_unlisted_quarantined_duplicated_and_skipped_ids_are_counted() -> None:
    entries = [_e(0), _e(0), _e(2, "quarantined", "crash")]
    a = account(entries, file_ids={0, 2, 5})
    assert a.begun == 3  # ids 0, 2, 5
    assert a.lost == 2  # 2 quarantined, 5 never listed
    assert a.duplicated == 1
    assert a.id_gaps == 3  # 1, 3, 4 missing below 5
    assert a.transitions == 120  # the quarantined one has nothing usable


def test_plan_spreads_the_faults_over_the_budget() -> None:
    p = make_plan(robot_hours=8.0, rtf=8.0)
    assert p.episodes == 9600
    assert 0 < p.graceful_restart_at < p.crash_at < p.episodes
    assert p.planned_stalls == 24
    assert p.reset_stall_s > 2.0  # longer than the policy's reset timeout: a timeout each
    q = make_plan(robot_hours=0.1, rtf=4.0, quick=True)
    assert q.episodes == 120 and q.planned_stalls == 6 and q.serial_episodes == 12
    with pytest.raises(ValueError):
        make_plan(robot_hours=0.0, rtf=8.0)
