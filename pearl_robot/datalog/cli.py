"""Inspect, check, recover and export episode datasets (the directories the logger writes).

  pearl-robot data info DIR...     summary: episodes, tasks, hours, returns per task (+ PNG plot)
  pearl-robot data check DIR...    validate everything (sha256, counts, steps, stamps, manifest);
                                   exit status 1 with one line per problem when anything is wrong
  pearl-robot data recover DIR     close what a crash left behind (as the logger does at start)
  pearl-robot data export DIR... --out OUT
                                   Parquet in a LeRobot-v3-like layout (data/, meta/)

DIR may be given several times (several nights, several robots); their transition layouts must
match. Only manifest-listed episodes are read; unfinished files are reported, never half-read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pearl_robot.datalog.dataset import DatasetError, DatasetPaths, WriterLock
from pearl_robot.datalog.reader import (
    LoadedDataset,
    check_datasets,
    describe,
    load_datasets,
)
from pearl_robot.datalog.recovery import recover_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True,
                                metavar="{info,check,recover,export}")
    info = sub.add_parser("info", help="summary and a plot of one or more datasets")
    info.add_argument("dirs", nargs="+", type=Path, help="dataset directories")
    info.add_argument("--plot", type=Path, default=None,
                      help="PNG with returns per episode and per task (default: "
                      "runs/plots/<first DIR's name>-summary.png; runs/ is git-ignored)")
    info.add_argument("--no-plot", action="store_true", help="skip the plot")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    check = sub.add_parser("check", help="validate; non-zero exit when anything is wrong")
    check.add_argument("dirs", nargs="+", type=Path, help="dataset directories")
    check.add_argument("--no-sha", action="store_true",
                       help="skip re-hashing files (faster, misses silent corruption)")
    check.add_argument("--strict", action="store_true",
                       help="warnings (recovered episodes, step gaps, drops) fail too")
    rec = sub.add_parser("recover", help="recover/quarantine unfinished files of a dataset "
                         "(refused while a logger is writing it)")
    rec.add_argument("dir", type=Path, help="dataset directory")
    exp = sub.add_parser("export", help="export to Parquet (LeRobot-v3-like layout)")
    exp.add_argument("dirs", nargs="+", type=Path, help="dataset directories")
    exp.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    exp.add_argument("--fps", type=float, default=None,
                     help="frames per second (default: from the logged stamps)")


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        return _info(args)
    if args.action == "check":
        return _check(args)
    if args.action == "recover":
        return _recover(args)
    return _export(args)


def _info(args: argparse.Namespace) -> int:
    loaded = load_datasets(args.dirs, progress=sys.stderr.isatty())
    summary = describe(loaded)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(format_summary(summary))
    if not args.no_plot and loaded.episodes:
        plot = args.plot or Path("runs") / "plots" / \
            f"{Path(args.dirs[0]).resolve().name or 'dataset'}-summary.png"
        if plot_summary(loaded, plot):
            print(f"plot: {plot}")
    return 0


def format_summary(s: dict[str, Any]) -> str:
    lay = s["layout"]
    lines = [
        f"datasets     {', '.join(s['datasets'])}",
        f"robots       {', '.join(s['robots']) or '-'}",
        f"layout       obs {lay['obs_dim']}, action {lay['action_dim']}, latent "
        f"{lay['latent_dim']} (schema v{lay['schema_version']})",
        f"episodes     {s['episodes']} ({', '.join(f'{k} {v}' for k, v in sorted(s['episodes_by_status'].items()))}); "  # noqa: E501
        f"{s['usable_episodes']} usable",
        f"transitions  {s['transitions']}",
        f"hours        {s['hours']:.2f} (from stamps)",
        f"models       {', '.join(m[:12] for m in s['models']) or '-'}",
        f"problems     {s['problems']['errors']} errors, {s['problems']['warnings']} warnings"
        + (" (run `pearl-robot data check`)" if s['problems']['errors'] else ""),
        "",
        f"{'task':<44} {'episodes':>8} {'steps':>8} {'return mean':>12} {'std':>8} "
        f"{'min':>8} {'max':>8}",
    ]
    for t in sorted(s["tasks"], key=lambda t: json.dumps(t["task"], sort_keys=True)):
        name = _task_label(t["task"])
        lines.append(f"{name:<44.44} {t['episodes']:>8} {t['transitions']:>8} "
                     f"{t['return_mean']:>12.3f} {t['return_std']:>8.3f} "
                     f"{t['return_min']:>8.3f} {t['return_max']:>8.3f}")
    return "\n".join(lines)


def _task_label(task: dict[str, Any]) -> str:
    fam = task.get("family", "")
    idx = task.get("index", "")
    params = task.get("params", {})
    short = ", ".join(f"{k}={_fmt(v)}" for k, v in list(params.items())[:2])
    return f"{fam}[{idx}] {short}".strip()


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v[:3]) + (",..]" if len(v) > 3 else "]")
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _n(count: int, noun: str) -> str:
    """``1 episode``, ``2 episodes``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def _plot_label(task: dict[str, Any]) -> str:
    """A task's name on the plot: ``family[index]`` (unique, short; the table printed beside
    it has the parameters), else the start of the parameters."""
    if task.get("index", "") != "":
        return f"{task.get('family', 'task')}[{task['index']}]"
    return _short(_task_label(task), 24)


