"""Retraining from logs: does a model retrained on a night of robot-like logs adapt better?

The experiment behind issue 5's "retraining works" (ROS-free, everything real except the robot,
which is the MuJoCo twin):

1. **Initial model.** Meta-train PEARL on twin-arm (``config/train/twin_arm.yaml``) restricted
   to the first ``--init-tasks`` training tasks, for a short budget; save and export it to a
   bundle (the real exporter, parity-checked).
2. **A night on new tasks.** ``--new-tasks`` other training tasks of the family, never trained
   on, are run by :class:`~pearl_robot.runtime.policy.PolicyRuntime` on the bundle through the
   policy node's own :class:`~pearl_robot.runtime.episodes.EpisodeController` (``run_env``):
   an :class:`~pearl_robot.runtime.schedule.OvernightSession` schedule (``episodes_per_task``
   consecutive episodes per task, the belief carried across them and reset on a task change),
   one tick per control period, the twin's reward, and every transition packed by the
   controller (command actually sent, belief at the time of acting, ``truncated`` on the
   schedule's last step) and written by the real
   :class:`~pearl_robot.datalog.writer.DatasetWriter`.
3. **Retrain** with ``pearl-robot train --data NIGHT --init INITIAL.pt --export-bundle DIR``
   (the CLI itself, logs only: no simulation), for ``--retrain-iterations``.
4. **Control**: the initial trainer continued in simulation on its own tasks for the same number
   of gradient steps, exported too. It separates "the logs helped" from "more gradient steps
   helped".
5. **Measure** every bundle with the same protocol and the same seeds: the runtime drives the
   twin for ``--episodes`` consecutive episodes per task (belief carried across them), in the
   node's two z modes (``episode``: prior z in the first episode, then posterior samples;
   ``step``: belief mean every tick), on the new tasks, the initial tasks (forgetting) and
   held-out tasks nobody trained or logged on (generalization). Returns per episode index,
   oracle-normalized scores (0 = zero effort, 1 = PD controller told goal and physics).

Run: ``python -m bench.run_all --only bench_retrain`` (about 12 min on a loaded 2-core machine;
``--quick`` about 1 min, too short to train anything: a smoke run). Writes
``bench/results/retrain.json`` (``"quick": true`` in it after ``--quick``) and the plots
``docs/img/retrain_adaptation.png`` and ``docs/img/retrain_per_task.png`` (``--quick`` puts
``*_quick.png`` in ``--work`` or the temp directory instead, so a smoke run never replaces
the documented plots).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "retrain.json"
IMG = ROOT / "docs" / "img"
CONFIG = ROOT / "config" / "train" / "twin_arm.yaml"


class Budget(NamedTuple):
    """Sizes of one run (full or quick)."""

    init_tasks: int
    new_tasks: int
    heldout_tasks: int
    init_iterations: int
    retrain_iterations: int
    steps_per_iteration: int
    collect_episodes_per_task: int
    collect_rounds: int
    eval_episodes: int
    eval_repeats: int


FULL = Budget(init_tasks=8, new_tasks=16, heldout_tasks=8, init_iterations=30,
              retrain_iterations=20, steps_per_iteration=300, collect_episodes_per_task=4,
              collect_rounds=8, eval_episodes=4, eval_repeats=3)
QUICK = Budget(init_tasks=4, new_tasks=4, heldout_tasks=2, init_iterations=3,
               retrain_iterations=2, steps_per_iteration=100, collect_episodes_per_task=3,
               collect_rounds=1, eval_episodes=3, eval_repeats=1)
Z_MODES = {"episode": "episode", "step": "step_mean"}
"""Policy-node z_mode -> runtime z schedule (as ``node_config.Z_SCHEDULES``)."""


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


# ---------------------------------------------------------------------- the robot night


def collect_night(bundle: Path, family: Any, task_indices: list[int], dataset: Path, *,
                  episodes_per_task: int, rounds: int, stochastic: bool, seed: int
                  ) -> dict[str, Any]:
    """Drive the runtime on the twin through the policy node's own episode controller
    (``runtime.episodes.run_env``: schedule, reset handshake, act-first tick, transition
    packing) and log every transition with the real DatasetWriter."""
    from pearl_robot.datalog.schema import TransitionLayout
    from pearl_robot.datalog.writer import DatasetWriter, WriterConfig
    from pearl_robot.runtime.episodes import EpisodeConfig, EpisodeController, run_env
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
    from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig

    # what the node's default z_mode "episode" builds, with deterministic:=false when
    # `stochastic` (exploration noise for the data, as SAC's own collection has)
    runtime = PolicyRuntime(bundle, RuntimeConfig(z_schedule="episode", exploration_episodes=1,
                                                  stochastic_actions=stochastic),
                            rng=np.random.default_rng(seed))
    c = runtime.bundle.contract
    layout = TransitionLayout(c.obs_dim, c.action_dim, c.latent_dim)
    env = family.make_env(seed=seed)
    dt = float(env.control_period)
    episodes = len(task_indices) * episodes_per_task * rounds
    sched = ScheduleConfig(task_indices=tuple(task_indices), episodes_per_task=episodes_per_task,
                           episode_steps=family.horizon, max_episodes=episodes,
                           reset_timeout_s=5.0, seed=seed)
    try:
        with DatasetWriter(dataset, layout, WriterConfig(robot="twin-bench")) as writer:
            controller = EpisodeController(
                runtime, OvernightSession(sched, family.tasks, dataset),
                EpisodeConfig(control_period=dt, family_name=family.name))
            res = run_env(controller, env, writer=writer,
                          max_ticks=episodes * (family.horizon + 8) + 16,
                          reset_seed=lambda cursor: _seed(seed, 1, cursor))
            if not writer.flush(60.0):
                raise RuntimeError(f"dataset writer did not flush: {writer.status()}")
            status = writer.status()
    finally:
        runtime.close()
    returns = [{"episode": e.episode, "task": e.task, "return": e.ret} for e in res.ends]
    return {"episodes": len(returns), "transitions": res.transitions,
            "robot_time_s": res.transitions * dt,
            "mean_return": float(np.mean([e["return"] for e in returns])),
            "writer_level": str(status.level.name), "episode_returns": returns}


# ---------------------------------------------------------------------- measurement


class Measured(NamedTuple):
    returns: np.ndarray
    """[tasks, repeats, episodes]"""
    normalized: np.ndarray
    """Oracle-normalized returns, same shape."""


def measure(bundle: Path, family: Any, task_indices: list[int], *, z_mode: str, episodes: int,
            repeats: int, seed: int, baselines: dict[tuple[int, int, int], tuple[float, float]]
            ) -> Measured:
    """The runtime drives the twin for ``episodes`` consecutive episodes per task and repeat
    (belief carried across them, reset for the next task), deterministic actions; the starts,
    the z noise and the sensor noise depend only on the seeds, never on the bundle."""
    from pearl_robot.runtime.policy import PolicyRuntime, RuntimeConfig
    from pearl_robot.runtime.task_reward import reward_function

    runtime = PolicyRuntime(bundle, RuntimeConfig(z_schedule=Z_MODES[z_mode],  # type: ignore
                                                  exploration_episodes=0 if z_mode == "step"
                                                  else 1),
                            rng=np.random.default_rng(seed))
    env = family.make_env(seed=seed)
    rets = np.zeros((len(task_indices), repeats, episodes))
    norm = np.zeros_like(rets)
    for i, t in enumerate(task_indices):
        task = family.tasks[t]
        reward_fn = reward_function(family, task)
        env.set_task(task)
        for rep in range(repeats):
            runtime.rng = np.random.default_rng(_seed(seed, t, rep))  # same z noise per bundle
            for ep in range(episodes):
                runtime.begin_episode(task=(t, rep))  # a new key resets the belief
                obs, _ = env.reset(seed=_seed(seed, t, rep, ep))
                start = obs.copy()
                prev, total = None, 0.0
                for _ in range(family.horizon):
                    out = runtime.tick(obs, prev, obs_age=0.0)
                    step = env.step(out.command)
                    r = reward_fn(obs, out.command, step.obs)
                    total += r.reward
                    prev, obs = r.context, step.obs
                runtime.end_episode(obs, prev)
                rets[i, rep, ep] = total
                key = (t, rep, ep)
                if key not in baselines:
                    baselines[key] = family.baseline_returns(task, start)
                still, oracle = baselines[key]
                norm[i, rep, ep] = (total - still) / max(oracle - still, 1e-9)
    runtime.close()
    return Measured(rets, norm)


def _curve(m: Measured) -> dict[str, Any]:
    """Mean per episode index over tasks and repeats, with the standard error over tasks."""
    per_task = m.returns.mean(axis=1)  # [tasks, episodes]
    per_task_n = m.normalized.mean(axis=1)
    n = per_task.shape[0]
    return {"return_mean": per_task.mean(axis=0).tolist(),
            "return_sem": (per_task.std(axis=0, ddof=1) / math.sqrt(n)).tolist() if n > 1
            else [0.0] * per_task.shape[1],
            "normalized_mean": per_task_n.mean(axis=0).tolist(),
            "normalized_sem": (per_task_n.std(axis=0, ddof=1) / math.sqrt(n)).tolist()
            if n > 1 else [0.0] * per_task.shape[1],
            "per_task_return": per_task.tolist(), "per_task_normalized": per_task_n.tolist()}


def _paired(a: Measured, b: Measured) -> dict[str, float]:
    """b - a on the last episode, paired per task (same seeds): mean, sem, tasks improved."""
    da = a.returns.mean(axis=1)[:, -1]
    db = b.returns.mean(axis=1)[:, -1]
    d = db - da
    n = d.size
    return {"last_episode_return_gain": float(d.mean()),
            "last_episode_return_gain_sem": float(d.std(ddof=1) / math.sqrt(n)) if n > 1
            else 0.0,
            "tasks_improved": int((d > 0).sum()), "tasks": int(n),
            "all_episodes_return_gain": float((b.returns - a.returns).mean())}


# ---------------------------------------------------------------------- plots


def plot(results: dict[str, Any], out_curve: Path, out_tasks: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in ("initial", "control", "retrained") if m in results["models"]]
    colors = {"initial": "tab:gray", "control": "tab:blue", "retrained": "tab:red"}
    labels = {"initial": "initial (trained on the initial tasks)",
              "control": "initial + same steps in sim on its tasks (control)",
              "retrained": "initial + retrained on the night's logs"}
    sets = list(results["eval_sets"])
    fig, axes = plt.subplots(2, len(sets), figsize=(4.6 * len(sets), 7.4), squeeze=False,
                             sharex=True)
    for col, s in enumerate(sets):
        for row, mode in enumerate(Z_MODES):
            ax = axes[row, col]
            for m in models:
                cur = results["measure"][s][mode][m]
                x = np.arange(len(cur["normalized_mean"]))
                y, e = np.array(cur["normalized_mean"]), np.array(cur["normalized_sem"])
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=colors[m],
                            label=labels[m])
            ax.axhline(0.0, color="k", lw=0.6, ls=":")
            ax.set_title(f"{s} tasks ({len(results['eval_sets'][s])}), z_mode={mode}",
                         fontsize=9)
            ax.set_xticks(x)
            if row == 1:
                ax.set_xlabel("episode on the task (belief carried over)")
            if col == 0:
                ax.set_ylabel("oracle-normalized return\n(0 still, 1 PD oracle)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle("twin-arm: adaptation before and after retraining from logged episodes "
                 "(mean +- s.e. over tasks)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_curve, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(Z_MODES), figsize=(10, 4.4), squeeze=False)
    for col, mode in enumerate(Z_MODES):
        ax = axes[0, col]
        a = np.array(results["measure"]["new"][mode]["initial"]["per_task_return"])[:, -1]
        for m, mk in (("retrained", "o"), ("control", "x")):
            if m not in models:
                continue
            b = np.array(results["measure"]["new"][mode][m]["per_task_return"])[:, -1]
            ax.scatter(a, b, marker=mk, color=colors[m], label=m)
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.6, ls=":")
        ax.set_xlabel("initial model: return of the last episode")
        ax.set_ylabel("after: return of the last episode")
        ax.set_title(f"new (logged) tasks, z_mode={mode}: above the line = better", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_tasks, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- the run


def _export(ckpt: Path, out: Path, recorded: list[Path] | None = None) -> str:
    from pearl_robot.core.checkpoint import load_checkpoint, networks_from_checkpoint
    from pearl_robot.export.exporter import (
        ExportConfig,
        export_checkpoint,
        recorded_from_datasets,
    )

    ck = load_checkpoint(ckpt)
    rec = recorded_from_datasets(recorded, networks_from_checkpoint(ck)) if recorded else None
    res = export_checkpoint(ck, out, ExportConfig(overwrite=True), recorded=rec)
    return res.bundle_sha256


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny budget: a smoke run, not a result")
    p.add_argument("--seed", type=int, default=0, help="training, collection and eval seed")
    p.add_argument("--work", type=Path, help="keep runs, bundles and the dataset here "
                   "(default: a temporary directory, removed at the end)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the continued-in-sim control model (saves a third of the time)")
    p.add_argument("--deterministic-collection", action="store_true",
                   help="collect with the actor's mean action (node default deterministic:=true)"
                   " instead of sampled actions")
    p.add_argument("--collect-rounds", type=int, metavar="N",
                   help="rounds of the night's schedule (every new task "
                   "collect_episodes_per_task episodes per round; default 8, quick 1): "
                   "how much logged data the retraining gets")
    p.add_argument("--out", type=Path,
                   help=f"results JSON (default {RESULTS.relative_to(ROOT)})")
    args = p.parse_args(argv)

    import torch

    from pearl_robot.cli import main as cli_main
    from pearl_robot.core.config import load_experiment, merge
    from pearl_robot.tasks.registry import make_family
    from pearl_robot.train.trainer import MetaTrainer

    b = QUICK if args.quick else FULL
    if args.collect_rounds is not None:
        if args.collect_rounds < 1:
            p.error("--collect-rounds must be >= 1")
        b = b._replace(collect_rounds=args.collect_rounds)
    suffix = "_quick" if args.quick else ""
    out_json = args.out or RESULTS
    work = args.work or Path(tempfile.mkdtemp(prefix="pearl-retrain-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    family = make_family("twin-arm")
    init_idx = family.train_indices[: b.init_tasks]
    new_idx = family.train_indices[b.init_tasks: b.init_tasks + b.new_tasks]
    heldout_idx = family.eval_indices[: b.heldout_tasks]
    eval_sets = {"new": new_idx, "initial": init_idx, "held-out": heldout_idx}
    train_over = {"num_iterations": b.init_iterations,
                  "num_train_steps_per_itr": b.steps_per_iteration, "seed": args.seed,
                  "eval_every": b.init_iterations, "checkpoint_every": b.init_iterations,
                  "torch_threads": 1}
    if args.quick:
        train_over.update(num_tasks_sample=2, num_steps_prior=60,
                          num_extra_rl_steps_posterior=60, num_eval_train_tasks=1)
    cfg = merge(load_experiment(CONFIG), {"train": train_over})
    try:
        # 1. initial model on a subset of the training tasks
        t0 = time.perf_counter()
        _say(f"initial model: tasks {init_idx}, {b.init_iterations} x "
             f"{b.steps_per_iteration} gradient steps")
        trainer = MetaTrainer(cfg, family, work / "initial", train_tasks=family.train_tasks[
            : b.init_tasks], tensorboard=False, progress=False)
        init_row = trainer.run()
        init_ckpt = trainer.save(work / "initial.pt")
        timings["initial_train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        bundles = {"initial": work / "bundle_initial"}
        shas = {"initial": _export(init_ckpt, bundles["initial"])}
        timings["export_s"] = time.perf_counter() - t0
        _say(f"initial: {timings['initial_train_s']:.0f} s, held-out return "
             f"{init_row.get('eval/test_final_return', math.nan):.1f}; bundle "
             f"{shas['initial'][:12]}")

        # 2. a night on the new tasks, logged like a robot's
        t0 = time.perf_counter()
        night = work / "night1"
        collected = collect_night(bundles["initial"], family, new_idx, night,
                                  episodes_per_task=b.collect_episodes_per_task,
                                  rounds=b.collect_rounds,
                                  stochastic=not args.deterministic_collection,
                                  seed=_seed(args.seed, 7))
        timings["collect_s"] = time.perf_counter() - t0
        _say(f"night: {collected['episodes']} episodes, {collected['transitions']} transitions"
             f" ({collected['robot_time_s'] / 60:.1f} min robot time) in "
             f"{timings['collect_s']:.0f} s; mean return {collected['mean_return']:.1f}")

        # 3. retrain from the logs with the CLI a user runs in the morning
        t0 = time.perf_counter()
        grad = b.retrain_iterations * b.steps_per_iteration
        rc = cli_main(["train", "--config", str(CONFIG), "--data", str(night), "--init",
                       str(init_ckpt), "--out", str(work / "retrained"),
                       "--iterations", str(b.retrain_iterations),
                       "--set", f"train.num_train_steps_per_itr={b.steps_per_iteration}",
                       "--set", f"train.eval_every={b.retrain_iterations}",
                       "--set", f"train.checkpoint_every={b.retrain_iterations}",
                       "--set", f"train.seed={args.seed}",
                       "--export-bundle", str(work / "bundle_retrained"),
                       "--no-progress", "--no-tensorboard"])
        if rc != 0:
            raise RuntimeError(f"pearl-robot train --data returned {rc}")
        timings["retrain_s"] = time.perf_counter() - t0
        bundles["retrained"] = work / "bundle_retrained"
        retrain_rows = _progress_rows(work / "retrained" / "progress.csv")
        _say(f"retrained: {grad} gradient steps in {timings['retrain_s']:.0f} s")

        # 4. control: same extra gradient steps, in sim on the initial tasks (no logs)
        if not args.no_control:
            t0 = time.perf_counter()
            trainer.cfg = merge(trainer.cfg, {"train": {
                "num_iterations": b.init_iterations + b.retrain_iterations,
                "checkpoint_every": b.init_iterations + b.retrain_iterations}})
            trainer.metrics = type(trainer.metrics)(work / "control", tensorboard=False)
            trainer.out_dir = work / "control"
            trainer.run()
            control_ckpt = trainer.save(work / "control.pt")
            bundles["control"] = work / "bundle_control"
            shas["control"] = _export(control_ckpt, bundles["control"])
            timings["control_s"] = time.perf_counter() - t0
            _say(f"control: {timings['control_s']:.0f} s")

        # 5. measure every bundle on every task set, same seeds
        t0 = time.perf_counter()
        baselines: dict[tuple[int, int, int], tuple[float, float]] = {}
        measured: dict[str, dict[str, dict[str, Measured]]] = {}
        for s, idx in eval_sets.items():
            measured[s] = {}
            for mode in Z_MODES:
                measured[s][mode] = {
                    m: measure(path, family, idx, z_mode=mode, episodes=b.eval_episodes,
                               repeats=b.eval_repeats, seed=_seed(args.seed, 11),
                               baselines=baselines)
                    for m, path in bundles.items()}
        timings["measure_s"] = time.perf_counter() - t0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    timings["total_s"] = time.perf_counter() - t_start

    results: dict[str, Any] = {
        "bench": "retrain", "quick": args.quick, "seed": args.seed,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": 1},
        "budget": b._asdict(), "config": str(CONFIG.relative_to(ROOT)),
        "collection": {"stochastic_actions": not args.deterministic_collection,
                       "z_mode": "episode", **{k: v for k, v in collected.items()
                                               if k != "episode_returns"},
                       "returns_by_round": _by_round(collected["episode_returns"],
                                                     b.new_tasks * b.collect_episodes_per_task)},
        "eval_sets": eval_sets, "models": {m: {"bundle_sha256": shas.get(m, "")}
                                           for m in bundles},
        "training": {"initial": _eval_part(init_row), "retrained": _eval_part(
            retrain_rows[-1] if retrain_rows else {})},
        "timings_s": timings,
        "measure": {s: {mode: {m: _curve(v) for m, v in d.items()} for mode, d in dd.items()}
                    for s, dd in measured.items()},
        "paired": {s: {mode: {m: _paired(d["initial"], d[m]) for m in d if m != "initial"}
                       for mode, d in dd.items()} for s, dd in measured.items()},
    }
    if "control" in bundles:
        results["paired_retrained_vs_control"] = {
            s: {mode: _paired(d["control"], d["retrained"]) for mode, d in dd.items()}
            for s, dd in measured.items()}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1))
    img = IMG if not args.quick else (args.work or Path(tempfile.gettempdir()))
    img.mkdir(parents=True, exist_ok=True)
    curve_png = img / f"retrain_adaptation{suffix}.png"
    tasks_png = img / f"retrain_per_task{suffix}.png"
    plot(results, curve_png, tasks_png)
    _report(results)
    print(f"wrote {out_json}, {curve_png}, {tasks_png} in {timings['total_s']:.0f} s")
    return 0


def _progress_rows(path: Path) -> list[dict[str, float]]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(fh)]


def _eval_part(row: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k.startswith("eval/") or k in ("charts/grad_steps", "charts/env_steps")}


def _by_round(eps: list[dict[str, Any]], per_round: int) -> list[float]:
    rets = [e["return"] for e in eps]
    return [float(np.mean(rets[i:i + per_round])) for i in range(0, len(rets), per_round)]


def _report(r: dict[str, Any]) -> None:
    print("\nmean oracle-normalized return per episode index (0 = still, 1 = PD oracle)")
    for s in r["eval_sets"]:
        for mode in Z_MODES:
            for m, cur in r["measure"][s][mode].items():
                vals = " ".join(f"{v:6.3f}" for v in cur["normalized_mean"])
                rets = " ".join(f"{v:7.1f}" for v in cur["return_mean"])
                print(f"  {s:<9} {mode:<8} {m:<10} norm [{vals}]  return [{rets}]")
    print("\nlast-episode return gain over the initial model (paired per task)")
    for s, d in r["paired"].items():
        for mode, dd in d.items():
            for m, g in dd.items():
                print(f"  {s:<9} {mode:<8} {m:<10} {g['last_episode_return_gain']:+7.2f} "
                      f"+- {g['last_episode_return_gain_sem']:.2f}  "
                      f"({g['tasks_improved']}/{g['tasks']} tasks better)")


if __name__ == "__main__":
    sys.exit(main())
