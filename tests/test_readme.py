"""The README's commands, checked as written.

- Every command in a ``bash`` block: a ``make`` target exists; a ``pearl-robot`` command
  parses with its subcommand's parser, reads only paths that exist in the repository, that an
  earlier README command writes, or that live on the robot (``/data``, ``/dev``, ``/opt``),
  and writes only under ``runs/`` (git-ignored) or onto the robot's disks.
- The workstation block runs in order, from a scratch directory, as written: only network
  sizes and iteration counts are shrunk (``--set``/``--iterations`` appended) and the robot's
  nights ``/data/night-*`` are twin logs made here. ``emulate`` (runs until Ctrl-C) and
  ``make model`` (minutes) are only parsed.

The robot block (``ros2 launch ...``, ``pearl-robot adapt --robot serial ...``) runs against
the firmware emulator in tests/ros/test_launch_adapt.py; ``make demo``/``make test`` are what
CI runs.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from pearl_robot.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
ROBOT_PATHS = ("/data/", "/dev/", "/opt/")
"""Paths on the robot's computer: examples of what a user passes, not files of this repo."""

OUTPUT_ARGS = ("out", "export_bundle", "plot", "json", "out_dir", "dataset_dir")


def readme_blocks() -> dict[str, list[str]]:
    """Section heading -> the command lines of its ``bash`` blocks (continuations joined,
    comments dropped)."""
    out: dict[str, list[str]] = {}
    heading, block, pending = "", None, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if block is None:
            if line.startswith("#"):
                heading = line.lstrip("# ").strip()
            elif line.strip() == "```bash":
                block = out.setdefault(heading, [])
            continue
        if line.strip() == "```":
            block = None
            continue
        line = pending + re.sub(r"(^|\s+)#.*$", "", line).strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1]
        elif line:
            block.append(line)
    return out


def _pearl_argv(line: str) -> list[str] | None:
    argv = shlex.split(line)
    if argv[:3] == ["ros2", "run", "pearl_robot"] and argv[3:4] == ["pearl-robot"]:
        argv = argv[3:]
    return argv[1:] if argv and argv[0] == "pearl-robot" else None


def _parse(argv: list[str]) -> argparse.Namespace:
    by_name = {s.name: s for s in SUBCOMMANDS}
    assert argv[0] in by_name, argv
    parser = argparse.ArgumentParser(prog=f"pearl-robot {argv[0]}")
    importlib.import_module(by_name[argv[0]].module).add_arguments(parser)
    try:
        return parser.parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"README command does not parse: pearl-robot {argv}") from exc


def _outputs(args: argparse.Namespace) -> set[str]:
    return {str(getattr(args, a)) for a in OUTPUT_ARGS
            if getattr(args, a, None) not in (None, "", True, False)}


def test_readme_has_the_sections_this_test_reads() -> None:
    blocks = readme_blocks()
    assert {"The two commands", "What you type on the robot", "On the workstation"} <= set(
        blocks), list(blocks)
    assert sum(_pearl_argv(c) is not None for cs in blocks.values() for c in cs) >= 11


def test_readme_commands_parse_read_real_paths_and_write_under_runs() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    written: list[str] = []
    for line in [c for cs in readme_blocks().values() for c in cs]:
        if line.startswith("make "):
            for target in shlex.split(line)[1:]:
                assert target.split("=")[0] in targets or "=" in target, line
            continue
        argv = _pearl_argv(line)
        if argv is None:
            continue
        args = _parse(argv)
        outputs = _outputs(args)
        for out in outputs:
            assert out.startswith(("runs/", *ROBOT_PATHS)), \
                f"{line}: writes {out} outside runs/ (the git-ignored output directory)"
        for tok in argv[1:]:
            if tok.startswith("-") or "/" not in tok or tok in outputs:
                continue
            if tok.startswith(ROBOT_PATHS):
                continue
            if tok.startswith("runs/"):
                assert any(tok == w or tok.startswith(w.rstrip("/") + "/") for w in written), \
                    f"{line}: reads {tok}, which no earlier README command writes"
            else:
                assert (ROOT / tok).exists(), f"{line}: {tok} does not exist"
        if argv[0] == "train" and getattr(args, "out", None) is not None:
            written.append(str(args.out))  # checkpoints/latest.pt, final.pt under it
        if argv[0] == "export":
            written.append(str(args.out_dir))
        if getattr(args, "export_bundle", None) is not None:
            written.append(str(args.export_bundle))


