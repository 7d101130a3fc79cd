"""An accelerated overnight soak of the full adapt graph, with a fault schedule (slow; not in CI).

Design (what runs, and why this way):

* **The graph.** ``pearl-robot adapt`` exactly as a user starts it (policy node, logger node and
  the robot node composed in one process, each a ``pearl-robot`` child process started by
  :class:`pearl_robot.loop.procs.Child` and stopped by its PID), with the packaged bundle and the
  family's training tasks (``episodes_per_task`` 4, as the night of ``make demo``). Robot time
  faster than real time needs the twin (``--robot twin --real-time-factor R``: the twin steps on
  the wall clock and publishes ``/clock``, the graph runs on sim time), so the hours of the soak
  are twin hours; the serial link runs in a shorter real-time segment of its own (below).
* **The real-time factor.** ``--rtf R`` or, by default, measured first: the twin graph runs a
  short window at each candidate factor and *holds* it when the twin achieves at least
  ``HOLD_RTF_FRACTION`` of it (its ``real_time_factor_achieved`` on /diagnostics) and the
  policy's late ticks (a tick more than a period after its period ended, on the graph's clock)
  stay under ``HOLD_LATE_FRACTION``; the soak runs at the highest factor that held (at the
  first candidate when none held: ``rtf_trials`` in the result says so).
* **Faults** (:class:`SoakPlan`, a pure function of the options):

  - *resets that time out*: the twin node's off-by-default fault hook
    (``twin_node.fault_reset_stall_every`` / ``fault_reset_stall_s``) stalls every N-th reset
    for 1.5 x the policy's ``reset_timeout_s``: the reset times out and is retried;
  - *a logger restart*, twice: the nodes share one process, so restarting the logger restarts
    the graph. Once gracefully (SIGINT at a planned share of the episodes: the logger drains and
    closes its log) and once as a crash (SIGKILL while an episode file is open and holds a
    commit; before its first commit a file is empty, the writer's crash window): the next start
    recovers the unfinished file (``status`` ``recovered``, ``end_reason`` ``crash``) and the
    schedule resumes from ``session.json`` with the next free episode id, so the episode budget
    is still met and no id is used twice;
  - *a serial disconnect and reconnect*: a real-time segment on the firmware emulator
    (``pearl-robot emulate --link PATH --replug-every S``: the pty vanishes and comes back under
    the same path) with ``adapt --robot serial`` and ``bridge_node.rearm_after_reconnect`` (an
    unattended night: the bridge re-arms after the reconnect by itself).
* **Checks.** For each dataset, :func:`account` over the manifest and the episode files:
  episodes begun (any file or manifest line), closed (``complete``), recovered after a crash,
  lost (begun and never listed, or quarantined with nothing readable), duplicated ids; plus
  ``check_datasets`` (errors must be none; the crash's ``recovered`` warning is expected). The
  RSS of every graph process is sampled (psutil) through the run: first sample after its first
  closed episode, last before it stops, and the peak. Finally the twin dataset trains:
  ``pearl-robot train --data DIR --iterations 2`` with a few steps per iteration.

Results: ``bench/results/soak.json`` (or ``--out``) and a printed table.

    .venv/bin/python -m bench.bench_soak --quick                # a smoke run, a few minutes
    .venv/bin/python -m bench.bench_soak --robot-hours 8        # the night (hours of wall time)
    .venv/bin/python -m bench.bench_soak --robot-hours 1.5 --rtf 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

RESULTS = Path(__file__).parent / "results" / "soak.json"
EPISODE_S = 3.0
"""Robot seconds of one twin-arm episode (60 ticks at 20 Hz): the family's horizon."""
HOLD_RTF_FRACTION = 0.9
"""A real-time factor holds when the twin achieves at least this share of it..."""
HOLD_LATE_FRACTION = 0.01
"""... and at most this share of the policy's ticks are late."""
RESET_TIMEOUT_S = 2.0
"""The policy's reset_timeout_s in the soak (sim seconds); a stall lasts 1.5 x this."""


