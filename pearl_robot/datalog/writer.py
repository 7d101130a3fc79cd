"""The episode log writer: durable MCAP episodes written off the control path.

The control thread calls :meth:`DatasetWriter.write` (a copy and a queue put, never I/O, never
blocking); a writer thread encodes, writes and group-commits: every ``commit_every`` records or
``commit_interval_s`` seconds, whichever comes first, it closes the open MCAP chunk and fsyncs,
so a crash (SIGKILL, power cut) loses at most the records since the last commit. A closed episode
is made durable in this order: segment finished and fsynced, ``.part`` renamed to ``.mcap``,
directory fsynced, manifest line appended and fsynced. Whatever a crash interrupts is finished
by :func:`~pearl_robot.datalog.recovery.recover_dataset`, which the writer runs at start.

When logging cannot persist (disk full, read-only file system, I/O error) the writer stops
accepting transitions, keeps what is on disk recoverable, and says so in :meth:`status` (level
ERROR, ``accepting=False``): the ROS logger node turns that into a /diagnostics error, and the
episode manager holds the robot in its safe state instead of collecting data nobody keeps.
Before that, free space below ``warn_free_bytes`` raises a WARN with the hours left at the
current rate, and below ``min_free_bytes`` the open episode is closed cleanly and logging stops.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from pearl_robot.datalog.cdr import TransitionCodec
from pearl_robot.datalog.dataset import (
    DatasetPaths,
    LogStorageError,
    WriterLock,
    append_manifest,
    ensure_header,
    file_episode_ids,
    fsync_dir,
    index_manifest,
    segment_name,
    storage_error,
)
from pearl_robot.datalog.episode import EpisodeStats, manifest_entry
from pearl_robot.datalog.mcap_writer import COMPRESSION, SegmentFile
from pearl_robot.datalog.recovery import RecoveryReport, recover_dataset
from pearl_robot.datalog.schema import SchemaError, TransitionLayout
from pearl_robot.errors import ConfigError

log = logging.getLogger(__name__)

MiB = 1 << 20


@dataclass(frozen=True)
class WriterConfig:
    """How the episode log is written. Defaults suit a 20 Hz robot on an SD card or SSD."""

    robot: str = "robot"
    """Robot name recorded in the dataset header and every manifest line."""
    chunk_size: int = 64 * 1024
    """Largest MCAP chunk (bytes, uncompressed); a commit closes the chunk earlier."""
    compression: str = "lz4"
    """Chunk compression: none, lz4 or zstd (zstd needs the ``zstandard`` package)."""
    commit_every: int = 20
    """Group commit: fsync after this many transitions (1 s at 20 Hz)."""
    commit_interval_s: float = 0.5
    """...or after this long with uncommitted records: the most a crash can lose."""
    max_segment_bytes: int = 64 * MiB
    """Rotate to a new segment file of the same episode beyond this size."""
    max_segment_s: float = 900.0
    """Rotate to a new segment beyond this much logged time (long or endless episodes)."""
    queue_size: int = 20_000
    """Records buffered between the control thread and the writer (~17 min at 20 Hz);
    when full, new records are dropped, counted and reported (never blocking control)."""
    warn_free_bytes: int = 1024 * MiB
    """Below this much free space status turns WARN (with the hours left)."""
    min_free_bytes: int = 64 * MiB
    """Below this the open episode is closed cleanly and logging stops (ERROR)."""
    disk_check_interval_s: float = 5.0
    """How often the writer thread checks free space."""

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSION:
            raise ConfigError(f"compression must be one of {sorted(COMPRESSION)}, got "
                              f"{self.compression!r}")
        if self.compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError as exc:
                raise ConfigError("compression 'zstd' needs the zstandard package; use "
                                  "'lz4' or install zstandard") from exc
        for name in ("chunk_size", "commit_every", "max_segment_bytes", "queue_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("commit_interval_s", "max_segment_s", "disk_check_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_free_bytes > self.warn_free_bytes:
            raise ConfigError("min_free_bytes must not exceed warn_free_bytes")


class LogLevel(IntEnum):
    """Same values as diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


