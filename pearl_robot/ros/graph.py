"""The adapt graph, defined once: which nodes run, with which parameters and remappings.

``launch/adapt.launch.py`` (separate processes, ``ros2 launch``) and ``pearl-robot adapt``
(manual composition: every node in one process, one SingleThreadedExecutor) both call
:func:`build_graph` with the same argument values, so the two ways to start the graph cannot
drift: a test asserts they produce the same node set and parameters.

Parameter precedence, lowest first: the config dataclass defaults; the robot-dependent defaults
(the twin offers a reset service, a serial robot does not); the parameters file (standard ROS
``<node>: ros__parameters:`` YAML, ``/**`` applying to all); the launch arguments.

Pure Python (no rclpy, no launch): importable by the launch file, the CLI and the tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from pearl_robot.errors import ConfigError
from pearl_robot.ros.node_config import (
    LINK_GIVE_UP_S,
    NODE_CONFIGS,
    config_from_mapping,
    config_to_parameters,
)
from pearl_robot.ros.node_main import DEFAULT_EXECUTOR, EXECUTOR_PARAM, check_executor

PACKAGE = "pearl_robot"

# Topic and service names (all absolute, all remappable with `-r NAME:=OTHER`).
JOINT_STATES = "/joint_states"
COMMAND = "/pearl/command"
TRANSITION = "/pearl/transition"
BELIEF = "/pearl/belief"
CHANGE = "/pearl/change"
TASK = "/pearl/task"
ESTOP = "/pearl/estop"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"
ROBOT_RESET = "/pearl/robot/reset"

ROBOTS = ("twin", "serial")
BOOLEANS = {"true": True, "false": False}
"""Spellings of a boolean launch argument (case-insensitive), as launch conditions take them."""


class LaunchArgument(NamedTuple):
    """One argument of ``adapt.launch.py`` and option of ``pearl-robot adapt``."""

    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("robot", "twin",
                   "What the policy drives: 'twin' (the MuJoCo twin node) or 'serial' (the "
                   "serial bridge node to the robot's microcontroller)."),
    LaunchArgument("port", "",
                   "Serial port or pyserial URL of the robot (robot:=serial); empty: the "
                   "parameters file's bridge_node.port."),
    LaunchArgument("bundle", "",
                   "Model bundle directory; empty: the parameters file's policy_node.bundle, "
                   "else the first bundle found under the package's models/."),
    LaunchArgument("dataset_dir", "",
                   "Dataset directory the logger writes episodes to; empty: the parameters "
                   "file's logger_node.dataset_dir."),
    LaunchArgument("params_file", "",
                   "ROS parameters YAML (<node>: ros__parameters: ...); empty: the package's "
                   "config/adapt.yaml."),
    LaunchArgument("episodes", "",
                   "Episodes to run before holding the safe command (0: unlimited); empty: "
                   "the parameters file's policy_node.episodes."),
    LaunchArgument("exit_when_done", "",
                   "'true': end the launch cleanly once the policy has run its episodes "
                   "(needs episodes > 0; the log is closed first); empty: the parameters "
                   "file's policy_node.exit_when_done (default false: hold the safe command "
                   "until Ctrl-C, as a robot would)."),
    LaunchArgument("executor", "",
                   "rclpy executor of every node: 'single' (SingleThreadedExecutor, every "
                   "distro) or 'events' (EventsExecutor, Jazzy and newer: about 0.6 ms less "
                   "from state to command, but experimental: shutdown is not yet clean with "
                   "it, docs/performance.md); empty: the parameters file's (/** or per "
                   "node), else 'single'. pearl-robot adapt always uses 'single'."),
    LaunchArgument("real_time_factor", "1.0",
                   "Twin speed in simulated seconds per wall second; above 1 the twin "
                   "publishes /clock and every node runs on sim time (tests, quick demos)."),
)
"""Arguments in declaration order; defaults are strings as launch substitutions give them."""


class NodeSpec(NamedTuple):
    """One node of the graph, as both start paths need it."""

    executable: str
    """Console script / node class key: policy_node, logger_node, twin_node, bridge_node."""
    name: str
    """Node name (the YAML section and the `ros2 node list` entry)."""
    parameters: dict[str, Any]
    """Every parameter of the node, fully resolved (ROS value types: lists, not tuples)."""
    remappings: tuple[tuple[str, str], ...]
    """(from, to) topic remappings."""


def source_config_dir() -> Path:
    """``config/`` of a source checkout (development), which wins over an install space."""
    return Path(__file__).resolve().parents[2] / "config"


def share_dir() -> Path | None:
    """The package's share directory in an ament install space, if there is one."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, ValueError, LookupError, OSError):
        return None