def plot_summary(loaded: LoadedDataset, path: Path) -> bool:
    """Returns per episode over time (coloured by task) and per-task return distributions,
    as a PNG; False (and a line on stderr) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (install the 'train' extra)",
              file=sys.stderr)
        return False
    fig = summary_figure(loaded)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend sits below the axes
    plt.close(fig)
    return True


LEGEND_MAX_TASKS = 24
"""Up to this many tasks the colours get a legend; beyond, the per-task panel names them."""


def summary_figure(loaded: LoadedDataset) -> Any:
    """The figure of :func:`plot_summary` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    eps = [e for e in loaded.episodes if e.usable]
    keys = sorted({e.task_key for e in eps})
    colour = {k: plt.cm.tab20(i % 20) for i, k in enumerate(keys)}
    label = {k: _plot_label(loaded.tasks[k].task) for k in keys}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(2, 1))
    ax1.scatter(range(len(eps)), [e.episode_return for e in eps],
                c=[colour[e.task_key] for e in eps], s=14)
    bad = [i for i, e in enumerate(eps) if e.status == "recovered"]
    if bad:
        ax1.scatter(bad, [eps[i].episode_return for i in bad], facecolors="none",
                    edgecolors="red", s=40, label="recovered after crash")
    if len(keys) <= LEGEND_MAX_TASKS:  # a legend for the colours while it stays readable
        for k in keys:
            ax1.scatter([], [], color=colour[k], s=14, label=label[k])
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8,
                   ncol=min(6, max(1, len(keys))), frameon=False, title="colour = task",
                   title_fontsize=8)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel("episode (load order: dataset, then id)")
    ax1.set_ylabel("return (sum of rewards over the episode)")
    ax1.set_title(f"{_n(len(eps), 'episode')}, {_n(loaded.transitions, 'transition')}, "
                  f"{_n(len(keys), 'task')}")
    data = [[e.episode_return for e in eps if e.task_key == k] for k in keys]
    if data:
        parts = ax2.boxplot(data, orientation="horizontal", patch_artist=True, widths=0.6)
        for patch, k in zip(parts["boxes"], keys):
            patch.set_facecolor(colour[k])
        ax2.set_yticks(range(1, len(keys) + 1),
                       [label[k] for k in keys] if len(keys) <= 40 else [""] * len(keys),
                       fontsize=8 if len(keys) <= 15 else 6)
    ax2.set_xlabel("return per episode")
    ax2.set_title("per task")
    fig.tight_layout()
    return fig


def _check(args: argparse.Namespace) -> int:
    problems = check_datasets(args.dirs, verify_sha=not args.no_sha)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    for p in errors + warnings:
        print(p)
    failed = bool(errors) or (args.strict and bool(warnings))
    print(f"{'FAILED' if failed else 'OK'}: {len(errors)} errors, {len(warnings)} warnings in "
          f"{len(args.dirs)} dataset(s)")
    return 1 if failed else 0


def _recover(args: argparse.Namespace) -> int:
    paths = DatasetPaths(args.dir)
    if not paths.header.exists():
        raise DatasetError(f"{args.dir}: not a dataset (no dataset.json)")
    lock = WriterLock(paths)
    lock.acquire()  # refuses while a live logger writes the dataset
    try:
        report = recover_dataset(args.dir, session="cli-recover")
    finally:
        lock.release()
    print(report.summary())
    return 0


def _export(args: argparse.Namespace) -> int:
    out = export_parquet(args.dirs, args.out, fps=args.fps)
    print(f"exported to {out}")
    return 0


class _ExportRows(NamedTuple):
    """The export's tables as columns, before they become Parquet."""

    frames: dict[str, list[Any]]
    """One row per transition (``data/chunk-000/file-000.parquet``)."""
    episodes: dict[str, list[Any]]
    """One row per episode (``meta/episodes/...``)."""
    total_frames: int
    fps: float
    """From the logged stamps (median step), unless given."""


