"""The whole adapt graph over real DDS: policy, logger and the MuJoCo twin composed as
`pearl-robot adapt` composes them (the twin faster than real time on sim time)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from std_msgs.msg import Float64MultiArray  # noqa: E402

from pearl_robot.datalog.reader import check_datasets, manifest_entries  # noqa: E402
from pearl_robot.ros import graph, qos  # noqa: E402
from pearl_robot.ros.compose import ComposedGraph, create_node  # noqa: E402
from pearl_robot.ros.graph import build_graph  # noqa: E402

from .conftest import REPO, params_file  # noqa: E402

PEARL_BUNDLE = REPO / "tests" / "data" / "bundles" / "arm3-2026-12-pearl"
"""The PEARL (pog) arm3 of `make model`, shipped 2026-12-03 to 12-04."""


def _run_graph(ctx, specs, done, timeout_s: float):  # noqa: ANN001, ANN202
    g = ComposedGraph(specs, ctx)
    probe = rclpy.create_node("transition_probe", context=ctx)
    seen: list[int] = []
    probe.create_subscription(Float64MultiArray, graph.TRANSITION,
                              lambda m: seen.append(len(m.data)), qos.transitions())
    g.executor.add_node(probe)
    policy = g.node("policy_node")
    try:
        finished = g.spin_until(lambda: done(policy), timeout_s)
        published = policy.published_transitions
        returns = list(policy.controller.returns)
        g.spin_until(lambda: len(seen) >= published, 5.0)
    finally:
        g.executor.remove_node(probe)
        probe.destroy_node()
        g.shutdown(drain_s=0.5)
    return finished, published, len(seen), returns


def test_full_graph_runs_episodes_and_logs_every_transition(ros_context, untrained_bundle,
                                                            tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 20, "episodes_per_task": 2,
                                                "tasks": "100,101"}})
    specs = build_graph({"bundle": str(untrained_bundle), "dataset_dir": str(ds),
                         "params_file": pf, "episodes": "3", "real_time_factor": "5"})
    finished, published, seen, returns = _run_graph(
        ros_context, specs,
        lambda p: len(p.controller.returns) >= 3 and p.controller.state == "done", 60.0)
    assert finished, "the graph did not finish 3 episodes"
    assert published == 3 * 20 == seen
    entries = manifest_entries(ds)
    assert [e["transitions"] for e in entries] == [20, 20, 20]
    assert sum(e["transitions"] for e in entries) == published
    assert [e["task"]["task"] for e in entries] == [100, 100, 101]
    assert all(e["status"] == "complete" for e in entries)
    np.testing.assert_allclose([e["return"] for e in entries], [r for _, _, r in returns])
    assert check_datasets([ds]) == []


def test_a_logger_that_starts_late_still_gets_every_step(ros_context, untrained_bundle,  # noqa: ANN001
                                                        tmp_path: Path) -> None:
    """The launch starts the nodes in parallel, so the logger may subscribe after the twin
    and the policy are up (on a loaded robot computer, seconds after): no episode starts
    before it does, and the first episode it logs begins at step 0 (CI once lost 4 steps)."""
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 20}})
    specs = build_graph({"bundle": str(untrained_bundle), "dataset_dir": str(ds),
                         "params_file": pf, "episodes": "1", "real_time_factor": "5"})
    g = ComposedGraph([s for s in specs if s.executable != "logger_node"], ros_context)
    policy = g.node("policy_node")
    logger = None
    try:
        assert g.spin_until(lambda: policy.controller.waiting_for_logger, 20.0)
        g.spin_until(lambda: False, 1.0)  # the twin runs 5x: 100 periods without a logger
        assert policy.commands_sent > 0, "the policy is not ticking"
        assert policy.published_transitions == 0 and policy.controller.episode_id == -1
        assert policy.controller.state == "idle"
        logger = create_node(next(s for s in specs if s.executable == "logger_node"),
                             ros_context)
        g.executor.add_node(logger)
        g.nodes.append(logger)
        assert g.spin_until(lambda: policy.controller.state == "done", 30.0)
        assert not policy.controller.waiting_for_logger
    finally:
        g.shutdown(drain_s=0.5)
    entries = manifest_entries(ds)
    assert [(e["episode"], e["transitions"], e["end_reason"]) for e in entries] == \
        [(0, 20, "truncated")]
    assert check_datasets([ds]) == []


def test_a_restarted_graph_resumes_the_schedule_and_the_numbering(ros_context, untrained_bundle,
                                                                   tmp_path: Path) -> None:
    """Overnight: the graph is stopped and started again on the same dataset; the schedule
    goes on with the next task and the next episode id, and no episode is logged twice."""
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 10, "tasks": "100,101,102"}})
    for episodes in ("2", "4"):
        specs = build_graph({"bundle": str(untrained_bundle), "dataset_dir": str(ds),
                             "params_file": pf, "episodes": episodes,
                             "real_time_factor": "5"})
        finished, published, seen, returns = _run_graph(
            ros_context, specs, lambda p: p.controller.state == "done", 60.0)
        assert finished and published == seen
    entries = manifest_entries(ds)
    assert [e["episode"] for e in entries] == [0, 1, 2, 3]
    assert [e["task"]["task"] for e in entries] == [100, 101, 102, 100]
    assert all(e["transitions"] == 10 for e in entries)
    assert check_datasets([ds]) == []


def test_trained_bundle_adapts_on_a_held_out_task(ros_context, tmp_path: Path) -> None:
    """PEARL's test-time protocol on the robot graph: one exploration episode with z from
    the prior, then posterior sampling; later episodes' returns beat the first. On the PEARL
    arm3 kept in tests/data (the shipped information-head model adapts within the episode,
    best with ``z_mode: step``; bench/compare_bundles.py measures it on 20 tasks)."""
    bundle = PEARL_BUNDLE
    pf = params_file(tmp_path, {"policy_node": {"episodes_per_task": 4, "seed": 3}})
    specs = build_graph({"bundle": str(bundle), "dataset_dir": str(tmp_path / "ds"),
                         "params_file": pf, "episodes": "4", "real_time_factor": "8"})
    family = specs[0].parameters
    assert family["tasks"] == "held-out"
    finished, published, seen, returns = _run_graph(
        ros_context, specs,
        lambda p: len(p.controller.returns) >= 4 and p.controller.state == "done", 80.0)
    assert finished and published == seen
    first, later = returns[0][2], [r for _, _, r in returns[1:]]
    assert np.mean(later) > first, f"returns {returns}"


def test_sigint_leaves_a_closed_log(untrained_bundle, tmp_path: Path) -> None:
    """`pearl-robot adapt` stopped with Ctrl-C mid-episode: the open episode is closed and
    listed, nothing is left unfinished, the dataset checks clean."""
    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 400}})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pearl_robot.cli", "adapt", "--bundle", str(untrained_bundle),
         "--dataset-dir", str(ds), "--params-file", pf, "--real-time-factor", "4"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if list((ds / "episodes").glob("*.part")):  # an episode is being written
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(1.0)  # 4 s of the 20 s episode
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    entries = manifest_entries(ds)
    assert len(entries) == 1, out
    assert entries[0]["end_reason"] == "shutdown", entries[0]  # cut short, closed
    assert 0 < entries[0]["transitions"] < 400
    assert not list((ds / "episodes").glob("*.part")), "unfinished segment left behind"
    assert check_datasets([ds]) == []


def test_adapt_with_a_missing_bundle_fails_with_one_clear_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from pearl_robot.cli import main

    rc = main(["adapt", "--bundle", str(tmp_path / "nope"), "--dataset-dir",
               str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "bundle directory not found" in err and "Traceback" not in err


def test_separate_processes_stopped_with_sigint_leave_a_closed_log(untrained_bundle,
                                                                   tmp_path: Path) -> None:
    """The launch file's layout (one process per node, each started as `ros2 run` would,
    with the graph's parameters): Ctrl-C reaches every process, as `ros2 launch` sends it;
    the logger closes the open episode on its own."""
    import yaml

    ds = tmp_path / "ds"
    pf = params_file(tmp_path, {"policy_node": {"episode_steps": 400}})
    specs = build_graph({"bundle": str(untrained_bundle), "dataset_dir": str(ds),
                         "params_file": pf, "real_time_factor": "4"})
    node_params = tmp_path / "nodes.yaml"
    node_params.write_text(yaml.safe_dump({s.name: {"ros__parameters": s.parameters}
                                           for s in specs}))
    bindir = Path(sys.executable).parent
    if not (bindir / "policy_node").is_file():
        pytest.skip("node console scripts not installed (pip install -e .)")
    procs = [subprocess.Popen([str(bindir / s.executable), "--ros-args", "--params-file",
                               str(node_params)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for s in specs]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if list((ds / "episodes").glob("*.part")):
                break
            time.sleep(0.1)
        assert all(p.poll() is None for p in procs), [p.returncode for p in procs]
        time.sleep(1.0)
        for p in procs:
            p.send_signal(signal.SIGINT)
        outs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    entries = manifest_entries(ds)
    assert len(entries) == 1 and entries[0]["end_reason"] == "shutdown", entries
    assert 0 < entries[0]["transitions"] < 400
    assert not list((ds / "episodes").glob("*.part"))
    assert check_datasets([ds]) == []
