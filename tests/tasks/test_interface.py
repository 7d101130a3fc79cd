"""EnvInterface: the typed record an environment gives the bundle contract (no defaults
guessed later), its checkpoint form, and the reading of an older trainer's ``env_spec``."""

from __future__ import annotations

import dataclasses

import pytest

from pearl_robot.robot.description import load_robot_spec
from pearl_robot.tasks.interface import UNSPECIFIED, EnvInterface, EnvInterfaceError
from pearl_robot.tasks.registry import FAMILIES, make_family

make_family("point-robot")  # registers the MuJoCo families too (lazily built)


def _interface(family: str) -> EnvInterface:
    env = make_family(family).make_env(seed=0)
    try:
        return EnvInterface.from_env(env)
    finally:
        env.close()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_declares_a_complete_interface(family: str) -> None:
    """Every registered family can be exported: one name per entry, a control period."""
    env = make_family(family).make_env(seed=0)
    try:
        rec = EnvInterface.from_env(env)
        assert rec.obs_dim == env.obs_dim and rec.action_dim == env.action_dim
        assert rec.control_period == env.control_period > 0
        assert EnvInterface.from_json(rec.to_json()) == rec
    finally:
        env.close()


def test_point_robot_states_its_units_and_interface() -> None:
    rec = _interface("point-robot")
    assert rec.obs_units == ("m", "m") and rec.command_interface == "position_delta"
    assert rec.robot is None and rec.obs_low is None and rec.control_period == 0.05


def test_the_twin_reads_everything_from_the_robot_description() -> None:
    spec = load_robot_spec()
    rec = _interface("twin-arm")
    assert rec.control_period == spec.control_period  # the MJCF's pearl/control_period
    assert rec.robot == spec.to_dict() and rec.command_interface == spec.command_interface
    assert rec.action_joints == spec.joint_names
    assert rec.obs_units == ("rad",) * 3 + ("rad/s",) * 3 and rec.action_units == ("N*m",) * 3
    assert rec.obs_high is not None and rec.obs_high[0] == spec.joints[0].position_max


def test_switching_wrapper_keeps_the_wrapped_interface() -> None:
    plain, switching = _interface("point-robot"), _interface("point-robot-switching")
    assert switching == plain


def test_an_env_without_names_cannot_be_recorded() -> None:
    env = make_family("point-robot").make_env(seed=0)
    env.obs_names = ()  # type: ignore[misc]
    with pytest.raises(EnvInterfaceError, match="every entry needs a name"):
        EnvInterface.from_env(env)


@pytest.mark.parametrize("key", EnvInterface.KEYS)
def test_a_checkpoint_record_missing_a_key_names_it(key: str) -> None:
    raw = _interface("point-robot").to_json()
    del raw[key]
    with pytest.raises(EnvInterfaceError, match=rf"lacks \['{key}'\]"):
        EnvInterface.from_json(raw)


@pytest.mark.parametrize("change, needle", [
    ({"control_period": 0.0}, "control_period must be"),
    ({"control_period": None}, "control_period must be"),
    ({"obs_units": ("m",)}, "obs_units has 1 entries for 2 names"),
    ({"action_names": ("dx", "dx")}, "duplicates"),
    ({"command_interface": ""}, "command_interface must be"),
    ({"obs_low": (0.0, 0.0)}, "obs_low/obs_high"),
])
def test_inconsistent_records_are_refused(change: dict, needle: str) -> None:
    with pytest.raises(EnvInterfaceError, match=needle):
        dataclasses.replace(_interface("point-robot"), **change)


LEGACY_POINT = {"obs_dim": 2, "action_dim": 2, "action_low": [-0.1, -0.1],
                "action_high": [0.1, 0.1], "obs_names": ["x", "y"], "action_names": ["dx", "dy"],
                "dt": 0.05}
"""``env_spec`` as the trainer wrote it before the typed record (``env_spec_to_dict``)."""


def test_legacy_record_over_the_family_env() -> None:
    now = _interface("point-robot")
    assert EnvInterface.is_legacy(LEGACY_POINT) and not EnvInterface.is_legacy(now.to_json())
    assert EnvInterface.from_legacy(LEGACY_POINT, now) == now
    assert EnvInterface.from_legacy({**LEGACY_POINT, "dt": 0.1}, now).control_period == 0.1
    with pytest.raises(EnvInterfaceError, match="older trainer"):
        EnvInterface.from_json(LEGACY_POINT)


def test_legacy_record_without_a_family_states_unspecified_but_needs_names() -> None:
    rec = EnvInterface.from_legacy(LEGACY_POINT, None)
    assert rec.obs_units == (UNSPECIFIED,) * 2 and rec.command_interface == UNSPECIFIED
    nameless = {k: v for k, v in LEGACY_POINT.items() if k != "obs_names"}
    with pytest.raises(EnvInterfaceError, match="no obs_names"):
        EnvInterface.from_legacy(nameless, None)
