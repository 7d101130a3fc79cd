"""Evaluate a checkpoint's adaptation on held-out tasks and plot return per trajectory.

Modes:
  reference  oyster's protocol: prior z for the first trajectory(ies), then the posterior is
             re-inferred after each trajectory; reported return = last trajectory
  online     the robot's mode: the belief is updated after every transition (running
             precision sums); z = posterior mean each step (--z-schedule mean) or one sample
             per episode (--z-schedule sample)

Example:
  pearl-robot evaluate runs/point/checkpoints/final.pt --mode online --plot runs/point/eval.png
  pearl-robot evaluate runs/point/checkpoints/final.pt --episodes 3 --json runs/point/eval.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="checkpoint written by `pearl-robot train`")
    p.add_argument("--mode", choices=("reference", "online"), default="reference")
    p.add_argument("--tasks", choices=("eval", "train"), default="eval",
                   help="held-out (default) or training tasks")
    p.add_argument("--episodes", type=int, help="trajectories per task (default: the run's "
                   "num_steps_per_eval / max_path_length)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per task")
    p.add_argument("--z-schedule", choices=("mean", "sample"), default="mean",
                   help="online mode: z per step from the posterior mean, or sampled per episode")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--plot", type=Path, help="PNG of mean return per trajectory index, e.g. "
                   "runs/point/eval.png (runs/ is git-ignored; missing directories are made)")
    p.add_argument("--json", type=Path, help="write the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.core.pearl import PearlAgent
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.evaluation import evaluate_online, evaluate_reference, summarize

    ckpt = load_checkpoint(args.checkpoint)
    tc = ckpt.config.train
    family = make_family(tc.task_family)
    nets = networks_from_checkpoint(ckpt)
    gen = torch.Generator().manual_seed(args.seed)
    agent = PearlAgent(nets, "cpu", gen)
    idx = family.eval_indices if args.tasks == "eval" else family.train_indices
    envs = [family.make_env(seed=args.seed + i) for i in range(min(32, len(idx)))]
    horizon = min(tc.max_path_length, envs[0].max_episode_steps)
    episodes = args.episodes or max(1, math.ceil(tc.num_steps_per_eval / horizon))
    repeats = args.repeats or tc.num_evals
    if args.mode == "reference":
        evals = evaluate_reference(agent, family, idx, envs, num_steps=episodes * horizon,
                                   max_path_length=horizon, num_exp_traj=tc.num_exp_traj_eval,
                                   repeats=repeats, seed=args.seed)
    else:
        evals = evaluate_online(agent, family, idx, envs, num_episodes=episodes,
                                max_path_length=horizon, repeats=repeats, seed=args.seed,
                                z_schedule=args.z_schedule)
    s = summarize(evals, tc.num_exp_traj_eval if args.mode == "reference" else 0)
    print(f"{family.name}: {len(idx)} {args.tasks} tasks x {repeats} repeats, mode {args.mode}")
    for j, r in enumerate(s.online_returns):
        print(f"  trajectory {j}: mean return {r:9.3f}")
    if math.isfinite(s.final_normalized):
        print(f"  oracle-normalized score of the last trajectory: {s.final_normalized:.3f}")
    if family.success_key:
        print(f"  success after exploration: {s.final_success:.1%}")
    summary = {"family": family.name, "mode": args.mode, "tasks": args.tasks,
               **s._asdict(), "per_task_final": {e.task_index: float(np.mean(e.returns[:, -1]))
                                                 for e in evals}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # e.g. runs/point/, made here
        args.json.write_text(json.dumps(summary, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rets = np.stack([e.returns for e in evals])  # [tasks, repeats, traj]
        per_task = rets.mean(axis=1)
        fig, ax = plt.subplots(figsize=(6, 4))
        x = np.arange(per_task.shape[1])
        for row in per_task:
            ax.plot(x, row, color="tab:blue", alpha=0.15)
        ax.plot(x, per_task.mean(0), "o-", color="tab:blue", lw=2, label="mean over tasks")
        ax.set_xticks(x)
        ax.set_xlabel("trajectory (belief updated from the ones before)")
        ax.set_ylabel("return")
        ax.set_title(f"{family.name}: adaptation on {args.tasks} tasks ({args.mode})")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        plt.close(fig)
        print(f"plot: {args.plot}")
    return 0
