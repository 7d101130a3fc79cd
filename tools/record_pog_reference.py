"""What PEARL's pog update gives on this CPU: the numbers tests/core/test_inference.py pins.

The test calls :func:`pog_numbers` on the code under test and compares them bit for bit with
a recording of the same function run on commit 71984f9 (before the inference modes existed).
float32 kernels differ by CPU (AVX2 and AVX512 round the same sums differently), so each
kernel set needs its own recording. To add one, from a checkout of 71984f9:

    git worktree add /tmp/pog-71984f9 71984f9
    PYTHONPATH=/tmp/pog-71984f9 .venv/bin/python tools/record_pog_reference.py OUT.json

and append OUT.json to the "recordings" of tests/core/data/pog_update_reference.json.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import torch

from pearl_robot.core.config import PearlConfig
from pearl_robot.core.networks import EnvSpec
from pearl_robot.core.pearl import build
from pearl_robot.core.types import RLBatch

SPEC = EnvSpec(3, 2, np.full(2, -1.0), np.full(2, 1.0))
"""A small point-robot-shaped problem: obs 3, action 2 in [-1, 1]."""


def pog_numbers() -> dict[str, Any]:
    """Three seeded updates of each SAC variant: their metrics and the weights' sums."""
    torch.set_num_threads(1)
    out: dict[str, Any] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "torch": torch.__version__}
    for variant in ("reference", "modern"):
        cfg = PearlConfig(hidden_sizes=(32, 32), encoder_hidden_sizes=(32, 32), meta_batch=4,
                          batch_size=16, embedding_batch_size=8, sac_variant=variant)
        nets, learner = build(cfg, SPEC, seed=3)
        rng = np.random.default_rng(5)

        def f(*shape: int, rng: np.random.Generator = rng) -> torch.Tensor:
            return torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)

        metrics = []
        for _ in range(3):
            batch = RLBatch(f(4, 16, 3), torch.clamp(f(4, 16, 2), -1, 1), f(4, 16, 1),
                            f(4, 16, 3), torch.zeros(4, 16, 1))
            metrics.append(learner.update(batch, f(4, 8, 6)))
        with torch.no_grad():
            out[variant] = {
                "metrics": metrics,
                "actor_sum": float(sum(p.double().sum() for p in nets.actor.parameters())),
                "encoder_sum": float(sum(p.double().sum() for p in nets.encoder.parameters()))}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "w") as fh:
        json.dump(pog_numbers(), fh, indent=1, sort_keys=True)
