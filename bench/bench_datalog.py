"""Episode logging and dataset loading, each as a ratio to a floor measured in the same run.

1. Durable logging: transitions/s through ``DatasetWriter`` (control-thread ``write`` -> writer
   thread -> CDR -> MCAP chunk -> group commit: fsync every N records) until ``flush`` returns,
   against the raw floor: the same number of records of the same byte size appended to a plain
   file with ``fsync`` every N records. Goal: ratio >= 0.5. Also the control thread's
   ``write()`` latency (it must never block) and the commit latency.
2. Dataset load: ``load_datasets`` (manifest, validation, per-task arrays) from the derived
   cache (warm) and from the MCAP files (cold), against the raw floor: ``np.load`` of the same
   per-segment arrays and one concatenate. Goal: warm ratio >= 0.5.

Run: ``python -m bench.run_all --only bench_datalog`` (add ``--quick`` for a short run).
Writes ``bench/results/datalog.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pearl_robot.datalog.cdr import TransitionCodec
from pearl_robot.datalog.reader import load_datasets
from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.datalog.writer import DatasetWriter, WriterConfig

RESULTS = Path(__file__).resolve().parent / "results" / "datalog.json"
# the robot twin's layout: 6 obs (3 joint positions + velocities), 3 efforts, latent 5
LAYOUT = TransitionLayout(obs_dim=6, action_dim=3, latent_dim=5)


def _vectors(n_episodes: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for ep in range(n_episodes):
        for s in range(steps):
            out.append(LAYOUT.pack(rng.normal(size=6), rng.normal(size=3), -rng.random(),
                                   rng.normal(size=6), False, s == steps - 1, ep, s, ep % 10,
                                   (ep * 100 + s * 0.05,) * 3, rng.normal(size=11)))
    return out


def raw_fsync_floor(path: Path, n: int, record_bytes: int, every: int) -> float:
    """Records/s appending ``n`` records of ``record_bytes`` with fsync every ``every``."""
    rec = os.urandom(record_bytes)
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as fh:
        for i in range(1, n + 1):
            fh.write(rec)
            if i % every == 0:
                os.fsync(fh.fileno())
        os.fsync(fh.fileno())
    return n / (time.perf_counter() - t0)


def writer_rate(root: Path, vectors: list[np.ndarray], every: int) -> dict[str, float]:
    cfg = WriterConfig(commit_every=every, commit_interval_s=10.0, queue_size=len(vectors) + 10)
    with DatasetWriter(root, LAYOUT, cfg) as w:
        lat = np.empty(len(vectors))
        t0 = time.perf_counter()
        for i, v in enumerate(vectors):
            a = time.perf_counter()
            w.write(v)
            lat[i] = time.perf_counter() - a
        assert w.flush(120.0)
        elapsed = time.perf_counter() - t0
        st = w.status()
    assert st.transitions_committed == len(vectors) and st.dropped == 0, st
    return {"records_per_s": len(vectors) / elapsed,
            "write_call_us_p50": float(np.percentile(lat, 50) * 1e6),
            "write_call_us_p99": float(np.percentile(lat, 99) * 1e6),
            "write_call_us_max": float(lat.max() * 1e6),
            "last_commit_ms": st.last_commit_ms}


def load_rates(root: Path) -> dict[str, float]:
    shutil.rmtree(root / ".cache", ignore_errors=True)
    t0 = time.perf_counter()
    cold = load_datasets([root], use_cache=True)  # builds the cache
    t_cold = time.perf_counter() - t0
    n = cold.transitions
    cache_files = sorted((root / ".cache").glob("*.npy"))
    warm_t, raw_t = [], []
    for _ in range(7):  # interleaved, so both see the same machine load; best of each
        t0 = time.perf_counter()
        warm = load_datasets([root], use_cache=True)
        warm_t.append(time.perf_counter() - t0)
        assert warm.transitions == n
        t0 = time.perf_counter()
        allm = np.concatenate([np.load(f, allow_pickle=False) for f in cache_files])
        raw_t.append(time.perf_counter() - t0)
        assert allm.shape[0] == n
    t_warm, t_raw = min(warm_t), min(raw_t)
    return {"transitions": n, "files": len(cache_files), "cold_per_s": n / t_cold,
            "warm_per_s": n / t_warm, "raw_per_s": n / t_raw,
            "warm_ratio": t_raw / t_warm, "cold_ratio": t_raw / t_cold}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    p.add_argument("--dir", type=Path, default=None,
                   help="where to write (default: a temp dir on the same disk as /tmp)")
    p.add_argument("--repeats", type=int, default=None, help="repetitions of the logging test")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    n_eps, steps = (25, 200) if args.quick else (100, 200)
    repeats = args.repeats or (2 if args.quick else 5)
    base = Path(tempfile.mkdtemp(prefix="bench_datalog_", dir=args.dir))
    results: dict[str, object] = {"layout": LAYOUT.to_json(), "quick": args.quick}
    try:
        vectors = _vectors(n_eps, steps, rng)
        record_bytes = TransitionCodec(LAYOUT).message_size
        rows = []
        for every in (20, 100):
            ratios, w_rates, f_rates, lat99 = [], [], [], []
            for r in range(repeats):
                floor = raw_fsync_floor(base / f"raw_{every}_{r}.bin", len(vectors),
                                        record_bytes, every)
                wr = writer_rate(base / f"ds_{every}_{r}", vectors, every)
                ratios.append(wr["records_per_s"] / floor)
                w_rates.append(wr["records_per_s"])
                f_rates.append(floor)
                lat99.append(wr["write_call_us_p99"])
            row = {"commit_every": every, "records": len(vectors),
                   "record_bytes": record_bytes,
                   "writer_records_per_s": statistics.median(w_rates),
                   "floor_records_per_s": statistics.median(f_rates),
                   "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                   "write_call_us_p99": statistics.median(lat99)}
            rows.append(row)
            print(f"durable logging, fsync every {every:>3}: writer "
                  f"{row['writer_records_per_s']:>9.0f} rec/s, raw fsync floor "
                  f"{row['floor_records_per_s']:>9.0f} rec/s, ratio {row['ratio']:.2f} "
                  f"(min {row['ratio_min']:.2f}); control-thread write() p99 "
                  f"{row['write_call_us_p99']:.1f} us", flush=True)
        results["logging"] = rows
        load = load_rates(base / "ds_20_0")
        results["loading"] = load
        print(f"dataset load, {load['transitions']} transitions in {load['files']} files: warm "
              f"(cache) {load['warm_per_s']:.3g}/s, cold (MCAP) {load['cold_per_s']:.3g}/s, raw "
              f"np.load floor {load['raw_per_s']:.3g}/s; warm ratio {load['warm_ratio']:.2f}, "
              f"cold ratio {load['cold_ratio']:.2f}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
