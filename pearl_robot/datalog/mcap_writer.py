"""MCAP files of one episode segment, written chunk-per-commit.

Messages are ROS 2 CDR (:mod:`.cdr`) with the message definitions embedded (``ros2msg``
schemas, ``ros2`` profile), so Foxglove, ``ros2 bag info/play`` and ``rosbags`` open the files:

- ``/pearl/transition``: ``std_msgs/msg/Float64MultiArray`` (layout in :mod:`.schema`)
- ``/pearl/task``: ``std_msgs/msg/String`` holding the task JSON (written at the start of each
  segment and whenever the task changes)

This module fixes what a segment file holds (the topics, the metadata record, the magic);
``mcap_reader.py`` reads it back, stopping cleanly at the first damaged record.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

from mcap.data_stream import RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (
    Channel,
    Chunk,
    ChunkIndex,
    DataEnd,
    Footer,
    Header,
    MessageIndex,
    Metadata,
    MetadataIndex,
    Schema,
    Statistics,
    SummaryOffset,
)

from pearl_robot.datalog.cdr import (
    FLOAT64_MULTIARRAY,
    FLOAT64_MULTIARRAY_MSGDEF,
    STRING,
    STRING_MSGDEF,
    TransitionCodec,
    decode_string,
    encode_string,
)
from pearl_robot.datalog.dataset import fsync_dir

TRANSITION_TOPIC = "/pearl/transition"
"""Topic of the transition channel (same name as the live topic)."""
TASK_TOPIC = "/pearl/task"
"""Topic of the task channel (task JSON as std_msgs/String)."""
EPISODE_METADATA = "pearl_episode"
"""Name of the MCAP metadata record written at the start of each segment."""
MCAP_MAGIC = b"\x89MCAP0\r\n"

COMPRESSION = ("none", "lz4", "zstd")
"""Chunk compression names accepted by the writer config."""
try:
    from importlib.metadata import version as _version

    MCAP_VERSION = _version("mcap")
except Exception:  # noqa: BLE001 - only used in the library string
    MCAP_VERSION = "?"


class RawMessage(NamedTuple):
    """A message as stored: channel topic, times, sequence and CDR bytes."""

    topic: str
    log_time: int
    publish_time: int
    sequence: int
    data: bytes


_MESSAGE_HEADER = struct.Struct("<BQHIQQ")
"""Opcode, record length, channel id, sequence, log time, publish time (MCAP Message)."""


class McapSegmentWriter:
    """A minimal MCAP writer (spec v0, ``ros2`` profile) whose message path is one
    ``struct.pack``: the reference Python writer spends ~10 us per message on small writes,
    a quarter of the per-record budget at a group commit of 20. Every record other than
    Message is written with ``mcap.records`` classes, so the format is the library's own;
    files carry chunk CRCs, message indexes and the full summary (chunk/metadata indexes,
    statistics, summary offsets, footer CRC)."""

    def __init__(self, stream: Any, chunk_size: int, compression: str) -> None:
        self._out = stream
        self._chunk_size = chunk_size
        self._compression = compression
        self._rb = RecordBuilder()
        self._chunk = bytearray()
        self._index: dict[int, list[tuple[int, int]]] = {}
        self._chunk_start = 0
        self._chunk_end = 0
        self._chunk_msgs = 0
        self._schemas: list[Schema] = []
        self._channels: list[Channel] = []
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._counts: dict[int, int] = {}
        self._n = 0
        self._t0 = 0
        self._t1 = 0
        self._pos = 0

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._pos += len(data)

    def start(self, library: str) -> None:
        self._emit(MCAP_MAGIC)
        Header(profile="ros2", library=library).write(self._rb)
        self._emit(self._rb.end())

    def register_schema(self, name: str, data: bytes) -> int:
        schema = Schema(id=len(self._schemas) + 1, name=name, encoding="ros2msg", data=data)
        self._schemas.append(schema)
        schema.write(self._rb)
        self._emit(self._rb.end())
        return schema.id

    def register_channel(self, topic: str, schema_id: int) -> int:
        ch = Channel(id=len(self._channels) + 1, topic=topic, message_encoding="cdr",
                     schema_id=schema_id, metadata={})
        self._channels.append(ch)
        ch.write(self._rb)
        self._emit(self._rb.end())
        return ch.id

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self.flush_chunk()
        offset = self._pos
        Metadata(name=name, metadata=data).write(self._rb)
        rec = self._rb.end()
        self._emit(rec)
        self._metadata_indexes.append(MetadataIndex(offset=offset, length=len(rec), name=name))

    def add_message(self, channel: int, log_time: int, data: bytes, sequence: int) -> None:
        buf = self._chunk
        if self._chunk_msgs == 0:
            self._chunk_start = self._chunk_end = log_time
        elif log_time < self._chunk_start:
            self._chunk_start = log_time
        if log_time > self._chunk_end:
            self._chunk_end = log_time
        idx = self._index.get(channel)
        if idx is None:
            idx = self._index[channel] = []
        idx.append((log_time, len(buf)))
        buf += _MESSAGE_HEADER.pack(5, 22 + len(data), channel, sequence, log_time, log_time)
        buf += data
        self._chunk_msgs += 1
        self._counts[channel] = self._counts.get(channel, 0) + 1
        if len(buf) > self._chunk_size:
            self.flush_chunk()

    def flush_chunk(self) -> None:
        """Write the open chunk and its message indexes (no-op when empty)."""
        if not self._chunk_msgs:
            return
        raw = bytes(self._chunk)
        if self._compression == "lz4":
            import lz4.frame

            comp, data = "lz4", lz4.frame.compress(raw)
        elif self._compression == "zstd":
            import zstandard

            comp, data = "zstd", zstandard.compress(raw)
        else:
            comp, data = "", raw
        if self._n == 0:
            self._t0 = self._chunk_start
        self._t0 = min(self._t0, self._chunk_start)
        self._t1 = max(self._t1, self._chunk_end)
        self._n += self._chunk_msgs
        Chunk(compression=comp, data=data, message_start_time=self._chunk_start,
              message_end_time=self._chunk_end, uncompressed_crc=zlib.crc32(raw),
              uncompressed_size=len(raw)).write(self._rb)
        chunk_rec = self._rb.end()
        chunk_offset = self._pos
        self._emit(chunk_rec)
        offsets: dict[int, int] = {}
        for ch, records in self._index.items():
            offsets[ch] = self._pos + self._rb.count
            MessageIndex(channel_id=ch, records=records).write(self._rb)
        index_rec = self._rb.end()
        self._emit(index_rec)
        self._chunk_indexes.append(ChunkIndex(
            message_start_time=self._chunk_start, message_end_time=self._chunk_end,
            chunk_start_offset=chunk_offset, chunk_length=len(chunk_rec),
            message_index_offsets=offsets, message_index_length=len(index_rec),
            compression=comp, compressed_size=len(data), uncompressed_size=len(raw)))
        self._chunk = bytearray()
        self._index = {}
        self._chunk_msgs = 0

    def finish(self) -> None:
        """Data end, summary (schemas, channels, statistics, chunk and metadata indexes,
        summary offsets), footer with summary CRC, closing magic."""
        self.flush_chunk()
        DataEnd(data_section_crc=0).write(self._rb)
        self._emit(self._rb.end())
        summary_start = self._pos
        sb = RecordBuilder()
        offsets: list[SummaryOffset] = []

        def group(opcode: int, records: list[Any]) -> None:
            if not records:
                return
            start = sb.count
            for r in records:
                r.write(sb)
            offsets.append(SummaryOffset(group_opcode=opcode, group_start=summary_start + start,
                                         group_length=sb.count - start))

        group(Opcode.SCHEMA, self._schemas)
        group(Opcode.CHANNEL, self._channels)
        group(Opcode.STATISTICS, [Statistics(
            attachment_count=0, channel_count=len(self._channels),
            channel_message_counts=dict(self._counts), chunk_count=len(self._chunk_indexes),
            message_count=self._n, message_end_time=self._t1, message_start_time=self._t0,
            metadata_count=len(self._metadata_indexes), schema_count=len(self._schemas))])
        group(Opcode.CHUNK_INDEX, self._chunk_indexes)
        group(Opcode.METADATA_INDEX, self._metadata_indexes)
        summary_offset_start = summary_start + sb.count
        for o in offsets:
            o.write(sb)
        summary = sb.end()
        crc = zlib.crc32(summary)
        crc = zlib.crc32(struct.pack("<BQQQ", Opcode.FOOTER, 20, summary_start,
                                     summary_offset_start), crc)
        self._emit(summary)
        Footer(summary_start=summary_start, summary_offset_start=summary_offset_start,
               summary_crc=crc).write(self._rb)
        self._emit(self._rb.end())
        self._emit(MCAP_MAGIC)


@dataclass
class SegmentFile:
    """An open MCAP segment: schemas/channels registered, metadata written, chunk-per-commit.

    Every :meth:`commit` closes the open chunk, writes it and fsyncs, so after a crash the file
    holds complete chunks up to the last commit plus at most one torn one."""

    path: str
    codec: TransitionCodec
    metadata: dict[str, str]
    chunk_size: int = 64 * 1024
    compression: str = "lz4"
    opener: Any = None
    """``opener(path) -> binary file``; injectable so tests can fail writes (ENOSPC)."""
    messages: int = 0
    bytes_committed: int = 0
    _fh: IO[bytes] | None = field(default=None, repr=False)
    _mcap: McapSegmentWriter | None = field(default=None, repr=False)
    _transition_channel: int = 0
    _task_channel: int = 0
    _dirty: bool = False

    def open(self) -> None:
        opener = self.opener or (lambda p: open(p, "xb"))  # never overwrite an existing file
        self._fh = opener(self.path)
        self._mcap = McapSegmentWriter(self._fh, self.chunk_size, self.compression)
        from pearl_robot import __version__

        self._mcap.start(f"pearl_robot/{__version__} datalog (mcap {MCAP_VERSION})")
        arr = self._mcap.register_schema(FLOAT64_MULTIARRAY, FLOAT64_MULTIARRAY_MSGDEF.encode())
        st = self._mcap.register_schema(STRING, STRING_MSGDEF.encode())
        self._transition_channel = self._mcap.register_channel(TRANSITION_TOPIC, arr)
        self._task_channel = self._mcap.register_channel(TASK_TOPIC, st)
        self._mcap.add_metadata(EPISODE_METADATA, self.metadata)
        self._dirty = True

    def write_transition(self, data: bytes, log_time_ns: int, sequence: int) -> None:
        assert self._mcap is not None
        self._mcap.add_message(self._transition_channel, log_time_ns, data, sequence)
        self.messages += 1
        self._dirty = True

    def write_task(self, task_json: str, log_time_ns: int) -> None:
        assert self._mcap is not None
        self._mcap.add_message(self._task_channel, log_time_ns, encode_string(task_json), 0)
        self._dirty = True

    def commit(self) -> None:
        """Close the open chunk, write it, fsync: everything written so far is durable."""
        if not self._dirty or self._mcap is None or self._fh is None:
            return
        self._mcap.flush_chunk()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.bytes_committed = self._fh.tell()
        self._dirty = False

    def finish(self) -> None:
        """Write the summary and footer, fsync and close: the file is a complete MCAP."""
        if self._mcap is None or self._fh is None:
            return
        self._mcap.finish()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.bytes_committed = self._fh.tell()
        self._fh.close()
        self._mcap, self._fh = None, None

    def abandon(self) -> None:
        """Close the handle without finishing (after a write error); the file stays unfinished
        on disk for startup recovery."""
        fh, self._fh, self._mcap = self._fh, None, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass


def write_segment(path: str, metadata: dict[str, str], codec: TransitionCodec,
                  messages: Iterable[RawMessage], chunk_size: int = 64 * 1024,
                  compression: str = "lz4") -> int:
    """Write a complete segment from raw messages (used by recovery): to ``path + '.tmp'``,
    fsync, rename over ``path``. Returns the number of transition messages written."""
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    seg = SegmentFile(tmp, codec, metadata, chunk_size=chunk_size, compression=compression)
    seg.open()
    n = 0
    for m in messages:
        if m.topic == TRANSITION_TOPIC:
            seg.write_transition(m.data, m.log_time, m.sequence)
            n += 1
        elif m.topic == TASK_TOPIC:
            seg.write_task(decode_string(m.data), m.log_time)
    seg.finish()
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
    return n
