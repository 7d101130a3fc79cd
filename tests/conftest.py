"""Test-wide setup: quiet, isolated ROS 2 traffic; single-threaded torch; ROS-only skips."""

from __future__ import annotations

import importlib.util
import os
import random
import signal

import pytest

# DDS stays on loopback and each test run gets its own domain, so parallel runs (and other
# sessions on the machine) never see each other's topics.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("MUJOCO_GL", "egl")

# Many tests stop a child process with SIGINT, as Ctrl-C does. A shell that starts pytest in
# the background (``make test &``, nohup, some CI runners) leaves SIGINT ignored, and children
# inherit an ignored signal: every such child would then ignore its Ctrl-C and time out. A
# Python handler is reset to the default in each child at exec, so installing one here gives
# every child the disposition a user's terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _ros_available() -> bool:
    return importlib.util.find_spec("rclpy") is not None


LAUNCH_TOOLS = ("launch", "launch_ros", "launch_testing", "ros2cli")


def _launch_tools_line() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in LAUNCH_TOOLS:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    return "ROS launch tools: " + ", ".join(found)


def pytest_report_header(config: pytest.Config) -> str:
    """Which ROS launch tools the launch tests (tests/ros/test_launch_adapt.py) run with."""
    return _launch_tools_line()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    """The same line at the end, where `pytest -q` (make test, CI) shows it too."""
    terminalreporter.write_line(_launch_tools_line())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _ros_available():
        return
    skip = pytest.mark.skip(reason="rclpy is not installed (install the 'ros' extra)")
    for item in items:
        if "ros" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _torch_single_thread() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def _log_random_night(family, ds):  # noqa: ANN001, ANN202 - (TaskFamily, Path) -> Path
    """Two 10-step episodes of random actions on tasks 3 and 4 of ``family``, logged to
    ``ds`` by the real writer and schedule (the offline-training tests' night)."""
    import numpy as np

    from pearl_robot.datalog.schema import TransitionLayout
    from pearl_robot.datalog.writer import DatasetWriter, WriterConfig
    from pearl_robot.runtime.episodes import drive_env
    from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig

    env = family.make_env(seed=0)
    env.family = family.name
    rng = np.random.default_rng(0)
    with DatasetWriter(ds, TransitionLayout(env.obs_dim, env.action_dim, 0),
                       WriterConfig(commit_every=20, commit_interval_s=0.05)) as w:
        session = OvernightSession(ScheduleConfig(task_indices=(3, 4), episode_steps=10,
                                                  max_episodes=2), family.tasks, ds)
        drive_env(session, env, lambda obs, cmd: rng.uniform(-1, 1, env.action_dim), w,
                  max_ticks=10_000)
        assert w.flush()
    return ds


@pytest.fixture(scope="session")
def log_random_night():  # noqa: ANN201
    """``(family, ds) -> ds``: log two short random episodes (tests that train from logs)."""
    return _log_random_night


@pytest.fixture(scope="session")
def particles(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(bundle dir, networks) of a small untrained sparse point-robot particle model
    (``SMALL_PARTICLE_MODEL``), exported once for the export and runtime tests."""
    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.export.testing import SMALL_PARTICLE_MODEL, write_test_bundle

    out = tmp_path_factory.mktemp("particles") / "b"
    write_test_bundle(out, "sparse-point-robot", seed=0, **SMALL_PARTICLE_MODEL)
    nets = networks_from_checkpoint(load_checkpoint(out.parent / f"{out.name}.ckpt.pt"))
    return out, nets
