"""Two bundles on the same held-out tasks, paired: which one should the robot run?

The runtime drives the twin (nominal physics, no ROS) exactly as ``bench_retrain`` measures a
retrain: ``--episodes`` consecutive episodes per task and repeat with the belief carried across
them, deterministic actions, starts and z noise seeded per (task, repeat, episode) so both
bundles see the same draws. Reported per episode index: mean return and oracle-normalized score
(zero effort 0, the PD + gravity oracle 1) over the tasks, and the paired difference B - A on
the last episode. Used to decide whether a new ``make model`` replaces ``models/arm3``.

  python -m bench.compare_bundles models/arm3 runs/arm3-candidate --episodes 2 --repeats 2 \\
      --json bench/results/compare_arm3.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.bench_retrain import _curve, _paired, measure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="bundle A (e.g. the shipped models/arm3)")
    p.add_argument("b", type=Path, help="bundle B (the candidate)")
    p.add_argument("--episodes", type=int, default=2,
                   help="consecutive episodes per task (the first explores; default 2)")
    p.add_argument("--repeats", type=int, default=2, help="repeats per task (default 2)")
    p.add_argument("--tasks", type=int, default=0,
                   help="first N held-out tasks (default 0: all of them)")
    p.add_argument("--z-mode", choices=("episode", "step"), default="episode",
                   help="the policy node's z_mode (default episode, as config/adapt.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)

    from pearl_robot.runtime.bundle import read_contract
    from pearl_robot.tasks.registry import make_family

    ca, cb = read_contract(args.a), read_contract(args.b)
    fa, fb = dict(ca.task_family)["name"], dict(cb.task_family)["name"]
    if fa != fb:
        print(f"error: bundle A is for {fa!r}, bundle B for {fb!r}", file=sys.stderr)
        return 2
    family = make_family(str(fa))
    tasks = list(family.eval_indices)
    tasks = tasks[:args.tasks] if args.tasks > 0 else tasks
    baselines: dict = {}
    out = {"command": "python -m bench.compare_bundles " + " ".join(argv or sys.argv[1:]),
           "seed": args.seed, "tasks": tasks, "episodes": args.episodes,
           "repeats": args.repeats, "z_mode": args.z_mode}
    measured = {}
    for name, path, c in (("a", args.a, ca), ("b", args.b, cb)):
        t0 = time.monotonic()
        m = measure(path, family, tasks, z_mode=args.z_mode, episodes=args.episodes,
                    repeats=args.repeats, seed=args.seed, baselines=baselines)
        measured[name] = m
        curve = _curve(m)
        out[name] = {"bundle": str(path), "contract_sha256": c.contract_sha256,
                     "wall_s": round(time.monotonic() - t0, 1), **curve}
        print(f"{name} {path}: return per episode "
              + " ".join(f"{v:.1f}" for v in curve["return_mean"])
              + "; normalized " + " ".join(f"{v:.3f}" for v in curve["normalized_mean"])
              + f" ({out[name]['wall_s']:.0f} s)", flush=True)
    out["b_minus_a"] = _paired(measured["a"], measured["b"])
    d = out["b_minus_a"]
    print(f"B - A on the last episode: {d['last_episode_return_gain']:+.2f} "
          f"(sem {d['last_episode_return_gain_sem']:.2f}), better on {d['tasks_improved']} "
          f"of {d['tasks']} tasks; all episodes {d['all_episodes_return_gain']:+.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
