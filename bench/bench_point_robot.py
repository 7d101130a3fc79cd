"""Point-robot learning benchmark: PEARL vs the same SAC with z fixed to zero, and the oracle.

Trains on ``point-robot`` (or ``--family sparse-point-robot``) with the given experiment YAML
under a wall-clock cap, evaluating held-out tasks every iteration with the reference protocol.
Reported per run: the wall clock, env steps and gradient steps at which the held-out score first
reaches the bar, and the final score. Dense: oracle-normalized return of the adapted (last)
trajectory, 0 = stay still, 1 = oracle (full speed straight at the goal); bar 0.9. Sparse:
success rate (goal radius reached in a post-exploration trajectory); bar 0.8.

The baseline ("no task inference") is the identical configuration with
``pearl.task_inference=false``: same networks, same data schedule, z = 0.

    .venv/bin/python -m bench.bench_point_robot --config config/train/point_robot_fast.yaml
    .venv/bin/python -m bench.bench_point_robot --quick        # 2-minute caps

Writes bench/results/point_robot.json (or sparse_point_robot.json) and a learning-curve PNG in
docs/img/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train_for(cfg, family, out: Path, cap_s: float, bar: float, key: str) -> dict:  # noqa: ANN001
    from pearl_robot.train.trainer import MetaTrainer

    tr = MetaTrainer(cfg, family, out, tensorboard=False, progress=False)
    t0 = time.perf_counter()
    curve = []
    reached = None
    while time.perf_counter() - t0 < cap_s and tr.iteration < cfg.train.num_iterations:
        row = tr.run_iteration().metrics
        t = time.perf_counter() - t0
        score = row.get(key, math.nan)
        curve.append({"wall_s": round(t, 1), "env_steps": tr.env_steps,
                      "grad_steps": tr.grad_steps, "score": score,
                      "return": row.get("eval/test_final_return", math.nan),
                      "first_return": row.get("eval/test_first_return", math.nan)})
        print(f"  {out.name}: it {tr.iteration:4d} t={t:6.0f}s env={tr.env_steps:8d} "
              f"score={score:.3f}", flush=True)
        if reached is None and math.isfinite(score) and score >= bar:
            reached = curve[-1]
    tr.save(out / "final.pt")
    return {"curve": curve, "reached": reached, "final": curve[-1] if curve else None,
            "wall_s": time.perf_counter() - t0, "checkpoint": str(out / "final.pt")}


def _train_variant(cfg, out: Path, cap: float, bar: float, key: str) -> dict:  # noqa: ANN001
    import torch

    from pearl_robot.core.config import merge
    from pearl_robot.tasks.registry import make_family

    cfg = merge(cfg, {"train": {"torch_threads": 1}})
    torch.set_num_threads(1)
    return train_for(cfg, make_family(cfg.train.task_family), out, cap, bar, key)


def main(argv: list[str] | None = None) -> int:
    from pearl_robot.core.config import load_experiment, merge, reference_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "config/train/point_robot_fast.yaml")
    p.add_argument("--family", default=None, help="override the config's task family")
    p.add_argument("--cap", type=float, default=900.0, help="wall-clock cap per run, seconds")
    p.add_argument("--quick", action="store_true", help="120 s caps")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="keep run directories here")
    args = p.parse_args(argv)
    cap = 120.0 if args.quick else args.cap
    cfg = load_experiment(args.config) if args.config.is_file() else \
        reference_config(args.family or "point-robot")
    if args.family:
        cfg = merge(cfg, {"train": {"task_family": args.family}})
    fam_name = cfg.train.task_family
    sparse = fam_name == "sparse-point-robot"
    key, bar = ("eval/test_success", 0.8) if sparse else ("eval/test_normalized", 0.9)
    budget = 5_000_000 if sparse else 1_000_000  # the reference's env-step budget
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_point_"))
    results = {"family": fam_name, "config": str(args.config), "cap_s": cap, "bar": bar,
               "score": key, "reference_env_step_budget": budget, "runs": {}}
    variants = [("pearl", cfg)]
    if not args.skip_baseline:
        variants.append(("no_task_inference",
                         merge(cfg, {"pearl": {"task_inference": False}})))
    # the variants train side by side, one process and one torch thread each (2 cores)
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(len(variants)) as pool:
        jobs = {name: pool.apply_async(_train_variant, (c, work / name, cap, bar, key))
                for name, c in variants}
        for name, job in jobs.items():
            results["runs"][name] = job.get()
    pearl = results["runs"]["pearl"]
    hit = pearl["reached"]
    results["verdict"] = {
        "reached_bar": hit is not None,
        "wall_s_to_bar": hit["wall_s"] if hit else None,
        "env_steps_to_bar": hit["env_steps"] if hit else None,
        "within_env_budget": bool(hit and hit["env_steps"] <= budget),
    }
    stem = fam_name.replace("-", "_")
    out_json = ROOT / "bench" / "results" / f"{stem}.json"
    out_json.parent.mkdir(exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    _plot(results, ROOT / "docs" / "img" / f"{stem}_learning.png", sparse)
    print(json.dumps(results["verdict"]))
    return 0


def _plot(results: dict, png: Path, sparse: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run in results["runs"].items():
        c = run["curve"]
        ax.plot([r["env_steps"] for r in c], [r["score"] for r in c],
                label=name.replace("_", " "))
    if not sparse:
        ax.axhline(1.0, color="green", ls="--", lw=1, label="oracle (straight at the goal)")
        ax.axhline(0.0, color="gray", ls=":", lw=1, label="stay still")
    ax.axhline(results["bar"], color="red", ls="-.", lw=0.8, label=f"bar {results['bar']}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("held-out success rate" if sparse else "held-out oracle-normalized return")
    ax.set_title(f"{results['family']}: adapted (last-trajectory) performance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
