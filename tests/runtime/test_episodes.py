"""The episode controller without ROS: schedule, reset handshake, rewards, faults, numbering.

A scripted policy (or the real runtime on a small point-robot bundle) and a hand-made clock:
every test states what the robot sends and checks what the controller answers, tick by tick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pearl_robot.runtime.episodes import (
    EpisodeConfig,
    EpisodeController,
    Level,
    Observation,
    ResetReply,
    ScriptedPolicy,
    State,
    TickOutput,
)
from pearl_robot.runtime.policy import ObsCheck
from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig
from pearl_robot.runtime.task_reward import reward_function
from pearl_robot.tasks.point_robot import PointRobotFamily

DT = 0.05
FAMILY = PointRobotFamily()


class RecordingPolicy(ScriptedPolicy):
    """Acts with a constant command; records the episode calls; refuses |obs| > 100 as the
    runtime refuses a state outside the contract's range."""

    def __init__(self, command: float = 0.05) -> None:
        super().__init__(lambda obs: np.full(2, command), 2,
                         belief=lambda: np.array([0.1, 0.2, 1.0]))
        self.begun: list[Any] = []
        self.ended: list[tuple[Any, Any]] = []
        self.ticks = 0
        self.fail_next = False

    def check_observation(self, obs: Any, obs_age: Any = None) -> str:
        why = super().check_observation(obs, obs_age)
        return why or ("obs_range" if np.any(np.abs(np.asarray(obs)) > 100.0) else "")

    def begin_episode(self, task: Any = None) -> None:
        self.begun.append(task)
        super().begin_episode(task)

    def end_episode(self, final_obs: Any = None, reward: Any = None) -> None:
        final_obs = final_obs.obs if isinstance(final_obs, ObsCheck) else final_obs
        self.ended.append((None if final_obs is None else np.array(final_obs), reward))

    def tick(self, obs: Any, reward: float | None = None, obs_age: float | None = None):  # noqa: ANN201
        """The runtime's contract: a refused or stale observation gets the safe command."""
        self.ticks += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("inference blew up")
        res = super().tick(obs, reward, obs_age)
        why = obs.reason if isinstance(obs, ObsCheck) else self.check_observation(obs)
        why = why or ("obs_stale" if (obs_age or 0.0) > 0.1 else "")
        if why:
            res = res._replace(command=self.safe_command, safe=True, fault=True, reason=why)
        return res


class Robot:
    """A clock and a point robot that moves by the command; drives one controller."""

    def __init__(self, ctl: EpisodeController) -> None:
        self.ctl = ctl
        self.t = 100.0
        self.q = np.array([0.1, -0.2])
        self.outs: list[TickOutput] = []

    def tick(self, obs: np.ndarray | None = None, *, age: float = 0.0, fresh: bool = True,
             **kw: Any) -> TickOutput:
        self.t += DT
        values = self.q.copy() if obs is None else obs
        out = self.ctl.tick(self.t, Observation(values, self.t - age, self.t - age)
                            if fresh else None, **kw)
        self.ctl.after_publish()
        if out.acting:
            self.q = self.q + out.command
        self.outs.append(out)
        return out

    def run_until(self, state: State, limit: int = 200, **kw: Any) -> TickOutput:
        for _ in range(limit):
            out = self.tick(**kw)
            if self.ctl.state is state:
                return out
        raise AssertionError(f"never reached {state} (now {self.ctl.state})")


def _controller(tmp_path: Path, policy: Any = None, *, reset_routine: bool = False,
                tasks: tuple[int, ...] = (80, 81), steps: int = 5, **sched: Any
                ) -> EpisodeController:
    cfg = ScheduleConfig(task_indices=tasks, episode_steps=steps, **sched)
    session = OvernightSession(cfg, FAMILY.tasks, tmp_path)
    return EpisodeController(
        policy or RecordingPolicy(), session,
        EpisodeConfig(control_period=DT, reset_routine=reset_routine, reset_hold_s=0.0,
                      family_name=FAMILY.name),
        reward=lambda task: reward_function(FAMILY, task))


def _transitions(outs: list[TickOutput]) -> list[Any]:
    return [o.transition for o in outs if o.transition is not None]


