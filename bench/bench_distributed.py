"""Distributed meta-training (train --ray): sampling throughput against workers, the learner
with workers running, the per-message cost, a projection for N machines, and learning parity.

throughput: one collection round of the trainer's schedule (``--tasks`` tasks x ``--steps``
            prior-phase steps each, whole trajectories) collected
            - ``single``: in this process by ``MetaTrainer.collect`` (the single-process
              sampler, all tasks in lockstep with one batched actor call): the floor;
            - ``ray-N``: by N Ray rollout workers on a local cluster, the tasks split into N
              shards (one job each), wall clock from submit to the last result.
            Reported as env steps/s and as the ratio to ``single`` measured in the same
            repetition (median over ``--reps`` interleaved repetitions).
overhead:   an empty job's round trip (per-message cost) and a weight broadcast (put + pull of
            the acting networks, per new version).
learner:    gradient steps/s of the learner alone, and while 2 workers collect continuously
            (the asynchronous mode's situation), same process, same buffers.
projection: from the measured per-worker rate, per-job overhead and learner rate: how many
            workers the family's reference schedule can use before the learner is the bottleneck.
parity:     (``--parity``) point-robot with config/train/point_robot_fast.yaml, the same
            iteration budget, single-process vs ``--ray --workers 2`` (synchronous), all runs
            started side by side; per run: final held-out normalized score, mean and std of the
            last 5 evaluations (the evaluation noise).

    .venv/bin/python -m bench.bench_distributed                 # throughput (~3 min)
    .venv/bin/python -m bench.bench_distributed --parity --iterations 10 --seeds 0 1

Writes bench/results/distributed.json (throughput) / distributed_parity.json (parity).
Numbers in docs/performance.md were taken on a shared, loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


# the committed training configs (networks sized for this machine), not the reference presets
CONFIGS = {"point-robot": "point_robot_fast.yaml", "twin-arm": "twin_arm.yaml"}


def _base(family: str):  # noqa: ANN202
    from pearl_robot.core.config import load_experiment

    return load_experiment(ROOT / "config" / "train" / CONFIGS[family])


def _cfg(family: str, steps: int, tasks: int):  # noqa: ANN202
    from pearl_robot.core.config import merge

    return merge(_base(family), {"train": {"num_steps_prior": steps, "num_tasks_sample": tasks,
                                           "replay_capacity": max(2 * steps, 1000)}})


def throughput(family_name: str, n_tasks: int, steps: int, reps: int, worker_counts: list[int]
               ) -> dict:
    import ray

    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.distributed import (
        DistributedConfig,
        PhaseSpec,
        RolloutJob,
        WorkerPool,
        acting_state,
    )
    from pearl_robot.train.trainer import MetaTrainer

    family = make_family(family_name)
    cfg = _cfg(family_name, steps, n_tasks)
    tasks = family.train_tasks[:n_tasks]
    with tempfile.TemporaryDirectory() as d:
        learner = MetaTrainer(cfg, family, d, train_tasks=tasks, tensorboard=False,
                              progress=False)
    weights = ray.put(acting_state(learner))
    pool = WorkerPool(DistributedConfig(workers=max(worker_counts),
                                        worker_cpus=2 / max(worker_counts)))
    pool.configure(family, cfg, tasks)
    phases = (PhaseSpec("prior", steps, False),)
    seq = [0]

    def job(shard: tuple[int, ...], version: int = 0, ph=phases) -> RolloutJob:  # noqa: ANN001
        seq[0] += 1
        return RolloutJob(f"b{seq[0]}", 1, shard, ph, True, seq[0], version, [weights])

    # warm-up: every worker pulls the weights and steps its envs once
    ray.get([pool.submit(w, job((0,))) for w in range(pool.size)])
    rows: dict[str, list[float]] = {"single": []}
    ratios: dict[str, list[float]] = {}
    for _ in range(reps):
        t0 = time.perf_counter()
        n = learner.collect(list(range(n_tasks)), steps, update_posterior=False,
                            add_to_enc=False, phase="prior")
        single = n / (time.perf_counter() - t0)
        rows["single"].append(single)
        for k in worker_counts:
            shards = [tuple(s.tolist()) for s in np.array_split(np.arange(n_tasks), k)]
            t0 = time.perf_counter()
            res = ray.get([pool.submit(w, job(s)) for w, s in enumerate(shards)])
            rate = sum(r.env_steps for r in res) / (time.perf_counter() - t0)
            rows.setdefault(f"ray-{k}", []).append(rate)
            ratios.setdefault(f"ray-{k}", []).append(rate / single)
            if k == 1:
                rows.setdefault("worker_busy_rate", []).append(res[0].env_steps / res[0].busy_s)
    # per-message cost: an empty job (0-step phase) round trip, and a new weight version
    empty = (PhaseSpec("prior", 0, False),)
    rtt = []
    for _ in range(20):
        t0 = time.perf_counter()
        ray.get(pool.submit(0, job((0,), ph=empty)))
        rtt.append(time.perf_counter() - t0)
    bcast = []
    for v in range(1, 6):
        t0 = time.perf_counter()
        weights = ray.put(acting_state(learner))
        r = ray.get(pool.submit(0, job((0,), version=v, ph=empty)))
        bcast.append((time.perf_counter() - t0, r.pull_s))
    pool.shutdown()
    nbytes = sum(v.numel() * v.element_size() for v in acting_state(learner).values())
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"family": family_name, "tasks": n_tasks, "steps_per_task": steps, "reps": reps,
            "env_steps_per_s": {k: round(v, 1) for k, v in med.items()},
            "ratio_to_single": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
            "ratio_min": {k: round(min(v), 3) for k, v in ratios.items()},
            "empty_job_rtt_ms": round(1e3 * statistics.median(rtt), 2),
            "weight_broadcast_ms": round(1e3 * statistics.median(b[0] for b in bcast), 2),
            "weight_pull_ms": round(1e3 * statistics.median(b[1] for b in bcast), 2),
            "weight_bytes": int(nbytes)}


def learner_rate(family_name: str, grad_steps: int) -> dict:
    """Gradient steps/s alone, then with 2 workers collecting in a loop meanwhile."""
    import ray

    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.distributed import (
        DistributedConfig,
        PhaseSpec,
        RolloutJob,
        WorkerPool,
        acting_state,
    )
    from pearl_robot.train.trainer import MetaTrainer

    family = make_family(family_name)
    cfg = _cfg(family_name, 200, 8)
    d = tempfile.mkdtemp()
    tr = MetaTrainer(cfg, family, d, tensorboard=False, progress=False)
    tr.collect(list(range(16)), 200, update_posterior=False, add_to_enc=True, phase="initial")
    tr.trainable_tasks = lambda: np.arange(16)
    tr.train_steps(20)  # warm-up
    t0 = time.perf_counter()
    tr.train_steps(grad_steps)
    alone = grad_steps / (time.perf_counter() - t0)
    pool = WorkerPool(DistributedConfig(workers=2))
    pool.configure(family, cfg, family.train_tasks[:8])
    weights = ray.put(acting_state(tr))
    stop = threading.Event()
    collected = [0]

    def feed() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            refs = [pool.submit(w, RolloutJob(f"f{i}/{w}", 1, (4 * w, 4 * w + 1, 4 * w + 2,
                                                                4 * w + 3),
                                              (PhaseSpec("prior", 200, False),), True, i, 0,
                                              [weights])) for w in range(2)]
            collected[0] += sum(r.env_steps for r in ray.get(refs))

    th = threading.Thread(target=feed, daemon=True)
    th.start()
    time.sleep(2.0)
    c0 = collected[0]
    t0 = time.perf_counter()
    tr.train_steps(grad_steps)
    dt = time.perf_counter() - t0
    with_workers = grad_steps / dt
    c1 = collected[0]
    stop.set()
    th.join(timeout=60)
    pool.shutdown()
    return {"family": family_name, "grad_steps": grad_steps,
            "grad_steps_per_s_alone": round(alone, 1),
            "grad_steps_per_s_with_2_workers": round(with_workers, 1),
            "ratio": round(with_workers / alone, 3),
            "env_steps_per_s_meanwhile": round((c1 - c0) / dt, 1)}


def projection(tp: dict, lr: dict, family_name: str) -> dict:
    """Time per iteration of the committed config's schedule with N workers on N machines
    (asynchronous: collection overlaps learning; the slower of the two sets the pace)."""
    tc = _base(family_name).train
    env_per_itr = tc.num_tasks_sample * (tc.num_steps_prior + tc.num_steps_posterior +
                                         tc.num_extra_rl_steps_posterior)
    grads = tc.num_train_steps_per_itr
    per_worker = tp["env_steps_per_s"]["worker_busy_rate"]
    overhead_s = (tp["empty_job_rtt_ms"] + tp["weight_pull_ms"]) / 1e3
    g = lr["grad_steps_per_s_alone"]
    learn_s = grads / g
    out = []
    for n in (1, 2, 4, 8, 16, 32):
        useful = min(n, tc.num_tasks_sample)  # a job holds at least one task of the round
        collect_s = env_per_itr / (useful * per_worker) + overhead_s
        out.append({"workers": n, "collect_s": round(collect_s, 3), "learn_s": round(learn_s, 3),
                    "iteration_s": round(max(collect_s, learn_s), 3),
                    "bottleneck": "learner" if learn_s >= collect_s else "collection"})
    n_star = env_per_itr * g / (grads * per_worker)
    return {"family": family_name, "env_steps_per_iteration": env_per_itr,
            "grad_steps_per_iteration": grads, "per_worker_env_steps_per_s": per_worker,
            "learner_grad_steps_per_s": g, "per_job_overhead_s": round(overhead_s, 4),
            "workers_until_learner_bound": float(f"{n_star:.3g}"), "rows": out}


# ------------------------------------------------------------------------------ parity
def _last_evals(progress: Path, key: str = "eval/test_normalized", n: int = 5) -> list[float]:
    from pearl_robot.train.metrics import read_progress

    vals = [v for v in read_progress(progress).get(key, []) if np.isfinite(v)]
    return vals[-n:]


def parity(iterations: int, seeds: list[int], workers: int, address: str | None = None
           ) -> dict:
    """All runs side by side (same machine load for both modes), then read their curves."""
    base = [sys.executable, "-m", "pearl_robot.cli", "train", "--config",
            str(ROOT / "config" / "train" / "point_robot_fast.yaml"), "--iterations",
            str(iterations), "--no-progress", "--no-tensorboard"]
    root = Path(tempfile.mkdtemp(prefix="parity-"))
    procs = []
    for seed in seeds:
        ray_flag = ["--ray"] + ([address] if address else [])
        for mode, extra in (("single", []), (f"ray-{workers}", [*ray_flag, "--workers",
                                                                 str(workers)])):
            out = root / f"{mode}-s{seed}"
            log = open(root / f"{mode}-s{seed}.log", "w")  # noqa: SIM115 - closed below
            procs.append((mode, seed, out, log, time.perf_counter(), subprocess.Popen(
                [*base, "--seed", str(seed), "--out", str(out), *extra], stdout=log,
                stderr=subprocess.STDOUT, cwd=ROOT)))
    runs = []
    for mode, seed, out, log, t0, proc in procs:
        rc = proc.wait()
        wall = time.perf_counter() - t0
        log.close()
        if rc != 0:
            raise RuntimeError(f"{mode} seed {seed} failed: see {log.name}")
        last = _last_evals(out / "progress.csv")
        ret = _last_evals(out / "progress.csv", "eval/test_final_return")
        row = {"mode": mode, "seed": seed, "wall_s": round(wall, 1),
               "final_normalized": round(last[-1], 3),
               "last5_mean": round(float(np.mean(last)), 3),
               "last5_std": round(float(np.std(last)), 3),
               "final_return": round(ret[-1], 2)}
        print(f"  parity {row}", flush=True)
        runs.append(row)
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r["mode"], []).append(r["last5_mean"])
    return {"iterations": iterations, "seeds": seeds, "workers": workers, "runs": runs,
            "mean_last5": {k: round(float(np.mean(v)), 3) for k, v in by.items()},
            "run_dirs": str(root), "concurrent_runs": len(procs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller rounds")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--families", nargs="+", default=["point-robot", "twin-arm"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--parity", action="store_true", help="run the learning-parity runs instead")
    p.add_argument("--iterations", type=int, default=10, help="--parity: iteration budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="--parity: seeds")
    p.add_argument("--address", help="--parity: join this Ray cluster (e.g. auto) instead of "
                   "starting one per run")
    args = p.parse_args(argv)
    import ray

    if args.parity:
        res = parity(args.iterations, args.seeds, 2, args.address)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "distributed_parity.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res["mean_last5"]))
        return 0
    # Ray starts workers at niceness 15 by default; at the driver's own niceness instead, so
    # the single-process floor and the workers compete for the CPUs on equal terms
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             logging_level=logging.WARNING, object_store_memory=512 * 2**20,
             _system_config={"worker_niceness": os.nice(0)})
    reps = 2 if args.quick else args.reps
    out: dict = {"machine": {"cores": os.cpu_count(), "load_avg_start": os.getloadavg()},
                 "throughput": [], "learner": [], "projection": []}
    for fam in args.families:
        steps = 100 if args.quick else 200
        tp = throughput(fam, 16, steps, reps, args.workers)
        print(json.dumps(tp), flush=True)
        out["throughput"].append(tp)
        lr = learner_rate(fam, 50 if args.quick else 150)
        print(json.dumps(lr), flush=True)
        out["learner"].append(lr)
        out["projection"].append(projection(tp, lr, fam))
        print(json.dumps(out["projection"][-1]), flush=True)
    out["machine"]["load_avg_end"] = os.getloadavg()
    ray.shutdown()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
