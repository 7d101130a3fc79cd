"""launch_testing checks of `ros2 launch pearl_robot adapt.launch.py` (the installed launch file).

Run by ``tests/ros/test_launch_adapt.py`` through ``launch_test`` (the launch_testing pytest
plugin does not load under pytest 9, see /work/shared/ros-launch-wheels/README.md), after a
``colcon build`` of the checkout; by hand, from a sourced workspace:

    PEARL_LT_DATASET=/tmp/lt-ds PEARL_LT_SWAP_BUNDLE=DIR PEARL_LT_CORRUPT_BUNDLE=DIR \\
        launch_test tests/ros/launch_adapt_checks.py

One launch (the twin at real time, the package's config/adapt.yaml, the packaged bundle)
serves every check, in order: parameters, 20 Hz, e-stop, hot-swap refused, hot-swap applied.
launch_testing then stops the launch (SIGINT to every node) and the post-shutdown checks
read the dataset it left. The file name keeps pytest from collecting it.
"""

from __future__ import annotations

import json
import os
import time
import unittest
from pathlib import Path
from typing import Any, NamedTuple

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import rclpy
import yaml
from ament_index_python.packages import get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from pearl_robot.datalog.reader import check_datasets, manifest_entries
from pearl_robot.ros.graph import build_graph
from pearl_robot.runtime.bundle import read_contract

DATASET = Path(os.environ.get("PEARL_LT_DATASET", "/tmp/pearl-launch-test/dataset"))
SWAP_BUNDLE = os.environ.get("PEARL_LT_SWAP_BUNDLE", "")
CORRUPT_BUNDLE = os.environ.get("PEARL_LT_CORRUPT_BUNDLE", "")
LAUNCH_ARGS = {"dataset_dir": str(DATASET), "episodes": "0", "real_time_factor": "1.0"}
"""The launch arguments under test (the rest take their defaults)."""
RATE_WINDOW_S = 5.0
RATE_TOLERANCE = 0.05
"""/pearl/command's mean rate over RATE_WINDOW_S must be within 5 % of 20 Hz..."""
RATE_WINDOWS = 3
"""...in at least one of this many consecutive windows (a shared host's transient stalls)."""
STARVED_MAX_GAP_S = 0.2
"""On a starved host the longest gap allowed between commands: 4 periods (CI saw 125 ms).
The bridge's command watchdog (100 ms) sends the safe command through a longer one."""
NODES = ("policy_node", "logger_node", "twin_node")


def generate_test_description():
    share = Path(get_package_share_directory("pearl_robot"))
    adapt = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(share / "launch" / "adapt.launch.py")),
        launch_arguments=LAUNCH_ARGS.items())
    return LaunchDescription([adapt, launch_testing.actions.ReadyToTest()])


_VALUE_FIELDS = {
    ParameterType.PARAMETER_BOOL: "bool_value", ParameterType.PARAMETER_INTEGER: "integer_value",
    ParameterType.PARAMETER_DOUBLE: "double_value",
    ParameterType.PARAMETER_STRING: "string_value",
    ParameterType.PARAMETER_BOOL_ARRAY: "bool_array_value",
    ParameterType.PARAMETER_INTEGER_ARRAY: "integer_array_value",
    ParameterType.PARAMETER_DOUBLE_ARRAY: "double_array_value",
    ParameterType.PARAMETER_STRING_ARRAY: "string_array_value",
}


def _python_value(value: ParameterValue) -> Any:
    """rcl_interfaces ParameterValue -> Python (rclpy's own helper is not in every distro)."""
    if value.type == ParameterType.PARAMETER_NOT_SET:
        return None
    got = getattr(value, _VALUE_FIELDS[value.type])
    return list(got) if value.type >= ParameterType.PARAMETER_BOOL_ARRAY else got