def test_schedule_runs_its_episodes_in_order_then_is_done(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, episodes_per_task=2, max_episodes=4)
    robot = Robot(ctl)
    robot.run_until(State.DONE)
    assert [(e, t) for e, t, _ in ctl.returns] == [(0, 80), (1, 80), (2, 81), (3, 81)]
    trs = _transitions(robot.outs)
    assert [(t.episode, t.step) for t in trs] == [(e, s) for e in range(4) for s in range(5)]
    assert [t.truncated for t in trs] == [s == 4 for _ in range(4) for s in range(5)]
    # chained: each transition starts where the previous one of its episode ended
    for a, b in zip(trs, trs[1:]):
        if a.episode == b.episode:
            np.testing.assert_array_equal(a.next_obs, b.obs)
            assert a.stamps[2] == b.stamps[0]
    states = [i["state"] for o in robot.outs for i in o.tasks]
    assert states == ["resetting", "running"] * 4
    # the ending tick of each episode sends the safe command, not a policy action
    enders = [o for o in robot.outs if o.ended is not None]
    assert len(enders) == 4 and all(o.safe and not o.acting for o in enders)
    assert robot.outs[-1].safe and robot.outs[-1].schedule.phase.value == "done"
    assert ctl.finished() and ctl.episode_values()["episodes_done"] == 4


def test_reward_of_the_last_transition_and_the_runtime_is_told(tmp_path: Path) -> None:
    policy = RecordingPolicy()
    ctl = _controller(tmp_path, policy, tasks=(80,), steps=3, max_episodes=1)
    robot = Robot(ctl)
    robot.run_until(State.DONE)
    trs = _transitions(robot.outs)
    task = FAMILY.tasks[80]
    want = [reward_function(FAMILY, task)(t.obs, t.action, t.next_obs) for t in trs]
    assert [t.reward for t in trs] == [w.reward for w in want]
    assert trs[-1].truncated and trs[-1].step == 2
    (final_obs, final_reward), = policy.ended
    np.testing.assert_array_equal(final_obs, trs[-1].next_obs)
    assert final_reward == want[-1].context  # the last transition enters the belief too
    end = next(o.ended for o in robot.outs if o.ended is not None)
    assert end.reason == "finished" and end.steps == 3
    assert end.ret == pytest.approx(sum(w.reward for w in want))
    assert policy.begun == [80]
    # the belief logged with each transition is the one the action was taken with
    np.testing.assert_array_equal(trs[0].belief, [0.1, 0.2, 1.0])


def test_reset_handshake_waits_for_its_reset_id_and_a_state_after_it(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, reset_routine=True)
    robot = Robot(ctl)
    # the routine cannot take a request yet: the reset is announced, nothing is sent
    first = robot.tick(reset_ready=lambda: False)
    assert not first.request_reset and [i["state"] for i in first.tasks] == ["resetting"]
    assert first.tasks[0]["reset_id"] == ctl.reset_id == 1 and first.safe
    assert robot.tick(reset_ready=lambda: True).request_reset
    # a reply for an older reset: asked again (at most once per period), still resetting
    again = [robot.tick(reset_reply=ResetReply(True, json.dumps({"reset_id": 0})),
                        reset_ready=lambda: True).request_reset,
             robot.tick(reset_ready=lambda: True).request_reset]
    assert sum(again) == 1 and ctl.state is State.RESETTING
    # a failed call or a reply that is not JSON does not count either
    assert not ResetReply(False, json.dumps({"reset_id": 1})).names(1)
    assert not ResetReply(True, "done").names(1)
    # the reply names this reset; the episode starts on the next state taken after it
    ok = robot.tick(reset_reply=ResetReply(True, json.dumps({"reset_id": 1})))
    assert ctl.state is State.RESETTING and not ok.request_reset
    stale_state = robot.tick(age=2 * DT)  # measured before the reply arrived
    assert ctl.state is State.RESETTING and stale_state.safe
    started = robot.tick()
    assert ctl.state is State.RUNNING and [i["state"] for i in started.tasks] == ["running"]
    assert started.acting and started.tasks[0]["episode"] == 0