@dataclass(frozen=True)
class SoakPlan:
    """What the soak runs and which faults it injects (see the module docstring)."""

    robot_hours: float
    """Twin robot time to run, in hours of episode time (the episode budget follows)."""
    rtf: float
    """Real-time factor of the twin segments."""
    episodes: int
    """Episode budget of the twin schedule (robot_hours / EPISODE_S)."""
    graceful_restart_at: int
    """Closed episodes after which the graph is stopped with SIGINT and started again."""
    crash_at: int
    """Closed episodes after which the graph is killed (SIGKILL) inside an open episode."""
    reset_stall_every: int
    """Every this-many-th reset of the twin stalls (times out once, then succeeds)."""
    reset_stall_s: float
    """Length of a stall (sim seconds)."""
    serial_episodes: int
    """Episodes of the real-time serial segment."""
    replug_every_s: float
    """The emulator's cable is pulled and plugged back every this-many seconds."""

    @property
    def planned_stalls(self) -> int:
        """Stalls the budget's resets should trigger (at least; retries add none)."""
        return self.episodes // self.reset_stall_every

    @property
    def serial_wall_s(self) -> float:
        """Rough wall time of the serial segment (episodes plus the 0.5 s hold)."""
        return self.serial_episodes * (EPISODE_S + 0.5)


