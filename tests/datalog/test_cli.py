"""`pearl-robot data info|check|recover|export` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datalog_synthetic import LAYOUT, episode_length, task_of, transition

from pearl_robot.cli import main
from pearl_robot.datalog.writer import (
    DatasetWriter,
    WriterConfig,
    _Stop,  # the writer thread's stop message (a crash is simulated)
)


def _dataset(root: Path, episodes: range, open_episode: int | None = None) -> None:
    w = DatasetWriter(root, LAYOUT, WriterConfig(robot="cli-bot", commit_every=5,
                                                 commit_interval_s=0.01))
    for ep in episodes:
        w.set_task(task_of(ep), model_sha="deadbeefcafe")
        for s in range(episode_length(ep)):
            w.write(transition(ep, s))
    if open_episode is not None:
        for s in range(10):
            w.write(transition(open_episode, s))
        assert w.flush()
        w._accepting = False  # noqa: SLF001 - leave it unfinished, as a crash would
        w._put(_Stop(), force=True)  # noqa: SLF001
        w._thread.join()  # noqa: SLF001
        w._lock.release()  # noqa: SLF001
    else:
        w.close()


def test_info_prints_summary_and_writes_plot(tmp_path: Path, capsys) -> None:
    _dataset(tmp_path / "a", range(6))
    _dataset(tmp_path / "b", range(6, 9))
    png = tmp_path / "out" / "summary.png"
    assert main(["data", "info", str(tmp_path / "a"), str(tmp_path / "b"), "--plot",
                 str(png)]) == 0
    out = capsys.readouterr().out
    assert "episodes     9 (complete 9); 9 usable" in out
    assert "synthetic[0]" in out and "cli-bot" in out
    assert png.exists() and png.stat().st_size > 10_000
    assert main(["data", "info", str(tmp_path / "a"), "--json", "--no-plot"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transitions"] == sum(episode_length(e) for e in range(6))
    assert {t["task"]["index"] for t in summary["tasks"]} == set(range(5))


def test_check_fails_with_reasons_then_recover_fixes(tmp_path: Path, capsys) -> None:
    _dataset(tmp_path, range(3), open_episode=3)
    assert main(["data", "check", str(tmp_path)]) == 0  # unfinished file: a warning only
    assert "unfinished" in capsys.readouterr().out
    assert main(["data", "check", "--strict", str(tmp_path)]) == 1
    capsys.readouterr()
    f = tmp_path / "episodes" / "ep_000001_s000.mcap"
    f.write_bytes(f.read_bytes()[:-50])
    assert main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "episode 1" in out and "sha256" in out and "FAILED: 1 errors" in out
    assert main(["data", "recover", str(tmp_path)]) == 0
    assert "episode 3: recovered, 10 transitions kept" in capsys.readouterr().out
    assert main(["data", "check", "--no-sha", str(tmp_path / "missing")]) == 1
    assert "no such dataset" in capsys.readouterr().out


def test_recover_refused_while_a_logger_writes(tmp_path: Path, capsys) -> None:
    _dataset(tmp_path, range(1))
    with DatasetWriter(tmp_path, LAYOUT, WriterConfig()):
        assert main(["data", "recover", str(tmp_path)]) == 1
    assert "another logger" in capsys.readouterr().err


def test_export_lerobot_like_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    _dataset(tmp_path / "ds", range(4))
    out = tmp_path / "export"
    assert main(["data", "export", str(tmp_path / "ds"), "--out", str(out)]) == 0
    table = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    n = sum(episode_length(e) for e in range(4))
    assert table.num_rows == n
    assert table.column("episode_index").to_pylist()[:5] == [0] * 5
    assert table.column("frame_index").to_pylist()[: episode_length(0) + 1] == list(
        range(episode_length(0))) + [0]
    assert table.column("action").to_pylist()[1] == pytest.approx(
        LAYOUT.unpack(transition(0, 1)).action.tolist(), rel=1e-6)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == n
    assert info["fps"] == pytest.approx(20.0)
    eps = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert eps.column("dataset_to_index").to_pylist()[-1] == n
    assert pq.read_table(out / "meta" / "tasks.parquet").num_rows == 4
    assert main(["data", "export", str(tmp_path / "ds"), "--out", str(out)]) == 1


def test_default_outputs_stay_out_of_the_cwd_and_paths_print_once(tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    """`data info` without --plot writes under runs/plots/ (git-ignored), not into the
    current directory; `data check` names a bad path once per line."""
    _dataset(tmp_path / "night-3", range(2))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "info", str(tmp_path / "night-3")]) == 0
    assert "plot: runs/plots/night-3-summary.png" in capsys.readouterr().out
    assert (tmp_path / "runs" / "plots" / "night-3-summary.png").is_file()
    assert not list(tmp_path.glob("*.png"))
    missing = tmp_path / "nothere"
    assert main(["data", "check", str(missing)]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.count(str(missing)) == 1, line


def test_adapt_default_dataset_dir_is_under_runs() -> None:
    from pearl_robot.ros.node_config import LoggerNodeConfig

    assert LoggerNodeConfig().dataset_dir.startswith("runs/")
    text = (Path(__file__).resolve().parents[2] / "config" / "adapt.yaml").read_text()
    assert f"dataset_dir: {LoggerNodeConfig().dataset_dir}" in text


def test_summary_plot_is_readable(tmp_path: Path) -> None:
    """Short unique task labels, a legend for the colours, integer episode ticks, plurals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pearl_robot.datalog.cli import summary_figure
    from pearl_robot.datalog.reader import load_datasets

    _dataset(tmp_path / "a", range(3))
    fig = summary_figure(load_datasets([tmp_path / "a"]))
    ax1, ax2 = fig.axes
    assert ax1.get_title() == (f"3 episodes, {sum(episode_length(e) for e in range(3))} "
                               "transitions, 3 tasks")
    legend = ax1.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "synthetic[0]", "synthetic[1]", "synthetic[2]"]
    assert [t.get_text() for t in ax2.get_yticklabels()] == [
        "synthetic[0]", "synthetic[1]", "synthetic[2]"]
    assert all(float(t).is_integer() for t in ax1.get_xticks())
    plt.close(fig)
    _dataset(tmp_path / "b", range(1))
    fig = summary_figure(load_datasets([tmp_path / "b"]))
    assert fig.axes[0].get_title().startswith("1 episode, ") and \
        fig.axes[0].get_title().endswith(", 1 task")
    plt.close(fig)