def default_params_file() -> Path:
    """config/adapt.yaml of the checkout, else of the install space."""
    src = source_config_dir() / "adapt.yaml"
    if src.is_file():
        return src
    share = share_dir()
    if share is not None and (share / "config" / "adapt.yaml").is_file():
        return share / "config" / "adapt.yaml"
    raise ConfigError(f"no default parameters file: neither {src} nor an installed "
                      f"share/{PACKAGE}/config/adapt.yaml exists; pass params_file")


def default_bundle() -> str:
    """The first model bundle (a directory with contract.json) under models/, or ''."""
    roots = [source_config_dir().parent / "models"]
    share = share_dir()
    if share is not None:
        roots.append(share / "models")
    for root in roots:
        if root.is_dir():
            for candidate in sorted(root.iterdir()):
                if (candidate / "contract.json").is_file():
                    return str(candidate)
    return ""


def load_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """``<node>: ros__parameters: {...}`` -> {node: {param: value}}; ``/**`` stays a key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"parameters file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameters file {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"parameters file {p} must map node names to sections")
    out: dict[str, dict[str, Any]] = {}
    for node, section in data.items():
        node = str(node).lstrip("/")
        if node != "**" and node not in NODE_CONFIGS:
            raise ConfigError(f"parameters file {p}: unknown node {node!r}; the graph's "
                              f"nodes are {', '.join(NODE_CONFIGS)}")
        if not isinstance(section, dict) or set(section) != {"ros__parameters"}:
            raise ConfigError(f"parameters file {p}: section {node!r} must hold exactly "
                              "'ros__parameters:'")
        params = section["ros__parameters"] or {}
        if not isinstance(params, dict):
            raise ConfigError(f"parameters file {p}: {node}.ros__parameters must be a mapping")
        out[node] = dict(params)
    return out


def resolve_arguments(values: Mapping[str, str]) -> dict[str, str]:
    """Fill defaults, refuse unknown names and bad values (the message names the argument)."""
    known = {a.name: a for a in LAUNCH_ARGUMENTS}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown argument(s) {unknown}; known: {', '.join(known)}")
    out = {a.name: str(values.get(a.name, a.default)) for a in LAUNCH_ARGUMENTS}
    if out["robot"] not in ROBOTS:
        raise ConfigError(f"robot must be one of {ROBOTS}, got {out['robot']!r}")
    try:
        rtf = float(out["real_time_factor"])
    except ValueError as exc:
        raise ConfigError(f"real_time_factor must be a number, got "
                          f"{out['real_time_factor']!r}") from exc
    if not rtf > 0:
        raise ConfigError(f"real_time_factor must be > 0, got {rtf}")
    if rtf != 1.0 and out["robot"] != "twin":
        raise ConfigError("real_time_factor other than 1 needs robot:=twin (a real robot runs "
                          "in real time)")
    if out["executor"]:
        check_executor(out["executor"])
    if out["exit_when_done"].lower() not in ("", *BOOLEANS):
        raise ConfigError(f"exit_when_done must be true or false, got "
                          f"{out['exit_when_done']!r}")
    if out["episodes"]:
        try:
            if int(out["episodes"]) < 0:
                raise ValueError
        except ValueError as exc:
            raise ConfigError(f"episodes must be an integer >= 0, got "
                              f"{out['episodes']!r}") from exc
    return out


def _absolute(path: str) -> str:
    """Relative paths are relative to where the graph is started, for every process alike."""
    return str(Path(path).expanduser().resolve()) if path else ""


def build_graph(values: Mapping[str, str]) -> tuple[NodeSpec, ...]:
    """The nodes for the given launch-argument values (strings, as launch passes them)."""
    args = resolve_arguments(values)
    params_file = args["params_file"] or str(default_params_file())
    from_file = load_params_file(params_file)
    robot_node = "twin_node" if args["robot"] == "twin" else "bridge_node"
    names = ("policy_node", "logger_node", robot_node)
    rtf = float(args["real_time_factor"])

    overrides: dict[str, dict[str, Any]] = {n: {} for n in names}
    # Robot-dependent defaults, overridable by the file.
    robot_defaults: dict[str, dict[str, Any]] = {n: {} for n in names}
    robot_defaults["policy_node"]["reset_service"] = (
        ROBOT_RESET if args["robot"] == "twin" else "")
    # Launch arguments, which override the file.
    if args["bundle"]:
        overrides["policy_node"]["bundle"] = args["bundle"]
    if args["episodes"]:
        overrides["policy_node"]["episodes"] = int(args["episodes"])
    if args["exit_when_done"]:
        overrides["policy_node"]["exit_when_done"] = BOOLEANS[args["exit_when_done"].lower()]
        if robot_node == "bridge_node" and overrides["policy_node"]["exit_when_done"]:
            # a one-shot run gives up on a dead link instead of waiting for ever
            robot_defaults["bridge_node"]["give_up_after_s"] = LINK_GIVE_UP_S
    if args["dataset_dir"]:
        overrides["logger_node"]["dataset_dir"] = args["dataset_dir"]
    if args["port"] and robot_node == "bridge_node":
        overrides["bridge_node"]["port"] = args["port"]
    if robot_node == "twin_node":
        overrides["twin_node"]["real_time_factor"] = rtf

    specs = []
    dataset_dir = ""
    for name in ("logger_node", "policy_node", robot_node):
        cls = NODE_CONFIGS[name]
        merged = {**robot_defaults[name], **from_file.get("**", {}),
                  **from_file.get(name, {}), **overrides[name]}
        use_sim_time = merged.pop("use_sim_time", None)
        from_file_executor = str(merged.pop(EXECUTOR_PARAM, DEFAULT_EXECUTOR))
        try:
            executor = check_executor(args["executor"] or from_file_executor)
        except ConfigError as exc:
            raise ConfigError(f"{name} (parameters file {params_file}): {exc}") from exc
        try:
            config = config_from_mapping(cls, merged)
        except ConfigError as exc:
            raise ConfigError(f"{name} (parameters file {params_file}): {exc}") from exc
        if name == "policy_node":
            bundle = config.bundle or default_bundle()
            # The schedule's restart state lives with the episode log it numbers.
            config = dataclasses.replace(config, bundle=_absolute(bundle),
                                         session_dir=_absolute(config.session_dir)
                                         or dataset_dir)
        elif name == "logger_node":
            config = dataclasses.replace(config, dataset_dir=_absolute(config.dataset_dir))
            dataset_dir = config.dataset_dir
        params = config_to_parameters(config)
        sim = rtf != 1.0 if use_sim_time is None else bool(use_sim_time)
        params["use_sim_time"] = sim or rtf != 1.0
        params[EXECUTOR_PARAM] = executor  # read by node_main.run_node, not the config
        specs.append(NodeSpec(name, name, params, ()))
    order = {n: i for i, n in enumerate(names)}
    return tuple(sorted(specs, key=lambda s: order[s.name]))
