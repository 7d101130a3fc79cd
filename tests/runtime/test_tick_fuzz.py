"""``PolicyRuntime.tick`` against whatever a caller might pass it.

What must hold for every input (issue 12): no exception; a finite command inside the limits;
the safe command whenever the observation or its age is unusable; an impossible observation
(finite but far outside the contract's declared range) or a negative age treated as a fault;
and after each bad input, the next good one handled as after any other dropped tick. The
fuzz checks the last point two ways: against a runtime that got a plain NaN observation
(or a NaN reward) in place of each bad input (every kind of bad input must leave the same
trace: nothing half-written), and against a runtime that never saw the bad inputs at all
(with the ``episode`` schedule the command depends only on the observation and the episode's
z, so it must be identical).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime.bundle import CONTRACT_FILE, seal_contract
from pearl_robot.runtime.policy import OBS_REASONS, UNSAFE_REASONS

LOW, HIGH = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
GOOD = np.array([0.3, -0.2])


@pytest.fixture(scope="module")
def ranged_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The point-robot bundle with declared observation ranges ([-1, 1] per entry)."""
    out = tmp_path_factory.mktemp("ranged") / "point"
    shutil.copytree(bundle_dir, out)
    raw = json.loads((out / CONTRACT_FILE).read_text())
    raw["observation"]["low"], raw["observation"]["high"] = LOW.tolist(), HIGH.tolist()
    seal_contract(out, raw)
    return out


@pytest.fixture(scope="module")
def ranged(ranged_bundle: Path):
    return load_bundle(ranged_bundle)


def _rt(bundle: Any, **cfg: Any) -> PolicyRuntime:
    return PolicyRuntime(bundle, RuntimeConfig(**cfg), rng=np.random.default_rng(0))


class _Raises:
    """An object whose every conversion raises something other than TypeError/ValueError."""

    def __array__(self, *a: Any, **k: Any) -> np.ndarray:
        raise RuntimeError("driver object broke")

    def __float__(self) -> float:
        raise KeyError("no float")

    def __len__(self) -> int:
        raise ZeroDivisionError

    def __iter__(self):
        raise OSError("gone")


class _FloatSubclass(float):
    def __float__(self) -> float:
        raise RuntimeError("liar")


class TestImpossibleObservations:
    @pytest.mark.parametrize("bad", [[1e6, 0.0], [0.0, -1e30], [3.5, 0.0], [1e308, 1e308]])
    def test_out_of_range_gives_the_safe_command(self, ranged: Any, bad: list) -> None:
        rt = _rt(ranged)
        rt.tick(GOOD)
        out = rt.tick(bad, reward=-1.0)
        assert out.safe and out.fault and out.reason == "obs_range"
        np.testing.assert_array_equal(out.command, rt.safe_command)
        assert rt.check_observation(bad) == "obs_range"
        assert "obs_range" in UNSAFE_REASONS and "obs_range" in OBS_REASONS

    def test_never_enters_the_belief(self, ranged: Any) -> None:
        """Neither the transition ending at the glitch nor the one leaving it is encoded."""
        rt = _rt(ranged, z_schedule="step_mean")
        rt.tick(GOOD)
        assert rt.tick(GOOD, reward=-1.0).context_size == 1
        out = rt.tick([1e6, 0.0], reward=-1.0)
        assert out.context_size == 1
        assert rt.tick(GOOD, reward=-1.0).context_size == 1  # starts at the glitch: skipped
        assert rt.tick(GOOD, reward=-1.0).context_size == 2
        summary = rt.end_episode()
        assert summary.faults == {"obs_range": 1} and summary.safe_ticks == 1

    def test_margin_is_configurable(self, ranged: Any) -> None:
        """Margin is a multiple of each entry's span (2 here): 1.0 accepts up to 3."""
        assert _rt(ranged).check_observation([2.9, 0.0]) == ""
        assert _rt(ranged).check_observation([3.1, 0.0]) == "obs_range"
        assert _rt(ranged, obs_range_margin=0.0).check_observation([1.01, 0.0]) == "obs_range"
        assert _rt(ranged, obs_range_margin=0.0).check_observation([1.0, -1.0]) == ""
        per_entry = _rt(ranged, obs_range_margin=(0.0, 10.0))
        assert per_entry.check_observation([0.0, 15.0]) == ""
        assert per_entry.check_observation([1.5, 0.0]) == "obs_range"
        off = _rt(ranged, obs_range_margin=None)
        assert off.check_observation([1e6, 0.0]) == "" and not off.tick([1e6, 0.0]).safe

    def test_bad_margins_refused(self, ranged: Any) -> None:
        from pearl_robot.errors import ConfigError

        for bad in (-0.1, math.nan, (1.0, 2.0, 3.0)):
            with pytest.raises(ConfigError, match="obs_range_margin"):
                _rt(ranged, obs_range_margin=bad)

    def test_bundle_without_ranges_is_not_range_checked(self, bundle_dir: Path) -> None:
        assert _rt(bundle_dir).check_observation([1e6, 0.0]) == ""

    def test_twin_bundle_declares_ranges(self, twin_bundle: Path) -> None:
        """The exporter writes the robot's joint limits; a joint at 1e6 rad is refused."""
        rt = _rt(twin_bundle)
        obs = np.zeros(rt.bundle.contract.obs_dim)
        assert rt.check_observation(obs) == ""
        obs[0] = 1e6
        assert rt.tick(obs).reason == "obs_range"

    @pytest.mark.parametrize("age,reason", [(-0.001, "obs_clock"), (-1e9, "obs_clock"),
                                            (-math.inf, "obs_clock"), (math.nan, "obs_stale"),
                                            (math.inf, "obs_stale"), ("0.01", "obs_age_invalid"),
                                            ([0.01], "obs_age_invalid"),
                                            (np.array([0.01]), "obs_age_invalid"),
                                            (True, "obs_age_invalid"),
                                            (_Raises(), "obs_age_invalid"),
                                            (_FloatSubclass(0.01), "obs_age_invalid")])
    def test_unusable_ages(self, ranged: Any, age: Any, reason: str) -> None:
        """A timestamp from the future is a clock fault, never a fresh observation."""
        rt = _rt(ranged)
        out = rt.tick(GOOD, obs_age=age)
        assert out.safe and out.reason == reason
        np.testing.assert_array_equal(out.command, rt.safe_command)

    @pytest.mark.parametrize("age", [0.0, -0.0, 0.01, np.float32(0.02), np.array(0.03), 0])
    def test_usable_ages(self, ranged: Any, age: Any) -> None:
        assert not _rt(ranged).tick(GOOD, obs_age=age).safe


