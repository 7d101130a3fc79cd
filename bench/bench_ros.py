"""Loop quality of the adapt graph: 20 Hz control against the twin, one process per node.

What runs (the launch file's process layout, started without `ros2 launch`): ``twin_node``
(real time, 20 Hz /joint_states), ``policy_node`` (the bundle from models/, else an untrained
twin-arm bundle exported for the run), ``logger_node`` (writing to a temporary dataset), each
a separate process with the parameters ``pearl_robot.ros.graph.build_graph`` gives; plus a bare
rclpy echo process, and this process as the observer.

Measured over the run (after a warm-up), at the observer:

- **late periods**: control periods whose command came more than one period after the period
  ended or never came (the policy's own count on /diagnostics; goal 0), and, seen from
  outside, gaps between consecutive commands longer than two periods;
- **state -> command latency**: for each /pearl/command, its arrival time minus the header
  stamp of the newest /joint_states published before it (the twin stamps a state when it
  publishes it; one host, one clock): twin -> policy hop, the tick, policy -> observer hop;
  the policy's own share (tick start -> command out) is on its /diagnostics;
- **floor**: a bare rclpy echo round trip in the same run: the observer publishes a stamped
  ping at 20 Hz on the stream QoS, a separate process with one subscription and one
  publisher (SingleThreadedExecutor unless ``--echo-executor``) sends it back; round trip =
  two hops, like the latency above. Goal: latency median and p99 at most 1.5x the echo's.

The graph's nodes spin on the executor their ``executor`` parameter names (``--executor``;
``pearl_robot.ros.node_main.EXECUTORS``).

    python -m bench.bench_ros                      # 10 minutes
    python -m bench.bench_ros --quick              # about 1 minute
    python -m bench.bench_ros --executor events --out bench/results/ros-events.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "ros.json"
PERIOD = 0.05

ECHO_SCRIPT = """
import sys
import rclpy
from rclpy.executors import ExternalShutdownException
from builtin_interfaces.msg import Time
from std_msgs.msg import Header
from pearl_robot.ros import qos
from pearl_robot.ros.node_main import make_executor
rclpy.init()
node = rclpy.create_node("bench_echo")
pub = node.create_publisher(Header, "/bench/pong", qos.stream_publisher(0.05))
node.create_subscription(Header, "/bench/ping", pub.publish, qos.stream_subscription())
ex = make_executor(sys.argv[1])
ex.add_node(node)
try:
    ex.spin()
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""


def _bundle(tmp: Path) -> tuple[Path, str]:
    """A twin-arm bundle: the trained one in models/ when present, else untrained."""
    models = REPO / "models"
    if models.is_dir():
        for c in sorted(models.iterdir()):
            if (c / "contract.json").is_file():
                fam = json.loads((c / "contract.json").read_text()).get("task_family", {})
                if str(fam.get("name", "")).startswith("twin-arm"):
                    return c, "models/" + c.name
    import torch

    from pearl_robot.core.config import PearlConfig
    from pearl_robot.core.networks import EnvSpec, PearlNetworks
    from pearl_robot.export.exporter import ExportConfig, export_networks
    from pearl_robot.tasks.interface import EnvInterface
    from pearl_robot.tasks.registry import make_family

    family = make_family("twin-arm")
    env = family.make_env(seed=0)
    torch.manual_seed(0)
    nets = PearlNetworks(PearlConfig(latent_dim=5), EnvSpec.from_env(env))
    interface = EnvInterface.from_env(env)
    out = tmp / "bundle"
    export_networks(nets, out, interface=interface, family=family.describe(),
                    config=ExportConfig(overwrite=True))
    return out, "untrained twin-arm (same graph sizes; exported for the run)"


