"""The main job: the sim-to-real loop, unattended, on the embedded default.

The firmware emulator (the MuJoCo twin behind the serial protocol) on a real pseudo-terminal is
the robot; the adapt graph with robot:=serial drives it with the shipped bundle on held-out
tasks; a night of collection runs on the twin at accelerated time with the overnight schedule;
in the morning the trainer retrains from that night's log mixed with simulation of tasks that
were not logged, exports a bundle and checks it against the robot; the bundle is hot-swapped
into the still-running policy node through its `bundle` parameter; the same held-out tasks run
again, the node's quality canary judges the new model (and rolls back if it is worse), and a
report (report.html, PNGs, summary.json; a Chromium screenshot when installed) is written next
to the run. Stages and their logs: pearl_robot/loop/mission.py.

  pearl-robot demo                  # the whole loop, about 10 minutes on 2 cores
  pearl-robot demo --quick          # every stage, about a minute (a retrain of a few steps)
  pearl-robot demo --out runs/loop --seed 3
  pearl-robot demo --twin-only      # the old first step only: episodes on the twin, a plot
  pearl-robot demo --twin-only --bundle models/arm3 --episodes 9 --real-time-factor 4

Without rclpy (no ROS 2 install and no `ros` extra) only --twin-only runs: the runtime and the
twin in-process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pearl_robot.errors import PearlRobotError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="every stage of the loop in about a minute (short night, a retrain "
                   "of a few steps): for the impatient and for tests")
    p.add_argument("--bundle", default="", help="model bundle the robot starts with "
                   "(default: the packaged one)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default runs/demo-<time>)")
    p.add_argument("--init", default="", metavar="CHECKPOINT",
                   help="warm-start the morning's retrain from this checkpoint (default: the "
                   "running bundle's own checkpoint.pt, else the checkpoint its provenance "
                   "names when it is on this disk)")
    p.add_argument("--canary-margin", type=float, default=0.2,
                   help="hot-swap canary: roll back when the new model is worse by more than "
                   "this fraction of the old model's mean |return| (default 0.2)")
    p.add_argument("--override-guard", action="store_true",
                   help="when the policy node's provenance guard refuses the retrained bundle "
                   "(worse in simulation by more than the canary margin), set swap_override "
                   "and swap it anyway so the canary judges it on the robot (default: keep "
                   "the shipped model and say so in the report; --quick always overrides)")
    p.add_argument("--no-render", action="store_true",
                   help="report without the MuJoCo filmstrip (no offscreen GL here)")
    p.add_argument("--no-screenshot", action="store_true",
                   help="do not screenshot the report with headless Chromium")
    p.add_argument("--twin-only", action="store_true",
                   help="only the adapt graph on the twin for --episodes, then a plot")
    p.add_argument("--episodes", type=int, default=6, help="--twin-only: episodes (default 6)")
    p.add_argument("--real-time-factor", type=float, default=1.0,
                   help="--twin-only: twin speed (default 1: real time)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="--twin-only: stop after this many wall seconds (default 600)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    made = not out.exists()
    try:
        return _run(args, out)
    except BaseException:
        # a demo refused up front (no ROS, a bad bundle) leaves no empty run directory
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _run(args: argparse.Namespace, out: Path) -> int:
    ros = importlib.util.find_spec("rclpy") is not None
    if not ros and not args.twin_only:
        raise PearlRobotError("the loop needs ROS 2 (rclpy): install the 'ros' extra "
                              "(`make setup`) or source a ROS 2 distro; `pearl-robot demo "
                              "--twin-only` runs without it")
    out.mkdir(parents=True, exist_ok=True)
    if args.twin_only:
        if not ros:
            print("rclpy is not importable: running the runtime and the twin in-process "
                  "(install the 'ros' extra, or source a ROS 2 distro, for the full graph)")
            returns = _run_without_ros(args)
        else:
            returns = _run_graph(args, out / "dataset")
        if not returns:
            raise PearlRobotError(f"no episode finished (see the log above); output in {out}")
        _report(returns, out)
        return 0
    return run_loop(args, out)


def run_loop(args: argparse.Namespace, out: Path) -> int:
    from pearl_robot.loop import mission, report

    preset = mission.quick if args.quick else mission.full
    extra = {"override_guard": True} if args.override_guard else {}
    cfg = preset(seed=args.seed, init_checkpoint=args.init, canary_margin=args.canary_margin,
                 **extra)
    bundle = Path(args.bundle) if args.bundle else _packaged_bundle()
    print(f"the sim-to-real loop ({'quick' if args.quick else 'full'}): robot bundle {bundle}, "
          f"output {out.resolve()}", flush=True)
    t0 = time.monotonic()
    result = mission.run_loop(cfg, out, bundle)
    files = report.build_report(out.resolve(), result, render=not args.no_render)
    shot = None if args.no_screenshot else report.screenshot(files.html, out / "report.png")
    cmp = files.summary["comparison"]
    print("\nheld-out tasks on the robot (mean return per task):")
    print(f"{'task':>6} {'before':>9} {'after':>9} {'delta':>8}")
    for task, v in cmp["per_task"].items():
        print(f"{task:>6} {v['before']:>9.2f} {v['after']:>9.2f} {v['delta']:>+8.2f}")
    print(files.summary["verdict"])
    t = files.summary["timing"]
    print(f"loop timing: tick interval mean {t['tick_interval_mean_ms']:.1f} ms (the rate), "
          f"p50 {t['tick_interval_p50_ms']:.1f} ms, p99 "
          f"{t['tick_interval_p99_ms']:.1f} ms; state->command p50 "
          f"{t['state_to_command_p50_ms']:.1f} ms; link round trip p50 "
          f"{t['link_rtt_p50_ms']:.1f} ms")
    print(f"report: {files.html}" + (f" (screenshot {shot})" if shot else ""))
    print(f"loop finished in {time.monotonic() - t0:.0f} s")
    return 0


def _run_graph(args: argparse.Namespace, dataset: Path) -> list[dict[str, Any]]:
    from pearl_robot.datalog.reader import manifest_entries
    from pearl_robot.ros import adapt_cli

    parser = argparse.ArgumentParser()
    adapt_cli.add_arguments(parser)
    cli = ["--robot", "twin", "--dataset-dir", str(dataset), "--episodes", str(args.episodes),
           "--real-time-factor", str(args.real_time_factor), "--duration", str(args.timeout),
           "--exit-when-done"]
    if args.bundle:
        cli += ["--bundle", str(args.bundle)]
    print(f"starting the adapt graph: pearl-robot adapt {' '.join(cli)}", flush=True)
    rc = adapt_cli.run(parser.parse_args(cli), summary=False)  # the demo prints its own
    if rc:
        raise PearlRobotError(f"the adapt graph exited with status {rc}")
    entries = [e for e in manifest_entries(dataset) if e.get("status") != "quarantined"]
    print(f"episode log: {dataset} ({len(entries)} episodes in manifest.jsonl)")
    return [{"episode": int(e["episode"]), "task": _task_label(e.get("task")),
             "task_index": _task_index(e.get("task")), "family": _task_family(e.get("task")),
             "return": float(e["return"]), "steps": int(e.get("transitions", 0))}
            for e in entries]


def _task_index(task: Any) -> int | None:
    """The task's index in its family (/pearl/task names it ``task``; datasets ``index``)."""
    if isinstance(task, dict):
        for key in ("index", "task"):
            if isinstance(task.get(key), int) and task[key] >= 0:
                return int(task[key])
    return None