def test_an_unanswered_reset_is_resent_then_times_out_as_a_fault(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, reset_routine=True, reset_timeout_s=0.8, reset_retries=1,
                      fault_pause_s=0.5)
    robot = Robot(ctl)
    sent = [robot.tick().request_reset for _ in range(30)]
    # asked at once, then again after reset_resend_s (1 s) without an answer
    assert sent[0] and sum(sent) == 2 and 19 <= sent.index(True, 1) <= 22
    robot.run_until(State.PAUSED)
    assert "reset did not finish" in ctl.session.last_fault
    assert ctl.returns == []  # no episode ever ran
    # the pause ends: a new reset (new reset_id) for the same task
    out = robot.run_until(State.RESETTING)
    assert out.request_reset and out.tasks[0]["reset_id"] == 2 and out.tasks[0]["task"] == 80


def test_bad_observations_give_the_safe_command_and_no_transition(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=50)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    for _ in range(3):
        robot.tick()
    step = ctl.session.step
    n = len(_transitions(robot.outs))
    for bad in (dict(obs=np.array([np.nan, 0.0])), dict(obs=np.array([1e6, 0.0])),
                dict(age=0.5)):
        out = robot.tick(**bad)
        assert out.transition is None and not out.acting
        assert out.safe and not np.any(out.command)
        assert ctl.session.step == step, bad
        # the chain restarts: the next good state acts but completes no transition
        out = robot.tick()
        assert out.transition is None and out.acting
        out = robot.tick()
        assert out.transition is not None and out.transition.step == step
        step += 1
    trs = _transitions(robot.outs)[n:]
    assert all(np.all(np.abs(t.obs) < 100) and np.all(np.abs(t.next_obs) < 100) for t in trs)
    assert [t.step for t in _transitions(robot.outs)] == list(range(ctl.session.step))
    assert {k: ctl.faults[k] for k in ("obs_nonfinite", "obs_range", "obs_stale")} == \
        {"obs_nonfinite": 1, "obs_range": 1, "obs_stale": 1}


def test_silence_ends_the_episode_as_a_fault_then_the_schedule_resumes(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=100, fault_pause_s=0.5)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    robot.tick()
    out = robot.tick(age=1.2)  # no state for more than silence_fault_s
    assert ctl.state is State.PAUSED and out.safe
    assert out.ended.reason == "fault" and [i["state"] for i in out.tasks] == ["fault"]
    assert ctl.session.history[-1].end_reason == "fault"
    paused = [robot.tick() for _ in range(5)]
    assert all(o.safe and o.transition is None for o in paused)
    robot.run_until(State.RUNNING)
    assert ctl.episode_id == 1
    # a fault the robot reports (a bridge fault) does the same
    out = robot.tick(fault="bridge: motor overcurrent")
    assert ctl.state is State.PAUSED and out.ended.reason == "fault"
    assert ctl.session.last_fault == "bridge: motor overcurrent"


def test_logger_down_pauses_and_logger_back_resumes(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=100)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    (ev,) = ctl.logger_health(False, "disk full")
    assert ev.level is Level.ERROR and "disk full" in ev.message
    assert ctl.logger_health(False, "disk full") == ()  # said once
    out = robot.tick()
    assert ctl.state is State.PAUSED and out.ended.reason == "fault"
    assert all(robot.tick().safe for _ in range(3))
    ctl.logger_health(True, "ok")
    robot.run_until(State.RUNNING)
    assert ctl.episode_id == 1


def test_no_episode_starts_until_a_logger_receives_the_transitions(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=3, max_episodes=2)
    robot = Robot(ctl)
    listening = [False]
    asked: list[State] = []

    def logger_ready() -> bool:
        asked.append(ctl.state)
        return listening[0]

    waiting = [robot.tick(logger_ready=logger_ready) for _ in range(10)]
    assert ctl.state is State.IDLE and ctl.waiting_for_logger
    assert all(o.safe and not o.acting and o.transition is None and not o.tasks
               and not o.request_reset for o in waiting)
    assert "waiting for the episode logger" in waiting[-1].schedule.message
    warned = [e for o in waiting for e in o.events]
    assert len(warned) == 1 and warned[0].level is Level.WARNING  # said once
    listening[0] = True
    robot.run_until(State.RUNNING, logger_ready=logger_ready)
    assert not ctl.waiting_for_logger
    assert any("logger receives" in e.message for o in robot.outs[10:] for e in o.events)
    # asked only before a reset, never while an episode runs
    n = len(asked)
    for _ in range(2):
        robot.tick(logger_ready=logger_ready)
    assert len(asked) == n and ctl.state is State.RUNNING
    # a logger gone between episodes holds the next one back; the running one finishes
    listening[0] = False
    robot.run_until(State.IDLE, logger_ready=logger_ready)
    trs = _transitions(robot.outs)
    assert [(t.episode, t.step) for t in trs] == [(0, 0), (0, 1), (0, 2)]
    for _ in range(5):
        robot.tick(logger_ready=logger_ready)
    assert ctl.state is State.IDLE and ctl.episode_id == 0 and ctl.waiting_for_logger