def _executable(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-c", f"import sys; from pearl_robot.ros.{name} import main; "
            "sys.exit(main())"]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _stats_ms(values: list[float]) -> dict[str, float]:
    v = [x * 1e3 for x in values]
    return {"n": len(v), "median_ms": _pct(v, 50), "p99_ms": _pct(v, 99),
            "max_ms": max(v) if v else float("nan")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="about 1 minute instead of 10")
    p.add_argument("--duration", type=float, default=None, help="measured seconds")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds ignored at start")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness for every process of the loop (twin, policy, logger, echo, "
                   "this observer) alike, e.g. -10 as a robot computer would run its control "
                   "processes; negative values need root")
    from pearl_robot.ros.node_main import EXECUTORS

    p.add_argument("--executor", default="single", choices=EXECUTORS,
                   help="the graph nodes' executor parameter (default: single)")
    p.add_argument("--echo-executor", default="single", choices=EXECUTORS,
                   help="the echo floor's executor (default: single, the bare rclpy echo)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = p.parse_args(argv)
    duration = args.duration or (60.0 if args.quick else 600.0)

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(101, 200))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, Header

    from pearl_robot.ros import qos
    from pearl_robot.ros.conversions import stamp_to_sec
    from pearl_robot.ros.graph import build_graph

    if args.nice:
        os.nice(args.nice)  # inherited by every child process below

    tmp = Path(tempfile.mkdtemp(prefix="pearl-bench-ros-"))
    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        bundle, bundle_note = _bundle(tmp)
        specs = build_graph({"bundle": str(bundle), "dataset_dir": str(tmp / "ds"),
                             "executor": args.executor})
        params = {s.name: {"ros__parameters": s.parameters} for s in specs}
        pf = tmp / "params.yaml"
        pf.write_text(yaml.safe_dump(params))
        log = open(tmp / "nodes.log", "w")  # noqa: SIM115 - closed in finally
        for spec in reversed(specs):  # twin, logger, then the policy
            cmd = [*_executable(spec.executable), "--ros-args", "--params-file", str(pf),
                   "-r", f"__node:={spec.name}"]
            procs.append((spec.name, subprocess.Popen(cmd, stdout=log, stderr=log)))
        procs.append(("echo", subprocess.Popen([sys.executable, "-c", ECHO_SCRIPT,
                                                args.echo_executor],
                                               stdout=log, stderr=log)))

        rclpy.init()
        node = rclpy.create_node("bench_observer")
        js_stamps: list[float] = []
        cmd_arrivals: list[float] = []
        rtts: list[float] = []
        diag: dict[str, str] = {}
        measuring = [False]

        def wall() -> float:
            return time.time()

        def on_js(msg: JointState) -> None:
            if measuring[0]:
                js_stamps.append(stamp_to_sec(msg.header.stamp))

        def on_cmd(msg: Float64MultiArray) -> None:
            if measuring[0]:
                cmd_arrivals.append(wall())

        def on_pong(msg: Header) -> None:
            if measuring[0]:
                rtts.append(wall() - stamp_to_sec(msg.stamp))

        from diagnostic_msgs.msg import DiagnosticArray

        def on_diag(msg: DiagnosticArray) -> None:
            for st in msg.status:
                if st.name.startswith("policy_node"):
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in st.values})

        node.create_subscription(JointState, "/joint_states", on_js, qos.stream_subscription())
        node.create_subscription(Float64MultiArray, "/pearl/command", on_cmd,
                                 qos.stream_subscription())
        node.create_subscription(Header, "/bench/pong", on_pong, qos.stream_subscription())
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos.status())
        ping = node.create_publisher(Header, "/bench/ping", qos.stream_publisher(PERIOD))
        node.create_timer(PERIOD, lambda: ping.publish(
            Header(stamp=_time_msg(wall()), frame_id="ping")))
        ex = SingleThreadedExecutor()
        ex.add_node(node)

        t_start = time.monotonic()
        print(f"bench_ros: warm-up {args.warmup:.0f} s, then {duration:.0f} s of 20 Hz "
              f"control; bundle: {bundle_note}", flush=True)
        late_at_start = None
        last_print = 0.0
        while time.monotonic() - t_start < args.warmup + duration:
            ex.spin_once(timeout_sec=0.05)
            elapsed = time.monotonic() - t_start
            if not measuring[0] and elapsed >= args.warmup:
                measuring[0] = True
                late_at_start = int(diag.get("late_ticks", "0") or 0)
            if elapsed - last_print >= 30.0:
                last_print = elapsed
                print(f"  {elapsed:5.0f} s: {len(cmd_arrivals)} commands, "
                      f"{len(rtts)} echoes", flush=True)
            for name, proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see "
                                       f"{tmp / 'nodes.log'}")
        measuring[0] = False
        # one more diagnostics period for the final counters
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        node.destroy_node()
        rclpy.try_shutdown()

        # Pair each command with the newest state *published* before it arrived (the twin's
        # stamp), whether or not that state had reached this observer yet: the observer's
        # own delivery order must not decide which state a command answered.
        stamps = np.sort(np.asarray(js_stamps))
        arrivals = np.asarray(cmd_arrivals)
        k = np.searchsorted(stamps, arrivals) - 1
        ok = k >= 0
        latencies = list(arrivals[ok] - stamps[k[ok]])
        gaps = np.diff(cmd_arrivals) if len(cmd_arrivals) > 1 else np.array([])
        late_policy = int(diag.get("late_ticks", "0") or 0) - (late_at_start or 0)
        lat = _stats_ms(latencies)
        echo = _stats_ms(rtts)
        result: dict[str, Any] = {
            "benchmark": "bench_ros",
            "command": "python -m bench.bench_ros " + " ".join(argv or sys.argv[1:]),
            "nice": args.nice,
            "duration_s": duration, "warmup_s": args.warmup, "bundle": bundle_note,
            "process_layout": "twin_node, policy_node, logger_node, echo: one process each",
            "executor": {"graph_nodes": args.executor, "echo": args.echo_executor,
                         "observer": "single"},
            "load_average": os.getloadavg(),
            "commands": len(cmd_arrivals), "expected_commands": int(duration / PERIOD),
            "late_periods_policy": late_policy,
            "command_gaps_over_2_periods": int(np.sum(gaps > 2 * PERIOD)),
            "command_gap_max_ms": float(gaps.max() * 1e3) if gaps.size else float("nan"),
            "latency_state_to_command": lat, "echo_round_trip": echo,
            "ratio_median": lat["median_ms"] / echo["median_ms"],
            "ratio_p99": lat["p99_ms"] / echo["p99_ms"],
            "goal_ratio": 1.5, "goal_late": 0,
            "policy_tick_to_command_p50_ms": float(diag.get("tick_to_command_p50_ms", "nan")),
            "policy_diagnostics": diag,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"commands {result['commands']} (expected ~{result['expected_commands']}), "
              f"late periods (policy) {late_policy}, gaps > 2 periods "
              f"{result['command_gaps_over_2_periods']}, max gap "
              f"{result['command_gap_max_ms']:.1f} ms")
        print(f"state->command latency median {lat['median_ms']:.2f} ms p99 "
              f"{lat['p99_ms']:.2f} ms | echo RTT median {echo['median_ms']:.2f} ms p99 "
              f"{echo['p99_ms']:.2f} ms | ratio median {result['ratio_median']:.2f}x p99 "
              f"{result['ratio_p99']:.2f}x (goal <= 1.5x); policy tick -> command p50 "
              f"{result['policy_tick_to_command_p50_ms']:.2f} ms")
        print(f"wrote {args.out}")
        return 0
    finally:
        for _, proc in reversed(procs):  # echo, policy, logger, twin
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _time_msg(seconds: float) -> Any:
    from builtin_interfaces.msg import Time

    ns = int(seconds * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


if __name__ == "__main__":
    sys.exit(main())
