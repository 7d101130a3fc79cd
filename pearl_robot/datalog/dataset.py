"""A dataset directory on disk: paths, the header, the append-only manifest, the writer lock
and episode numbering. Shared by the writer, recovery, the reader and the overnight schedule.

::

    DATASET/
      dataset.json                 header (format, transition layout, robot), written once
      manifest.jsonl               one JSON line per closed episode, appended last, fsync'd
      episodes/ep_000012_s000.mcap finished segments (complete MCAP files)
      episodes/ep_000013_s000.mcap.part   the segment being written (unfinished)
      quarantine/                  originals of recovered or unreadable files, torn manifest tails
      writer.lock                  flock'd by the one live writer
      .cache/                      derived reader cache (safe to delete)

Episode ids are never reused: the next id is one past the largest id seen in the manifest, in
any segment file name (finished, unfinished or quarantined) or reserved by a live writer.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pearl_robot.datalog.schema import TransitionLayout
from pearl_robot.errors import PearlRobotError

FORMAT = "pearl_robot.episode_log"
"""``format`` field of dataset.json."""
FORMAT_VERSION = 1
MANIFEST_SCHEMA = "pearl_manifest/1"
"""``schema`` field of every manifest line."""
SEGMENT_RE = re.compile(r"^ep_(\d{6,})_s(\d{3,})\.mcap(\.part)?$")
EPISODE_PREFIX_RE = re.compile(r"^ep_(\d{6,})_s(\d{3,})")
"""Episode id and segment of any file derived from a segment (quarantined copies too)."""


class DatasetError(PearlRobotError):
    """A dataset directory is missing, malformed or inconsistent; the message names it."""


class LogStorageError(PearlRobotError, OSError):
    """Logging cannot persist (read-only directory, disk full, I/O error, locked)."""


def segment_name(episode: int, segment: int, unfinished: bool = False) -> str:
    return f"ep_{episode:06d}_s{segment:03d}.mcap" + (".part" if unfinished else "")


def parse_segment_name(name: str) -> tuple[int, int, bool] | None:
    """(episode, segment, unfinished) for a segment file name, else None."""
    m = SEGMENT_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), bool(m.group(3))) if m else None


@dataclass(frozen=True)
class DatasetPaths:
    """Where everything of one dataset lives."""

    root: Path
    """The dataset directory."""

    @property
    def header(self) -> Path:
        return self.root / "dataset.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.jsonl"

    @property
    def episodes(self) -> Path:
        return self.root / "episodes"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def lock(self) -> Path:
        return self.root / "writer.lock"

    @property
    def cache(self) -> Path:
        return self.root / ".cache"


def fsync_dir(path: Path | str) -> None:
    """Make a creation/rename in ``path`` durable."""
    fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON via a temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def storage_error(exc: OSError, what: str) -> LogStorageError:
    """A LogStorageError whose message says what failed and why, in words."""
    reason = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted", errno.EIO: "I/O error"}.get(
        exc.errno or 0, exc.strerror or str(exc))
    err = LogStorageError(f"{what}: {reason} ({exc.filename or ''})".replace(" ()", ""))
    err.errno = exc.errno
    return err


# ------------------------------------------------------------------------------- header


def read_header(paths: DatasetPaths) -> dict[str, Any] | None:
    if not paths.header.exists():
        return None
    try:
        data = json.loads(paths.header.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{paths.header}: unreadable dataset header ({exc})") from exc
    if data.get("format") != FORMAT:
        raise DatasetError(f"{paths.header}: not a pearl_robot episode log "
                           f"(format={data.get('format')!r})")
    return data


def layout_of(header: dict[str, Any], where: Path) -> TransitionLayout:
    try:
        return TransitionLayout.from_json(header["layout"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: bad transition layout in dataset header ({exc})") from exc


def ensure_header(paths: DatasetPaths, layout: TransitionLayout, robot: str) -> dict[str, Any]:
    """Create dataset.json, or check that an existing one matches ``layout`` (a dataset never
    mixes layouts: start a new directory for another robot or model shape)."""
    header = read_header(paths)
    if header is None:
        header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "layout": layout.to_json(), "robot": robot,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_json(paths.header, header)
        return header
    existing = layout_of(header, paths.header)
    if existing != layout:
        raise DatasetError(
            f"{paths.root}: dataset was written with layout {existing.to_json()}, refusing to "
            f"append transitions with layout {layout.to_json()}; use a new dataset directory")
    return header


# ------------------------------------------------------------------------------ manifest


@dataclass
class ManifestDamage:
    """What was wrong with a manifest as read (what a recovery repairs)."""

    torn_tail: bytes = b""
    """Bytes after the last complete line (a crash during an append)."""
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) for complete lines that are not valid entries."""
    valid_bytes: int = 0
    """Length of the prefix made of complete lines."""


@dataclass
class ManifestRead(ManifestDamage):
    """The manifest's entries, plus what was wrong with it."""

    entries: list[dict[str, Any]] = field(default_factory=list)


def read_manifest(paths: DatasetPaths) -> ManifestRead:
    out = ManifestRead()
    try:
        raw = paths.manifest.read_bytes()
    except FileNotFoundError:
        return out
    end = raw.rfind(b"\n") + 1
    out.valid_bytes = end
    out.torn_tail = raw[end:]
    lines = raw[:end].splitlines()
    try:  # fast path: one parser call for the whole file (a night has thousands of lines)
        parsed = json.loads(b"[" + b",".join(ln for ln in lines if ln.strip()) + b"]")
        if all(isinstance(e, dict) and e.get("schema") == MANIFEST_SCHEMA
               and isinstance(e.get("episode"), int) for e in parsed):
            out.entries = parsed
            return out
    except ValueError:
        pass
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.entries.append(_entry(line))
        except ValueError as exc:
            out.bad_lines.append((lineno, str(exc)))
    return out