def test_episode_numbering_continues_across_a_restart(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, tasks=(80, 81, 82), steps=4, max_episodes=6)
    robot = Robot(ctl)
    while len(ctl.returns) < 2:
        robot.tick()
    robot.run_until(State.RUNNING)
    robot.tick()
    assert ctl.episode_id == 2  # the process dies here, mid-episode
    # restart on the same directory; the dataset (the logger) already has ids up to 4
    session = OvernightSession(ScheduleConfig(task_indices=(80, 81, 82), episode_steps=4,
                                              max_episodes=6), FAMILY.tasks, tmp_path,
                               first_free_episode=lambda: 5)
    assert session.completed == 3 and session.history[0].end_reason == "crash"
    ctl2 = EpisodeController(RecordingPolicy(), session, EpisodeConfig(
        control_period=DT, reset_routine=False, reset_hold_s=0.0, family_name=FAMILY.name),
        reward=lambda task: reward_function(FAMILY, task))
    robot2 = Robot(ctl2)
    robot2.run_until(State.DONE)
    # the interrupted task 82 is not repeated; ids continue past the dataset's
    assert [(e, t) for e, t, _ in ctl2.returns] == [(5, 80), (6, 81), (7, 82)]


def test_estop_latches_until_cleared_and_refuses_a_restart(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=100)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    robot.tick()
    aside = ctl.trigger_estop()
    assert aside.command is not None and not np.any(aside.command)
    assert aside.ended.reason == "estop" and [i["state"] for i in aside.tasks] == ["estop"]
    assert ctl.state is State.ESTOP and ctl.session.history[-1].end_reason == "truncated"
    assert ctl.trigger_estop().ended is None  # latched already: nothing more
    outs = [robot.tick() for _ in range(5)]
    assert all(o.safe and o.schedule is None and o.transition is None for o in outs)
    ok, msg, _ = ctl.run_episodes(True)
    assert not ok and "e-stop" in msg
    assert ctl.clear_estop() and not ctl.clear_estop()
    robot.run_until(State.RUNNING)
    assert ctl.episode_id == 1


def test_operator_stop_halts_and_start_resumes(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=100)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    ok, _, aside = ctl.run_episodes(False)
    assert ok and ctl.state is State.HALTED and aside.ended.reason == "stopped"
    assert all(robot.tick().safe for _ in range(3))
    assert ctl.run_episodes(True)[0]
    robot.run_until(State.RUNNING)


def test_a_failing_policy_tick_gives_the_safe_command_and_breaks_the_chain(
        tmp_path: Path) -> None:
    policy = RecordingPolicy()
    ctl = _controller(tmp_path, policy, steps=100)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    robot.tick()
    policy.fail_next = True
    out = robot.tick()
    assert out.safe and not np.any(out.command) and ctl.faults["tick_error"] == 1
    (ev,) = [e for e in out.events if e.level is Level.ERROR]
    assert "inference blew up" in ev.message and ev.throttle_s > 0
    assert robot.tick().transition is None  # no transition from the failed tick
    assert robot.tick().transition is not None


def test_shutdown_closes_the_running_episode(tmp_path: Path) -> None:
    ctl = _controller(tmp_path, steps=100)
    robot = Robot(ctl)
    robot.run_until(State.RUNNING)
    aside = ctl.shutdown()
    assert aside.ended.reason == "shutdown" and aside.tasks[0]["state"] == "shutdown"
    state = json.loads((tmp_path / "session.json").read_text())
    assert state["running"] is None and state["completed"] == 1


