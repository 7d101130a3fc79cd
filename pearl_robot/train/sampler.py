"""Rollouts of several tasks in lockstep, one batched actor call per control step.

The reference samples one task at a time, one actor call per env step. PEARL's collection and
evaluation are per task and independent across tasks, so K tasks can step together: the actor
runs once on a [K, obs] batch. Each env keeps its own task, generator and trajectory; envs that
terminate early drop out of the batch. Env resets are seeded per trajectory by the caller, so a
trajectory does not depend on which other tasks share its batch except through the actor's
noise stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from pearl_robot.core.pearl import PearlAgent
from pearl_robot.core.replay import Path
from pearl_robot.tasks.base import MetaEnv


class Trajectory(NamedTuple):
    """One finished trajectory and what evaluation needs from it."""

    path: Path
    """The transitions (raw obs, normalized actions)."""
    env_return: float
    """Sum of env rewards."""
    context_return: float
    """Sum of context rewards (equals env_return unless the family has a context reward)."""
    success: bool
    """Any step reported ``info[success_key]`` (False when the family has no success key)."""
    start_obs: np.ndarray
    """Observation after reset (evaluation baselines replay it)."""


def rollout_batch(envs: Sequence[MetaEnv], agent: PearlAgent, z: torch.Tensor,
                  max_steps: int, deterministic: bool, seeds: Sequence[int | None],
                  context_reward_key: str | None = None, success_key: str | None = None
                  ) -> list[Trajectory]:
    """Run one trajectory in each env (already ``set_task``-ed) with its row of ``z`` [K, L]."""
    k = len(envs)
    if z.shape[0] != k or len(seeds) != k:
        raise ValueError(f"{k} envs need {k} rows of z and {k} seeds, got {z.shape[0]}, "
                         f"{len(seeds)}")
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)]).astype(np.float64)
    start = obs.copy()
    horizon = min(max_steps, min(env.max_episode_steps for env in envs))
    bufs: list[dict[str, list]] = [{f: [] for f in Path._fields} for _ in range(k)]
    ret = np.zeros(k)
    cret = np.zeros(k)
    success = np.zeros(k, dtype=bool)
    active = np.arange(k)
    for _ in range(horizon):
        phys, norm = agent.act(obs[active], z[active], deterministic=deterministic)
        still = []
        for j, i in enumerate(active):
            step = envs[i].step(phys[j])
            r = float(step.reward)
            cr = float(step.info[context_reward_key]) if context_reward_key else r
            b = bufs[i]
            b["obs"].append(obs[i].copy())
            b["actions"].append(norm[j])
            b["rewards"].append(r)
            b["next_obs"].append(step.obs)
            b["terminals"].append(float(step.terminated))
            b["context_rewards"].append(cr)
            ret[i] += r
            cret[i] += cr
            if success_key and step.info.get(success_key):
                success[i] = True
            obs[i] = step.obs
            if not (step.terminated or step.truncated):
                still.append(i)
        active = np.asarray(still, dtype=np.int64)
        if active.size == 0:
            break
    out = []
    for i in range(k):
        b = bufs[i]
        path = Path(np.asarray(b["obs"], np.float32), np.asarray(b["actions"], np.float32),
                    np.asarray(b["rewards"], np.float32).reshape(-1, 1),
                    np.asarray(b["next_obs"], np.float32),
                    np.asarray(b["terminals"], np.float32).reshape(-1, 1),
                    np.asarray(b["context_rewards"], np.float32).reshape(-1, 1))
        out.append(Trajectory(path, float(ret[i]), float(cret[i]), bool(success[i]),
                              start[i].copy()))
    return out
