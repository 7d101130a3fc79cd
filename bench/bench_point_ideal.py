"""What the reference evaluation protocol allows on point-robot with exact inference.

An idealised PEARL: the posterior over the goal is exact (a grid over [-1, 1]^2, uniform prior,
each transition's reward -||p - g|| observed with Gaussian noise ``sigma``) and the policy is the
oracle driving to a goal sampled from it. The protocol is the reference's: 3 trajectories of 20
steps from random starts, the first with a prior sample, each later one with a sample from the
posterior given every earlier transition; the score is the oracle-normalized return of the third
(reported) trajectory on the 20 held-out goals. It separates what the protocol's information
allows from what PEARL's amortised product-of-Gaussians encoder extracts.

    .venv/bin/python -m bench.bench_point_ideal

Writes bench/results/point_ideal.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "point_ideal.json"


def ideal_score(sigma: float, repeats: int, grid: int, seed: int) -> dict:
    from pearl_robot.tasks.point_robot import HORIZON, oracle_action, rollout_return
    from pearl_robot.tasks.registry import make_family

    fam = make_family("point-robot")
    goals = np.array([fam.tasks[t].params["goal"] for t in fam.eval_indices])
    xs = np.linspace(-1.0, 1.0, grid)
    cells = np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    per_traj = np.zeros(3)
    reported = still = oracle = 0.0
    for _ in range(repeats):
        for g in goals:
            log_post = np.zeros(len(cells))
            for k in range(3):
                p = np.exp(log_post - log_post.max())
                target = cells[rng.choice(len(cells), p=p / p.sum())]
                s = rng.uniform(-1.0, 1.0, 2)
                start, ret = s.copy(), 0.0
                for _t in range(HORIZON):
                    s = s + oracle_action(s, target)
                    r = -float(np.linalg.norm(s - g))
                    ret += r
                    pred = -np.linalg.norm(cells - s, axis=1)
                    log_post += -0.5 * ((pred - r) / sigma) ** 2
                per_traj[k] += ret
            reported += ret
            still += rollout_return(start, g, "still")
            oracle += rollout_return(start, g, "oracle")
    n = repeats * len(goals)
    return {"sigma": sigma, "score_reported_traj": (reported - still) / (oracle - still),
            "mean_return_per_traj": (per_traj / n).tolist(), "still": still / n,
            "oracle": oracle / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--grid", type=int, default=161, help="posterior grid points per axis")
    p.add_argument("--quick", action="store_true", help="1 repeat, coarser grid")
    args = p.parse_args(argv)
    reps, grid = (1, 81) if args.quick else (args.repeats, args.grid)
    rows = [ideal_score(s, reps, grid, seed=0) for s in (0.01, 0.1, 0.3)]
    for r in rows:
        print(f"sigma {r['sigma']:.2f}: score {r['score_reported_traj']:.3f}, mean return per "
              f"trajectory {np.round(r['mean_return_per_traj'], 2).tolist()}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"repeats": reps, "grid": grid, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