def test_the_runtime_drives_the_point_robot_through_the_controller(
        tmp_path: Path, bundle_dir: Path) -> None:
    """The real PolicyRuntime behind the controller: the announcements carry its bundle, the
    transitions its belief, and the runtime refuses what the controller keeps out."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig

    rt = PolicyRuntime(bundle_dir, RuntimeConfig(), rng=np.random.default_rng(0))
    try:
        ctl = _controller(tmp_path, rt, tasks=(80,), steps=4, max_episodes=2)
        robot = Robot(ctl)
        robot.q = np.array([0.0, 0.0])
        robot.run_until(State.DONE)
    finally:
        rt.close()
    infos = [i for o in robot.outs for i in o.tasks]
    assert {i["model_sha"] for i in infos} == {rt.bundle.sha256}
    trs = _transitions(robot.outs)
    assert len(trs) == 8 and all(t.belief is not None for t in trs)
    assert trs[-1].belief[-1] >= 3  # the belief had taken the episodes' transitions


def test_after_publish_runs_the_deferred_belief_update(tmp_path: Path, bundle_dir: Path
                                                       ) -> None:
    """Act-first: the tick's result has the command but not yet the belief update; the
    controller's after_publish runs ``finish_tick``, so /pearl/belief and the next transition
    carry a belief that includes the newest transition, as the update-first order did."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig

    rt = PolicyRuntime(bundle_dir, RuntimeConfig(), rng=np.random.default_rng(0))
    try:
        assert rt.acts_first
        ctl = _controller(tmp_path, rt, tasks=(80,), steps=6, max_episodes=1)
        t, q = 100.0, np.array([0.1, -0.2])
        sizes = []
        for _ in range(40):
            t += DT
            out = ctl.tick(t, Observation(q.copy(), t, t))
            after = ctl.after_publish()
            if out.result is not None and out.result.deferred:
                assert after.result is not None and not after.result.deferred
                sizes.append((out.result.context_size, after.result.context_size))
            if out.acting:
                q = q + out.command
            if ctl.state is State.DONE:
                break
    finally:
        rt.close()
    # from the second step on, each deferred update adds the transition that just ended
    assert sizes and all(b == a + 1 for a, b in sizes[1:]), sizes


def test_each_observation_is_checked_once_per_tick(tmp_path: Path, bundle_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller needs the runtime's verdict before the tick (a refused state is kept
    out of the logged transition); the runtime's tick and end_episode take that verdict
    instead of judging the values again. Bad states still give the safe command and stay out
    of the belief."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig

    rt = PolicyRuntime(bundle_dir, RuntimeConfig(), rng=np.random.default_rng(0))
    checks = []
    judge = rt._values_fault
    monkeypatch.setattr(rt, "_values_fault", lambda obs: checks.append(1) or judge(obs))
    try:
        ctl = _controller(tmp_path, rt, tasks=(80,), steps=6, max_episodes=1)
        robot = Robot(ctl)
        robot.q = np.array([0.0, 0.0])
        robot.run_until(State.RUNNING)
        robot.tick()
        robot.tick()
        counted = []
        for obs in (None, np.array([np.nan, 0.0]), np.array([0.0]), None, None, None,
                    None, None, None):
            before, size = len(checks), rt.belief.count
            out = robot.tick(obs)
            counted.append((out.schedule.phase.value, len(checks) - before))
            if obs is not None:  # refused: the safe command, the belief unchanged
                assert out.safe and not np.any(out.command) and out.transition is None
                assert rt.belief.count == size
            if ctl.state is State.DONE:
                break
    finally:
        rt.close()
    # one check on every tick of the episode, its ending tick (end_episode) included; none
    # once the schedule is done
    assert [n for phase, n in counted] == [1 if phase == "running" else 0
                                           for phase, _ in counted], counted
    assert [phase for phase, _ in counted].count("running") >= 4
    assert ctl.state is State.DONE and ctl.returns
    assert ctl.faults["obs_nonfinite"] == 1 and ctl.faults["obs_shape"] == 1


def test_the_states_are_the_schedules_phases_plus_the_controllers_own() -> None:
    """/diagnostics ``state`` strings (tests/ros and the launch checks read them): the six
    phases of the schedule, reused, and the two only the controller has."""
    from pearl_robot.runtime.schedule import Phase

    assert [s.value for s in State] == ["idle", "resetting", "running", "paused", "stopped",
                                        "done", "estop", "halted"]
    assert all(State[p.name] == p.value and State(p.value).name == p.name for p in Phase)
    assert State.HALTED == "halted" and isinstance(State.ESTOP, str)
