"""Online change detection: synthetic streams with known change points, hour-long stationary
streams against the configured false-alarm rate, the PoG rebuild, the runtime hook."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from pearl_robot.errors import ConfigError
from pearl_robot.runtime.belief import OnlineBelief
from pearl_robot.runtime.change_detection import (
    BeliefChangeMonitor,
    ChangeDetectionConfig,
    ChangeDetector,
    belief_shift_surprise,
    cusum_arl0,
    cusum_threshold,
    factor_surprise,
)
from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig

DT = 0.05
HOUR = int(3600 / DT)  # 72 000 ticks at 20 Hz
ON = ChangeDetectionConfig(enabled=True)
SENSITIVE = ChangeDetectionConfig(enabled=True, drift=0.5, max_autocorrelation=0.9)
"""Small drift in long-run standard deviations: slower, finds small shifts, keeps its rate on
autocorrelated surprise."""


def ar1(rng: np.random.Generator, n: int, rho: float, dim: int = 1) -> np.ndarray:
    """Unit-variance AR(1) noise [n, dim] (what a slowly moving robot's factors look like)."""
    e = rng.standard_normal((n, dim)) * math.sqrt(1.0 - rho * rho)
    x = np.empty((n, dim))
    x[0] = rng.standard_normal(dim)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + e[i]
    return x


def run(det: ChangeDetector, xs: np.ndarray) -> list[int]:
    return [i for i, v in enumerate(xs.tolist()) if det.update(v) is not None]


# ------------------------------------------------------------------ threshold


def test_threshold_inverts_siegmund_and_grows_with_the_target_run_length() -> None:
    for k in (0.25, 0.5, 1.0):
        h = cusum_threshold(k, 144_000)
        assert cusum_arl0(k, h) == pytest.approx(144_000, rel=1e-6)
        assert cusum_threshold(k, 1_440_000) > h
    rare = ChangeDetectionConfig(false_alarms_per_hour=0.1).threshold(DT)
    often = ChangeDetectionConfig(false_alarms_per_hour=10).threshold(DT)
    assert rare > often > 0


@pytest.mark.parametrize("field,value", [("false_alarms_per_hour", 0.0), ("drift", -1.0),
                                         ("clip", 0.1), ("warmup", 0), ("holdoff", -1),
                                         ("on_change", "explode"),
                                         ("max_autocorrelation", 1.0)])
def test_bad_config_is_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        ChangeDetectionConfig(**{field: value})


# ------------------------------------------------------------------ known change points


@pytest.mark.parametrize("stream,cfg,shift,median", [
    ("iid", ON, 4.0, 3), ("iid", SENSITIVE, 2.0, 12), ("ar0.7", SENSITIVE, 2.0, 12)])
def test_a_known_change_point_is_detected_within_the_stated_delay(
        stream: str, cfg: ChangeDetectionConfig, shift: float, median: int) -> None:
    """A shift of the surprise (in long-run standard deviations) well above the drift:
    Siegmund's delay (h + 1.17) / (shift - k) is 2.9 ticks for the default (h 1.7, k 2.5,
    shift 4; at least 2 by the clip) and 7.5 for the sensitive setting (h 10, k 0.5, shift 2).
    Every one of 30 seeds must find it within 1 s (20 ticks), the median within the stated
    delay (rounded up), the change point placed within 5 ticks of the truth."""
    t0, delays, misplaced = 3000, [], []
    rho = 0.0 if stream == "iid" else 0.7
    for seed in range(30):
        rng = np.random.default_rng(seed)
        x = ar1(rng, 3600, rho)[:, 0]
        x[t0:] += shift * math.sqrt((1 + rho) / (1 - rho))
        det = ChangeDetector(cfg, DT)
        first = next(((i, ev) for i, v in enumerate(x.tolist())
                      if (ev := det.update(v)) is not None), None)
        assert first is not None and first[0] >= t0, f"seed {seed}: alarm {first} before"
        i, ev = first
        delays.append(i - t0)
        misplaced.append(abs((i - ev.age + 1) - t0))
    assert max(delays) <= 20, delays
    assert np.median(delays) <= median, delays
    assert np.median(misplaced) <= 5, misplaced


def test_a_single_corrupt_transition_raises_no_change() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(2000)
    x[1500] = 1e6  # one absurd surprise: capped at `clip`
    x[1700] = math.nan  # skipped, never accumulated
    det = ChangeDetector(ON, DT)
    assert run(det, x) == []
    assert det.scored == 1999


# ------------------------------------------------------------------ stationary hours


@pytest.mark.parametrize("stream,rho,cfg", [
    ("iid", 0.0, ON), ("log-chi2", 0.0, ON), ("iid", 0.0, SENSITIVE), ("ar", 0.6, SENSITIVE),
    ("ar", 0.85, SENSITIVE), ("log-chi2-ar", 0.7, SENSITIVE)])
def test_an_hour_of_stationary_stream_stays_within_the_configured_rate(
        stream: str, rho: float, cfg: ChangeDetectionConfig) -> None:
    """Configured for 1 false alarm per hour: one hour of 20 Hz stationary surprise (i.i.d.,
    autocorrelated, and the skewed log-chi-square of 5-d factors, i.i.d. and autocorrelated)
    raises at most one alarm. Seconds of pure numpy."""
    rng = np.random.default_rng(11)
    if stream.startswith("log-chi2"):
        y = ar1(rng, HOUR, rho, dim=5)
        x = np.log(np.mean(y * y, axis=1))
    else:
        x = ar1(rng, HOUR, rho)[:, 0]
    det = ChangeDetector(dataclasses.replace(cfg, false_alarms_per_hour=1.0), DT)
    assert len(run(det, x)) <= 1


def test_the_rate_test_can_fail() -> None:
    """The same hours do alarm, many times, with a 600/h configuration or with the default
    (uncorrected) scale on an autocorrelated stream: what the rate test guards against."""
    x = ar1(np.random.default_rng(11), HOUR, 0.6)[:, 0]
    tight = dataclasses.replace(SENSITIVE, false_alarms_per_hour=600)
    assert len(run(ChangeDetector(tight, DT), x)) > 50
    x = ar1(np.random.default_rng(11), HOUR, 0.95)[:, 0]
    assert len(run(ChangeDetector(ON, DT), x)) > 5


def test_ten_hours_of_iid_stream_match_the_configured_rate() -> None:
    """Siegmund's approximation is accurate for Gaussian increments and a small drift: 10 h
    at a 2/h target (the default's large drift and clip are conservative: far fewer)."""
    x = np.random.default_rng(5).standard_normal(10 * HOUR)
    det = ChangeDetector(dataclasses.replace(SENSITIVE, false_alarms_per_hour=2.0), DT)
    n = len(run(det, x))
    assert 5 <= n <= 40  # 20 expected; Poisson 99.9 % band with the approximation's slack
    assert len(run(ChangeDetector(dataclasses.replace(ON, false_alarms_per_hour=2.0), DT),
                   x)) <= 20


# ------------------------------------------------------------------ PoG factors


def factor_stream(rng: np.random.Generator, z: np.ndarray, n: int, var: float,
                  scatter: float, rho: float) -> np.ndarray:
    """Natural-parameter factors [n, 2, L] whose means scatter around z (correlated in time,
    ``scatter`` times the stated std: a miscalibrated encoder)."""
    L = z.shape[0]
    mu = z + scatter * math.sqrt(var) * ar1(rng, n, rho, L)
    nat = np.empty((n, 2, L))
    nat[:, 0] = 1.0 / var
    nat[:, 1] = mu / var
    return nat


@pytest.mark.parametrize("scatter", [1.0, 4.0])
def test_pog_monitor_detects_a_task_switch_and_rebuilds_from_after_it(scatter: float) -> None:
    rng = np.random.default_rng(0)
    L, W = 5, 180
    za, zb = np.zeros(L), np.full(L, 0.6 * scatter)  # the same shift in scatter units
    fa = factor_stream(rng, za, 3000, 0.05, scatter, 0.5)
    fb = factor_stream(rng, zb, 400, 0.05, scatter, 0.5)
    belief = OnlineBelief(L, W)
    mon = BeliefChangeMonitor(ON, L, DT)
    for nat in fa:
        assert mon.add(belief, nat) is None
    at = None
    for i, nat in enumerate(fb):
        ev = mon.add(belief, nat)
        if ev is not None:
            at = i
            # rebuilt from the factors after the change only: the belief sits on the new task
            assert ev.age <= i + 3
            assert belief.count == ev.age
            assert np.abs(belief.mean - zb).max() < np.abs(belief.mean - za).max()
            break
    assert at is not None and at <= 20, at
    # the windowed belief without detection is still mostly the old task at that point
    plain = OnlineBelief(L, W)
    for nat in np.concatenate([fa, fb[: at + 1]]):
        plain.add_natural(nat)
    assert np.abs(plain.mean - za).max() < np.abs(plain.mean - zb).max()


def test_pog_monitor_hour_of_one_task_raises_at_most_the_configured_rate() -> None:
    rng = np.random.default_rng(2)
    L = 5
    nat = factor_stream(rng, rng.standard_normal(L) * 0.5, HOUR, 0.02, 3.0, 0.8)
    belief = OnlineBelief(L, 180)
    mon = BeliefChangeMonitor(ChangeDetectionConfig(enabled=True, false_alarms_per_hour=1.0),
                              L, DT)
    alarms = sum(mon.add(belief, f) is not None for f in nat)
    assert alarms <= 1
    assert mon.status().scored == HOUR - 5  # min_context=5: the first 5 are not scored


def test_reset_and_flag_modes() -> None:
    rng = np.random.default_rng(4)
    L = 3
    stream = np.concatenate([factor_stream(rng, np.zeros(L), 1000, 0.05, 1.0, 0.0),
                             factor_stream(rng, np.ones(L), 100, 0.05, 1.0, 0.0)])
    for mode in ("reset", "flag"):
        belief = OnlineBelief(L, 100)
        mon = BeliefChangeMonitor(ChangeDetectionConfig(enabled=True, on_change=mode), L, DT)
        for nat in stream:
            if mon.add(belief, nat) is not None:
                assert belief.count == (0 if mode == "reset" else 100)
                break
        else:
            pytest.fail(f"{mode}: no change detected")


def test_surprise_helpers() -> None:
    nat = np.array([[10.0, 10.0], [0.0, 10.0]])  # mu = (0, 1), var = 0.1
    s = factor_surprise(nat, np.zeros(2), np.full(2, 0.1))
    assert s == pytest.approx(math.log((0.0 + 1.0 / 0.2) / 2))
    near = belief_shift_surprise(np.zeros(2), np.ones(2), np.full(2, 0.01), np.full(2, 0.9))
    far = belief_shift_surprise(np.zeros(2), np.ones(2), np.full(2, 2.0), np.full(2, 0.9))
    assert far > near


# ------------------------------------------------------------------ the runtime hook


def _drive(rt: PolicyRuntime, rewards: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Tick a point-robot runtime holding still (a position with sensor noise: its
    transitions are each other's neighbours) with the given context rewards; returns the
    ticks at which a change was raised."""
    seen, at = 0, []
    rt.begin_episode(task="stream")
    for i, r in enumerate(rewards):
        rt.tick(np.array([0.3, -0.2]) + rng.normal(0.0, 0.002, size=2), float(r))
        mon = rt.change_monitor
        assert mon is not None
        st = mon.status()
        if st.changes > seen:
            seen = st.changes
            at.append(i)
    return at


def test_runtime_rebuilds_the_belief_when_the_reward_stream_changes(bundle_dir: Path) -> None:
    rng = np.random.default_rng(0)
    rewards = np.concatenate([rng.normal(-1.0, 0.05, 1500), rng.normal(-0.1, 0.05, 300)])
    rt = PolicyRuntime(bundle_dir, RuntimeConfig(z_schedule="step_mean", change_detection=ON),
                       rng=np.random.default_rng(0))
    at = _drive(rt, rewards, rng)
    assert at and at[0] >= 1500, at
    assert at[0] - 1500 <= 40  # an untrained encoder's factors move little with the reward
    # right after the change the belief holds only post-change transitions
    assert rt.belief.count <= 1800 - 1500
    rt.reset_belief()
    assert rt.change_monitor is not None and rt.change_monitor.status().run == 0


def test_runtime_without_detection_has_no_monitor(bundle_dir: Path) -> None:
    rt = PolicyRuntime(bundle_dir, RuntimeConfig(), rng=np.random.default_rng(0))
    assert rt.change_monitor is None
