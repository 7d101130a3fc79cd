"""MCAP files of one episode segment: ROS 2 CDR encoding, chunk-per-commit writing, and a
reader that stops cleanly at the first damaged record (crash recovery uses the same reader).

Messages are ROS 2 CDR with the message definitions embedded (``ros2msg`` schemas, ``ros2``
profile), so Foxglove, ``ros2 bag info/play`` and ``rosbags`` open the files:

- ``/pearl/transition``: ``std_msgs/msg/Float64MultiArray`` (layout in :mod:`.schema`)
- ``/pearl/task``: ``std_msgs/msg/String`` holding the task JSON (written at the start of each
  segment and whenever the task changes)

A transition's CDR bytes are a constant prefix (encapsulation header + ``layout``) followed by
the float64 data, so encoding is ``prefix + vec.tobytes()`` and decoding a ``np.frombuffer``.
The prefix is produced once per layout by ``mcap-ros2-support``'s own CDR encoder, so the bytes
are exactly what the reference encoder writes (a test checks both directions).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import IO, Any, NamedTuple

import numpy as np
from mcap.data_stream import ReadDataStream, RecordBuilder
from mcap.exceptions import McapError
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
from mcap.stream_reader import breakup_chunk
from mcap_ros2._dynamic import generate_dynamic, serialize_dynamic

from pearl_robot.datalog.dataset import fsync_dir
from pearl_robot.datalog.schema import DimSpec, SchemaError, TransitionLayout

TRANSITION_TOPIC = "/pearl/transition"
"""Topic of the transition channel (same name as the live topic)."""
TASK_TOPIC = "/pearl/task"
"""Topic of the task channel (task JSON as std_msgs/String)."""
FLOAT64_MULTIARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
EPISODE_METADATA = "pearl_episode"
"""Name of the MCAP metadata record written at the start of each segment."""

FLOAT64_MULTIARRAY_MSGDEF = """\
# Please look at the MultiArrayLayout message definition for
# documentation on all multiarrays.

MultiArrayLayout  layout        # specification of data layout
float64[]         data          # array of data
================================================================================
MSG: std_msgs/MultiArrayLayout
MultiArrayDimension[] dim # Array of dimension properties
uint32 data_offset        # padding elements at front of data
================================================================================
MSG: std_msgs/MultiArrayDimension
string label   # label of given dimension
uint32 size    # size of given dimension (in type units)
uint32 stride  # stride of given dimension
"""
STRING_MSGDEF = "string data\n"

COMPRESSION = ("none", "lz4", "zstd")
"""Chunk compression names accepted by the writer config."""
try:
    from importlib.metadata import version as _version

    MCAP_VERSION = _version("mcap")
except Exception:  # noqa: BLE001 - only used in the library string
    MCAP_VERSION = "?"


class McapReadError(McapError):
    """Internal: raised while scanning; callers see :class:`SegmentRead`."""


@cache
def _encoder(datatype: str, msgdef: str) -> Any:
    return serialize_dynamic(datatype, msgdef)[datatype]


@cache
def _decoder(datatype: str, msgdef: str) -> Any:
    return generate_dynamic(datatype, msgdef)[datatype]


def encode_float64_multiarray(dims: list[DimSpec], data: np.ndarray) -> bytes:
    """Reference CDR encoding (mcap-ros2-support) of a Float64MultiArray."""
    msg = {"layout": {"dim": [{"label": d.label, "size": d.size, "stride": d.stride}
                              for d in dims], "data_offset": 0},
           "data": [float(x) for x in np.asarray(data, dtype=np.float64)]}
    return bytes(_encoder(FLOAT64_MULTIARRAY, FLOAT64_MULTIARRAY_MSGDEF)(msg))


def decode_float64_multiarray(data: bytes) -> tuple[list[DimSpec], np.ndarray]:
    """Reference CDR decoding: (layout dims, data)."""
    msg = _decoder(FLOAT64_MULTIARRAY, FLOAT64_MULTIARRAY_MSGDEF)(data)
    dims = [DimSpec(d.label, int(d.size), int(d.stride)) for d in msg.layout.dim]
    return dims, np.asarray(msg.data, dtype=np.float64)


def encode_string(text: str) -> bytes:
    """CDR std_msgs/String."""
    return bytes(_encoder(STRING, STRING_MSGDEF)({"data": text}))


def decode_string(data: bytes) -> str:
    return str(_decoder(STRING, STRING_MSGDEF)(data).data)


def cdr_padding_positions(dims: list[DimSpec]) -> list[int]:
    """Byte offsets of the alignment padding in a Float64MultiArray's CDR prefix (XCDR1:
    alignment relative to the byte after the 4-byte encapsulation header). Serializers may
    leave anything there (Fast DDS leaves uninitialized bytes; mcap-ros2-support writes
    zeros), so prefix comparisons must ignore these bytes."""
    pad: list[int] = []
    pos = 4 + 4  # encapsulation header, dim count

    def align(n: int) -> None:
        nonlocal pos
        while (pos - 4) % n:
            pad.append(pos)
            pos += 1

    for d in dims:
        pos += 4 + len(d.label.encode()) + 1  # string length, bytes, NUL
        align(4)
        pos += 8  # size, stride
    pos += 4 + 4  # data_offset, data length
    align(8)
    return pad


class TransitionCodec:
    """Fast CDR encode/decode of transition vectors for one layout."""

    def __init__(self, layout: TransitionLayout) -> None:
        self.layout = layout
        probe = np.arange(layout.size, dtype=np.float64) + 0.5
        full = encode_float64_multiarray(layout.dims(), probe)
        tail = probe.astype("<f8").tobytes()
        if not full.endswith(tail):  # pragma: no cover - would mean a CDR alignment surprise
            raise SchemaError("could not derive the CDR prefix of the transition layout")
        self.prefix = full[: len(full) - len(tail)]
        """Constant CDR bytes before the float64 data (header, layout, data length)."""
        self.message_size = len(full)
        pad = cdr_padding_positions(layout.dims())
        if pad and max(pad) >= len(self.prefix):  # pragma: no cover - layout arithmetic bug
            raise SchemaError("CDR padding computation disagrees with the encoder")
        # the prefix without its padding, as (start, stop) runs to compare slice by slice
        runs, start = [], 0
        for p in [*pad, len(self.prefix)]:
            if p > start:
                runs.append((start, p))
            start = p + 1
        self._runs = [(a, b, self.prefix[a:b]) for a, b in runs]

    def encode(self, vec: np.ndarray) -> bytes:
        v = np.asarray(vec, dtype="<f8")
        if v.shape != (self.layout.size,):
            raise SchemaError(f"transition vector has shape {v.shape}, expected "
                              f"({self.layout.size},)")
        return self.prefix + v.tobytes()

    def matches(self, data: bytes | memoryview) -> bool:
        """True when ``data`` is this layout's message (padding bytes ignored)."""
        if len(data) != self.message_size:
            return False
        if data[: len(self.prefix)] == self.prefix:  # our own encoder: exact
            return True
        return all(data[a:b] == ref for a, b, ref in self._runs)

    def decode(self, data: bytes | memoryview) -> np.ndarray:
        """CDR bytes -> vector; a message with another layout raises SchemaError naming it."""
        if self.matches(data):
            return np.frombuffer(data, dtype="<f8", offset=len(self.prefix)).astype(np.float64)
        dims, vec = decode_float64_multiarray(bytes(data))
        other = TransitionLayout.from_dims(dims)
        if other == self.layout:  # same layout, unusual bytes (another serializer's choices)
            return vec
        raise SchemaError(f"transition layout {other.to_json()} differs from the expected "
                          f"{self.layout.to_json()}")


