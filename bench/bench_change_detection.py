"""Tasks that change under the robot: detection delay, false alarms, return after a switch.

The arm3 twin runs as a never-ending stream (no episode resets): each *stream* starts on a
held-out twin-arm task and its goal, payload, friction or damping switch at random times
(``pearl_robot.tasks.switching_spec.ARM3_SWITCHING_SPEC``, first switch after ``--first-s``). The
trained bundle drives it through ``PolicyRuntime`` with z = the belief mean every tick (the
runtime's online mode), three ways on identical streams (same task, same switch schedule, same
sensor-noise seed):

- ``detect``: change detection on (rebuild from the transitions after the change point);
- ``oracle``: detection off, the belief reset exactly at each true switch (told the truth);
- ``window``: detection off, never reset: today's windowed belief (the bundle's window).

Reported: detection delay in ticks (first alarm after a switch within ``--window-s``; median,
p90, misses), alarms that are not such a first detection (false alarms, and re-alarms within
the window after a detection), the return over the first ``--after-s`` seconds after each
switch and over the rest of the segment for the three variants, per switch kind and overall.
A separate *stationary* run (no switches, one held-out task per 5 min, announced task changes
reset the belief as the episode schedule does) gives false alarms per hour of running.

    nice -n 10 python -m bench.bench_change_detection            # ~4 min on a loaded 2-core VM
    nice -n 10 python -m bench.bench_change_detection --quick    # ~1 min

Writes bench/results/change_detection.json and docs/img/change_detection.png (one stream: the
belief, the detector's CUSUM against its threshold, true switches and alarms, rewards of the
three variants).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "change_detection.json"
PLOT = ROOT / "docs" / "img" / "change_detection.png"
VARIANTS = ("detect", "oracle", "window")


def _make_env(stream_steps: int, spec: Any, seed: int) -> Any:
    from pearl_robot.tasks.switching import SwitchingEnv
    from pearl_robot.twin.twin_arm_env import TwinArmEnv

    return SwitchingEnv(TwinArmEnv(seed=seed, horizon=stream_steps), spec, seed=seed)


def run_stream(rt: Any, variant: str, task: Any, spec: Any, steps: int, seed: int,
               label: str, trace: bool = False) -> dict[str, Any]:
    """One continuous stream; returns rewards per tick, switch steps/kinds, alarm ticks."""
    env = _make_env(steps, spec, seed)
    env.set_task(task)
    obs, _ = env.reset(seed=seed)
    rt.begin_episode(task=label)  # an announced task: the belief starts from the prior
    switch_at = {s.step + 1: s.kind for s in env.switches}  # tick adding the first new row
    rewards = np.zeros(steps)
    alarms: list[int] = []
    mon = rt.change_monitor
    seen = mon.status().changes if mon is not None else 0
    tr: dict[str, list[Any]] = {"mean": [], "cusum": [], "count": []}
    reward = None
    for t in range(steps):
        if variant == "oracle" and t in switch_at:
            rt.reset_belief()
        out = rt.tick(obs, reward)
        out = rt.finish_tick() or out  # the complete result (belief after this transition)
        if mon is not None:
            st = mon.status()
            if st.changes > seen:
                seen = st.changes
                alarms.append(t)
            if trace:
                tr["cusum"].append(st.cusum)
        if trace:
            tr["mean"].append(out.belief_mean.copy())
            tr["count"].append(out.context_size)
        res = env.step(out.command)
        obs, reward = res.obs, res.reward
        rewards[t] = res.reward
    rt.end_episode(obs, reward)
    env.close()
    out_d: dict[str, Any] = {"rewards": rewards, "switches": sorted(switch_at.items()),
                             "alarms": alarms}
    if trace:
        out_d["trace"] = {k: np.asarray(v) for k, v in tr.items()}
    return out_d


def score_detection(switches: list[tuple[int, str]], alarms: list[int], steps: int,
                    window: int) -> dict[str, Any]:
    """First alarm in [switch, min(switch + window, next switch)) is a detection; other alarms
    in a detection window are re-alarms; the rest are false alarms."""
    delays: list[int | None] = []
    used: set[int] = set()
    windows = []
    for i, (s, _) in enumerate(switches):
        end = min(s + window, switches[i + 1][0] if i + 1 < len(switches) else steps)
        windows.append((s, end))
        hit = next((a for a in alarms if s <= a < end), None)
        delays.append(None if hit is None else hit - s)
        if hit is not None:
            used.add(hit)
    re_alarms = sum(1 for a in alarms if a not in used and any(s <= a < e for s, e in windows))
    false = sum(1 for a in alarms if a not in used and not any(s <= a < e for s, e in windows))
    return {"delays": delays, "re_alarms": re_alarms, "false_alarms": false}


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)),
            "sem": float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path,
                   default=ROOT / "tests" / "data" / "bundles" / "arm3-2026-12-pearl",
                   help="trained twin-arm PEARL (pog) bundle: the detector scores per-transition "
                   "factors (default: the PEARL arm3 shipped 2026-12-03 to 12-04)")
    p.add_argument("--streams", type=int, default=12, help="switching streams (default 12)")
    p.add_argument("--stream-s", type=float, default=120.0, help="seconds per stream")
    p.add_argument("--first-s", type=float, default=15.0,
                   help="no switch before this many seconds into a stream")
    p.add_argument("--stationary-min", type=float, default=60.0,
                   help="minutes of stationary running for the false-alarm rate")
    p.add_argument("--after-s", type=float, default=3.0,
                   help="return window right after a switch (seconds)")
    p.add_argument("--window-s", type=float, default=5.0,
                   help="an alarm this soon after a switch counts as its detection")
    p.add_argument("--false-alarms-per-hour", type=float, default=0.5,
                   help="detector configuration (ChangeDetectionConfig.false_alarms_per_hour)")
    p.add_argument("--kinds", default="", help="comma-separated switch kinds (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="4 streams of 90 s, 10 stationary min")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--plot", type=Path, default=PLOT)
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.stream_s, args.stationary_min = 4, 90.0, 10.0

    from pearl_robot.runtime import PolicyRuntime, RuntimeConfig
    from pearl_robot.runtime.change_detection import ChangeDetectionConfig
    from pearl_robot.tasks.switching_spec import ARM3_SWITCHING_SPEC, SwitchingSpec
    from pearl_robot.tasks.twin_arm import TwinArmFamily

    if not (args.bundle / "contract.json").exists():
        print(f"no bundle at {args.bundle} (train one: pearl-robot train --family twin-arm, "
              "then pearl-robot export)", file=sys.stderr)
        return 2
    fam = TwinArmFamily()
    spec = ARM3_SWITCHING_SPEC if not args.kinds else \
        ARM3_SWITCHING_SPEC.only(*[k.strip() for k in args.kinds.split(",") if k.strip()])
    spec = SwitchingSpec(spec.kinds, args.first_s, spec.min_interval_s, spec.mean_interval_s,
                         spec.max_switches)
    cd = ChangeDetectionConfig(enabled=True, false_alarms_per_hour=args.false_alarms_per_hour)
    runtimes = {
        v: PolicyRuntime(args.bundle, RuntimeConfig(
            z_schedule="step_mean", change_detection=cd if v == "detect" else
            ChangeDetectionConfig()), rng=np.random.default_rng(args.seed))
        for v in VARIANTS}
    dt = runtimes["detect"].bundle.contract.control_period
    steps = int(round(args.stream_s / dt))
    after = int(round(args.after_s / dt))
    window = int(round(args.window_s / dt))
    tasks = fam.eval_tasks
    t_start = time.time()

    # warm the detector's baseline (a robot that has been running): 90 s of one task
    no_switch = SwitchingSpec(spec.kinds, 1e9, 1.0, 1.0, 0)
    run_stream(runtimes["detect"], "detect", tasks[-1], no_switch, int(90 / dt),
               args.seed + 999, "warmup")

    per_switch: list[dict[str, Any]] = []
    det_stats = {"re_alarms": 0, "false_alarms": 0}
    trace_stream: dict[str, Any] = {}
    for j in range(args.streams):
        task = tasks[j % len(tasks)]
        seed = args.seed + 1000 * (j + 1)
        res = {v: run_stream(runtimes[v], v, task, spec, steps, seed, f"stream{j}",
                             trace=(j == 0)) for v in VARIANTS}
        sw = res["detect"]["switches"]
        assert all(res[v]["switches"] == sw for v in VARIANTS), "streams differ"
        sc = score_detection(sw, res["detect"]["alarms"], steps, window)
        det_stats["re_alarms"] += sc["re_alarms"]
        det_stats["false_alarms"] += sc["false_alarms"]
        for i, (s, kind) in enumerate(sw):
            end = sw[i + 1][0] if i + 1 < len(sw) else steps
            row: dict[str, Any] = {"stream": j, "task": task.index, "tick": s, "kind": kind,
                                   "delay": sc["delays"][i], "segment_ticks": end - s}
            for v in VARIANTS:
                r = res[v]["rewards"]
                row[f"{v}_after"] = float(r[s:min(s + after, end)].sum())
                row[f"{v}_rest"] = float(r[min(s + after, end):end].sum())
            per_switch.append(row)
        if j == 0:
            trace_stream = {v: res[v] for v in VARIANTS}
        print(f"stream {j + 1}/{args.streams} (task {task.index}): {len(sw)} switches, "
              f"delays {sc['delays']}, false {sc['false_alarms']}, re {sc['re_alarms']}  "
              f"[{time.time() - t_start:.0f} s]", flush=True)
    switch_wall = time.time() - t_start

    # stationary: one task per 5 min, announced changes only
    rt = runtimes["detect"]
    stat_steps = int(round(args.stationary_min * 60 / dt))
    seg = min(stat_steps, int(round(300 / dt)))
    stat_alarms = 0
    done, k = 0, 0
    t1 = time.time()
    while done < stat_steps:
        n = min(seg, stat_steps - done)
        r = run_stream(rt, "detect", tasks[(k + 7) % len(tasks)], no_switch, n,
                       args.seed + 50_000 + k, f"stationary{k}")
        stat_alarms += len(r["alarms"])
        done += n
        k += 1
        print(f"stationary {done * dt / 60:.0f}/{args.stationary_min:.0f} min: "
              f"{stat_alarms} alarms  [{time.time() - t1:.0f} s]", flush=True)
    stat_hours = stat_steps * dt / 3600
    stat_wall = time.time() - t1

    # summaries
    def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
        d = [r["delay"] for r in rows if r["delay"] is not None]
        out: dict[str, Any] = {"switches": len(rows), "detected": len(d),
                               "missed": len(rows) - len(d), "delay_ticks": _summary(d)}
        for part in ("after", "rest"):
            out[part] = {v: _summary([r[f"{v}_{part}"] for r in rows]) for v in VARIANTS}
            o = np.array([r[f"oracle_{part}"] for r in rows])
            for v in ("detect", "window"):
                x = np.array([r[f"{v}_{part}"] for r in rows])
                # relative gap to the oracle reset: (oracle - variant) / |oracle|, >0 = worse
                out[part][f"{v}_gap_to_oracle"] = float((o.sum() - x.sum()) / abs(o.sum())) \
                    if rows and o.sum() != 0 else None
        return out

    kinds = sorted({r["kind"] for r in per_switch})
    results = {
        "benchmark": "change_detection", "bundle": str(args.bundle),
        "bundle_sha256": runtimes["detect"].bundle.sha256,
        "config": {**vars(args), "out": str(args.out), "plot": str(args.plot),
                   "bundle": str(args.bundle)},
        "detector": {"false_alarms_per_hour": cd.false_alarms_per_hour, "drift": cd.drift,
                     "threshold": runtimes["detect"].change_monitor.detector.threshold,
                     "warmup": cd.warmup, "holdoff": cd.holdoff, "on_change": cd.on_change},
        "window": runtimes["window"].belief.window,
        "overall": summarize(per_switch),
        "per_kind": {k: summarize([r for r in per_switch if r["kind"] == k]) for k in kinds},
        "alarms_in_switching_streams": det_stats,
        "stationary": {"hours": stat_hours, "alarms": stat_alarms,
                       "false_alarms_per_hour": stat_alarms / stat_hours},
        "per_switch": per_switch,
        "wall_s": {"switching": switch_wall, "stationary": stat_wall},
        "machine": {"python": platform.python_version(), "note": "shared 2-core VM, loaded"},
        "seed": args.seed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    ov = results["overall"]
    print(json.dumps({k: ov[k] for k in ("switches", "detected", "missed", "delay_ticks")},
                     indent=1))
    for part in ("after", "rest"):
        print(part, {v: round(ov[part][v]["mean"], 2) for v in VARIANTS},
              "gap detect", ov[part]["detect_gap_to_oracle"],
              "gap window", ov[part]["window_gap_to_oracle"])
    print("stationary", results["stationary"], "switching-stream alarms", det_stats)
    if trace_stream:
        _plot(trace_stream, dt, results["detector"]["threshold"], args.plot)
    print(f"wrote {args.out}" + (f" and {args.plot}" if trace_stream else ""))
    return 0


def _plot(res: dict[str, Any], dt: float, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    det = res["detect"]
    tr = det["trace"]
    t = np.arange(len(det["rewards"])) * dt
    fig, ax = plt.subplots(4, 1, figsize=(11, 9), sharex=True)
    for v, c in zip(VARIANTS, ("C0", "C2", "C3")):
        ax[0].plot(t, np.convolve(res[v]["rewards"], np.ones(20) / 20, "same"), c, lw=1,
                   label=f"{v}")
    ax[0].set_ylabel("reward (1 s mean)")
    ax[0].legend(loc="lower left", fontsize=8)
    ax[1].plot(t, tr["mean"], lw=0.8)
    ax[1].set_ylabel("belief mean (detect)")
    ax[2].plot(t, tr["cusum"], "k", lw=0.8, label="CUSUM")
    ax[2].axhline(threshold, color="r", ls="--", lw=0.8, label="threshold")
    ax[2].set_ylabel("detector")
    ax[2].legend(loc="upper left", fontsize=8)
    ax[3].plot(t, tr["count"], "C0", lw=0.8, label="detect")
    ax[3].plot(t, res["window"]["trace"]["count"], "C3", lw=0.8, label="window")
    ax[3].set_ylabel("context size")
    ax[3].set_xlabel("s")
    ax[3].legend(loc="lower right", fontsize=8)
    for a in ax:
        for s, _kind in det["switches"]:
            a.axvline(s * dt, color="0.5", lw=0.8)
        for al in det["alarms"]:
            a.axvline(al * dt, color="r", lw=0.6, ls=":")
    for s, kind in det["switches"]:
        ax[0].annotate(kind, (s * dt, ax[0].get_ylim()[1]), fontsize=7, rotation=90,
                       va="top", ha="right")
    fig.suptitle("arm3 twin, switching tasks: true switches (grey), alarms (red dotted)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