class _Probe:
    """A test-side node on its own context: subscriptions that record, blocking service calls."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("launch_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.commands: list[tuple[float, tuple[float, ...]]] = []
        self.tasks: list[tuple[float, dict[str, Any]]] = []
        self.policy_diag: list[tuple[float, dict[str, str], int, str]] = []
        best_effort = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Float64MultiArray, "/pearl/command", self._on_command,
                                      best_effort)
        self.node.create_subscription(String, "/pearl/task", self._on_task, latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.estop_pub = self.node.create_publisher(Bool, "/pearl/estop", latched)

    def _on_command(self, msg: Float64MultiArray) -> None:
        self.commands.append((time.monotonic(), tuple(msg.data)))

    def _on_task(self, msg: String) -> None:
        self.tasks.append((time.monotonic(), json.loads(msg.data)))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("policy_node"):
                values = {kv.key: kv.value for kv in status.values}
                level = status.level[0] if isinstance(status.level, bytes) else status.level
                self.policy_diag.append((time.monotonic(), values, int(level), status.message))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def wait_for(self, predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = predicate()
            if got:
                return got
            self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, srv_type, name: str, request, timeout: float = 10.0):  # noqa: ANN001, ANN201
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available after {timeout:.0f} s")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            if not future.done():
                raise AssertionError(f"service {name} did not answer within {timeout:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def parameters(self, node: str) -> dict[str, Any]:
        names = self.call(ListParameters, f"/{node}/list_parameters",
                          ListParameters.Request()).result.names
        values = self.call(GetParameters, f"/{node}/get_parameters",
                           GetParameters.Request(names=list(names))).values
        return {n: _python_value(v) for n, v in zip(names, values)}

    def set_bundle(self, path: str):  # noqa: ANN201
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path)
        req = SetParameters.Request(parameters=[ParameterMsg(name="bundle", value=value)])
        return self.call(SetParameters, "/policy_node/set_parameters", req).results[0]

    def last_diag(self) -> dict[str, str] | None:
        return self.policy_diag[-1][1] if self.policy_diag else None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def _cpu_quota() -> str:
    """This process's CFS quota (cgroup v2 cpu.max, or v1 quota and period), or n/a."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.max"
            if f.is_file():
                return f.read_text().strip()
        elif "cpu" in controllers.split(","):
            d = Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
            if (d / "cpu.cfs_quota_us").is_file():
                return (f"{(d / 'cpu.cfs_quota_us').read_text().strip()} "
                        f"{(d / 'cpu.cfs_period_us').read_text().strip()}")
    return "n/a"


def _host() -> str:
    """What the host gave the graph: cores, load and the CPU quota."""
    return f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, cpu quota {_cpu_quota()}"


