"""The episode controller: one owner of the robot's episode life cycle, without ROS.

:class:`EpisodeController` drives the schedule (:class:`~pearl_robot.runtime.schedule.
OvernightSession`), the policy (:class:`~pearl_robot.runtime.policy.PolicyRuntime`), the task
reward (``runtime/task_reward.py``), the reset handshake, fault handling, the hot-swap canary
and transition packing, once per control period. It takes plain inputs (the time, the newest
observation with its stamp and arrival time, the reset routine's reply, the logger's health)
and returns plain outputs (:class:`TickOutput`: the command, the transition that just ended,
the /pearl/task announcements, log events). The policy node (``ros/policy_node.py``), the
ROS-free demo, the benches and the tests' :func:`drive_env` all call it, so the episode logic
exists once and is tested without rclpy (``tests/runtime/test_episodes.py``).

One tick, in the order a caller publishes::

    out = controller.tick(now, obs, reset_reply=..., reset_ready=...)
    publish out.tasks; send out.command          # the latency-critical message first
    publish out.transition.pack(layout), belief  # packed after the command has left
    rest = controller.after_publish()            # bookkeeping off the state -> command path
    publish rest.change; log rest.events; set the bundle parameter to rest.set_bundle

States (:class:`State`, what /diagnostics shows)::

    IDLE -> RESETTING -> RUNNING -> IDLE ... DONE          (the schedule's phases)
              |  timeout, silence, logger down  -> PAUSED -> ... STOPPED (faults in a row)
    any --e-stop--> ESTOP      any --run_episodes(false)--> HALTED
    IDLE stays IDLE while nothing receives the transitions (``logger_ready``)

Reset handshake with a reset routine: the controller announces the task with a new
``reset_id`` and asks for a reset (``TickOutput.request_reset``) until a reply names that
``reset_id``; the episode starts on the first observation that arrived after that reply.
Without one (a serial robot) it holds the safe command for ``reset_hold_s``. The schedule's
``reset_timeout_s`` bounds the wait either way.

A tick whose observation is stale, refused by the runtime (non-finite, out of range) or whose
action was not trusted breaks the chain of transitions: no transition carries a bad
observation, and ``step`` stays contiguous.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from pearl_robot.errors import ConfigError
from pearl_robot.robot.transition import Transition
from pearl_robot.runtime.bundle import BundleError, check_compatible, read_contract
from pearl_robot.runtime.canary import QualityCanary, provenance_check
from pearl_robot.runtime.change_detection import ChangeStatus
from pearl_robot.runtime.policy import (
    OBS_NONFINITE,
    OBS_SHAPE,
    ObsCheck,
    SwapStatus,
    TickResult,
    TickTimings,
)
from pearl_robot.runtime.schedule import OvernightSession, Phase, SessionCommand
from pearl_robot.runtime.task_reward import Reward, RewardFn
from pearl_robot.tasks.base import Task, TaskFamily
from pearl_robot.tasks.registry import make_family

State = Enum("State", [(p.name, p.value) for p in Phase]
             + [("ESTOP", "estop"), ("HALTED", "halted")],
             type=str, module=__name__, qualname="State")
State.__doc__ = """What the controller does (``/diagnostics`` ``state``): the schedule's
:class:`~pearl_robot.runtime.schedule.Phase` values, extended by the two only the controller
has, ``estop`` (the e-stop is latched) and ``halted`` (episodes stopped by the operator,
``run_episodes(False)``). A ``str`` so it compares equal to its value."""


class Level(IntEnum):
    """Severity of an :class:`Event` (the diagnostic levels' numbers)."""

    INFO = 0
    WARNING = 1
    ERROR = 2


@dataclass(frozen=True)
class EpisodeConfig:
    """How the controller runs episodes (the policy node fills it from its parameters)."""

    control_period: float
    """Control period, seconds (the contract's ``control_period``): reset requests are not
    sent more often than this."""
    stale_obs_s: float = 0.1
    """An observation older than this is not used for a transition (the runtime sends the
    safe command for it too, through its own ``max_obs_age``)."""
    reset_routine: bool = True
    """True: the robot offers a reset routine (the handshake of the module doc); False: hold
    the safe command for ``reset_hold_s`` instead."""
    reset_hold_s: float = 1.0
    """Without a reset routine: how long the safe command is held between episodes."""
    reset_resend_s: float = 1.0
    """An unanswered reset request is sent again after this long."""
    silence_fault_s: float = 1.0
    """No observation for this long during an episode or a reset is a fault: the episode ends
    and the schedule pauses (``fault_pause_s``) instead of logging a long run of safe
    commands."""
    autostart: bool = True
    """Run the schedule from the start; False: wait for ``run_episodes(True)``."""
    family_name: str = ""
    """Task family, for the /pearl/task announcements."""
    observations: str = "observation"
    """What the observations are called in messages (the node: ``/joint_states``)."""

    def __post_init__(self) -> None:
        if not self.control_period > 0:
            raise ConfigError(f"control_period must be > 0, got {self.control_period}")
        for name in ("stale_obs_s", "reset_hold_s", "reset_resend_s", "silence_fault_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


class Observation(NamedTuple):
    """The newest observation the caller has (physical units, contract order)."""

    values: np.ndarray
    """The observation vector; not copied where it is logged as ``next_obs``, so hand in a
    fresh array each time."""
    stamp: float
    """When it was measured (the message's header stamp): logged in the transition."""
    received: float
    """When it arrived, on the controller's clock: ``now - received`` is its age."""


class ResetReply(NamedTuple):
    """The reset routine's answer (a ``std_srvs/Trigger`` response)."""

    success: bool
    message: str
    """JSON naming the ``reset_id`` the robot applied."""

    def names(self, reset_id: int) -> bool:
        """The robot applied this reset (not an earlier one)."""
        try:
            applied = json.loads(self.message)
        except (TypeError, ValueError):
            return False
        return bool(self.success) and isinstance(applied, dict) and \
            applied.get("reset_id") == reset_id


class StepOutcome(NamedTuple):
    """A simulator's own verdict on the transition that ends at this observation (drivers of
    a MetaEnv pass it; a robot has none, and the task reward scores the transition)."""

    reward: float
    context_reward: float
    terminated: bool = False
    truncated: bool = False


class Event(NamedTuple):
    """Something to log."""

    level: Level
    message: str
    throttle_s: float = 0.0
    """Log at most once per this many seconds (0: always); only a failing tick is
    throttled (an error, once a second)."""


class EpisodeEnd(NamedTuple):
    """An episode that ended this call."""

    episode: int
    task: int
    reason: str
    """finished | fault | estop | stopped | shutdown"""
    steps: int
    ret: float
    """Sum of the task rewards of its transitions."""


class TickOutput(NamedTuple):
    """What one tick decided, in publishing order (module doc)."""

    tasks: tuple[dict[str, Any], ...]
    """/pearl/task announcements, before the command."""
    command: np.ndarray
    """Command to send now (physical units, contract order)."""
    safe: bool
    """``command`` is the safe command."""
    transition: Transition | None
    """The transition that ended at this observation (None: no step this tick)."""
    result: TickResult | None
    """The runtime's tick as the command left it (act-first: the belief not yet updated;
    :attr:`AfterTick.result` has the complete one); None when the policy did not run."""
    request_reset: bool
    """Call the reset routine now."""
    acting: bool
    """``command`` is the policy's action of an episode step (a simulator steps on it)."""
    schedule: SessionCommand | None
    """The schedule's decision this tick (None: it was not ticked, e.g. e-stop)."""
    ended: EpisodeEnd | None
    events: tuple[Event, ...]


class AfterTick(NamedTuple):
    """What :meth:`EpisodeController.after_publish` decided."""

    result: TickResult | None
    """The runtime's complete tick, belief update included (act-first: ``finish_tick``);
    what /pearl/belief publishes. None when the policy did not run."""

    change: ChangeStatus | None
    """The change detector's statistic (/pearl/change) when it ran this tick."""
    set_bundle: str | None
    """Put the ``bundle`` parameter to this path (a refused swap, a canary rollback)."""
    events: tuple[Event, ...]


class Aside(NamedTuple):
    """The result of an operator action between ticks (e-stop, run/stop, shutdown)."""

    tasks: tuple[dict[str, Any], ...]
    command: np.ndarray | None
    """Send this at once (None: nothing to send)."""
    ended: EpisodeEnd | None
    events: tuple[Event, ...]


class EpisodePolicy(Protocol):
    """What the controller needs of a policy: :class:`~pearl_robot.runtime.policy.
    PolicyRuntime`, or :class:`ScriptedPolicy` in tests and benches."""

    @property
    def safe_command(self) -> np.ndarray: ...
    @property
    def bundle(self) -> Any: ...
    @property
    def change_monitor(self) -> Any: ...
    @property
    def belief(self) -> Any: ...
    def inspect_observation(self, obs: Any) -> ObsCheck: ...
    def begin_episode(self, task: Any = None) -> Any: ...
    def tick(self, obs: Any, reward: float | None = None, obs_age: float | None = None
             ) -> TickResult: ...
    def finish_tick(self) -> TickResult | None: ...
    def end_episode(self, final_obs: np.ndarray | None = None, reward: float | None = None
                    ) -> Any: ...
    def reset_belief(self) -> None: ...
    def request_swap(self, path: str | Path) -> bool: ...
    def swap_status(self) -> SwapStatus: ...


class _Pending(NamedTuple):
    """The tick whose transition completes at the next tick."""

    obs: np.ndarray
    obs_stamp: float
    action: np.ndarray
    action_stamp: float
    belief: np.ndarray | None


@dataclass
class _Collect:
    """What the current call has produced so far."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    ended: EpisodeEnd | None = None
    request_reset: bool = False
    set_bundle: str | None = None


class EpisodeController:
    """Schedule + policy + reward + reset handshake + faults + canary on one period grid."""

    def __init__(self, policy: EpisodePolicy, session: OvernightSession,
                 config: EpisodeConfig, *, reward: Callable[[Task], RewardFn] | None = None,
                 canary: QualityCanary | None = None) -> None:
        """``reward(task)``: the task's reward of one transition (``runtime.task_reward.
        reward_function`` bound to the family); None when every step comes with a
        :class:`StepOutcome`. ``canary``: judges a hot-swapped model's first episodes."""
        self.policy = policy
        self.session = session
        self.config = config
        self.canary = canary
        self._reward_of = reward
        self.state = State.IDLE
        self.running = config.autostart
        """The operator lets the schedule run (``run_episodes``)."""
        self.estop = False
        self.log_ok = True
        """False while the logger cannot persist: the schedule pauses rather than collecting
        data nobody keeps."""
        self.waiting_for_logger = False
        """No episode starts: nothing receives the transitions (``tick``'s ``logger_ready``)."""
        self._logger_ready: Callable[[], bool] | None = None
        self.episode_id = -1
        self.task: Task | None = None
        self.episode_return = 0.0
        self.returns: list[tuple[int, int, float]] = []
        """(episode, task, return) of every ended episode."""
        self.schedule: SessionCommand | None = None
        """The schedule's newest decision."""
        self.schedule_message = ""
        self.safe_ticks = 0
        self.faults: dict[str, int] = {}
        self._reward_fn: RewardFn | None = None
        self._pending: _Pending | None = None
        self._result: TickResult | None = None
        self._obs_ok = False
        self._obs: Observation | None = None
        self._now = 0.0
        self._changes_seen = 0
        # reset handshake
        self.reset_id = 0
        self._reset_started = 0.0
        self._reset_done_at: float | None = None
        self._awaiting = False
        self._last_send = -math.inf
        self._reply: ResetReply | None = None
        self._ready: Callable[[], bool] | None = None
        # hot-swap and canary
        self._model = (policy.bundle.sha256, str(policy.bundle.path))
        self._trial = 0
        self._rollback_to: str | None = None
        self._rollback_validating = False
        self._swap_reported: str | None = None
        self._out = _Collect()

    # ------------------------------------------------------------------ the tick
    def tick(self, now: float, obs: Observation | None, *,
             reset_reply: ResetReply | None = None,
             reset_ready: Callable[[], bool] | None = None,
             logger_ready: Callable[[], bool] | None = None,
             outcome: StepOutcome | None = None, fault: str | None = None) -> TickOutput:
        """The one tick of a control period at time ``now``. ``reset_reply``: the reset
        routine answered since the last tick; ``reset_ready()``: a request can be sent now
        (asked only when one would be); ``logger_ready()``: something receives the
        transitions (asked only before a reset; None: nobody logs, never wait);
        ``outcome``: a simulator's verdict on the transition ending at ``obs``; ``fault``: a
        robot fault reported since the last tick (a silent observation stream is one too).
        Never raises: a failure gives the safe command."""
        self._out = _Collect()
        self._result, self._obs_ok, self._obs, self._now = None, False, obs, now
        self._reply, self._ready = reset_reply, reset_ready
        self._logger_ready = logger_ready
        self.schedule = None
        try:
            transition, command, safe, acting = self._tick(now, obs, outcome, fault)
        except Exception as exc:  # noqa: BLE001 - the control loop must never die
            transition, command, safe, acting = None, self._fail(exc), True, False
        out = self._out
        return TickOutput(tuple(out.tasks), command, safe, transition, self._result,
                          out.request_reset, acting, self.schedule, out.ended,
                          tuple(out.events))

    def tick_failed(self, exc: BaseException) -> Aside:
        """A tick failed while its caller published: count it, break the chain of
        transitions and answer with the safe command (and the throttled error to log)."""
        self._out = _Collect()
        command = self._fail(exc)
        return self._aside(command)

    def _fail(self, exc: BaseException) -> np.ndarray:
        self.faults["tick_error"] = self.faults.get("tick_error", 0) + 1
        self._pending = None
        self._result = None
        self._out.events.append(Event(
            Level.ERROR, f"tick failed ({type(exc).__name__}: {exc}); safe command", 1.0))
        return self._safe()

    def after_publish(self) -> AfterTick:
        """The tick's bookkeeping, once its command and transition are out: the change
        detector's statistic, fault counters, the pending transition, the hot-swap state.
        The runtime's deferred belief update runs here first (act-first: the command went
        out before the encoder ran; ``PolicyRuntime.finish_tick``), so the belief that the
        next transition carries and /pearl/belief shows includes this tick's transition."""
        out = self._out
        seen = len(out.events)
        change = None
        result = self._result
        try:
            if result is not None:
                result = self.policy.finish_tick() or result
                change = self._after_policy(result)
        except Exception as exc:  # noqa: BLE001 - as in tick
            self._fail(exc)
            result = None
        self._result = None
        self._check_swap()
        return AfterTick(result, change, out.set_bundle, tuple(out.events[seen:]))

    def _safe(self) -> np.ndarray:
        self.safe_ticks += 1
        return self.policy.safe_command

    def _tick(self, now: float, obs: Observation | None, outcome: StepOutcome | None,
              fault: str | None) -> tuple[Transition | None, np.ndarray, bool, bool]:
        if self.estop or not self.running or obs is None:
            return None, self._safe(), True, False
        age = now - obs.received
        session = self.session
        if age > self.config.silence_fault_s and session.phase in (Phase.RUNNING,
                                                                   Phase.RESETTING):
            fault = f"no {self.config.observations} for {self.config.silence_fault_s:.0f} s"
        reset_done = self.state is State.RESETTING and self._reset_finished(now, obs) and \
            not self.rollback_pending()
        was_running = session.phase == Phase.RUNNING
        cmd = session.tick(now, fault=fault, reset_done=reset_done, log_ok=self.log_ok,
                           logger_ready=self._check_logger(session.phase))
        self.schedule, self.schedule_message = cmd, cmd.message
        if was_running and cmd.phase != Phase.RUNNING:  # ended by a fault
            self.policy.end_episode()
            self._finish("fault", session.history[-1].steps)
            self._announce("fault")
        if cmd.phase == Phase.RESETTING:
            if self.state is not State.RESETTING or cmd.task is not self.task:
                assert cmd.task is not None
                self._begin_reset(cmd.task, now)
                self._reset_finished(now, obs)
            return None, self._safe(), True, False
        if cmd.phase == Phase.RUNNING:
            if self.state is not State.RUNNING:
                self._start_episode(cmd)
            return self._tick_running(now, age, obs, outcome)
        self.state = State(cmd.phase.value)
        return None, self._safe(), True, False

    def _check_logger(self, phase: Phase) -> bool:
        """Whether a logger receives the transitions, asked only when the schedule would
        start a reset; the wait and its end are reported once each."""
        if self._logger_ready is None or phase != Phase.IDLE:
            return True
        ready = bool(self._logger_ready())
        if ready == self.waiting_for_logger:
            self.waiting_for_logger = not ready
            self._out.events.append(
                Event(Level.INFO, "the episode logger receives the transitions: episodes start")
                if ready else
                Event(Level.WARNING, "waiting for the episode logger: nothing receives the "
                                     "transitions, so no episode starts (its steps would be "
                                     "lost)"))
        return ready

    def _tick_running(self, now: float, age: float, obs: Observation,
                      outcome: StepOutcome | None
                      ) -> tuple[Transition | None, np.ndarray, bool, bool]:
        """Score the transition that ends at this observation, then act."""
        values = obs.values
        # the runtime's check (finite, inside the contract's range) keeps a refused state out
        # of the logged transition and the step count too, not only out of the command; made
        # once: the policy's tick (or end_episode) takes the verdict instead of the values
        seen = self.policy.inspect_observation(values)
        self._obs_ok = obs_ok = age <= self.config.stale_obs_s and not seen.reason
        reward = None
        pending = self._pending
        transition = None
        ended = False
        if pending is not None and obs_ok:
            terminated = truncated = False
            if outcome is not None:
                r = Reward(float(outcome.reward), float(outcome.context_reward))
                terminated, truncated = bool(outcome.terminated), bool(outcome.truncated)
            else:
                if self._reward_fn is None:
                    raise ConfigError("no task reward and no step outcome: cannot score")
                r = self._reward_fn(pending.obs, pending.action, values)
            reward = r.context
            step = self.session.step
            last = self.session.is_last_step() or truncated
            self.episode_return += r.reward
            ended = self.session.step_done(terminated=terminated, truncated=last)
            transition = Transition(
                pending.obs, pending.action, r.reward, values, terminated,
                last and not terminated, self.episode_id, step,
                self.task.index if self.task else -1,
                (pending.obs_stamp, pending.action_stamp, obs.stamp), pending.belief)
        if ended:
            self.policy.end_episode(seen, reward)
            command = self._safe()
            self._finish("finished", self.session.history[-1].steps)
            self.state = State.IDLE
            return transition, command, True, False
        # ---- the policy's tick: the one place the runtime runs on the control path
        result = self.policy.tick(seen, reward, obs_age=age)
        self._result = result
        return transition, result.command, bool(result.safe), obs_ok and not result.safe

    def _after_policy(self, result: TickResult) -> ChangeStatus | None:
        change = None
        monitor = self.policy.change_monitor
        if monitor is not None:
            change = monitor.status()
            if change.changes != self._changes_seen:
                self._changes_seen = change.changes
                ev = monitor.events[-1] if monitor.events else None
                self._out.events.append(Event(
                    Level.WARNING, f"task change detected in episode {self.episode_id} at "
                    f"step {self.session.step}: belief rebuilt from the last "
                    f"{ev.age if ev else '?'} transitions ({change.changes} so far)"))
        if result.safe:
            self.safe_ticks += 1
        for reason in filter(None, result.reason.split(",")):
            self.faults[reason] = self.faults.get(reason, 0) + 1
        obs = self._obs
        if self._obs_ok and not result.safe and obs is not None:
            belief = (np.concatenate([result.belief_mean, result.belief_var,
                                      [float(result.context_size)]])
                      if np.size(result.belief_mean) else None)
            self._pending = _Pending(obs.values.copy(), obs.stamp, result.command, self._now,
                                     belief)
        else:
            # No trusted action: the chain of transitions restarts at the next good tick.
            self._pending = None
        return change

    # ------------------------------------------------------------------ resets
    def _begin_reset(self, task: Task, now: float) -> None:
        """A new reset for ``task``: announce it, then ask the robot to reset."""
        self.task = task
        self.episode_id = -1
        self.reset_id += 1
        self._announce("resetting")
        self._reset_started = now
        self._reset_done_at = None
        self._awaiting = False
        self._last_send = -math.inf
        self.state = State.RESETTING

    def _reset_finished(self, now: float, obs: Observation) -> bool:
        """Drive the reset routine; True once it finished (the robot named this reset and an
        observation taken after its reply arrived, or the hold time passed without one)."""
        cfg = self.config
        if not cfg.reset_routine:
            return now - self._reset_started >= cfg.reset_hold_s
        if self._reset_done_at is not None:
            return obs.received > self._reset_done_at
        reply, self._reply = self._reply, None
        if reply is not None:
            self._awaiting = False
            if reply.names(self.reset_id):
                self._reset_done_at = now
                return False
            # else the robot had not seen this reset's task yet: ask again
        stuck = self._awaiting and now - self._last_send > cfg.reset_resend_s
        if (not self._awaiting or stuck) and now - self._last_send >= cfg.control_period and \
                (self._ready is None or self._ready()):
            self._out.request_reset = True
            self._awaiting = True
            self._last_send = now
        return False

    # ------------------------------------------------------------------ episodes
    def _announce(self, state: str) -> None:
        """The /pearl/task JSON (the logger stores it with the episode)."""
        task = self.task
        info: dict[str, Any] = {
            "episode": self.episode_id, "task": task.index if task else None,
            "family": self.config.family_name, "params": task.params if task else {},
            "state": state, "reset_id": self.reset_id,
            "model_sha": self.policy.bundle.sha256}
        if self.canary is not None:
            info["canary"] = self.canary_info()
        self._out.tasks.append(info)

    def _start_episode(self, cmd: SessionCommand) -> None:
        assert cmd.task is not None
        start = self.policy.begin_episode(task=cmd.task.index)
        swapped = getattr(start, "swapped_to", None)
        if swapped:
            self._out.events.append(Event(Level.INFO, f"hot-swapped to bundle {swapped[:12]}"))
            if self.canary is not None and self.canary.swapped(*self._model, swapped):
                self._out.events.append(Event(
                    Level.INFO, f"canary: judging bundle {swapped[:12]} on its first "
                    f"{self.canary.config.episodes} episodes"))
        self._model = (self.policy.bundle.sha256, str(self.policy.bundle.path))
        self._trial = (self.session.cursor - 1) % self.session.config.episodes_per_task
        self.task = cmd.task
        self.episode_id = cmd.episode
        self._reward_fn = self._reward_of(cmd.task) if self._reward_of else None
        self.episode_return = 0.0
        self._pending = None
        self.state = State.RUNNING
        self._announce("running")

    def _finish(self, reason: str, steps: int) -> None:
        task = self.task.index if self.task else -1
        self.returns.append((self.episode_id, task, self.episode_return))
        self._out.ended = EpisodeEnd(self.episode_id, task, reason, steps, self.episode_return)
        self._out.events.append(Event(
            Level.INFO, f"episode {self.episode_id} (task {self.task.index if self.task else '-'}"
            f") {reason}: {steps} transitions, return {self.episode_return:.3f}"))
        self._pending = None
        if reason == "finished" and self.task is not None and self.canary is not None:
            self._judge(self.canary.record(self._model[0], self.task.index, self._trial,
                                           self.episode_return))

    def _abort(self, reason: str) -> None:
        """End a running episode early (e-stop, operator stop, shutdown)."""
        if self.state is State.RUNNING and self.session.phase == Phase.RUNNING:
            steps = self.session.step
            self.policy.end_episode()
            self.session.step_done(truncated=True)
            self._finish(reason, steps)
            self._announce(reason)
        self.state = State.ESTOP if self.estop else State.HALTED if not self.running \
            else State.IDLE
        self._awaiting = False

    def _aside(self, command: np.ndarray | None = None) -> Aside:
        out = self._out
        return Aside(tuple(out.tasks), command, out.ended, tuple(out.events))

    # ------------------------------------------------------------------ operator
    def trigger_estop(self) -> Aside:
        """Latch the e-stop: close the open episode as ``estop``, send the safe command. Only
        :meth:`clear_estop` releases it."""
        self._out = _Collect()
        if self.estop:
            return self._aside()
        self.estop = True
        self._out.events.append(Event(Level.ERROR, "e-stop: holding the safe command until "
                                      "/pearl/clear_estop is called"))
        self._abort("estop")
        return self._aside(self.policy.safe_command)

    def clear_estop(self) -> bool:
        """Release the e-stop; True when it was latched."""
        was, self.estop = self.estop, False
        return was

    def run_episodes(self, on: bool) -> tuple[bool, str, Aside]:
        """Start or stop the schedule (operator). Refused while the e-stop is latched."""
        self._out = _Collect()
        if on:
            if self.estop:
                return False, "e-stop is latched; call /pearl/clear_estop first", self._aside()
            self.running = True
            self.session.clear_stop()  # an operator looked at the robot
            return True, "episodes started", self._aside()
        self.running = False
        self._abort("stopped")
        return True, "episodes stopped; holding the safe command", self._aside()

    def shutdown(self) -> Aside:
        """Close a running episode as ``shutdown`` (in the session's state file too)."""
        self._out = _Collect()
        if self.state is State.RUNNING:
            self._abort("shutdown")
        return self._aside(self.policy.safe_command)

    def reset_belief(self) -> None:
        self.policy.reset_belief()

    def logger_health(self, ok: bool, message: str) -> tuple[Event, ...]:
        """The logger's health (False: it cannot persist; the schedule pauses)."""
        events: tuple[Event, ...] = ()
        if ok and not self.log_ok:
            events = (Event(Level.INFO, f"episode log persists again: {message}"),)
        elif not ok and self.log_ok:
            events = (Event(Level.ERROR, f"episode log cannot persist ({message}): "
                                         "episodes paused"),)
        self.log_ok = ok
        return events

    def set_max_episodes(self, episodes: int) -> None:
        """A new episode budget (0: never stop); a finished schedule goes on if it grew."""
        s = self.session
        s.config = dataclasses.replace(s.config, max_episodes=episodes or None)
        if s.phase == Phase.DONE and (not episodes or episodes > s.completed):
            s.phase = Phase.IDLE

    def finished(self) -> bool:
        """The schedule ran its episodes and no canary rollback is still swapping the old
        bundle back (a caller that exits then stops on the model it reports)."""
        return self.state is State.DONE and not self.rollback_pending()

    # ------------------------------------------------------------------ hot-swap
    def check_swap(self, path: str, override: bool = False) -> None:
        """The quick check of a hot-swap candidate (contract, hashes, interface, provenance);
        raises :class:`~pearl_robot.runtime.bundle.BundleError`, else starts the full
        validation off the control path (ConfigError if one is already running)."""
        running = self.policy.bundle.contract
        candidate = read_contract(path)
        check_compatible(running, candidate)
        prov = provenance_check(running.provenance, candidate.provenance,
                                self.canary.config if self.canary is not None else None)
        if not prov.ok and not override:
            raise BundleError(prov.message)
        if not self.policy.request_swap(path):
            raise ConfigError("a bundle validation is already running; retry in a moment")

    def _judge(self, verdict: Any) -> None:
        """The canary's verdict on a swap: log it; on rollback swap the old bundle back."""
        if verdict is None:
            return
        if not verdict.rolled_back:
            self._out.events.append(Event(Level.INFO, verdict.message()))
            return
        self._out.events.append(Event(Level.ERROR, verdict.message()))
        self.faults["canary_rollback"] = self.faults.get("canary_rollback", 0) + 1
        self._rollback_to = verdict.old_path
        self._request_rollback()

    def _request_rollback(self) -> None:
        """Swap the previous bundle back in (retried after each tick while a validation
        runs); the caller's bundle parameter follows, without starting another swap."""
        path = self._rollback_to
        if path is None or not self.policy.request_swap(path):
            return
        self._rollback_to = None
        self._rollback_validating = True
        if self.canary is not None:
            self.canary.expect_rollback_swap()
        self._out.set_bundle = path

    def rollback_pending(self) -> bool:
        """A canary rollback is requested and still validating: the next episode waits in
        its reset, so no further episode runs on the rejected model."""
        if self._rollback_to is not None:
            return True
        if self._rollback_validating and self.policy.swap_status().state == "validating":
            return True
        self._rollback_validating = False
        return False

    def _check_swap(self) -> None:
        if self._rollback_to is not None:
            self._request_rollback()
        status = self.policy.swap_status()
        if status.state != "failed" or self._swap_reported == status.path:
            return
        self._swap_reported = status.path
        running = self.policy.bundle
        self._out.events.append(Event(
            Level.ERROR, f"hot-swap to {status.path} refused: {status.message}; bundle "
            f"{running.sha256[:12]} stays"))
        self._out.set_bundle = str(running.path)

    # ------------------------------------------------------------------ status
    def canary_info(self) -> dict[str, Any]:
        """The canary's state for /pearl/task (hence the manifest) and /diagnostics."""
        if self.canary is None:
            return {}
        st = self.canary.status()
        info: dict[str, Any] = {"state": st.state, "judged": st.judged, "needed": st.needed}
        if st.last is not None:
            info["last"] = st.last.as_dict()
        return info

    def loop_health(self, obs_age: float | None) -> tuple[Level, str]:
        """The control loop's /diagnostics level and message, most urgent first: a latched
        e-stop, observations missing or silent for over a second, a refused hot-swap, a
        canary rollback; else the state."""
        obs = self.config.observations
        swap = self.policy.swap_status()
        if self.estop:
            level, message = Level.WARNING, ("e-stop latched: safe command until "
                                             "/pearl/clear_estop")
        elif obs_age is None or obs_age > 1.0:
            level, message = Level.ERROR, f"no {obs}" if obs_age is None else \
                f"{obs} silent for {obs_age:.1f} s: safe command"
        elif swap.state == "failed":
            level, message = Level.WARNING, f"hot-swap refused: {swap.message}"
        else:
            level, message = Level.INFO, self.state.value
        last = self.canary.last if self.canary is not None else None
        if last is not None and last.rolled_back and level is Level.INFO:
            level, message = Level.WARNING, last.message()
        return level, message

    def episode_values(self) -> dict[str, object]:
        """/diagnostics: where the schedule is."""
        return {"state": self.state.value, "episode": self.episode_id,
                "task": self.task.index if self.task else -1, "step": self.session.step,
                "episodes_done": self.session.completed, "schedule": self.schedule_message}

    def change_values(self) -> dict[str, object]:
        """/diagnostics: the change detector."""
        monitor = self.policy.change_monitor
        if monitor is None:
            return {"change_detection": "off"}
        st = monitor.status()
        return {"change_detection": monitor.config.on_change, "changes": st.changes,
                "change_surprise": st.surprise, "change_cusum": st.cusum,
                "change_threshold": st.threshold, "change_warm": st.warm}

    def model_values(self) -> dict[str, object]:
        """/diagnostics: the model, the swap, the canary and the fault counters."""
        swap = self.policy.swap_status()
        belief = self.policy.belief
        values: dict[str, object] = {
            "context_size": belief.count, **self.change_values(),
            "bundle_sha256": self.policy.bundle.sha256[:16], "swap": swap.state}
        ess = getattr(belief, "effective_sample_size", None)
        if ess is not None:  # a particle belief: how many particles still carry weight
            values["belief_ess"] = float(ess)
        if self.canary is not None:
            values["canary"] = self.canary.status().state
            last = self.canary.last
            if last is not None:
                values.update({"canary_decision": last.decision,
                               "canary_new_mean": last.new_mean,
                               "canary_old_mean": last.old_mean,
                               "canary_bundle": last.new_sha256[:16]})
        values.update({f"fault_{k}": v for k, v in sorted(self.faults.items())})
        return values


# ---------------------------------------------------------------------- building blocks


def family_from_contract(described: dict[str, Any], name: str = "") -> TaskFamily:
    """The family a bundle was trained on (``contract.task_family``), rebuilt with the same
    task list; ``name`` overrides the contract's."""
    name = name or str(described.get("name", ""))
    if not name:
        raise ConfigError("the bundle contract names no task family; set 'task_family'")
    kwargs = {k: described[k] for k in ("n_tasks", "n_eval", "seed", "horizon")
              if k in described}
    try:
        return make_family(name, **kwargs)
    except TypeError:
        return make_family(name)


def select_tasks(family: TaskFamily, selection: str | Sequence[int]) -> tuple[int, ...]:
    """``held-out`` | ``train`` | explicit indices -> task indices of ``family``."""
    if selection == "held-out":
        return tuple(family.eval_indices)
    if selection == "train":
        return tuple(family.train_indices)
    n = len(family.tasks)
    bad = [i for i in selection if not 0 <= int(i) < n]
    if bad:
        raise ConfigError(f"parameter 'tasks': indices {bad} are outside the family's "
                          f"{n} tasks")
    return tuple(int(i) for i in selection)


# ---------------------------------------------------------------------- simulated robots


class _NoBundle(NamedTuple):
    sha256: str = ""
    path: str = ""


class _NoBelief(NamedTuple):
    count: int = 0


class ScriptedPolicy:
    """A stand-in for :class:`~pearl_robot.runtime.policy.PolicyRuntime` that acts with a
    function (an oracle, a PD controller, noise): tests and benches drive the episode
    controller with it when no bundle is involved. No belief, no hot-swap."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray], action_dim: int, *,
                 belief: Callable[[], np.ndarray | None] | None = None) -> None:
        """``act(obs)``: the command in physical units; ``belief()``: what the transition
        logs as the belief (``concat(mean, var, [context_size])``), if anything."""
        self._act = act
        self._belief = belief
        self.safe_command = np.zeros(action_dim)
        self.bundle = _NoBundle()
        self.belief = _NoBelief()
        self.change_monitor = None
        self._episode = -1
        self._step = 0

    def check_observation(self, obs: Any, obs_age: Any = None) -> str:
        arr = np.asarray(obs, dtype=np.float64)
        if arr.ndim != 1:
            return OBS_SHAPE
        return "" if np.all(np.isfinite(arr)) else OBS_NONFINITE

    def inspect_observation(self, obs: Any) -> ObsCheck:
        """:meth:`check_observation`'s verdict, for ``tick`` (which acts on any state)."""
        return ObsCheck(obs, self.check_observation(obs), None)

    def begin_episode(self, task: Any = None) -> None:
        self._episode += 1
        self._step = 0

    def tick(self, obs: Any, reward: float | None = None, obs_age: float | None = None
             ) -> TickResult:
        """The scripted command for ``obs`` (or an :class:`ObsCheck`'s observation)."""
        obs = obs.obs if isinstance(obs, ObsCheck) else obs
        command = np.asarray(self._act(np.asarray(obs)), dtype=np.float64)
        b = self._belief() if self._belief is not None else None
        k = (np.size(b) - 1) // 2 if b is not None else 0
        mean = np.asarray(b[:k] if b is not None else (), dtype=np.float64)
        var = np.asarray(b[k:2 * k] if b is not None else (), dtype=np.float64)
        size = int(b[-1]) if b is not None else 0
        self._step += 1
        return TickResult(command, False, False, "", False, mean, mean, var, size,
                          self._episode, self._step - 1, TickTimings(0.0, 0.0, 0.0))

    def finish_tick(self) -> None:
        """Nothing is deferred: a scripted policy has no belief."""
        return None

    def end_episode(self, final_obs: np.ndarray | None = None, reward: float | None = None
                    ) -> None:
        return None

    def reset_belief(self) -> None:
        return None

    def request_swap(self, path: str | Path) -> bool:
        return False

    def swap_status(self) -> SwapStatus:
        return SwapStatus("idle", None, "", None)


class DriveResult(NamedTuple):
    """What :func:`run_env` did."""

    ticks: int
    episodes: list[Any]
    """The session's :class:`~pearl_robot.runtime.schedule.EpisodeRecord` history."""
    last: SessionCommand | None
    """The schedule's last decision."""
    transitions: int
    ends: list[EpisodeEnd]
    """Every episode that ended during the drive, with its return."""


def run_env(controller: EpisodeController, env: Any, *, writer: Any = None,
            max_ticks: int, start_time: float = 0.0,
            fault_at: Callable[[int], str | None] | None = None,
            reset_works: Callable[[int], bool] | None = None,
            stop: Callable[[SessionCommand], bool] | None = None,
            context_reward_key: str | None = None,
            reset_seed: Callable[[int], int] | None = None) -> DriveResult:
    """Drive a MetaEnv (the twin, a numpy family) with ``controller`` as the policy node
    drives a robot: one tick per control period on a simulated clock
    (``env.control_period``) with a fresh observation each, the env's ``set_task`` + ``reset``
    as the reset routine (its reply arrives at the next tick), the env stepped with each
    command the policy acts with (not with the safe command between episodes: the simulated
    robot waits), the env's reward
    and end flags as the step's :class:`StepOutcome`, and every transition written to
    ``writer`` (a :class:`~pearl_robot.datalog.writer.DatasetWriter`, optional) with the task
    message the datalog tests read (``episode``, ``index``, ``params``, ``family``).

    ``fault_at(tick)`` injects a robot fault, ``reset_works(tick)`` False makes the reset
    routine hang (to exercise timeouts), ``stop(cmd)`` ends the drive before the tick's
    transition is written (e.g. to simulate a crash mid-episode). ``context_reward_key``: the
    family's ``info`` entry that is the context reward (sparse point-robot), else the
    reward. ``reset_seed(cursor)``: the env reset's seed at schedule position ``cursor``
    (default: the cursor itself)."""
    seed_of = reset_seed or (lambda cursor: cursor)
    control_period = float(env.control_period)
    family = controller.config.family_name or getattr(env, "family", "")
    key = context_reward_key
    layout = writer.layout if writer is not None else None
    obs_values, _ = env.reset(seed=seed_of(controller.session.cursor))
    reply: ResetReply | None = None
    outcome: StepOutcome | None = None
    transitions = 0
    last: SessionCommand | None = None
    ends: list[EpisodeEnd] = []
    tick = 0
    for tick in range(max_ticks):
        now = start_time + tick * control_period
        out = controller.tick(now, Observation(obs_values, now, now), reset_reply=reply,
                              outcome=outcome, fault=fault_at(tick) if fault_at else None)
        controller.after_publish()
        reply, outcome = None, None
        last = out.schedule or last
        for info in out.tasks:
            if writer is not None and info["state"] == "running":
                writer.set_task({"episode": info["episode"], "index": info["task"],
                                 "params": dict(info["params"]), "family": family})
            elif writer is not None and info["state"] == "fault":
                writer.end_episode("fault")
        if out.schedule is not None and stop is not None and stop(out.schedule):
            break
        if out.transition is not None:
            if writer is not None:
                writer.write(out.transition.pack(layout))
            transitions += 1
        if out.ended is not None:
            ends.append(out.ended)
        if out.request_reset and (reset_works is None or reset_works(tick)):
            task = controller.task
            assert task is not None
            env.set_task(task)
            obs_values, _ = env.reset(seed=seed_of(controller.session.cursor))
            reply = ResetReply(True, json.dumps({"reset_id": controller.reset_id}))
        elif out.acting:
            res = env.step(out.command)
            obs_values = res.obs
            context = res.info[key] if key and key in res.info else res.reward
            outcome = StepOutcome(float(res.reward), float(context), bool(res.terminated),
                                  bool(res.truncated))
        if out.schedule is not None and out.schedule.phase in (Phase.DONE, Phase.STOPPED):
            break
    return DriveResult(tick + 1, list(controller.session.history), last, transitions, ends)


def drive_env(session: OvernightSession, env: Any,
              act: Callable[[np.ndarray, SessionCommand], np.ndarray], writer: Any, *,
              belief: Callable[[], np.ndarray | None] | None = None, **kw: Any
              ) -> DriveResult:
    """:func:`run_env` with a scripted policy: ``act(obs, cmd)`` gives the command in
    physical units (``cmd.task`` is the episode's task), ``belief()`` what each transition
    logs as the belief. The rest of ``kw`` goes to :func:`run_env`."""
    def act_now(obs: np.ndarray) -> np.ndarray:
        assert controller.schedule is not None
        return act(obs, controller.schedule)

    controller = EpisodeController(
        ScriptedPolicy(act_now, int(env.action_dim), belief=belief), session,
        EpisodeConfig(control_period=float(env.control_period),
                      family_name=str(getattr(env, "family", ""))))
    return run_env(controller, env, writer=writer, **kw)
