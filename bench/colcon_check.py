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

Exit code 0 when every check passes; each failure is printed with what was expected.
"""

from __future__ import annotations

import argparse
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


def _colcon() -> list[str]:
    exe = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    if not Path(exe).exists():
        raise SystemExit("colcon is not installed: pip install colcon-common-extensions "
                         "colcon-ros")
    return [exe]


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
        "    assert eps[node].value == f'pearl_robot.ros.{node}:main', eps[node]\n"
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
    args = p.parse_args(argv)
    ws = Path(tempfile.mkdtemp(prefix="pearl-colcon-"))
    try:
        _copy_sources(ws / "src" / PACKAGE)
        t0 = time.perf_counter()
        build = subprocess.run(
            [*_colcon(), "--log-base", str(ws / "log"), "build", "--base-paths",
             str(ws / "src"), "--build-base", str(ws / "build"), "--install-base",
             str(ws / "install"), "--event-handlers", "console_direct-"],
            cwd=ws, capture_output=True, text=True)
        print(build.stdout[-2000:])
        if build.returncode != 0:
            print(build.stderr[-4000:], file=sys.stderr)
            print(f"colcon build failed (rc {build.returncode})", file=sys.stderr)
            return 1
        print(f"colcon build: {time.perf_counter() - t0:.1f} s")
        problems = check_install(ws / "install")
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
