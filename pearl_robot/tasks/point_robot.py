"""Point-robot and sparse point-robot, exactly as in the reference (oyster ``point_robot.py``).

- State and observation: (x, y). Action: displacement, each axis in [-0.1, 0.1].
- Reward after the move: -||p - g||. Never terminates; 20-step episodes.
- point-robot: 100 goals U([-1, 1]^2) drawn with numpy seed 1337; start U([-1, 1]^2).
  Tasks 0-79 train, 80-99 held out (the reference's ``tasks[:n_train]``, ``tasks[-n_eval:]``).
- sparse point-robot: goals on the unit upper half-circle at angles linspace(0, pi, 100),
  shuffled with seed 1337; start (0, 0); ``info["sparse_reward"]`` = 1 - d inside radius 0.2,
  else 0 (used as the context reward, as the reference does).

Pure numpy: no MuJoCo import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pearl_robot.tasks.base import (
    LabelSpec,
    ListedTaskFamily,
    MetaEnv,
    RelabeledRewards,
    StepResult,
    Task,
)

REFERENCE_SEED = 1337
MAX_STEP = 0.1
HORIZON = 20


def dense_goals(n_tasks: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """The reference's point-robot goals: ``np.random.seed(1337)`` then two uniforms per task."""
    rs = np.random.RandomState(seed)
    return np.array([[rs.uniform(-1.0, 1.0), rs.uniform(-1.0, 1.0)] for _ in range(n_tasks)])


