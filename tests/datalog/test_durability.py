"""Durability: SIGKILL the writer process at random moments, full disks, read-only storage.

The kill test runs a child process that writes deterministic synthetic episodes as fast as the
writer takes them and kills it with SIGKILL after a random delay, 24 times; each restart runs
recovery. Afterwards every episode in the manifest is listed once, intact (its transitions are
exactly the ones the generator makes, from step 0, contiguous), closed episodes are complete,
the crashed ones are recovered up to their last complete chunk or quarantined, no unfinished
file is left and numbering never went back.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datalog_synthetic import LAYOUT, episode_length, episode_matrix, task_of, transition

from pearl_robot.datalog.dataset import DatasetPaths, LogStorageError, read_manifest
from pearl_robot.datalog.reader import check_datasets, load_datasets
from pearl_robot.datalog.writer import DatasetWriter, LogLevel, WriterConfig

CHILD = Path(__file__).with_name("_writer_child.py")
N_KILLS = 24


def _spawn(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _check_dataset_invariants(root: Path, final: bool) -> list[dict]:
    manifest = read_manifest(DatasetPaths(root))
    assert not manifest.bad_lines
    entries = manifest.entries
    ids = [e["episode"] for e in entries]
    assert len(ids) == len(set(ids)), f"episode listed twice: {ids}"
    listed = {f["path"] for e in entries for f in e["files"]}
    on_disk = {f"episodes/{p.name}" for p in (root / "episodes").iterdir()}
    if final:
        assert not manifest.torn_tail
        assert on_disk == listed, f"unlisted files {on_disk - listed}"
    for e in entries:
        assert e["status"] in ("complete", "recovered", "quarantined")
        if e["status"] == "complete":
            assert e["transitions"] == episode_length(e["episode"]), e
            assert e["truncated"] and e["end_reason"] == "truncated"
        if e["status"] == "quarantined":
            assert e["transitions"] == 0 and e["quarantined"]
        assert sum(f["transitions"] for f in e["files"]) == e["transitions"]
    return entries


@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_loses_no_closed_episode(tmp_path: Path) -> None:
    root = tmp_path / "night"
    rng = random.Random(20261124)
    previous_lines: list[bytes] = []
    kills_while_writing = 0
    for i in range(N_KILLS):
        proc = _spawn(root)
        try:
            if i % 4 == 3:
                # kill at a random moment after spawn: during imports, recovery or writing
                time.sleep(rng.uniform(0.05, 0.8))
            else:
                line = proc.stdout.readline() if proc.stdout else ""
                assert line.startswith("READY"), (line, proc.stderr.read() if proc.stderr
                                                  else "")
                time.sleep(rng.uniform(0.02, 0.35))
                kills_while_writing += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        # the manifest is append-only: complete lines from before are never changed
        raw = (root / "manifest.jsonl").read_bytes() if (root / "manifest.jsonl").exists() \
            else b""
        lines = raw.splitlines(keepends=True)
        complete = [ln for ln in lines if ln.endswith(b"\n")]
        assert complete[: len(previous_lines)] == previous_lines
        previous_lines = complete
        _check_dataset_invariants(root, final=False)
    assert kills_while_writing >= 18
    # the next start (here: a writer that is opened and closed) recovers the last crash
    with DatasetWriter(root, LAYOUT, WriterConfig(robot="kill-test")) as w:
        first_new = w.next_episode_id()
    entries = _check_dataset_invariants(root, final=True)
    ids = [e["episode"] for e in entries]
    assert first_new == max(ids) + 1
    statuses = [e["status"] for e in entries]
    assert statuses.count("complete") >= 20, statuses
    assert "recovered" in statuses  # kills do land mid-episode
    # every usable episode holds exactly the generated transitions, from step 0, contiguous
    loaded = load_datasets([root], verify_sha=True, use_cache=False)
    assert not [p for p in loaded.problems if p.severity == "error"], loaded.problems
    for info in loaded.episodes:
        if not info.usable:
            assert info.status == "quarantined"
            continue
        t = loaded.tasks[info.task_key]
        rows = t.episode == info.uid
        n = int(rows.sum())
        assert n == info.transitions
        expected = LAYOUT.unpack_batch(episode_matrix(info.episode, n))
        np.testing.assert_array_equal(t.obs[rows], expected.obs)
        np.testing.assert_array_equal(t.action[rows], expected.action)
        np.testing.assert_array_equal(t.step[rows], np.arange(n))
        assert t.task["index"] == info.episode % 5
    # numbering is continuous: ids were handed out in order, none skipped by the writer itself
    assert ids == sorted(ids)
    assert not [p for p in check_datasets([root]) if p.severity == "error"]


class _FailingFile:
    """A segment file whose writes start failing with ``err`` after ``budget`` bytes (the
    injected equivalent of a disk filling up or an I/O error)."""

    def __init__(self, path: str, budget: list[int], err: int) -> None:
        self._fh = open(path, "xb")
        self._budget = budget
        self._err = err

    def write(self, data: bytes) -> int:
        if self._budget[0] < len(data):
            raise OSError(self._err, os.strerror(self._err), self._fh.name)
        self._budget[0] -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_write_error_stops_logging_cleanly_and_next_start_recovers(tmp_path: Path,
                                                                   err: int) -> None:
    budget = [20_000]
    cfg = WriterConfig(commit_every=4, commit_interval_s=0.01)
    w = DatasetWriter(tmp_path, LAYOUT, cfg,
                      opener=lambda p: _FailingFile(p, budget, err))  # type: ignore[arg-type]
    accepted = 0
    for ep in range(40):
        w.set_task(task_of(ep))
        for s in range(episode_length(ep)):
            accepted += w.write(transition(ep, s))
        w.flush()
        if not w.status().accepting:
            break
    st = w.status()
    assert st.level == LogLevel.ERROR and not st.accepting
    reason = "disk full" if err == errno.ENOSPC else "I/O error"
    assert reason in st.message and "recovered at the next start" in st.message
    assert not w.write(transition(99, 0)) and w.status().rejected >= 1
    w.close()
    # the closed episodes are intact; the one that hit the error is recovered at the next start
    with DatasetWriter(tmp_path, LAYOUT, cfg) as w2:
        assert [e.status for e in w2.recovery.episodes] in (["recovered"], ["quarantined"])
        assert w2.status().level == LogLevel.WARN and "recovered" in w2.status().message
    loaded = load_datasets([tmp_path], verify_sha=True)
    assert not [p for p in loaded.problems if p.severity == "error"]
    complete = [e for e in loaded.episodes if e.status == "complete"]
    assert complete and all(e.transitions == episode_length(e.episode) for e in complete)
    assert sum(e.transitions for e in loaded.episodes) <= accepted


def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                         capture_output=True)
    return res.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_real_full_disk_warns_then_stops_with_clean_files(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "size=600k"):
        pytest.skip("needs root to mount a small tmpfs (the injected ENOSPC test covers it)")
    try:
        cfg = WriterConfig(commit_every=4, commit_interval_s=0.01, warn_free_bytes=400_000,
                           min_free_bytes=150_000, disk_check_interval_s=0.01)
        w = DatasetWriter(mnt / "ds", LAYOUT, cfg)
        levels = set()
        for ep in range(2000):
            w.set_task(task_of(ep))
            for s in range(episode_length(ep)):
                w.write(transition(ep, s))
            w.flush()
            time.sleep(0.012)
            w.flush()
            levels.add(w.status().level)
            if not w.status().accepting:
                break
        st = w.status()
        w.close()
        assert LogLevel.WARN in levels
        assert st.level == LogLevel.ERROR and not st.accepting
        assert "MiB free" in st.message and "restart" in st.message
        entries = read_manifest(DatasetPaths(mnt / "ds")).entries
        assert entries and entries[-1]["end_reason"] in ("disk_low", "truncated")
        assert not list((mnt / "ds" / "episodes").glob("*.part"))
        loaded = load_datasets([mnt / "ds"], verify_sha=True, use_cache=False)
        assert not [p for p in loaded.problems if p.severity == "error"]
        # a new start refuses clearly instead of logging into a full disk
        with pytest.raises(LogStorageError, match="MiB free"):
            DatasetWriter(mnt / "ds", LAYOUT, cfg)
    finally:
        _umount(mnt)


def test_read_only_storage_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "size=1m"):
        pytest.skip("needs root to mount a tmpfs read-only")
    try:
        cfg = WriterConfig(commit_every=4, warn_free_bytes=100_000, min_free_bytes=10_000)
        with DatasetWriter(mnt / "ds", LAYOUT, cfg) as w:
            for s in range(episode_length(1)):
                w.write(transition(1, s))
        before = {p: p.read_bytes() for p in (mnt / "ds").rglob("*") if p.is_file()}
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(LogStorageError, match="read-only file system"):
            DatasetWriter(mnt / "ds", LAYOUT, cfg)
        with pytest.raises(LogStorageError, match="read-only file system"):
            DatasetWriter(mnt / "new", LAYOUT, cfg)
        after = {p: p.read_bytes() for p in (mnt / "ds").rglob("*") if p.is_file()}
        assert before == after
        # the reader still works on read-only media (cache goes to the user cache dir)
        loaded = load_datasets([mnt / "ds"])
        assert loaded.episodes[0].transitions == episode_length(1)
    finally:
        _umount(mnt)


def test_real_enospc_then_operator_frees_space_and_restart_recovers(tmp_path: Path) -> None:
    """No free-space margin (min_free_bytes=0): the file system itself says ENOSPC mid-write.
    Logging stops with a clear error, a restart on the full disk is refused clearly, and once
    space is freed the restart recovers the cut episode and the dataset checks clean."""
    mnt = tmp_path / "tiny"
    if not _mount_tmpfs(mnt, "size=400k"):
        pytest.skip("needs root to mount a small tmpfs (the injected ENOSPC test covers it)")
    try:
        ballast = mnt / "ballast.bin"
        ballast.write_bytes(b"\0" * 120_000)  # what the operator will delete
        cfg = WriterConfig(commit_every=4, commit_interval_s=0.01, warn_free_bytes=0,
                           min_free_bytes=0)
        w = DatasetWriter(mnt / "ds", LAYOUT, cfg)
        for ep in range(5000):
            w.set_task(task_of(ep))
            for s in range(episode_length(ep)):
                w.write(transition(ep, s))
            w.flush()
            if not w.status().accepting:
                break
        st = w.status()
        w.close()
        assert st.level == LogLevel.ERROR and "disk full" in st.message, st.message
        # a restart on the still-full disk: refused with a clear error, or it starts (recovery
        # fitted) and stops again at the first write; either way nothing is corrupted
        try:
            w2 = DatasetWriter(mnt / "ds", LAYOUT, cfg)
        except LogStorageError as exc:
            assert "disk full" in str(exc)
        else:
            for s in range(episode_length(10_000)):
                w2.write(transition(10_000, s))
            w2.flush()
            w2.close()
            assert w2.status().level == LogLevel.ERROR and "disk full" in w2.status().message
        ballast.unlink()  # the operator frees space
        with DatasetWriter(mnt / "ds", LAYOUT, cfg) as w3:
            assert w3.recovery.episodes, "the cut episode is recovered or quarantined"
            first = w3.next_episode_id()
            for s in range(episode_length(first)):
                assert w3.write(transition(first, s))
            assert w3.flush() and w3.status().accepting
        entries = read_manifest(DatasetPaths(mnt / "ds")).entries
        ids = [e["episode"] for e in entries]
        assert len(ids) == len(set(ids)) and ids[-1] == first, ids[-5:]
        assert entries[-1]["status"] == "complete"
        assert not list((mnt / "ds" / "episodes").glob("*.part"))
        assert not [p for p in check_datasets([mnt / "ds"]) if p.severity == "error"]
    finally:
        _umount(mnt)
