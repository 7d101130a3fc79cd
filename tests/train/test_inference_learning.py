"""Seeded learning smoke test of the "pooled" task inference: a short point-robot run must
locate held-out goals from two trajectories of context, which a broken inference (belief at
the prior, labels ignored, the wrong rows) cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pearl_robot.core.config import load_experiment, merge
from pearl_robot.tasks.point_robot import PointRobotFamily
from pearl_robot.train.evaluation import _seed
from pearl_robot.train.sampler import rollout_batch
from pearl_robot.train.trainer import MetaTrainer

ROOT = Path(__file__).resolve().parents[2]


def held_out_goal_error(trainer: MetaTrainer) -> float:
    """RMS distance between the belief mean's goal dims and the true goal, after two
    deterministic trajectories (prior belief, then the posterior) on each held-out task."""
    fam = trainer.family
    idx = fam.eval_indices
    envs = [fam.make_env(seed=i) for i in range(len(idx))]
    for e, t in zip(envs, idx):
        e.set_task(fam.tasks[t])
    agent = trainer.agent
    with torch.inference_mode():
        from pearl_robot.core.posterior import prior

        belief = prior((len(idx),), agent.cfg.latent_dim)
        rows: list[list[np.ndarray]] = [[] for _ in idx]
        for j in range(2):
            trajs = rollout_batch(envs, agent, agent.sample_z(belief), 20, True,
                                  [_seed(5, t, 0, j) for t in idx])
            for i, tr in enumerate(trajs):
                rows[i].append(agent.nets.layout.rows(tr.path.obs, tr.path.actions,
                                                      tr.path.context_rewards))
            ctx = torch.as_tensor(np.stack([np.concatenate(r) for r in rows]))
            belief = agent.infer_posterior(ctx)
    goals = np.array([fam.tasks[t].params["goal"] for t in idx])
    return float(np.sqrt(((belief.mean[:, :2].numpy() - goals) ** 2).sum(-1).mean()))


def test_pooled_inference_locates_held_out_goals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = load_experiment(ROOT / "config/train/point_robot_pooled.yaml")
    cfg = merge(cfg, {"pearl": {"hidden_sizes": [32, 32], "encoder_hidden_sizes": [32, 32],
                                "meta_batch": 8, "batch_size": 64, "inference_updates": 8},
                      "train": {"num_iterations": 2, "num_train_steps_per_itr": 250,
                                "num_tasks_sample": 3, "eval_every": 100, "seed": 3}})
    tr = MetaTrainer(cfg, PointRobotFamily(), tmp_path, tensorboard=False, progress=False)
    before = held_out_goal_error(tr)
    for _ in range(2):
        tr.run_iteration()
    after = held_out_goal_error(tr)
    # the prior's error is the goals' spread (about 0.8 for U([-1, 1]^2)); a working belief
    # halves it within 300 gradient steps
    assert before > 0.6
    print(f"held-out goal error {before:.3f} -> {after:.3f}")
    assert after < 0.45, f"held-out goal error {after:.3f} after training (before {before:.3f})"
