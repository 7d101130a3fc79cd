"""What the policy node's parameters decide, without rclpy (``runtime/deployment.py``): the
robot a bundle must match, the episode length, the schedule's state directory and numbering,
and that a failed start leaves nothing open."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pearl_robot.errors import ConfigError
from pearl_robot.ros.node_config import PolicyNodeConfig
from pearl_robot.runtime.deployment import deploy, episode_steps, robot_expectation
from pearl_robot.tasks.point_robot import PointRobotFamily


def test_a_bundle_with_a_robot_description_must_match_this_robot(bundle_copy: Path) -> None:
    raw = json.loads((bundle_copy / "contract.json").read_text())
    raw.pop("robot", None)
    (bundle_copy / "contract.json").write_text(json.dumps(raw))
    assert robot_expectation(bundle_copy) is None  # a contract without a robot description
    (bundle_copy / "contract.json").write_text(json.dumps({**raw, "robot": {}}))
    from pearl_robot.robot.description import load_robot_spec

    exp = robot_expectation(bundle_copy)
    assert exp is not None and exp.action_names == load_robot_spec().joint_names
    assert robot_expectation(bundle_copy / "missing") is None  # the loader reports it


def test_episode_steps_come_from_the_parameter_then_the_contract_then_the_family() -> None:
    class Family:
        name = "walker"
        horizon = 25

    family = Family()
    assert episode_steps(7, {"horizon": 30}, family) == 7  # type: ignore[arg-type]
    assert episode_steps(0, {"horizon": 30}, family) == 30  # type: ignore[arg-type]
    assert episode_steps(0, {}, family) == 25  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'point-robot' has no horizon"):
        episode_steps(0, {}, PointRobotFamily())


def test_deploy_numbers_episodes_from_the_dataset_and_cleans_up(
        twin_bundle: Path, tmp_path: Path) -> None:
    asked: list[str] = []
    settings = PolicyNodeConfig(bundle=str(twin_bundle), session_dir=str(tmp_path / "night"),
                                episode_steps=12, episodes_per_task=2)
    (tmp_path / "night").mkdir()
    deployed = deploy(settings, lambda d: asked.append(d) or 40)
    try:
        assert deployed.session_tmp is None  # the given directory is the dataset's: kept
        assert deployed.episode_steps == 12 and deployed.family.name == "twin-arm"
        assert deployed.control_period == deployed.runtime.bundle.contract.control_period
        assert deployed.controller.session.next_episode == 40
        assert asked == [str(tmp_path / "night")]
        line = deployed.summary()
        assert "12 steps per episode" in line and "next episode id 40" in line
    finally:
        deployed.close()
    assert (tmp_path / "night").is_dir()
    # without a session_dir the schedule's state lives in a temporary directory, removed
    temp = deploy(dataclasses.replace(settings, session_dir=""), lambda d: 0)
    assert temp.session_tmp is not None and Path(temp.session_tmp).is_dir()
    temp.close()
    assert not Path(temp.session_tmp).exists()


def test_a_refused_start_leaves_nothing_open(twin_bundle: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no model bundle"):
        deploy(PolicyNodeConfig(), lambda d: 0)
    state = tmp_path / "tmp-session"
    monkeypatch.setattr("tempfile.mkdtemp", lambda prefix="": (state.mkdir(), str(state))[1])
    closed = []
    from pearl_robot.runtime.policy import PolicyRuntime

    real_close = PolicyRuntime.close
    monkeypatch.setattr(PolicyRuntime, "close",
                        lambda self: closed.append(1) or real_close(self))
    bad = PolicyNodeConfig(bundle=str(twin_bundle), tasks="999")  # no such task
    with pytest.raises(ConfigError, match="outside the family"):
        deploy(bad, lambda d: 0)
    assert closed == [1] and not state.exists()


def test_the_range_margin_is_a_node_parameter(twin_bundle: Path) -> None:
    """An impossible state is refused by the margin the robot's parameters set."""
    from pearl_robot.runtime.policy import RuntimeConfig

    assert PolicyNodeConfig().runtime_config().obs_range_margin == \
        RuntimeConfig().obs_range_margin
    with pytest.raises(ConfigError, match="obs_range_margin"):
        PolicyNodeConfig(obs_range_margin=float("nan"))
    verdicts = {}
    for margin in (0.0, 1.0, -1.0):
        deployed = deploy(PolicyNodeConfig(bundle=str(twin_bundle), obs_range_margin=margin),
                          lambda d: 0)
        try:
            c = deployed.runtime.bundle.contract
            span = c.obs_high - c.obs_low
            just_out = c.obs_high + 0.5 * span  # outside the limits, inside one span
            far_out = c.obs_high + 2.0 * span
            verdicts[margin] = tuple(deployed.runtime.inspect_observation(o).reason
                                     for o in (just_out, far_out))
        finally:
            deployed.close()
    assert verdicts == {0.0: ("obs_range", "obs_range"), 1.0: ("", "obs_range"),
                        -1.0: ("", "")}


def test_exploration_episodes_is_a_node_parameter() -> None:
    """-1 keeps the z_mode's default (PEARL's one prior episode, none for 'mean'); a particle
    model trained with several exploration trajectories gets that many."""
    assert PolicyNodeConfig().runtime_config().exploration_episodes == 1
    assert PolicyNodeConfig(z_mode="mean").runtime_config().exploration_episodes == 0
    assert PolicyNodeConfig(exploration_episodes=5).runtime_config().exploration_episodes == 5
    assert PolicyNodeConfig(z_mode="mean", exploration_episodes=2
                            ).runtime_config().exploration_episodes == 2
    with pytest.raises(ConfigError, match="exploration_episodes"):
        PolicyNodeConfig(exploration_episodes=-2)
