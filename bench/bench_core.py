"""PEARL gradient-step throughput against a floor measured in the same run.

ours:  one full training step as the trainer runs it: meta-batch sampled from filled float32
       replay buffers (RL batch + context), converted to tensors, ``PearlLearner.update``
       (reference order: KL + Q backward, Q/encoder step, new-action Q with updated Q, V +
       policy backward, steps, target update, metrics read back).
floor: the same networks on pre-made tensors: every forward the update needs, ONE backward of
       the summed losses, every optimizer step. No sampling, no second backward, no metrics.

Reported: steps/s of both and the ratio ours/floor (goal >= 0.8) at meta-batch 16 and 4 with
the reference sizes (300x3 actor/critics, 200x3 encoder, batch 256, context 64), plus the
small-network configuration used for point-robot.

    .venv/bin/python -m bench.run_all --only bench_core
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pearl_robot.core.config import PearlConfig
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import build
from pearl_robot.core.posterior import kl_to_standard_normal, product_of_gaussians, rsample
from pearl_robot.core.replay import MultiTaskReplay
from pearl_robot.core.replay import Path as ReplayPath

RESULTS = Path(__file__).parent / "results" / "core.json"
SPEC = EnvSpec(2, 2, np.full(2, -0.1), np.full(2, 0.1))


def _filled_buffer(n_tasks: int, rng: np.random.Generator) -> MultiTaskReplay:
    buf = MultiTaskReplay(n_tasks, 10_000, SPEC.obs_dim, SPEC.action_dim)
    for t in range(n_tasks):
        n = 2000
        obs = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        buf.add_path(t, ReplayPath(obs, rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                                   -rng.random((n, 1)).astype(np.float32), obs + 0.05,
                                   np.zeros((n, 1), np.float32),
                                   -rng.random((n, 1)).astype(np.float32)))
    return buf


def time_ours(cfg: PearlConfig, steps: int, warmup: int) -> list[float]:
    rng = np.random.default_rng(0)
    buf = _filled_buffer(80, rng)
    _, learner = build(cfg, SPEC, seed=0)
    out = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        tasks = rng.integers(80, size=cfg.meta_batch)
        b = buf.sample_rl(tasks, cfg.batch_size, rng)
        c = buf.sample_context(tasks, cfg.embedding_batch_size, rng, False)
        learner.update(b.to_torch(torch.device("cpu")), torch.from_numpy(c))
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def time_floor(cfg: PearlConfig, steps: int, warmup: int) -> list[float]:
    nets, learner = build(cfg, SPEC, seed=0)
    T, B, N = cfg.meta_batch, cfg.batch_size, cfg.embedding_batch_size
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(T * B, 2, generator=g)
    nxt = torch.randn(T * B, 2, generator=g)
    act = torch.rand(T * B, 2, generator=g) * 2 - 1
    rew = torch.randn(T * B, 1, generator=g)
    ctx = torch.randn(T, N, 5, generator=g)
    opts = list(learner.optimizers().values())
    out = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        f = nets.encoder(ctx)
        post = product_of_gaussians(f)
        z = rsample(post, g).unsqueeze(1).expand(T, B, -1).reshape(T * B, -1)
        zd = z.detach()
        q = nets.qf(torch.cat([obs, act, z], -1))
        with torch.no_grad():
            tv = nets.target_vf(torch.cat([nxt, zd], -1))[0]
        pol = nets.actor(obs, zd, generator=g)
        qn = nets.qf(torch.cat([obs, pol.action, zd], -1)).min(0).values
        v = nets.vf(torch.cat([obs, zd], -1))[0]
        lp = pol.log_prob.unsqueeze(-1)
        loss = (F.mse_loss(q[0], rew + tv) + F.mse_loss(q[1], rew + tv)
                + kl_to_standard_normal(post).sum() + F.mse_loss(v, (qn - lp).detach())
                + (lp - qn).mean())
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    cases = [("reference 300x3, meta-batch 16", PearlConfig(meta_batch=16), 8 if q else 30),
             ("reference 300x3, meta-batch 4", PearlConfig(meta_batch=4), 30 if q else 100),
             ("point-robot 64x2 (enc 64x2), meta-batch 16",
              PearlConfig(hidden_sizes=(64, 64), encoder_hidden_sizes=(64, 64), meta_batch=16),
              60 if args.quick else 300)]
    rows = []
    for name, cfg, n in cases:
        # interleave floor and ours in two rounds so slow drifts hit both
        ours, floor = [], []
        for _ in range(2):
            floor += time_floor(cfg, n // 2, 3)
            ours += time_ours(cfg, n // 2, 3)
        mo, mf = statistics.median(ours), statistics.median(floor)
        rows.append({"case": name, "ours_steps_per_s": 1 / mo, "floor_steps_per_s": 1 / mf,
                     "ratio_ours_over_floor": mf / mo, "ours_median_ms": mo * 1e3,
                     "floor_median_ms": mf * 1e3, "steps_timed": len(ours)})
        print(f"{name:45s} ours {1/mo:7.2f} steps/s  floor {1/mf:7.2f} steps/s  "
              f"ratio {mf/mo:.2f}", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"threads": args.threads, "torch": str(torch.__version__),
                                   "quick": args.quick, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
