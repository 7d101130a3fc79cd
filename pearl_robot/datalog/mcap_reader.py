"""Reading an MCAP segment back (``mcap_writer.py`` writes it): record by record, stopping
cleanly at the first damaged or truncated record, so the dataset reader and crash recovery see
exactly the intact prefix of a file a crash cut."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Metadata
from mcap.stream_reader import breakup_chunk

from pearl_robot.datalog.cdr import TransitionCodec
from pearl_robot.datalog.mcap_writer import (
    EPISODE_METADATA,
    MCAP_MAGIC,
    TRANSITION_TOPIC,
    RawMessage,
)


class McapReadError(McapError):
    """Internal: raised while scanning; callers see :class:`SegmentRead`."""


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