def export_parquet(dirs: list[Path], out: Path, fps: float | None = None) -> Path:
    """LeRobot-v3-like export: ``data/chunk-000/file-000.parquet`` (one row per transition),
    ``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-000/file-000.parquet``,
    ``meta/stats.json``. Physical units as logged; ``next.observation.state`` is an extra
    column (LeRobot has none) so RL transitions survive the export."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError("export needs pyarrow (install the 'train' extra)") from exc
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: output directory exists and is not empty")
    loaded = load_datasets(dirs, progress=sys.stderr.isatty())
    usable = [e for e in loaded.episodes if e.usable]
    if not usable:
        raise DatasetError("nothing to export: no usable episodes")
    keys = sorted({e.task_key for e in usable})
    tables = _export_rows(loaded, usable, {k: i for i, k in enumerate(keys)}, fps)
    data_dir = out / "data" / "chunk-000"
    meta = out / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(tables.frames), data_dir / "file-000.parquet", compression="snappy")
    pq.write_table(pa.table(tables.episodes),
                   meta / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": list(range(len(keys))), "task": keys}),
                   meta / "tasks.parquet")
    info = _export_info(loaded, usable, dirs, tables, len(keys))
    (meta / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    stats = _export_stats(tables)
    (meta / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return out


def _export_rows(loaded: LoadedDataset, usable: list[Any], task_index: dict[str, int],
                 fps: float | None) -> _ExportRows:
    """Every usable episode's transitions as frame rows, renumbered 0.. in load order."""
    rows: dict[str, list[Any]] = {c: [] for c in (
        "observation.state", "action", "next.observation.state", "next.reward", "next.done",
        "next.truncated", "timestamp", "frame_index", "episode_index", "index", "task_index")}
    ep_rows: dict[str, list[Any]] = {c: [] for c in (
        "episode_index", "length", "dataset_from_index", "dataset_to_index", "tasks",
        "task_index", "source_dataset", "source_episode", "status", "return", "model_sha",
        "data/chunk_index", "data/file_index")}
    index = 0
    dts: list[float] = []
    for new_id, e in enumerate(usable):
        t = loaded.tasks[e.task_key]
        sel = t.episode == e.uid
        n = int(sel.sum())
        stamps = t.stamps[sel, 0]
        ts = stamps - stamps[0]
        if n > 1:
            dts.append(float(np.median(np.diff(stamps))))
        rows["observation.state"] += t.obs[sel].astype(np.float32).tolist()
        rows["action"] += t.action[sel].astype(np.float32).tolist()
        rows["next.observation.state"] += t.next_obs[sel].astype(np.float32).tolist()
        rows["next.reward"] += t.reward[sel].astype(np.float32).tolist()
        rows["next.done"] += t.terminated[sel].tolist()
        rows["next.truncated"] += t.truncated[sel].tolist()
        rows["timestamp"] += ts.astype(np.float32).tolist()
        rows["frame_index"] += t.step[sel].tolist()
        rows["episode_index"] += [new_id] * n
        rows["index"] += list(range(index, index + n))
        rows["task_index"] += [task_index[e.task_key]] * n
        for k, v in (("episode_index", new_id), ("length", n), ("dataset_from_index", index),
                     ("dataset_to_index", index + n), ("tasks", [e.task_key]),
                     ("task_index", task_index[e.task_key]), ("source_dataset", e.dataset),
                     ("source_episode", e.episode), ("status", e.status),
                     ("return", e.episode_return), ("model_sha", e.model_sha),
                     ("data/chunk_index", 0), ("data/file_index", 0)):
            ep_rows[k].append(v)
        index += n
    fps = fps or (1.0 / float(np.median(dts)) if dts and np.median(dts) > 0 else 20.0)
    return _ExportRows(rows, ep_rows, index, fps)


def _export_info(loaded: LoadedDataset, usable: list[Any], dirs: list[Path],
                 tables: _ExportRows, total_tasks: int) -> dict[str, Any]:
    """``meta/info.json``: LeRobot's fields, plus where the data came from."""
    lay = loaded.layout

    def feat(dtype: str, shape: list[int], names: list[str] | None = None) -> dict[str, Any]:
        return {"dtype": dtype, "shape": shape, "names": names}

    return {
        "codebase_version": "v3.0", "robot_type": ",".join(sorted({e.robot for e in usable})),
        "fps": tables.fps, "total_episodes": len(usable), "total_frames": tables.total_frames,
        "total_tasks": total_tasks, "chunks_size": 1000, "data_files_size_in_mb": 100,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            "observation.state": feat("float32", [lay.obs_dim]),
            "action": feat("float32", [lay.action_dim]),
            "next.observation.state": feat("float32", [lay.obs_dim]),
            "next.reward": feat("float32", [1]), "next.done": feat("bool", [1]),
            "next.truncated": feat("bool", [1]), "timestamp": feat("float32", [1]),
            "frame_index": feat("int64", [1]), "episode_index": feat("int64", [1]),
            "index": feat("int64", [1]), "task_index": feat("int64", [1])},
        "source": {"format": "pearl_robot.episode_log", "datasets": [str(d) for d in dirs],
                   "layout": lay.to_json(), "units": "physical (as logged)"},
    }


def _export_stats(tables: _ExportRows) -> dict[str, Any]:
    """``meta/stats.json``: mean, std, min, max and count of the state, action and reward."""
    stats = {}
    n = tables.total_frames
    for col in ("observation.state", "action", "next.reward"):
        arr = np.asarray(tables.frames[col], dtype=np.float64).reshape(n, -1)
        stats[col] = {"mean": arr.mean(0).tolist(), "std": arr.std(0).tolist(),
                      "min": arr.min(0).tolist(), "max": arr.max(0).tolist(), "count": [n]}
    return stats
