"""The main job on the embedded default: the MuJoCo twin standing in for the robot, driven by
the bundled model through the real adapt graph (policy node at 20 Hz with online posterior
updates, logger node writing the MCAP episode log, twin node), then a report.

What it does:
  1. starts `pearl-robot adapt --robot twin` (the same graph as `ros2 launch pearl_robot
     adapt.launch.py`) for --episodes episodes on held-out tasks, several episodes per task, so
     the belief over the task has trajectories to adapt from;
  2. reads the episode log it wrote (manifest.jsonl + MCAP files) and prints return per
     episode, grouped by task (first episode of a task: exploration with z from the prior);
  3. writes a plot of the returns (adaptation.png) next to the dataset.

Without rclpy (no ROS 2 install and no `ros` extra) it falls back to the same runtime and twin
driven in-process, without the ROS graph and without the episode log.

Examples:
  pearl-robot demo                         # 6 episodes in real time (about a minute)
  pearl-robot demo --real-time-factor 4    # faster than real time (sim time)
  pearl-robot demo --bundle models/arm3 --episodes 9 --out runs/demo
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
    p.add_argument("--bundle", default="", help="model bundle (default: the packaged one)")
    p.add_argument("--episodes", type=int, default=6, help="episodes to run (default 6)")
    p.add_argument("--real-time-factor", type=float, default=1.0,
                   help="twin speed; above 1 the graph runs on sim time (default 1: real time)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default runs/demo-<time>)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="stop after this many wall seconds whatever happens (default 600)")


def run(args: argparse.Namespace) -> int:
    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "dataset"
    if importlib.util.find_spec("rclpy") is None:
        print("rclpy is not importable: running the runtime and the twin in-process "
              "(install the 'ros' extra, or source a ROS 2 distro, for the full graph)")
        returns = _run_without_ros(args)
    else:
        returns = _run_graph(args, dataset)
    if not returns:
        raise PearlRobotError(f"no episode finished (see the log above); output in {out}")
    _report(returns, out)
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
    rc = adapt_cli.run(parser.parse_args(cli))
    if rc:
        raise PearlRobotError(f"the adapt graph exited with status {rc}")
    entries = [e for e in manifest_entries(dataset) if e.get("status") != "quarantined"]
    print(f"episode log: {dataset} ({len(entries)} episodes in manifest.jsonl)")
    return [{"episode": int(e["episode"]), "task": _task_label(e.get("task")),
             "return": float(e["return"]), "steps": int(e.get("transitions", 0))}
            for e in entries]


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
    """The policy runtime driving the twin env directly, as the policy node would: one tick
    per control period on each fresh observation, context reward fed back every tick."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
    from pearl_robot.tasks.registry import make_family

    bundle = Path(args.bundle) if args.bundle else _packaged_bundle()
    rt = PolicyRuntime(bundle, RuntimeConfig(), rng=np.random.default_rng(0))
    family = make_family(rt.bundle.contract.task_family["name"])
    env = family.make_env(seed=0)
    key = family.context_reward_key
    out = []
    for ep in range(args.episodes):
        task = family.eval_tasks[(ep // episodes_per_task) % len(family.eval_tasks)]
        env.set_task(task)
        obs, _ = env.reset(seed=ep)
        rt.begin_episode(task=task.index)
        reward, total, steps = None, 0.0, 0
        for _ in range(env.max_episode_steps):
            cmd = rt.tick(obs, reward, obs_age=0.0).command
            st = env.step(cmd)
            obs, total, steps = st.obs, total + st.reward, steps + 1
            reward = st.info[key] if key else st.reward
            if st.terminated or st.truncated:
                break
        rt.end_episode(obs, reward)
        out.append({"episode": ep, "task": f"task {task.index}", "return": total,
                    "steps": steps})
    return out


def _report(returns: list[dict[str, Any]], out: Path) -> None:
    print(f"\n{'episode':>7} {'task':>10} {'steps':>6} {'return':>10}   (first episode of a task "
          "explores with z from the prior)")
    seen: dict[str, int] = {}
    for r in returns:
        k = seen.setdefault(r["task"], 0)
        seen[r["task"]] = k + 1
        tag = "explore" if k == 0 else f"adapt {k}"
        print(f"{r['episode']:>7} {r['task']:>10} {r['steps']:>6} {r['return']:>10.2f}   {tag}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    by_task: dict[str, list[float]] = {}
    for r in returns:
        by_task.setdefault(r["task"], []).append(r["return"])
    for task, rets in by_task.items():
        ax.plot(np.arange(1, len(rets) + 1), rets, "o-", label=task)
    ax.set_xticks(np.arange(1, max(len(r) for r in by_task.values()) + 1))
    ax.set_xlabel("episode on the task (1 = exploration with the prior)")
    ax.set_ylabel("return")
    ax.set_title("PEARL on the twin: adaptation per task")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "adaptation.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"\nplot: {png}")
