"""Codec: every message round-trips; every way a frame can be bad raises its own typed error;
the splitter yields the same frames however the stream is cut; fuzzing never crashes it."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pearl_robot.hardware.errors import (
    BadCobsError,
    BadCrcError,
    FrameError,
    LengthMismatchError,
    MalformedPayloadError,
    OversizeFrameError,
    TruncatedFrameError,
    UnknownTypeError,
    WrongVersionError,
)
from pearl_robot.hardware.examples import WORKED_EXAMPLES
from pearl_robot.hardware.protocol import (
    HEADER,
    MAX_ENCODED,
    PROTOCOL_VERSION,
    Command,
    FrameSplitter,
    MsgType,
    State,
    decode_frame,
    decode_message,
    encode_frame,
    encode_message,
)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _raw_frame(version: int, msg_type: int, payload: bytes, plen: int | None = None) -> bytes:
    """A COBS chunk (no delimiter) with a valid CRC over whatever header we choose."""
    body = HEADER.pack(version, msg_type, 7, 3, 99, len(payload) if plen is None else plen)
    body += payload
    return cobs.encode(body + struct.pack("<I", zlib.crc32(body)))


def _equal(a, b) -> bool:
    """Field-wise equality; floats compared at float32 precision (what the wire carries)."""
    if type(a) is not type(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            if not np.array_equal(x.astype(np.float32), np.asarray(y).astype(np.float32)):
                return False
        elif isinstance(x, tuple):
            if len(x) != len(y) or not all(_equal(p, q) for p, q in zip(x, y)):
                return False
        elif isinstance(x, float):
            if np.float32(x) != np.float32(y):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("example", WORKED_EXAMPLES, ids=lambda e: e.name)
def test_every_message_type_round_trips(example) -> None:
    wire = example.wire
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    frame = decode_frame(wire[:-1])
    assert (frame.seq, frame.ack, frame.device_time_us) == (example.seq, example.ack,
                                                            example.device_time_us)
    assert _equal(decode_message(frame), example.message)


def test_bad_cobs_is_its_own_error() -> None:
    # A code byte pointing past the end of the chunk is invalid COBS.
    with pytest.raises(BadCobsError):
        decode_frame(bytes([0x20, 0x01, 0x02]))


def test_truncated_frame_is_reported_as_truncated() -> None:
    wire = encode_message(Command(np.ones(3)), 1, 0)
    body = cobs.decode(wire[:-1])
    for cut in (5, 15, len(body) - 6):
        with pytest.raises(TruncatedFrameError):
            decode_frame(cobs.encode(body[:cut]))


def test_crc_mismatch_is_bad_crc() -> None:
    body = bytearray(cobs.decode(encode_message(Command(np.ones(3)), 1, 0)[:-1]))
    body[14] ^= 0x10
    with pytest.raises(BadCrcError):
        decode_frame(cobs.encode(bytes(body)))


def test_other_version_is_wrong_version_and_names_it() -> None:
    with pytest.raises(WrongVersionError) as err:
        decode_frame(_raw_frame(PROTOCOL_VERSION + 1, MsgType.HEARTBEAT, bytes(8)))
    assert err.value.version == PROTOCOL_VERSION + 1
    assert "v2" in str(err.value) and "v1" in str(err.value)


def test_header_length_disagreeing_with_frame_is_length_mismatch() -> None:
    with pytest.raises(LengthMismatchError):
        decode_frame(_raw_frame(PROTOCOL_VERSION, MsgType.HEARTBEAT, bytes(8), plen=4))


def test_undefined_type_is_unknown_type() -> None:
    with pytest.raises(UnknownTypeError):
        decode_frame(_raw_frame(PROTOCOL_VERSION, 0x42, b""))


@pytest.mark.parametrize("msg_type,payload,error", [
    (MsgType.STATE, bytes([3, 0, 0, 0]) + bytes(12 * 3 - 4), LengthMismatchError),
    (MsgType.STATE, bytes([0, 0, 0, 0]), MalformedPayloadError),
    (MsgType.COMMAND, bytes([2, 0, 0, 0]) + bytes(12), LengthMismatchError),
    (MsgType.COMMAND, bytes([1, 9, 0, 0]) + bytes(4), MalformedPayloadError),
    (MsgType.ARM, bytes([2]), MalformedPayloadError),
    (MsgType.HELLO, bytes(3), LengthMismatchError),
    (MsgType.FAULT, bytes([1, 0, 7, 2]) + b"ab", MalformedPayloadError),
    (MsgType.DEVICE_INFO, bytes(20), MalformedPayloadError),
])
def test_bad_payload_layouts_raise_typed_errors(msg_type, payload, error) -> None:
    frame = decode_frame(_raw_frame(PROTOCOL_VERSION, msg_type, payload))
    with pytest.raises(error):
        decode_message(frame)


def test_frame_longer_than_the_largest_legal_is_oversize() -> None:
    with pytest.raises(OversizeFrameError):
        decode_frame(b"\x01" * (MAX_ENCODED + 1))


def test_floats_travel_as_float32() -> None:
    effort = np.array([0.1, -2.5, 1e-3])
    msg = decode_message(decode_frame(encode_message(Command(effort), 0, 0)[:-1]))
    assert np.allclose(msg.effort, effort, rtol=1e-7)
    assert np.array_equal(msg.effort, effort.astype(np.float32).astype(np.float64))


def test_sequence_and_time_fields_wrap() -> None:
    frame = decode_frame(encode_frame(MsgType.HEARTBEAT, 65536 + 5, 65535, 2**32 + 10,
                                      bytes(8))[:-1])
    assert (frame.seq, frame.ack, frame.device_time_us) == (5, 65535, 10)


# ------------------------------------------------------------------ splitter


def _stream() -> tuple[bytes, list[bytes]]:
    frames = [ex.wire for ex in WORKED_EXAMPLES[:4]]
    return b"".join(frames), [f[:-1] for f in frames]


def test_splitter_yields_the_same_frames_for_a_split_at_every_byte_boundary() -> None:
    stream, expected = _stream()
    for cut in range(len(stream) + 1):
        sp = FrameSplitter()
        assert sp.feed(stream[:cut]) + sp.feed(stream[cut:]) == expected, cut


def test_splitter_fed_one_byte_at_a_time() -> None:
    stream, expected = _stream()
    sp = FrameSplitter()
    out = []
    for b in stream:
        out += sp.feed(bytes([b]))
    assert out == expected


def test_splitter_resyncs_after_garbage_and_skips_empty_chunks() -> None:
    stream, expected = _stream()
    sp = FrameSplitter()
    chunks = sp.feed(b"\x13\x37garbage\x00\x00\x00" + stream)
    assert chunks[0] == b"\x13\x37garbage"
    assert chunks[1:] == expected
    with pytest.raises(FrameError):
        decode_frame(chunks[0])


def test_splitter_bounds_memory_and_resumes_after_an_oversize_run() -> None:
    stream, expected = _stream()
    sp = FrameSplitter(max_chunk=64)
    out = sp.feed(b"\x55" * 200)
    out += sp.feed(b"\x55" * 200 + b"\x00" + stream)
    assert out == [e for e in expected if len(e) <= 64]
    assert sp.oversize == 1 + sum(len(e) > 64 for e in expected) and sp.pending == 0


# ------------------------------------------------------------------ property-based fuzzing


@FUZZ
@given(st.binary(max_size=300))
def test_decoder_only_raises_frame_errors_on_arbitrary_bytes(data: bytes) -> None:
    for chunk in FrameSplitter().feed(data + b"\x00"):
        try:
            decode_message(decode_frame(chunk))
        except FrameError:
            pass


@FUZZ
@given(st.sampled_from([int(t) for t in MsgType] + [0, 0x09, 0xFF]), st.binary(max_size=200))
def test_payload_parsers_only_raise_frame_errors_on_crc_valid_garbage(msg_type: int,
                                                                      payload: bytes) -> None:
    try:
        decode_message(decode_frame(_raw_frame(PROTOCOL_VERSION, msg_type, payload)))
    except FrameError:
        pass


@FUZZ
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1,
                max_size=32), st.integers(0, 65535), st.integers(0, 2**32 - 1))
def test_command_round_trip_property(values: list[float], seq: int, dtime: int) -> None:
    wire = encode_message(Command(np.array(values)), seq, seq ^ 0x5A5A, dtime)
    assert b"\x00" not in wire[:-1]
    frame = decode_frame(wire[:-1])
    assert (frame.seq, frame.device_time_us) == (seq, dtime)
    assert np.array_equal(decode_message(frame).effort, np.array(values))


@FUZZ
@given(st.integers(1, 8), st.integers(0, 255), st.data())
def test_state_round_trip_and_single_bit_flips_never_pass(n: int, flags: int, data) -> None:
    f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
    vals = [np.array(data.draw(st.lists(f32, min_size=n, max_size=n))) for _ in range(3)]
    msg = State(flags, 17, *vals)
    wire = encode_message(msg, 3, 4, 5)
    assert _equal(decode_message(decode_frame(wire[:-1])), msg)
    pos = data.draw(st.integers(0, len(wire) - 2))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(wire)
    bad[pos] ^= 1 << bit
    for chunk in FrameSplitter().feed(bytes(bad)):
        with pytest.raises(FrameError):
            decode_frame(chunk)


@FUZZ
@given(st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_splitter_is_independent_of_how_the_stream_is_chunked(cuts: list[int]) -> None:
    stream, expected = _stream()
    sp = FrameSplitter()
    out, pos = [], 0
    for c in cuts:
        out += sp.feed(stream[pos:pos + c])
        pos += c
    out += sp.feed(stream[pos:])
    assert out == expected


# --------------------------------------------------------------------------- size limits

def _device_info(n_joints: int, name_len: int, device_name_len: int = 32):  # noqa: ANN202
    from pearl_robot.hardware.protocol import DeviceInfo, JointInfo

    joints = tuple(JointInfo(f"{i:02d}".ljust(name_len, "j"), -1.0, 1.0, 2.0, 3.0)
                   for i in range(n_joints))
    return DeviceInfo(1, 2, 3, 100, 100, 100, 500, 0, "d" * device_name_len, joints)


def test_maximal_device_info_is_refused_with_a_typed_error() -> None:
    """32 joints with 32-byte names need 1621 bytes: over the one 1024-byte limit."""
    from pearl_robot.errors import PearlRobotError
    from pearl_robot.hardware.errors import MessageEncodeError
    from pearl_robot.hardware.protocol import MAX_PAYLOAD, pack_payload

    with pytest.raises(MessageEncodeError, match=r"needs 1621 payload bytes, over the v1 "
                                                 r"limit of 1024"):
        encode_message(_device_info(32, 32), 0, 0)
    assert issubclass(MessageEncodeError, PearlRobotError) and \
        issubclass(MessageEncodeError, ValueError)
    # the documented budget: 32 joints fit with 13-byte names and a 32-byte device name
    fits = _device_info(32, 13)
    assert len(pack_payload(fits)) == 1013 <= MAX_PAYLOAD
    assert _equal(decode_message(decode_frame(encode_message(fits, 1, 0)[:-1])), fits)
    with pytest.raises(MessageEncodeError):
        pack_payload(_device_info(32, 14))
    with pytest.raises(MessageEncodeError, match="1..32 UTF-8 bytes"):
        pack_payload(_device_info(1, 33))


def test_encoder_refuses_payloads_over_the_limit() -> None:
    from pearl_robot.hardware.errors import MessageEncodeError

    encode_frame(MsgType.FAULT, 0, 0, 0, b"\x01" * 1024)
    with pytest.raises(MessageEncodeError, match="1025 bytes exceeds the v1 limit of 1024"):
        encode_frame(MsgType.FAULT, 0, 0, 0, b"\x01" * 1025)


@pytest.mark.parametrize("plen", [1025, 1026, 1027, 1028])
def test_decoder_refuses_a_declared_payload_over_the_limit(plen: int) -> None:
    """Such frames fit the encoded-size bound (zeros cost no COBS overhead) and used to pass."""
    chunk = _raw_frame(PROTOCOL_VERSION, MsgType.FAULT, b"\x00" * plen)
    assert len(chunk) <= MAX_ENCODED
    with pytest.raises(OversizeFrameError, match=f"declares a {plen}-byte payload"):
        decode_frame(chunk)
    ok = _raw_frame(PROTOCOL_VERSION, MsgType.FAULT, b"\x00" * 1024)
    assert len(decode_frame(ok).payload) == 1024
