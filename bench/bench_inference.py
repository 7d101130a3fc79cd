"""Task inference side by side: PEARL, the "pooled" mode, no inference, and a privileged policy.

Every variant trains the same task family with the same seed and the same wall-clock cap, one
process and one torch thread each (``--parallel`` of them at a time; 2 on a 2-core machine),
and is evaluated on the held-out tasks every iteration:

- ``pearl``: faithful PEARL (``pearl.inference: pog``: per-transition Gaussian factors
  multiplied together, encoder trained through the critic and the KL);
- ``pooled``: the set encoder with mean/max pooling and a Gaussian belief head, trained by
  task-label likelihood and reward reconstruction, policy on the belief's mean and std; its
  belief-only steps relabel half their tasks (``pearl.task_relabeling``) where the family's
  config asks for it;
- ``information``: the pooled recipe with the "information" belief head (each row a learned
  linear measurement of z, the belief their exact full-covariance product with the prior;
  twin-arm);
- ``particles``: the pooled belief refined after exploration by particles over z weighted by
  a learned context-reward likelihood (``pearl.refinement``; sparse-point-robot);
- ``pooled_no_relabel``: the same without task relabelling (the ablation);
- ``no_inference``: the same SAC as ``pearl`` with z = 0 (the floor);
- ``privileged``: the policy is given the true task parameters (the ceiling for the policy
  itself); the oracle controller is the 1.0 line of the normalized score.

Scores. point-robot: the reference protocol (belief reset per task, posterior re-inferred after
each trajectory, the last of 3 trajectories reported), oracle-normalized, bar 0.9; at the end
each variant's final model is also scored on held-out goals drawn with another seed
(``--goal-seed``; never trained on). sparse-point-robot: held-out success, bar 0.8. twin-arm:
the online mode the policy node runs (belief updated every tick, z = the belief), the second
episode after one episode of adaptation, normalized return and success (bars 0.85 and 50 %).

    .venv/bin/python -m bench.bench_inference                        # point-robot, 15-min caps
    .venv/bin/python -m bench.bench_inference --cap 120 --variants pearl pooled   # a quick look
    .venv/bin/python -m bench.bench_inference --family twin-arm --cap 1800

Writes bench/results/inference_<family>.json and docs/img/inference_<family>.png (score
against wall clock and against gradient steps).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# family -> (config of the PEARL-side variants, config of the pooled-side variants, bars)
FAMILIES: dict[str, dict[str, Any]] = {
    "point-robot": {"pog": "config/train/point_robot_fast.yaml",
                    "pooled": "config/train/point_robot_pooled.yaml",
                    "score": "eval/test_normalized", "bar": 0.9},
    "sparse-point-robot": {"pog": "config/train/sparse_point_robot_fast.yaml",
                           "pooled": "config/train/sparse_point_robot_pooled.yaml",
                           "particles": "config/train/sparse_point_robot_particles.yaml",
                           "score": "eval/test_success", "bar": 0.8},
    "twin-arm": {"pog": "config/train/twin_arm.yaml",
                 "pooled": "config/train/twin_arm_pooled.yaml",
                 "information": "config/train/twin_arm_information.yaml",
                 "score": "online/normalized", "bar": 0.85, "success_bar": 0.5},
}
VARIANTS = ("pearl", "pooled", "information", "particles", "pooled_no_relabel", "no_inference",
            "privileged")
DEFAULT_VARIANTS = ("pearl", "pooled", "no_inference", "privileged")
OWN_CONFIG = ("particles", "information")
"""Variants trained from a config of their own (a FAMILIES key of the same name)."""


def split_variant(spec: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """``NAME`` or ``NAME@section.key=value,...`` (an ablation of one variant, e.g.
    ``privileged@pearl.target_entropy=-9``) -> (NAME, config overrides). Values are YAML."""
    import yaml

    name, _, rest = spec.partition("@")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r} in {spec!r}; choose from {VARIANTS}")
    over: dict[str, dict[str, Any]] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not (eq and dot and section in ("pearl", "train") and field):
            raise SystemExit(f"override {item!r} in {spec!r} is not pearl.KEY=VALUE or "
                             "train.KEY=VALUE")
        over.setdefault(section, {})[field] = yaml.safe_load(value)
    return name, over


def variant_config(family: str, spec: str, seed: int,
                   validation: int = 0):  # noqa: ANN201 - ExperimentConfig
    from pearl_robot.core.config import load_experiment, merge

    variant, ablation = split_variant(spec)
    fam = FAMILIES[family]
    if variant in OWN_CONFIG and variant not in fam:
        raise SystemExit(f"{family} has no {variant} config")
    key = "pooled" if variant in ("pooled", "pooled_no_relabel", "privileged") else \
        variant if variant in OWN_CONFIG else "pog"
    base = load_experiment(ROOT / fam[key])
    # the wall-clock cap ends every run, not the configs' iteration counts
    over: dict[str, dict[str, Any]] = {"train": {"seed": seed, "torch_threads": 1,
                                                 "num_iterations": 1_000_000,
                                                 "checkpoint_every": 1_000_000,
                                                 "validation_tasks": validation}}
    if variant == "no_inference":
        over["pearl"] = {"task_inference": False}
    elif variant == "privileged":
        over["pearl"] = {"inference": "privileged", "task_relabeling": "off"}
    elif variant == "pooled_no_relabel":
        over["pearl"] = {"task_relabeling": "off"}
    for section, fields in ablation.items():
        over.setdefault(section, {}).update(fields)
    return merge(base, over)


def online_score(trainer, episodes: int = 2) -> dict[str, float]:  # noqa: ANN001
    """The policy node's protocol: belief updated every tick, z = the belief (mean, or the
    belief itself for a belief-input policy); the last of ``episodes`` episodes is scored."""
    from pearl_robot.train.evaluation import evaluate_online, summarize

    tc = trainer.cfg.train
    fam = trainer.family
    evals = evaluate_online(trainer.agent, fam, fam.eval_indices, trainer.envs,
                            num_episodes=episodes, max_path_length=tc.max_path_length,
                            repeats=1, seed=1234 + trainer.iteration, z_schedule="mean")
    s = summarize(evals, episodes - 1)
    return {"online/normalized": s.final_normalized, "online/success": s.final_success,
            "online/final_return": s.final_return, "online/first_return": s.first_return}


def other_goals_score(trainer, goal_seed: int) -> dict[str, float]:  # noqa: ANN001
    """The trainer's model on 20 held-out goals drawn with ``goal_seed`` (reference protocol);
    ``goal_seed`` None: the family's own held-out goals."""
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.evaluation import evaluate_reference, summarize

    tc = trainer.cfg.train
    fam = trainer.family if goal_seed is None else make_family(trainer.family.name,
                                                               seed=goal_seed)
    evals = evaluate_reference(trainer.agent, fam, fam.eval_indices, trainer.envs,
                               num_steps=tc.num_steps_per_eval,
                               max_path_length=tc.max_path_length,
                               num_exp_traj=tc.num_exp_traj_eval, repeats=4,
                               seed=goal_seed if goal_seed is not None else 4321)
    s = summarize(evals, tc.num_exp_traj_eval)
    return {"goal_seed": goal_seed, "normalized": s.final_normalized,
            "success": s.final_success, "final_return": s.final_return}


