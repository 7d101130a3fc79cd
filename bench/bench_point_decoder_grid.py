"""How much goal information the "pooled" head leaves on the table: amortized belief vs exact
Bayesian inference under the model's own reward decoder, on point-robot's held-out goals.

For each held-out task the checkpoint's agent runs the reference protocol's three deterministic
trajectories (prior belief first, then the belief after each trajectory). After each one the
goal is estimated twice from the same context: by the amortized belief (its first two dims) and
by a 41 x 41 grid posterior over the goal with the reward decoder's Gaussian likelihood
(``--sigma``) of every transition's reward, the free latent dims held at the belief mean. The
gap between the two is what a test-time refinement with the decoder could add (the issue's
optional particle refinement); the policy is not involved.

    .venv/bin/python -m bench.bench_point_decoder_grid --checkpoint runs/point_pooled/final.pt

Writes bench/results/point_decoder_grid.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "point_decoder_grid.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a pooled point-robot run")
    p.add_argument("--sigma", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"no checkpoint at {args.checkpoint}", file=sys.stderr)
        return 2
    import torch

    from bench.held_out import load_held_out
    from pearl_robot.core.posterior import prior
    from pearl_robot.train.evaluation import _seed
    from pearl_robot.train.sampler import rollout_batch

    h = load_held_out(args.checkpoint)
    agent, nets = h.agent, h.agent.nets
    if agent.cfg.inference != "pooled":
        print("the checkpoint's inference is not 'pooled'", file=sys.stderr)
        return 2
    goals = np.array([h.family.tasks[t].params["goal"] for t in h.indices])
    xs = np.linspace(-1.0, 1.0, 41)
    grid = torch.as_tensor(np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2),
                           dtype=torch.float32)
    rows_out = []
    with torch.inference_mode():
        belief = prior((len(h.indices),), agent.cfg.latent_dim)
        paths: list[list] = [[] for _ in h.indices]
        for j in range(3):
            trajs = rollout_batch(h.envs, agent, agent.sample_z(belief), 20, True,
                                  [_seed(5, t, 0, j) for t in h.indices])
            for i, tr in enumerate(trajs):
                paths[i].append(tr.path)
            ctx = np.stack([np.concatenate([nets.layout.rows(p.obs, p.actions, p.context_rewards,
                                                             p.next_obs) for p in ps])
                            for ps in paths])
            belief = agent.infer_posterior(torch.as_tensor(ctx))
            amortized = np.linalg.norm(belief.mean[:, :2].numpy() - goals, axis=-1)
            row = {"after_trajectory": j + 1, "context_rows": int(ctx.shape[1]),
                   "amortized_goal_error": float(amortized.mean()),
                   "amortized_std": float(np.sqrt(belief.var[:, :2].numpy()).mean())}
            for sigma in args.sigma:
                errs = []
                for i, ps in enumerate(paths):
                    cat = {k: torch.as_tensor(np.concatenate([getattr(q, k) for q in ps]))
                           for k in ("obs", "actions", "next_obs", "rewards")}
                    K, N = grid.shape[0], cat["obs"].shape[0]
                    z = belief.mean[i].expand(K, -1).clone()
                    z[:, :2] = grid
                    pred = nets.decoder(nets.obs_norm(cat["obs"]).expand(K, N, -1),
                                        cat["actions"].expand(K, N, -1),
                                        nets.obs_norm(cat["next_obs"]).expand(K, N, -1),
                                        z[:, None].expand(K, N, -1))[..., 0]
                    ll = -((pred - cat["rewards"][:, 0]) ** 2).sum(-1) / (2.0 * sigma ** 2)
                    est = (torch.softmax(ll, 0)[:, None] * grid).sum(0).numpy()
                    errs.append(float(np.linalg.norm(est - goals[i])))
                row[f"decoder_grid_goal_error_sigma_{sigma:g}"] = float(np.mean(errs))
            rows_out.append(row)
            print(json.dumps(row))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint),
                                    "command": "python -m bench.bench_point_decoder_grid "
                                    + " ".join(argv or sys.argv[1:]),
                                    "rows": rows_out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
