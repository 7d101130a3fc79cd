"""Start the adapt graph without ROS launch tools: policy node (20 Hz, online posterior),
logger node, and the twin or the serial bridge, composed in this one process on one
SingleThreadedExecutor.

It builds the same graph, from the same parameters file and arguments, as
`ros2 launch pearl_robot adapt.launch.py ARG:=VALUE ...` (which runs one process per node);
use whichever your machine has. Ctrl-C stops the policy first (the robot gets the safe command),
lets the logger drain and close the episode log, then stops the robot node.

examples:
  pearl-robot adapt                                   # twin, packaged bundle, config/adapt.yaml
  pearl-robot adapt --bundle models/arm3 --dataset-dir /data/night-12 --episodes 30
  pearl-robot adapt --robot serial --port /dev/ttyACM0
  pearl-robot adapt --robot serial --port /dev/ttyACM0 --episodes 30 --exit-when-done
  pearl-robot adapt --print-graph                     # show nodes and parameters, start nothing

With --robot serial the bridge keeps retrying a port that is missing, unreadable or vanished
(ERROR on /diagnostics, naming the port). A run that cannot do its job exits with status 1
after closing the log: a device the bridge refuses (another protocol version, other joints),
or with --exit-when-done a link that stays down for --link-timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import TYPE_CHECKING

from pearl_robot.errors import ConfigError
from pearl_robot.ros.graph import LAUNCH_ARGUMENTS, build_graph
from pearl_robot.ros.node_config import LINK_GIVE_UP_S

if TYPE_CHECKING:
    from pearl_robot.ros.compose import ComposedGraph

FLAGS = ("exit_when_done",)
"""Launch arguments that are plain flags here (``--exit-when-done``), 'true' when given."""


def default_dataset_dir() -> str:
    """The logger's dataset directory when --dataset-dir is not given (the default
    parameters file's, relative to where the graph starts), for --help."""
    from pearl_robot.ros.graph import default_params_file, load_params_file
    from pearl_robot.ros.node_config import LoggerNodeConfig

    try:
        value = load_params_file(default_params_file()).get("logger_node", {}).get(
            "dataset_dir")
    except ConfigError:
        value = None
    return str(value or LoggerNodeConfig().dataset_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for arg in LAUNCH_ARGUMENTS:
        if arg.name in FLAGS:
            continue
        where = ""
        if arg.name == "dataset_dir":  # say where the data goes without the flag
            where = (f" Default file's value: {default_dataset_dir()}, under runs/ in the "
                     "current directory, where every pearl-robot output goes (git-ignored).")
        parser.add_argument(f"--{arg.name.replace('_', '-')}", dest=arg.name,
                            default=arg.default, metavar=arg.name.upper(),
                            help=f"{arg.description}{where} (launch argument "
                            f"{arg.name}:=...)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this many wall seconds (0: run until Ctrl-C)")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop once the policy has run its --episodes (default: keep "
                        "holding the safe command until Ctrl-C, as a robot would; launch "
                        "argument exit_when_done:=true)")
    parser.add_argument("--link-timeout", type=float, default=LINK_GIVE_UP_S,
                        metavar="SECONDS",
                        help="robot serial with --exit-when-done: give up with exit status 1 "
                        "when the robot link has not been up for this long (a missing, "
                        "unreadable or unplugged port, a silent device; default "
                        f"{LINK_GIVE_UP_S:.0f}). Without --exit-when-done the graph "
                        "waits for the robot until Ctrl-C")
    parser.add_argument("--print-graph", action="store_true",
                        help="print the resolved nodes and parameters as JSON and exit")


def graph_values(args: argparse.Namespace) -> dict[str, str]:
    """The launch-argument values of a parsed command line (what build_graph takes)."""
    values = {a.name: str(getattr(args, a.name)) for a in LAUNCH_ARGUMENTS
              if a.name not in FLAGS}
    values.update({name: "true" if getattr(args, name) else "" for name in FLAGS})
    return values


def _print_summary(returns: list[tuple[int, int, float]], specs: tuple,
                   already_done: tuple[int, int | None] = (0, None)) -> None:
    """The run's returns table. ``already_done``: episodes the resumed session had finished
    before this run, and the schedule's total (--episodes), to explain a run with none."""
    dataset = next((s.parameters["dataset_dir"] for s in specs
                    if s.executable == "logger_node"), "?")
    if not returns:
        done, total = already_done
        why = ""
        if total and done >= total:
            why = (f": the dataset's session had already run {done} of its --episodes "
                   f"{total} (the count is the schedule's total, across restarts); raise "
                   "--episodes or pass a new --dataset-dir")
        print(f"no episode finished{why}; dataset: {dataset}")
        return
    print(f"{'episode':>8} {'task':>6} {'return':>10}")
    for episode, task, ret in returns:
        print(f"{episode:>8} {task:>6} {ret:>10.3f}")
    print(f"{len(returns)} episode(s); dataset: {dataset}")


def robot_link_failure(graph: ComposedGraph, give_up_after_s: float) -> str | None:
    """Why the graph's serial robot link cannot serve the run (see
    ``SerialBridge.link_failure``), or None; always None for the twin."""
    bridge_node = next((n for n in graph.nodes if n.get_name() == "bridge_node"), None)
    bridge = getattr(bridge_node, "bridge", None)
    return None if bridge is None else bridge.link_failure(give_up_after_s)


def run(args: argparse.Namespace, summary: bool = True) -> int:
    """Run the graph; ``summary=False`` leaves the returns table to a caller that prints its
    own (the demo), so a user never sees the same episodes listed twice."""
    if not args.link_timeout > 0:
        raise ConfigError(f"--link-timeout must be > 0 seconds, got {args.link_timeout}")
    specs = build_graph(graph_values(args))
    if args.print_graph:
        print(json.dumps([s._asdict() for s in specs], indent=2))
        return 0
    from pearl_robot.ros.compose import spin_graph

    stop = threading.Event()
    if args.duration > 0:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    for s in previous:
        signal.signal(s, _stop)
    returns: list[tuple[int, int, float]] = []

    failure: list[str] = []
    give_up_after_s = args.link_timeout if args.exit_when_done else float("inf")

    def finished(graph: ComposedGraph) -> bool:
        if not already:  # first call, before this run's first episode can end
            session = graph.node("policy_node").controller.session
            already.append((session.completed, session.config.max_episodes))
        why = robot_link_failure(graph, give_up_after_s)
        if why is not None:
            failure.append(why)
            return True
        return args.exit_when_done and graph.node("policy_node").controller.state == "done"

    already: list[tuple[int, int | None]] = []  # (episodes the session had done, its total)

    def collect(graph: ComposedGraph) -> None:
        returns.extend(graph.node("policy_node").controller.returns)

    try:
        rc = spin_graph(specs, stop=stop, done=finished, on_stop=collect)
        if summary:
            _print_summary(returns, specs, *already[:1])
        if failure:
            from pearl_robot.hardware.errors import LinkDownError

            raise LinkDownError(f"{failure[0]}; stopped with {len(returns)} episode(s) "
                                "finished (the log is closed)")
        return rc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
