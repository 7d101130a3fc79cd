"""Many task instances stepped per call, for the trainer's sampler.

Why threads and not ``mujoco.rollout``: the sampler is closed-loop (the policy picks each action
from the last observation), so every control step is one short call per environment anyway, and
the envs' own Python (rewards, latency queues, sensor noise) has to run between steps.
``mujoco.mj_step`` releases the GIL, so a small pool of threads, each stepping a fixed slice of
the environments, runs the physics in parallel while the Python parts interleave. Each
environment is stepped by exactly the code of its single-env ``step`` on its own model and data,
so the results are bit-identical to stepping the envs one by one with the same seeds (a test
asserts it), whatever the thread count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from pearl_robot.tasks.base import MetaEnv, StepResult, Task, TaskFamily


class VectorStep(NamedTuple):
    """One step of every environment, stacked along the first axis."""

    obs: np.ndarray
    """(n_envs, obs_dim) observations after the step."""
    reward: np.ndarray
    """(n_envs,) rewards."""
    terminated: np.ndarray
    """(n_envs,) bool."""
    truncated: np.ndarray
    """(n_envs,) bool."""
    infos: list[dict[str, Any]]
    """Per-env info dicts (``reward_parts`` etc.); empty for envs masked out."""


def default_threads() -> int:
    """1 on machines with fewer than 4 cores, else one per core (at most 8).

    Measured (bench/bench_twin.py, docs/performance.md): on 2 shared cores a second thread
    does not pay for the arm or cheetah (a control step is 40-100 us of physics, and the
    GIL hand-offs eat the overlap); it pays for physics-heavy models on free cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return 1 if cores < 4 else min(8, cores)


class VectorMetaEnv:
    """``n_envs`` environments of one family, each with its own task, stepped together."""

    def __init__(self, envs: Sequence[MetaEnv], n_threads: int | None = None) -> None:
        if not envs:
            raise ValueError("VectorMetaEnv needs at least one environment")
        self.envs = list(envs)
        first = self.envs[0]
        for e in self.envs[1:]:
            if (e.obs_dim, e.action_dim) != (first.obs_dim, first.action_dim):
                raise ValueError("all environments must share observation and action sizes")
        self.n_envs = len(self.envs)
        self.obs_dim = first.obs_dim
        self.action_dim = first.action_dim
        self.action_low = first.action_low
        self.action_high = first.action_high
        self.max_episode_steps = first.max_episode_steps
        self.control_period = first.control_period
        n_threads = default_threads() if n_threads is None else n_threads
        self.n_threads = max(1, min(int(n_threads), self.n_envs))
        bounds = np.linspace(0, self.n_envs, self.n_threads + 1).round().astype(int)
        self._slices = [range(bounds[i], bounds[i + 1]) for i in range(self.n_threads)]
        self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="vecenv") \
            if self.n_threads > 1 else None
        self._last_obs = np.zeros((self.n_envs, self.obs_dim))

    @classmethod
    def from_family(cls, family: TaskFamily, n_envs: int, seed: int | None = None,
                    n_threads: int | None = None) -> VectorMetaEnv:
        """``n_envs`` fresh envs of ``family``; env i is made with seed ``seed + i``."""
        seeds = [None if seed is None else seed + i for i in range(n_envs)]
        return cls([family.make_env(seed=s) for s in seeds], n_threads=n_threads)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """One task per env (takes effect at the env's next reset)."""
        if len(tasks) != self.n_envs:
            raise ValueError(f"need {self.n_envs} tasks, got {len(tasks)}")
        for env, task in zip(self.envs, tasks, strict=True):
            env.set_task(task)

    def reset(self, seeds: Sequence[int | None] | None = None,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset every env (or those where ``mask`` is true); returns all current obs."""
        seeds = [None] * self.n_envs if seeds is None else list(seeds)
        if len(seeds) != self.n_envs:
            raise ValueError(f"need {self.n_envs} seeds, got {len(seeds)}")
        infos: list[dict[str, Any]] = [{} for _ in range(self.n_envs)]
        for i, env in enumerate(self.envs):
            if mask is None or mask[i]:
                self._last_obs[i], infos[i] = env.reset(seed=seeds[i])
        return self._last_obs.copy(), infos

    def step(self, actions: np.ndarray, mask: np.ndarray | None = None) -> VectorStep:
        """Step every env (or those where ``mask`` is true) with its row of ``actions``.
        Masked-out envs keep their observation and report reward 0, not done."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.n_envs, self.action_dim):
            raise ValueError(f"actions must have shape ({self.n_envs}, {self.action_dim}), "
                             f"got {actions.shape}")
        results: list[StepResult | None] = [None] * self.n_envs

        def run(indices: range) -> None:
            for i in indices:
                if mask is None or mask[i]:
                    results[i] = self.envs[i].step(actions[i])

        if self._pool is None:
            run(range(self.n_envs))
        else:
            for f in [self._pool.submit(run, s) for s in self._slices]:
                f.result()  # re-raises an env's error in the caller
        reward = np.zeros(self.n_envs)
        terminated = np.zeros(self.n_envs, dtype=bool)
        truncated = np.zeros(self.n_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.n_envs)]
        for i, r in enumerate(results):
            if r is not None:
                self._last_obs[i] = r.obs
                reward[i], terminated[i], truncated[i], infos[i] = (r.reward, r.terminated,
                                                                    r.truncated, r.info)
        return VectorStep(self._last_obs.copy(), reward, terminated, truncated, infos)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for env in self.envs:
            env.close()

    def __enter__(self) -> VectorMetaEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
