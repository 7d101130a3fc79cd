"""The demo: its ROS-free twin-only path, and the quick sim-to-real loop end to end."""

import argparse
import json

import pytest

from pearl_robot import demo
from pearl_robot.export.testing import write_test_bundle


def test_demo_without_ros_drives_the_runtime_and_reports(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    write_test_bundle(bundle, family="point-robot", seed=0,
                      hidden_sizes=(16, 16), encoder_hidden_sizes=(16,))
    args = argparse.Namespace(bundle=str(bundle), episodes=4, real_time_factor=1.0,
                              out=tmp_path / "out", timeout=60.0)
    rows = demo._run_without_ros(args, episodes_per_task=2)
    assert [r["task"] for r in rows] == ["task 80", "task 80", "task 81", "task 81"]
    assert all(r["steps"] == 20 and r["return"] < 0 for r in rows)
    demo._report(rows, tmp_path)
    out = capsys.readouterr().out
    assert "explore" in out and "adapt 1" in out
    assert (tmp_path / "adaptation.png").stat().st_size > 1000


@pytest.mark.ros
def test_quick_loop_runs_every_stage_end_to_end(tmp_path, capsys):
    """`pearl-robot demo --quick`: emulator on a pty + serial graph, a night on the twin, a
    retrain of a few steps, export + bundle check, hot-swap through the bundle parameter, the
    canary's verdict acted on, and the report files."""
    pytest.importorskip("rclpy")
    pytest.importorskip("mujoco")
    pytest.importorskip("torch")
    from pearl_robot import cli
    from pearl_robot.datalog.reader import check_datasets, manifest_entries

    out = tmp_path / "loop"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-screenshot"]) == 0
    result = json.loads((out / "loop.json").read_text())
    assert [s["stage"] for s in result["stages"]] == [
        "robot", "evening", "night", "morning", "hot-swap", "canary"]
    cfg = result["config"]
    n, ept = cfg["held_out_tasks"] * cfg["episodes_per_task"], cfg["episodes_per_task"]
    # the night's log: every planned episode, complete, on the night's tasks
    night = manifest_entries(out / "night-log")
    assert len(night) == cfg["night_episodes"]
    assert {e["task"]["task"] for e in night} == set(result["night_tasks"])
    assert check_datasets([out / "night-log"]) == []
    # the robot's log: shipped model, then the retrained one on the same tasks in order
    rows = result["episodes"]
    assert len(rows) == 2 * n + ept
    shipped, new = result["bundle_sha256"], result["retrain"]["bundle_sha256"]
    assert shipped != new
    before = [r for r in rows if r["phase"] == "before"]
    after = [r for r in rows if r["phase"] == "after"]
    assert {r["model_sha"] for r in before} == {shipped}
    assert {r["model_sha"] for r in after} == {new}
    assert [r["task"] for r in before] == [r["task"] for r in after]
    assert all(r["transitions"] == 60 for r in rows)
    # the quick retrain's one-episode evaluation is noise: the quick loop overrides the
    # provenance guard (as an operator would, logged) when it refuses, so the canary decides
    assert result["swap"]["guard"] in ("passed", "overridden"), result["swap"]
    assert (result["swap"]["guard"] == "overridden") == any(
        "swap_override" in a for a in result["operator"])
    # the canary judged every after-swap episode and the robot kept what it decided
    canary = result["canary"]
    assert canary is not None and len(canary["judged"]) == n
    kept = {r["model_sha"] for r in rows if r["phase"] == "confirm"}
    assert kept == ({shipped} if canary["decision"] == "rollback" else {new})
    # the retrained bundle passed the robot check; the report is there
    check = (out / "logs" / "bundle-check.log").read_text()
    assert "robot fit" in check and "check       OK" in check
    for name in ("report.html", "returns.png", "belief.png", "timing.png", "summary.json"):
        assert (out / name).stat().st_size > 1000, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["comparison"]["per_task"]) == {str(t) for t in result["held_out_tasks"]}
    assert "held-out tasks on the robot" in capsys.readouterr().out
    # each measured phase says how many of its commands a disarmed device ignored (counters
    # read from 1 Hz statuses: a phase's ends are known to a second, 20 ticks)
    for phase in ("evening", "after"):
        ignored, ticks = result["commands_ignored"][phase]
        assert ticks >= 60 * n - 40 and 0 <= ignored <= ticks, (phase, ignored, ticks)


