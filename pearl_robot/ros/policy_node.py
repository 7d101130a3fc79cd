"""policy_node: the 20 Hz PEARL policy with online posterior updates and the episode manager.

A thin adapter over :class:`pearl_robot.runtime.policy.PolicyRuntime`: each tick of a timer on
the node clock (an rcl timer keeps absolute deadlines ``start + k * period``, so there is no
``sleep(dt)`` drift) it builds the observation from the newest ``/joint_states`` (joint order
of the bundle contract), scores the previous transition with the task's reward, calls
``runtime.tick`` once (belief update, z, actor, action safety) and publishes:

- ``/pearl/command``    the effort command (the safe command when the policy is not trusted:
                        stale or non-finite observation, e-stop, between episodes);
- ``/pearl/transition`` the finished transition (schema ``pearl_robot.datalog.schema``);
- ``/pearl/belief``     posterior mean, variance and context size;
- ``/pearl/change``     (with ``change_detection``) the change detector's surprise, CUSUM,
                        threshold and change count, every running tick;
- ``/pearl/task``       (latched) at each episode start and stop: task, episode id, model;
- ``/diagnostics``      loop period, jitter, late ticks, inference time, obs age, faults.

Episode manager (states ``idle`` -> ``resetting`` -> ``running`` -> ``resetting`` ...): the task
schedule cycles the configured tasks, ``episodes_per_task`` each; an episode lasts
``episode_steps`` ticks; between episodes the robot is reset through the robot's reset service
(retried on timeout) or, without one, held at the safe command for ``reset_hold_s``.

Services: ``/pearl/reset_belief`` (Trigger), ``/pearl/run_episodes`` (SetBool: start/stop the
schedule), ``/pearl/clear_estop`` (Trigger). A ``true`` on ``/pearl/estop`` latches the stop:
the safe command is sent until the clear service is called (a ``false`` on the topic does not
clear it). Setting the ``bundle`` parameter hot-swaps the model at the next episode boundary
after validation off the control path; a bad bundle is refused and the running one stays.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.errors import ConfigError
from pearl_robot.ros import graph, qos
from pearl_robot.ros.conversions import (
    ERROR,
    OK,
    WARN,
    ConversionError,
    JointStateReader,
    belief_msg,
    change_msg,
    command_msg,
    diagnostic_array,
    diagnostic_status,
    level_of,
    stamp_to_sec,
    transition_msg,
)
from pearl_robot.ros.loop_stats import LoopStats
from pearl_robot.ros.node_config import PolicyNodeConfig
from pearl_robot.ros.node_main import StopRequest, run_node
from pearl_robot.ros.params import DeclaredConfig
from pearl_robot.ros.task_reward import RewardFn, reward_function
from pearl_robot.runtime.bundle import (
    BundleError,
    RobotExpectation,
    check_compatible,
    read_contract,
)
from pearl_robot.runtime.canary import QualityCanary, provenance_check
from pearl_robot.runtime.change_detection import ChangeDetectionConfig
from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
from pearl_robot.runtime.schedule import (
    OvernightSession,
    Phase,
    ScheduleConfig,
    SessionCommand,
    SessionError,
)
from pearl_robot.tasks.base import Task, TaskFamily
from pearl_robot.tasks.registry import make_family

LOGGER_STATUS = ": episode log"
"""Suffix of the logger node's /diagnostics status name (``logger_node.py``)."""
SILENCE_FAULT_S = 1.0
"""No /joint_states for this long during an episode or a reset is a fault: the episode ends
and the schedule pauses (``fault_pause_s``) instead of logging a long run of safe commands."""
Z_SCHEDULES = {"episode": "episode", "step": "step_mean", "mean": "step_mean"}


class _Pending(NamedTuple):
    """The tick whose transition completes at the next tick."""

    obs: np.ndarray
    obs_stamp: float
    action: np.ndarray
    action_stamp: float
    belief: np.ndarray


