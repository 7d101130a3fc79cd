"""The adapt graph's one definition: argument handling, params file precedence, and that the
launch file and `pearl-robot adapt` build the same nodes with the same parameters."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import yaml

from pearl_robot.errors import ConfigError
from pearl_robot.ros import adapt_cli
from pearl_robot.ros.graph import LAUNCH_ARGUMENTS, build_graph, load_params_file
from pearl_robot.ros.node_config import (
    LINK_GIVE_UP_S,
    NODE_CONFIGS,
    PolicyNodeConfig,
    config_from_mapping,
    config_to_parameters,
    field_docs,
)

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "adapt.launch.py"


def _launch_module():
    spec = importlib.util.spec_from_file_location("adapt_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_values(argv: list[str]) -> dict[str, str]:
    parser = argparse.ArgumentParser()
    adapt_cli.add_arguments(parser)
    return adapt_cli.graph_values(parser.parse_args(argv))


def test_twin_graph_has_policy_logger_twin() -> None:
    specs = build_graph({})
    assert [s.executable for s in specs] == ["policy_node", "logger_node", "twin_node"]
    policy = specs[0].parameters
    assert policy["reset_service"] == "/pearl/robot/reset"
    assert Path(specs[1].parameters["dataset_dir"]).is_absolute()


def test_serial_graph_uses_bridge_and_port_and_no_reset_service() -> None:
    specs = build_graph({"robot": "serial", "port": "loop://", "episodes": "7"})
    assert [s.executable for s in specs] == ["policy_node", "logger_node", "bridge_node"]
    assert specs[2].parameters["port"] == "loop://"
    assert specs[0].parameters["episodes"] == 7
    assert specs[0].parameters["reset_service"] == ""


def test_one_shot_serial_runs_give_up_on_a_dead_link_overnight_runs_do_not() -> None:
    one_shot = build_graph({"robot": "serial", "port": "loop://", "exit_when_done": "true",
                            "episodes": "2"})
    assert one_shot[2].parameters["give_up_after_s"] == LINK_GIVE_UP_S
    for values in ({"robot": "serial", "port": "loop://"},
                   {"robot": "serial", "port": "loop://", "exit_when_done": "false"}):
        assert build_graph(values)[2].parameters["give_up_after_s"] == 0.0
    parser = argparse.ArgumentParser()
    adapt_cli.add_arguments(parser)
    assert parser.parse_args([]).link_timeout == LINK_GIVE_UP_S  # one owner of the default


def test_params_file_overrides_defaults_and_arguments_override_file(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({
        "policy_node": {"ros__parameters": {"episodes": 4, "z_mode": "mean"}},
        "/**": {"ros__parameters": {"diagnostics_period_s": 2.0}},
    }))
    specs = build_graph({"params_file": str(f), "episodes": "9"})
    policy, logger = specs[0].parameters, specs[1].parameters
    assert policy["z_mode"] == "mean"          # from the file
    assert policy["episodes"] == 9             # argument beats file
    assert logger["diagnostics_period_s"] == 2.0  # /** applies to all nodes


@pytest.mark.parametrize("content, needle", [
    ({"policy_node": {"ros__parameters": {"z_mod": "mean"}}}, "z_mod"),
    ({"policy_node": {"ros__parameters": {"z_mode": "sometimes"}}}, "z_mode"),
    ({"planner_node": {"ros__parameters": {}}}, "planner_node"),
    ({"policy_node": {"episodes": 3}}, "ros__parameters"),
    ({"policy_node": {"ros__parameters": {"episodes": "three"}}}, "episodes"),
])
def test_bad_params_file_names_the_problem(tmp_path: Path, content: dict, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=needle):
        build_graph({"params_file": str(f)})


@pytest.mark.parametrize("values, needle", [
    ({"robot": "drone"}, "robot"),
    ({"real_time_factor": "0"}, "real_time_factor"),
    ({"robot": "serial", "real_time_factor": "5"}, "robot:=twin"),
    ({"episodes": "-1"}, "episodes"),
    ({"bogus": "1"}, "bogus"),
])
def test_bad_arguments_are_refused(values: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_graph(values)


def test_real_time_factor_puts_every_node_on_sim_time() -> None:
    specs = build_graph({"real_time_factor": "5"})
    assert all(s.parameters["use_sim_time"] for s in specs)
    assert specs[2].parameters["real_time_factor"] == 5.0
    assert not any(s.parameters["use_sim_time"] for s in build_graph({}))


def test_default_params_file_is_complete_and_valid() -> None:
    sections = load_params_file(REPO / "config" / "adapt.yaml")
    assert set(sections) == set(NODE_CONFIGS)
    for name, values in sections.items():
        config_from_mapping(NODE_CONFIGS[name], values)


def test_every_config_field_has_a_description() -> None:
    for cls in NODE_CONFIGS.values():
        docs = field_docs(cls)
        for name in config_to_parameters(cls()):
            assert len(docs.get(name, "")) > 15, f"{cls.__name__}.{name} has no docstring"


def test_config_round_trips_through_ros_parameters() -> None:
    cfg = PolicyNodeConfig(tasks="81,85", episodes=3, z_mode="step")
    assert config_from_mapping(PolicyNodeConfig, config_to_parameters(cfg)) == cfg
    with pytest.raises(ConfigError, match="tasks"):
        PolicyNodeConfig(tasks="81,x")


@pytest.mark.parametrize("argv", [
    [],
    ["--robot", "serial", "--port", "/dev/ttyUSB3", "--episodes", "12"],
    ["--bundle", "/tmp/some-bundle", "--dataset-dir", "/tmp/ds", "--real-time-factor", "4"],
])
def test_launch_path_and_cli_path_build_the_same_graph(argv: list[str]) -> None:
    """The launch file's node specs for the same argument values equal the CLI's."""
    values = _cli_values(argv)
    launch = _launch_module()
    launch_values = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    launch_values.update({k: v for k, v in values.items()})
    assert launch.node_specs(launch_values) == build_graph(values)


def test_launch_description_loads_for_real_where_launch_ros_exists() -> None:
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; checked where ROS "
                        "is installed from the distro")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    launch = _launch_module()
    description = launch.generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert [d.name for d in declared] == [a.name for a in LAUNCH_ARGUMENTS]
    assert all(d.description for d in declared)
    context = LaunchContext()
    for d in declared:
        d.execute(context)
    opaque = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    nodes = opaque[0].execute(context)
    specs = build_graph({})
    assert [n.node_executable for n in nodes] == [s.executable for s in specs]


def test_the_executor_argument_reaches_every_node_and_the_file_can_set_it(
        tmp_path: Path) -> None:
    assert {s.parameters["executor"] for s in build_graph({})} == {"single"}
    assert {s.parameters["executor"] for s in build_graph({"executor": "events"})} == {"events"}
    pf = tmp_path / "p.yaml"
    pf.write_text("/**:\n  ros__parameters:\n    executor: events\n")
    specs = build_graph({"params_file": str(pf)})
    assert {s.parameters["executor"] for s in specs} == {"events"}
    # the launch argument wins over the file
    specs = build_graph({"params_file": str(pf), "executor": "single"})
    assert {s.parameters["executor"] for s in specs} == {"single"}
    with pytest.raises(ConfigError, match="executor must be one of single, events"):
        build_graph({"executor": "fast"})
    pf.write_text("policy_node:\n  ros__parameters:\n    executor: threads\n")
    with pytest.raises(ConfigError, match="policy_node .*executor must be one of"):
        build_graph({"params_file": str(pf)})