def make_plan(robot_hours: float, rtf: float, quick: bool = False) -> SoakPlan:
    """The fault schedule for a run of ``robot_hours`` at ``rtf``: restarts at a third and at
    two thirds of the episodes, about 24 reset stalls spread over the budget (6 quick), and a
    serial segment with 3-4 replugs."""
    if not robot_hours > 0 or not rtf > 0:
        raise ValueError(f"robot_hours and rtf must be > 0, got {robot_hours}, {rtf}")
    episodes = max(12, int(math.ceil(robot_hours * 3600.0 / EPISODE_S)))
    stalls = 6 if quick else 24
    return SoakPlan(
        robot_hours=robot_hours, rtf=rtf, episodes=episodes,
        graceful_restart_at=episodes // 3, crash_at=2 * episodes // 3,
        reset_stall_every=max(2, episodes // stalls),
        reset_stall_s=1.5 * RESET_TIMEOUT_S,
        serial_episodes=12 if quick else 60,
        replug_every_s=12.0 if quick else 50.0)


class Accounting(NamedTuple):
    """Episodes of one dataset, from its manifest and its files."""

    begun: int
    """Distinct episode ids with a file (episodes/ or quarantine/) or a manifest line."""
    closed: int
    """Listed ``complete`` (closed by the logger)."""
    recovered: int
    """Listed ``recovered`` (cut by a crash; closed by the next start's recovery)."""
    lost: int
    """Begun but never listed, or listed ``quarantined`` (nothing readable)."""
    duplicated: int
    """Ids listed more than once in the manifest."""
    id_gaps: int
    """Ids missing between 0 and the largest id (numbering that skipped)."""
    transitions: int
    """Transitions (control ticks) in listed usable episodes."""
    robot_s: float
    """Episode time of the listed usable episodes (seconds of robot time)."""
    end_reasons: dict[str, int]
    """Listed episodes by end reason."""


def account(entries: Iterable[dict[str, Any]], file_ids: Iterable[int]) -> Accounting:
    """Accounting of manifest ``entries`` plus the episode ids found in files."""
    entries = list(entries)
    counts: dict[int, int] = {}
    for e in entries:
        counts[int(e["episode"])] = counts.get(int(e["episode"]), 0) + 1
    listed_ok = {int(e["episode"]) for e in entries
                 if e.get("status") in ("complete", "recovered")}
    begun = set(counts) | set(file_ids)
    usable = [e for e in entries if e.get("status") in ("complete", "recovered")]
    reasons: dict[str, int] = {}
    for e in entries:
        r = str(e.get("end_reason", ""))
        reasons[r] = reasons.get(r, 0) + 1
    return Accounting(
        begun=len(begun),
        closed=sum(1 for e in entries if e.get("status") == "complete"),
        recovered=sum(1 for e in entries if e.get("status") == "recovered"),
        lost=len(begun - listed_ok),
        duplicated=sum(1 for v in counts.values() if v > 1),
        id_gaps=(max(begun) + 1 - len(begun)) if begun else 0,
        transitions=sum(int(e.get("transitions", 0)) for e in usable),
        robot_s=sum(float(e.get("duration_s", 0.0)) for e in usable),
        end_reasons=reasons)


def account_dataset(root: Path) -> Accounting:
    """:func:`account` of a dataset directory."""
    from pearl_robot.datalog.dataset import parse_segment_name
    from pearl_robot.datalog.reader import manifest_entries

    ids: set[int] = set()
    for sub in ("episodes", "quarantine"):
        d = root / sub
        if d.is_dir():
            for p in d.rglob("*"):
                parsed = parse_segment_name(p.name)
                if parsed is not None:
                    ids.add(parsed[0])
    entries = manifest_entries(root) if (root / "manifest.jsonl").exists() else []
    return account(entries, ids)


# ------------------------------------------------------------------------------ processes
def _ros_env(domain: int) -> dict[str, str]:
    return {"ROS_DOMAIN_ID": str(domain), "ROS_LOCALHOST_ONLY": "1",
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}


def _params(path: Path, sections: dict[str, dict[str, Any]]) -> str:
    import yaml

    path.write_text(yaml.safe_dump({n: {"ros__parameters": p} for n, p in sections.items()},
                                   sort_keys=False))
    return str(path)


def _closed(ds: Path) -> int:
    from pearl_robot.datalog.reader import manifest_entries

    if not (ds / "manifest.jsonl").exists():
        return 0
    try:
        return len(manifest_entries(ds))
    except Exception:  # noqa: BLE001 - a manifest being appended; read it again next poll
        return -1


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - gone, or no psutil: /proc
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
    return None


class RssTrack:
    """RSS samples of one process: first (once it has closed an episode), last, peak."""

    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.samples: list[tuple[float, float]] = []
        self._t0 = time.monotonic()

    def sample(self) -> None:
        mb = _rss_mb(self.pid)
        if mb is not None:
            self.samples.append((round(time.monotonic() - self._t0, 1), round(mb, 1)))

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"process": self.name, "samples": 0}
        mbs = [m for _, m in self.samples]
        return {"process": self.name, "samples": len(mbs), "start_mb": mbs[0],
                "end_mb": mbs[-1], "peak_mb": max(mbs),
                "span_s": self.samples[-1][0] - self.samples[0][0]}


def _diag_value(probe: Any, name: str, key: str) -> float | None:
    st = probe.latest(name)
    if st is None or key not in st[2]:
        return None
    try:
        return float(st[2][key])
    except ValueError:
        return None


def _twin_graph(name: str, out: Path, ds: Path, rtf: float, episodes: int, plan: SoakPlan,
                domain: int, seed: int, duration_s: float = 0.0) -> Any:
    from pearl_robot.loop.procs import Child, cli_command

    pf = _params(out / f"{name}-params.yaml", {
        "policy_node": {"tasks": "train", "episodes_per_task": 4, "seed": seed,
                        "reset_timeout_s": RESET_TIMEOUT_S, "fault_pause_s": 5.0},
        "logger_node": {"dataset_dir": str(ds), "robot_id": "arm3-twin-soak"},
        "twin_node": {"seed": seed, "fault_reset_stall_every": plan.reset_stall_every,
                      "fault_reset_stall_s": plan.reset_stall_s}})
    argv = ["adapt", "--robot", "twin", "--real-time-factor", f"{rtf:g}", "--dataset-dir",
            str(ds), "--params-file", pf, "--episodes", str(episodes), "--exit-when-done"]
    if duration_s:
        argv += ["--duration", f"{duration_s:g}"]
    return Child(name, cli_command(*argv), out / "logs", env=_ros_env(domain))


