"""Where a point-robot PEARL policy loses score: the policy given a good context, or the
inference from the evaluation's deterministic exploration trajectories.

For each held-out task the trained agent gets three kinds of context and then drives one
deterministic trajectory with z from the resulting posterior (sampled and mean):
  stoch10  64 transitions drawn from 10 stochastic prior-z trajectories (what training sees)
  det1     the 20 transitions of one deterministic prior-z trajectory (evaluation, 2nd traj.)
  det2     40 transitions: det1 + one deterministic trajectory with z from det1's posterior
           (evaluation, 3rd = reported trajectory)
Scores are oracle-normalized with the average still/oracle returns of the held-out tasks.

    .venv/bin/python -m bench.bench_point_context --checkpoint /tmp/bench_point/pearl/final.pt

(the checkpoint comes from `bench.bench_point_robot --out /tmp/bench_point`; without one this
benchmark says so and does nothing). Writes bench/results/point_context.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "point_context.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("/tmp/bench_point/pearl/final.pt"))
    p.add_argument("--quick", action="store_true", help="(no effect; already quick)")
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"no checkpoint at {args.checkpoint}: run bench.bench_point_robot first; skipped")
        return 0
    import torch

    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.core.pearl import PearlAgent
    from pearl_robot.core.posterior import prior
    from pearl_robot.core.replay import context_from_path
    from pearl_robot.tasks.point_robot import rollout_return
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.sampler import rollout_batch

    torch.set_num_threads(1)
    ck = load_checkpoint(args.checkpoint)
    agent = PearlAgent(networks_from_checkpoint(ck), "cpu", torch.Generator().manual_seed(0))
    fam = make_family(ck.config.train.task_family)
    idx = fam.eval_indices
    k = len(idx)
    envs = [fam.make_env(seed=i) for i in range(k)]
    for e, t in zip(envs, idx):
        e.set_task(fam.tasks[t])
    rng = np.random.default_rng(0)
    starts = rng.uniform(-1, 1, (2000, 2))
    goals = [np.asarray(fam.tasks[t].params["goal"]) for t in idx]
    still = np.mean([rollout_return(s, goals[i % k], "still") for i, s in enumerate(starts)])
    oracle = np.mean([rollout_return(s, goals[i % k], "oracle") for i, s in enumerate(starts)])
    latent = agent.cfg.latent_dim
    rows_out = []
    with torch.inference_mode():
        for mode, ntraj in (("stoch10", 10), ("det1", 1), ("det2", 2)):
            ctx_rows: list[list[np.ndarray]] = [[] for _ in range(k)]
            for j in range(ntraj):
                if mode == "det2" and j == 1:
                    post = agent.infer_posterior(torch.as_tensor(
                        np.stack([np.concatenate(r) for r in ctx_rows])))
                    z = agent.sample_z(post)
                else:
                    z = agent.sample_z(prior((k,), latent))
                trs = rollout_batch(envs, agent, z, 20, mode != "stoch10",
                                    [1000 + 31 * j + i for i in range(k)])
                for i, tr in enumerate(trs):
                    ctx_rows[i].append(context_from_path(tr.path, False))
            ctx = np.stack([np.concatenate(r) for r in ctx_rows])
            if mode == "stoch10":
                ctx = ctx[:, rng.choice(ctx.shape[1], 64, replace=False)]
            post = agent.infer_posterior(torch.as_tensor(ctx))
            for zmode in ("sample", "mean"):
                z = agent.sample_z(post) if zmode == "sample" else post.mean
                trs = rollout_batch(envs, agent, z, 20, True, [5000 + i for i in range(k)])
                ret = float(np.mean([t.env_return for t in trs]))
                score = (ret - still) / (oracle - still)
                rows_out.append({"context": mode, "z": zmode, "return": ret, "score": score,
                                 "posterior_var_mean": float(post.var.mean())})
                print(f"{mode:8s} z={zmode:6s} return {ret:7.2f}  score {score:.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"checkpoint": str(args.checkpoint), "still": still,
                                   "oracle": oracle, "rows": rows_out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