def train_variant(family: str, variant: str, seed: int, cap_s: float, out: Path,
                  goal_seed: int, validation: int = 0) -> dict[str, Any]:
    import torch

    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    torch.set_num_threads(1)
    cfg = variant_config(family, variant, seed, validation)
    spec = FAMILIES[family]
    key, bar = spec["score"], spec["bar"]
    tr = MetaTrainer(cfg, make_family(family), out, tensorboard=False, progress=False)
    t0 = time.perf_counter()
    curve: list[dict[str, float]] = []
    reached = None
    while time.perf_counter() - t0 < cap_s and tr.iteration < cfg.train.num_iterations:
        row = dict(tr.run_iteration().metrics)
        if key.startswith("online/"):
            row.update(online_score(tr))
        t = time.perf_counter() - t0
        point = {"wall_s": round(t, 1), "grad_steps": tr.grad_steps, "env_steps": tr.env_steps,
                 "score": row.get(key, math.nan),
                 "success": row.get("online/success", row.get("eval/test_success", math.nan)),
                 "return": row.get("eval/test_final_return", math.nan),
                 "label_rmse": row.get("inference/label_rmse", math.nan),
                 "val_score": row.get("eval/val_score", math.nan)}
        curve.append(point)
        print(f"  {variant:>12}: it {tr.iteration:4d} t={t:6.0f}s grad={tr.grad_steps:7d} "
              f"score={point['score']:.3f} success={point['success']:.2f}", flush=True)
        if reached is None and math.isfinite(point["score"]) and point["score"] >= bar:
            reached = point
    wall = time.perf_counter() - t0
    tr.save(out / "final.pt")
    result: dict[str, Any] = {"variant": variant, "seed": seed, "cap_s": cap_s,
                              "wall_s": round(wall, 1), "curve": curve, "reached_bar": reached,
                              # the last evaluated iteration (eval_every may skip the last)
                              "final": next((c for c in reversed(curve)
                                             if math.isfinite(c["score"])), None),
                              "best_score": max((c["score"] for c in curve
                                                 if math.isfinite(c["score"])), default=None),
                              "checkpoint": str(out / "final.pt")}
    if family == "point-robot":
        result["other_goals"] = other_goals_score(tr, goal_seed)
    best = out / "checkpoints" / "best.pt"
    if validation and best.is_file():
        # The model a user would ship: the best validation score, chosen without the
        # held-out tasks; scored on them (and on another seed's goals) with 4 repeats.
        from pearl_robot.core.checkpoint import load_checkpoint

        ck = load_checkpoint(best)
        tr.nets.load_state_dict(ck.networks)
        picked = next(c for c in curve if c["val_score"] == ck.trainer["best_val"])
        result["validated"] = {"checkpoint": str(best), "iteration": ck.trainer["iteration"],
                               "wall_s": picked["wall_s"], "grad_steps": picked["grad_steps"],
                               "val_score": ck.trainer["best_val"],
                               "curve_score": picked["score"]}
        if family == "point-robot":
            result["validated"]["held_out"] = other_goals_score(tr, None)
            result["validated"]["other_goals"] = other_goals_score(tr, goal_seed)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--family", default="point-robot", choices=sorted(FAMILIES))
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                   help=f"from {', '.join(VARIANTS)}; NAME@pearl.KEY=VALUE,... runs an "
                        "ablation of NAME beside it (e.g. privileged@pearl.target_entropy=-9)")
    p.add_argument("--cap", type=float, default=900.0, help="wall-clock cap per variant, s")
    p.add_argument("--seed", type=int, default=0, help="training seed (same for all)")
    p.add_argument("--goal-seed", type=int, default=7,
                   help="point-robot: seed of the second held-out goal set")
    p.add_argument("--parallel", type=int, default=2, help="variants training at once")
    p.add_argument("--out", type=Path, default=None, help="keep run directories here")
    p.add_argument("--validation", type=int, default=0,
                   help="training tasks set aside to pick each variant's checkpoint "
                        "(train.validation_tasks); the picked model is scored on the held-out "
                        "tasks at the end")
    p.add_argument("--tag", default="", help="suffix of the results file and plot")
    args = p.parse_args(argv)
    for v in args.variants:
        split_variant(v)  # refuse a bad name or override before anything trains
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_inference_"))
    spec = FAMILIES[args.family]
    t0 = time.time()
    import multiprocessing as mp

    runs: dict[str, Any] = {}
    with mp.get_context("spawn").Pool(max(1, args.parallel)) as pool:
        jobs = {v: pool.apply_async(train_variant, (args.family, v, args.seed, args.cap,
                                                    work / v, args.goal_seed,
                                                    args.validation))
                for v in args.variants}
        for v, job in jobs.items():
            runs[v] = job.get()
    results = {"family": args.family, "score": spec["score"], "bar": spec["bar"],
               "cap_s": args.cap, "seed": args.seed, "parallel": args.parallel,
               "validation_tasks": args.validation,
               "started_unix": t0, "bench_wall_s": round(time.time() - t0, 1),
               "command": "python -m bench.bench_inference " + " ".join(argv or sys.argv[1:]),
               "runs": runs}
    stem = args.family.replace("-", "_") + args.tag
    out_json = ROOT / "bench" / "results" / f"inference_{stem}.json"
    out_json.parent.mkdir(exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    plot(results, ROOT / "docs" / "img" / f"inference_{stem}.png")
    for v, r in runs.items():
        fin = r["final"] or {}
        extra = f" other-goals {r['other_goals']['normalized']:.3f}" if "other_goals" in r \
            else ""
        val = r.get("validated", {})
        if "held_out" in val:
            extra += (f" | validated (it {val['iteration']}, {val['wall_s']:.0f} s): held-out "
                      f"{val['held_out']['normalized']:.3f} other-goals "
                      f"{val['other_goals']['normalized']:.3f}")
        print(f"{v:>12}: final {fin.get('score', math.nan):.3f} best {r['best_score']} "
              f"reached bar at {r['reached_bar']['wall_s'] if r['reached_bar'] else None} s"
              f"{extra}")
    print(f"wrote {out_json}")
    return 0


def plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name, run in results["runs"].items():
        c = [r for r in run["curve"] if math.isfinite(r["score"])]  # evaluated iterations
        for ax, x in zip(axes, ("wall_s", "grad_steps")):
            ax.plot([r[x] for r in c], [r["score"] for r in c], label=name.replace("_", " "))
    for ax, label in zip(axes, ("wall clock (s, one core each)", "gradient steps")):
        if results["score"] != "eval/test_success":
            ax.axhline(1.0, color="green", ls="--", lw=1, label="oracle")
            ax.axhline(0.0, color="gray", ls=":", lw=1)
        ax.axhline(results["bar"], color="red", ls="-.", lw=0.8, label=f"bar {results['bar']}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(results["score"].split("/")[-1].replace("_", " ") + " (held out)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['family']}: task inference side by side (seed {results['seed']}, "
                 f"{results['cap_s']:.0f} s caps)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