def measure_rtf(out: Path, candidates: list[float], window_s: float, domain: int,
                plan: SoakPlan) -> tuple[float, list[dict[str, Any]]]:
    """The highest candidate factor that holds (see the module docstring), and each trial."""
    from pearl_robot.ros.loop_probe import OperatorProbe

    trials: list[dict[str, Any]] = []
    best = candidates[0]
    probe = OperatorProbe(domain, name="pearl_soak_rtf_probe")
    try:
        for r in candidates:
            ds = out / f"rtf-{r:g}"
            n0 = len(probe.diagnostics)
            g = _twin_graph(f"rtf-{r:g}", out, ds, r, 100000, plan, domain, seed=7)
            try:
                g.wait_for("a closed episode", lambda ds=ds: _closed(ds) >= 1, 120)
                first = (_diag_value(probe, "control loop", "ticks") or 0,
                         _diag_value(probe, "control loop", "late_ticks") or 0)
                t0 = time.monotonic()
                time.sleep(window_s)
                ticks = (_diag_value(probe, "control loop", "ticks") or 0) - first[0]
                late = (_diag_value(probe, "control loop", "late_ticks") or 0) - first[1]
                achieved = [float(v["real_time_factor_achieved"]) for _, n, _, _, v in
                            probe.diagnostics[n0:] if ": twin" in n
                            and "real_time_factor_achieved" in v]
                wall = time.monotonic() - t0
            finally:
                g.stop()
            # the twin's figure is cumulative since its start: the newest is the window's
            ach = achieved[-1] if achieved else 0.0
            holds = ach >= HOLD_RTF_FRACTION * r and ticks > 0 and \
                late <= HOLD_LATE_FRACTION * ticks
            trials.append({"rtf": r, "achieved_rtf": round(ach, 2), "ticks": int(ticks),
                           "late_ticks": int(late), "ticks_per_wall_s": round(ticks / wall, 1),
                           "holds": holds, "load_avg_1min": round(os.getloadavg()[0], 1)})
            print(f"  rtf {r:g}: achieved {ach:.2f}, {int(ticks)} ticks, {int(late)} late "
                  f"-> {'holds' if holds else 'does not hold'}", flush=True)
            if not holds:
                break
            best = r
    finally:
        probe.close()
    return best, trials


