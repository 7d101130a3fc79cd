"""`make colcon-check`: build the package with colcon the way a ROS workspace does, and check
the install space a robot would get (`ros2 run pearl_robot <node>`, `ros2 launch pearl_robot
adapt.launch.py`).

The tracked files (``git ls-files``) are copied into ``<tmp>/src/pearl_robot`` so the build
never writes into the checkout, then ``colcon build`` runs (colcon-core + colcon-ros from PyPI:
``pip install colcon-common-extensions colcon-ros``) and the install space is checked for:

- the ament index marker ``share/ament_index/resource_index/packages/pearl_robot``;
- ``share/pearl_robot/package.xml``, ``launch/adapt.launch.py``, ``config/adapt.yaml`` and the
  twin model ``sim/arm3.xml``;
- the node executables ``lib/pearl_robot/{policy_node,logger_node,twin_node,bridge_node}``
  (and ``pearl-robot``), executable, each a console script pointing at ``<module>:main``;
- the installed package resolving its files through the ament index: with
  ``AMENT_PREFIX_PATH`` set to the install space and the checkout out of ``sys.path``,
  ``pearl_robot.ros.graph`` finds the installed ``config/adapt.yaml`` and builds the graph,
  the console scripts' entry points load, and the twin finds its installed ``sim/`` model.

Where the ros2 CLI is installed (a ROS distro, or the launch wheels `make setup` installs from
../shared/ros-launch-wheels), the install space is also used the way a ROS user does, with
``AMENT_PREFIX_PATH`` and ``PYTHONPATH`` as ``source install/setup.bash`` sets them:
``ros2 pkg executables pearl_robot`` lists the nodes and ``pearl-robot``; ``ros2 run pearl_robot
pearl-robot --help`` and ``ros2 run pearl_robot pearl-robot adapt --print-graph`` run the CLI
(colcon installs console scripts to ``lib/pearl_robot``, so ``pearl-robot`` is reached through
``ros2 run``, not PATH); ``ros2 launch pearl_robot adapt.launch.py --show-args`` loads the
installed launch file. ``tests/ros/test_launch_adapt.py`` builds its workspace with
:func:`build_workspace` too.

Exit code 0 when every check passes; each failure is printed with what was expected.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pearl_robot"
NODES = ("policy_node", "logger_node", "twin_node", "bridge_node")
SHARE_FILES = ("package.xml", "launch/adapt.launch.py", "config/adapt.yaml", "sim/arm3.xml")


def _copy_sources(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


class ColconError(RuntimeError):
    """colcon is missing or the build failed (the message holds colcon's output)."""


def build_workspace(ws: Path) -> Path:
    """Copy the tracked sources to ``ws/src/pearl_robot``, ``colcon build`` them; the install
    base (``ws/install``)."""
    _copy_sources(ws / "src" / PACKAGE)
    exe = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    if not Path(exe).exists():
        raise ColconError("colcon is not installed: pip install colcon-common-extensions "
                          "colcon-ros")
    build = subprocess.run(
        [exe, "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
         "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
         "--event-handlers", "console_direct-"],
        cwd=ws, capture_output=True, text=True)
    if build.returncode != 0:
        raise ColconError(f"colcon build failed (rc {build.returncode}):\n"
                          f"{build.stdout[-2000:]}\n{build.stderr[-4000:]}")
    return ws / "install"


def sourced_env(install: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``source install/setup.bash`` gives for this package: the prefix on
    ``AMENT_PREFIX_PATH`` and its site-packages (not the checkout) on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    prefix = install / PACKAGE
    site = sorted(prefix.glob("lib/python3*/site-packages"))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        filter(None, [str(prefix), env.get("AMENT_PREFIX_PATH", "")]))
    env["PYTHONPATH"] = str(site[0]) if site else ""
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


LAUNCH_TOOLS = ("launch", "launch_ros", "launch_testing", "launch_testing_ros", "ros2cli",
                "ros2launch", "rosidl_runtime_py", "composition_interfaces")
"""Import names the launch tests need (the wheels in ../shared/ros-launch-wheels, or a distro)."""


def launch_tools() -> dict[str, str | None]:
    """Import name -> installed version ('distro' when importable without metadata), None when
    missing."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    dists = packages_distributions()
    out: dict[str, str | None] = {}
    for name in LAUNCH_TOOLS:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:  # None: a namespace package, e.g. ./launch/
            out[name] = None
            continue
        try:
            out[name] = version(dists.get(name, [name])[0])
        except PackageNotFoundError:
            out[name] = "distro"
    return out


def ros2_cli() -> str | None:
    """The ``ros2`` executable (distro or launch wheels), or None."""
    if importlib.util.find_spec("ros2cli") is None:
        return None
    return shutil.which("ros2") or (str(Path(sys.executable).with_name("ros2"))
                                    if Path(sys.executable).with_name("ros2").exists()
                                    else None)


def check_ros2_cli(install: Path, ros2: str) -> list[str]:
    """Problems using the install space through the ros2 CLI (empty: all good)."""
    env = sourced_env(install)
    problems: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ros2, *args], cwd=install, env=env, capture_output=True,
                              text=True, timeout=120)

    res = run("pkg", "executables", PACKAGE)
    listed = {line.split()[-1] for line in res.stdout.splitlines() if line.strip()}
    if res.returncode != 0 or not {*NODES, "pearl-robot"} <= listed:
        problems.append(f"ros2 pkg executables {PACKAGE}: {sorted(listed)} "
                        f"(rc {res.returncode}) {res.stderr.strip()[-300:]}")
    res = run("run", PACKAGE, "pearl-robot", "--help")
    if res.returncode != 0 or "adapt" not in res.stdout:
        problems.append(f"ros2 run {PACKAGE} pearl-robot --help: rc {res.returncode} "
                        f"{res.stderr.strip()[-300:]}")
    res = run("run", PACKAGE, "pearl-robot", "adapt", "--print-graph")
    try:
        nodes = [n["name"] for n in json.loads(res.stdout)]
    except ValueError:
        nodes = []
    if res.returncode != 0 or nodes != ["policy_node", "logger_node", "twin_node"]:
        problems.append(f"ros2 run {PACKAGE} pearl-robot adapt --print-graph: rc "
                        f"{res.returncode}, nodes {nodes} {res.stderr.strip()[-300:]}")
    res = run("launch", PACKAGE, "adapt.launch.py", "--show-args")
    if res.returncode != 0 or "'bundle':" not in res.stdout:
        problems.append(f"ros2 launch {PACKAGE} adapt.launch.py --show-args: rc "
                        f"{res.returncode} {res.stderr.strip()[-300:]}")
    return problems


def check_install(install: Path) -> list[str]:
    """Problems in an install space (empty: all good)."""
    problems: list[str] = []
    prefix = install / PACKAGE
    marker = prefix / "share/ament_index/resource_index/packages" / PACKAGE
    if not marker.is_file():
        problems.append(f"ament index marker missing: {marker}")
    for rel in SHARE_FILES:
        if not (prefix / "share" / PACKAGE / rel).is_file():
            problems.append(f"share/{PACKAGE}/{rel} missing")
    for node in (*NODES, "pearl-robot"):
        exe = prefix / "lib" / PACKAGE / node
        if not exe.is_file():
            problems.append(f"executable lib/{PACKAGE}/{node} missing")
            continue
        if not os.access(exe, os.X_OK):
            problems.append(f"lib/{PACKAGE}/{node} is not executable")
        text = exe.read_text(errors="replace")
        if f"'{node}'" not in text and f"pearl_robot.ros.{node}" not in text:
            problems.append(f"lib/{PACKAGE}/{node} is not the {node} console script")
    site = sorted(prefix.glob("lib/python3*/site-packages"))
    if not site or not (site[0] / PACKAGE / "ros" / "graph.py").is_file():
        problems.append("python package not installed under lib/python3*/site-packages")
        return problems
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["AMENT_PREFIX_PATH"] = str(prefix)
    env["PYTHONPATH"] = str(site[0])
    probe = (
        "import sys, pearl_robot.ros.graph as g\n"
        f"assert g.__file__.startswith({str(site[0])!r}), g.__file__\n"
        "p = g.default_params_file()\n"
        f"assert str(p).startswith({str(prefix)!r}), p\n"
        "specs = g.build_graph({})\n"
        "from importlib.metadata import distribution\n"
        "eps = {e.name: e for e in distribution('pearl-robot').entry_points\n"
        "       if e.group == 'console_scripts'}\n"
        f"for node in {NODES!r}:\n"
        "    assert eps[node].value == f'pearl_robot.ros.node_main:{node}', eps[node]\n"
        "    assert callable(eps[node].load()), node\n"
        "from pearl_robot.twin.robot_spec import sim_dir\n"
        f"assert str(sim_dir()).startswith({str(prefix)!r}), f'twin model from {{sim_dir()}}'\n"
        "print(p, [s.executable for s in specs])\n")
    res = subprocess.run([sys.executable, "-c", probe], cwd=install, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        problems.append("installed package does not resolve its share files: "
                        + (res.stderr.strip().splitlines() or ["?"])[-1])
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    p.add_argument("--launch-tools", action="store_true",
                   help="only report the ROS launch tools' versions (exit 1 if any is missing)")
    p.add_argument("--quiet", action="store_true", help="with --launch-tools: print nothing")
    args = p.parse_args(argv)
    if args.launch_tools:
        tools = launch_tools()
        if not args.quiet:
            print("ROS launch tools: " + ", ".join(f"{k} {v or 'MISSING'}"
                                                   for k, v in tools.items()))
        return 0 if all(tools.values()) else 1
    ws = Path(tempfile.mkdtemp(prefix="pearl-colcon-"))
    try:
        t0 = time.perf_counter()
        try:
            install = build_workspace(ws)
        except ColconError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"colcon build: {time.perf_counter() - t0:.1f} s")
        problems = check_install(install)
        ros2 = ros2_cli()
        if ros2 is None:
            print("ros2 CLI not installed: `ros2 run` / `ros2 launch` from the install space "
                  "not checked")
        elif not problems:
            problems += check_ros2_cli(install, ros2)
            if not problems:
                print(f"ros2 CLI ({ros2}): ros2 pkg executables, ros2 run {PACKAGE} "
                      "pearl-robot --help / adapt --print-graph, ros2 launch --show-args OK")
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        if not problems:
            print(f"install space OK: ament marker, {', '.join(SHARE_FILES)}, "
                  f"lib/{PACKAGE}/{{{','.join(NODES)}}}, share files resolved via the ament "
                  "index")
        return 1 if problems else 0
    finally:
        if args.keep:
            print(f"workspace kept: {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
