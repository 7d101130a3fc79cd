"""Adaptation report for a meta-trained twin model: does it adapt to held-out tasks?

Runs the reference adaptation protocol (first episode with z from the prior, then the posterior
re-inferred from everything seen on the task after each episode) on the family's held-out
tasks, and writes:

- ``adaptation.json``: return per (task, episode), means per episode index, the still
  (zero-effort) and oracle (PD + exact gravity, told the task) baselines from the same starts,
  and the oracle-normalized score per episode, (sum R - sum R_still) / (sum R_oracle -
  sum R_still) over tasks (0 = still, 1 = oracle);
- ``adaptation.png``: return against episode index (every task in grey, mean and spread in
  colour, baselines dashed);
- ``first_vs_last.png`` (with ``--strip``): frames of the first and the last episode on one task.

    python -m pearl_robot.train.adaptation_report runs/twin_arm/checkpoints/final.pt \\
        --episodes 4 --out runs/twin_arm/adaptation
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pearl_robot.train.adaptation_report",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--episodes", type=int, default=4, help="episodes per task")
    p.add_argument("--repeats", type=int, default=1, help="repeats per task")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--out", type=Path, default=Path("adaptation"))
    p.add_argument("--strip", action="store_true", help="also render first vs last episode")
    args = p.parse_args(argv)

    import torch

    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.core.pearl import PearlAgent
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.evaluation import evaluate_reference
    from pearl_robot.twin.render import plot_returns_by_episode

    ckpt = load_checkpoint(args.checkpoint)
    tc = ckpt.config.train
    family = make_family(tc.task_family)
    agent = PearlAgent(networks_from_checkpoint(ckpt), "cpu",
                       torch.Generator().manual_seed(args.seed))
    idx = family.eval_indices
    envs = [family.make_env(seed=args.seed + i) for i in range(min(32, len(idx)))]
    horizon = min(tc.max_path_length, envs[0].max_episode_steps)
    evals = evaluate_reference(agent, family, idx, envs, num_steps=args.episodes * horizon,
                               max_path_length=horizon, num_exp_traj=tc.num_exp_traj_eval,
                               repeats=args.repeats, seed=args.seed)
    returns = np.stack([e.returns.mean(axis=0) for e in evals])  # [tasks, episodes]
    still = oracle = math.nan
    norm: list[float] = []
    if all(e.baselines is not None for e in evals):
        base = np.stack([e.baselines for e in evals])  # [tasks, 2, repeats, episodes]
        r_sum = np.stack([e.returns for e in evals]).sum(axis=(0, 1))
        s_sum, o_sum = base[:, 0].sum(axis=(0, 1)), base[:, 1].sum(axis=(0, 1))
        # ratio of sums, as the trainer's metric: a start next to the goal cannot dominate
        norm = ((r_sum - s_sum) / np.maximum(o_sum - s_sum, 1e-9)).tolist()
        still, oracle = float(base[:, 0].mean()), float(base[:, 1].mean())
    means = returns.mean(axis=0)
    report = {
        "checkpoint": str(args.checkpoint), "family": family.name, "tasks": list(idx),
        "episodes": args.episodes, "repeats": args.repeats,
        "mean_return_per_episode": means.tolist(),
        "std_return_per_episode": returns.std(axis=0).tolist(),
        "normalized_per_episode": norm or None,
        "improved_tasks_last_vs_first": int((returns[:, -1] > returns[:, 0]).sum()),
        "still_return_mean": still, "oracle_return_mean": oracle,
        "returns": returns.tolist(),
        "success_rate_per_episode": np.stack([e.successes.mean(axis=0) for e in evals])
        .mean(axis=0).tolist(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptation.json").write_text(json.dumps(report, indent=2))
    base = {} if math.isnan(still) else {"still (zero effort)": still,
                                         "oracle (told the task)": oracle}
    plot_returns_by_episode(returns, args.out / "adaptation.png",
                            title=f"{family.name}: held-out tasks", baselines=base)
    print(f"{family.name}: {len(idx)} held-out tasks x {args.episodes} episodes")
    for k, m in enumerate(means):
        extra = f"  normalized {report['normalized_per_episode'][k]:.3f}" if norm else ""
        print(f"  episode {k + 1}: mean return {m:9.2f}{extra}")
    print(f"  tasks whose last episode beat the first: "
          f"{report['improved_tasks_last_vs_first']}/{len(idx)}")
    if base:
        print(f"  baselines: still {still:.2f}, oracle {oracle:.2f}")
    if args.strip:
        _first_vs_last(agent, family, idx[0], args, horizon, tc)
    print(f"wrote {args.out}")
    return 0


def _first_vs_last(agent, family, task_index, args, horizon, tc) -> None:  # noqa: ANN001
    """Render the prior-z episode and the episode after adapting on one held-out task."""
    import torch

    from pearl_robot.core.posterior import prior
    from pearl_robot.core.replay import context_from_path
    from pearl_robot.train.sampler import rollout_batch
    from pearl_robot.twin.render import record_episode, save_image_strip

    env = family.make_env(seed=args.seed)
    env.set_task(family.tasks[task_index])
    belief = prior((1,), agent.cfg.latent_dim, agent.device)
    rows = []
    frames, labels = [], []
    for k in range(args.episodes):
        z = agent.sample_z(belief)
        if k in (0, args.episodes - 1):
            with torch.inference_mode():
                def policy(obs: np.ndarray, z=z) -> np.ndarray:
                    phys, _ = agent.act(obs[None].astype(np.float64), z, deterministic=True)
                    return np.asarray(phys[0])

                ep = record_episode(env, policy, seed=args.seed + k, steps=horizon,
                                    frame_every=max(1, horizon // 6), camera="side")
            frames += ep.frames
            labels += [f"ep{k + 1} t={s * env.control_period:.1f}s R={ep.rewards.sum():.0f}"
                       for s in ep.frame_steps]
        trajs = rollout_batch([env], agent, z, horizon, True, [args.seed + k],
                              family.context_reward_key, family.success_key)
        rows.append(context_from_path(trajs[0].path, agent.cfg.use_next_obs_in_context))
        if k + 1 >= tc.num_exp_traj_eval:
            with torch.inference_mode():
                belief = agent.infer_posterior(
                    agent.context_to_tensor(np.concatenate(rows)[None]))
    save_image_strip(frames, args.out / "first_vs_last.png", columns=len(frames) // 2,
                     labels=labels)


if __name__ == "__main__":
    raise SystemExit(main())