def run_twin(out: Path, plan: SoakPlan, domain: int) -> dict[str, Any]:
    """The twin segments: graceful restart, crash, run to the budget (see the docstring)."""
    from pearl_robot.ros.loop_probe import OperatorProbe

    ds = out / "twin-log"
    probe = OperatorProbe(domain, name="pearl_soak_probe")
    segments: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    stalls_total = refused_total = 0
    ticks_total = late_total = 0
    t_start = time.monotonic()
    try:
        for seg, (until, how) in enumerate(((plan.graceful_restart_at, "SIGINT"),
                                            (plan.crash_at, "SIGKILL"),
                                            (plan.episodes, "done"))):
            n0 = len(probe.diagnostics)
            g = _twin_graph(f"twin-{seg}", out, ds, plan.rtf, plan.episodes, plan, domain,
                            seed=1)
            rss = RssTrack(f"twin graph {seg} (pid {g.pid})", g.pid)
            closed_at_start = max(0, _closed(ds))
            t0 = time.monotonic()
            g.wait_for("its first closed episode",
                       lambda c=closed_at_start: _closed(ds) > c, 180)
            rss.sample()
            last_sample = time.monotonic()
            while g.alive() and (how == "done" or _closed(ds) < until):
                time.sleep(0.5)
                if time.monotonic() - last_sample > 20:
                    rss.sample()
                    last_sample = time.monotonic()
            rss.sample()
            st = probe.latest("control loop")
            seg_ticks = int(float(st[2].get("ticks", 0))) if st else 0
            seg_late = int(float(st[2].get("late_ticks", 0))) if st else 0
            twin = [v for _, n, _, _, v in probe.diagnostics[n0:] if ": twin" in n]
            stalls = int(float(twin[-1].get("reset_stalls", 0))) if twin else 0
            refused = int(float(twin[-1].get("reset_requests_refused", 0))) if twin else 0
            ach = float(twin[-1].get("real_time_factor_achieved", 0)) if twin else 0.0
            if how == "SIGINT":
                rc = g.stop(grace_s=30.0)
                faults.append({"fault": "logger restart (graceful: SIGINT to the graph)",
                               "at_closed_episodes": _closed(ds), "exit_status": rc})
            elif how == "SIGKILL":
                open_file, open_bytes = _committed_open_file(ds / "episodes", 30.0)
                os.kill(g.pid, signal.SIGKILL)
                g.proc.wait(timeout=10)
                g.stop()
                faults.append({"fault": "logger crash (SIGKILL to the graph, an episode "
                               "file open with committed data)",
                               "at_closed_episodes": _closed(ds),
                               "open_file": open_file, "open_file_bytes": open_bytes})
            else:
                rc = g.wait(300)
                g.stop()
                if rc != 0:
                    raise RuntimeError(f"the last twin segment exited {rc}; see {g.log_path}")
            stalls_total += stalls
            refused_total += refused
            ticks_total += seg_ticks
            late_total += seg_late
            segments.append({"segment": seg, "ended_by": how, "wall_s":
                             round(time.monotonic() - t0, 1), "closed_after":
                             _closed(ds), "ticks": seg_ticks, "late_ticks": seg_late,
                             "reset_stalls": stalls, "reset_requests_refused": refused,
                             "achieved_rtf": round(ach, 2), "rss": rss.summary(),
                             "load_avg_1min": round(os.getloadavg()[0], 1)})
            print(f"  twin segment {seg}: ended by {how} at {_closed(ds)} listed episodes, "
                  f"{seg_ticks} ticks ({seg_late} late), {stalls} reset stalls, achieved "
                  f"rtf {ach:.2f}, RSS {rss.summary().get('start_mb')} -> "
                  f"{rss.summary().get('end_mb')} MB", flush=True)
    finally:
        probe.close()
    # Each stall refuses resets for 1.5 x reset_timeout_s of sim time, so each one is a reset
    # that timed out (the schedule retries it; tests/ros/test_twin_reset_fault.py shows that).
    faults.append({"fault": "reset stalls (twin fault hook): resets timed out",
                   "injected": stalls_total, "requests_refused": refused_total})
    return {"dataset": str(ds), "segments": segments, "faults": faults,
            "ticks": ticks_total, "late_ticks": late_total,
            "wall_s": round(time.monotonic() - t_start, 1)}