class TestNeverRaises:
    @pytest.mark.parametrize("obs", [_Raises(), "0.3,0.2", b"ab", {"x": 1}, [["a", "b"]],
                                     [1 + 2j, 0], np.array([1 + 2j, 0]), np.array([True, False]),
                                     np.zeros(10 ** 6), [10 ** 400, 0], [[0.1], [0.2, 0.3]],
                                     np.array(["1", "2"]), object(), [None, None],
                                     np.ma.masked_array([0.1, 0.2], mask=[1, 0])])
    def test_unusable_observations(self, ranged: Any, obs: Any) -> None:
        rt = _rt(ranged)
        rt.tick(GOOD)
        out = rt.tick(obs, reward=-1.0)
        assert out.safe and out.reason in OBS_REASONS, out.reason
        np.testing.assert_array_equal(out.command, rt.safe_command)

    @pytest.mark.parametrize("reward", ["-1.0", [-1.0], np.array([-1.0]), _Raises(), True,
                                        _FloatSubclass(1.0), {"r": 1}, 10 ** 400])
    def test_unusable_rewards_skip_only_the_update(self, ranged: Any, reward: Any) -> None:
        rt = _rt(ranged, z_schedule="step_mean")
        rt.tick(GOOD)
        out = rt.tick(GOOD, reward=reward)
        assert not out.safe and out.context_size == 0
        assert out.reason in ("reward_invalid", "reward_nonfinite")
        assert rt.tick(GOOD, reward=-1.0).context_size == 1  # the chain goes on

    def test_internal_error_still_answers(self, ranged: Any) -> None:
        """A bug inside the tick (here: the belief raising) gives the safe command."""
        rt = _rt(ranged, z_schedule="step_mean")
        rt.tick(GOOD)

        class Boom:
            def __getattr__(self, name: str) -> Any:
                raise RuntimeError("bug")

        real, rt._m.belief = rt._m.belief, Boom()
        out = rt.tick(GOOD, reward=-1.0)
        assert out.safe and out.reason == "tick_error"
        rt._m.belief = real
        assert rt.tick(GOOD, reward=-1.0).context_size == 0  # chain broken at the bad tick
        assert not rt.tick(GOOD, reward=-1.0).safe

    def test_end_episode_never_raises(self, ranged: Any) -> None:
        rt = _rt(ranged)
        rt.tick(GOOD)
        summary = rt.end_episode(_Raises(), _Raises())
        assert summary.faults == {"obs_shape": 1}


# --------------------------------------------------------------------------- the fuzz