def half_circle_goals(n_tasks: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """The reference's sparse goals: unit half-circle, evenly spaced angles, shuffled."""
    angles = np.linspace(0.0, np.pi, num=n_tasks)
    goals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.random.RandomState(seed).shuffle(goals)
    return goals


class PointEnv(MetaEnv):
    """A point on the plane that moves by its action; reward is minus the distance to the goal."""

    obs_dim = 2
    action_dim = 2
    action_low = np.full(2, -MAX_STEP)
    action_high = np.full(2, MAX_STEP)
    max_episode_steps = HORIZON
    control_period = 0.05
    obs_names = ("x", "y")
    action_names = ("dx", "dy")
    obs_units = ("m", "m")
    action_units = ("m", "m")
    command_interface = "position_delta"

    def __init__(self, seed: int | None = None, sparse: bool = False,
                 goal_radius: float = 0.2) -> None:
        self._rng = np.random.default_rng(seed)
        self._sparse = sparse
        self.goal_radius = goal_radius
        self._goal = np.zeros(2)
        self._state = np.zeros(2)
        self._t = 0

    def set_task(self, task: Task) -> None:
        self._goal = np.asarray(task.params["goal"], dtype=np.float64)

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._state = np.zeros(2) if self._sparse else self._rng.uniform(-1.0, 1.0, size=2)
        self._t = 0
        return self._state.copy(), {}

    def reset_to(self, state: np.ndarray) -> np.ndarray:
        """Start from a given state (evaluation baselines replay the same start)."""
        self._state = np.asarray(state, dtype=np.float64).copy()
        self._t = 0
        return self._state.copy()

    def step(self, action: np.ndarray) -> StepResult:
        a = np.clip(np.asarray(action, dtype=np.float64), self.action_low, self.action_high)
        self._state = self._state + a
        self._t += 1
        dist = float(np.linalg.norm(self._state - self._goal))
        reward = -dist
        info: dict[str, Any] = {"reward_parts": {"distance": -dist}, "distance": dist}
        if self._sparse:
            inside = dist <= self.goal_radius
            info["sparse_reward"] = float(sparse_reward(dist, self.goal_radius))
            info["success"] = bool(inside)
        return StepResult(self._state.copy(), reward, False, self._t >= HORIZON, info)


def sparse_reward(dist: np.ndarray | float, goal_radius: float) -> np.ndarray:
    """The sparse family's context reward at distance ``dist`` from the goal: 1 - d inside
    the goal radius, else 0 (the reference's ``sparse_reward``)."""
    d = np.asarray(dist, dtype=np.float64)
    return np.where(d <= goal_radius, 1.0 - d, 0.0)


def oracle_action(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Full speed straight at the goal: the per-axis clip of (g - p) minimises the next
    distance over the action box, so it is the return-optimal policy for the dense reward."""
    return np.clip(np.asarray(goal) - np.asarray(obs), -MAX_STEP, MAX_STEP)


def rollout_return(start: np.ndarray, goal: np.ndarray, policy: str,
                   horizon: int = HORIZON) -> float:
    """Dense return of the still ("still") or oracle ("oracle") policy from ``start``."""
    p = np.asarray(start, dtype=np.float64).copy()
    g = np.asarray(goal, dtype=np.float64)
    total = 0.0
    for _ in range(horizon):
        if policy == "oracle":
            p = p + oracle_action(p, g)
        elif policy != "still":
            raise ValueError(f"unknown baseline policy {policy!r}")
        total -= float(np.linalg.norm(p - g))
    return total


class PointRobotFamily(ListedTaskFamily):
    """point-robot (dense) or sparse-point-robot, with the reference's goals and split."""

    label_spec = LabelSpec(("goal[0]", "goal[1]"), (-1.0, -1.0), (1.0, 1.0), (False, False))
    """The goal is the whole task: the labels of supervised inference (and of the privileged
    reference)."""

    def __init__(self, sparse: bool = False, n_tasks: int = 100, n_eval: int = 20,
                 goal_radius: float = 0.2, seed: int = REFERENCE_SEED) -> None:
        self.sparse = sparse
        self.name = "sparse-point-robot" if sparse else "point-robot"
        self.goal_radius = goal_radius
        self.context_reward_key = "sparse_reward" if sparse else None
        self.success_key = "success" if sparse else None
        goals = half_circle_goals(n_tasks, seed) if sparse else dense_goals(n_tasks, seed)
        self._set_tasks([Task(i, {"goal": [float(g[0]), float(g[1])]})
                         for i, g in enumerate(goals)], n_eval)

    def make_env(self, seed: int | None = None) -> PointEnv:
        return PointEnv(seed=seed, sparse=self.sparse, goal_radius=self.goal_radius)

    def transition_reward(self, task: Task, obs: np.ndarray, action: np.ndarray,
                          next_obs: np.ndarray) -> tuple[float, float]:
        """(reward, context reward) of one measured transition, as ``PointEnv.step`` computes
        them: minus the distance after the move; the sparse family's context reward is
        1 - d inside the goal radius, else 0."""
        d = float(np.linalg.norm(np.asarray(next_obs, dtype=np.float64)[:2]
                                 - np.asarray(task.params["goal"], dtype=np.float64)))
        if not self.sparse:
            return -d, -d
        return -d, float(sparse_reward(d, self.goal_radius))

    supports_relabeling = True
    """The reward is a function of the position reached and the goal (the labels) alone."""

    def relabel_rewards(self, labels: np.ndarray, next_obs: np.ndarray) -> RelabeledRewards:
        """Minus the distance from each next position to the labelled goal (and the sparse
        reward of that distance): ``transition_reward``, vectorized over tasks and rows."""
        goals = self.label_spec.decode(np.asarray(labels, dtype=np.float64))  # [T, 2]
        pos = np.asarray(next_obs, dtype=np.float64)[..., :2]
        d = np.linalg.norm(pos - goals[:, None, :], axis=-1)
        ctx = sparse_reward(d, self.goal_radius) if self.sparse else -d
        return RelabeledRewards(-d, ctx)

    def hindsight_labels(self, next_obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The position one random transition of each context reached, as the goal (so the
        relabelled sparse context holds rewards: what the context-reward decoder needs to
        learn where a goal pays and where it does not)."""
        pos = np.asarray(next_obs, dtype=np.float64)[..., :2]
        pick = rng.integers(pos.shape[1], size=pos.shape[0])
        goals = pos[np.arange(pos.shape[0]), pick]
        return np.stack([self.label_spec.encode({"goal": list(g)})[0] for g in goals])

    def baseline_returns(self, task: Task, start: np.ndarray) -> tuple[float, float] | None:
        """(still, oracle) returns from ``start`` for the oracle-normalized score (0 = the
        policy that stays still, 1 = full speed straight at the goal); dense family only."""
        if self.sparse:
            return None
        goal = np.asarray(task.params["goal"])
        return rollout_return(start, goal, "still"), rollout_return(start, goal, "oracle")

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        if self.sparse:
            angles = rng.uniform(0.0, np.pi, size=n)
            goals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        else:
            goals = rng.uniform(-1.0, 1.0, size=(n, 2))
        return [Task(-1, {"goal": [float(g[0]), float(g[1])]}) for g in goals]
