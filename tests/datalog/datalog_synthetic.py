"""Deterministic synthetic episodes: every value is a function of (episode, step), so a test can
check any logged transition against what must have been written."""

from __future__ import annotations

import numpy as np

from pearl_robot.datalog.schema import TransitionLayout

LAYOUT = TransitionLayout(obs_dim=3, action_dim=2, latent_dim=2)
N_TASKS = 5


def episode_length(episode: int) -> int:
    return 5 + (episode * 37) % 60


def task_of(episode: int) -> dict:
    i = episode % N_TASKS
    return {"family": "synthetic", "index": i, "params": {"goal": [i * 0.1, -i * 0.2]},
            "episode": episode}


def transition(episode: int, step: int) -> np.ndarray:
    n = episode_length(episode)
    obs = np.array([episode + step / 1000.0, step, np.sin(episode + step)])
    nxt = np.array([episode + (step + 1) / 1000.0, step + 1, np.sin(episode + step + 1)])
    act = np.array([np.sin(0.3 * step + episode), np.cos(0.7 * step - episode)])
    t = episode * 100.0 + step * 0.05
    belief = np.array([0.1 * step, -0.1 * step, 1.0 / (step + 1), 2.0 / (step + 1), step])
    return LAYOUT.pack(obs, act, -(episode % 7) - 0.01 * step, nxt, False, step == n - 1,
                       episode, step, episode % N_TASKS, (t, t + 0.001, t + 0.05), belief)


def episode_matrix(episode: int, n: int | None = None) -> np.ndarray:
    n = episode_length(episode) if n is None else n
    return np.stack([transition(episode, s) for s in range(n)])
