"""Export a checkpoint to a model bundle the robot can run (ONNX actor + encoder, contract,
golden vectors).

  pearl-robot export runs/point/checkpoints/final.pt runs/point/bundle
  pearl-robot export runs/twin/checkpoints/final.pt runs/twin/bundle --with-checkpoint

The ONNX graphs are checked against the torch model on recorded inputs (transitions logged on
the robot with --recorded, else the checkpoint's replay buffers, else a short rollout in the
task family's env) and on random inputs; a bundle
that differs beyond the tolerance is not written. The bundle appears under OUT_DIR atomically
(written to a temporary directory, self-checked with the robot's loader, then renamed).
Inspect the result with `pearl-robot bundle info OUT_DIR`.

--with-checkpoint also puts a weights-only copy of the checkpoint into the bundle
(checkpoint.pt, hash-checked with the other files, never loaded by the robot): the morning's
retrain of `pearl-robot demo` warm-starts from it (`train --init OUT_DIR/checkpoint.pt`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint file from `pearl-robot train`")
    parser.add_argument("out_dir", type=Path, help="bundle directory to create")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing bundle at OUT_DIR (atomically)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="parity tolerance |onnx - torch| (absolute; default 1e-4)")
    parser.add_argument("--random-rows", type=int, default=512,
                        help="random inputs checked for parity (default 512)")
    parser.add_argument("--record-steps", type=int, default=200,
                        help="env steps recorded for parity when the checkpoint holds no "
                        "replay buffers (default 200; 0 to skip)")
    parser.add_argument("--golden-rows", type=int, default=32,
                        help="rows of golden vectors the robot checks at load (default 32)")
    parser.add_argument("--recorded", action="append", default=[], metavar="DATASET",
                        help="check parity on transitions logged on the robot (a dataset "
                        "directory of `pearl-robot data`; repeatable). Default: the "
                        "checkpoint's replay buffers, else a rollout in the family's env")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    parser.add_argument("--with-checkpoint", action="store_true",
                        help="embed a weights-only copy of the checkpoint (networks, config, "
                        "counters; no replay buffers or optimizer states) as checkpoint.pt, "
                        "so a retrain can warm-start from the bundle (`train --init "
                        "OUT_DIR/checkpoint.pt`)")


def run(args: argparse.Namespace) -> int:
    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.export.exporter import (
        ExportConfig,
        export_checkpoint,
        recorded_from_datasets,
    )

    ckpt = load_checkpoint(args.checkpoint)
    recorded = None
    if args.recorded:
        recorded = recorded_from_datasets(args.recorded, networks_from_checkpoint(ckpt))
    cfg = ExportConfig(parity_atol=args.atol, random_rows=args.random_rows,
                       record_steps=args.record_steps, golden_rows=args.golden_rows,
                       seed=args.seed, overwrite=args.force,
                       embed_checkpoint=args.with_checkpoint)
    res = export_checkpoint(ckpt, args.out_dir, cfg, recorded=recorded)
    p = res.parity
    print(f"wrote bundle {res.path} (identity {res.bundle_sha256[:16]}...)")
    print(f"parity: max |onnx - torch| {max(p.max_abs_error.values()):.2e} over "
          f"{p.recorded_rows} recorded rows ({p.recorded_source}) and {p.random_rows} random "
          f"rows")
    for k, v in p.max_abs_error.items():
        print(f"  {k:<20} {v:.2e}")
    if args.with_checkpoint:
        from pearl_robot.runtime.bundle import CHECKPOINT_FILE

        size = (res.path / CHECKPOINT_FILE).stat().st_size
        print(f"checkpoint: {res.path / CHECKPOINT_FILE} (weights only, {size} bytes; "
              f"`pearl-robot train --init` it to warm-start a retrain)")
    print(f"inspect: pearl-robot bundle info {res.path}")
    return 0