def test_the_comparison_counts_ignored_commands_not_status_samples():
    """A one-tick disarm (the bridge disarms 75 ms after the last command and re-arms with the
    next) used to void the whole comparison when a 1 Hz status sample fell in it; now the
    verdict reads how many commands the device ignored, against a tolerance."""
    from pearl_robot.loop.mission import commands_ignored
    from pearl_robot.loop.report import IGNORED_COMMANDS_TOLERANCE, ignored_phases, verdict_text

    link, loop = "bridge_node: serial link", "policy_node: control loop"
    diags = [(0.0, loop, 0, "", {"ticks": "100"}), (0.5, link, 0, "", {}),
             (1.0, link, 1, "", {"events.commands_while_disarmed": "2", "armed": "False"}),
             (1.5, loop, 0, "", {"ticks": "400"}),
             (2.0, link, 0, "", {"events.commands_while_disarmed": "3", "armed": "True"}),
             (3.0, loop, 0, "", {"ticks": "700"}),
             (3.5, link, 0, "", {"events.commands_while_disarmed": "40"})]
    assert commands_ignored(diags, 0.2, 2.5) == (3, 300)
    assert commands_ignored(diags, 1.2, 3.2) == (1, 600)
    assert commands_ignored(diags, 0.0, 9.0) == (40, 600)
    cmp = {"delta_mean": 1.0, "delta_relative": 0.01, "after_mean": -70.0, "before_mean": -71.0,
           "delta_std_across_tasks": 2.0, "tasks_better": 2, "tasks": 4}
    few = {"evening": [0, 600], "after": [int(IGNORED_COMMANDS_TOLERANCE * 600), 600]}
    assert ignored_phases(few) == {}
    assert not verdict_text(cmp, None, "new", False, few).startswith("NO VALID")
    many = {"evening": [0, 600], "after": [40, 600]}
    assert ignored_phases(many) == {"after": (40, 600)}
    text = verdict_text(cmp, None, "new", False, many)
    assert text.startswith("NO VALID COMPARISON") and "40 of the 600 commands" in text



def test_twin_only_prints_its_returns_table_once(tmp_path, capsys, monkeypatch):
    """The adapt graph's own summary table is left out when the demo prints its table (a
    user saw the same episodes listed twice)."""
    from pearl_robot.datalog import reader
    from pearl_robot.ros import adapt_cli

    calls = []

    def fake_run(args, summary=True):
        calls.append(summary)
        if summary:
            print(" episode   task     return")
        return 0

    monkeypatch.setattr(adapt_cli, "run", fake_run)
    monkeypatch.setattr(reader, "manifest_entries", lambda d: [
        {"episode": i, "task": {"task": 80 + i // 2, "family": "point-robot"},
         "return": -10.0 + i, "transitions": 20} for i in range(4)])
    args = argparse.Namespace(bundle=None, episodes=4, real_time_factor=8.0, timeout=60.0)
    rows = demo._run_graph(args, tmp_path / "dataset")
    demo._report(rows, tmp_path)
    out = capsys.readouterr().out
    assert calls == [False]
    assert sum("episode" in line and "return" in line for line in out.splitlines()) == 1
    assert [r["task_index"] for r in rows] == [80, 80, 81, 81]


def test_adaptation_plot_has_reference_lines_and_says_what_return_is(tmp_path):
    pytest.importorskip("mujoco")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"episode": i, "task": f"task {100 + i // 2}", "task_index": 100 + i // 2,
             "family": "twin-arm", "return": -50.0 + i, "steps": 10} for i in range(4)]
    figs = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(plt, "close", figs.append)  # keep the figure to look at it
    try:
        assert demo.plot_adaptation(rows, tmp_path / "a.png").stat().st_size > 1000
    finally:
        monkeypatch.undo()
    (fig,) = figs
    ax = fig.axes[0]
    # per task: its returns, then a zero-effort and an oracle line
    flat = [ln for ln in ax.lines if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
    assert len(flat) == 4
    labels = ax.get_legend_handles_labels()[1]
    assert "zero effort (same task)" in labels and "oracle, told the task" in labels
    text = " ".join(t.get_text() for t in fig.texts)
    assert "return = sum of the rewards over the 10 steps" in text
    for zero, oracle in demo._references(rows)[0].values():
        assert oracle > zero  # the oracle reaches the goal, zero effort does not
    plt.close(fig)


def test_a_demo_refused_up_front_leaves_no_empty_run_directory(tmp_path, capsys):
    from pearl_robot import cli

    out = tmp_path / "runs" / "demo-x"
    assert cli.main(["demo", "--twin-only", "--bundle", str(tmp_path / "nope"),
                     "--out", str(out)]) == 1
    assert "nope" in capsys.readouterr().err
    assert not out.exists()
    mine = tmp_path / "mine"  # a directory the user made is never removed
    mine.mkdir()
    assert cli.main(["demo", "--twin-only", "--bundle", str(tmp_path / "nope"),
                     "--out", str(mine)]) == 1
    assert mine.is_dir()
