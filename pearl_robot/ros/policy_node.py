"""policy_node: the 20 Hz PEARL policy and its episode schedule, as a ROS 2 adapter.

What the parameters decide is built by ``runtime/deployment.py``; the episode life cycle
(schedule, reset handshake, task reward, transition packing, faults, canary, e-stop) is
:class:`pearl_robot.runtime.episodes.EpisodeController`. This node declares the parameters,
converts messages, calls the controller once per control period and publishes:

- ``/pearl/command``    the effort command (the safe command when the policy is not trusted);
- ``/pearl/transition`` the finished transition (schema ``pearl_robot.datalog.schema``);
- ``/pearl/belief``     posterior mean, variance and context size;
- ``/pearl/change``     (with ``change_detection``) the change detector's statistic;
- ``/pearl/task``       (latched) at each reset, episode start and early end;
- ``/diagnostics``      loop period, jitter, late ticks, inference time, obs age, faults.

Ticks sit on an absolute period grid (``LoopStats``): the first fresh ``/joint_states`` of a
period ticks inside its callback, else a timer ticks at the period's end with the newest state.
Services: ``/pearl/reset_belief``, ``/pearl/run_episodes`` (SetBool), ``/pearl/clear_estop``.
Setting the ``bundle`` parameter hot-swaps the model at the next episode boundary.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from pearl_robot.datalog.dataset import NextEpisodeIds
from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.ros import graph, qos
from pearl_robot.ros.conversions import (
    ERROR,
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
from pearl_robot.ros.event_log import log_events
from pearl_robot.ros.loop_stats import LoopStats
from pearl_robot.ros.node_config import PolicyNodeConfig
from pearl_robot.ros.node_main import StopRequest, run_node
from pearl_robot.ros.params import DeclaredConfig
from pearl_robot.runtime.bundle import BundleError
from pearl_robot.runtime.deployment import Deployment, deploy
from pearl_robot.runtime.episodes import Event, Observation, ResetReply

LOGGER_STATUS = ": episode log"
"""Suffix of the logger node's /diagnostics status name (``logger_node.py``)."""


