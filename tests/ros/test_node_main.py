"""A node process stopped by SIGINT/SIGTERM at any moment of its life exits 0 through
``destroy_node`` with the context still up (``pearl_robot.ros.node_main``).

``ros2 launch`` signals every node the moment a required one dies, so the signal can land while
a node imports, inside its constructor or while it spins; a CI run once saw a twin that ignored
both signals until launch killed it. Each case runs in its own process (signals and the default
rclpy context are per process), the signal sent by the process to itself at a known point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

REPO = Path(__file__).resolve().parents[2]

# A node that reports, on stdout, what happened to it: constructed, ticks, destroyed (and whether
# its context was still up then, i.e. whether a safe command could still have been published).
NODE = textwrap.dedent("""
    import os, signal, sys
    from rclpy.node import Node
    from std_msgs.msg import String
    from pearl_robot.ros.node_main import run_node

    KILL_AT = os.environ["KILL_AT"]
    SIG = getattr(signal, os.environ.get("KILL_SIG", "SIGINT"))

    class Probe(Node):
        def __init__(self):
            super().__init__("probe_node")
            self.pub = self.create_publisher(String, "probe", 10)
            print("constructed", flush=True)
            if KILL_AT == "constructor":
                os.kill(os.getpid(), SIG)
            self.ticks = 0
            self.create_timer(0.01, self._tick)

        def _tick(self):
            self.ticks += 1
            if KILL_AT == "spin" and self.ticks == 3:
                os.kill(os.getpid(), SIG)

        def destroy_node(self):
            ok = self.context.ok()
            if ok:
                self.pub.publish(String(data="safe"))
            print(f"destroyed context_ok={ok} ticks={self.ticks}", flush=True)
            super().destroy_node()

    def main(args=None, stop=None):
        return run_node(Probe, args, stop=stop)
""")


def _run(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "probe_mod.py").write_text(NODE)
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kill_at", ["constructor", "spin"])
def test_a_stop_signal_while_starting_or_running_exits_cleanly(tmp_path: Path, kill_at: str,
                                                               sig: str) -> None:
    res = _run(tmp_path, "import probe_mod, sys; sys.exit(probe_mod.main())",
               KILL_AT=kill_at, KILL_SIG=sig)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "constructed" in res.stdout
    # The node is destroyed with its context up: the policy node's safe command goes out.
    assert "destroyed context_ok=True" in res.stdout, res.stdout + res.stderr
    if kill_at == "constructor":
        assert "ticks=0" in res.stdout  # stopped before it ever ran a callback
    assert "Traceback" not in res.stderr


def test_a_signal_during_the_node_module_import_stops_before_the_node_exists(
        tmp_path: Path) -> None:
    """The console-script entry takes the signals before importing the node module (the slow
    part of a start: MuJoCo, onnxruntime), so a SIGINT there is a request, not a traceback."""
    (tmp_path / "slow_import.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nfrom probe_mod import main\n")
    res = _run(tmp_path, "import sys; from pearl_robot.ros.node_main import _entry; "
               "sys.exit(_entry('slow_import'))", KILL_AT="never")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "constructed" not in res.stdout
    assert "Traceback" not in res.stderr


def test_a_node_that_cannot_start_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    code = ("import sys\nfrom pearl_robot.errors import PearlRobotError\n"
            "from pearl_robot.ros.node_main import run_node\n"
            "def bad():\n    raise PearlRobotError('bundle directory not found: /nope')\n"
            "sys.exit(run_node(bad))\n")
    res = _run(tmp_path, code, KILL_AT="never")
    assert res.returncode == 1
    assert res.stderr.strip() == "[pearl_robot] error: bundle directory not found: /nope"


@pytest.mark.parametrize("executor", ["single", "events"])
def test_the_executor_parameter_picks_what_spins_the_node_and_a_stop_still_exits_cleanly(
        tmp_path: Path, executor: str) -> None:
    """``-p executor:=events`` spins the node on rclpy's EventsExecutor: its timer runs, and a
    SIGINT while spinning still leaves through ``destroy_node`` with the context up."""
    if executor == "events":
        pytest.importorskip("rclpy.experimental", reason="EventsExecutor needs Jazzy or newer")
    code = ("import probe_mod, sys\n"
            f"sys.exit(probe_mod.main(['x', '--ros-args', '-p', 'executor:={executor}']))\n")
    res = _run(tmp_path, code, KILL_AT="spin")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "destroyed context_ok=True ticks=3" in res.stdout, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_an_unknown_executor_is_one_line_naming_the_parameter(tmp_path: Path) -> None:
    code = ("import probe_mod, sys\n"
            "sys.exit(probe_mod.main(['x', '--ros-args', '-p', 'executor:=fast']))\n")
    res = _run(tmp_path, code, KILL_AT="never")
    assert res.returncode == 1
    assert res.stderr.strip() == ("[probe_node] error: executor must be one of single, events, "
                                  "got 'fast'")