class RateWindow(NamedTuple):
    """One RATE_WINDOW_S window of /pearl/command as the probe saw it, with the policy's own
    /diagnostics counters over the part of it between two diagnostics samples (a NamedTuple:
    launch_test loads this file without a module entry, which dataclasses need)."""

    stamps: list[float]
    """Arrival time of every command in the window (probe's monotonic clock)."""
    period_mean_ms: float
    """The node's own mean tick interval (its last 200 ticks) at the window's end."""
    span_commands: int
    """Commands that arrived between the first and the last diagnostics sample."""
    span_ticks: int
    """The node's tick count over the same span."""
    span_late: int
    """The node's late-period count over the same span."""
    span_s: float
    """The span's length."""
    steal: float
    """Share of the host's CPU time stolen by the hypervisor in the window."""
    host: str
    """Cores, load and CPU quota."""

    @property
    def rate(self) -> float:
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])

    @property
    def gaps(self) -> list[float]:
        return sorted(b - a for a, b in zip(self.stamps, self.stamps[1:]))

    def describe(self) -> str:
        g = self.gaps
        return (f"{len(self.stamps)} messages, {self.rate:.2f} Hz over "
                f"{self.stamps[-1] - self.stamps[0]:.2f} s (wall clock); gaps p50 "
                f"{g[len(g) // 2] * 1e3:.1f} ms, max {g[-1] * 1e3:.1f} ms; node "
                f"period_mean_ms {self.period_mean_ms:.1f}; over {self.span_s:.1f} s: "
                f"{self.span_commands} commands, {self.span_ticks} ticks, {self.span_late} "
                f"late; steal {self.steal:.0%}; host {self.host}")

    def holds_20_hz(self) -> bool:
        return (abs(self.rate - 20.0) < 20.0 * RATE_TOLERANCE
                and abs(self.period_mean_ms - 50.0) < 50.0 * RATE_TOLERANCE)

    def not_starved_but_sound(self) -> str | None:
        """Why this window is not a sound node on a starved host (None when it is)."""
        g = self.gaps
        if abs(g[len(g) // 2] - 0.05) > 0.05 * RATE_TOLERANCE:
            return "the median gap is not the 50 ms period (the timer runs at another rate)"
        if g[-1] > STARVED_MAX_GAP_S:
            return f"a gap over {STARVED_MAX_GAP_S * 1e3:.0f} ms (a pause, not a stall)"
        if abs(self.span_commands - self.span_ticks) > 2:
            return "commands received differ from the node's ticks (commands lost)"
        missed = round(self.span_s / 0.05) - self.span_ticks
        if missed > 2 and self.span_late < missed - 2:
            return f"{missed} periods got no tick but the node counted {self.span_late} late"
        return None


def _measure_window(probe: _Probe) -> RateWindow:
    probe.commands.clear()
    n_diag, cpu0 = len(probe.policy_diag), _cpu_times()
    probe.spin_for(RATE_WINDOW_S)
    cpu1 = _cpu_times()
    stamps = [t for t, _ in probe.commands]
    diag = [d for d in probe.policy_diag[n_diag:] if d[0] > stamps[0]]
    if len(diag) < 2:
        raise AssertionError(f"{len(diag)} policy /diagnostics samples in a "
                             f"{RATE_WINDOW_S:.0f} s window (1 Hz expected)")
    (t0, first, *_), (t1, last, *_) = diag[0], diag[-1]
    delta = [b - a for a, b in zip(cpu0, cpu1)]
    return RateWindow(
        stamps=stamps, period_mean_ms=float(last["period_mean_ms"]),
        span_commands=sum(1 for t in stamps if t0 < t <= t1),
        span_ticks=int(last["ticks"]) - int(first["ticks"]),
        span_late=int(last["late_ticks"]) - int(first["late_ticks"]), span_s=t1 - t0,
        steal=delta[7] / max(1, sum(delta)) if len(delta) > 7 else 0.0, host=_host())


class TestAdaptLaunch(unittest.TestCase):
    """Active checks, while the launch runs (unittest runs them in name order)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.probe = _Probe()
        # Up: every node answers its parameter service and the policy reports on /diagnostics.
        for node in NODES:
            cls.probe.call(ListParameters, f"/{node}/list_parameters",
                           ListParameters.Request(), timeout=60.0)
        cls.probe.wait_for(lambda: cls.probe.policy_diag, 30.0, "the policy's /diagnostics")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.probe.close()

    def _running_episode(self, timeout: float = 20.0, max_step: int = 20) -> dict[str, str]:
        """Wait for a diagnostics sample of an episode early enough to outlast a check."""
        def early() -> dict[str, str] | None:
            d = self.probe.last_diag()
            ok = d and d["state"] == "running" and int(d["step"]) <= max_step
            return d if ok else None
        return self.probe.wait_for(early, timeout, f"an episode at step <= {max_step}")

    def test_1_parameters_come_from_config_and_launch_arguments(self) -> None:
        share = Path(get_package_share_directory("pearl_robot"))
        config = yaml.safe_load((share / "config" / "adapt.yaml").read_text())
        expected = {s.name: s.parameters for s in build_graph(LAUNCH_ARGS)}
        for node in NODES:
            live = self.probe.parameters(node)
            for name, value in expected[node].items():
                self.assertEqual(live[name], value, f"{node}.{name}")
            from_file = config[node]["ros__parameters"]
            for name, value in from_file.items():
                if name in ("bundle", "session_dir", "dataset_dir", "episodes", "mjcf"):
                    continue  # resolved or overridden below
                self.assertEqual(live[name], value, f"{node}.{name} differs from adapt.yaml")
        policy, logger = self.probe.parameters("policy_node"), self.probe.parameters("logger_node")
        self.assertEqual(logger["dataset_dir"], str(DATASET))           # launch argument
        self.assertEqual(policy["session_dir"], str(DATASET))           # follows the log
        self.assertEqual(policy["episodes"], 0)                         # launch argument
        self.assertEqual(Path(policy["bundle"]).parent, share / "models")  # packaged default
        self.assertEqual(policy["reset_service"], "/pearl/robot/reset")  # the twin's
        self.assertFalse(policy["use_sim_time"])                        # real_time_factor 1
        self.assertEqual(self.probe.parameters("twin_node")["real_time_factor"], 1.0)

    def test_2_command_runs_at_20_hz(self) -> None:
        # Measured once the graph has settled (the first seconds share the CPU with the
        # other processes' start-up), over windows that span an episode boundary. One window
        # of RATE_TOLERANCE around 20 Hz, in rate and in the node's own mean period, passes.
        # A starved host (CI: steal time, a CPU quota) drops whole periods in every window
        # (16.8-18.3 Hz seen, gaps of 100-125 ms); that is the machine, which bench/bench_ros
        # measures, not the node. Such a window still passes when the node is right where it
        # can be: its timer runs at 20 Hz (median gap), every tick it counts reaches
        # /pearl/command, it reports the periods it missed as late, and no gap outlasts the
        # starved-host bound. A node at the wrong rate fails the median; one that pauses at
        # episode boundaries fails the gap bound; one that drops commands or hides its missed
        # periods fails the counts.
        self.probe.wait_for(lambda: len(self.probe.commands) > 40, 20.0, "/pearl/command")
        failures = []
        for _ in range(RATE_WINDOWS):
            w = _measure_window(self.probe)
            print(f"/pearl/command: {w.describe()}")
            if w.holds_20_hz():
                return
            why = w.not_starved_but_sound()
            if why is None:
                print("/pearl/command: the host dropped periods; the node counted every one "
                      "as late and lost no command (passes as a starved host)")
                return
            failures.append(f"{w.describe()} -> {why}")
        self.fail(f"/pearl/command off 20 Hz +-{RATE_TOLERANCE:.0%} in every "
                  f"{RATE_WINDOW_S:.0f} s window, and not a sound node on a starved host: "
                  + "; ".join(failures))

    def test_3_estop_latches_and_clears_through_the_service(self) -> None:
        p = self.probe
        self._running_episode()
        p.estop_pub.publish(Bool(data=True))
        p.wait_for(lambda: p.last_diag()["state"] == "estop", 5.0, "state estop")
        p.commands.clear()
        p.spin_for(1.0)
        self.assertGreater(len(p.commands), 10)
        self.assertTrue(all(v == 0.0 for _, c in p.commands for v in c), "non-zero command "
                        "while the e-stop is latched")
        refused = p.call(SetBool, "/pearl/run_episodes", SetBool.Request(data=True))
        self.assertFalse(refused.success)
        self.assertIn("e-stop", refused.message)
        p.estop_pub.publish(Bool(data=False))  # a false on the topic does not clear it
        p.spin_for(1.5)
        self.assertEqual(p.last_diag()["state"], "estop")
        self.assertEqual(p.policy_diag[-1][2], 1, "the e-stop is a WARN on /diagnostics")
        cleared = p.call(Trigger, "/pearl/clear_estop", Trigger.Request())
        self.assertTrue(cleared.success)
        self.assertEqual(cleared.message, "e-stop cleared")
        p.wait_for(lambda: p.last_diag()["state"] == "running", 15.0, "episodes again")
        p.commands.clear()
        p.wait_for(lambda: any(v != 0.0 for _, c in p.commands for v in c), 5.0,
                   "a policy command after the clear")
        ends = [t for _, t in p.tasks if t["state"] == "estop"]
        self.assertTrue(ends, "the running episode was not closed as estop on /pearl/task")

    def test_4_hot_swap_to_a_corrupt_bundle_is_refused_and_the_old_one_kept(self) -> None:
        p = self.probe
        self.assertTrue(CORRUPT_BUNDLE, "PEARL_LT_CORRUPT_BUNDLE is not set")
        before = p.parameters("policy_node")["bundle"]
        sha = p.last_diag()["bundle_sha256"]
        result = p.set_bundle(CORRUPT_BUNDLE)
        if result.successful:  # the contract parses: the full validation refuses it
            p.wait_for(lambda: p.last_diag()["swap"] == "failed", 20.0, "swap failed")
            self.assertEqual(p.policy_diag[-1][2], 1, "a refused swap is a WARN")
            self.assertIn("hot-swap refused", p.policy_diag[-1][3])
        p.wait_for(lambda: p.parameters("policy_node")["bundle"] == before, 5.0,
                   "the bundle parameter back at the running bundle")
        episode = int(self._running_episode()["episode"])
        p.wait_for(lambda: int(p.last_diag()["episode"]) > episode, 20.0, "the next episode")
        self.assertEqual(p.last_diag()["bundle_sha256"], sha)

    def test_5_hot_swap_takes_effect_at_the_next_episode_boundary(self) -> None:
        p = self.probe
        self.assertTrue(SWAP_BUNDLE, "PEARL_LT_SWAP_BUNDLE is not set")
        new_sha = read_contract(SWAP_BUNDLE).contract_sha256
        # Right at an episode start (its /pearl/task announcement), 3 s before its end.
        mark = len(p.tasks)
        started = p.wait_for(lambda: next((t for _, t in p.tasks[mark:]
                                           if t["state"] == "running"), None),
                             20.0, "an episode start on /pearl/task")
        old_sha = started["model_sha"]
        self.assertNotEqual(old_sha, new_sha)
        result = p.set_bundle(SWAP_BUNDLE)
        self.assertTrue(result.successful, result.reason)
        # Mid-episode the running model stays ...
        mark = len(p.policy_diag)
        p.wait_for(lambda: len(p.policy_diag) > mark, 3.0, "a /diagnostics sample")
        now = p.policy_diag[-1][1]
        if int(now["episode"]) == started["episode"]:
            self.assertEqual(now["bundle_sha256"], old_sha[:16])
        # ... and the next episode runs the new one, announced on /pearl/task.
        p.wait_for(lambda: p.last_diag()["bundle_sha256"] == new_sha[:16], 20.0,
                   "the new bundle id on /diagnostics")
        self.assertGreater(int(p.last_diag()["episode"]), started["episode"])
        swapped = [t for _, t in p.tasks if t["model_sha"] == new_sha]
        self.assertTrue(swapped and swapped[0]["state"] in ("resetting", "running"))
        self.assertTrue(all(t["episode"] > started["episode"] for t in swapped
                            if t["state"] == "running"), swapped)
        during = [t for _, t in p.tasks if t["episode"] == started["episode"]]
        self.assertTrue(all(t["model_sha"] == old_sha for t in during), during)
        self.assertEqual(p.parameters("policy_node")["bundle"], SWAP_BUNDLE)
        # Run a little into the new episode so the log holds it.
        p.spin_for(1.0)


@launch_testing.post_shutdown_test()
class TestAfterSigint(unittest.TestCase):
    """launch_testing ended the launch: SIGINT to every node."""

    def test_every_node_exited_cleanly(self, proc_info) -> None:  # noqa: ANN001
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_the_dataset_is_closed_and_checks_clean(self) -> None:
        entries = manifest_entries(DATASET)
        self.assertGreaterEqual(len(entries), 3)
        reasons = {e["end_reason"] for e in entries}
        self.assertLessEqual(reasons, {"truncated", "estop", "shutdown"}, reasons)
        self.assertIn("estop", reasons)
        self.assertEqual(entries[-1]["end_reason"], "shutdown", "SIGINT mid-episode")
        self.assertTrue(all(e["status"] == "complete" for e in entries))
        self.assertEqual(len({e["model_sha"] for e in entries}), 2, "both bundles logged")
        self.assertEqual(list((DATASET / "episodes").glob("*.part")), [])
        self.assertEqual(check_datasets([DATASET]), [])
