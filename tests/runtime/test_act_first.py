"""Act-first ticks (issue 14): the command leaves before the belief work, and nothing else
changes.

Each test drives two runtimes (same bundle, config and rng seed) through the same stream of
calls: ``old`` with ``act_first=False`` (encoder and belief update before the actor, the order
before issue 14) and ``new`` with the default (``tick`` returns the command, ``finish_tick``
does the belief work). ``new`` gets ``finish_tick`` after some ticks and not after others, so
the automatic catch-up (next tick, end/begin episode, reset, swap, a belief read) is driven
too. What must be identical: every command, z and flag as the command leaves; every complete
``TickResult`` (all fields but the timings); the belief and the change detector after every
call; every episode summary and start; the rng's state (the same draws in the same order).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pearl_robot.runtime import PolicyRuntime, RuntimeConfig, load_bundle
from pearl_robot.runtime.change_detection import ChangeDetectionConfig
from pearl_robot.runtime.policy import TickResult

GOOD = np.array([0.3, -0.2])
FIXED = {"z_schedule": "fixed", "fixed_z": (0.2, -0.1, 0.4, 0.0, -0.3)}
# fires within a few dozen ticks of a held-still stream whose reward jumps (see _still)
TOUCHY = ChangeDetectionConfig(enabled=True, warmup=30, min_context=3, holdoff=5,
                               min_neighbours=3, reference_min=5, drift=0.5,
                               max_autocorrelation=0.9)
EARLY_FIELDS = ("command", "safe", "limited", "z", "episode", "step")
"""What a deferred result must already get right: everything the command path decides."""
ALL_FIELDS = tuple(f for f in TickResult._fields if f not in ("timings", "deferred"))


@pytest.fixture(scope="module")
def point(bundle_dir: Path) -> Any:
    """The point-robot bundle, loaded once (runtimes share its sessions, not their buffers)."""
    return load_bundle(bundle_dir)


def _pair(bundle: Any, **cfg: Any) -> tuple[PolicyRuntime, PolicyRuntime]:
    old = PolicyRuntime(bundle, RuntimeConfig(act_first=False, **cfg),
                        rng=np.random.default_rng(7))
    new = PolicyRuntime(bundle, RuntimeConfig(**cfg), rng=np.random.default_rng(7))
    assert not old.acts_first
    return old, new


def _eq(a: Any, b: Any, what: str) -> None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=what)  # NaN == NaN here
    else:
        assert a == b, (what, a, b)


def _same_result(a: TickResult, b: TickResult, fields: tuple[str, ...]) -> None:
    for f in fields:
        _eq(getattr(a, f), getattr(b, f), f)


def _same_state(old: PolicyRuntime, new: PolicyRuntime) -> None:
    """Reads ``new.belief``: this itself does a pending update (part of the contract)."""
    bo, bn = old.belief, new.belief
    _eq(bo.mean, bn.mean, "belief mean")
    _eq(bo.var, bn.var, "belief var")
    assert bo.count == bn.count
    mo, mn = old.change_monitor, new.change_monitor
    assert (mo is None) == (mn is None)
    if mo is not None:
        for f, a, b in zip(mo.status()._fields, mo.status(), mn.status(), strict=True):
            _eq(np.asarray(a), np.asarray(b), f)  # NaN (unscored) equals NaN
        assert [tuple(e) for e in mo.events] == [tuple(e) for e in mn.events]
    assert old.rng.bit_generator.state == new.rng.bit_generator.state


def _same_summary(a: Any, b: Any) -> None:
    for f in a._fields:
        _eq(getattr(a, f), getattr(b, f), f)


class Pair:
    """Runs each call on both runtimes and checks them against each other."""

    def __init__(self, old: PolicyRuntime, new: PolicyRuntime) -> None:
        self.old, self.new = old, new
        self.deferred_seen = 0

    def tick(self, obs: Any, reward: Any = None, age: Any = None, finish: bool = True
             ) -> TickResult:
        old, new = self.old, self.new
        before = old.belief  # what the deferred result reports: the belief before the tick
        b_mean, b_var, b_count = before.mean.copy(), before.var.copy(), before.count
        a = old.tick(obs, reward, obs_age=age)
        e = new.tick(obs, reward, obs_age=age)
        assert not a.deferred
        _same_result(a, e, EARLY_FIELDS)
        if not e.deferred:  # the update-first order (step_mean, redrawing detector) or a bug
            assert not new.acts_first or e.reason == "tick_error"
            _same_result(a, e, ALL_FIELDS)
            assert new.finish_tick() is None
            return a
        self.deferred_seen += 1
        assert new.acts_first and e.timings.encoder_s == 0.0
        if e.step > 0:  # (a tick that began an episode may have reset the belief first)
            _eq(e.belief_mean, b_mean, "deferred belief mean")
            _eq(e.belief_var, b_var, "deferred belief var")
            assert e.context_size == b_count
        assert set(filter(None, e.reason.split(","))) <= set(filter(None, a.reason.split(",")))
        if finish:
            f = new.finish_tick()
            assert f is not None and not f.deferred
            _same_result(a, f, ALL_FIELDS)
            assert f.timings.deferred_s > 0 and f.timings.total_s == e.timings.total_s
            assert new.finish_tick() is None  # done once
        return a

    def end(self, obs: Any = None, reward: Any = None) -> None:
        _same_summary(self.old.end_episode(obs, reward), self.new.end_episode(obs, reward))
        _same_state(self.old, self.new)

    def begin(self, task: Any = None) -> None:
        a, b = self.old.begin_episode(task), self.new.begin_episode(task)
        _same_summary(a, b)
        _same_state(self.old, self.new)

    def reset(self) -> None:
        self.old.reset_belief()
        self.new.reset_belief()
        _same_state(self.old, self.new)


def test_which_schedules_act_first(point: Any) -> None:
    def acts(**cfg: Any) -> bool:
        return PolicyRuntime(point, RuntimeConfig(**cfg),
                             rng=np.random.default_rng(0)).acts_first

    assert acts() and acts(**FIXED) and acts(stochastic_actions=True)
    assert not acts(z_schedule="step_mean") and not acts(act_first=False)
    # a detector that redraws z on a change decides this tick's z: update first
    assert not acts(change_detection=TOUCHY)
    assert acts(change_detection=ChangeDetectionConfig(enabled=True, on_change="flag"))
    assert acts(change_detection=TOUCHY, **FIXED)  # z fixed: the rebuild cannot change it


def test_deferred_result_is_the_command_and_finish_completes_it(point: Any) -> None:
    rt = PolicyRuntime(point, RuntimeConfig(), rng=np.random.default_rng(0))
    assert rt.finish_tick() is None  # no tick yet
    first = rt.tick(GOOD)
    assert first.deferred and rt.finish_tick().context_size == 0
    out = rt.tick(GOOD + 0.01, reward=-1.0)
    assert out.deferred and out.context_size == 0  # the update is still to do
    done = rt.finish_tick()
    assert done is not None and not done.deferred and done.context_size == 1
    np.testing.assert_array_equal(done.command, out.command)
    assert done.command is not out.command  # fresh copies, as every result
    assert rt.finish_tick() is None
    # no finish_tick: the next tick catches up before it acts, nothing is counted twice
    rt.tick(GOOD, reward=-1.0)
    assert rt.tick(GOOD, reward=-1.0).context_size == 2
    assert rt.belief.count == 3  # reading the belief catches up too
    assert rt.finish_tick() is None
    assert rt.end_episode(GOOD, -1.0).context_size == 4


def test_step_mean_keeps_the_update_first(point: Any) -> None:
    rt = PolicyRuntime(point, RuntimeConfig(z_schedule="step_mean"),
                       rng=np.random.default_rng(0))
    rt.tick(GOOD)
    out = rt.tick(GOOD, reward=-1.0)
    assert not out.deferred and out.context_size == 1
    np.testing.assert_array_equal(out.z, out.belief_mean)  # z saw this tick's transition
    assert rt.finish_tick() is None


@pytest.mark.parametrize("cfg", [{}, FIXED, {"stochastic_actions": True},
                                 {"max_rate": 0.5}, {"exploration_episodes": 0}],
                         ids=["episode", "fixed", "stochastic", "rate-limit", "no-explore"])
def test_calls_around_a_pending_update(point: Any, cfg: dict) -> None:
    """Every call that needs the belief does a skipped finish_tick first, exactly once."""
    p = Pair(*_pair(point, **cfg))
    p.begin(task=1)
    p.tick(GOOD, finish=False)
    for i in range(6):
        p.tick(GOOD + 0.01 * i, -1.0 + 0.1 * i, finish=i % 2 == 0)
    p.tick(GOOD, -0.5, finish=False)
    p.end(GOOD + 0.02, -0.4)  # the pending tick, then the final transition
    p.begin(task=1)
    for i in range(5):
        p.tick(GOOD - 0.01 * i, -0.3, finish=False)
    p.reset()  # the pending transition entered before the reset
    p.tick(GOOD, -0.2, finish=False)
    p.begin(task=2)  # a running episode ended by begin_episode, task change: reset
    for i in range(4):
        p.tick(GOOD, -0.1 * i, finish=False)
    p.begin(task=2)
    p.tick(GOOD, finish=False)
    p.tick(GOOD, -1.0, finish=False)
    _same_state(p.old, p.new)  # a belief read in the middle of an episode
    p.tick(GOOD, -1.0, finish=False)
    p.tick(GOOD, -1.0)
    p.end()
    assert p.deferred_seen == 22


def test_a_pending_update_goes_into_the_model_that_ticked_it(bundle_dir: Path,
                                                             other_bundle_dir: Path) -> None:
    """A swap at begin_episode (explicit, or implicit in the next tick) happens after the
    old model's pending transition entered the old model's belief."""
    p = Pair(*_pair(bundle_dir))
    p.begin(task=3)  # (a first tick would begin the episode itself, and swap at once)
    for rt in (p.old, p.new):
        assert rt.request_swap(other_bundle_dir)
        assert rt.wait_for_validation(60).state == "ready"
    for i in range(5):
        p.tick(GOOD + 0.01 * i, -1.0, finish=False)
    old_belief_new = p.new._m.belief  # noqa: SLF001 - the model about to be swapped out
    old_belief_old = p.old._m.belief  # noqa: SLF001
    p.begin(task=3)
    assert p.new.bundle.sha256 == p.old.bundle.sha256 != ""
    assert old_belief_new is not p.new._m.belief  # noqa: SLF001 - swapped
    assert old_belief_new.count == old_belief_old.count == 4
    np.testing.assert_array_equal(old_belief_new.mean, old_belief_old.mean)
    for i in range(4):
        p.tick(GOOD, -0.5, finish=i == 2)
    # swap back, implicitly: end_episode, then the next tick begins (and swaps)
    for rt in (p.old, p.new):
        assert rt.request_swap(bundle_dir)
        assert rt.wait_for_validation(60).state == "ready"
    p.tick(GOOD, -0.5, finish=False)
    p.end()
    p.tick(GOOD)
    assert p.new.swap_status().state == p.old.swap_status().state == "swapped"
    p.tick(GOOD, -0.5, finish=False)
    p.end(GOOD, -0.5)


def _still(n: int, switch: int, seed: int) -> list[tuple[np.ndarray, float]]:
    """A point robot held still (sensor noise: its transitions are each other's neighbours)
    whose context reward jumps at ``switch``: what the detector fires on."""
    rng = np.random.default_rng(seed)
    obs = GOOD + rng.normal(0.0, 0.002, size=(n, 2))
    rew = np.where(np.arange(n) < switch, rng.normal(-1.0, 0.05, n), rng.normal(-0.1, 0.05, n))
    return list(zip(obs, rew.tolist(), strict=True))


@pytest.mark.parametrize("cfg", [
    {"change_detection": TOUCHY, **FIXED},  # act-first, the belief rebuilt on a change
    {"change_detection": TOUCHY, **FIXED, "stochastic_actions": True},
    {"change_detection": dataclasses.replace(TOUCHY, on_change="flag")},
    {"change_detection": dataclasses.replace(TOUCHY, on_change="reset"), **FIXED},
    {"change_detection": TOUCHY},  # z redrawn on a change: the update stays first
    {"change_detection": TOUCHY, "stochastic_actions": True},
], ids=["fixed-rebuild", "fixed-rebuild-stochastic", "episode-flag", "fixed-reset",
        "episode-rebuild", "episode-rebuild-stochastic"])
def test_change_detection_gives_the_same_changes(point: Any, cfg: dict) -> None:
    p = Pair(*_pair(point, **cfg))
    p.begin(task="stream")
    for i, (obs, r) in enumerate(_still(260, 120, seed=3)):
        p.tick(obs, r if i else None, finish=i % 3 != 0)
        if i % 50 == 0:
            _same_state(p.old, p.new)
        if i == 130:  # bad inputs in the middle of it
            p.tick([math.nan, 0.0], -1.0)
            p.tick(obs, math.inf, finish=False)
            p.tick(obs, "x")
    _same_state(p.old, p.new)
    if not cfg.get("stochastic_actions"):  # the stream did exercise a change (sampled
        # commands hide this reward jump from the detector: there only the rng draws and the
        # scoring are compared)
        assert p.old.change_monitor.status().changes >= 1
    assert (p.deferred_seen > 0) == p.new.acts_first
    p.end()


def test_encoder_faults_land_in_the_finished_result(point: Any) -> None:
    """Encoder faults are found by the deferred work; the complete result lists them where
    the update-first tick did (before the actor's)."""
    p = Pair(*_pair(point))
    p.tick(GOOD)

    class Broken:
        """Stands in for a bound graph: raises, or writes NaN into its output."""

        def __init__(self, mode: str, out: np.ndarray) -> None:
            self.mode, self.out = mode, out

        def run(self) -> None:
            if self.mode == "raise":
                raise RuntimeError("graph died")
            self.out[...] = np.nan

    models = [p.old._m, p.new._m]  # noqa: SLF001
    real = [(m.encoder, m.actor) for m in models]
    for mode, reason in (("raise", "encoder_error"), ("nan", "encoder_nonfinite")):
        for m in models:
            m.encoder = Broken(mode, m.var_out)
        out = p.tick(GOOD, -1.0)
        assert out.reason == reason and not out.safe
        for m in models:  # and the actor too: both reasons, in the old order
            m.actor = Broken("nan", m.action_out)
        out = p.tick(GOOD, -1.0)
        assert out.reason == f"{reason},action_nonfinite" and out.safe
        for m, (_, actor) in zip(models, real, strict=True):
            m.actor = actor
        p.tick(GOOD, -1.0)  # after a safe tick with a usable obs: encoded (and failing)
    for m, (enc, actor) in zip(models, real, strict=True):
        m.encoder, m.actor = enc, actor
    p.tick(GOOD, -1.0)
    p.tick(GOOD, -1.0, finish=False)
    p.end()


def test_finish_tick_never_raises(point: Any) -> None:
    """A bug in the deferred work (here: the belief raising) is counted as tick_error and
    breaks the chain, like a tick that raised; the command has already left."""
    rt = PolicyRuntime(point, RuntimeConfig(), rng=np.random.default_rng(0))
    rt.tick(GOOD)
    rt.finish_tick()
    out = rt.tick(GOOD, -1.0)
    assert out.deferred and not out.safe

    class Boom:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("bug")

    real, rt._m.belief = rt._m.belief, Boom()  # noqa: SLF001
    assert rt.finish_tick() is None
    rt._m.belief = real  # noqa: SLF001
    assert rt.finish_tick() is None  # the work is gone, not retried
    rt.tick(GOOD, -1.0)  # its transition starts at the broken tick: skipped
    assert rt.finish_tick().context_size == 0
    rt.tick(GOOD, -1.0)
    assert rt.finish_tick().context_size == 1
    # the same bug when nobody calls finish_tick: the next tick still answers
    rt.tick(GOOD, -1.0)
    rt._m.belief = Boom()  # noqa: SLF001
    out = rt.tick(GOOD, -1.0)  # catches up first (fails: counted), then its own belief read
    assert out.safe and "tick_error" in out.reason
    rt._m.belief = real  # noqa: SLF001
    assert not rt.tick(GOOD, -1.0).safe
    assert rt.end_episode().faults == {"tick_error": 3}


# --------------------------------------------------------------------------- the fuzz

_obs = st.one_of(
    st.tuples(st.floats(-1.0, 1.0), st.floats(-1.0, 1.0)).map(np.array),
    st.sampled_from([[math.nan, 0.0], [0.0, math.inf], [1.0, 2.0, 3.0], "0.3", None,
                     np.array([True, False])]),
)
_reward = st.one_of(st.floats(-2.0, 0.0), st.none(),
                    st.sampled_from([math.nan, math.inf, "-1", [-1.0], True, 10 ** 400]))
_age = st.one_of(st.none(), st.floats(0.0, 0.09), st.sampled_from([-0.01, math.nan, 1.0, "0"]))
_op = st.one_of(
    st.tuples(st.just("tick"), _obs, _reward, _age, st.booleans()),
    st.tuples(st.just("tick"), _obs, _reward, _age, st.booleans()),
    st.tuples(st.just("tick"), _obs, _reward, _age, st.booleans()),
    st.tuples(st.just("end"), _obs, _reward),
    st.tuples(st.just("begin"), st.sampled_from([None, 0, 1])),
    st.tuples(st.just("reset")),
    st.tuples(st.just("peek")),
)


@pytest.mark.parametrize("cfg", [{}, FIXED, {"stochastic_actions": True, "max_rate": 1.0},
                                 {"z_schedule": "step_mean"},
                                 {"change_detection": TOUCHY, **FIXED}],
                         ids=["episode", "fixed", "stochastic-rate", "step_mean", "detect"])
def test_fuzz_same_as_update_first(point: Any, cfg: dict) -> None:
    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(ops=st.lists(_op, min_size=1, max_size=30))
    def run(ops: list) -> None:
        p = Pair(*_pair(point, max_obs_age=0.1, **cfg))
        for op in ops:
            if op[0] == "tick":
                p.tick(*op[1:])
            elif op[0] == "end":
                p.end(op[1], op[2])
            elif op[0] == "begin":
                p.begin(op[1])
            elif op[0] == "reset":
                p.reset()
            else:
                _same_state(p.old, p.new)
        p.end()

    run()
