"""The task-family API shared by the trainer, the evaluation protocol, the twin and the runtime.

A *task family* is a distribution over MDPs that share observation and action spaces (goals on a
plane, target velocities, payload and friction of the robot). It owns a fixed, seeded list of
tasks split into training and held-out evaluation tasks, and makes environments.

An *environment* is gymnasium-style (``reset(seed=)``, ``step``) plus ``set_task``. It speaks
**physical units**: actions are in ``[action_low, action_high]`` (what goes on /pearl/command),
observations are what /joint_states carries. Networks work on actions normalized to [-1, 1];
the conversion is :func:`normalize_action` / :func:`denormalize_action` and lives in the exported
actor graph, so the robot never sees normalized values.

Reward parts go in ``info["reward_parts"]``; a family with a separate context reward (sparse
point-robot) puts it in ``info[family.context_reward_key]``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from pearl_robot.robot.description import RobotSpec


@dataclass(frozen=True)
class Task:
    """One member of a task family, identified by its index in the family's task list."""

    index: int
    """Position in ``TaskFamily.tasks`` (stable for a given family seed)."""
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    """What defines the task (goal, target velocity, physical parameters); JSON-serialisable.
    This is what /pearl/task publishes and what the episode log records."""


class StepResult(NamedTuple):
    """What ``MetaEnv.step`` returns (gymnasium's 5-tuple, named)."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class MetaEnv(abc.ABC):
    """A gymnasium-style environment whose MDP is chosen by ``set_task``."""

    obs_dim: int
    """Observation size."""
    action_dim: int
    """Action size."""
    action_low: np.ndarray
    """Lower action bound, physical units, shape (action_dim,)."""
    action_high: np.ndarray
    """Upper action bound, physical units, shape (action_dim,)."""
    max_episode_steps: int
    """The horizon: ``step`` reports ``truncated`` when it is reached."""
    control_period: float
    """Seconds per step, the policy's control period (the name it has from the MJCF's
    ``pearl/control_period`` to the policy node's timer); each family declares its own."""
    obs_names: tuple[str, ...] = ()
    """Names of the observation entries, one per entry (the bundle contract uses them; an env
    without them cannot be exported: ``tasks.interface.EnvInterface.from_env``)."""
    action_names: tuple[str, ...] = ()
    """Names of the action entries (joint names for the robot twin)."""
    obs_units: tuple[str, ...] = ()
    """Unit of each observation entry; empty: the env has none to declare (abstract
    coordinates) and the contract states ``unspecified``. Ignored when ``robot_spec`` is set
    (the robot description gives them)."""
    action_units: tuple[str, ...] = ()
    """Unit of each action entry; empty as for ``obs_units``."""
    command_interface: str = "unspecified"
    """What an action means on a robot (``effort``, ``position_delta``); ``unspecified`` for an
    abstract benchmark. Ignored when ``robot_spec`` is set."""
    robot_spec: RobotSpec | None = None
    """The robot description the env simulates (the twin's MJCF), or None: then units,
    observation ranges, joints and interface come from the attributes above."""

    @abc.abstractmethod
    def set_task(self, task: Task) -> None:
        """Switch the MDP; takes effect at the next ``reset``."""

    @abc.abstractmethod
    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode of the current task; ``seed`` reseeds the env's own generator."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action (physical units, clipped to the bounds) for one control period."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release renderers and other resources."""


@dataclass(frozen=True)
class LabelSpec:
    """The privileged task parameters a family exposes for supervised task inference.

    Each label is one scalar of a task's ``params`` (``"goal[1]"`` is element 1 of the list
    ``params["goal"]``), mapped to about [-1, 1] by its range (in log space for log-uniform
    parameters), so every label weighs the same in the loss and the belief's prior N(0, 1)
    covers it. A task (a logged episode, say) that lacks a parameter gets that label masked:
    it contributes nothing to the loss, and nothing is invented for it.
    """

    names: tuple[str, ...]
    """Parameter paths, ``key`` or ``key[i]``."""
    low: tuple[float, ...]
    """Range start of each label (physical units)."""
    high: tuple[float, ...]
    """Range end of each label."""
    log: tuple[bool, ...]
    """Normalize in log space (positive, log-uniform parameters)."""

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.low) == len(self.high) == len(self.log) == n) or n == 0:
            raise ValueError("LabelSpec needs one low, high and log flag per name")
        if any(hi <= lo for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"LabelSpec ranges must have high > low: {self}")

    @property
    def size(self) -> int:
        return len(self.names)

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.low, dtype=np.float64), np.asarray(self.high, dtype=np.float64)
        lg = np.asarray(self.log)
        return np.where(lg, np.log(np.where(lg, lo, 1.0)), lo), \
            np.where(lg, np.log(np.where(lg, hi, 1.0)), hi)

    def encode(self, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(normalized labels [size], mask [size] of 1.0 where the parameter is known)."""
        raw = np.zeros(self.size)
        mask = np.zeros(self.size)
        for i, name in enumerate(self.names):
            key, _, idx = name.partition("[")
            v = params.get(key)
            try:
                if idx:
                    v = v[int(idx.rstrip("]"))]
                v = float(v)
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if not np.isfinite(v) or (self.log[i] and v <= 0):
                continue
            raw[i] = np.log(v) if self.log[i] else v
            mask[i] = 1.0
        lo, hi = self._bounds()
        return np.where(mask > 0, 2.0 * (raw - lo) / (hi - lo) - 1.0, 0.0), mask

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Normalized labels back to physical units."""
        lo, hi = self._bounds()
        raw = lo + (np.asarray(values, dtype=np.float64) + 1.0) * 0.5 * (hi - lo)
        return np.where(np.asarray(self.log), np.exp(raw), raw)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high),
                "log": list(self.log)}