def _task_family(task: Any) -> str | None:
    return str(task["family"]) if isinstance(task, dict) and task.get("family") else None


def _task_label(task: Any) -> str:
    if isinstance(task, dict):
        for key in ("index", "task"):
            if isinstance(task.get(key), int) and task[key] >= 0:
                return f"task {task[key]}"
        return json.dumps(task.get("params", task), sort_keys=True)[:40]
    return str(task)


def _packaged_bundle() -> Path:
    roots = [Path(__file__).resolve().parent.parent / "models"]
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory("pearl_robot")) / "models")
    except Exception:  # noqa: BLE001 - no ament index: source checkout only
        pass
    for root in roots:
        found = sorted(p.parent for p in root.glob("*/contract.json"))
        if found:
            return found[0]
    raise PearlRobotError("no model bundle found under models/; pass --bundle DIR")


def _run_without_ros(args: argparse.Namespace, episodes_per_task: int = 3
                     ) -> list[dict[str, Any]]:
    """The policy runtime driving the twin env directly through the episode controller the
    policy node uses: the held-out tasks, ``episodes_per_task`` each, one tick per control
    period on each fresh observation, context reward fed back every tick."""
    import tempfile

    from pearl_robot.runtime.episodes import EpisodeConfig, EpisodeController, run_env
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
    from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig
    from pearl_robot.tasks.registry import make_family

    bundle = Path(args.bundle) if args.bundle else _packaged_bundle()
    rt = PolicyRuntime(bundle, RuntimeConfig(), rng=np.random.default_rng(0))
    family = make_family(rt.bundle.contract.task_family["name"])
    env = family.make_env(seed=0)
    steps = int(env.max_episode_steps)
    sched = ScheduleConfig(task_indices=tuple(family.eval_indices),
                           episodes_per_task=episodes_per_task, episode_steps=steps,
                           max_episodes=args.episodes)
    try:
        with tempfile.TemporaryDirectory(prefix="pearl-demo-session-") as state:
            ctl = EpisodeController(rt, OvernightSession(sched, family.tasks, state),
                                    EpisodeConfig(control_period=float(env.control_period),
                                                  family_name=family.name))
            res = run_env(ctl, env, max_ticks=args.episodes * (steps + 8) + 16,
                          context_reward_key=family.context_reward_key)
    finally:
        rt.close()
    return [{"episode": e.episode, "task": f"task {e.task}", "task_index": int(e.task),
             "family": family.name, "return": e.ret, "steps": e.steps} for e in res.ends]


