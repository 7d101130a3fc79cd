"""Message conversions and the config <-> ROS parameter mapping, on real rclpy objects."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from pearl_robot.datalog.schema import TransitionLayout  # noqa: E402
from pearl_robot.errors import ConfigError  # noqa: E402
from pearl_robot.ros.conversions import (  # noqa: E402
    WARN,
    ConversionError,
    JointStateReader,
    command_from_msg,
    diagnostic_status,
    labelled_array,
    level_of,
    parse_obs_names,
    transition_from_msg,
    transition_msg,
)
from pearl_robot.ros.node_config import PolicyNodeConfig  # noqa: E402
from pearl_robot.ros.params import DeclaredConfig  # noqa: E402

OBS = ("shoulder.position", "elbow.position", "shoulder.velocity", "elbow/effort")


def _js(names, pos, vel, eff) -> JointState:  # noqa: ANN001
    msg = JointState()
    msg.name, msg.position, msg.velocity, msg.effort = list(names), pos, vel, eff
    return msg


def test_obs_follows_the_contract_order_not_the_message_order() -> None:
    reader = JointStateReader.from_obs_names(OBS)
    a = reader.read(_js(["shoulder", "elbow", "wrist"], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0],
                        [7.0, 8.0, 9.0]))
    b = reader.read(_js(["wrist", "elbow", "shoulder"], [3.0, 2.0, 1.0], [6.0, 5.0, 4.0],
                        [9.0, 8.0, 7.0]))
    np.testing.assert_array_equal(a, [1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(a, b)
    nan = reader.read(_js(["shoulder", "elbow"], [np.nan, 2.0], [4.0, 5.0], [7.0, 8.0]))
    assert np.isnan(nan[0])  # passed through: the runtime's safety decides


@pytest.mark.parametrize("names, pos, vel, eff, needle", [
    (["shoulder"], [1.0], [1.0], [1.0], "elbow"),
    (["shoulder", "elbow"], [1.0, 2.0], [1.0, 2.0], [], "effort"),
])
def test_missing_joints_and_short_arrays_are_named(names, pos, vel, eff, needle) -> None:  # noqa: ANN001
    with pytest.raises(ConversionError, match=needle):
        JointStateReader.from_obs_names(OBS).read(_js(names, pos, vel, eff))


def test_obs_names_that_joint_states_cannot_carry_are_refused() -> None:
    with pytest.raises(ConversionError, match="goal_x"):
        parse_obs_names(("shoulder.position", "goal_x"))


def test_transition_round_trip_and_layout_labels() -> None:
    layout = TransitionLayout(6, 3, 5)
    vec = layout.pack(np.arange(6.0), np.ones(3), -1.5, np.arange(6.0) + 1, False, True, 7, 19,
                      100, (1.0, 1.01, 1.05), np.arange(11.0))
    msg = transition_msg(layout, vec)
    assert [d.label for d in msg.layout.dim][1:4] == ["obs", "action", "reward"]
    got_layout, got = transition_from_msg(msg)
    assert got_layout == layout
    np.testing.assert_array_equal(got, vec)
    msg.data = msg.data[:-1]
    with pytest.raises(ConversionError, match="layout says"):
        transition_from_msg(msg)


def test_command_checks_size_and_finiteness() -> None:
    msg = labelled_array({"effort": [1.0, 2.0, 3.0]})
    np.testing.assert_array_equal(command_from_msg(msg, 3), [1.0, 2.0, 3.0])
    with pytest.raises(ConversionError, match="3 joints"):
        command_from_msg(Float64MultiArray(data=[1.0, 2.0]), 3)
    with pytest.raises(ConversionError, match="non-finite"):
        command_from_msg(Float64MultiArray(data=[1.0, np.inf, 0.0]), 3)


def test_diagnostic_status_level_and_values() -> None:
    st = diagnostic_status("policy", "hw", WARN, "stale", {"age_ms": 123.456789, "n": 3})
    assert level_of(st) == WARN
    assert {kv.key: kv.value for kv in st.values} == {"age_ms": "123.5", "n": "3"}


@pytest.fixture
def node(ros_context):  # noqa: ANN001, ANN201
    n = rclpy.create_node("params_probe", context=ros_context,
                          parameter_overrides=[Parameter("episodes", value=5)])
    yield n
    n.destroy_node()


def test_declared_parameters_have_descriptions_types_and_overrides(node) -> None:  # noqa: ANN001
    declared = DeclaredConfig(node, PolicyNodeConfig)
    assert declared.value.episodes == 5  # the override, not the default
    desc = node.describe_parameter("stale_obs_s")
    assert "safe command" in desc.description and desc.read_only
    assert not node.describe_parameter("bundle").read_only


def test_set_parameters_are_validated_by_the_config(node) -> None:  # noqa: ANN001
    changes = []
    declared = DeclaredConfig(node, PolicyNodeConfig,
                              on_change=lambda old, new: changes.append(new.episodes))
    ok = node.set_parameters([Parameter("episodes", value=9)])[0]
    assert ok.successful and declared.value.episodes == 9 and changes == [9]
    bad = node.set_parameters([Parameter("episodes", value=-2)])[0]
    assert not bad.successful and "episodes" in bad.reason
    assert declared.value.episodes == 9
    ro = node.set_parameters([Parameter("stale_obs_s", value=0.5)])[0]
    assert not ro.successful and declared.value.stale_obs_s == 0.1

    def refuse(old, new) -> None:  # noqa: ANN001
        raise ConfigError("bundle refused for a reason")
    node2 = rclpy.create_node("params_probe2", context=node.context)
    d2 = DeclaredConfig(node2, PolicyNodeConfig, on_change=refuse)
    r = node2.set_parameters([Parameter("bundle", value="/x")])[0]
    assert not r.successful and "refused for a reason" in r.reason and d2.value.bundle == ""
    node2.destroy_node()