def _family_from_contract(name: str, described: dict[str, Any]) -> TaskFamily:
    """The family the bundle was trained on, rebuilt with the same task list."""
    kwargs = {k: described[k] for k in ("n_tasks", "n_eval", "seed", "horizon")
              if k in described}
    try:
        return make_family(name, **kwargs)
    except TypeError:
        return make_family(name)


def _robot_expectation(bundle_dir: str) -> RobotExpectation | None:
    """This package's robot (the MJCF in sim/) when the bundle was trained for a robot: its
    contract carries a ``robot`` description. Then the bundle (and every hot-swapped one) must
    match the robot's joint names and order, limits, control period and command interface.
    Bundles of abstract families (point-robot) have no robot and are not checked."""
    try:
        raw = json.loads((Path(bundle_dir) / "contract.json").read_text())
    except (OSError, ValueError):
        return None  # the bundle loader reports the problem with the right error
    if not isinstance(raw, dict) or "robot" not in raw:
        return None
    from pearl_robot.robot.description import load_robot_spec

    return RobotExpectation.from_robot_spec(load_robot_spec())


class PolicyNode(Node):
    """The policy, the belief and the episode schedule on one control-period grid."""

    def __init__(self, node_name: str = "policy_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = DeclaredConfig(self, PolicyNodeConfig, on_change=self._on_params)
        cfg: PolicyNodeConfig = self.params.value
        if not cfg.bundle:
            raise ConfigError("no model bundle: set the policy_node 'bundle' parameter "
                              "(launch argument bundle:=DIR)")
        self.rng = np.random.default_rng(cfg.seed)
        self._tick_on_state = cfg.tick_on_state
        self.runtime = PolicyRuntime(cfg.bundle, self._runtime_config(cfg), rng=self.rng,
                                     robot=_robot_expectation(cfg.bundle))
        contract = self.runtime.bundle.contract
        self.contract = contract
        self.period = contract.control_period
        self.reader = JointStateReader.from_obs_names(contract.obs_names)
        self.layout = TransitionLayout(contract.obs_dim, contract.action_dim,
                                       contract.latent_dim)
        family_info = dict(contract.task_family)
        family_name = cfg.task_family or str(family_info.get("name", ""))
        if not family_name:
            raise ConfigError("the bundle contract names no task family; set 'task_family'")
        self.family = _family_from_contract(family_name, family_info)
        self.episode_steps = cfg.episode_steps or int(
            family_info.get("horizon") or getattr(self.family, "horizon", 0) or 0)
        if self.episode_steps < 1:
            raise ConfigError(f"family {family_name!r} has no horizon; set 'episode_steps'")
        self._session_tmp: str | None = None
        self.session = self._make_session(cfg)
        self.canary = QualityCanary(cfg.canary_config())
        """Hot-swap quality canary: judges a new model's first episodes, rolls back."""
        self._model = (self.runtime.bundle.sha256, str(self.runtime.bundle.path))
        self._trial = 0
        self._rollback_to: str | None = None
        self._rollback_validating = False

        # state
        self.state = "idle"
        """What the node does: idle, resetting, running, paused, stopped, done, estop,
        halted (episodes stopped by the operator)."""
        self.running = cfg.autostart
        self.estop = False
        self.episode_id = -1
        self.task: Task | None = None
        self.reward_fn: RewardFn | None = None
        self.episode_return = 0.0
        self.returns: list[tuple[int, int, float]] = []  # (episode, task, return)
        self._pending: _Pending | None = None
        self._obs: np.ndarray | None = None
        self._obs_stamp = 0.0
        self._obs_received: float | None = None
        self._obs_errors = 0
        self._reset_id = 0
        self._reset_future: Future | None = None
        self._reset_started = 0.0
        self._reset_done_at: float | None = None
        self._last_send = -math.inf
        self._swap_reported: str | None = None
        self.session_message = ""
        self.log_ok = True
        """False while the logger reports ERROR (logging cannot persist): the schedule pauses
        rather than collecting data nobody keeps."""
        self.published_transitions = 0
        self.commands_sent = 0
        self.timer_at = -math.inf
        self.safe_ticks = 0
        self.faults: dict[str, int] = {}
        self.stats = LoopStats(self.period)
        self._tick_t0 = time.perf_counter()

        # graph
        stream = qos.stream_publisher(self.period)
        self.command_pub = self.create_publisher(Float64MultiArray, graph.COMMAND, stream)
        self.transition_pub = self.create_publisher(Float64MultiArray, graph.TRANSITION,
                                                    qos.transitions())
        self.belief_pub = self.create_publisher(Float64MultiArray, graph.BELIEF, qos.status())
        self.change_pub = self.create_publisher(Float64MultiArray, graph.CHANGE, qos.status())
        self._changes_seen = 0
        self.task_pub = self.create_publisher(String, graph.TASK, qos.latched())
        self.estop_pub = self.create_publisher(Bool, graph.ESTOP, qos.latched())
        self.diag_pub = self.create_publisher(DiagnosticArray, graph.DIAGNOSTICS, qos.status())
        self.create_subscription(JointState, graph.JOINT_STATES, self._on_joint_state,
                                 qos.stream_subscription())
        self.create_subscription(Bool, graph.ESTOP, self._on_estop, qos.latched())
        self.create_subscription(DiagnosticArray, graph.DIAGNOSTICS, self._on_diagnostics,
                                 qos.status())
        self.create_service(Trigger, "/pearl/reset_belief", self._srv_reset_belief)
        self.create_service(SetBool, "/pearl/run_episodes", self._srv_run_episodes)
        self.create_service(Trigger, "/pearl/clear_estop", self._srv_clear_estop)
        self.reset_client = (self.create_client(Trigger, cfg.reset_service)
                             if cfg.reset_service else None)
        # The period grid starts now; the timer fires at every period's end.
        self.stats.start(self._now())
        self.timer = self.create_timer(self.period, self._on_timer)
        self.diag_timer = self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        idx = list(self.session.config.task_indices)
        self.get_logger().info(
            f"bundle {self.runtime.bundle.sha256[:12]} ({family_name}, latent "
            f"{contract.latent_dim}), {1 / self.period:.0f} Hz, {self.episode_steps} steps per "
            f"episode, tasks {idx[:6]}{'...' if len(idx) > 6 else ''} x"
            f"{cfg.episodes_per_task}; next episode id {self.session.next_episode}"
            f"{f' (resumed, {self.session.completed} done)' if self.session.completed else ''}")

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def _runtime_config(cfg: PolicyNodeConfig) -> RuntimeConfig:
        return RuntimeConfig(z_schedule=Z_SCHEDULES[cfg.z_mode],  # type: ignore[arg-type]
                             exploration_episodes=0 if cfg.z_mode == "mean" else 1,
                             stochastic_actions=not cfg.deterministic,
                             context_window=cfg.context_window or None,
                             max_obs_age=cfg.stale_obs_s,
                             change_detection=ChangeDetectionConfig(
                                 enabled=cfg.change_detection,
                                 false_alarms_per_hour=cfg.change_false_alarms_per_hour,
                                 on_change=cfg.change_action))  # type: ignore[arg-type]

    def _task_indices(self, cfg: PolicyNodeConfig) -> tuple[int, ...]:
        sel = cfg.task_selection()
        if sel == "held-out":
            return tuple(self.family.eval_indices)
        if sel == "train":
            return tuple(self.family.train_indices)
        n = len(self.family.tasks)
        bad = [i for i in sel if i >= n]
        if bad:
            raise ConfigError(f"parameter 'tasks': indices {bad} are outside the family's "
                              f"{n} tasks")
        return tuple(sel)

    def _schedule_config(self, cfg: PolicyNodeConfig) -> ScheduleConfig:
        return ScheduleConfig(
            task_indices=self._task_indices(cfg), episodes_per_task=cfg.episodes_per_task,
            episode_steps=self.episode_steps, max_episodes=cfg.episodes or None,
            reset_timeout_s=cfg.reset_timeout_s, fault_pause_s=cfg.fault_pause_s,
            seed=cfg.seed)

    def _make_session(self, cfg: PolicyNodeConfig) -> OvernightSession:
        """The restart-safe episode schedule; its state file lives with the dataset, so a
        restarted graph resumes the plan and continues the episode numbering."""
        state_dir = cfg.session_dir
        if not state_dir:
            self._session_tmp = tempfile.mkdtemp(prefix="pearl-session-")
            state_dir = self._session_tmp
        try:
            return OvernightSession(self._schedule_config(cfg), self.family.tasks, state_dir)
        except SessionError as exc:
            raise ConfigError(str(exc)) from exc

    def _on_params(self, old: PolicyNodeConfig, new: PolicyNodeConfig) -> None:
        """Validate a parameter change; a new bundle is checked here (contract, hashes,
        interface) and validated in full off the control path by the runtime."""
        if new.bundle != old.bundle:
            try:
                candidate = read_contract(new.bundle)
                check_compatible(self.runtime.bundle.contract, candidate)
                prov = provenance_check(self.runtime.bundle.contract.provenance,
                                        candidate.provenance)
                if not prov.ok and not new.swap_override:
                    raise BundleError(prov.message)
            except BundleError as exc:
                self.get_logger().error(f"hot-swap refused: {exc}")
                raise
            if not self.runtime.request_swap(new.bundle):
                raise ConfigError("a bundle validation is already running; retry in a moment")
            self.get_logger().info(f"validating bundle {new.bundle} for a hot-swap")
        if new.episodes != old.episodes:
            self.session.config = dataclasses.replace(self.session.config,
                                                      max_episodes=new.episodes or None)
            if self.session.phase == Phase.DONE and (
                    not new.episodes or new.episodes > self.session.completed):
                self.session.phase = Phase.IDLE  # more episodes asked for: go on

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self._obs = self.reader.read(msg)
        except ConversionError as exc:
            self._obs_errors += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)
            return
        now = self._now()
        self._obs_received = now
        self._obs_stamp = stamp_to_sec(msg.header.stamp)
        if self._tick_on_state:
            index = self.stats.period_of(now)
            if self.stats.due(index):
                self._tick(now, index)

    def _on_timer(self) -> None:
        """End of a control period: tick now if no fresh state came during it."""
        now = self._now()
        self.timer_at = now
        index = self.stats.period_ended_at(now)
        if self.stats.due(index):
            self._tick(now, index)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(LOGGER_STATUS):
                ok = level_of(status) < ERROR
                if ok and not self.log_ok:
                    self.get_logger().info(f"episode log persists again: {status.message}")
                elif not ok and self.log_ok:
                    self.get_logger().error(f"episode log cannot persist ({status.message}): "
                                            "episodes paused")
                self.log_ok = ok

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estop:
            self.estop = True
            self.get_logger().error("e-stop: holding the safe command until "
                                    "/pearl/clear_estop is called")
            self._abort_episode("estop")
            self._send(self.runtime.safe_command)

    # ------------------------------------------------------------------ services
    def _srv_reset_belief(self, request: Trigger.Request, response: Trigger.Response
                          ) -> Trigger.Response:
        self.runtime.reset_belief()
        response.success, response.message = True, "belief reset to the prior"
        return response

    def _srv_run_episodes(self, request: SetBool.Request, response: SetBool.Response
                          ) -> SetBool.Response:
        if request.data:
            if self.estop:
                response.success = False
                response.message = "e-stop is latched; call /pearl/clear_estop first"
                return response
            self.running = True
            self.session.clear_stop()  # an operator looked at the robot
            response.message = "episodes started"
        else:
            self.running = False
            self._abort_episode("stopped")
            response.message = "episodes stopped; holding the safe command"
        response.success = True
        return response

    def _srv_clear_estop(self, request: Trigger.Request, response: Trigger.Response
                         ) -> Trigger.Response:
        was = self.estop
        self.estop = False
        self.estop_pub.publish(Bool(data=False))
        response.success = True
        response.message = "e-stop cleared" if was else "e-stop was not latched"
        if was:
            self.get_logger().warning("e-stop cleared")
        return response

    # ------------------------------------------------------------------ episodes
    def _publish_task(self, state: str) -> None:
        if not self.context.ok():
            return
        task = self.task
        info = {"episode": self.episode_id, "task": task.index if task else None,
                "family": self.family.name, "params": task.params if task else {},
                "state": state, "reset_id": self._reset_id,
                "model_sha": self.runtime.bundle.sha256, "canary": self._canary_info()}
        self.task_pub.publish(String(data=json.dumps(info, sort_keys=True)))

    def _begin_reset(self, task: Task) -> None:
        """A new reset for ``task``: announce it, then ask the robot to reset."""
        self.task = task
        self.episode_id = -1
        self._reset_id += 1
        self._publish_task("resetting")
        self._reset_started = self._now()
        self._reset_done_at = None
        self._reset_future = None
        self._last_send = -math.inf
        self.state = "resetting"

    def _reset_done(self, now: float) -> bool:
        """Drive the reset routine; True once it finished (the robot reports this reset and
        a state taken after it arrived, or the hold time passed without a reset service)."""
        cfg = self.params.value
        if self.reset_client is None:
            return now - self._reset_started >= cfg.reset_hold_s
        if self._reset_done_at is not None:
            return self._obs_received is not None and self._obs_received > self._reset_done_at
        fut = self._reset_future
        if fut is not None and fut.done():
            result = fut.result()
            try:
                applied = json.loads(result.message) if result is not None else {}
            except ValueError:
                applied = {}
            if result is not None and result.success and isinstance(applied, dict) and \
                    applied.get("reset_id") == self._reset_id:
                self._reset_done_at = now
                return False
            self._reset_future = None  # the robot had not seen this reset's task yet
        stuck = fut is not None and now - self._last_send > 1.0
        if (self._reset_future is None or stuck) and now - self._last_send >= self.period \
                and self.reset_client.service_is_ready():
            self._reset_future = self.reset_client.call_async(Trigger.Request())
            self._last_send = now
        return False

    def _start_episode(self, cmd: SessionCommand) -> None:
        assert cmd.task is not None
        start = self.runtime.begin_episode(task=cmd.task.index)
        if start.swapped_to:
            self.get_logger().info(f"hot-swapped to bundle {start.swapped_to[:12]}")
            if self.canary.swapped(*self._model, start.swapped_to):
                self.get_logger().info(f"canary: judging bundle {start.swapped_to[:12]} on "
                                       f"its first {self.canary.config.episodes} episodes")
        self._model = (self.runtime.bundle.sha256, str(self.runtime.bundle.path))
        self._trial = (self.session.cursor - 1) % self.session.config.episodes_per_task
        self.task = cmd.task
        self.episode_id = cmd.episode
        self.reward_fn = reward_function(self.family, cmd.task)
        self.episode_return = 0.0
        self._pending = None
        self.state = "running"
        self._publish_task("running")

    def _finish_episode(self, reason: str, steps: int) -> None:
        self.returns.append((self.episode_id, self.task.index if self.task else -1,
                             self.episode_return))
        self.get_logger().info(
            f"episode {self.episode_id} (task {self.task.index if self.task else '-'}) "
            f"{reason}: {steps} transitions, return {self.episode_return:.3f}")
        self._pending = None
        if reason == "finished" and self.task is not None:
            self._judge(self.canary.record(self._model[0], self.task.index, self._trial,
                                           self.episode_return))

    def _judge(self, verdict: Any) -> None:
        """The canary's verdict on a swap: log it; on rollback swap the old bundle back."""
        if verdict is None:
            return
        if not verdict.rolled_back:
            self.get_logger().info(verdict.message())
            return
        self.get_logger().error(verdict.message())
        self.faults["canary_rollback"] = self.faults.get("canary_rollback", 0) + 1
        self._rollback_to = verdict.old_path
        self._request_rollback()

    def _request_rollback(self) -> None:
        """Swap the previous bundle back in (retried from _check_swap while a validation
        runs); the bundle parameter follows, without starting another swap."""
        path = self._rollback_to
        if path is None or not self.runtime.request_swap(path):
            return
        self._rollback_to = None
        self._rollback_validating = True
        self.canary.expect_rollback_swap()
        self.params.value = dataclasses.replace(self.params.value, bundle=path)
        self.set_parameters([Parameter("bundle", value=path)])

    def _abort_episode(self, reason: str) -> None:
        """End a running episode early (e-stop, operator stop, shutdown)."""
        if self.state == "running" and self.session.phase == Phase.RUNNING:
            steps = self.session.step
            self.runtime.end_episode()
            self.session.step_done(truncated=True)
            self._finish_episode(reason, steps)
            self._publish_task(reason)
        self.state = "estop" if self.estop else "halted" if not self.running else "idle"
        self._reset_future = None

    # ------------------------------------------------------------------ the tick
    def _send(self, command: np.ndarray) -> None:
        self.command_pub.publish(command_msg(command))
        self.commands_sent += 1
        self.stats.command_sent(time.perf_counter() - self._tick_t0)

    def _publish_safe(self) -> None:
        self._send(self.runtime.safe_command)
        self.safe_ticks += 1

    def _tick(self, now: float, index: int) -> None:
        """The one tick of control period ``index``."""
        t0 = self._tick_t0 = time.perf_counter()
        self.stats.tick(now, index)
        age = None if self._obs_received is None else now - self._obs_received
        try:
            self._tick_state(now, age)
        except Exception as exc:  # noqa: BLE001 - the control loop must never die
            self.faults["tick_error"] = self.faults.get("tick_error", 0) + 1
            self._pending = None
            self.get_logger().error(f"tick failed ({type(exc).__name__}: {exc}); safe command",
                                    throttle_duration_sec=1.0)
            self._publish_safe()
        finally:
            self.stats.tick_finished(time.perf_counter() - t0, age)
        self._check_swap()

    def _tick_state(self, now: float, age: float | None) -> None:
        if self.estop or not self.running or self._obs is None:
            self._publish_safe()
            return
        fault = None
        if (age is None or age > SILENCE_FAULT_S) and \
                self.session.phase in (Phase.RUNNING, Phase.RESETTING):
            fault = f"no /joint_states for {SILENCE_FAULT_S:.0f} s"
        reset_done = self.state == "resetting" and self._reset_done(now) and \
            not self._rollback_pending()
        was_running = self.session.phase == Phase.RUNNING
        cmd = self.session.tick(now, fault=fault, reset_done=reset_done, log_ok=self.log_ok)
        self.session_message = cmd.message
        if was_running and cmd.phase != Phase.RUNNING:  # ended by a fault
            self.runtime.end_episode()
            self._finish_episode("fault", self.session.history[-1].steps)
            self._publish_task("fault")
        if cmd.phase == Phase.RESETTING:
            if self.state != "resetting" or cmd.task is not self.task:
                self._begin_reset(cmd.task)  # type: ignore[arg-type]
                self._reset_done(now)
            self._publish_safe()
            return
        if cmd.phase == Phase.RUNNING:
            if self.state != "running":
                self._start_episode(cmd)
            self._tick_running(now, age)
            return
        self.state = cmd.phase.value
        self._publish_safe()

    def _tick_running(self, now: float, age: float | None) -> None:
        """Score the transition that ends at this state, act (command out first: it is the
        latency-critical message), then publish the transition and the belief."""
        obs = self._obs
        # the runtime's check (finite, inside the contract's range) keeps a refused state out
        # of the logged transition and the step count too, not only out of the command
        obs_ok = (obs is not None and age is not None and age <= self.params.value.stale_obs_s
                  and not self.runtime.check_observation(obs))
        reward = None
        pending = self._pending
        transition: Callable[[], np.ndarray] | None
        ended = False
        if pending is not None and obs_ok:
            assert obs is not None and self.reward_fn is not None
            r = self.reward_fn(pending.obs, pending.action, obs)
            reward = r.context
            step = self.session.step
            last = self.session.is_last_step()
            self.episode_return += r.reward
            ended = self.session.step_done(truncated=last)
            stamps = (pending.obs_stamp, pending.action_stamp, self._obs_stamp)
            episode, task = self.episode_id, self.task.index if self.task else -1

            def transition() -> np.ndarray:  # packed after the command has left
                return self.layout.pack(
                    pending.obs, pending.action, r.reward, obs, terminated=False,
                    truncated=last, episode=episode, step=step, task=task, stamps=stamps,
                    belief=pending.belief if self.layout.belief_dim else None)
        else:
            transition = None
        if ended:
            self.runtime.end_episode(obs, reward)
            self._publish_safe()
            self._publish_transition(transition)
            self._finish_episode("finished", self.session.history[-1].steps)
            self.state = "idle"
            return
        result = self.runtime.tick(obs if obs is not None else np.full(
            self.contract.obs_dim, np.nan), reward, obs_age=age if age is not None else math.inf)
        self._send(result.command)
        self._publish_transition(transition)
        self.belief_pub.publish(belief_msg(result.belief_mean, result.belief_var,
                                           result.context_size))
        monitor = self.runtime.change_monitor
        if monitor is not None:
            st = monitor.status()
            self.change_pub.publish(change_msg(st))
            if st.changes != self._changes_seen:
                self._changes_seen = st.changes
                ev = monitor.events[-1] if monitor.events else None
                self.get_logger().warning(
                    f"task change detected in episode {self.episode_id} at step "
                    f"{self.session.step}: belief rebuilt from the last "
                    f"{ev.age if ev else '?'} transitions ({st.changes} so far)")
        if result.safe:
            self.safe_ticks += 1
        for reason in filter(None, result.reason.split(",")):
            self.faults[reason] = self.faults.get(reason, 0) + 1
        if obs_ok and not result.safe:
            assert obs is not None
            belief = np.concatenate([result.belief_mean, result.belief_var,
                                     [float(result.context_size)]])
            self._pending = _Pending(obs.copy(), self._obs_stamp, result.command, now, belief)
        else:
            # No trusted action: the chain of transitions restarts at the next good tick.
            self._pending = None

    def _publish_transition(self, pack: Callable[[], np.ndarray] | None) -> None:
        if pack is None:
            return
        self.transition_pub.publish(transition_msg(self.layout, pack()))
        self.published_transitions += 1

    def _rollback_pending(self) -> bool:
        """A canary rollback is requested and still validating: the next episode waits in
        its reset, so no further episode runs on the rejected model."""
        if self._rollback_to is not None:
            return True
        if self._rollback_validating and self.runtime.swap_status().state == "validating":
            return True
        self._rollback_validating = False
        return False

    # ------------------------------------------------------------------ hot-swap, diagnostics
    def _canary_info(self) -> dict[str, Any]:
        """The canary's state for /pearl/task (hence the manifest) and /diagnostics."""
        st = self.canary.status()
        info: dict[str, Any] = {"state": st.state, "judged": st.judged, "needed": st.needed}
        if st.last is not None:
            info["last"] = st.last.as_dict()
        return info

    def _check_swap(self) -> None:
        if self._rollback_to is not None:
            self._request_rollback()
        status = self.runtime.swap_status()
        if status.state != "failed" or self._swap_reported == status.path:
            return
        self._swap_reported = status.path
        running = self.runtime.bundle
        self.get_logger().error(f"hot-swap to {status.path} refused: {status.message}; "
                                f"bundle {running.sha256[:12]} stays")
        # Put the parameter back to the bundle that runs (config first, so the set is no swap).
        current = str(running.path)
        self.params.value = dataclasses.replace(self.params.value, bundle=current)
        self.set_parameters([Parameter("bundle", value=current)])

    def _publish_diagnostics(self) -> None:
        s = self.stats.summary()
        swap = self.runtime.swap_status()
        now = self._now()
        age = None if self._obs_received is None else now - self._obs_received
        if self.estop:
            level, message = WARN, "e-stop latched: safe command until /pearl/clear_estop"
        elif age is None or age > 1.0:
            level, message = ERROR, "no /joint_states" if age is None else \
                f"/joint_states silent for {age:.1f} s: safe command"
        elif swap.state == "failed":
            level, message = WARN, f"hot-swap refused: {swap.message}"
        else:
            level, message = OK, self.state
        values = {
            "state": self.state, "episode": self.episode_id,
            "task": self.task.index if self.task else -1, "step": self.session.step,
            "episodes_done": self.session.completed, "schedule": self.session_message,
            "period_mean_ms": s.period_mean * 1e3, "jitter_p99_ms": s.jitter_p99 * 1e3,
            "jitter_max_ms": s.jitter_max * 1e3, "ticks": s.ticks, "late_ticks": s.late,
            "tick_work_p50_ms": s.work_p50 * 1e3, "tick_work_max_ms": s.work_max * 1e3,
            "tick_to_command_p50_ms": s.command_p50 * 1e3,
            "obs_age_p50_ms": s.obs_age_p50 * 1e3, "obs_age_max_ms": s.obs_age_max * 1e3,
            "safe_ticks": self.safe_ticks, "obs_errors": self._obs_errors,
            "transitions_published": self.published_transitions,
            "context_size": self.runtime.belief.count,
            **self._change_values(),
            "bundle_sha256": self.runtime.bundle.sha256[:16], "swap": swap.state,
            "canary": self.canary.status().state,
        }
        last = self.canary.last
        if last is not None:
            values.update({"canary_decision": last.decision,
                           "canary_new_mean": last.new_mean, "canary_old_mean": last.old_mean,
                           "canary_bundle": last.new_sha256[:16]})
            if last.rolled_back and level == OK:
                level, message = WARN, last.message()
        values.update({f"fault_{k}": v for k, v in sorted(self.faults.items())})
        status = diagnostic_status(f"{self.get_name()}: control loop", "pearl_policy", level,
                                   message, values)
        self.diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def _change_values(self) -> dict[str, object]:
        monitor = self.runtime.change_monitor
        if monitor is None:
            return {"change_detection": "off"}
        st = monitor.status()
        return {"change_detection": monitor.config.on_change, "changes": st.changes,
                "change_surprise": st.surprise, "change_cusum": st.cusum,
                "change_threshold": st.threshold, "change_warm": st.warm}

    def destroy_node(self) -> None:
        """Stop: send the safe command, announce the stop, release the runtime. Safe on a
        node whose constructor failed (rclpy destroys tracked nodes at shutdown)."""
        runtime = getattr(self, "runtime", None)
        try:
            if runtime is not None and getattr(self, "state", "") == "running":
                self._abort_episode("shutdown")  # closes it in the session state file too
            if runtime is not None and hasattr(self, "command_pub") and self.context.ok():
                self._send(runtime.safe_command)
        finally:
            if runtime is not None:
                runtime.close()
            if getattr(self, "_session_tmp", None) is not None:
                shutil.rmtree(self._session_tmp, ignore_errors=True)
                self._session_tmp = None
            super().destroy_node()


def _finished(node: Node) -> bool:
    """``exit_when_done``: the schedule ran its episodes (the last transition went out a tick
    before the schedule reported done, so the logger has it) and no canary rollback is still
    swapping the previous bundle back (the node stops on the model it reports)."""
    return isinstance(node, PolicyNode) and node.params.value.exit_when_done and \
        node.state == "done" and not node._rollback_pending()


def main(args: list[str] | None = None, stop: StopRequest | None = None) -> int:
    return run_node(PolicyNode, args, stop_when=_finished, stop=stop)
