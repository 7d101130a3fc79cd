"""Overnight collection: an unattended episode schedule that survives restarts.

:class:`OvernightSession` is a tick-driven state machine with no ROS and no I/O besides its own
small state file. Its one driver is the episode controller (``runtime/episodes.py``): every
control tick it calls :meth:`OvernightSession.tick` with what it knows (faults, whether the
reset routine finished, whether the logger still persists data) and does what the returned
:class:`SessionCommand` says: run the reset routine, run the policy for one step, or hold the
robot's safe command.

::

    IDLE --plan--> RESETTING --reset_done--> RUNNING --steps/terminated--> IDLE ... DONE
                      |  timeout (retries)       | fault
                      v                          v
                   PAUSED (fault_pause_s) <------+      too many faults in a row -> STOPPED

Restarts: the session's cursor (how far through the task schedule it got) and its episode
counter live in ``session.json`` next to the episode log, written atomically when an episode
starts. A new session on the same directory resumes at the next planned task, and its next
episode id is the larger of its own counter and the dataset's next free id, so numbering
continues and no episode is ever written twice under one id. An episode interrupted by the
crash is not repeated (its data is recovered by the logger); the schedule moves on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pearl_robot.errors import ConfigError, PearlRobotError
from pearl_robot.tasks.base import Task

STATE_FILE = "session.json"
STATE_VERSION = 1


class SessionError(PearlRobotError):
    """The session state file is unreadable or belongs to a different schedule."""


@dataclass(frozen=True)
class ScheduleConfig:
    """What to collect overnight and how to behave when things go wrong."""

    task_indices: tuple[int, ...]
    """Tasks (indices into the family's task list) visited by the schedule."""
    order: str = "cycle"
    """cycle: in the given order, round after round; shuffle: a new seeded permutation per
    round (every task once per round either way)."""
    episodes_per_task: int = 1
    """Consecutive episodes on the same task (PEARL adapts over several episodes of a task)."""
    episode_steps: int = 200
    """Control steps per episode (truncation), 10 s at 20 Hz."""
    max_episodes: int | None = None
    """Stop after this many episodes in total, counted across restarts; None: run until
    stopped."""
    reset_timeout_s: float = 20.0
    """The reset routine (move home, settle) must finish within this; else it is retried."""
    reset_retries: int = 2
    """Retries of a timed-out reset before it counts as a fault."""
    fault_pause_s: float = 30.0
    """Hold the safe command this long after a fault before trying again."""
    max_consecutive_faults: int = 5
    """After this many faults without a good episode in between, stop and wait for a person
    (:meth:`OvernightSession.clear_stop`)."""
    seed: int = 0
    """Seed of the shuffled order."""

    def __post_init__(self) -> None:
        if not self.task_indices:
            raise ConfigError("task_indices must name at least one task")
        if self.order not in ("cycle", "shuffle"):
            raise ConfigError(f"order must be 'cycle' or 'shuffle', got {self.order!r}")
        for name in ("episodes_per_task", "episode_steps", "max_consecutive_faults"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reset_retries < 0:
            raise ConfigError(f"reset_retries must be >= 0, got {self.reset_retries}")
        if not self.reset_timeout_s > 0 or not self.fault_pause_s >= 0:
            raise ConfigError("reset_timeout_s must be > 0 and fault_pause_s >= 0")
        if self.max_episodes is not None and self.max_episodes < 0:
            raise ConfigError(f"max_episodes must be >= 0, got {self.max_episodes}")

    def fingerprint(self) -> dict[str, Any]:
        """The fields that define the plan (a resumed session must have the same)."""
        return {"task_indices": list(self.task_indices), "order": self.order,
                "episodes_per_task": self.episodes_per_task, "seed": self.seed}


def planned_task(config: ScheduleConfig, position: int) -> int:
    """Task index of the ``position``-th episode of the schedule (a pure function, so a
    restarted session lands on the same plan)."""
    n = len(config.task_indices)
    slot = position // config.episodes_per_task
    rnd, k = divmod(slot, n)
    if config.order == "cycle":
        return config.task_indices[k]
    perm = np.random.default_rng([config.seed, rnd]).permutation(n)
    return config.task_indices[int(perm[k])]


def describe_plan(config: ScheduleConfig, completed: int, shown: int = 6) -> str:
    """What is left of the schedule, for a start-up line: the episode budget and the tasks it
    still reaches, in the order they come. A budget shorter than a round covers only some
    tasks, and the last of them perhaps for fewer episodes than ``episodes_per_task``; printing
    the whole task list, or the plan's count per task, would claim what will not run."""
    ept = config.episodes_per_task
    if config.max_episodes is None:
        end, head = completed + len(config.task_indices) * ept, "until stopped"
    else:
        end = min(config.max_episodes, completed + len(config.task_indices) * ept)
        left = max(0, config.max_episodes - completed)
        head = f"{left} of {config.max_episodes} episodes left"
    runs: dict[int, int] = {}  # task -> episodes of it the budget still reaches, in order
    for pos in range(completed, end):
        task = planned_task(config, pos)
        runs[task] = runs.get(task, 0) + 1
    if not runs:
        return f"{head}, no task left"
    tasks = list(runs)
    more = "..." if len(tasks) > shown else ""
    counts = set(runs.values())
    if len(counts) == 1:
        return f"{head}, tasks {tasks[:shown]}{more} x{counts.pop()}"
    return f"{head}, tasks [{', '.join(f'{t} x{runs[t]}' for t in tasks[:shown])}{more}]"


class Phase(str, Enum):
    IDLE = "idle"
    RESETTING = "resetting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    DONE = "done"


class SessionCommand(NamedTuple):
    """What to do this tick."""

    phase: Phase
    episode: int
    """Episode id to log under (-1 outside an episode)."""
    task: Task | None
    """Task of the episode being reset for or run."""
    step: int
    """Step to run (RUNNING) — pack it into the transition."""
    hold_safe: bool
    """True: send the safe command (paused, stopped, done, resetting without a routine)."""
    message: str
    """Human-readable state for /diagnostics."""


class EpisodeRecord(NamedTuple):
    """How one episode of the session ended."""

    episode: int
    task_index: int
    steps: int
    end_reason: str
    """truncated | terminated | fault | crash (found at restart; ``steps`` is then -1)"""


class OvernightSession:
    """The schedule's state machine; see the module docstring."""

    def __init__(self, config: ScheduleConfig, tasks: Sequence[Task], state_dir: Path | str,
                 *, first_free_episode: Callable[[], int] | None = None) -> None:
        """``tasks``: the family's task list; ``state_dir``: the dataset directory (the state
        file lives there); ``first_free_episode``: the logger's next free id (the policy node
        passes :func:`pearl_robot.datalog.dataset.next_episode_id` of the dataset; default:
        the state file alone numbers the episodes)."""
        self.config = config
        self._tasks = list(tasks)
        for i in config.task_indices:
            if not 0 <= i < len(self._tasks):
                raise ConfigError(f"task index {i} is outside the family's {len(self._tasks)} "
                                  "tasks")
        self._dir = Path(state_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        if first_free_episode is None:
            def first_free_episode() -> int:
                return 0

        self._first_free = first_free_episode
        state = self._load_state()
        self.cursor: int = int(state.get("cursor", 0))
        """Schedule position of the next episode to start."""
        self.completed: int = int(state.get("completed", 0))
        """Episodes ended (any reason) across restarts."""
        self.next_episode: int = max(int(state.get("next_episode", 0)), first_free_episode())
        self.restarts: int = int(state.get("restarts", -1)) + 1
        self.phase = Phase.IDLE
        self.episode = -1
        self.step = 0
        self.faults_in_a_row = 0
        self.last_fault = ""
        self.history: list[EpisodeRecord] = []
        running = state.get("running")
        if running:  # the previous process died mid-episode: the logger recovers its data
            self.completed += 1
            self.history.append(EpisodeRecord(int(running["episode"]), int(running["task"]),
                                              -1, "crash"))
        self._task: Task | None = None
        self._deadline = 0.0
        self._reset_tries = 0
        self._pause_until = 0.0
        self._save_state()
        if config.max_episodes is not None and self.completed >= config.max_episodes:
            self.phase = Phase.DONE

    # ------------------------------------------------------------------ state file

    @property
    def state_path(self) -> Path:
        return self._dir / STATE_FILE

    def _load_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SessionError(f"{self.state_path}: unreadable session state ({exc}); move "
                               "it away to start the schedule from the beginning") from exc
        if state.get("version") != STATE_VERSION:
            raise SessionError(f"{self.state_path}: session state version "
                               f"{state.get('version')!r} is not {STATE_VERSION}")
        if state.get("plan") != self.config.fingerprint():
            raise SessionError(
                f"{self.state_path}: this dataset's session followed the plan "
                f"{state.get('plan')}, not {self.config.fingerprint()}; use a new dataset "
                "directory or move session.json away to start a new schedule there")
        return state

    def _save_state(self) -> None:
        state = {"version": STATE_VERSION, "plan": self.config.fingerprint(),
                 "cursor": self.cursor, "completed": self.completed,
                 "next_episode": self.next_episode, "restarts": self.restarts,
                 "running": ({"episode": self.episode, "task": self._task_index()}
                             if self.phase == Phase.RUNNING else None),
                 "config": {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in asdict(self.config).items()},
                 "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ the state machine

    def _cmd(self, message: str, hold_safe: bool) -> SessionCommand:
        return SessionCommand(self.phase, self.episode, self._task, self.step, hold_safe,
                              message)

    def tick(self, now: float, *, fault: str | None = None, reset_done: bool = False,
             log_ok: bool = True, logger_ready: bool = True) -> SessionCommand:
        """Advance the machine at time ``now`` (monotonic seconds) and say what to do.

        ``fault``: a robot/bridge fault seen this tick (None when healthy); ``reset_done``:
        the reset routine has finished; ``log_ok``: the logger accepts data (False pauses the
        schedule: no point collecting what cannot be kept); ``logger_ready``: a logger
        receives the transitions (False keeps the schedule idle before the next reset, not a
        fault: a logger still starting or restarting would miss an episode's first steps)."""
        cfg = self.config
        if self.phase in (Phase.DONE, Phase.STOPPED):
            return self._cmd(self._end_message(), hold_safe=True)
        if fault:
            self._fault(now, fault)
            if self.phase == Phase.STOPPED:
                return self._cmd(self._end_message(), hold_safe=True)
        if not log_ok:
            if self.phase == Phase.RUNNING:
                self._end_episode("fault")
            self.phase = Phase.PAUSED
            self._pause_until = now
            self.last_fault = "logging cannot persist"
            return self._cmd("paused: the logger cannot persist data", hold_safe=True)
        if self.phase == Phase.PAUSED:
            if now < self._pause_until:
                return self._cmd(f"paused after fault ({self.last_fault}); retry in "
                                 f"{self._pause_until - now:.0f} s", hold_safe=True)
            self.phase = Phase.IDLE
        if self.phase == Phase.IDLE:
            if cfg.max_episodes is not None and self.completed >= cfg.max_episodes:
                self.phase = Phase.DONE
                return self._cmd(self._end_message(), hold_safe=True)
            if not logger_ready:
                return self._cmd("waiting for the episode logger (nothing receives the "
                                 "transitions yet)", hold_safe=True)
            self._task = self._tasks[planned_task(cfg, self.cursor)]
            self.phase = Phase.RESETTING
            self._deadline = now + cfg.reset_timeout_s
            self._reset_tries = 0
            return self._cmd(f"resetting for task {self._task.index}", hold_safe=False)
        if self.phase == Phase.RESETTING:
            if reset_done:
                self._start_episode()
                return self._cmd(f"episode {self.episode} task {self._task_index()} step 0",
                                 hold_safe=False)
            if now > self._deadline:
                self._reset_tries += 1
                if self._reset_tries > cfg.reset_retries:
                    self._fault(now, f"reset did not finish within {cfg.reset_timeout_s:.0f} s "
                                f"({cfg.reset_retries + 1} tries)")
                    return self._cmd(self._end_message() if self.phase == Phase.STOPPED
                                     else f"paused: {self.last_fault}", hold_safe=True)
                self._deadline = now + cfg.reset_timeout_s
                return self._cmd(f"reset timed out, retry {self._reset_tries}", hold_safe=False)
            return self._cmd(f"resetting for task {self._task_index()}", hold_safe=False)
        # RUNNING
        return self._cmd(f"episode {self.episode} task {self._task_index()} step {self.step}",
                         hold_safe=False)

    def step_done(self, terminated: bool = False, truncated: bool = False) -> bool:
        """Report that the step returned by the last ``tick`` was executed (``terminated``:
        the MDP ended; ``truncated``: the robot/env ended the episode early, e.g. its own
        horizon). True when the episode ended with this step."""
        if self.phase != Phase.RUNNING:
            raise SessionError(f"step_done() while {self.phase.value}, not running")
        self.step += 1
        if terminated:
            self._end_episode("terminated")
            return True
        if truncated or self.step >= self.config.episode_steps:
            self._end_episode("truncated")
            return True
        return False

    def is_last_step(self) -> bool:
        """The step about to run is the episode's last by the schedule (pack truncated=1)."""
        return self.phase == Phase.RUNNING and self.step + 1 >= self.config.episode_steps

    def clear_stop(self) -> None:
        """An operator looked at the robot: leave STOPPED and start counting faults anew."""
        if self.phase == Phase.STOPPED:
            self.phase = Phase.IDLE
            self.faults_in_a_row = 0

    def _task_index(self) -> int:
        return self._task.index if self._task is not None else -1

    def _start_episode(self) -> None:
        self.episode = max(self.next_episode, self._first_free())
        self.next_episode = self.episode + 1
        self.cursor += 1
        self.step = 0
        self.phase = Phase.RUNNING
        self._save_state()  # before the first transition: a crash now cannot reuse the id

    def _end_episode(self, reason: str) -> None:
        self.history.append(EpisodeRecord(self.episode, self._task_index(), self.step, reason))
        self.completed += 1
        if reason != "fault":
            self.faults_in_a_row = 0
        self.phase = Phase.IDLE
        self.episode = -1
        self.step = 0
        self._save_state()

    def _fault(self, now: float, what: str) -> None:
        if self.phase == Phase.RUNNING:
            self._end_episode("fault")
        self.faults_in_a_row += 1
        self.last_fault = what
        if self.faults_in_a_row >= self.config.max_consecutive_faults:
            self.phase = Phase.STOPPED
        else:
            self.phase = Phase.PAUSED
            self._pause_until = now + self.config.fault_pause_s

    def _end_message(self) -> str:
        if self.phase == Phase.DONE:
            return f"schedule done: {self.completed} episodes"
        return (f"stopped after {self.faults_in_a_row} faults in a row (last: "
                f"{self.last_fault}); needs an operator (clear_stop)")

    def task_message(self) -> dict[str, Any]:
        """The /pearl/task JSON for the current episode (family-agnostic part)."""
        t = self._task
        return {"episode": self.episode, "index": t.index if t else -1,
                "params": dict(t.params) if t else {}}