def _entry(line: bytes) -> dict[str, Any]:
    """One manifest line as an entry; ValueError names what is wrong with it."""
    entry = json.loads(line)
    if not isinstance(entry, dict) or entry.get("schema") != MANIFEST_SCHEMA or \
            not isinstance(entry.get("episode"), int):
        raise ValueError(f"not a {MANIFEST_SCHEMA} entry")
    return entry


@dataclass
class ManifestIndex(ManifestDamage):
    """What a start needs of the manifest (the writer's used ids, the recovery's listed files),
    without keeping its entries: a night adds ~2 KB of manifest per episode, and holding all
    entries as Python objects cost the starting process ~20 KB per episode for good (the
    8-hour soak's start RSS grew 145 -> 218 -> 281 MB over 0, 3200 and 6400 episodes)."""

    episodes: set[int] = field(default_factory=set)
    """Episode ids of the valid entries."""
    files: set[str] = field(default_factory=set)
    """Dataset-relative paths of the files the valid entries list."""
    entries: int = 0
    """Valid entries."""


def index_manifest(paths: DatasetPaths) -> ManifestIndex:
    """:class:`ManifestIndex` of the manifest, read a line at a time."""
    out = ManifestIndex()
    try:
        fh = open(paths.manifest, "rb")
    except FileNotFoundError:
        return out
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                out.torn_tail = line
                break
            out.valid_bytes += len(line)
            if not line.strip():
                continue
            try:
                entry = _entry(line)
            except ValueError as exc:
                out.bad_lines.append((lineno, str(exc)))
                continue
            out.entries += 1
            out.episodes.add(entry["episode"])
            out.files.update(str(f["path"]) for f in entry.get("files", ()))
    return out


def append_manifest(paths: DatasetPaths, entry: dict[str, Any]) -> None:
    """Append one line with a single write, fsync; on failure cut the file back so no torn
    line is left behind (LogStorageError says why)."""
    line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
    created = not paths.manifest.exists()
    fd = os.open(paths.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write", str(paths.manifest))
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError:
                pass  # the torn tail is repaired at the next start
            raise storage_error(exc, f"cannot append to {paths.manifest}") from exc
    finally:
        os.close(fd)
    if created:
        fsync_dir(paths.root)


# ------------------------------------------------------------------------------ numbering


def used_episode_ids(paths: DatasetPaths) -> set[int]:
    """Every episode id the dataset has used: manifest entries and segment file names."""
    return index_manifest(paths).episodes | file_episode_ids(paths)


def file_episode_ids(paths: DatasetPaths) -> set[int]:
    """Episode ids named by segment files (episodes/ and quarantine/, open files too)."""
    ids: set[int] = set()
    for folder in (paths.episodes, paths.quarantine):
        if folder.is_dir():
            for p in folder.iterdir():
                m = EPISODE_PREFIX_RE.match(p.name)
                if m is not None:
                    ids.add(int(m.group(1)))
    return ids


def next_episode_id(root: Path | str) -> int:
    """The id the next episode of this dataset gets (0 for a new dataset)."""
    used = used_episode_ids(DatasetPaths(Path(root)))
    return max(used) + 1 if used else 0


class NextEpisodeIds:
    """:func:`next_episode_id` for a caller that asks at every episode start (the policy's
    schedule): per dataset it remembers the largest id and how far the append-only manifest
    was read, and reads only the lines appended since. Reading the whole manifest each time
    cost more with every episode (18.6 MB after the 9600 episodes of the 8-hour soak) and
    stalled the control loop at each episode start; the soak's factor fell from 13.4x to 8x.

    The episode folders are listed on the first call per dataset only (and again when the
    manifest was rewritten shorter): 10 ms at 9600 files, a few control periods at 16x. Files
    without a manifest line exist at a start (a crash's leftovers); later, the only new ones
    are the running logger's, for episodes whose ids the schedule gave out itself, and the
    schedule numbers on from the larger of its own counter and this id."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int, int | None]] = {}
        """root -> (manifest bytes read, largest id listed, largest id of a file seen; None:
        the folders not listed yet)."""

    def __call__(self, root: Path | str) -> int:
        paths = DatasetPaths(Path(root))
        offset, largest, in_files = self._seen.get(paths.root, (0, -1, None))
        try:
            with open(paths.manifest, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < offset:  # rewritten shorter: start over
                    offset, largest, in_files = 0, -1, None
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            offset, data = 0, b""
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                largest = max(largest, int(json.loads(line)["episode"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line: the files still count
        if in_files is None:
            in_files = max(file_episode_ids(paths), default=-1)
        self._seen[paths.root] = (offset + end, largest, in_files)
        return max(largest, in_files) + 1


class WriterLock:
    """An exclusive flock on ``writer.lock``: one live writer per dataset. The kernel drops it
    when the process dies, so a SIGKILLed writer never blocks the next start."""

    def __init__(self, paths: DatasetPaths) -> None:
        self._path = paths.lock
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(exc, f"cannot create {self._path}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LogStorageError(f"{self._path.parent} is being written by another logger "
                                  f"(pid {holder or '?'}); one writer per dataset") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise storage_error(exc, f"cannot write {self._path}") from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
