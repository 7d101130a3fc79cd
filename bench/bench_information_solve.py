"""The information head's solve in training: Cholesky (what eager torch runs) against the
sweep-operator inverse (what the ONNX step graph traces), forward and backward.

``core.posterior.information_posterior`` picks Cholesky outside an export because the sweep,
k pivots of broadcast arithmetic, is slow to differentiate; this measures by how much, at a
training batch of the twin recipe (8 tasks x 64 rows, rank 1, k = 16), interleaved in blocks
so machine noise hits both alike. The ratio is sweep / Cholesky, the floor measured in the
same run.

    .venv/bin/python -m bench.bench_information_solve
    .venv/bin/python -m bench.bench_information_solve --tasks 8 --rows 64 --rank 2 --latent 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pearl_robot.core.posterior import information_posterior, spd_inverse

RESULTS = Path(__file__).resolve().parent / "results" / "information_solve.json"


def sweep_posterior(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exported graph's math in eager torch: the same products, inverted by the sweep."""
    am = a.double().flatten(-3, -2)
    at = am.transpose(-1, -2)
    cov = spd_inverse(at @ am + torch.eye(a.shape[-1], dtype=torch.float64))
    mean = (cov @ (at @ y.double().flatten(-2, -1).unsqueeze(-1))).squeeze(-1)
    return mean.sum() + torch.diagonal(cov, dim1=-2, dim2=-1).sum()


def cholesky_posterior(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    post = information_posterior(a, y, torch.ones(a.shape[:-2]))
    return post.mean.sum() + post.var.sum()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--blocks", type=int, default=10, help="interleaved blocks per solver")
    p.add_argument("--calls", type=int, default=50, help="forward+backward calls per block")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(args.tasks, args.rows, args.rank, args.latent, generator=g,
                    requires_grad=True)
    y = torch.randn(args.tasks, args.rows, args.rank, generator=g, requires_grad=True)
    solvers = {"cholesky": cholesky_posterior, "sweep": sweep_posterior}
    times: dict[str, list[float]] = {k: [] for k in solvers}
    for f in solvers.values():  # warm-up
        f(a, y).backward()
    for _ in range(args.blocks):
        for name, f in solvers.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                f(a, y).backward()
            times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    res = {"benchmark": "information_solve", "shape": vars(args) | {"out": str(args.out)},
           "median_ms_forward_backward": med, "ratio_sweep_to_cholesky":
           med["sweep"] / med["cholesky"],
           "command": "python -m bench.bench_information_solve "
           + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"forward+backward, median of {args.blocks} blocks: cholesky {med['cholesky']:.2f} ms,"
          f" sweep {med['sweep']:.2f} ms ({res['ratio_sweep_to_cholesky']:.1f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
