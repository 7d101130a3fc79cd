"""`pearl-robot`: one command, one subcommand per job.

Subcommands live in their own packages; this module only knows their names and imports a
subcommand's module when it is used, so `pearl-robot --help` and the robot-side commands never
import torch or MuJoCo.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NamedTuple

from pearl_robot.errors import PearlRobotError


class Subcommand(NamedTuple):
    name: str
    module: str
    summary: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("demo", "pearl_robot.demo", "the main job on the embedded default: the adapt "
               "graph on the twin with the bundled model, then an adaptation report and plot"),
    Subcommand("train", "pearl_robot.train.cli", "meta-train in the twin and/or retrain from "
               "logged datasets; writes checkpoints, metrics, plots, optionally a bundle"),
    Subcommand("evaluate", "pearl_robot.train.evaluate_cli", "evaluate a checkpoint's "
               "adaptation on held-out tasks (reference protocol and per-step online mode)"),
    Subcommand("export", "pearl_robot.export.cli", "export a checkpoint to a model bundle "
               "(ONNX actor + encoder, contract, golden vectors), parity-checked"),
    Subcommand("bundle", "pearl_robot.runtime.cli", "inspect or validate a model bundle "
               "(bundle info|check)"),
    Subcommand("data", "pearl_robot.datalog.cli", "inspect, check, recover and export episode "
               "datasets (data info|check|export)"),
    Subcommand("emulate", "pearl_robot.hardware.emulate_cli", "run the firmware emulator: the "
               "twin behind the serial protocol on a pseudo-terminal"),
    Subcommand("adapt", "pearl_robot.ros.adapt_cli", "start the adapt graph (policy, logger, "
               "twin or serial bridge) without ROS launch tools; same graph as adapt.launch.py"),
)


OUTPUTS = """outputs: by default everything goes under runs/ in the current directory (git-ignored
in the repository); nothing is written into tracked files or loose into the directory:
  runs/<family>-<time>/          train (checkpoints/, progress.csv, learning_curve.png)
  runs/data/adapt/               adapt's episode log (config/adapt.yaml, --dataset-dir)
  runs/plots/<dataset>-summary.png   data info's plot (--plot)
  runs/demo-<time>/              demo (report, logs, datasets, bundles)"""
"""Where outputs go without an explicit path; each subcommand's --help names its own."""


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {s.name:<10} {s.summary}" for s in SUBCOMMANDS)
    parser = argparse.ArgumentParser(
        prog="pearl-robot",
        description="PEARL meta-RL on a real robot: train in the MuJoCo twin, export a model "
        "bundle, run the 20 Hz adapt graph, log every transition, retrain from the logs.",
        epilog=f"subcommands:\n{lines}\n\n{OUTPUTS}\n\n"
        "Run `pearl-robot SUBCOMMAND --help` for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("subcommand", nargs="?", help="one of the subcommands below")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Split "pearl-robot [-v] SUB [sub args...]" by hand so each subcommand owns its parser.
    head: list[str] = []
    while argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        head.append(argv.pop(0))
    ns = top.parse_args(head)
    if not ns.version and (not argv or argv[0] in ("-h", "--help")):
        top.print_help()
        return 0
    if ns.version:
        from pearl_robot import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    by_name = {s.name: s for s in SUBCOMMANDS}
    if name not in by_name:
        top.print_usage(sys.stderr)
        print(f"pearl-robot: unknown subcommand {name!r}; choose from "
              f"{', '.join(by_name)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sub = by_name[name]
    module = importlib.import_module(sub.module)
    parser = argparse.ArgumentParser(
        prog=f"pearl-robot {name}", description=(module.__doc__ or sub.summary).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except PearlRobotError as exc:  # expected failures: one clear line, no traceback
        print(f"pearl-robot {name}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
