"""The `pearl-robot` entry point: help, version, unknown subcommands, one-line errors."""

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
