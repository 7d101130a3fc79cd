"""Where a point-robot PEARL policy loses score: the policy given a good context, or the
inference from the evaluation's deterministic exploration trajectories.

For each held-out task the trained agent gets three kinds of context and then drives one
deterministic trajectory with z from the resulting posterior (sampled and mean):
  stoch10  64 transitions drawn from 10 stochastic prior-z trajectories (what training sees)
  det1     the 20 transitions of one deterministic prior-z trajectory (evaluation, 2nd traj.)
  det2     40 transitions: det1 + one deterministic trajectory with z from det1's posterior
           (evaluation, 3rd = reported trajectory)
Scores are oracle-normalized with the average still/oracle returns of the held-out tasks.

Two more measurements separate the policy from the inference:
  best z     per held-out task, the z that maximises the true return (cross-entropy method,
             deterministic rollouts from 8 fixed starts): what the actor can do when z is right
  shrinkage  where the policy stops with z = posterior mean of a stoch10 context, fitted as
             final position = W goal + b (W = identity for perfect inference)
  decoding   how much goal information the posterior mean carries: a linear map z -> goal
             fitted on the 80 training tasks (stoch10 contexts, 20 draws each), its mean
             error on the 20 held-out tasks

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

    from bench.held_out import load_held_out
    from pearl_robot.core.posterior import prior
    from pearl_robot.core.replay import context_from_path
    from pearl_robot.tasks.point_robot import rollout_return
    from pearl_robot.train.sampler import rollout_batch

    agent, fam, idx, envs = load_held_out(args.checkpoint)
    k = len(idx)
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
                stoch_ctx = ctx
            post = agent.infer_posterior(torch.as_tensor(ctx))
            for zmode in ("sample", "mean"):
                z = agent.sample_z(post) if zmode == "sample" else post.mean
                trs = rollout_batch(envs, agent, z, 20, True, [5000 + i for i in range(k)])
                ret = float(np.mean([t.env_return for t in trs]))
                score = (ret - still) / (oracle - still)
                rows_out.append({"context": mode, "z": zmode, "return": ret, "score": score,
                                 "posterior_var_mean": float(post.var.mean())})
                print(f"{mode:8s} z={zmode:6s} return {ret:7.2f}  score {score:.3f}")
        best = best_z_score(agent, fam, idx, rng)
        print(f"best z per task (CEM on the true return): score {best:.3f}")
        post = agent.infer_posterior(torch.as_tensor(stoch_ctx))
        finals = np.mean([[tr.path.next_obs[-1] for tr in rollout_batch(
            envs, agent, post.mean, 20, True, [7000 + 13 * rep + i for i in range(k)])]
            for rep in range(4)], axis=0)
        w, *_ = np.linalg.lstsq(np.c_[np.asarray(goals), np.ones(k)], finals, rcond=None)
        miss = float(np.linalg.norm(finals - np.asarray(goals), axis=1).mean())
        print(f"stoch10 posterior mean: final position = W goal + b with W = "
              f"{np.round(w[:2], 2).tolist()}, mean miss {miss:.3f}")
        decode = linear_decoding_error(agent, fam, rng)
        print(f"linear decoding of the goal from the posterior mean: held-out error "
              f"{decode:.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"checkpoint": str(args.checkpoint), "still": still,
                                   "oracle": oracle, "rows": rows_out, "best_z_score": best,
                                   "shrinkage_W": w[:2].tolist(), "mean_miss": miss,
                                   "linear_decoding_error": decode},
                                  indent=2))
    return 0


def linear_decoding_error(agent, fam, rng, draws: int = 20) -> float:  # noqa: ANN001
    """Mean held-out error of a least-squares map (posterior mean, 1) -> goal fitted on the
    training tasks, posteriors from 64 of 200 stochastic prior-z transitions per task."""
    import torch

    from pearl_robot.core.posterior import prior
    from pearl_robot.core.replay import context_from_path
    from pearl_robot.train.sampler import rollout_batch

    tasks = list(fam.train_indices) + list(fam.eval_indices)
    envs = [fam.make_env(seed=i) for i in range(len(tasks))]
    for e, t in zip(envs, tasks):
        e.set_task(fam.tasks[t])
    rows: list[list[np.ndarray]] = [[] for _ in tasks]
    for j in range(10):
        z = agent.sample_z(prior((len(tasks),), agent.cfg.latent_dim))
        for i, tr in enumerate(rollout_batch(envs, agent, z, 20, False,
                                             [3000 + 101 * j + i for i in range(len(tasks))])):
            rows[i].append(context_from_path(tr.path, agent.cfg.use_next_obs_in_context))
    full = np.stack([np.concatenate(r) for r in rows])
    means = np.stack([agent.infer_posterior(torch.as_tensor(
        full[:, rng.choice(full.shape[1], 64, replace=False)])).mean.numpy()
        for _ in range(draws)])  # [draws, tasks, latent]
    goals = np.array([fam.tasks[t].params["goal"] for t in tasks])
    n_train = len(fam.train_indices)
    x = np.concatenate([means, np.ones(means.shape[:2] + (1,))], axis=-1)
    coef, *_ = np.linalg.lstsq(x[:, :n_train].reshape(-1, x.shape[-1]),
                               np.tile(goals[:n_train], (draws, 1)), rcond=None)
    err = np.linalg.norm(x[:, n_train:] @ coef - goals[n_train:], axis=-1)
    return float(err.mean())


def best_z_score(agent, fam, idx, rng, starts_per_task: int = 8,  # noqa: ANN001
                 iterations: int = 12, population: int = 24, elite: int = 6) -> float:
    """Oracle-normalized score of the best z found per task by the cross-entropy method."""
    import torch

    from pearl_robot.tasks.point_robot import rollout_return

    k, latent = len(idx), agent.cfg.latent_dim
    goals = [np.asarray(fam.tasks[t].params["goal"]) for t in idx]
    starts = rng.uniform(-1, 1, (starts_per_task, 2))
    still = np.mean([rollout_return(s, g, "still") for s in starts for g in goals])
    oracle = np.mean([rollout_return(s, g, "oracle") for s in starts for g in goals])
    runs = [fam.make_env(seed=j) for j in range(k * starts_per_task)]
    for j, e in enumerate(runs):
        e.set_task(fam.tasks[idx[j // starts_per_task]])
    obs0 = np.tile(starts, (k, 1))

    def returns(z: torch.Tensor) -> np.ndarray:  # [k, latent] -> mean return per task
        obs = obs0.copy()
        for e, s in zip(runs, obs0):
            e.reset_to(s)
        total = np.zeros(len(runs))
        zz = z.repeat_interleave(starts_per_task, dim=0)
        for _ in range(20):
            phys, _ = agent.act(obs, zz, deterministic=True)
            for j, e in enumerate(runs):
                st = e.step(phys[j])
                total[j] += st.reward
                obs[j] = st.obs
        return total.reshape(k, starts_per_task).mean(1)

    gen = torch.Generator().manual_seed(0)
    mu, sd = torch.zeros(k, latent), torch.full((k, latent), 3.0)
    best = np.full(k, -np.inf)
    for _ in range(iterations):
        cands = mu + sd * torch.randn(population, k, latent, generator=gen)
        sc = np.stack([returns(c) for c in cands])
        order = np.argsort(-sc, axis=0)[:elite]
        elites = torch.stack([cands[order[:, i], i] for i in range(k)], 1)
        mu, sd = elites.mean(0), elites.std(0) + 0.05
        best = np.maximum(best, sc.max(0))
    return float((best.mean() - still) / (oracle - still))


if __name__ == "__main__":
    sys.exit(main())
