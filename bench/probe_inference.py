"""One short pooled (or any) training run with config overrides, printing the held-out score
and the belief's training-label error every iteration, and keeping them in OUT/curve.json
(rewritten every iteration): the probes behind
``bench/results/inference_point_robot*_probes.json``.

    python -m bench.probe_inference config/train/point_robot_pooled.yaml 420 \\
        '{"pearl": {"inference_updates": 4}}' runs/probe
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__)
        return 2
    import torch

    from pearl_robot.core.config import load_experiment, merge
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    torch.set_num_threads(1)
    cfg = merge(load_experiment(args[0]), json.loads(args[2]) if len(args) > 2 else {})
    cap = float(args[1])
    out = Path(args[3] if len(args) > 3 else "runs/probe")
    tr = MetaTrainer(cfg, make_family(cfg.train.task_family), out, tensorboard=False,
                     progress=False)
    t0 = time.perf_counter()
    curve: list[dict[str, float]] = []
    while time.perf_counter() - t0 < cap:
        row = tr.run_iteration().metrics
        point = {"iteration": tr.iteration, "wall_s": round(time.perf_counter() - t0, 1),
                 "grad_steps": tr.grad_steps,
                 "score": row.get("eval/test_normalized", float("nan")),
                 "success": row.get("eval/test_success", float("nan")),
                 "train_label_rmse": row.get("inference/label_rmse", float("nan"))}
        curve.append(point)
        print(f"it {tr.iteration} t={point['wall_s']:.0f} g={tr.grad_steps} "
              f"score={point['score']:.3f} success={point['success']:.2f} "
              f"rmse={point['train_label_rmse']:.3f}", flush=True)
        (out / "curve.json").write_text(json.dumps(
            {"config": args[0], "cap_s": cap, "overrides": json.loads(args[2])
             if len(args) > 2 else {}, "curve": curve}, indent=1))
    tr.save(out / "final.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
