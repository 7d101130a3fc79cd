"""`ros2 launch pearl_robot adapt.launch.py`, the command a robot runs, from a colcon workspace.

The checkout is built with colcon into a temporary workspace once per module
(``bench.colcon_check.build_workspace``), and every command runs with the environment that
``source install/setup.bash`` gives, so what is tested is the installed launch file, config,
models and node executables. The launch tools come from the ROS distro or from the wheels
``make setup`` installs from ../shared/ros-launch-wheels; without them these tests skip.

- ``launch_adapt_checks.py`` (launch_testing, run through ``launch_test``): parameters from
  config/adapt.yaml and the launch arguments, 20 Hz on /pearl/command, e-stop latch and clear,
  hot-swap refused / applied at the episode boundary, SIGINT -> closed dataset.
- ``ros2 launch ... --show-args``: every argument with its description.
- ``ros2 launch ... episodes:=2 exit_when_done:=true``: the launch ends by itself.
- The README's robot command (``robot:=serial port:=... bundle:=... dataset_dir:=...
  episodes:=0``) against the firmware emulator on a pseudo-terminal, stopped with SIGINT to
  ``ros2 launch``: every node exits cleanly and the dataset is closed and checks clean.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import REPO

LAUNCH_TOOLS = ("launch", "launch_ros", "launch_testing", "ros2cli", "ros2launch")


def _installed(name: str) -> bool:
    """Importable as a real package (the checkout's launch/ directory is a namespace package
    named 'launch' too)."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


_missing = [m for m in LAUNCH_TOOLS if not _installed(m)]
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(bool(_missing), reason=(
        f"ROS launch tools not installed ({', '.join(_missing)}): a ROS distro provides them; "
        "`make setup` installs them from ../shared/ros-launch-wheels where that exists")),
    pytest.mark.skipif(importlib.util.find_spec("colcon_core") is None
                       or shutil.which("git") is None or not (REPO / ".git").exists(),
                       reason="needs colcon (the 'dev' extra), git and a git checkout"),
]

from pearl_robot.datalog.reader import check_datasets, manifest_entries  # noqa: E402
from pearl_robot.ros.graph import LAUNCH_ARGUMENTS  # noqa: E402
from pearl_robot.runtime.bundle import seal_contract  # noqa: E402

NODES = ("policy_node", "logger_node")


