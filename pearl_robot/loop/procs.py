"""Child processes of the loop: started as a user would start them, stopped by their PID.

Every stage of the loop is a ``pearl-robot`` command in its own process (the firmware emulator,
the robot's adapt graph, the night's graph, the trainer, the bundle check), with its output in
``logs/<name>.log`` next to the run, so a failed stage can be read and rerun by hand: the log
starts with the exact command line. Nothing here is ROS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pearl_robot.errors import PearlRobotError


class StageError(PearlRobotError):
    """A stage of the loop failed; the message names the stage and its log."""


def cli_command(*args: str) -> list[str]:
    """``pearl-robot ARGS`` with this interpreter (works from a checkout and an install)."""
    return [sys.executable, "-m", "pearl_robot.cli", *args]


class Child:
    """One child process writing to its own log file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 niceness: int = 0) -> None:
        """``niceness`` > 0 lowers the child's CPU priority: work that runs on another
        machine in reality (the night's twin, the workstation's trainer) must not starve the
        robot's graph here, whose serial link has 250 ms watchdogs."""
        self.name = name
        self.argv = list(argv)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w", buffering=1)
        self._log.write("$ " + " ".join(self.argv) + "\n")
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=cwd, start_new_session=True,
                                     preexec_fn=(lambda: os.nice(niceness)) if niceness
                                     else None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout_s: float,
                 poll_s: float = 0.1) -> None:
        """Wait until ``predicate()``; StageError if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if not self.alive():
                raise StageError(f"{self.name} exited (status {self.proc.returncode}) before "
                                 f"{what}; its log {self.log_path} ends:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise StageError(f"{self.name}: no {what} after {timeout_s:.0f} s; its log "
                                 f"{self.log_path} ends:\n{self.tail()}")
            time.sleep(poll_s)

    def wait(self, timeout_s: float) -> int:
        """Wait for a normal exit; StageError (after stopping it) past ``timeout_s``."""
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise StageError(f"{self.name} did not finish within {timeout_s:.0f} s; its log "
                             f"{self.log_path} ends:\n{self.tail()}") from None
        self._log.flush()
        return rc

    def check(self, timeout_s: float) -> None:
        """Wait and require exit status 0."""
        rc = self.wait(timeout_s)
        if rc != 0:
            raise StageError(f"{self.name} failed (exit status {rc}); its log {self.log_path} "
                             f"ends:\n{self.tail()}")

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGINT (the nodes stop in order: safe command, log closed), then SIGKILL after
        ``grace_s``. Signals go to this child's PID only."""
        if self.alive():
            try:
                os.kill(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5.0)
            except ProcessLookupError:
                pass
        self._log.flush()
        self._log.close() if not self._log.closed else None
        return self.proc.returncode

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started


def run_stage(name: str, argv: Sequence[str], log_dir: Path, timeout_s: float,
              env: Mapping[str, str] | None = None, niceness: int = 0) -> Child:
    """Run a command to completion (status 0 required); returns the finished child."""
    child = Child(name, argv, log_dir, env=env, niceness=niceness)
    try:
        child.check(timeout_s)
    finally:
        child.stop()
    return child
