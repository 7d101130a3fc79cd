"""Where a sparse point-robot PEARL agent fails: exploration or inference after the find.

For a trained sparse-point-robot checkpoint, on the 20 held-out goals (unit half-circle,
radius 0.2):
  prior z    where deterministic trajectories with z ~ N(0, I) end: mean radius (the goals are
             at 1.0) and a histogram of end angles (goals lie between 0 and 180 degrees)
  protocol   the reference evaluation (20 trajectories, posterior after the 5th): success per
             trajectory index, the share of tasks whose goal an exploration trajectory found,
             and the share reached again after exploration

    .venv/bin/python -m bench.bench_sparse_exploration \
        --checkpoint runs/sparse/checkpoints/latest.pt

(without a checkpoint this benchmark says so and does nothing). Writes
bench/results/sparse_exploration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "sparse_exploration.json"
ANGLE_BINS = [-180, 0, 36, 72, 108, 144, 180]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=Path("runs/sparse/checkpoints/latest.pt"))
    p.add_argument("--quick", action="store_true", help="(no effect; already quick)")
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"no checkpoint at {args.checkpoint}: train sparse-point-robot first; skipped")
        return 0
    import torch

    from bench.held_out import load_held_out
    from pearl_robot.core.posterior import prior
    from pearl_robot.core.replay import context_from_path
    from pearl_robot.train.sampler import rollout_batch

    agent, fam, idx, envs = load_held_out(args.checkpoint)
    if not getattr(fam, "sparse", False):
        print(f"{args.checkpoint} is a {fam.name} checkpoint, not sparse-point-robot; skipped")
        return 0
    k, latent = len(idx), agent.cfg.latent_dim

    def run(z: torch.Tensor, seed0: int):  # noqa: ANN202
        return rollout_batch(envs, agent, z, 20, True, [seed0 + i for i in range(k)],
                             fam.context_reward_key, fam.success_key)

    with torch.inference_mode():
        ends = np.concatenate([[tr.path.next_obs[-1] for tr in
                                run(agent.sample_z(prior((k,), latent)), 100 * j)]
                               for j in range(8)])
        rows: list[list[np.ndarray]] = [[] for _ in range(k)]
        succ = np.zeros((k, 20), dtype=bool)
        belief = prior((k,), latent)
        for j in range(20):
            for i, tr in enumerate(run(agent.sample_z(belief), 5000 + 100 * j)):
                rows[i].append(context_from_path(tr.path, agent.cfg.use_next_obs_in_context))
                succ[i, j] = tr.success
            if j + 1 >= 5:
                belief = agent.infer_posterior(torch.as_tensor(
                    np.stack([np.concatenate(r) for r in rows])))
    angles = np.degrees(np.arctan2(ends[:, 1], ends[:, 0]))
    hist = np.histogram(angles, bins=ANGLE_BINS)[0]
    found = succ[:, :5].any(axis=1)
    out = {
        "checkpoint": str(args.checkpoint),
        "prior_z_end_radius_mean": float(np.linalg.norm(ends, axis=1).mean()),
        "prior_z_end_angle_bins_deg": ANGLE_BINS, "prior_z_end_angle_counts": hist.tolist(),
        "success_per_trajectory": succ.mean(axis=0).tolist(),
        "found_during_exploration": float(found.mean()),
        "success_after_exploration": float(succ[:, 5:].any(axis=1).mean()),
        "success_after_exploration_when_found": float(succ[found, 5:].any(axis=1).mean())
        if found.any() else None,
    }
    print(f"prior-z trajectories end at radius {out['prior_z_end_radius_mean']:.2f} (goals at "
          f"1.0); end angles {dict(zip(ANGLE_BINS[1:], hist.tolist()))} (bin upper edges, deg)")
    print(f"found during exploration {out['found_during_exploration']:.2f}; reached after "
          f"exploration {out['success_after_exploration']:.2f} (of the found: "
          f"{out['success_after_exploration_when_found']})")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