def _executable(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        pytest.skip(f"{name} is not on PATH")
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A colcon build of the checkout; the sourced environment for it."""
    sys.path.insert(0, str(REPO))
    try:
        from bench.colcon_check import build_workspace, sourced_env
    finally:
        sys.path.remove(str(REPO))
    install = build_workspace(tmp_path_factory.mktemp("colcon-ws"))
    env = sourced_env(install)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(valid, corrupt) hot-swap candidates made from the packaged models/arm3: the valid one
    carries one more provenance field, resealed, so its id differs while every graph, golden
    vector and hash checks; the corrupt one has one byte of actor.onnx flipped (its contract
    still parses, so the full validation off the control path has to refuse it)."""
    root = tmp_path_factory.mktemp("swap-bundles")
    valid, corrupt = root / "arm3-relabelled", root / "arm3-corrupt"
    shutil.copytree(REPO / "models" / "arm3", valid)
    contract = json.loads((valid / "contract.json").read_text())
    contract["provenance"]["relabelled_for"] = "launch hot-swap test"
    seal_contract(valid, contract)
    shutil.copytree(REPO / "models" / "arm3", corrupt)
    actor = corrupt / "actor.onnx"
    data = bytearray(actor.read_bytes())
    data[len(data) // 2] ^= 0xFF
    actor.write_bytes(bytes(data))
    return valid, corrupt


def _launch(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([_executable("ros2"), "launch", "pearl_robot", "adapt.launch.py",
                             *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the launch and every node it started. Killing ``ros2 launch`` alone leaves its
    nodes running: a timed-out test left a bridge node reopening /dev/pts/0, which then took
    over the pseudo-terminals of later emulator tests and failed them."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _output_of(proc: subprocess.Popen[str], timeout: float) -> str:
    """The launch's output once it ends; past ``timeout`` it and its nodes are killed (the
    communicate raises TimeoutExpired all the same, so the test fails saying so)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.communicate()
    return out


def _finished_cleanly(out: str, nodes: tuple[str, ...]) -> list[str]:
    """Nodes launch did not report as 'process has finished cleanly'."""
    return [n for n in nodes if not any(f"[{n}-" in line and "finished cleanly" in line
                                        for line in out.splitlines())]


def test_launch_testing_checks_pass(workspace: dict[str, str], bundles: tuple[Path, Path],
                                    tmp_path: Path) -> None:
    valid, corrupt = bundles
    env = dict(workspace, PEARL_LT_DATASET=str(tmp_path / "dataset"),
               PEARL_LT_SWAP_BUNDLE=str(valid), PEARL_LT_CORRUPT_BUNDLE=str(corrupt))
    xml = tmp_path / "launch_test.xml"
    proc = subprocess.Popen([_executable("launch_test"),
                             str(REPO / "tests" / "ros" / "launch_adapt_checks.py"),
                             "--junit-xml", str(xml)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = _output_of(proc, 240)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    summary = [line for line in out.splitlines() if "/pearl/command:" in line]
    print("\n".join(summary))
    assert xml.is_file(), out[-6000:]
    cases = {c.get("name"): c for c in ET.parse(xml).getroot().iter("testcase")}
    failed = {n: (c.find("failure") if c.find("failure") is not None else c.find("error"))
              for n, c in cases.items()
              if c.find("failure") is not None or c.find("error") is not None}
    assert not failed, "\n".join(f"{n}: {(e.get('message') or '')[:600]}\n{(e.text or '')[-1500:]}"
                                 for n, e in failed.items()) + "\n" + out[-4000:]
    expected = {"test_1_parameters_come_from_config_and_launch_arguments",
                "test_2_command_runs_at_20_hz",
                "test_3_estop_latches_and_clears_through_the_service",
                "test_4_hot_swap_to_a_corrupt_bundle_is_refused_and_the_old_one_kept",
                "test_5_hot_swap_takes_effect_at_the_next_episode_boundary",
                "test_every_node_exited_cleanly", "test_the_dataset_is_closed_and_checks_clean"}
    assert expected <= {n.split(".")[-1] for n in cases}, sorted(cases)
    assert res.returncode == 0, out[-4000:]


def test_show_args_lists_every_argument_with_its_description(workspace: dict[str, str],
                                                             tmp_path: Path) -> None:
    res = subprocess.run([_executable("ros2"), "launch", "pearl_robot", "adapt.launch.py",
                          "--show-args"], cwd=tmp_path, env=workspace, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    flat = " ".join(res.stdout.split())
    for arg in LAUNCH_ARGUMENTS:
        assert f"'{arg.name}': {' '.join(arg.description.split())} (default: " \
               f"'{arg.default}')" in flat, f"{arg.name} missing or undescribed:\n{res.stdout}"
    listed = [line.strip()[1:-2] for line in res.stdout.splitlines()
              if line.startswith("    '") and line.rstrip().endswith("':")]
    assert listed == [a.name for a in LAUNCH_ARGUMENTS]


def test_exit_when_done_ends_the_launch_after_the_episodes(workspace: dict[str, str],
                                                           tmp_path: Path) -> None:
    ds = tmp_path / "dataset"
    t0 = time.monotonic()
    proc = _launch(workspace, "episodes:=2", "exit_when_done:=true", "real_time_factor:=4",
                   f"dataset_dir:={ds}", cwd=tmp_path)
    out = _output_of(proc, 90)
    print(f"exit_when_done: 2 episodes, launch ended after {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, out[-4000:]
    assert not _finished_cleanly(out, (*NODES, "twin_node")), out[-4000:]
    assert "process[policy_node-1] was required: shutting down launched system" in out
    entries = manifest_entries(ds)
    assert [(e["episode"], e["end_reason"], e["transitions"]) for e in entries] == \
        [(0, "truncated", 60), (1, "truncated", 60)]
    assert check_datasets([ds]) == []


def test_exit_when_done_without_a_fixed_episode_count_is_refused(workspace: dict[str, str],
                                                                 tmp_path: Path) -> None:
    proc = _launch(workspace, "exit_when_done:=true", cwd=tmp_path)
    out = _output_of(proc, 60)
    assert proc.returncode != 0
    assert "exit_when_done" in out and "episodes > 0" in out, out[-3000:]
    assert "process started" not in out, "nodes started with an impossible stop condition"


def test_a_policy_that_cannot_start_ends_the_launch(workspace: dict[str, str],
                                                    tmp_path: Path) -> None:
    """The policy node is required: without it nothing commands the robot, so the launch ends
    instead of running the logger and the twin on their own."""
    proc = _launch(workspace, f"bundle:={tmp_path / 'no-such-bundle'}",
                   f"dataset_dir:={tmp_path / 'dataset'}", cwd=tmp_path)
    out = _output_of(proc, 60)
    assert "bundle directory not found" in out, out[-3000:]
    assert "process[policy_node-1] was required: shutting down launched system" in out
    assert not _finished_cleanly(out, ("logger_node", "twin_node")), out[-3000:]


def test_a_one_shot_serial_launch_gives_up_on_a_dead_link(workspace: dict[str, str],
                                                          tmp_path: Path) -> None:
    """exit_when_done with robot:=serial and no device: the bridge gives up after
    LINK_GIVE_UP_S and the launch ends instead of waiting for ever."""
    from pearl_robot.ros.node_config import LINK_GIVE_UP_S

    port = tmp_path / "ttyPEARL-missing"
    t0 = time.monotonic()
    proc = _launch(workspace, "robot:=serial", f"port:={port}", "episodes:=2",
                   "exit_when_done:=true", f"dataset_dir:={tmp_path / 'dataset'}", cwd=tmp_path)
    out = _output_of(proc, LINK_GIVE_UP_S + 60)
    took = time.monotonic() - t0
    print(f"dead link: launch ended after {took:.1f} s")
    assert f"serial link to {port}" in out and "giving up after give_up_after_s=20" in out, \
        out[-3000:]
    assert "process[bridge_node-3]" in out and "process has died" in out, out[-3000:]
    assert not _finished_cleanly(out, NODES), out[-3000:]  # the others stop cleanly
    assert took >= LINK_GIVE_UP_S


def test_readme_robot_command_stopped_with_sigint_leaves_a_closed_dataset(
        workspace: dict[str, str], tmp_path: Path) -> None:
    """README: ``ros2 launch pearl_robot adapt.launch.py robot:=serial port:=/dev/ttyACM0
    bundle:=/opt/models/arm3 dataset_dir:=/data/night-12 episodes:=0``, with the firmware
    emulator's pseudo-terminal as the port; Ctrl-C (SIGINT to ros2 launch) mid-episode."""
    from pearl_robot.hardware.emulator import FirmwareEmulator, make_twin_plant
    from pearl_robot.hardware.emulator_endpoints import PtyEndpoint

    ds = tmp_path / "night-12"
    endpoint = PtyEndpoint()
    emu = FirmwareEmulator(make_twin_plant(seed=0), endpoint).start()
    proc = _launch(workspace, "robot:=serial", f"port:={endpoint.host_path}",
                   f"bundle:={REPO / 'models' / 'arm3'}", f"dataset_dir:={ds}", "episodes:=0",
                   cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        # One episode closed and the next one under way (a .part file being written).
        while time.monotonic() < deadline and proc.poll() is None:
            if (ds / "manifest.jsonl").is_file() and list((ds / "episodes").glob("*.part")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert list((ds / "episodes").glob("*.part")), "no episode started within 60 s"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        armed_after = emu.status().armed
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.communicate()
        emu.stop()
        endpoint.close()
    assert proc.returncode == 0, out[-4000:]
    assert not _finished_cleanly(out, (*NODES, "bridge_node")), out[-4000:]
    entries = manifest_entries(ds)
    assert len(entries) >= 2, entries
    assert all(e["status"] == "complete" for e in entries)
    assert entries[0]["end_reason"] == "truncated" and entries[0]["transitions"] == 60
    assert entries[-1]["end_reason"] == "shutdown" and 0 < entries[-1]["transitions"] < 60
    assert not list((ds / "episodes").glob("*.part"))
    assert check_datasets([ds]) == []
    assert not armed_after, "the bridge left the device armed"

