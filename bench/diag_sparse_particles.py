"""Where a sparse point-robot model with the particle belief loses, trajectory by trajectory.

For one checkpoint (``pearl.refinement: particles``) on the 20 held-out goals, the reference
protocol (5 exploration trajectories from the particle prior, then 15 sampled from the
particle posterior) with, after each trajectory: the success rate, how far the trajectory's
end is from the goal the sampled particle names (does the policy go where z says?), the
posterior mass within the goal radius of the true goal and the effective sample size (does
the likelihood find the goal?), and the decoder's predicted context reward at and away from
each true goal (is the likelihood right?).

    .venv/bin/python -m bench.diag_sparse_particles runs/sparse_particles/final.pt \\
        config/train/sparse_point_robot_particles.yaml --out bench/results/x.json --repeats 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _trainer(checkpoint: Path, config: Path):  # noqa: ANN202 - MetaTrainer
    """A trainer on sparse point-robot holding the checkpoint's weights (its envs, agent)."""
    import torch

    from pearl_robot.core.checkpoint import load_checkpoint
    from pearl_robot.core.config import load_experiment
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    torch.set_num_threads(1)
    tr = MetaTrainer(load_experiment(config), make_family("sparse-point-robot"),
                     Path(tempfile.mkdtemp(prefix="diag_particles_")), tensorboard=False,
                     progress=False)
    tr.nets.load_state_dict(load_checkpoint(checkpoint).networks)
    return tr


def diagnose(checkpoint: Path, config: Path, seed: int = 1000) -> dict[str, Any]:
    import torch

    from pearl_robot.core.replay import context_from_path
    from pearl_robot.train.sampler import rollout_batch

    tr = _trainer(checkpoint, config)
    cfg, fam = tr.cfg, tr.family
    ag, nets = tr.agent, tr.nets
    idx = fam.eval_indices
    envs = tr.envs[:len(idx)]
    for e, t in zip(envs, idx):
        e.set_task(fam.tasks[t])
    goals = np.array([fam.tasks[t].params["goal"] for t in idx])
    k, n_exp = len(idx), cfg.train.num_exp_traj_eval
    n_traj = cfg.train.num_steps_per_eval // cfg.train.max_path_length
    part_goals = fam.label_spec.decode(nets.particles[:, :2].numpy())
    near = np.linalg.norm(part_goals[None] - goals[:, None], axis=-1) < fam.goal_radius
    log_w = torch.zeros(k, cfg.pearl.num_particles)
    found = np.zeros(k, dtype=bool)
    rows_out: list[dict[str, float]] = []
    with torch.inference_mode():
        for j in range(n_traj):
            z = ag.sample_particle_z(log_w if j >= n_exp else torch.zeros_like(log_w))
            trajs = rollout_batch(envs, ag, z, cfg.train.max_path_length, True,
                                  [seed + 31 * i + j for i in range(k)],
                                  fam.context_reward_key, fam.success_key)
            ends = np.array([t.path.next_obs[-1] for t in trajs])
            follow = np.linalg.norm(ends - fam.label_spec.decode(z[:, :2].numpy()), axis=1)
            succ = np.array([t.success for t in trajs])
            ctx = np.stack([context_from_path(t.path, cfg.pearl.use_next_obs_in_context)
                            for t in trajs])
            log_w += ag.particle_log_likelihood(ag.context_to_tensor(ctx))
            p = torch.softmax(log_w, -1).numpy()
            found |= succ & (j >= n_exp)
            rows_out.append({"trajectory": j, "success": float(succ.mean()),
                             "follow_error_median": float(np.median(follow)),
                             "posterior_mass_at_goal_median": float(np.median(
                                 (p * near).sum(1))),
                             "ess_median": float(np.median(1.0 / (p ** 2).sum(1))),
                             "found_after_exploration": float(found.mean())})
            print("  ".join(f"{k_}={v:.2f}" if isinstance(v, float) else f"{k_}={v}"
                            for k_, v in rows_out[-1].items()), flush=True)
        lab = torch.as_tensor(fam.task_labels([fam.tasks[t] for t in idx])[0],
                              dtype=torch.float32)
        z_true = torch.cat([lab, torch.zeros(k, cfg.pearl.latent_dim - lab.shape[1])], 1)
        g = torch.as_tensor(goals, dtype=torch.float32)
        still = torch.zeros(k, 3)
        dec = nets.context_decoder
        at = dec(nets.normalize_rows(torch.cat([g, still], 1)), z_true)[:, 0].numpy()
        away = dec(nets.normalize_rows(torch.cat([-g, still], 1)), z_true)[:, 0].numpy()
    return {"checkpoint": str(checkpoint), "config": str(config), "seed": seed,
            "trajectories": rows_out,
            "decoder_at_goal": {"min": float(at.min()), "median": float(np.median(at))},
            "decoder_away": {"max_abs": float(np.abs(away).max())},
            "post_exploration_success": float(found.mean())}


def repeated_success(checkpoint: Path, config: Path, seeds: tuple[int, ...],
                     repeats: int) -> dict[str, float]:
    """The trainer's own reference-protocol evaluation of the checkpoint on the held-out
    goals, ``repeats`` per goal, once per env seed: held-out success per seed."""
    from pearl_robot.train.evaluation import evaluate_reference, summarize

    tr = _trainer(checkpoint, config)
    fam, tc = tr.family, tr.cfg.train
    out = {}
    for seed in seeds:
        ev = evaluate_reference(tr.agent, fam, fam.eval_indices, tr.envs,
                                num_steps=tc.num_steps_per_eval,
                                max_path_length=tc.max_path_length,
                                num_exp_traj=tc.num_exp_traj_eval, repeats=repeats, seed=seed)
        out[str(seed)] = summarize(ev, tc.num_exp_traj_eval).final_success
        print(f"env seed {seed}: held-out success {out[str(seed)]:.3f} over {repeats} repeats",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("checkpoint", type=Path)
    p.add_argument("config", type=Path, help="the training YAML the checkpoint was made with")
    p.add_argument("--seed", type=int, default=1000, help="env reset seed base")
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    p.add_argument("--repeats", type=int, default=0,
                   help="also score held-out success with this many repeats per goal at env "
                        "seeds 4321 and 99 (the trainer's evaluation)")
    args = p.parse_args(argv)
    res = diagnose(args.checkpoint, args.config, args.seed)
    if args.repeats:
        res["repeated_success"] = repeated_success(args.checkpoint, args.config, (4321, 99),
                                                   args.repeats)
        res["repeats"] = args.repeats
    print(f"decoder at goal: min {res['decoder_at_goal']['min']:.2f} median "
          f"{res['decoder_at_goal']['median']:.2f}; away max |r| "
          f"{res['decoder_away']['max_abs']:.2f}; post-exploration success "
          f"{res['post_exploration_success']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
