"""`make setup` tells the user what is happening (issue 12, item 8): what it installs, the time
and disk to expect, the free disk, numbered steps with elapsed time, and pip's own progress.
Checked in dry-run mode: nothing is installed, no venv is made."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "setup-venv.sh"


def _dry_run(venv: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(venv)], cwd=REPO, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "SETUP_DRY_RUN": "1", **env})


def test_setup_says_time_disk_and_steps_and_pip_is_not_silenced(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = _dry_run(venv)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"about 4 minutes and about 2 GB", out), out
    assert re.search(r"Disk: \d+ MB free", out), out
    steps = re.findall(r"^\[setup (\d)/4, \d+m\d\ds\]", out, flags=re.M)
    assert steps == ["1", "2", "3", "4"], out
    pip_lines = [ln for ln in out.splitlines() if " -m pip install" in ln]
    assert len(pip_lines) == 3 and all("--progress-bar on" in ln for ln in pip_lines)
    assert not any(re.search(r"\s-q(\s|$)", ln) for ln in pip_lines), pip_lines
    assert any("torch==2.13.0" in ln for ln in pip_lines)  # the exact CPU pin, on its own
    assert any('.[train,ros,distributed,dev]' in ln for ln in pip_lines)
    assert not venv.exists()


def test_setup_warns_when_the_disk_is_too_small(tmp_path: Path) -> None:
    proc = _dry_run(tmp_path / "venv", SETUP_NEED_MB=str(10**9))
    assert proc.returncode == 0
    assert "warning: only" in proc.stderr and "MB free" in proc.stderr


def test_make_setup_runs_the_script() -> None:
    proc = subprocess.run(["make", "-n", "-B", "setup", "VENV=/nonexistent/venv"], cwd=REPO,
                          text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "bash tools/setup-venv.sh /nonexistent/venv" in proc.stdout
