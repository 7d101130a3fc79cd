"""The particle belief as the robot runs it, against the trainer's evaluation of the same model.

A sparse point-robot particle checkpoint (``pearl.refinement: particles``) is exported to a
bundle (ONNX actor + the per-tick particle step graph, parity-checked), and the held-out goals
are run twice under the reference protocol's schedule (``num_exp_traj_eval`` exploration
trajectories with z from the uniform particle set, then z = one particle drawn by weight per
trajectory, ``num_steps_per_eval`` steps per goal, belief carried across the trajectories):

- **trainer**: ``train.evaluation.evaluate_reference`` on the torch agent (the number the
  learning bench reports);
- **robot runtime**: ``runtime.policy.PolicyRuntime`` on the bundle, one tick per step (the
  step graph adds each transition's log-likelihood to the log-weights), z schedule
  ``episode`` with ``exploration_episodes`` = the exploration trajectories, the context reward
  from the family's ``transition_reward`` as the policy node computes it.

Success: the goal radius reached in any post-exploration trajectory of a (goal, repeat), the
trainer's ``final_success``. The two draw their particles from different generators, so they
agree to sampling noise, not bit for bit.

  python -m bench.particles_on_robot RUN/particles/final.pt --repeats 4 \\
      --json bench/results/particles_on_robot.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def run_runtime(bundle: Path, family, indices: list[int], *, traj: int, horizon: int,
                num_exp: int, repeats: int, seed: int) -> np.ndarray:
    """successes [tasks, repeats, trajectories] of the robot runtime on the bundle."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
    from pearl_robot.runtime.task_reward import reward_function

    runtime = PolicyRuntime(bundle, RuntimeConfig(z_schedule="episode",
                                                  exploration_episodes=num_exp,
                                                  context_window=traj * horizon),
                            rng=np.random.default_rng(seed))
    env = family.make_env(seed=seed)
    succ = np.zeros((len(indices), repeats, traj), dtype=bool)
    try:
        for i, t in enumerate(indices):
            task = family.tasks[t]
            env.set_task(task)
            reward_fn = reward_function(family, task)
            for rep in range(repeats):
                runtime.rng = np.random.default_rng(_seed(seed, t, rep))
                for j in range(traj):
                    runtime.begin_episode(task=(t, rep))  # same key: the belief carries on
                    obs, _ = env.reset(seed=_seed(seed, t, rep, j))
                    prev = None
                    for _ in range(horizon):
                        out = runtime.tick(obs, prev, obs_age=0.0)
                        step = env.step(out.command)
                        prev = reward_fn(obs, out.command, step.obs).context
                        succ[i, rep, j] |= bool(step.info.get(family.success_key))
                        obs = step.obs
                    runtime.end_episode(obs, prev)
    finally:
        runtime.close()
    return succ


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a particle checkpoint (sparse point-robot)")
    p.add_argument("--repeats", type=int, default=4, help="repeats per held-out goal")
    p.add_argument("--seed", type=int, default=4321, help="env and sampling seed")
    p.add_argument("--bundle", type=Path, default=None,
                   help="export here (default: a temporary directory)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from bench.held_out import load_held_out
    from pearl_robot.core.checkpoint import load_checkpoint
    from pearl_robot.export.exporter import export_checkpoint
    from pearl_robot.train.evaluation import evaluate_reference, summarize

    ck = load_checkpoint(args.checkpoint)
    tc, pc = ck.config.train, ck.config.pearl
    if pc.refinement != "particles":
        print(f"error: {args.checkpoint} is not a particle model (pearl.refinement "
              f"{pc.refinement!r})", file=sys.stderr)
        return 2
    held = load_held_out(args.checkpoint)
    family, indices = held.family, held.indices
    horizon = min(tc.max_path_length, held.envs[0].max_episode_steps)
    traj = max(1, math.ceil(tc.num_steps_per_eval / horizon))
    num_exp = tc.num_exp_traj_eval
    out = {"command": "python -m bench.particles_on_robot " + " ".join(argv or sys.argv[1:]),
           "checkpoint": str(args.checkpoint), "seed": args.seed, "repeats": args.repeats,
           "goals": indices, "trajectories": traj, "horizon": horizon,
           "exploration_trajectories": num_exp,
           "trainer_iteration": (ck.trainer or {}).get("iteration")}

    t0 = time.monotonic()
    evals = evaluate_reference(held.agent, family, indices, held.envs,
                               num_steps=tc.num_steps_per_eval, max_path_length=horizon,
                               num_exp_traj=num_exp, repeats=args.repeats, seed=args.seed)
    trainer = summarize(evals, num_exp).final_success
    out["trainer"] = {"final_success": trainer, "wall_s": round(time.monotonic() - t0, 1)}
    print(f"trainer's evaluation (torch): held-out success {trainer:.3f} "
          f"({len(indices)} goals x {args.repeats} repeats)", flush=True)

    with tempfile.TemporaryDirectory(prefix="pearl-particles-") as tmp:
        bundle = args.bundle or Path(tmp) / "bundle"
        t0 = time.monotonic()
        res = export_checkpoint(args.checkpoint, bundle)
        out["export"] = {"bundle": str(bundle), "wall_s": round(time.monotonic() - t0, 1),
                         "bundle_sha256": res.bundle_sha256,
                         "parity_max_abs_error": (res.contract.get("provenance") or {}).get(
                             "parity_max_abs_error")}
        t0 = time.monotonic()
        succ = run_runtime(bundle, family, indices, traj=traj, horizon=horizon,
                           num_exp=num_exp, repeats=args.repeats, seed=args.seed)
        wall = time.monotonic() - t0
    post = succ[:, :, num_exp:]
    robot = float(post.any(axis=2).mean())
    ticks = succ.size * horizon
    out["runtime"] = {"final_success": robot, "wall_s": round(wall, 1), "ticks": ticks,
                      "per_goal": post.any(axis=2).mean(axis=1).tolist()}
    print(f"robot runtime (onnxruntime, per-tick particle step): held-out success "
          f"{robot:.3f}; {ticks} ticks in {wall:.1f} s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