def run_serial(out: Path, plan: SoakPlan, domain: int) -> dict[str, Any]:
    """The real-time serial segment: emulator with replugs, ``adapt --robot serial``."""
    from pearl_robot.loop.procs import Child, cli_command
    from pearl_robot.ros.loop_probe import OperatorProbe

    ds = out / "serial-log"
    link = out / "ttySOAK"
    logs = out / "logs"
    t_start = time.monotonic()
    emu = Child("emulator", cli_command(
        "emulate", "--link", str(link), "--seed", "3", "--replug-every",
        f"{plan.replug_every_s:g}", "--stats-every", "10"), logs)
    probe = None
    robot = None
    try:
        emu.wait_for("device path", lambda: "link:" in emu.text() and link.exists(), 60)
        pf = _params(out / "serial-params.yaml", {
            "policy_node": {"tasks": "train", "episodes_per_task": 4, "seed": 2,
                            "reset_hold_s": 0.5},
            "logger_node": {"dataset_dir": str(ds), "robot_id": "arm3-emulated-soak"},
            "bridge_node": {"port": str(link), "rearm_after_reconnect": True}})
        probe = OperatorProbe(domain, name="pearl_soak_serial_probe")
        robot = Child("serial-graph", cli_command(
            "adapt", "--robot", "serial", "--port", str(link), "--dataset-dir", str(ds),
            "--params-file", pf, "--episodes", str(plan.serial_episodes), "--exit-when-done"),
            logs, env=_ros_env(domain))
        rss = RssTrack(f"serial graph (pid {robot.pid})", robot.pid)
        emu_rss = RssTrack(f"emulator (pid {emu.pid})", emu.pid)
        robot.wait_for("its first closed episode", lambda: _closed(ds) >= 1, 180)
        rss.sample()
        emu_rss.sample()
        last = time.monotonic()
        while robot.alive():
            time.sleep(0.5)
            if time.monotonic() - last > 10:
                rss.sample()
                emu_rss.sample()
                last = time.monotonic()
            if time.monotonic() - t_start > plan.serial_wall_s * 3 + 120:
                break
        rss.sample()
        emu_rss.sample()
        link_st = probe.latest("serial link")
        loop_st = probe.latest("control loop")
        rc = robot.wait(60)
        values = link_st[2] if link_st else {}
        replugs = emu.text().count("replug")
    finally:
        if robot is not None:
            robot.stop()
        emu.stop()
        if probe is not None:
            probe.close()
    return {"dataset": str(ds), "exit_status": rc, "wall_s": round(time.monotonic() - t_start,
                                                                   1),
            "ticks": int(float(loop_st[2].get("ticks", 0))) if loop_st else 0,
            "late_ticks": int(float(loop_st[2].get("late_ticks", 0))) if loop_st else 0,
            "reconnects": int(float(values.get("events.reconnects", 0) or 0)),
            "commands_while_disarmed": int(float(values.get("events.commands_while_disarmed",
                                                            0) or 0)),
            "emulator_log_replug_lines": replugs,
            "rss": [rss.summary(), emu_rss.summary()],
            "load_avg_1min": round(os.getloadavg()[0], 1)}


def train_check(out: Path, ds: Path) -> dict[str, Any]:
    """The soak's dataset trains: two short iterations of ``pearl-robot train --data``."""
    from pearl_robot.loop.mission import quick, train_config_file
    from pearl_robot.loop.procs import StageError, cli_command, run_stage

    argv = ["train", "--family", "twin-arm", "--data", str(ds), "--iterations", "2",
            "--seed", "0", "--out", str(out / "train"), "--no-progress", "--no-tensorboard"]
    tcfg = train_config_file(quick(), "twin-arm")  # the family's preset, as the demo's retrain
    if tcfg is not None:
        argv += ["--config", str(tcfg)]
    for item in quick().train_set:
        argv += ["--set", item]
    t0 = time.monotonic()
    try:
        child = run_stage("train", cli_command(*argv), out / "logs", 1800,
                          env={"OMP_NUM_THREADS": "1"})
        ok, tail = True, child.tail(3)
    except StageError as exc:
        ok, tail = False, str(exc)[-600:]
    return {"trains": ok, "wall_s": round(time.monotonic() - t0, 1), "log_tail": tail,
            "checkpoint": str(out / "train" / "checkpoints" / "latest.pt")}


