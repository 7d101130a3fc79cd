"""What opening a dataset writer costs on a long night's dataset: RSS and wall time of
``DatasetWriter(...)`` (recovery + the manifest read) in a fresh process, on a synthetic
dataset whose manifest has N lines of the size a twin night writes (~1.6 KB each).

    python -m bench.probe_writer_start                 # 9600 episodes, /tmp/probe-writer-start
    python -m bench.probe_writer_start --episodes 3200 --work /tmp/p

The numbers behind docs/performance.md's "Overnight soak" (start-up RSS); run it on a commit
before bb0f9e8 for the old start, which parsed the whole manifest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

OPEN = """
import sys, time, psutil
from pathlib import Path
from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.datalog.writer import DatasetWriter, WriterConfig
p = psutil.Process()
r0 = p.memory_info().rss
t = time.perf_counter()
w = DatasetWriter(Path(sys.argv[1]), TransitionLayout(3, 2, 5), WriterConfig(robot="probe"))
dt = time.perf_counter() - t
r1 = p.memory_info().rss
w.close()
print(f"{dt:.3f} {(r1 - r0) / 1e6:.1f}")
"""


def make_dataset(root: Path, episodes: int) -> int:
    """A dataset with one real episode and ``episodes - 1`` more manifest lines like it."""
    from pearl_robot.datalog.schema import TransitionLayout
    from pearl_robot.datalog.writer import DatasetWriter, WriterConfig

    layout = TransitionLayout(3, 2, 5)
    task = {"family": "probe", "index": 0,
            "params": {f"p{i}": [0.1 * i] * 8 for i in range(12)}}
    with DatasetWriter(root, layout, WriterConfig(robot="probe")) as w:
        w.set_task(task)
        for s in range(60):
            w.write(layout.pack(np.zeros(3), np.zeros(2), 0.0, np.zeros(3), False, s == 59, 0,
                                s, 0, (s * 0.05, s * 0.05, s * 0.05 + 0.05), np.zeros(11)))
        assert w.flush()
    manifest = root / "manifest.jsonl"
    line = json.loads(manifest.read_text().splitlines()[0])
    with manifest.open("a") as fh:
        for ep in range(1, episodes):
            e = dict(line, episode=ep)
            e["files"] = [dict(f, path=f["path"].replace("000000", f"{ep:06d}"))
                          for f in line["files"]]
            fh.write(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n")
    return manifest.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=9600, help="manifest lines")
    ap.add_argument("--work", type=Path, default=Path("/tmp/probe-writer-start"))
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes to open it in")
    args = ap.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    size = make_dataset(args.work, args.episodes)
    print(f"manifest: {args.episodes} lines, {size / 1e6:.1f} MB")
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", OPEN, str(args.work)], check=True,
                             capture_output=True, text=True).stdout.split()
        print(f"writer open: {float(out[0]) * 1e3:.0f} ms, RSS +{out[1]} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
