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

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import IO, Any, NamedTuple

import numpy as np
from mcap.exceptions import McapError
from mcap.records import Chunk, Footer, Header, Message, Metadata
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
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

COMPRESSION = {"none": CompressionType.NONE, "lz4": CompressionType.LZ4,
               "zstd": CompressionType.ZSTD}
"""Chunk compression names accepted by the writer config."""


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

    def encode(self, vec: np.ndarray) -> bytes:
        v = np.asarray(vec, dtype="<f8")
        if v.shape != (self.layout.size,):
            raise SchemaError(f"transition vector has shape {v.shape}, expected "
                              f"({self.layout.size},)")
        return self.prefix + v.tobytes()

    def matches(self, data: bytes | memoryview) -> bool:
        return len(data) == self.message_size and bytes(data[: len(self.prefix)]) == self.prefix

    def decode(self, data: bytes | memoryview) -> np.ndarray:
        """CDR bytes -> vector; a message with another layout raises SchemaError naming it."""
        if self.matches(data):
            return np.frombuffer(data, dtype="<f8", offset=len(self.prefix)).astype(np.float64)
        dims, vec = decode_float64_multiarray(bytes(data))
        other = TransitionLayout.from_dims(dims)
        raise SchemaError(f"transition layout {other.to_json()} differs from the expected "
                          f"{self.layout.to_json()}")


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
    _mcap: McapWriter | None = field(default=None, repr=False)
    _transition_channel: int = 0
    _task_channel: int = 0
    _dirty: bool = False

    def open(self) -> None:
        opener = self.opener or (lambda p: open(p, "xb"))  # never overwrite an existing file
        self._fh = opener(self.path)
        self._mcap = McapWriter(self._fh, chunk_size=self.chunk_size,
                                compression=COMPRESSION[self.compression], enable_crcs=True)
        from pearl_robot import __version__

        self._mcap.start(profile="ros2", library=f"pearl_robot/{__version__} datalog")
        arr = self._mcap.register_schema(FLOAT64_MULTIARRAY, "ros2msg",
                                         FLOAT64_MULTIARRAY_MSGDEF.encode())
        st = self._mcap.register_schema(STRING, "ros2msg", STRING_MSGDEF.encode())
        self._transition_channel = self._mcap.register_channel(TRANSITION_TOPIC, "cdr", arr)
        self._task_channel = self._mcap.register_channel(TASK_TOPIC, "cdr", st)
        self._mcap.add_metadata(EPISODE_METADATA, self.metadata)
        self._dirty = True

    def write_transition(self, data: bytes, log_time_ns: int, sequence: int) -> None:
        assert self._mcap is not None
        self._mcap.add_message(self._transition_channel, log_time_ns, data, log_time_ns,
                               sequence)
        self.messages += 1
        self._dirty = True

    def write_task(self, task_json: str, log_time_ns: int) -> None:
        assert self._mcap is not None
        self._mcap.add_message(self._task_channel, log_time_ns, encode_string(task_json),
                               log_time_ns, 0)
        self._dirty = True

    def commit(self) -> None:
        """Close the open chunk, write it, fsync: everything written so far is durable."""
        if not self._dirty or self._mcap is None or self._fh is None:
            return
        self._mcap.flush()
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
    unreadable path raises OSError."""
    metadata: dict[str, str] = {}
    messages: list[RawMessage] = []
    topics_by_channel: dict[int, str] = {}
    good_chunks = 0
    complete = False
    error = ""
    valid = 0
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        reader = StreamReader(fh, emit_chunks=True, validate_crcs=False,
                              record_size_limit=max(size, 1024))
        try:
            for record in reader.records:
                if isinstance(record, Chunk):
                    inner = breakup_chunk(record, validate_crc=True)
                    if record.uncompressed_crc == 0:
                        raise McapReadError("chunk without CRC")
                    good_chunks += 1
                    for r in inner:
                        if isinstance(r, Message):
                            topic = topics_by_channel.get(r.channel_id, "")
                            if topics is None or topic in topics:
                                messages.append(RawMessage(topic, r.log_time, r.publish_time,
                                                           r.sequence, bytes(r.data)))
                        elif hasattr(r, "topic"):
                            topics_by_channel[r.id] = r.topic  # type: ignore[attr-defined]
                elif isinstance(record, Metadata) and record.name == EPISODE_METADATA:
                    metadata = dict(record.metadata)
                elif isinstance(record, Footer):
                    complete = True
                elif isinstance(record, Header):
                    pass
                valid = fh.tell()
        except (McapError, EOFError, ValueError, KeyError, zlib.error, struct.error,
                OverflowError, MemoryError, RuntimeError, UnicodeDecodeError) as exc:
            error = f"{type(exc).__name__}: {exc}" or type(exc).__name__
    if not complete and not error:
        error = "file ends without a footer (not finished)"
    return SegmentRead(complete, metadata, messages, good_chunks, error, valid)


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