class LogStatus(NamedTuple):
    """A snapshot for /diagnostics (``key_values`` gives the DiagnosticStatus values)."""

    level: LogLevel
    message: str
    accepting: bool
    """False once logging cannot persist: stop collecting, hold the robot safe."""
    dataset: str
    episode: int
    """Open episode id, -1 when none."""
    episodes_closed: int
    transitions_written: int
    transitions_committed: int
    queue_depth: int
    dropped: int
    """Records dropped because the queue was full."""
    rejected: int
    """Records refused because logging had stopped."""
    free_bytes: int
    seconds_since_commit: float
    last_commit_ms: float
    """Duration of the last group commit (write + fsync)."""

    def key_values(self) -> dict[str, str]:
        return {k: (f"{v:.3f}" if isinstance(v, float) else str(v))
                for k, v in self._asdict().items() if k not in ("level", "message")}


class _HashingFile:
    """File wrapper that hashes every byte written, so a segment's sha256 is known at close
    without reading it back."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self.sha.update(data)
        return len(data)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()


@dataclass
class _OpenEpisode:
    episode: int
    source: int
    task: dict[str, Any]
    model_sha: str
    stats: EpisodeStats
    dropped_at_start: int
    segment: int = 0
    seg: SegmentFile | None = None
    seg_hash: _HashingFile | None = None
    seg_start_ns: int = 0
    seg_messages: int = 0
    n: int = 0
    """Transitions written (the MCAP sequence number of the next one)."""
    pending: list[np.ndarray] = field(default_factory=list)
    """Transitions not yet folded into ``stats`` (folded per commit group, vectorized)."""
    files: list[dict[str, Any]] = field(default_factory=list)

    def fold_stats(self) -> None:
        if self.pending:
            self.stats.add_batch(np.stack(self.pending))
            self.pending.clear()


class _Transition(NamedTuple):
    """A packed transition from :meth:`DatasetWriter.write`, routed already."""

    vec: np.ndarray
    log_time_ns: int
    target: int
    """The episode id it is logged under."""


class _RawTransition(NamedTuple):
    """Serialized CDR from :meth:`DatasetWriter.write_cdr`, decoded in the writer thread."""

    data: bytes
    log_time_ns: int
    target: int
    """The episode id, or -1 when the layout is checked only after decoding."""


class _SetTask(NamedTuple):
    task: dict[str, Any]
    model_sha: str | None
    log_time_ns: int


class _Begin(NamedTuple):
    episode: int
    source: int
    """The episode id the producer used (differs from ``episode`` when remapped)."""
    task: dict[str, Any] | None
    model_sha: str | None
    log_time_ns: int


class _End(NamedTuple):
    reason: str


class _Flush(NamedTuple):
    done: threading.Event


class _Stop(NamedTuple):
    pass


_Message = _Transition | _RawTransition | _SetTask | _Begin | _End | _Flush | _Stop
"""What the control thread hands the writer thread, in order, through the queue."""


class DatasetWriter:
    """Writes one dataset directory; one per process (a lock file enforces it).

    Construction creates or opens the dataset, checks its layout, recovers what a previous
    crash left, and starts the writer thread. Thread-safe: any thread may call ``write``,
    ``set_task``, ``begin_episode``, ``end_episode``, ``status``.

    Episodes follow the transitions: a transition whose ``episode`` field differs from the
    open episode's closes it and opens the next; one with ``terminated`` or ``truncated`` set
    closes it after being written. ``begin_episode``/``end_episode`` do the same explicitly.
    An episode id that the dataset already used is never overwritten: the episode is logged
    under a fresh id with ``source_episode`` recording the original.
    """

    def __init__(self, root: Path | str, layout: TransitionLayout,
                 config: WriterConfig | None = None, *,
                 opener: Callable[[str], IO[bytes]] | None = None,
                 on_episode_closed: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config or WriterConfig()
        self.layout = layout
        self.paths = DatasetPaths(Path(root))
        self.session = uuid.uuid4().hex[:12]
        self._codec = TransitionCodec(layout)
        self._opener = opener or (lambda p: open(p, "xb"))
        self._on_closed = on_episode_closed
        try:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self.paths.episodes.mkdir(exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, f"cannot create dataset directory {self.paths.root}"
                                ) from exc
        self._lock = WriterLock(self.paths)
        self._lock.acquire()
        try:
            try:
                ensure_header(self.paths, layout, self.config.robot)
            except OSError as exc:
                raise storage_error(exc, f"cannot write {self.paths.header}") from exc
            self.recovery: RecoveryReport = recover_dataset(
                self.paths.root, session=self.session, robot=self.config.robot,
                chunk_size=self.config.chunk_size, compression=self.config.compression)
            index = index_manifest(self.paths)
            self._used = index.episodes | file_episode_ids(self.paths)
            self._closed_count = index.entries
            free = shutil.disk_usage(self.paths.root).free
            if free < self.config.min_free_bytes:
                raise LogStorageError(
                    f"{self.paths.root}: only {free / MiB:.0f} MiB free, below min_free_bytes "
                    f"({self.config.min_free_bytes / MiB:.0f} MiB); free space first")
        except BaseException:
            self._lock.release()
            raise
        self._ids_lock = threading.Lock()
        self._route_src = self._route_dst = -(2**62)
        self._episode_index = layout.slices()["episode"].start
        self._term_index = layout.slices()["terminated"].start
        self._trunc_index = layout.slices()["truncated"].start
        self._episode_cdr_offset = len(self._codec.prefix) + 8 * self._episode_index
        self._closed_ids: set[int] = set()
        self._thread_remap: dict[int, int] = {}
        # a deque + event instead of queue.Queue: append/popleft are atomic under the GIL
        # and cost ~0.1 us, where Queue's lock and conditions cost microseconds per record
        self._queue: collections.deque[_Message] = collections.deque()
        self._wake = threading.Event()
        self._sleeping = False
        self._accepting = True
        self._level = LogLevel.OK
        self._message = "logging"
        self._free = free
        self._written = 0
        self._committed = 0
        self._dropped = 0
        self._rejected = 0
        self._pending = 0
        self._last_commit = time.monotonic()
        self._last_commit_ms = 0.0
        self._last_disk_check = 0.0
        self._rate_t0 = time.monotonic()
        self._rate_bytes = 0
        self._ep: _OpenEpisode | None = None
        self._task: dict[str, Any] = {}
        self._model_sha = ""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="datalog-writer", daemon=True)
        self._thread.start()
        if not self.recovery.clean:
            self._set(LogLevel.WARN, f"recovered after a crash: {self.recovery.summary()}")

    # ------------------------------------------------------------------ control-side API

    def write(self, vec: np.ndarray, log_time_ns: int | None = None) -> bool:
        """Queue one packed transition. Never blocks; False when not accepted (see status)."""
        if not self._accepting:
            self._rejected += 1
            return False
        arr = np.array(vec, dtype=np.float64, copy=True)
        if arr.shape != (self.layout.size,):
            raise SchemaError(f"transition has shape {arr.shape}, the dataset layout needs "
                              f"({self.layout.size},)")
        target = self._route_checked(float(arr[self._episode_index]))
        if target < 0:
            return False
        return self._put(_Transition(arr, log_time_ns or time.time_ns(), target))

    def write_cdr(self, data: bytes, log_time_ns: int | None = None) -> bool:
        """Queue a transition received as serialized CDR (rclpy ``raw=True``): decoded in the
        writer thread; a message with another layout is rejected there and reported."""
        if not self._accepting:
            self._rejected += 1
            return False
        target = -1
        if self._codec.matches(data):
            target = self._route_checked(
                float(np.frombuffer(data, "<f8", 1, self._episode_cdr_offset)[0]))
            if target < 0:
                return False
        return self._put(_RawTransition(bytes(data), log_time_ns or time.time_ns(), target))

    def _route_checked(self, episode: float) -> int:
        """:meth:`_route` for a finite, non-negative integer episode field, else -1 (the
        transition is refused and counted: it belongs to no episode)."""
        if not (np.isfinite(episode) and episode >= 0 and episode == int(episode)):
            self._rejected += 1
            self._set(LogLevel.WARN, f"transition refused: episode field {episode!r} is not a "
                      "non-negative integer (a tick outside an episode?)")
            return -1
        return self._route(int(episode))

    def _route(self, source: int) -> int:
        """Episode id a transition carrying ``source`` is logged under: ``source`` itself unless
        the dataset already used it (then the next free id, with ``source_episode`` kept)."""
        with self._ids_lock:
            if source != self._route_src:
                target = source if source not in self._used else max(self._used) + 1
                self._used.add(target)
                self._route_src, self._route_dst = source, target
            return self._route_dst

    def set_task(self, task: dict[str, Any], model_sha: str | None = None) -> None:
        """The current task (the /pearl/task JSON). If it names the open episode it updates
        that episode's task; otherwise it applies to the episodes that follow."""
        json.dumps(task)  # must be JSON-serialisable; raises TypeError here, not in the thread
        self._put(_SetTask(dict(task), model_sha, time.time_ns()), force=True)

    def begin_episode(self, task: dict[str, Any] | None = None, episode: int | None = None,
                      model_sha: str | None = None) -> int:
        """Open an episode now (closing an open one) and return its id: ``episode`` when
        given and unused, else the next free id. Pack this id into the transitions."""
        with self._ids_lock:
            if episode is None or episode in self._used:
                new = max(self._used) + 1 if self._used else 0
            else:
                new = int(episode)
            self._used.add(new)
            self._route_src, self._route_dst = new, new
        self._put(_Begin(new, new, None if task is None else dict(task), model_sha,
                         time.time_ns()), force=True)
        return new

    def end_episode(self, reason: str = "stopped") -> None:
        """Close the open episode (no-op when none is open)."""
        self._put(_End(reason), force=True)

    def episodes_on_disk(self) -> str:
        """What the dataset already holds, for a start-up line: episode count and id range."""
        with self._ids_lock:
            used = sorted(self._used)
        if not used:
            return "no episodes on disk yet"
        return f"{len(used)} episode id(s) on disk, {used[0]}..{used[-1]}"

    def next_episode_id(self) -> int:
        with self._ids_lock:
            return max(self._used) + 1 if self._used else 0

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued so far is written and committed."""
        done = threading.Event()
        if not self._put(_Flush(done), force=True):
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Close the open episode (``end_reason`` shutdown), stop the thread, release the
        lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._put(_Stop(), force=True)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("%s: writer thread did not stop within %.0f s; the open episode is "
                      "recovered at the next start", self.paths.root, timeout)
        self._lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> LogStatus:
        ep = self._ep
        return LogStatus(
            level=self._level, message=self._message, accepting=self._accepting,
            dataset=str(self.paths.root), episode=ep.episode if ep else -1,
            episodes_closed=self._closed_count, transitions_written=self._written,
            transitions_committed=self._committed, queue_depth=len(self._queue),
            dropped=self._dropped, rejected=self._rejected, free_bytes=self._free,
            seconds_since_commit=time.monotonic() - self._last_commit,
            last_commit_ms=self._last_commit_ms)

    # ------------------------------------------------------------------ internals

    def _put(self, item: _Message, force: bool = False) -> bool:
        """Hand an item to the writer thread; transitions (not ``force``) are dropped and
        counted when ``queue_size`` are already waiting, control items never are."""
        if not force and len(self._queue) >= self.config.queue_size:
            self._dropped += 1
            if self._level < LogLevel.WARN or self._dropped == 1:
                self._set(LogLevel.WARN, f"{self._dropped} transition(s) dropped: writer "
                          "queue full (storage too slow?)")
            return False
        self._queue.append(item)
        if self._sleeping:
            self._wake.set()
        return True

    def _get(self, timeout: float) -> _Message | None:
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        self._wake.clear()
        self._sleeping = True
        try:
            if not self._queue:
                self._wake.wait(timeout)
        finally:
            self._sleeping = False
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    def _set(self, level: LogLevel, message: str) -> None:
        if level >= self._level or level == LogLevel.OK:
            self._level, self._message = level, message
        if level >= LogLevel.WARN:
            log.warning("%s: %s", self.paths.root, message)

    def _fail(self, exc: BaseException, what: str) -> None:
        """Logging cannot persist: stop accepting, keep the unfinished segment for recovery."""
        self._accepting = False
        err = storage_error(exc, what) if isinstance(exc, OSError) else exc
        open_ep = self._ep
        if open_ep is not None and open_ep.seg is not None:
            open_ep.seg.abandon()
            open_ep.seg = None
        self._ep = None
        where = (f"; episode {open_ep.episode} stays unfinished on disk and is recovered at "
                 "the next start" if open_ep is not None else "")
        self._level = LogLevel.ERROR
        self._message = f"logging stopped: {err}{where}"
        log.error("%s: %s", self.paths.root, self._message)

    def _run(self) -> None:
        cfg = self.config
        stop = False
        while not stop:
            timeout = cfg.commit_interval_s if self._pending == 0 else max(
                0.0, cfg.commit_interval_s - (time.monotonic() - self._last_commit))
            item = self._get(min(timeout, cfg.disk_check_interval_s))
            batch = [] if item is None else [item]
            # drain what is already queued, up to one commit group, before committing
            while batch and self._pending + len(batch) < cfg.commit_every:
                try:
                    batch.append(self._queue.popleft())
                except IndexError:
                    break
            for it in batch:
                try:
                    stop = self._handle(it) or stop
                except OSError as exc:
                    self._fail(exc, "cannot write the episode log")
                except Exception as exc:  # noqa: BLE001 - the writer thread must not die
                    log.exception("datalog writer: unexpected error")
                    self._fail(exc, "unexpected writer error")
            try:
                self._maybe_commit()
                self._maybe_check_disk()
            except OSError as exc:
                self._fail(exc, "cannot write the episode log")

    def _handle(self, item: _Message) -> bool:
        """Apply one queued message in the writer thread; True when it is the stop."""
        if isinstance(item, (_Transition, _RawTransition)):
            if not self._accepting:
                self._rejected += 1
                return False
            if isinstance(item, _RawTransition):
                try:
                    vec = self._codec.decode(item.data)
                except SchemaError as exc:
                    self._rejected += 1
                    self._set(LogLevel.WARN, f"transition rejected: {exc}")
                    return False
            else:
                vec = item.vec
            target = item.target
            if target < 0:  # raw CDR whose layout is checked only now
                target = self._route_checked(float(vec[self._episode_index]))
                if target < 0:
                    return False
            self._write_transition(vec, item.log_time_ns, target)
        elif isinstance(item, _SetTask):
            self._apply_task(item.task, item.model_sha, item.log_time_ns)
        elif isinstance(item, _Begin):
            if self._accepting:
                self._close_episode("next_episode")
                task = item.task if item.task is not None else self._task
                self._open_episode(item.episode, item.source, task,
                                   item.model_sha or self._model_sha, item.log_time_ns)
        elif isinstance(item, _End):
            if self._accepting:
                self._close_episode(item.reason)
        elif isinstance(item, _Flush):
            if self._accepting:
                self._commit()
            item.done.set()
        elif isinstance(item, _Stop):
            if self._accepting:
                self._close_episode("shutdown")
            return True
        else:
            raise TypeError(f"not a writer message: {item!r}")
        return False

    def _apply_task(self, task: dict[str, Any], model_sha: str | None, now_ns: int) -> None:
        if model_sha is not None:
            self._model_sha = model_sha
        ep = self._ep
        names_open = ep is not None and task.get("episode") in (ep.source, ep.episode)
        if ep is not None and (names_open or (not ep.task and "episode" not in task)):
            ep.task = task
            if model_sha:
                ep.model_sha = model_sha
            if self._accepting and ep.seg is not None:
                ep.seg.write_task(json.dumps(task, sort_keys=True), now_ns)
        if not names_open:
            self._task = task

    def _write_transition(self, vec: np.ndarray, log_time_ns: int, target: int) -> None:
        source = int(vec[self._episode_index])
        target = self._thread_remap.get(target, target)
        ep = self._ep
        if ep is None or target != ep.episode:
            self._close_episode("next_episode")
            new = target
            if new in self._closed_ids:  # more ticks of an episode that already ended
                with self._ids_lock:
                    new = max(self._used) + 1
                    self._used.add(new)
                    self._route_src, self._route_dst = source, new
                self._thread_remap[target] = new
            if new != source:
                self._set(LogLevel.WARN, f"episode id {source} already used in this dataset; "
                          f"logged as episode {new} (source_episode={source})")
            # the latest task message, unless it explicitly names another episode (a message
            # sent while resetting, with no id yet (-1), is the best guess)
            named = self._task.get("episode")
            names_other = isinstance(named, int) and named >= 0 and named != source
            task = {} if names_other else self._task
            self._open_episode(new, source, task, self._model_sha, log_time_ns)
            ep = self._ep
        assert ep is not None and ep.seg is not None
        ep.seg.write_transition(self._codec.encode(vec), log_time_ns, ep.n)
        ep.pending.append(vec)
        ep.n += 1
        ep.seg_messages += 1
        self._written += 1
        self._pending += 1
        if self._pending >= self.config.commit_every:
            self._commit()
        terminated = vec[self._term_index] != 0.0
        if terminated or vec[self._trunc_index] != 0.0:
            self._close_episode("terminated" if terminated else "truncated")
        elif (log_time_ns - ep.seg_start_ns) / 1e9 >= self.config.max_segment_s or (
                ep.seg.bytes_committed >= self.config.max_segment_bytes):
            self._rotate(log_time_ns)

    def _open_episode(self, episode: int, source: int, task: dict[str, Any], model_sha: str,
                      now_ns: int) -> None:
        self._ep = _OpenEpisode(episode=episode, source=source, task=dict(task),
                                model_sha=model_sha, stats=EpisodeStats(self.layout),
                                dropped_at_start=self._dropped)
        self._open_segment(now_ns)

    def _open_segment(self, now_ns: int) -> None:
        ep = self._ep
        assert ep is not None
        path = self.paths.episodes / segment_name(ep.episode, ep.segment, unfinished=True)
        md = {"episode": str(ep.episode), "segment": str(ep.segment),
              "task": json.dumps(ep.task, sort_keys=True), "model_sha": ep.model_sha,
              "layout": json.dumps(self.layout.to_json()), "robot": self.config.robot,
              "session": self.session}
        if ep.source != ep.episode:
            md["source_episode"] = str(ep.source)

        def opener(p: str) -> _HashingFile:
            ep.seg_hash = _HashingFile(self._opener(p))
            return ep.seg_hash

        seg = SegmentFile(str(path), self._codec, md, chunk_size=self.config.chunk_size,
                          compression=self.config.compression, opener=opener)
        ep.seg = seg
        seg.open()
        if ep.task:
            seg.write_task(json.dumps(ep.task, sort_keys=True), now_ns)
        # the directory entry is made durable now; the header reaches the disk with the first
        # group commit (a crash before it leaves an empty file that recovery quarantines)
        fsync_dir(self.paths.episodes)
        ep.seg_start_ns = now_ns
        ep.seg_messages = 0

    def _finish_segment(self) -> None:
        ep = self._ep
        assert ep is not None and ep.seg is not None and ep.seg_hash is not None
        seg = ep.seg
        seg.finish()
        part = Path(seg.path)
        final = part.with_name(segment_name(ep.episode, ep.segment))
        os.replace(part, final)
        fsync_dir(self.paths.episodes)
        ep.files.append({"path": f"episodes/{final.name}", "sha256": ep.seg_hash.sha.hexdigest(),
                         "bytes": seg.bytes_committed, "transitions": ep.seg_messages})
        self._committed += self._pending
        self._pending = 0
        self._rate_bytes += seg.bytes_committed
        ep.seg = None

    def _rotate(self, now_ns: int) -> None:
        self._finish_segment()
        assert self._ep is not None
        self._ep.segment += 1
        self._open_segment(now_ns)

    def _close_episode(self, reason: str) -> None:
        ep = self._ep
        if ep is None:
            return
        self._finish_segment()
        ep.fold_stats()
        entry = manifest_entry(
            episode=ep.episode, status="complete", end_reason=reason, task=ep.task,
            model_sha=ep.model_sha, stats=ep.stats, files=ep.files, layout=self.layout,
            session=self.session, robot=self.config.robot,
            dropped=self._dropped - ep.dropped_at_start,
            source_episode=ep.source if ep.source != ep.episode else None)
        try:
            append_manifest(self.paths, entry)
        except LogStorageError as exc:
            # the finished segments stay; recovery lists them at the next start
            self._ep = None
            self._fail(exc, "cannot close the episode")
            return
        self._ep = None
        self._closed_count += 1
        self._closed_ids.add(ep.episode)
        if self._level == LogLevel.WARN and self._message.startswith("recovered after a crash"):
            self._set(LogLevel.OK, "logging")  # the news is in the log; logging works again
        if self._on_closed is not None:
            try:
                self._on_closed(entry)
            except Exception:  # noqa: BLE001 - a listener must not stop logging
                log.exception("datalog: on_episode_closed callback failed")

    def _commit(self) -> None:
        ep = self._ep
        if ep is None or ep.seg is None:
            self._committed += self._pending
            self._pending = 0
            self._last_commit = time.monotonic()
            return
        t0 = time.perf_counter()
        ep.fold_stats()
        ep.seg.commit()
        self._last_commit_ms = (time.perf_counter() - t0) * 1e3
        self._committed += self._pending
        self._pending = 0
        self._last_commit = time.monotonic()

    def _maybe_commit(self) -> None:
        if self._pending and (self._pending >= self.config.commit_every or time.monotonic()
                              - self._last_commit >= self.config.commit_interval_s):
            if self._accepting:
                self._commit()

    def _maybe_check_disk(self) -> None:
        now = time.monotonic()
        if now - self._last_disk_check < self.config.disk_check_interval_s:
            return
        self._last_disk_check = now
        if not self._accepting:
            return
        free = shutil.disk_usage(self.paths.root).free
        self._free = free
        cfg = self.config
        if free < cfg.min_free_bytes:
            self._close_episode("disk_low")
            self._accepting = False
            self._level = LogLevel.ERROR
            self._message = (f"logging stopped: only {free / MiB:.0f} MiB free on "
                             f"{self.paths.root} (min_free_bytes {cfg.min_free_bytes / MiB:.0f}"
                             " MiB); open episode closed; free space and restart the logger")
            log.error("%s", self._message)
        elif free < cfg.warn_free_bytes:
            elapsed = max(now - self._rate_t0, 1e-6)
            ep = self._ep
            rate = (self._rate_bytes + (ep.seg.bytes_committed if ep and ep.seg else 0)
                    ) / elapsed
            left = (free - cfg.min_free_bytes) / rate / 3600 if rate > 0 else float("inf")
            self._set(LogLevel.WARN, f"disk nearly full: {free / MiB:.0f} MiB free on "
                      f"{self.paths.root}, about {left:.1f} h of logging left")
        elif self._level == LogLevel.WARN and self._message.startswith("disk nearly full"):
            self._set(LogLevel.OK, "logging")
