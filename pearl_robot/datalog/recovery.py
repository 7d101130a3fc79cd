"""Startup recovery: turn whatever a crash left in a dataset directory into complete,
manifest-listed episodes, without losing or duplicating one.

Rules (also in docs/dataset-format.md):

1. A torn manifest tail (a line cut by the crash) is moved to ``quarantine/`` and cut off.
2. Every episode with segment files but no manifest line is closed now:
   - a finished ``.mcap`` segment that reads back complete is kept as is;
   - an unfinished ``.part`` segment (or a damaged ``.mcap``) is read up to its last intact
     chunk; those messages are rewritten as a complete ``.mcap`` (temp file, fsync, rename)
     and the original moves to ``quarantine/`` untouched;
   - a manifest line is appended with ``status`` ``recovered`` (some transitions kept) or
     ``quarantined`` (nothing readable), ``end_reason`` ``crash``, the kept files with their
     sha256, and the quarantined originals.
3. Files of an episode that already has a manifest line are never rewritten; stray ones move
   to ``quarantine/`` and are reported.

Every step is idempotent, so a crash *during* recovery is recovered by the next start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pearl_robot.datalog.cdr import TransitionCodec, decode_string
from pearl_robot.datalog.dataset import (
    EPISODE_PREFIX_RE,
    DatasetPaths,
    append_manifest,
    fsync_dir,
    index_manifest,
    layout_of,
    parse_segment_name,
    read_header,
    segment_name,
    storage_error,
)
from pearl_robot.datalog.episode import EpisodeStats, manifest_entry, sha256_file
from pearl_robot.datalog.mcap_reader import read_segment
from pearl_robot.datalog.mcap_writer import TASK_TOPIC, TRANSITION_TOPIC, write_segment
from pearl_robot.datalog.schema import SchemaError

log = logging.getLogger(__name__)


@dataclass
class RecoveredEpisode:
    """What recovery did with one unfinished episode."""

    episode: int
    status: str
    """recovered | quarantined"""
    transitions: int
    kept: list[str]
    quarantined: list[str]
    reason: str
    """Why the segment(s) were unfinished/damaged (first reader error)."""


@dataclass
class RecoveryReport:
    """Everything recovery changed; empty when the dataset was clean."""

    episodes: list[RecoveredEpisode] = field(default_factory=list)
    torn_manifest_bytes: int = 0
    stray_files: list[str] = field(default_factory=list)
    bad_manifest_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.episodes or self.torn_manifest_bytes or self.stray_files)

    def summary(self) -> str:
        if self.clean:
            return "dataset clean, nothing to recover"
        parts = [f"episode {e.episode}: {e.status}, {e.transitions} transitions kept"
                 + (f", quarantined {len(e.quarantined)} file(s)" if e.quarantined else "")
                 + (f" ({e.reason})" if e.reason else "") for e in self.episodes]
        if self.torn_manifest_bytes:
            parts.append(f"cut a torn manifest tail of {self.torn_manifest_bytes} bytes")
        if self.stray_files:
            parts.append(f"quarantined stray files {self.stray_files}")
        return "; ".join(parts)


def quarantine(paths: DatasetPaths, src: Path) -> Path:
    """Move ``src`` into quarantine/ under a free name; fsync both directories."""
    paths.quarantine.mkdir(exist_ok=True)
    dst = paths.quarantine / src.name
    n = 1
    while dst.exists():
        dst = paths.quarantine / f"{src.name}~{n}"
        n += 1
    os.replace(src, dst)
    fsync_dir(src.parent)
    fsync_dir(paths.quarantine)
    return dst


def recover_dataset(root: Path | str, *, session: str = "recovery", robot: str = "",
                    chunk_size: int = 64 * 1024, compression: str = "lz4") -> RecoveryReport:
    """Recover a dataset in place (see the module rules). Raises LogStorageError when the
    directory cannot be written, DatasetError when the header is unreadable."""
    paths = DatasetPaths(Path(root))
    report = RecoveryReport()
    header = read_header(paths)
    if header is None:
        return report
    layout = layout_of(header, paths.header)
    codec = TransitionCodec(layout)
    robot = robot or str(header.get("robot", ""))
    try:
        manifest = index_manifest(paths)
        report.bad_manifest_lines = manifest.bad_lines
        if manifest.torn_tail:
            paths.quarantine.mkdir(exist_ok=True)
            tail = paths.quarantine / f"manifest-torn-{time.strftime('%Y%m%dT%H%M%S')}.bin"
            tail.write_bytes(manifest.torn_tail)
            with open(paths.manifest, "r+b") as fh:
                fh.truncate(manifest.valid_bytes)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(paths.quarantine)
            report.torn_manifest_bytes = len(manifest.torn_tail)
            log.warning("%s: cut a torn manifest tail of %d bytes (kept in %s)",
                        paths.manifest, len(manifest.torn_tail), tail)
        listed_ids, listed_files = manifest.episodes, manifest.files
        by_episode: dict[int, list[Path]] = {}
        if paths.episodes.is_dir():
            for p in sorted(paths.episodes.iterdir()):
                parsed = parse_segment_name(p.name)
                rel = f"episodes/{p.name}"
                if parsed is None:
                    # temp files of an interrupted recovery/rename, or foreign files
                    if p.is_file():
                        report.stray_files.append(str(quarantine(paths, p).name))
                    continue
                if parsed[0] in listed_ids:
                    if rel not in listed_files:
                        report.stray_files.append(str(quarantine(paths, p).name))
                    continue
                by_episode.setdefault(parsed[0], []).append(p)
        for episode in sorted(by_episode):
            report.episodes.append(_recover_episode(paths, episode, by_episode[episode], codec,
                                                    session, robot, chunk_size, compression))
    except OSError as exc:
        raise storage_error(exc, f"cannot recover {paths.root}") from exc
    if not report.clean:
        log.warning("%s: %s", paths.root, report.summary())
    return report


def _recover_episode(paths: DatasetPaths, episode: int, files: list[Path],
                     codec: TransitionCodec, session: str, robot: str, chunk_size: int,
                     compression: str) -> RecoveredEpisode:
    layout = codec.layout
    segments: dict[int, dict[str, Path]] = {}
    for p in files:
        parsed = parse_segment_name(p.name)
        assert parsed is not None
        segments.setdefault(parsed[1], {})["part" if parsed[2] else "done"] = p
    stats = EpisodeStats(layout)
    kept: list[dict[str, Any]] = []
    quarantined: list[str] = []
    reasons: list[str] = []
    task: dict[str, Any] = {}
    model_sha = ""
    source_episode: int | None = None
    for seg in sorted(segments):
        entry = segments[seg]
        final = paths.episodes / segment_name(episode, seg)
        done_read = read_segment(str(entry["done"])) if "done" in entry else None
        if done_read is not None and done_read.complete:
            read = done_read
            if "part" in entry:  # recovery already rewrote it; the original still lies here
                quarantined.append(quarantine(paths, entry["part"]).name)
        else:
            src = entry.get("part") or entry["done"]
            read = read_segment(str(src))
            reasons.append(f"{src.name}: {read.error}")
            n_trans = sum(1 for m in read.messages if m.topic == TRANSITION_TOPIC)
            if src == final:  # a damaged finished file: keep the original before rewriting
                quarantined.append(quarantine(paths, src).name)
            if n_trans:
                write_segment(str(final), {**read.metadata, "recovered_from": src.name},
                              codec, read.messages, chunk_size, compression)
            if src != final and src.exists():
                quarantined.append(quarantine(paths, src).name)
            if not n_trans:
                continue
            read = read_segment(str(final))
        md = read.metadata
        if md.get("task") and not task:
            task = _json_or_empty(md["task"])
        model_sha = model_sha or md.get("model_sha", "")
        if md.get("source_episode"):
            source_episode = int(md["source_episode"])
        n = 0
        for m in read.messages:
            if m.topic == TRANSITION_TOPIC:
                try:
                    stats.add(codec.decode(m.data))
                except SchemaError as exc:
                    reasons.append(f"{final.name}: {exc}")
                    continue
                n += 1
            elif m.topic == TASK_TOPIC:
                t = _json_or_empty(decode_string(m.data))
                if t and (t.get("episode") in (None, episode, source_episode)):
                    task = t
        kept.append({"path": f"episodes/{final.name}", "sha256": sha256_file(final),
                     "bytes": final.stat().st_size, "transitions": n})
    # originals quarantined by an earlier, interrupted recovery of this episode
    if paths.quarantine.is_dir():
        for q in sorted(paths.quarantine.iterdir()):
            m = EPISODE_PREFIX_RE.match(q.name)
            if m and int(m.group(1)) == episode and q.name not in quarantined:
                quarantined.append(q.name)
    status = "recovered" if stats.transitions else "quarantined"
    note = "; ".join(reasons)
    append_manifest(paths, manifest_entry(
        episode=episode, status=status, end_reason="crash", task=task, model_sha=model_sha,
        stats=stats, files=kept, layout=layout, session=session, robot=robot,
        quarantined=[f"quarantine/{q}" for q in quarantined], source_episode=source_episode,
        note=note))
    return RecoveredEpisode(episode, status, stats.transitions, [k["path"] for k in kept],
                            quarantined, note)


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def disk_free(path: Path | str) -> int:
    """Free bytes for an unprivileged writer at ``path``."""
    return shutil.disk_usage(path).free