def _report(returns: list[dict[str, Any]], out: Path) -> None:
    print(f"\n{'episode':>7} {'task':>10} {'steps':>6} {'return':>10}   (first episode of a task "
          "explores with z from the prior)")
    seen: dict[str, int] = {}
    for r in returns:
        k = seen.setdefault(r["task"], 0)
        seen[r["task"]] = k + 1
        tag = "explore" if k == 0 else f"adapt {k}"
        print(f"{r['episode']:>7} {r['task']:>10} {r['steps']:>6} {r['return']:>10.2f}   {tag}")
    plot_adaptation(returns, out / "adaptation.png")
    print(f"\nplot: {out / 'adaptation.png'}")


def _references(returns: list[dict[str, Any]]) -> tuple[dict[str, tuple[float, float]], str]:
    """Per task label, the (zero-effort, oracle) returns of that task in the twin from its
    reset poses, and the line saying what a return is; empty where the family has none."""
    from pearl_robot.loop.report import reference_returns, return_meaning

    fams = {r.get("family") for r in returns} - {None}
    if len(fams) != 1:
        return {}, return_meaning("")
    from pearl_robot.tasks.registry import make_family

    name = fams.pop()
    family = make_family(name)
    steps = max(int(r["steps"]) for r in returns)
    refs: dict[str, tuple[float, float]] = {}
    for r in returns:
        if r.get("task_index") is not None and r["task"] not in refs:
            ref = reference_returns(family, int(r["task_index"]), steps)
            if ref is not None:
                refs[r["task"]] = ref
    return refs, return_meaning(name, steps)


def plot_adaptation(returns: list[dict[str, Any]], png: Path) -> Path:
    """Return per episode on each task, with that task's zero-effort and oracle returns as
    reference lines in its colour, and a line saying what "return" measures."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs, meaning = _references(returns)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    by_task: dict[str, list[float]] = {}
    for r in returns:
        by_task.setdefault(r["task"], []).append(r["return"])
    for i, (task, rets) in enumerate(by_task.items()):
        colour = plt.cm.tab10(i % 10)
        ax.plot(np.arange(1, len(rets) + 1), rets, "o-", color=colour, label=task)
        if task in refs:
            zero, oracle = refs[task]
            ax.axhline(zero, color=colour, ls=":", lw=1)
            ax.axhline(oracle, color=colour, ls="--", lw=1)
    if refs:  # one legend entry per line style, not per task
        ax.plot([], [], ":", color="0.4", lw=1, label="zero effort (same task)")
        ax.plot([], [], "--", color="0.4", lw=1, label="oracle, told the task")
    ax.set_xticks(np.arange(1, max(len(r) for r in by_task.values()) + 1))
    ax.set_xlabel("episode on the task (1 = exploration with the prior)")
    ax.set_ylabel("return")
    ax.set_title("PEARL on the twin: adaptation per task")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(meaning, 120)), fontsize=7, color="0.3",
             va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