_MESSAGE_HEADER = struct.Struct("<BQHIQQ")
"""Opcode, record length, channel id, sequence, log time, publish time (MCAP Message)."""
MCAP_MAGIC = b"\x89MCAP0\r\n"


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


class RawMessage(NamedTuple):
    """A message as stored: channel topic, times, sequence and CDR bytes."""

    topic: str
    log_time: int
    publish_time: int
    sequence: int
    data: bytes


class SegmentRead(NamedTuple):
    """Everything readable in one MCAP file, in file order."""

    complete: bool
    """True when the footer was reached (the file was finished)."""
    metadata: dict[str, str]
    """The ``pearl_episode`` metadata record (empty if unreadable)."""
    messages: list[RawMessage]
    """Messages of every chunk that decoded with a valid CRC."""
    good_chunks: int
    """Chunks read intact."""
    error: str
    """Why reading stopped early ('' when complete)."""
    valid_bytes: int
    """Offset just past the last intact record (the recoverable prefix)."""


def read_segment(path: str, topics: tuple[str, ...] | None = None) -> SegmentRead:
    """Read a segment record by record, validating chunk CRCs, stopping at the first damaged
    or truncated record. Never raises for damaged content (the error is in the result); an
    unreadable path raises OSError.

    A hand-rolled walk over the file's records (``struct.unpack_from`` on one buffer): the
    library's stream reader parses every message index entry in Python, which made loading a
    dataset cold 10x slower than it needs to be. Index and summary records are skipped; the
    chunks carry everything."""
    metadata: dict[str, str] = {}
    messages: list[RawMessage] = []
    topics_by_channel: dict[int, str] = {}
    good_chunks = 0
    complete = False
    error = ""
    with open(path, "rb") as fh:
        data = fh.read()
    valid = 0
    try:
        if data[:8] != MCAP_MAGIC:
            raise McapReadError("not an MCAP file (bad magic)" if len(data) >= 8
                                else "file shorter than the MCAP magic")
        pos, end = 8, len(data)
        valid = pos
        head = _REC_HEAD.unpack_from
        while True:
            if pos + 9 > end:
                raise McapReadError(f"truncated at byte {pos} of {end}")
            opcode, length = head(data, pos)
            body, nxt = pos + 9, pos + 9 + length
            if nxt > end:
                raise McapReadError(f"record (opcode {opcode}) at byte {pos} is cut off")
            if opcode == Opcode.CHUNK:
                chunk = _parse_chunk(data, body, nxt)
                if chunk.uncompressed_crc == 0:
                    raise McapReadError("chunk without CRC")
                _read_chunk(chunk, topics, topics_by_channel, messages)
                good_chunks += 1
            elif opcode in (Opcode.CHANNEL, Opcode.METADATA):
                rec = (Channel if opcode == Opcode.CHANNEL else Metadata).read(
                    ReadDataStream(io.BytesIO(data[body:nxt])))
                if isinstance(rec, Channel):
                    topics_by_channel[rec.id] = rec.topic
                elif rec.name == EPISODE_METADATA:
                    metadata = dict(rec.metadata)
            elif opcode == Opcode.FOOTER:
                if data[nxt: nxt + 8] != MCAP_MAGIC:
                    raise McapReadError("footer without the closing magic")
                complete = True
                valid = nxt + 8
                break
            pos = valid = nxt
    except (McapError, EOFError, ValueError, KeyError, zlib.error, struct.error,
            OverflowError, MemoryError, RuntimeError, UnicodeDecodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    if not complete and not error:
        error = "file ends without a footer (not finished)"
    return SegmentRead(complete, metadata, messages, good_chunks, error, valid)


def _parse_chunk(data: bytes, body: int, end: int) -> Chunk:
    t0, t1, usize, crc = struct.unpack_from("<QQQI", data, body)
    p = body + 28
    (clen,) = struct.unpack_from("<I", data, p)
    comp = data[p + 4: p + 4 + clen].decode()
    p += 4 + clen
    (rlen,) = struct.unpack_from("<Q", data, p)
    if p + 8 + rlen > end:
        raise McapReadError("chunk records run past the chunk")
    return Chunk(compression=comp, data=data[p + 8: p + 8 + rlen], message_start_time=t0,
                 message_end_time=t1, uncompressed_crc=crc, uncompressed_size=usize)


_MSG_FIELDS = struct.Struct("<HIQQ")
_REC_HEAD = struct.Struct("<BQ")


def _read_chunk(chunk: Chunk, topics: tuple[str, ...] | None, topics_by_channel: dict[int, str],
                out: list[RawMessage]) -> None:
    """Decompress, check the CRC, and walk the chunk's records with ``struct.unpack_from``
    (the library's per-record objects cost ~10x more); channel/schema records inside a chunk
    go through the library. Appends only after the whole chunk parsed (all or nothing)."""
    if chunk.compression == "lz4":
        import lz4.frame

        data = lz4.frame.decompress(chunk.data)
    elif chunk.compression == "zstd":
        import zstandard

        data = zstandard.decompress(chunk.data, chunk.uncompressed_size)
    elif chunk.compression == "":
        data = bytes(chunk.data)
    else:
        raise McapReadError(f"unsupported chunk compression {chunk.compression!r}")
    if len(data) != chunk.uncompressed_size or zlib.crc32(data) != chunk.uncompressed_crc:
        raise McapReadError("chunk CRC or size mismatch (damaged chunk)")
    found: list[RawMessage] = []
    pos, end = 0, len(data)
    unpack_head, unpack_msg = _REC_HEAD.unpack_from, _MSG_FIELDS.unpack_from
    while pos < end:
        opcode, length = unpack_head(data, pos)
        body = pos + 9
        nxt = body + length
        if nxt > end:
            raise McapReadError("record runs past the end of its chunk")
        if opcode == Opcode.MESSAGE:
            channel, seq, log_time, pub_time = unpack_msg(data, body)
            topic = topics_by_channel.get(channel, "")
            if topics is None or topic in topics:
                found.append(RawMessage(topic, log_time, pub_time, seq, data[body + 22: nxt]))
        elif opcode == Opcode.CHANNEL:
            for r in breakup_chunk(Chunk(compression="", data=data[pos:nxt],
                                         message_start_time=0, message_end_time=0,
                                         uncompressed_crc=0, uncompressed_size=nxt - pos)):
                if isinstance(r, Channel):
                    topics_by_channel[r.id] = r.topic
        pos = nxt
    out.extend(found)


def iter_transition_vectors(messages: list[RawMessage], codec: TransitionCodec
                            ) -> Iterator[np.ndarray]:
    for m in messages:
        if m.topic == TRANSITION_TOPIC:
            yield codec.decode(m.data)


def write_segment(path: str, metadata: dict[str, str], codec: TransitionCodec,
                  messages: list[RawMessage], chunk_size: int = 64 * 1024,
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