class PolicyNode(Node):
    """Parameters, messages and publishing around one :class:`EpisodeController`."""

    def __init__(self, node_name: str = "policy_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = DeclaredConfig(self, PolicyNodeConfig, on_change=self._on_params)
        cfg: PolicyNodeConfig = self.params.value
        self.deployment = deployed = deploy(cfg, NextEpisodeIds())
        self.runtime, self.controller = deployed.runtime, deployed.controller
        contract = self.runtime.bundle.contract
        self.control_period = deployed.control_period
        self.reader = JointStateReader.from_obs_names(contract.obs_names)
        self.layout = TransitionLayout(contract.obs_dim, contract.action_dim,
                                       contract.latent_dim)
        self._obs: Observation | None = None
        self._obs_errors = 0
        self._reset_future: Future | None = None
        self.published_transitions = 0
        self.commands_sent = 0
        self.timer_at = -float("inf")
        self.stats = LoopStats(self.control_period)
        self._tick_t0 = time.perf_counter()
        self._create_endpoints(cfg)
        self.stats.start(self._now())  # the period grid starts now
        self.timer = self.create_timer(self.control_period, self._on_timer)
        self.diag_timer = self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(deployed.summary())

    def _create_endpoints(self, cfg: PolicyNodeConfig) -> None:
        """Publishers, subscriptions, services and the reset client (QoS in ``qos.py``)."""
        stream = qos.stream_publisher(self.control_period)
        self.command_pub = self.create_publisher(Float64MultiArray, graph.COMMAND, stream)
        self.transition_pub = self.create_publisher(Float64MultiArray, graph.TRANSITION,
                                                    qos.transitions())
        self.belief_pub = self.create_publisher(Float64MultiArray, graph.BELIEF, qos.status())
        self.change_pub = self.create_publisher(Float64MultiArray, graph.CHANGE, qos.status())
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

    def _on_params(self, old: PolicyNodeConfig, new: PolicyNodeConfig) -> None:
        """Check a new bundle (validated in full off the control path); a new budget."""
        if new.bundle != old.bundle:
            try:
                self.controller.check_swap(new.bundle, new.swap_override)
            except BundleError as exc:
                self.get_logger().error(f"hot-swap refused: {exc}")
                raise
            self.get_logger().info(f"validating bundle {new.bundle} for a hot-swap")
        if new.episodes != old.episodes:
            self.controller.set_max_episodes(new.episodes)

    @property
    def _obs_received(self) -> float | None:
        """When the newest state arrived (the lock-step tests wait on it)."""
        return None if self._obs is None else self._obs.received

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            values = self.reader.read(msg)
        except ConversionError as exc:
            self._obs_errors += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)
            return
        now = self._now()
        self._obs = Observation(values, stamp_to_sec(msg.header.stamp), now)
        if self.params.value.tick_on_state:
            index = self.stats.period_of(now)
            if self.stats.due(index):
                self._tick(now, index)

    def _on_timer(self) -> None:
        """End of a control period: tick now if no fresh state came during it."""
        now = self.timer_at = self._now()
        index = self.stats.period_ended_at(now)
        if self.stats.due(index):
            self._tick(now, index)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(LOGGER_STATUS):
                self._log(self.controller.logger_health(level_of(status) < ERROR,
                                                        status.message))

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self._publish_aside(self.controller.trigger_estop())

    def _srv_reset_belief(self, request: Trigger.Request, response: Trigger.Response
                          ) -> Trigger.Response:
        self.controller.reset_belief()
        response.success, response.message = True, "belief reset to the prior"
        return response

    def _srv_run_episodes(self, request: SetBool.Request, response: SetBool.Response
                          ) -> SetBool.Response:
        response.success, response.message, aside = self.controller.run_episodes(request.data)
        self._publish_aside(aside)
        return response

    def _srv_clear_estop(self, request: Trigger.Request, response: Trigger.Response
                         ) -> Trigger.Response:
        was = self.controller.clear_estop()
        self.estop_pub.publish(Bool(data=False))
        response.success = True
        response.message = "e-stop cleared" if was else "e-stop was not latched"
        if was:
            self.get_logger().warning("e-stop cleared")
        return response

    # ------------------------------------------------------------------ the tick
    def _tick(self, now: float, index: int) -> None:
        """The one tick of control period ``index``: controller in, messages out."""
        t0 = self._tick_t0 = time.perf_counter()
        self.stats.tick(now, index)
        age = None if self._obs is None else now - self._obs.received
        ctl = self.controller
        try:
            out = ctl.tick(now, self._obs, reset_reply=self._reset_reply(),
                           reset_ready=self.reset_client.service_is_ready
                           if self.reset_client else None,
                           logger_ready=self._logger_listening
                           if self.params.value.wait_for_logger else None)
            self._publish_tasks(out.tasks)
            self._send(out.command)  # the latency-critical message first
            if out.transition is not None:
                self.transition_pub.publish(transition_msg(self.layout,
                                                           out.transition.pack(self.layout)))
                self.published_transitions += 1
            if out.request_reset and self.reset_client is not None:
                self._reset_future = self.reset_client.call_async(Trigger.Request())
            self._log(out.events)
            after = ctl.after_publish()  # the belief update runs here, after the command
            if after.result is not None:
                r = after.result
                self.belief_pub.publish(belief_msg(r.belief_mean, r.belief_var,
                                                   r.context_size))
            if after.change is not None:
                self.change_pub.publish(change_msg(after.change))
            self._log(after.events)
            if after.set_bundle is not None:
                self._set_bundle(after.set_bundle)
        except Exception as exc:  # noqa: BLE001 - the control loop must never die
            self._publish_aside(ctl.tick_failed(exc))
        finally:
            self.stats.tick_finished(time.perf_counter() - t0, age)

    def _logger_listening(self) -> bool:
        return self.transition_pub.get_subscription_count() > 0

    def _reset_reply(self) -> ResetReply | None:
        fut = self._reset_future
        if fut is None or not fut.done():
            return None
        self._reset_future = None
        res = fut.result()
        return ResetReply(False, "") if res is None else ResetReply(res.success, res.message)

    def _send(self, command: np.ndarray) -> None:
        self.command_pub.publish(command_msg(command))
        self.commands_sent += 1
        self.stats.command_sent(time.perf_counter() - self._tick_t0)

    def _publish_tasks(self, tasks: tuple[dict[str, Any], ...]) -> None:
        if tasks and self.context.ok():
            for info in tasks:
                self.task_pub.publish(String(data=json.dumps(info, sort_keys=True)))

    def _publish_aside(self, aside: Any) -> None:
        self._log(aside.events)
        self._publish_tasks(aside.tasks)
        if aside.command is not None:
            self._send(aside.command)

    def _log(self, events: tuple[Event, ...]) -> None:
        log_events(self.get_logger(), events)

    def _set_bundle(self, path: str) -> None:
        """Make the ``bundle`` parameter name ``path`` (config first, so it swaps nothing)."""
        self.params.value = dataclasses.replace(self.params.value, bundle=path)
        self.set_parameters([Parameter("bundle", value=path)])

    def _publish_diagnostics(self) -> None:
        ctl = self.controller
        age = None if self._obs is None else self._now() - self._obs.received
        level, message = ctl.loop_health(age)
        values = {
            **ctl.episode_values(), **self.stats.summary().diagnostic_values(),
            "safe_ticks": ctl.safe_ticks, "obs_errors": self._obs_errors,
            "transitions_published": self.published_transitions, **ctl.model_values()}
        status = diagnostic_status(f"{self.get_name()}: control loop", "pearl_policy",
                                   int(level), message, values)
        self.diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def destroy_node(self) -> None:
        """Stop: close a running episode as ``shutdown``, send the safe command, release the
        runtime. Safe on a node whose constructor failed (rclpy destroys tracked nodes)."""
        deployed: Deployment | None = getattr(self, "deployment", None)
        try:
            if deployed is not None:
                aside = deployed.controller.shutdown()  # closes it in the session file too
                self._log(aside.events)
                if hasattr(self, "command_pub") and self.context.ok():
                    self._publish_tasks(aside.tasks)
                    self._send(aside.command)
        finally:
            if deployed is not None:
                deployed.close()
            super().destroy_node()


def _finished(node: Node) -> bool:
    """``exit_when_done``: the schedule ran its episodes (the last transition went out a tick
    before the schedule reported done, so the logger has it) and no canary rollback is still
    swapping the previous bundle back (the node stops on the model it reports)."""
    return isinstance(node, PolicyNode) and node.params.value.exit_when_done and \
        node.controller.finished()


def main(args: list[str] | None = None, stop: StopRequest | None = None) -> int:
    return run_node(PolicyNode, args, stop_when=_finished, stop=stop)
