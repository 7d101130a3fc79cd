"""Run every benchmark (``bench/bench_*.py``, each with a ``main(argv) -> int``) in turn.

Each benchmark writes ``bench/results/<name>.json`` and prints its table; docs/performance.md
quotes them with the command that reproduces each number. ``--only NAME`` runs one.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", action="append", default=[], help="benchmark module name(s)")
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    args = p.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                   if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only or n.removeprefix("bench_") in args.only]
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"=== {name}", flush=True)
        mod = importlib.import_module(f"bench.{name}")
        rc = mod.main(["--quick"] if args.quick else [])
        print(f"=== {name}: rc={rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