_junk = st.one_of(
    st.text(max_size=5), st.binary(max_size=5), st.none(), st.booleans(),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.lists(st.text(max_size=2), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=2), st.floats(), max_size=2),
    st.integers(min_value=-10 ** 500, max_value=10 ** 500),
    st.complex_numbers(allow_nan=True),
    st.builds(_Raises), st.just(object()),
    st.builds(lambda n: np.full(n, 0.1), st.integers(0, 5)),
    st.builds(lambda v: np.array(v, dtype=object), st.lists(st.text(max_size=1), max_size=3)),
)


def _usable_obs(x: Any) -> bool:
    """Independent oracle: two finite real numbers within the margin-widened range."""
    if not isinstance(x, (list, tuple, np.ndarray)):
        return False
    try:
        arr = np.asarray(x)
        return arr.dtype.kind in "iuf" and arr.size == 2 and bool(
            np.all(np.abs(arr.astype(float)) <= 3.0))
    except Exception:  # noqa: BLE001
        return False


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e308


_in_range = st.floats(-1.0, 1.0, allow_nan=False)
_good_obs = st.tuples(_in_range, _in_range).map(np.array)
_bad_obs = st.one_of(
    _junk.filter(lambda x: not _usable_obs(x)),
    st.tuples(st.floats(3.01, 1e308), _in_range).map(np.array),  # out of range
    st.tuples(_in_range, st.floats(-1e308, -3.01)).map(list),
    st.tuples(st.sampled_from([math.nan, math.inf, -math.inf]), _in_range).map(np.array),
)
_bad_age = st.one_of(_junk.filter(lambda x: x is not None and not (_number(x) and
                                                                  0 <= x <= 0.1)),
                     st.floats(max_value=-1e-12), st.just(math.nan), st.floats(0.11, 1e300))
_bad_reward = _junk.filter(lambda x: x is not None and not (_number(x) and math.isfinite(x)))

_step = st.one_of(
    st.tuples(st.just("good"), _good_obs, st.floats(-2.0, 0.0), st.floats(0.0, 0.09)),
    st.tuples(st.just("obs"), _bad_obs, st.floats(-2.0, 0.0), st.floats(0.0, 0.09)),
    st.tuples(st.just("age"), _good_obs, st.floats(-2.0, 0.0), _bad_age),
    st.tuples(st.just("reward"), _good_obs, _bad_reward, st.floats(0.0, 0.09)),
)


@pytest.mark.parametrize("schedule", ["episode", "step_mean"])
def test_fuzz_tick(ranged: Any, schedule: str) -> None:
    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(steps=st.lists(_step, min_size=1, max_size=25))
    def run(steps: list) -> None:
        a = _rt(ranged, z_schedule=schedule, max_obs_age=0.1)   # sees everything
        c = _rt(ranged, z_schedule=schedule, max_obs_age=0.1)   # NaN in place of each bad
        b = _rt(ranged, z_schedule=schedule, max_obs_age=0.1)   # never sees the bad ones
        safe = a.safe_command
        after_bad = False
        for kind, obs, reward, age in steps:
            out = a.tick(obs, reward, obs_age=age)
            assert np.all(np.isfinite(out.command))
            lim = a.bundle.contract
            assert np.all(out.command >= lim.action_low) and \
                np.all(out.command <= lim.action_high)
            if kind == "good":
                ref_c = c.tick(obs, reward, obs_age=age)
                ref_b = b.tick(obs, reward, obs_age=age)
                assert not out.fault, out.reason
                if schedule == "episode" and after_bad:
                    np.testing.assert_array_equal(out.command, ref_b.command)
                after_bad = False
            elif kind == "reward":
                ref_c = c.tick(obs, math.nan, obs_age=age)
                assert not out.safe
            else:  # the observation or its age is unusable
                ref_c = c.tick([math.nan, 0.0], reward, obs_age=age if kind == "obs" else 0.0)
                assert out.safe and out.reason.split(",")[0] in OBS_REASONS, out.reason
                np.testing.assert_array_equal(out.command, safe)
            if kind != "good":
                after_bad = True
            # every kind of bad input leaves the trace of the canonical one
            np.testing.assert_array_equal(out.command, ref_c.command)
            np.testing.assert_array_equal(out.belief_mean, ref_c.belief_mean)
            np.testing.assert_array_equal(out.belief_var, ref_c.belief_var)
            assert (out.safe, out.context_size, out.step) == \
                (ref_c.safe, ref_c.context_size, ref_c.step)
        sa, sc = a.end_episode(), c.end_episode()
        assert sa.safe_ticks == sc.safe_ticks and sa.steps == sc.steps
        if all(_number(r) and math.isfinite(r) for _, _, r, _ in steps):
            assert sa.context_return == sc.context_return

    run()