def _problems(ds: Path) -> dict[str, Any]:
    from pearl_robot.datalog.reader import check_datasets

    probs = check_datasets([ds])
    return {"errors": [str(p) for p in probs if p.severity == "error"],
            "warnings": [str(p) for p in probs if p.severity != "error"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robot-hours", type=float, default=8.0,
                    help="twin robot time (hours of episodes); default 8")
    ap.add_argument("--rtf", type=float, default=0.0,
                    help="real-time factor of the twin; 0 (default): measure the highest "
                    "that holds")
    ap.add_argument("--quick", action="store_true",
                    help="a few minutes of robot time and a short serial segment (smoke run)")
    ap.add_argument("--rtf-candidates", default="4,8,12,16,24",
                    help="factors tried by the measurement, in order")
    ap.add_argument("--rtf-window", type=float, default=20.0,
                    help="wall seconds per measured factor")
    ap.add_argument("--no-serial", action="store_true", help="skip the serial segment")
    ap.add_argument("--out", type=Path, default=RESULTS, help="result JSON")
    ap.add_argument("--work", type=Path, default=None,
                    help="directory for the datasets and logs (default: a temp dir)")
    args = ap.parse_args(argv)
    hours = 0.1 if args.quick and args.robot_hours == 8.0 else args.robot_hours
    work = (args.work or Path(tempfile.mkdtemp(prefix="pearl-soak-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env_domain = os.environ.get("ROS_DOMAIN_ID")
    domain = int(env_domain) if env_domain and env_domain.isdigit() else \
        random.SystemRandom().randint(10, 90)
    t0 = time.monotonic()
    load0 = os.getloadavg()
    result: dict[str, Any] = {"argv": sys.argv[1:], "work": str(work),
                              "load_avg_start": [round(x, 2) for x in load0],
                              "cpus": os.cpu_count()}
    print(f"soak: work dir {work}, ROS domains {domain}, {domain + 1}", flush=True)
    rtf = args.rtf
    if not rtf:
        cands = [float(x) for x in args.rtf_candidates.split(",")]
        window = 8.0 if args.quick else args.rtf_window
        print(f"measuring the real-time factor ({window:g} s per candidate)", flush=True)
        rtf, trials = measure_rtf(work, cands, window, domain,
                                  make_plan(hours, cands[0], args.quick))
        result["rtf_trials"] = trials
    plan = make_plan(hours, rtf, args.quick)
    result["plan"] = asdict(plan)
    print(f"plan: {plan.episodes} episodes ({plan.robot_hours:g} robot h) at {rtf:g}x, "
          f"restart at {plan.graceful_restart_at}, crash at {plan.crash_at}, a reset stall "
          f"every {plan.reset_stall_every} resets", flush=True)
    result["twin"] = run_twin(work, plan, domain)
    tw_ds = Path(result["twin"]["dataset"])
    result["twin"]["accounting"] = account_dataset(tw_ds)._asdict()
    result["twin"]["check"] = _problems(tw_ds)
    if not args.no_serial:
        print(f"serial segment: {plan.serial_episodes} episodes in real time, a replug every "
              f"{plan.replug_every_s:g} s", flush=True)
        result["serial"] = run_serial(work, plan, domain + 1)
        s_ds = Path(result["serial"]["dataset"])
        result["serial"]["accounting"] = account_dataset(s_ds)._asdict()
        result["serial"]["check"] = _problems(s_ds)
    print("training on the twin dataset (2 iterations)", flush=True)
    result["train"] = train_check(work, tw_ds)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["verdict"] = verdict(result, plan)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print_table(result)
    print(f"wrote {args.out}")
    return 0 if result["verdict"]["ok"] else 1


def _committed_open_file(episodes: Path, timeout_s: float) -> tuple[str | None, int]:
    """The first open episode file (``.part``) that holds a commit, polled every 2 ms.

    The writer group-commits (every ``commit_every`` records or ``commit_interval_s``), so a
    file stays empty until its first commit; a kill then leaves nothing to recover, the crash
    window the writer documents. The soak's crash is meant to exercise recovery of a cut
    episode, so it waits for committed data (at 16x an episode lasts ~0.2 s of wall time and
    its first commit comes a third of the way in)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in episodes.iterdir():
            if p.name.endswith(".part"):
                try:
                    size = p.stat().st_size
                except FileNotFoundError:  # closed (renamed) meanwhile
                    continue
                if size > 0:
                    return p.name, size
        time.sleep(0.002)
    return None, 0


def verdict(result: dict[str, Any], plan: SoakPlan) -> dict[str, Any]:
    """What the soak must show, each as a named check."""
    tw = result["twin"]["accounting"]
    checks = {
        "twin budget met (closed + recovered >= episodes)":
            tw["closed"] + tw["recovered"] >= plan.episodes,
        "no twin episode lost": tw["lost"] == 0,
        "no duplicated episode id": tw["duplicated"] == 0,
        "twin numbering without gaps": tw["id_gaps"] == 0,
        "twin dataset: no check errors": not result["twin"]["check"]["errors"],
        "the crash was recovered": tw["recovered"] >= 1,
        "reset stalls injected": result["twin"]["faults"][-1]["injected"] >= 1,
        "the dataset trains": result["train"]["trains"],
    }
    if "serial" in result:
        s = result["serial"]
        checks.update({
            "serial: all episodes listed": s["accounting"]["closed"] +
            s["accounting"]["recovered"] >= plan.serial_episodes,
            "serial: no episode lost or duplicated": s["accounting"]["lost"] == 0 and
            s["accounting"]["duplicated"] == 0,
            "serial: reconnected after each replug": s["reconnects"] >= 1,
            "serial: no check errors": not s["check"]["errors"]})
    return {"ok": all(checks.values()), "checks": checks}


def print_table(r: dict[str, Any]) -> None:
    tw = r["twin"]
    a = tw["accounting"]
    rows = [("robot hours (twin, episode time)", f"{a['robot_s'] / 3600:.2f}"),
            ("real-time factor (requested)", f"{r['plan']['rtf']:g}"),
            ("wall time of the twin segments", f"{tw['wall_s'] / 60:.1f} min"),
            ("ticks (transitions logged)", f"{a['transitions']}"),
            ("policy ticks / late", f"{tw['ticks']} / {tw['late_ticks']}"),
            ("episodes begun / closed / recovered / lost",
             f"{a['begun']} / {a['closed']} / {a['recovered']} / {a['lost']}"),
            ("duplicated ids / id gaps", f"{a['duplicated']} / {a['id_gaps']}")]
    for f in tw["faults"]:
        rows.append((f["fault"], ", ".join(f"{k} {v}" for k, v in f.items() if k != "fault")))
    for s in tw["segments"]:
        m = s["rss"]
        rows.append((f"RSS twin graph {s['segment']} (start/end/peak)",
                     f"{m.get('start_mb')} / {m.get('end_mb')} / {m.get('peak_mb')} MB over "
                     f"{m.get('span_s')} s"))
    if "serial" in r:
        s = r["serial"]
        sa = s["accounting"]
        rows += [("serial: episodes begun / closed / recovered / lost",
                  f"{sa['begun']} / {sa['closed']} / {sa['recovered']} / {sa['lost']}"),
                 ("serial: ticks / late, reconnects",
                  f"{s['ticks']} / {s['late_ticks']}, {s['reconnects']}"),
                 ("serial: commands ignored while disarmed", f"{s['commands_while_disarmed']}")]
        for m in s["rss"]:
            rows.append((f"RSS {m['process']}", f"{m.get('start_mb')} / {m.get('end_mb')} / "
                         f"{m.get('peak_mb')} MB"))
    rows += [("dataset trains (2 iterations)", f"{r['train']['trains']} "
              f"({r['train']['wall_s']:.0f} s)"),
             ("load average start / end", f"{r['load_avg_start'][0]} / "
              f"{r['load_avg_end'][0]}"),
             ("verdict", "ok" if r["verdict"]["ok"] else "FAILED: " + ", ".join(
                 k for k, v in r["verdict"]["checks"].items() if not v))]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
