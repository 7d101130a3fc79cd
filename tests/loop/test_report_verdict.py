"""The loop report's comparison: a before/after difference is judged against the standard error
of a difference of means (from the repeat noise the run measured), not against the noise of one
episode, and the verdict says which it is."""

from __future__ import annotations

import math

import pytest

from pearl_robot.loop.report import compare, verdict_text


def _rows(before: list[float], after: list[float], confirm: list[float]) -> list[dict]:
    rows = []
    for phase, rets, sha in (("before", before, "old"), ("after", after, "new"),
                             ("confirm", confirm, "new")):
        for i, r in enumerate(rets):
            rows.append({"task": 100 + i // 2, "trial": i % 2, "phase": phase, "return": r,
                         "model_sha": sha})
    return rows


def test_the_standard_error_follows_the_repeat_noise_and_the_episode_count() -> None:
    rows = _rows([-80.0, -60.0, -90.0, -70.0], [-85.0, -65.0, -95.0, -75.0], [-75.0, -75.0])
    cmp = compare(rows)
    assert cmp["repeat_noise"] == pytest.approx(10.0)  # |-75 - -85|, |-75 - -65|
    sigma = 10.0 * math.sqrt(math.pi) / 2.0
    assert cmp["delta_se"] == pytest.approx(sigma * math.sqrt(1 / 4 + 1 / 4))
    assert cmp["delta_mean"] == pytest.approx(-5.0)


def test_a_drop_within_two_standard_errors_is_called_noise_and_a_larger_one_is_not() -> None:
    cmp = {"delta_mean": -19.0, "delta_relative": -0.2, "after_mean": -108.0,
           "before_mean": -89.0, "delta_std_across_tasks": 20.0, "tasks_better": 1, "tasks": 4,
           "repeat_noise": 30.0, "delta_se": 13.0}
    text = verdict_text(cmp, None, "shipped", True, None, {"guard": "passed"}, (-60.6, -58.4))
    assert "cannot tell the two apart" in text and "Why:" not in text
    assert "-58.4 against the shipped model's -60.6" in text
    clear = dict(cmp, delta_se=5.0)
    text = verdict_text(clear, None, "shipped", True, None, {"guard": "passed"}, (None, None))
    assert text.startswith("The retrained model is worse") and "Why:" in text
    assert "In simulation" not in text


def test_a_retrain_as_good_in_simulation_but_worse_on_the_robot_says_so() -> None:
    cmp = {"delta_mean": -15.0, "delta_relative": -0.17, "after_mean": -103.0,
           "before_mean": -88.0, "delta_std_across_tasks": 26.0, "tasks_better": 1, "tasks": 4,
           "repeat_noise": 5.3, "delta_se": 2.3}
    text = verdict_text(cmp, None, "retrained", True, None, {"guard": "passed"}, (-60.6, -59.2))
    assert "as good in simulation" in text and "night ran on the twin" in text
    worse_in_sim = verdict_text(cmp, None, "retrained", True, None, {"guard": "passed"},
                                (-60.6, -70.0))
    assert "moved it the wrong way" in worse_in_sim
