"""What the policy node runs, built from its settings without ROS.

The policy node (``ros/policy_node.py``) declares its parameters and hands them here; this
module decides everything that follows from them: which robot the bundle must match, the task
family and the episode length, the restart-safe schedule and where its state file lives, and
the :class:`~pearl_robot.runtime.episodes.EpisodeController` around the
:class:`~pearl_robot.runtime.policy.PolicyRuntime`. The node then only converts messages,
calls the controller and publishes; the decisions are tested here without rclpy
(``tests/runtime/test_deployment.py``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from pearl_robot.errors import ConfigError
from pearl_robot.runtime.bundle import RobotExpectation
from pearl_robot.runtime.canary import QualityCanary
from pearl_robot.runtime.episodes import EpisodeController, family_from_contract, select_tasks
from pearl_robot.runtime.policy import PolicyRuntime
from pearl_robot.runtime.schedule import OvernightSession, SessionError, describe_plan
from pearl_robot.runtime.task_reward import reward_function
from pearl_robot.tasks.base import TaskFamily


class PolicySettings(Protocol):
    """What the deployment needs of the node's parameters (``ros.node_config.
    PolicyNodeConfig`` has it; runtime cannot import ros, so it is described here)."""

    bundle: str
    seed: int
    task_family: str
    episode_steps: int
    episodes_per_task: int
    session_dir: str

    def runtime_config(self) -> Any: ...
    def schedule_config(self, task_indices: tuple[int, ...], episode_steps: int) -> Any: ...
    def episode_config(self, control_period: float, family_name: str) -> Any: ...
    def canary_config(self) -> Any: ...
    def task_selection(self) -> str | tuple[int, ...]: ...


class Deployment(NamedTuple):
    """The policy node's runtime, family and controller."""

    runtime: PolicyRuntime
    family: TaskFamily
    episode_steps: int
    controller: EpisodeController
    session_tmp: str | None
    """A temporary schedule state directory (no ``session_dir`` given): :meth:`close`
    removes it."""

    @property
    def control_period(self) -> float:
        """The control period, from the bundle's contract."""
        return float(self.runtime.bundle.contract.control_period)

    def summary(self) -> str:
        """The start-up line: model, rate, episode length, tasks, where the numbering is."""
        contract = self.runtime.bundle.contract
        session = self.controller.session
        resumed = f" (resumed, {session.completed} done)" if session.completed else ""
        return (f"bundle {self.runtime.bundle.sha256[:12]} ({self.family.name}, latent "
                f"{contract.latent_dim}), {1 / self.control_period:.0f} Hz, {self.episode_steps} "
                f"steps per episode, {describe_plan(session.config, session.completed)}; "
                f"next episode id {session.next_episode}{resumed}")

    def close(self) -> None:
        """Release the runtime and a temporary schedule state directory."""
        _release(self.runtime, self.session_tmp)


def _release(runtime: PolicyRuntime, session_tmp: str | None) -> None:
    try:
        runtime.close()
    finally:
        if session_tmp is not None:
            shutil.rmtree(session_tmp, ignore_errors=True)


def robot_expectation(bundle_dir: str | Path) -> RobotExpectation | None:
    """This package's robot (the MJCF in sim/) when the bundle's contract carries a ``robot``
    description: then every bundle must match its joints, limits, period and interface."""
    try:
        raw = json.loads((Path(bundle_dir) / "contract.json").read_text())
    except (OSError, ValueError):
        return None  # the bundle loader reports the problem with the right error
    if not isinstance(raw, dict) or "robot" not in raw:
        return None
    from pearl_robot.robot.description import load_robot_spec

    return RobotExpectation.from_robot_spec(load_robot_spec())


def episode_steps(configured: int, described: dict[str, Any], family: TaskFamily) -> int:
    """Control ticks per episode: the parameter, else the contract's horizon, else the
    family's; none of them is an error (an episode must end)."""
    steps = configured or int(described.get("horizon") or getattr(family, "horizon", 0) or 0)
    if steps < 1:
        raise ConfigError(f"family {family.name!r} has no horizon; set 'episode_steps'")
    return steps


def deploy(settings: PolicySettings, first_free_episode: Callable[[str], int]) -> Deployment:
    """Load the bundle and build the controller the node drives. ``first_free_episode(dir)``:
    the dataset's next unused episode id in the schedule's state directory (the dataset's),
    so a restarted graph continues its numbering. Raises ConfigError (or the bundle's
    error) with nothing left open."""
    if not settings.bundle:
        raise ConfigError("no model bundle: set the policy_node 'bundle' parameter "
                          "(launch argument bundle:=DIR)")
    runtime = PolicyRuntime(settings.bundle, settings.runtime_config(),
                            rng=np.random.default_rng(settings.seed),
                            robot=robot_expectation(settings.bundle))
    session_tmp = None
    try:
        contract = runtime.bundle.contract
        family = family_from_contract(dict(contract.task_family), settings.task_family)
        steps = episode_steps(settings.episode_steps, dict(contract.task_family), family)
        state_dir = settings.session_dir
        if not state_dir:
            state_dir = session_tmp = tempfile.mkdtemp(prefix="pearl-session-")
        sched = settings.schedule_config(select_tasks(family, settings.task_selection()), steps)
        try:
            session = OvernightSession(sched, family.tasks, state_dir,
                                       first_free_episode=lambda: first_free_episode(state_dir))
        except SessionError as exc:
            raise ConfigError(str(exc)) from exc
        controller = EpisodeController(
            runtime, session, settings.episode_config(contract.control_period, family.name),
            reward=lambda task: reward_function(family, task),
            canary=QualityCanary(settings.canary_config()))
    except BaseException:
        _release(runtime, session_tmp)
        raise
    return Deployment(runtime, family, steps, controller, session_tmp)