class RelabeledRewards(NamedTuple):
    """What transitions would have earned in other tasks (``TaskFamily.relabel_rewards``)."""

    reward: np.ndarray
    """The env (task) reward, [T, N]."""
    context_reward: np.ndarray
    """The context reward (``context_reward_key``'s value, else the env reward), [T, N]."""


class TaskFamily(abc.ABC):
    """A seeded set of tasks split into training and held-out tasks, and an env factory."""

    name: str
    """Registry name ("point-robot", "cheetah-vel", "twin-arm", ...)."""
    context_reward_key: str | None = None
    """When set, context rows use ``info[context_reward_key]`` as the reward instead of the
    env reward (the reference's sparse-reward setting); RL targets keep the env reward."""
    success_key: str | None = None
    """When set, ``info[success_key]`` (truthy) marks a successful step for evaluation."""

    @property
    @abc.abstractmethod
    def tasks(self) -> list[Task]:
        """All tasks of the family, training first; fixed by the family's seed."""

    @property
    @abc.abstractmethod
    def train_indices(self) -> list[int]:
        """Indices (into ``tasks``) used for meta-training."""

    @property
    @abc.abstractmethod
    def eval_indices(self) -> list[int]:
        """Held-out indices, never used for training."""

    @abc.abstractmethod
    def make_env(self, seed: int | None = None) -> MetaEnv:
        """A fresh environment (one per worker; envs are not thread-safe)."""

    label_spec: LabelSpec | None = None
    """Privileged task parameters for supervised task inference (None: the family has none;
    the "pooled" inference then learns from reward reconstruction only)."""

    def task_labels(self, tasks: list[Task]) -> tuple[np.ndarray, np.ndarray]:
        """(labels [n, size], mask [n, size]) of ``tasks`` under :attr:`label_spec`
        (size 0 when the family has none)."""
        spec = self.label_spec
        if spec is None:
            return np.zeros((len(tasks), 0)), np.zeros((len(tasks), 0))
        pairs = [spec.encode(t.params) for t in tasks]
        if not pairs:
            return np.zeros((0, spec.size)), np.zeros((0, spec.size))
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    supports_relabeling: bool = False
    """True when :meth:`relabel_rewards` is implemented: the reward is a known function of
    the measured state and the labelled task parameters, so logged transitions can be scored
    under other tasks (task relabelling, ``PearlConfig.task_relabeling``)."""

    def relabel_rewards(self, labels: np.ndarray, next_obs: np.ndarray) -> RelabeledRewards:
        """The rewards of transitions ending in ``next_obs`` [T, N, obs_dim] had their tasks
        been the ones with normalized labels ``labels`` [T, P]. Only families whose reward
        depends on nothing but the state reached and the labels can say this; the others
        raise NotImplementedError (dynamics labels cannot be relabelled: the transitions
        themselves would differ)."""
        raise NotImplementedError(f"{self.name} cannot relabel rewards")

    def hindsight_labels(self, next_obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Normalized labels [T, P] of a task each context [T, N, obs_dim] would have
        succeeded at: a goal where one of its transitions ended (hindsight relabelling, as
        HER picks achieved goals). Only goal-reaching families whose labels are the goal
        can; the others raise NotImplementedError."""
        raise NotImplementedError(f"{self.name} has no hindsight goals")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` new tasks from the family's distribution (outside the fixed list; their
        ``index`` is -1). Families without a sampler raise NotImplementedError."""
        raise NotImplementedError(f"{self.name} has no task sampler")

    @property
    def train_tasks(self) -> list[Task]:
        return [self.tasks[i] for i in self.train_indices]

    @property
    def eval_tasks(self) -> list[Task]:
        return [self.tasks[i] for i in self.eval_indices]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for checkpoints, bundle contracts and logs."""
        return {"name": self.name, "n_tasks": len(self.tasks),
                "n_train": len(self.train_indices), "n_eval": len(self.eval_indices),
                "context_reward_key": self.context_reward_key}


class ListedTaskFamily(TaskFamily):
    """A family whose task list is fixed at construction: the last ``n_eval`` tasks are held
    out (the reference's ``tasks[:n_train]`` / ``tasks[-n_eval:]``), or, with
    ``held_out=False``, evaluation reuses the training tasks (the reference's two-task
    direction families). Subclasses call :meth:`_set_tasks` and implement ``make_env``."""

    held_out: bool = True

    def _set_tasks(self, tasks: list[Task], n_eval: int, held_out: bool = True) -> None:
        if held_out and not 0 < n_eval < len(tasks):
            raise ValueError(f"{self.name}: n_eval must be in (0, n_tasks), got {n_eval} of "
                             f"{len(tasks)}")
        self.held_out = held_out
        self._tasks = tasks
        self._n_train = len(tasks) - n_eval if held_out else len(tasks)

    @property
    def tasks(self) -> list[Task]:
        return self._tasks

    @property
    def train_indices(self) -> list[int]:
        return list(range(self._n_train))

    @property
    def eval_indices(self) -> list[int]:
        if not self.held_out:
            return list(range(len(self._tasks)))
        return list(range(self._n_train, len(self._tasks)))


def normalize_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Physical units -> [-1, 1] (clipped)."""
    a = 2.0 * (np.asarray(action, dtype=np.float64) - low) / (high - low) - 1.0
    return np.clip(a, -1.0, 1.0)


def denormalize_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[-1, 1] -> physical units (clipped to the bounds)."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)
