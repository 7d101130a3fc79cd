"""The serial protocol, version 1: frames, messages, and the byte stream splitter.

docs/serial-protocol.md is the specification (for firmware authors); this module is the host's
implementation of it and the source of the worked examples in that document.

Layers, each with its own failure type (``pearl_robot.hardware.errors``):

1. stream  -> chunks     :class:`FrameSplitter` cuts the byte stream at 0x00 delimiters and
                         resynchronises after garbage by construction (COBS never emits 0x00).
2. chunk   -> :class:`Frame`   :func:`decode_frame`: COBS, length, CRC-32, version, type.
3. frame   -> message    :func:`decode_message`: the payload layout of each type.

Encoding is the reverse (:func:`encode_message`). Everything is little-endian; floats are
IEEE-754 float32 (a microcontroller's native type). CRC-32 is zlib's (ISO-HDLC, also
Ethernet's; MCU CRC units with bit reversal compute it); COBS comes from the ``cobs``
package (C extension). Both were measured fast enough for 1 kHz (docs/performance.md,
"Serial link").
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import NamedTuple, Union

import numpy as np
from cobs import cobs

from pearl_robot.hardware.errors import (
    BadCobsError,
    BadCrcError,
    LengthMismatchError,
    MalformedPayloadError,
    MessageEncodeError,
    OversizeFrameError,
    TruncatedFrameError,
    UnknownTypeError,
    WrongVersionError,
)

PROTOCOL_VERSION = 1
"""The version byte this implementation sends and accepts."""

DELIMITER = b"\x00"
HEADER = struct.Struct("<BBHHIH")
"""version u8, type u8, seq u16, ack u16, device_time_us u32, payload_len u16 (12 bytes)."""
CRC = struct.Struct("<I")
MAX_PAYLOAD = 1024
"""Largest payload of any v1 frame (bytes): the encoder refuses more (MessageEncodeError), the
decoder refuses a header declaring more (OversizeFrameError), whatever the frame holds. A
DEVICE_INFO takes 21 + device name + 17 + joint name per joint, so 32 joints fit only with
names of 13 bytes on average (docs/serial-protocol.md, 3.2)."""
MAX_BODY = HEADER.size + MAX_PAYLOAD + CRC.size
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1
"""Largest COBS-encoded frame, delimiter excluded."""
MAX_JOINTS = 32
MAX_NAME = 32
"""Longest joint or device name in bytes (UTF-8)."""
SEQ_MOD = 1 << 16
TIME_MOD = 1 << 32


class MsgType(enum.IntEnum):
    """Message type byte. Direction: H = host to device, D = device to host."""

    HELLO = 0x01  # H: open a session
    DEVICE_INFO = 0x02  # D: reply to HELLO: joints, limits, timing
    STATE = 0x03  # D: joint positions, velocities, efforts
    COMMAND = 0x04  # H: joint efforts
    HEARTBEAT = 0x05  # H and D: liveness when nothing else is sent
    ARM = 0x06  # H: arm (1) or disarm (0)
    ESTOP = 0x07  # H: engage (1) or clear (0) the latched e-stop
    FAULT = 0x08  # D: something went wrong on the device


HOST_TO_DEVICE = frozenset({MsgType.HELLO, MsgType.COMMAND, MsgType.HEARTBEAT, MsgType.ARM,
                            MsgType.ESTOP})
DEVICE_TO_HOST = frozenset({MsgType.DEVICE_INFO, MsgType.STATE, MsgType.HEARTBEAT,
                            MsgType.FAULT})


class DeviceFlags(enum.IntFlag):
    """Status bits in STATE and device HEARTBEAT frames."""

    ARMED = 0x01
    """Commands are applied to the motors."""
    ESTOP = 0x02
    """The e-stop is latched (by the host or a device input); only an explicit clear resets it."""
    SAFE = 0x04
    """The safe command (zero effort) is being applied: disarmed, e-stop, or command timeout."""
    COMMAND_TIMEOUT = 0x08
    """Armed, but no COMMAND arrived within the command timeout: the device watchdog tripped."""
    FAULT = 0x10
    """A fault is active (details in FAULT frames)."""
    CLIPPED = 0x20
    """The command being applied was clipped to the effort limits."""
    SESSION = 0x40
    """A host session is open (a HELLO was answered since boot and the link has not timed out)."""


class FaultCode(enum.IntEnum):
    """FAULT frame codes."""

    COMMAND_TIMEOUT = 1  # armed and no command within command_timeout_ms: safe command applied
    LINK_TIMEOUT = 2  # no host frame within link_timeout_ms: disarmed, session closed
    ARM_REFUSED = 3  # ARM while the e-stop is latched or a fault is active
    BAD_COMMAND = 4  # wrong joint count or non-finite effort: safe command applied
    BOOT = 5  # the device (re)started
    LIMIT = 6  # a joint exceeded its velocity limit: safe command, disarmed
    ESTOP_INPUT = 7  # a device-side e-stop input latched the e-stop
    HARDWARE = 8  # driver or sensor fault


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2


class Frame(NamedTuple):
    """One decoded frame: the header fields and the raw payload."""

    version: int
    msg_type: int
    seq: int
    ack: int
    device_time_us: int
    payload: bytes


# --------------------------------------------------------------------------- messages


class JointInfo(NamedTuple):
    """One joint as the device describes it (SI units)."""

    name: str
    position_min: float
    position_max: float
    velocity_max: float
    effort_max: float


class Hello(NamedTuple):
    """Host opens a session; the device answers with DEVICE_INFO echoing ``session_id``."""

    session_id: int


class DeviceInfo(NamedTuple):
    """What the device is, its joints in command order, and its timing."""

    session_id: int
    """Echo of the HELLO this answers."""
    boot_id: int
    """Random per boot: a new value means the device reset."""
    firmware_version: int
    state_rate_hz: int
    """Rate of unsolicited STATE frames while a session is open."""
    heartbeat_period_ms: int
    command_timeout_ms: int
    """Armed and no COMMAND for this long -> the device applies the safe command."""
    link_timeout_ms: int
    """No valid host frame for this long -> the device disarms and closes the session."""
    command_interface: int
    """0 = effort (N*m per joint); the only value in v1."""
    device_name: str
    joints: tuple[JointInfo, ...]

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)


class State(NamedTuple):
    """Joint state in device joint order: rad, rad/s, N*m (float32 on the wire)."""

    flags: int
    command_seq: int
    """Sequence number of the COMMAND being applied (``NO_COMMAND`` if none since the session
    opened)."""
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class Command(NamedTuple):
    """Joint efforts in device joint order (N*m)."""

    effort: np.ndarray


class Heartbeat(NamedTuple):
    """Liveness. Device: ``ident`` = boot_id, ``flags`` = DeviceFlags. Host: session_id, 0."""

    ident: int
    flags: int


class Arm(NamedTuple):
    arm: bool


class EStop(NamedTuple):
    engage: bool


class Fault(NamedTuple):
    code: int
    severity: int
    text: str


Message = Union[Hello, DeviceInfo, State, Command, Heartbeat, Arm, EStop, Fault]
NO_COMMAND = 0xFFFF
COMMAND_INTERFACE_EFFORT = 0

_HELLO = struct.Struct("<I")
_INFO_FIXED = struct.Struct("<IIHHHHHBB")
_JOINT_LIMITS = struct.Struct("<ffff")
_STATE_HEAD = struct.Struct("<BBH")
_COMMAND_HEAD = struct.Struct("<BBH")
_HEARTBEAT = struct.Struct("<IBBH")
_FAULT_HEAD = struct.Struct("<HBB")
_F32 = np.dtype("<f4")

MESSAGE_TYPES: dict[type, MsgType] = {
    Hello: MsgType.HELLO, DeviceInfo: MsgType.DEVICE_INFO, State: MsgType.STATE,
    Command: MsgType.COMMAND, Heartbeat: MsgType.HEARTBEAT, Arm: MsgType.ARM,
    EStop: MsgType.ESTOP, Fault: MsgType.FAULT,
}


def _name_bytes(name: str, what: str) -> bytes:
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NAME:
        raise MessageEncodeError(f"{what} {name!r} must be 1..{MAX_NAME} UTF-8 bytes")
    return bytes([len(raw)]) + raw


def _f32(values: np.ndarray, n: int, what: str) -> bytes:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise MessageEncodeError(f"{what} has {arr.shape[0]} values, expected {n}")
    return arr.astype(_F32).tobytes()


def pack_payload(msg: Message) -> bytes:
    """Payload bytes of a message (see docs/serial-protocol.md for every layout)."""
    if isinstance(msg, Command):
        n = int(np.asarray(msg.effort).size)
        return _COMMAND_HEAD.pack(n, COMMAND_INTERFACE_EFFORT, 0) + _f32(msg.effort, n, "effort")
    if isinstance(msg, State):
        n = int(np.asarray(msg.position).size)
        return (_STATE_HEAD.pack(n, int(msg.flags), int(msg.command_seq))
                + _f32(msg.position, n, "position") + _f32(msg.velocity, n, "velocity")
                + _f32(msg.effort, n, "effort"))
    if isinstance(msg, Heartbeat):
        return _HEARTBEAT.pack(msg.ident, int(msg.flags), 0, 0)
    if isinstance(msg, Hello):
        return _HELLO.pack(msg.session_id)
    if isinstance(msg, Arm):
        return bytes([1 if msg.arm else 0])
    if isinstance(msg, EStop):
        return bytes([1 if msg.engage else 0])
    if isinstance(msg, Fault):
        text = msg.text.encode("utf-8")[:255]
        return _FAULT_HEAD.pack(int(msg.code), int(msg.severity), len(text)) + text
    if isinstance(msg, DeviceInfo):
        if not 1 <= len(msg.joints) <= MAX_JOINTS:
            raise MessageEncodeError(f"a device has 1..{MAX_JOINTS} joints, got "
                                     f"{len(msg.joints)}")
        out = [_INFO_FIXED.pack(msg.session_id, msg.boot_id, msg.firmware_version,
                                msg.state_rate_hz, msg.heartbeat_period_ms,
                                msg.command_timeout_ms, msg.link_timeout_ms,
                                msg.command_interface, len(msg.joints)),
               _name_bytes(msg.device_name, "device name")]
        for j in msg.joints:
            out.append(_name_bytes(j.name, "joint name"))
            out.append(_JOINT_LIMITS.pack(j.position_min, j.position_max, j.velocity_max,
                                          j.effort_max))
        payload = b"".join(out)
        if len(payload) > MAX_PAYLOAD:
            names = sum(len(j.name.encode("utf-8")) for j in msg.joints)
            raise MessageEncodeError(
                f"DEVICE_INFO of {len(msg.joints)} joints with {names} bytes of joint names "
                f"needs {len(payload)} payload bytes, over the v1 limit of {MAX_PAYLOAD}; "
                f"shorten the names (21 + device name + 17 + name per joint must fit)")
        return payload
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


def _exact(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise LengthMismatchError(f"{what} payload is {len(payload)} bytes, expected {size}")


def _joint_count(n: int, what: str) -> None:
    if not 1 <= n <= MAX_JOINTS:
        raise MalformedPayloadError(f"{what} declares {n} joints (1..{MAX_JOINTS} allowed)")


def _read_name(payload: bytes, pos: int, what: str) -> tuple[str, int]:
    if pos >= len(payload):
        raise LengthMismatchError(f"device info ends before the {what}")
    n = payload[pos]
    end = pos + 1 + n
    if n == 0 or n > MAX_NAME:
        raise MalformedPayloadError(f"{what} length {n} is outside 1..{MAX_NAME}")
    if end > len(payload):
        raise LengthMismatchError(f"device info ends inside the {what}")
    try:
        return payload[pos + 1:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise MalformedPayloadError(f"{what} is not valid UTF-8") from None


def unpack_payload(msg_type: int, payload: bytes) -> Message:
    """Parse a payload of a known type; raises a :class:`FrameError` subclass on bad layouts."""
    if msg_type == MsgType.STATE:
        if len(payload) < _STATE_HEAD.size:
            raise LengthMismatchError(f"state payload is {len(payload)} bytes, too short")
        n, flags, cseq = _STATE_HEAD.unpack_from(payload)
        _joint_count(n, "state")
        _exact(payload, _STATE_HEAD.size + 12 * n, f"state ({n} joints)")
        with np.errstate(invalid="ignore"):  # a signalling NaN stays NaN; callers check
            vals = np.frombuffer(payload, dtype=_F32, offset=_STATE_HEAD.size).astype(
                np.float64)
        return State(flags, cseq, vals[:n], vals[n:2 * n], vals[2 * n:])
    if msg_type == MsgType.COMMAND:
        if len(payload) < _COMMAND_HEAD.size:
            raise LengthMismatchError(f"command payload is {len(payload)} bytes, too short")
        n, mode, _ = _COMMAND_HEAD.unpack_from(payload)
        _joint_count(n, "command")
        if mode != COMMAND_INTERFACE_EFFORT:
            raise MalformedPayloadError(f"command mode {mode} is not 0 (effort)")
        _exact(payload, _COMMAND_HEAD.size + 4 * n, f"command ({n} joints)")
        with np.errstate(invalid="ignore"):
            return Command(np.frombuffer(payload, dtype=_F32, offset=_COMMAND_HEAD.size)
                           .astype(np.float64))
    if msg_type == MsgType.HEARTBEAT:
        _exact(payload, _HEARTBEAT.size, "heartbeat")
        ident, flags, _, _ = _HEARTBEAT.unpack(payload)
        return Heartbeat(ident, flags)
    if msg_type == MsgType.HELLO:
        _exact(payload, _HELLO.size, "hello")
        return Hello(_HELLO.unpack(payload)[0])
    if msg_type in (MsgType.ARM, MsgType.ESTOP):
        _exact(payload, 1, MsgType(msg_type).name.lower())
        if payload[0] > 1:
            raise MalformedPayloadError(f"{MsgType(msg_type).name.lower()} value "
                                        f"{payload[0]} is not 0 or 1")
        return Arm(payload[0] == 1) if msg_type == MsgType.ARM else EStop(payload[0] == 1)
    if msg_type == MsgType.FAULT:
        if len(payload) < _FAULT_HEAD.size:
            raise LengthMismatchError(f"fault payload is {len(payload)} bytes, too short")
        code, severity, n = _FAULT_HEAD.unpack_from(payload)
        _exact(payload, _FAULT_HEAD.size + n, "fault")
        if severity > Severity.ERROR:
            raise MalformedPayloadError(f"fault severity {severity} is not 0..2")
        return Fault(code, severity,
                     payload[_FAULT_HEAD.size:].decode("utf-8", errors="replace"))
    if msg_type == MsgType.DEVICE_INFO:
        if len(payload) < _INFO_FIXED.size:
            raise LengthMismatchError(f"device info payload is {len(payload)} bytes, too short")
        (session, boot, fw, rate, hb, cmd_to, link_to, iface, n) = _INFO_FIXED.unpack_from(
            payload)
        _joint_count(n, "device info")
        if iface != COMMAND_INTERFACE_EFFORT:
            raise MalformedPayloadError(f"command interface {iface} is not 0 (effort)")
        name, pos = _read_name(payload, _INFO_FIXED.size, "device name")
        joints = []
        for i in range(n):
            jname, pos = _read_name(payload, pos, f"name of joint {i}")
            if pos + _JOINT_LIMITS.size > len(payload):
                raise LengthMismatchError(f"device info ends inside the limits of joint {i}")
            lims = _JOINT_LIMITS.unpack_from(payload, pos)
            pos += _JOINT_LIMITS.size
            if not all(np.isfinite(lims)) or not lims[0] < lims[1] or min(lims[2:]) <= 0:
                raise MalformedPayloadError(f"joint {jname!r} has invalid limits {lims}")
            joints.append(JointInfo(jname, *(float(v) for v in lims)))
        if pos != len(payload):
            raise LengthMismatchError(f"device info has {len(payload) - pos} trailing bytes")
        if len({j.name for j in joints}) != n:
            raise MalformedPayloadError("device info repeats a joint name")
        return DeviceInfo(session, boot, fw, rate, hb, cmd_to, link_to, iface, name,
                          tuple(joints))
    raise UnknownTypeError(f"message type 0x{msg_type:02x} is not defined in protocol "
                           f"v{PROTOCOL_VERSION}")


# --------------------------------------------------------------------------- frames


def encode_frame(msg_type: int, seq: int, ack: int, device_time_us: int, payload: bytes,
                 version: int = PROTOCOL_VERSION) -> bytes:
    """One frame on the wire: COBS(header + payload + CRC-32) followed by 0x00."""
    if len(payload) > MAX_PAYLOAD:
        raise MessageEncodeError(f"payload of {len(payload)} bytes exceeds the v1 limit of "
                                 f"{MAX_PAYLOAD}")
    body = HEADER.pack(version, msg_type, seq % SEQ_MOD, ack % SEQ_MOD,
                       device_time_us % TIME_MOD, len(payload)) + payload
    return cobs.encode(body + CRC.pack(zlib.crc32(body))) + DELIMITER


def encode_message(msg: Message, seq: int, ack: int, device_time_us: int = 0) -> bytes:
    """Encode a message as one delimited frame."""
    return encode_frame(MESSAGE_TYPES[type(msg)], seq, ack, device_time_us, pack_payload(msg))


def decode_frame(chunk: bytes) -> Frame:
    """Decode one COBS chunk (the bytes between two delimiters, delimiter excluded).

    Checks in this order, raising the first that fails: COBS, minimum length, CRC (a short
    frame whose header promises more bytes than present is reported as truncated rather than
    as a CRC error), version, declared payload length <= MAX_PAYLOAD, header length versus
    bytes present, type.
    """
    if len(chunk) > MAX_ENCODED:
        raise OversizeFrameError(f"frame of {len(chunk)} encoded bytes exceeds {MAX_ENCODED}")
    try:
        body = cobs.decode(chunk)
    except cobs.DecodeError as exc:
        raise BadCobsError(f"invalid COBS encoding ({exc})") from None
    if len(body) < HEADER.size + CRC.size:
        raise TruncatedFrameError(f"frame of {len(body)} bytes is shorter than header + CRC "
                                  f"({HEADER.size + CRC.size})")
    version, msg_type, seq, ack, dtime, plen = HEADER.unpack_from(body)
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    expected_len = HEADER.size + plen + CRC.size
    if zlib.crc32(memoryview(body)[:-CRC.size]) != crc:
        if expected_len > len(body):
            raise TruncatedFrameError(f"frame of {len(body)} bytes is shorter than its "
                                      f"header says ({expected_len})")
        raise BadCrcError(f"CRC mismatch in a {len(body)}-byte frame")
    if version != PROTOCOL_VERSION:
        raise WrongVersionError(f"peer speaks protocol v{version}, this host speaks "
                                f"v{PROTOCOL_VERSION}", version)
    if plen > MAX_PAYLOAD:  # a frame that fits MAX_ENCODED can still declare up to 1028
        raise OversizeFrameError(f"header declares a {plen}-byte payload, over the v1 limit "
                                 f"of {MAX_PAYLOAD}")
    if expected_len != len(body):
        raise LengthMismatchError(f"header says {plen} payload bytes, frame holds "
                                  f"{len(body) - HEADER.size - CRC.size}")
    if msg_type not in _KNOWN_TYPES:
        raise UnknownTypeError(f"message type 0x{msg_type:02x} is not defined in protocol "
                               f"v{PROTOCOL_VERSION}")
    return Frame(version, msg_type, seq, ack, dtime, bytes(body[HEADER.size:-CRC.size]))


_KNOWN_TYPES = frozenset(int(t) for t in MsgType)


def decode_message(frame: Frame) -> Message:
    """The typed message a frame carries."""
    return unpack_payload(frame.msg_type, frame.payload)


class FrameSplitter:
    """Cut a byte stream into COBS chunks at 0x00 delimiters.

    Feeding arbitrary pieces (one byte at a time, or many frames at once) yields the same
    chunks. Empty chunks (back-to-back delimiters, which senders may use to flush a receiver)
    are skipped. If more than ``max_chunk`` bytes arrive without a delimiter, they are
    discarded up to the next delimiter and ``oversize`` is incremented: a receiver's memory is
    bounded whatever the line carries.
    """

    def __init__(self, max_chunk: int = MAX_ENCODED) -> None:
        self.max_chunk = max_chunk
        self._buf = bytearray()
        self._discarding = False
        self.oversize = 0
        """Chunks dropped for exceeding ``max_chunk``."""

    def feed(self, data: bytes) -> list[bytes]:
        """Append bytes; return the complete chunks they finish, oldest first."""
        out: list[bytes] = []
        start = 0
        while True:
            idx = data.find(0, start)
            if idx < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                self._buf += data[start:idx]
                if len(self._buf) > self.max_chunk:
                    self.oversize += 1
                elif self._buf:
                    out.append(bytes(self._buf))
            self._buf.clear()
            start = idx + 1
        if not self._discarding:
            self._buf += data[start:]
            if len(self._buf) > self.max_chunk:
                self.oversize += 1
                self._buf.clear()
                self._discarding = True
        return out

    def reset(self) -> None:
        """Forget a partial chunk (after reopening a port)."""
        self._buf.clear()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held waiting for a delimiter."""
        return len(self._buf)
