"""The packages follow the data one way (docs/architecture.md, "Layers"): which package may
import which at module level, read from the source with ``ast``, and no circle among them.

Module-level imports are what make a circle (and what a robot's computer loads); an import
inside a function is how a package reaches a heavier one only when asked (the task families
build their MuJoCo envs lazily, a CLI loads the exporter), so those are listed apart and only
the ones named in LAZY are allowed. tests/test_import_boundaries.py checks the other side: which
third-party modules (torch, mujoco, rclpy) each entry point ends up loading.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pearl_robot"

# package -> packages it may import at module level (errors is everyone's)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "robot": set(),                                   # what the robot is: numpy only
    "core": set(),                                    # the learner's math (torch)
    "datalog": {"robot"},                             # the log format: no learner, no ROS
    "hardware": {"robot"},                            # the serial link to the device
    "tasks": {"robot"},                               # task families (numpy)
    "twin": {"robot", "tasks"},                       # MuJoCo envs implementing tasks' MetaEnv
    "runtime": {"core", "robot", "tasks"},            # the robot's belief + ONNX actor
    "train": {"core", "datalog", "robot", "tasks"},   # meta-training, offline retraining
    "export": {"core", "robot", "runtime", "tasks"},  # networks -> bundle (+ parity)
    "loop": {"datalog", "robot", "runtime", "tasks"},  # the sim-to-real mission
    "ros": {"datalog", "hardware", "robot", "runtime", "tasks", "twin"},  # thin adapters
    "cli": set(), "demo": set(),                      # entry points: all imports lazy
}
# lazy (function-level) imports against the layer order, each with its reason
LAZY: dict[str, set[str]] = {
    "tasks": {"twin"},               # MuJoCo families build their envs only when asked
    "twin": {"tasks"},               # render/vector helpers resolve a family by name
    "hardware": {"twin"},            # the emulator simulates the device with the twin
    "train": {"export", "twin"},     # train --export-bundle; the twin adaptation report
    "export": {"datalog"},           # parity on recorded transitions
    "loop": {"ros", "twin"},         # the mission drives the graph; the report renders the twin
}


def _imports(root: Path = ROOT
             ) -> tuple[dict[str, set[tuple[str, str]]], dict[str, set[tuple[str, str]]]]:
    top: dict[str, set[tuple[str, str]]] = defaultdict(set)
    lazy: dict[str, set[tuple[str, str]]] = defaultdict(set)

    def visit(node: ast.AST, src: str, where: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names: list[str] = []
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "pearl_robot" and len(parts) > 1 and parts[1] != src:
                    (lazy if in_function else top)[src].add((parts[1], where))
            visit(child, src, where, inner)

    for f in root.rglob("*.py"):
        rel = f.relative_to(root)
        src = rel.parts[0].removesuffix(".py")
        if src == "__init__":
            continue
        visit(ast.parse(f.read_text(), str(f)), src, str(rel), False)
    return top, lazy


def test_module_level_imports_follow_the_layers() -> None:
    top, _ = _imports()
    bad = sorted(f"{where}: {src} -> {dst}" for src, edges in top.items()
                 for dst, where in edges if dst != "errors"
                 and dst not in ALLOWED.get(src, set()))
    assert not bad, "imports against docs/architecture.md's layers:\n" + "\n".join(bad)


def test_function_level_imports_against_the_layers_are_the_listed_ones() -> None:
    _, lazy = _imports()
    bad = sorted(f"{where}: {src} -> {dst}" for src, edges in lazy.items()
                 for dst, where in edges if dst != "errors"
                 and dst not in ALLOWED.get(src, set()) | LAZY.get(src, set())
                 and src not in ("cli", "demo"))
    assert not bad, "unlisted lazy imports:\n" + "\n".join(bad)


def _cycle(top: dict[str, set[tuple[str, str]]]) -> list[str] | None:
    """One circle of module-level imports between packages, or None."""
    graph = {src: {d for d, _ in edges if d != src} for src, edges in top.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [])
            if found:
                return found
    return None


def test_no_import_circle_between_packages() -> None:
    found = _cycle(_imports()[0])
    assert found is None, " -> ".join(found)


def test_the_scanner_reports_a_circle_and_a_lazy_import(tmp_path: Path) -> None:
    """The checks themselves, on a two-package tree with a circle through module level and
    one import inside a function."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "twin").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("from pearl_robot.twin.b import B\n")
    (tmp_path / "twin" / "b.py").write_text(
        "import pearl_robot.tasks.a\n\ndef f():\n    from pearl_robot.ros import graph\n")
    top, lazy = _imports(tmp_path)
    assert {d for d, _ in top["tasks"]} == {"twin"}
    assert {d for d, _ in lazy["twin"]} == {"ros"}
    assert _cycle(top) in (["tasks", "twin", "tasks"], ["twin", "tasks", "twin"])


# modules that import each other (both lazily), each pair with its reason
MUTUAL: set[tuple[str, str]] = {
    # the family builds the twin's env when asked; the env reads the family's task spec
    ("pearl_robot.tasks.twin_arm", "pearl_robot.twin.twin_arm_env"),
}


def _module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the pearl_robot modules it imports anywhere (also ``importlib`` by name)."""
    names = {".".join(f.relative_to(root.parent).with_suffix("").parts).removesuffix(
        ".__init__"): f for f in root.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for mod, f in names.items():
        got: set[str] = set()
        for n in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                got |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
            elif isinstance(n, ast.Import):
                got |= {a.name for a in n.names}
            elif isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "import_module" \
                    and n.args and isinstance(n.args[0], ast.Constant):
                got.add(str(n.args[0].value))
        out[mod] = {g for g in got if g in names and g != mod}
    return out


def test_no_two_modules_import_each_other_but_the_listed_ones() -> None:
    """The registry and the MuJoCo families once did (through ``importlib``)."""
    g = _module_imports()
    pairs = {tuple(sorted((a, b))) for a in g for b in g[a] if a in g.get(b, set())}
    assert pairs == MUTUAL, sorted(pairs)
