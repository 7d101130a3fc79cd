"""The parameters of each node of the adapt graph, as frozen dataclasses (no rclpy here).

One field = one ROS parameter; the field's docstring is the parameter's description
(``ros2 param describe``). Fields in a class's ``DYNAMIC`` set may change while the node runs
(``ros2 param set``); all others are read-only after start. ``__post_init__`` is the validation
for both the start-up values and every later change.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, TypeVar

from pearl_robot.errors import ConfigError

Z_MODES = ("episode", "step", "mean")
Z_SCHEDULES = {"episode": "episode", "step": "step_mean", "mean": "step_mean"}
"""Policy ``z_mode`` -> the runtime's z schedule."""

C = TypeVar("C")


def _positive(name: str, value: float) -> None:
    if not value > 0.0:
        raise ConfigError(f"parameter {name!r} must be > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0.0:
        raise ConfigError(f"parameter {name!r} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class PolicyNodeConfig:
    """The 20 Hz policy: bundle, belief, episode schedule, safety timing."""

    DYNAMIC: ClassVar[frozenset[str]] = frozenset({"bundle", "episodes", "swap_override"})

    bundle: str = ""
    """Model bundle directory (actor.onnx, encoder.onnx, contract.json, golden.npz). Setting it
    while running hot-swaps the model: the new bundle is validated off the control path and
    swapped at the next episode boundary; a bundle that fails validation is refused and the
    running model stays."""
    task_family: str = ""
    """Task family whose reward and tasks the episodes use; empty: the bundle contract's."""
    tasks: str = "held-out"
    """Task schedule, cycled: 'held-out' (the family's evaluation tasks), 'train', or task
    indices into the family's task list, comma-separated ('81,85,90')."""
    episodes_per_task: int = 1
    """Episodes run on one task before the schedule moves to the next."""
    episodes: int = 0
    """Episodes to run, then stop (hold the safe command); 0: run until stopped."""
    episode_steps: int = 0
    """Control ticks per episode; 0: the task family's horizon."""
    autostart: bool = True
    """Start the schedule as soon as the bundle is loaded and /joint_states arrives; otherwise
    wait for the ~/start_episodes service."""
    z_mode: str = "episode"
    """When z is drawn from the posterior: 'episode' (PEARL: once per episode), 'step' (every
    tick) or 'mean' (posterior mean, no sampling)."""
    exploration_episodes: int = -1
    """Episodes after a belief reset (a new task) whose z comes from the prior, so posterior
    sampling explores before it adapts; -1: the z_mode's default (0 for 'mean', else 1, as
    PEARL's one exploration trajectory). A particle model trained for sparse tasks with
    several exploration trajectories (its num_exp_traj_eval) wants that many."""
    deterministic: bool = True
    """Use the actor's deterministic output (the mean action); false samples the actor."""
    context_window: int = 0
    """Transitions kept in the online belief (bounded context); 0: the bundle's default."""
    seed: int = 0
    """Seed of the node's random generator (z samples, stochastic actions)."""
    change_detection: bool = False
    """Detect a task change within the stream from the belief's surprise and rebuild the
    belief from the transitions after it (``runtime/change_detection.py``); the statistic is
    on /pearl/change and /diagnostics."""
    change_false_alarms_per_hour: float = 0.5
    """Change detection: target false-alarm rate (sets the detector threshold)."""
    change_action: str = "rebuild"
    """Change detection: on a change 'rebuild' the belief from after the change point,
    'reset' it to the prior, or only 'flag' it."""
    tick_on_state: bool = True
    """Tick as soon as a fresh /joint_states arrives in the control period (command latency:
    one DDS hop plus inference); the timer ticks at the period's end when none came. False:
    tick only on the timer, at each period's end (obs age up to a period)."""
    stale_obs_s: float = 0.1
    """A /joint_states older than this at a tick gives the safe command (zero effort)."""
    obs_range_margin: float = 1.0
    """How far outside the bundle contract's observation range (joint and velocity limits) a
    state may lie before it is refused as impossible (a sensor glitch: safe command, kept out
    of the belief and the log, counted as fault_obs_range), as a multiple of each entry's
    span; 1.0 accepts [low - span, high + span]; negative: no range check."""
    reset_service: str = "/pearl/robot/reset"
    """std_srvs/Trigger service that resets the robot between episodes (the twin offers it);
    empty: hold the safe command for reset_hold_s and wait until the joints are still."""
    wait_for_logger: bool = True
    """Start an episode only while something subscribes to /pearl/transition (the logger):
    DDS gives a volatile topic's messages to nobody before a subscriber matches, so an episode
    started while the logger is still starting, or after it died, would lose its steps. False:
    run without a logger (a bench or a dry run whose data nobody keeps)."""
    reset_timeout_s: float = 5.0
    """A reset that has not finished after this long is retried; the third failure is a
    fault (the schedule pauses for fault_pause_s)."""
    fault_pause_s: float = 30.0
    """After a fault (reset failed, /joint_states silent) the schedule holds the safe command
    this long, then tries again; five faults in a row stop it until /pearl/run_episodes."""
    session_dir: str = ""
    """Where the schedule keeps its restart state (session.json): the dataset directory, so a
    restarted graph resumes the plan and the episode numbering; empty: not kept."""
    reset_hold_s: float = 1.0
    """Without a reset service: how long the safe command is held before the next episode."""
    diagnostics_period_s: float = 1.0
    """Period of the /diagnostics status (loop period, jitter, overruns, inference, obs age)."""
    exit_when_done: bool = False
    """Stop the node (exit code 0) once the schedule has run its 'episodes'; the launch file
    then ends the whole launch (launch argument exit_when_done:=true). Needs episodes > 0.
    False: hold the safe command until stopped, as a robot would."""
    canary_episodes: int = 3
    """Quality canary (pearl_robot.runtime.canary): after a hot-swap, the new model's first
    this-many episodes on tasks the old model ran are compared with the old model's recent
    returns there; 0 disables it."""
    canary_margin: float = 0.2
    """Canary: roll back when the new model is worse by more than this fraction of the old
    model's mean |return| on the same tasks (plus canary_margin_abs)."""
    canary_margin_abs: float = 0.0
    """Canary: allowed drop in return units on top of canary_margin."""
    swap_override: bool = False
    """Accept a hot-swap bundle whose provenance records a held-out score worse than the
    running bundle's by more than the canary margin (refused otherwise); the canary still
    judges it."""

    def __post_init__(self) -> None:
        if self.exit_when_done and not self.episodes:
            raise ConfigError("parameter 'exit_when_done' needs a fixed number of episodes "
                              "(episodes > 0); with episodes 0 the schedule never finishes")
        if self.z_mode not in Z_MODES:
            raise ConfigError(f"parameter 'z_mode' must be one of {Z_MODES}, got "
                              f"{self.z_mode!r}")
        if not math.isfinite(self.obs_range_margin):
            raise ConfigError(f"parameter 'obs_range_margin' must be a finite number (negative: "
                              f"no range check), got {self.obs_range_margin!r}")
        if self.exploration_episodes < -1:
            raise ConfigError(f"parameter 'exploration_episodes' must be >= 0 (or -1: the "
                              f"z_mode's default), got {self.exploration_episodes}")
        for name in ("episodes_per_task",):
            if getattr(self, name) < 1:
                raise ConfigError(f"parameter {name!r} must be >= 1, got {getattr(self, name)}")
        for name in ("episodes", "episode_steps", "context_window"):
            _non_negative(name, getattr(self, name))
        for name in ("stale_obs_s", "reset_timeout_s", "fault_pause_s",
                     "diagnostics_period_s"):
            _positive(name, getattr(self, name))
        _non_negative("reset_hold_s", self.reset_hold_s)
        _positive("change_false_alarms_per_hour", self.change_false_alarms_per_hour)
        if self.change_action not in ("rebuild", "reset", "flag"):
            raise ConfigError(f"parameter 'change_action' must be 'rebuild', 'reset' or "
                              f"'flag', got {self.change_action!r}")
        self.canary_config()  # raises ConfigError naming the bad value
        self.task_selection()  # raises ConfigError naming the bad entry

    def canary_config(self) -> Any:
        """The hot-swap canary's settings (a :class:`pearl_robot.runtime.canary.CanaryConfig`;
        imported here so this module stays light for the launch file)."""
        from pearl_robot.runtime.canary import CanaryConfig

        return CanaryConfig(episodes=self.canary_episodes, margin=self.canary_margin,
                            margin_abs=self.canary_margin_abs)

    def runtime_config(self) -> Any:
        """The policy runtime these parameters ask for (a
        :class:`pearl_robot.runtime.policy.RuntimeConfig`; imported here, as above)."""
        from pearl_robot.runtime.change_detection import ChangeDetectionConfig
        from pearl_robot.runtime.policy import RuntimeConfig

        return RuntimeConfig(
            z_schedule=Z_SCHEDULES[self.z_mode],  # type: ignore[arg-type]
            exploration_episodes=self.exploration_episodes if self.exploration_episodes >= 0
            else 0 if self.z_mode == "mean" else 1,
            stochastic_actions=not self.deterministic,
            context_window=self.context_window or None, max_obs_age=self.stale_obs_s,
            obs_range_margin=None if self.obs_range_margin < 0 else self.obs_range_margin,
            change_detection=ChangeDetectionConfig(
                enabled=self.change_detection,
                false_alarms_per_hour=self.change_false_alarms_per_hour,
                on_change=self.change_action))  # type: ignore[arg-type]

    def schedule_config(self, task_indices: tuple[int, ...], episode_steps: int) -> Any:
        """The episode schedule (a :class:`pearl_robot.runtime.schedule.ScheduleConfig`)."""
        from pearl_robot.runtime.schedule import ScheduleConfig

        return ScheduleConfig(
            task_indices=task_indices, episodes_per_task=self.episodes_per_task,
            episode_steps=episode_steps, max_episodes=self.episodes or None,
            reset_timeout_s=self.reset_timeout_s, fault_pause_s=self.fault_pause_s,
            seed=self.seed)

    def episode_config(self, control_period: float, family_name: str) -> Any:
        """The episode controller's settings (a
        :class:`pearl_robot.runtime.episodes.EpisodeConfig`)."""
        from pearl_robot.runtime.episodes import EpisodeConfig

        return EpisodeConfig(control_period=control_period, stale_obs_s=self.stale_obs_s,
                             reset_routine=bool(self.reset_service),
                             reset_hold_s=self.reset_hold_s, autostart=self.autostart,
                             family_name=family_name, observations="/joint_states")

    def task_selection(self) -> str | tuple[int, ...]:
        """'held-out', 'train', or the explicit task indices."""
        text = self.tasks.strip()
        if text in ("held-out", "train"):
            return text
        try:
            indices = tuple(int(t) for t in text.split(",") if t.strip())
        except ValueError as exc:
            raise ConfigError(f"parameter 'tasks' must be 'held-out', 'train' or "
                              f"comma-separated task indices, got {self.tasks!r}") from exc
        if not indices or min(indices) < 0:
            raise ConfigError(f"parameter 'tasks' must list task indices >= 0, got "
                              f"{self.tasks!r}")
        return indices


@dataclass(frozen=True)
class LoggerNodeConfig:
    """The episode logger: where and how durably transitions are written."""

    DYNAMIC: ClassVar[frozenset[str]] = frozenset()

    dataset_dir: str = "runs/data/adapt"
    """Dataset directory (MCAP episode files + manifest.jsonl); created if missing, resumed
    (episode numbering continues, unfinished files recovered) if it exists. The default lies
    under ``runs/`` (git-ignored, where every run output goes), never in the source tree."""
    robot_id: str = "robot"
    """Robot name recorded in the manifest, so datasets of several robots can be merged."""
    queue_size: int = 12000
    """Transitions buffered between the executor and the writer thread (10 min at 20 Hz);
    when full, new transitions are dropped and counted (the executor never blocks) and
    /diagnostics says so."""
    diagnostics_period_s: float = 1.0
    """Period of the /diagnostics status (written, queued, lost, disk space)."""

    def __post_init__(self) -> None:
        if not self.dataset_dir:
            raise ConfigError("parameter 'dataset_dir' must not be empty")
        if self.queue_size < 1:
            raise ConfigError(f"parameter 'queue_size' must be >= 1, got {self.queue_size}")
        _positive("diagnostics_period_s", self.diagnostics_period_s)


@dataclass(frozen=True)
class TwinNodeConfig:
    """The MuJoCo twin acting as the robot."""

    DYNAMIC: ClassVar[frozenset[str]] = frozenset()

    mjcf: str = ""
    """Robot model (MJCF); empty: the package's default twin in sim/."""
    publish_period: float = 0.05
    """Simulated seconds between /joint_states messages (the robot's sensor period)."""
    real_time_factor: float = 1.0
    """Simulated seconds per wall second; above 1 the twin publishes /clock and the graph runs
    on sim time (tests); 1 is a real-time robot."""
    command_timeout_s: float = 0.25
    """Simulated seconds without /pearl/command after which the twin applies zero effort (the
    firmware's watchdog)."""
    seed: int = 0
    """Seed of the twin's noise generator."""
    diagnostics_period_s: float = 1.0
    """Period of the /diagnostics status (sim time, real-time factor, commands)."""
    fault_reset_stall_every: int = 0
    """Fault injection for soak tests (``bench/bench_soak.py``); 0, the default: off. Every
    this-many-th reset the twin's reset routine stalls: it refuses every reset request for
    fault_reset_stall_s simulated seconds (what a stuck homing routine does), so the policy's
    reset times out and is retried."""
    fault_reset_stall_s: float = 0.0
    """Fault injection: how long (simulated seconds) a stalled reset routine refuses requests;
    longer than the policy's reset_timeout_s makes the reset time out."""

    def __post_init__(self) -> None:
        for name in ("publish_period", "real_time_factor", "command_timeout_s",
                     "diagnostics_period_s"):
            _positive(name, getattr(self, name))
        if self.fault_reset_stall_every < 0:
            raise ConfigError("parameter 'fault_reset_stall_every' must be >= 0, got "
                              f"{self.fault_reset_stall_every}")
        _non_negative("fault_reset_stall_s", self.fault_reset_stall_s)

    @property
    def publishes_clock(self) -> bool:
        return self.real_time_factor != 1.0


LINK_GIVE_UP_S = 20.0
"""How long a one-shot run (``exit_when_done``, ``adapt --exit-when-done``) waits for a serial
link that is down before it gives up: long enough for a USB adapter to re-enumerate after a
replug or a device reset (a few seconds) and for the bridge's reopen backoff (2 s at most);
short enough that an unattended run with a wrong port ends instead of looking hung."""


@dataclass(frozen=True)
class BridgeNodeConfig:
    """The serial bridge to the robot's microcontroller."""

    DYNAMIC: ClassVar[frozenset[str]] = frozenset()

    port: str = "/dev/ttyACM0"
    """Serial port or pyserial URL (/dev/ttyACM0, loop://, socket://host:port, a pty path)."""
    baudrate: int = 921_600
    """Baud rate (ignored by USB CDC devices and pseudo-terminals)."""
    arm_on_start: bool = True
    """Arm the device once the link is up, so the graph runs unattended; false: wait for the
    /pearl/robot/arm service."""
    rearm_after_reconnect: bool = False
    """Re-arm by itself after a reconnect or a device reset; off: stay disarmed until
    /pearl/robot/arm is called (a person checks the robot first)."""
    check_joints: bool = True
    """Refuse a device whose joint names differ from the robot model's (sim/ MJCF)."""
    diagnostics_period_s: float = 1.0
    """Period of the /diagnostics status (link state, frame and CRC errors, reconnects)."""
    give_up_after_s: float = 0.0
    """Exit (code 1, which ends a launch) once the link has not been ready for this long, or
    at once when the device is refused (FAILED). 0: never; the bridge reconnects for ever,
    which is what an overnight run wants. The graph sets it to LINK_GIVE_UP_S for one-shot
    runs (``exit_when_done``)."""

    def __post_init__(self) -> None:
        if not self.port:
            raise ConfigError("parameter 'port' must not be empty")
        if self.baudrate <= 0:
            raise ConfigError(f"parameter 'baudrate' must be > 0, got {self.baudrate}")
        _positive("diagnostics_period_s", self.diagnostics_period_s)
        if not (math.isfinite(self.give_up_after_s) and self.give_up_after_s >= 0):
            raise ConfigError(f"parameter 'give_up_after_s' must be >= 0 (0: never), got "
                              f"{self.give_up_after_s}")


NODE_CONFIGS: dict[str, type] = {
    "policy_node": PolicyNodeConfig,
    "logger_node": LoggerNodeConfig,
    "twin_node": TwinNodeConfig,
    "bridge_node": BridgeNodeConfig,
}
"""Executable name -> its config class (the graph and the YAML files use these names)."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (PEP 257 attribute docstrings), by field name.

    Read from the class source; where the source is not available (a zipped install) the
    descriptions fall back to the field name, which still lets the node start.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def to_ros_value(value: Any) -> Any:
    """Config value -> a value rclpy accepts (tuples become lists)."""
    if isinstance(value, tuple):
        return list(value)
    return value


def from_ros_value(template: Any, value: Any, name: str) -> Any:
    """A parameter value -> the field's Python type (ints given for float fields are fine)."""
    if isinstance(template, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"parameter {name!r} must be a bool, got {value!r}")
        return value
    if isinstance(template, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"parameter {name!r} must be a number, got {value!r}")
        return float(value)
    if isinstance(template, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"parameter {name!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(template, str):
        if not isinstance(value, str):
            raise ConfigError(f"parameter {name!r} must be a string, got {value!r}")
        return value
    if isinstance(template, tuple):
        return tuple(value)
    return value


def ros_type_name(template: Any) -> str:
    """Name of the ``rclpy.parameter.Parameter.Type`` member for a field's default."""
    if isinstance(template, bool):
        return "BOOL"
    if isinstance(template, int):
        return "INTEGER"
    if isinstance(template, float):
        return "DOUBLE"
    if isinstance(template, str):
        return "STRING"
    if isinstance(template, tuple):
        if template and isinstance(template[0], str):
            return "STRING_ARRAY"
        if template and isinstance(template[0], float):
            return "DOUBLE_ARRAY"
        return "INTEGER_ARRAY"
    raise TypeError(f"no ROS parameter type for {template!r}")


def config_to_parameters(config: Any) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of a config (what a YAML file or a launch Node gets)."""
    return {f.name: to_ros_value(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_mapping(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a parameter mapping; unknown names and wrong types raise ConfigError."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown parameter(s) for {cls.__name__}: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    defaults = cls()
    kwargs = {k: from_ros_value(getattr(defaults, k), v, k) for k, v in values.items()}
    return cls(**kwargs)
