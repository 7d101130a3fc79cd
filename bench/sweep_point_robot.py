"""Equal-time hyperparameter sweep of PEARL on point-robot: which knob moves the plateau?

Each named variant is ``config/train/point_robot_fast.yaml`` (or ``--base``) plus the overrides
below. Variants run two at a time (one process and one torch thread each, 2 cores) under the
same wall-clock cap, evaluating held-out tasks every iteration with the reference protocol;
the table reports gradient steps reached, final / best / mean-of-last-5 oracle-normalized score.

    .venv/bin/python -m bench.sweep_point_robot --cap 420                # every variant
    .venv/bin/python -m bench.sweep_point_robot --cap 420 kl10 seq40     # some of them

Writes bench/results/point_robot_sweep.json (merged with earlier variants' rows); each variant's
final checkpoint stays in a temporary directory (its path is in the JSON) for
``bench.bench_point_context --checkpoint``.
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
RESULTS = ROOT / "bench" / "results" / "point_robot_sweep.json"

VARIANTS: dict[str, dict] = {
    "base": {},
    # KL weight (reference 0.1): stronger keeps posteriors on the prior's scale, weaker sharpens
    "kl10": {"pearl": {"kl_lambda": 10.0}},
    "kl0.01": {"pearl": {"kl_lambda": 0.01}},
    # context rows (s, a, r, s'): the reward's position s' given directly
    "nextobs": {"pearl": {"use_next_obs_in_context": True}},
    # posterior-driven trajectories in the encoder buffer (as the 2nd/3rd evaluation trajectory)
    "post100": {"train": {"num_steps_prior": 100, "num_steps_posterior": 100}},
    # training contexts = 2 whole consecutive trajectories, shaped like evaluation contexts
    "seq40": {"pearl": {"context_sampling": "trajectories", "embedding_batch_size": 40}},
    "seq40_post": {"pearl": {"context_sampling": "trajectories", "embedding_batch_size": 40},
                   "train": {"num_steps_prior": 100, "num_steps_posterior": 100}},
    # reward scale (reference 100 here): the inverse temperature of the reference SAC
    "rs10": {"pearl": {"reward_scale": 10.0}},
    "rs30": {"pearl": {"reward_scale": 30.0}},
    # capacity and encoder learning rate
    "q128": {"pearl": {"hidden_sizes": [128, 128], "encoder_hidden_sizes": [128, 128]}},
    "enc128x3": {"pearl": {"encoder_hidden_sizes": [128, 128, 128]}},
    "ctxlr3e-3": {"pearl": {"context_lr": 3e-3}},
    # latent size (reference 5) and the deterministic mean-aggregation encoder
    "l2": {"pearl": {"latent_dim": 2}},
    "l16": {"pearl": {"latent_dim": 16}},
    "noib_l8": {"pearl": {"use_information_bottleneck": False, "latent_dim": 8}},
    "noib_l16": {"pearl": {"use_information_bottleneck": False, "latent_dim": 16}},
}


def run_variant(name: str, base: str, cap_s: float, work: str) -> dict:
    import torch

    from pearl_robot.core.config import load_experiment, merge
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    torch.set_num_threads(1)
    ov = VARIANTS[name]
    cfg = merge(load_experiment(ROOT / base), {
        "pearl": ov.get("pearl", {}),
        "train": {**ov.get("train", {}), "num_iterations": 100_000, "torch_threads": 1,
                  "checkpoint_every": 100_000}})
    tr = MetaTrainer(cfg, make_family(cfg.train.task_family), Path(work) / name,
                     tensorboard=False, progress=False)
    t0 = time.perf_counter()
    curve = []
    while time.perf_counter() - t0 < cap_s:
        row = tr.run_iteration().metrics
        curve.append({"wall_s": round(time.perf_counter() - t0, 1), "grad_steps": tr.grad_steps,
                      "env_steps": tr.env_steps,
                      "score": row.get("eval/test_normalized", math.nan)})
    scores = [c["score"] for c in curve if math.isfinite(c["score"])]
    checkpoint = tr.save(Path(work) / name / "final.pt")  # for bench.bench_point_context
    return {"checkpoint": str(checkpoint), "overrides": ov, "curve": curve,
            "grad_steps": tr.grad_steps, "final": scores[-1], "best": max(scores),
            "last5": sum(scores[-5:]) / len(scores[-5:])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", help=f"any of: {', '.join(VARIANTS)} (default all)")
    p.add_argument("--base", default="config/train/point_robot_fast.yaml",
                   help="experiment YAML the variants start from (relative to the repo root)")
    p.add_argument("--cap", type=float, default=420.0, help="wall-clock cap per variant, s")
    args = p.parse_args(argv)
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    import multiprocessing as mp

    work = tempfile.mkdtemp(prefix="sweep_point_")
    out = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    with mp.get_context("spawn").Pool(2) as pool:
        jobs = {n: pool.apply_async(run_variant, (n, args.base, args.cap, work)) for n in names}
        for n, job in jobs.items():
            r = job.get()
            out[n] = {**r, "cap_s": args.cap, "base": args.base}
            print(f"{n:12s} grad steps {r['grad_steps']:6d}  final {r['final']:.2f}  "
                  f"best {r['best']:.2f}  mean of last 5 {r['last5']:.2f}", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