# A twin-arm run of seconds: the README's commands with these appended.
TINY = ["--no-progress", "--no-tensorboard",
        "--set", "pearl.hidden_sizes=[16, 16]", "--set", "pearl.encoder_hidden_sizes=[16]",
        "--set", "pearl.meta_batch=2", "--set", "pearl.batch_size=16",
        "--set", "pearl.embedding_batch_size=8", "--set", "train.num_train_steps_per_itr=2",
        "--set", "train.num_tasks_sample=1", "--set", "train.num_initial_steps=8",
        "--set", "train.num_steps_prior=8", "--set", "train.num_steps_posterior=0",
        "--set", "train.num_extra_rl_steps_posterior=0", "--set", "train.checkpoint_every=1",
        "--set", "train.eval_every=1", "--set", "train.num_eval_train_tasks=0",
        "--set", "train.num_steps_per_eval=8", "--set", "train.max_path_length=8"]


def _twin_night(path: Path, tasks: tuple[int, ...]) -> None:
    """A short night of twin-arm episodes logged the way the robot logs them."""
    import numpy as np

    from pearl_robot.datalog.schema import TransitionLayout
    from pearl_robot.datalog.writer import DatasetWriter, WriterConfig
    from pearl_robot.runtime.episodes import drive_env
    from pearl_robot.runtime.schedule import OvernightSession, ScheduleConfig
    from pearl_robot.tasks.registry import make_family

    family = make_family("twin-arm")
    env = family.make_env(seed=0)
    env.family = family.name
    rng = np.random.default_rng(0)
    with DatasetWriter(path, TransitionLayout(env.obs_dim, env.action_dim, 0),
                       WriterConfig(commit_every=20, commit_interval_s=0.05)) as w:
        session = OvernightSession(ScheduleConfig(task_indices=tasks, episode_steps=10,
                                                  max_episodes=len(tasks)),
                                   family.tasks, path)
        drive_env(session, env, lambda obs, cmd: rng.uniform(-1, 1, env.action_dim), w,
                  max_ticks=10_000)
        assert w.flush()


def test_readme_workstation_block_runs_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    """`On the workstation`, in order: meta-train, resume, evaluate, export, bundle check,
    data info, retrain from logs without --config. Fails on the point-robot fallback the
    retrain had before it took its config from --init."""
    pytest.importorskip("torch")
    pytest.importorskip("mujoco")
    pytest.importorskip("onnxruntime")
    lines = readme_blocks()["On the workstation"]
    nights = sorted({tok for line in lines for tok in shlex.split(line)
                     if tok.startswith("/data/")})
    assert nights, lines
    local = {n: str(tmp_path / "robot" / Path(n).name) for n in nights}
    for i, n in enumerate(nights):
        _twin_night(Path(local[n]), (3 + 2 * i, 4 + 2 * i))
    (tmp_path / "work").mkdir()
    for d in ("config", "sim"):
        (tmp_path / "work" / d).symlink_to(ROOT / d)
    monkeypatch.chdir(tmp_path / "work")
    ran = []
    for line in lines:
        argv = _pearl_argv(line)
        if argv is None or argv[0] == "emulate":
            continue
        argv = [local.get(tok, tok) for tok in argv]
        if argv[0] == "train":
            if "--iterations" in argv:
                argv[argv.index("--iterations") + 1] = "2"
            else:
                argv += ["--iterations", "1"]
            if "--resume" not in argv and "--init" not in argv:
                argv += TINY
            else:
                argv += ["--no-progress", "--no-tensorboard"]
        if argv[0] == "evaluate":
            argv += ["--episodes", "2", "--repeats", "1"]
        rc = main(argv)
        out = capsys.readouterr()
        assert rc == 0, (line, out.err[-2000:])
        ran.append((argv[0], out.out))
    assert [name for name, _ in ran] == ["train", "train", "evaluate", "export", "bundle",
                                         "data", "train"]
    work = tmp_path / "work"
    assert (work / "runs" / "twin" / "checkpoints" / "final.pt").is_file()
    assert (work / "runs" / "twin" / "eval.png").is_file()
    assert (work / "runs" / "twin" / "bundle" / "contract.json").is_file()
    assert (work / "runs" / "retrained" / "bundle" / "contract.json").is_file()
    assert "config: from --init runs/twin/checkpoints/final.pt (family twin-arm" in ran[-1][1]
    # nothing outside runs/ (and the two links) in the directory the commands ran from
    assert sorted(p.name for p in work.iterdir()) == ["config", "runs", "sim"]
