"""The hot-swap quality canary (ROS-free): baseline per (task, trial), verdicts, rollback."""

import math

import pytest

from pearl_robot.errors import ConfigError
from pearl_robot.runtime.canary import (
    NO_BASELINE,
    PASS,
    ROLLBACK,
    CanaryConfig,
    QualityCanary,
    held_out_score,
    provenance_check,
)


def _run_old(c: QualityCanary, returns: dict[tuple[int, int], list[float]]) -> None:
    for (task, trial), rets in returns.items():
        for r in rets:
            assert c.record("old", task, trial, r) is None


def test_a_worse_model_is_rolled_back_with_the_paired_numbers() -> None:
    c = QualityCanary(CanaryConfig(episodes=4, margin=0.2))
    _run_old(c, {(1, 0): [-60.0, -62.0], (1, 1): [-40.0], (2, 0): [-80.0], (2, 1): [-50.0]})
    assert c.swapped("old", "/models/old", "new")
    assert c.status().state == "judging"
    out = [c.record("new", 1, 0, -90.0), c.record("new", 1, 1, -80.0),
           c.record("new", 2, 0, -120.0)]
    assert out == [None, None, None]
    v = c.record("new", 2, 1, -100.0)
    assert v is not None and v.decision == ROLLBACK and v.rolled_back
    assert [j.old_return for j in v.judged] == [-61.0, -40.0, -80.0, -50.0]
    assert v.new_mean == pytest.approx(-97.5)
    assert v.old_mean == pytest.approx(-57.75)
    assert v.threshold == pytest.approx(0.2 * 57.75)
    assert v.old_path == "/models/old" and "rolled back" in v.message()
    assert c.status().state == ROLLBACK and not c.judging
    assert v.as_dict()["judged"][0]["task"] == 1


def test_a_model_within_the_margin_passes() -> None:
    c = QualityCanary(CanaryConfig(episodes=2, margin=0.2))
    _run_old(c, {(1, 0): [-50.0], (1, 1): [-40.0]})
    c.swapped("old", "p", "new")
    assert c.record("new", 1, 0, -55.0) is None  # 10 % worse: inside the 20 % margin
    v = c.record("new", 1, 1, -45.0)
    assert v is not None and v.decision == PASS and v.delta == pytest.approx(-5.0)


def test_just_outside_the_margin_rolls_back_and_margin_abs_widens_it() -> None:
    for margin_abs, expected in ((0.0, ROLLBACK), (2.0, PASS)):
        c = QualityCanary(CanaryConfig(episodes=1, margin=0.1, margin_abs=margin_abs))
        _run_old(c, {(3, 0): [-10.0]})
        c.swapped("old", "p", "new")
        v = c.record("new", 3, 0, -11.5)  # 1.5 worse; allowed 1.0 (+2.0)
        assert v is not None and v.decision == expected


def test_trial_falls_back_to_the_task_and_unknown_tasks_are_not_judged() -> None:
    c = QualityCanary(CanaryConfig(episodes=2))
    _run_old(c, {(1, 0): [-10.0], (1, 1): [-20.0]})
    c.swapped("old", "p", "new")
    assert c.record("new", 9, 0, -1000.0) is None  # old model never ran task 9
    assert c.record("new", 1, 2, -15.0) is None  # no trial 2: same-task mean (-15)
    v = c.record("new", 1, 0, -10.0)
    assert v is not None and v.unjudged == 1 and len(v.judged) == 2
    assert v.judged[0].old_return == pytest.approx(-15.0) and v.decision == PASS


def test_no_baseline_at_all_gives_no_verdict_but_closes_the_trial() -> None:
    c = QualityCanary(CanaryConfig(episodes=2))
    c.swapped("old", "p", "new")
    assert c.record("new", 5, 0, -1.0) is None
    v = c.record("new", 5, 1, -1.0)
    assert v is not None and v.decision == NO_BASELINE and math.isnan(v.new_mean)
    assert not c.judging


def test_rollback_swap_is_not_judged_and_disabled_canary_never_opens_a_trial() -> None:
    c = QualityCanary(CanaryConfig(episodes=1))
    _run_old(c, {(1, 0): [-10.0]})
    c.swapped("old", "p", "new")
    assert c.record("new", 1, 0, -50.0).decision == ROLLBACK
    c.expect_rollback_swap()
    assert not c.swapped("new", "q", "old")
    assert c.record("old", 1, 0, -10.0) is None and not c.judging
    off = QualityCanary(CanaryConfig(episodes=0))
    assert not off.swapped("a", "p", "b")


def test_baseline_is_the_old_models_recent_history_only() -> None:
    c = QualityCanary(CanaryConfig(episodes=1, history=2))
    _run_old(c, {(1, 0): [-1000.0, -10.0, -10.0]})  # the oldest falls out of the window
    c.record("other", 1, 0, -1.0)  # another model's returns are not the baseline
    c.swapped("old", "p", "new")
    v = c.record("new", 1, 0, -10.0)
    assert v.judged[0].old_return == pytest.approx(-10.0) and v.decision == PASS


def test_non_finite_returns_are_ignored() -> None:
    c = QualityCanary(CanaryConfig(episodes=1))
    _run_old(c, {(1, 0): [-10.0]})
    c.swapped("old", "p", "new")
    assert c.record("new", 1, 0, float("nan")) is None and c.judging


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="margin"):
        CanaryConfig(margin=-0.1)
    with pytest.raises(ConfigError, match="episodes"):
        CanaryConfig(episodes=-1)


def test_provenance_check_needs_an_override_for_a_worse_recorded_score() -> None:
    good = {"held_out": {"eval/test_final_return": -40.0, "eval/test_normalized": 0.6}}
    bad = {"held_out": {"eval/test_final_return": -70.0}}
    assert held_out_score(good) == -40.0 and held_out_score({"trainer": {}}) is None
    assert not provenance_check(good, bad).ok
    assert "swap_override" in provenance_check(good, bad).message
    assert provenance_check(bad, good).ok
    assert provenance_check({}, bad).ok  # nothing recorded: not compared


def test_provenance_guard_forgives_a_drop_within_the_canary_margin() -> None:
    """The same notion of "worse" as the canary: -44 against -40 is within 20 % of 40."""
    running = {"held_out": {"eval/test_final_return": -40.0}}
    near = {"held_out": {"eval/test_final_return": -44.0}}
    far = {"held_out": {"eval/test_final_return": -49.0}}
    cfg = CanaryConfig(margin=0.2)
    assert not provenance_check(running, near).ok  # no config: any drop is worse
    assert provenance_check(running, near, cfg).ok
    check = provenance_check(running, far, cfg)
    assert not check.ok and "8.000" in check.message
    assert provenance_check(running, far, CanaryConfig(margin=0.2, margin_abs=1.5)).ok
    assert cfg.allowed_drop(40.0) == pytest.approx(8.0)
