"""The `pearl-robot` entry point: help, version, unknown subcommands, one-line errors."""

import re
import subprocess
import sys

from pearl_robot import __version__
from pearl_robot.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for s in SUBCOMMANDS:
        assert s.name in out


def test_version_and_unknown_subcommand(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert main(["fly"]) == 2
    assert "unknown subcommand 'fly'" in capsys.readouterr().err


def test_expected_errors_are_one_line_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pearl_robot.cli", "evaluate",
                          str(tmp_path / "missing.pt")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"pearl-robot evaluate: error: checkpoint not found: {tmp_path / 'missing.pt'}"]


# --------------------------------------------------------------------------- --help examples

def _examples() -> list[tuple[str, str]]:
    """(subcommand, command line) for every `pearl-robot ...` example in the --help texts,
    without synopsis lines (PATH, DIR... placeholders) or elided ones (`...`)."""
    import importlib
    import re

    found = []
    for s in SUBCOMMANDS:
        doc = importlib.import_module(s.module).__doc__ or ""
        for line in doc.splitlines():
            m = re.match(r"^\s+(pearl-robot\s.*?)(?:\s+#.*|\s{3,}[a-z(.].*)?$", line)
            if not m:
                continue
            cmd = m.group(1).strip()
            if "..." in cmd or re.search(r"\b[A-Z][A-Z_]{2,}\b", cmd):
                continue
            found.append((s.name, cmd))
    return found


def test_help_examples_parse_and_name_real_paths():
    """Every example in a --help text parses with its subcommand's parser, reads only
    paths that exist in the repository (or a run directory's checkpoints/ layout), and
    writes nothing into the tracked tree (outputs go under runs/, which git ignores)."""
    import argparse
    import importlib
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    by_name = {s.name: s for s in SUBCOMMANDS}
    examples = _examples()
    assert len(examples) >= 12, examples
    for name, cmd in examples:
        argv = shlex.split(cmd)[1:]
        assert argv[0] == name, cmd
        parser = argparse.ArgumentParser(prog=f"pearl-robot {name}")
        importlib.import_module(by_name[name].module).add_arguments(parser)
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit as exc:  # argparse's way to refuse
            raise AssertionError(f"--help example does not parse: {cmd}") from exc
        outputs = {str(getattr(args, a)) for a in ("out", "export_bundle", "plot", "out_dir",
                                                   "json", "dataset_dir")
                   if getattr(args, a, None) not in (None, "", True, False)}
        for out in outputs:  # a bare file name (`--plot eval.png`) lands in the cwd
            assert out.startswith(("runs/", "/tmp/", "/data/")), \
                f"{cmd}: writes {out} outside runs/ (the git-ignored output directory)"
        for tok in argv[1:]:
            if tok.startswith("-") or "/" not in tok:
                continue
            if tok in outputs:
                continue
            if tok.startswith("runs/"):
                assert re.fullmatch(r"runs/[\w.-]+/checkpoints/(final|latest)\.pt", tok), \
                    f"{cmd}: {tok} is not a path `pearl-robot train` writes"
            elif tok.split("/")[0] in ("config", "models", "sim", "launch"):
                assert (root / tok).exists(), f"{cmd}: {tok} does not exist"


def test_help_examples_that_run_offline_run(tmp_path, capsys):
    """The examples that need neither a trained run, a robot, ROS nor minutes of training
    run as written, from the repository root."""
    import os
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runnable = [cmd for _, cmd in _examples()
                if cmd.startswith("pearl-robot bundle ") or cmd.endswith("--print-graph")]
    assert len(runnable) >= 3, runnable
    old = os.getcwd()
    os.chdir(root)
    try:
        for cmd in runnable:
            assert main(shlex.split(cmd)[1:]) == 0, (cmd, capsys.readouterr().err)
    finally:
        os.chdir(old)


def test_evaluate_on_a_run_directory_says_what_to_pass(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert main(["evaluate", str(run)]) == 1
    assert "is a directory, not a checkpoint file; pass a .pt file" in capsys.readouterr().err
    (run / "checkpoints" / "final.pt").write_bytes(b"")
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"pass {run / 'checkpoints' / 'final.pt'}" in err and "not found" not in err


def test_help_names_where_outputs_go(capsys):
    """`pearl-robot --help` names runs/ and the default of each output; the adapt log's
    default there is the one the graph really uses, and `adapt --help` says it too."""
    from pearl_robot.ros.adapt_cli import default_dataset_dir
    from pearl_robot.ros.graph import build_graph

    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    dataset = default_dataset_dir()
    assert dataset.startswith("runs/") and f"  {dataset}/" in top
    assert "runs/plots/" in top and "runs/<family>-<time>/" in top
    logger = next(s for s in build_graph({}) if s.executable == "logger_node")
    assert logger.parameters["dataset_dir"].endswith(dataset)
    import contextlib

    with contextlib.suppress(SystemExit):
        main(["adapt", "--help"])
    assert f"Default file's value: {dataset}" in " ".join(capsys.readouterr().out.split())


def test_adapt_says_why_a_resumed_run_finished_no_episode(capsys):
    """`adapt --episodes 2` on a dataset whose session already ran 3: the count is the
    schedule's total, so nothing runs; the summary says so instead of a bare 'no episode'."""
    from pearl_robot.ros import adapt_cli

    adapt_cli._print_summary([], (), (3, 2))
    out = capsys.readouterr().out
    assert "already run 3 of its --episodes 2" in out and "new --dataset-dir" in out
    adapt_cli._print_summary([], (), (0, 2))  # nothing ran for another reason: no guess
    assert capsys.readouterr().out.startswith("no episode finished; dataset: ")
