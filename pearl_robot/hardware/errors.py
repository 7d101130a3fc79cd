"""Typed errors of the serial link: one class per way a frame or a link can fail.

Frame errors carry a short ``reason`` string; the bridge and the emulator count bad frames by
it (``frames_bad.bad_crc`` and so on), so a diagnostics reader can tell a noisy cable (bad CRC)
from a firmware bug (length mismatch) from a version skew (wrong version) at a glance.
"""

from __future__ import annotations

from pearl_robot.errors import PearlRobotError


class SerialLinkError(PearlRobotError):
    """Base of everything the serial link raises."""


class FrameError(SerialLinkError):
    """A received frame is unusable. Subclasses name why; ``reason`` is the counter key."""

    reason = "bad_frame"


class BadCobsError(FrameError):
    """The bytes between two 0x00 delimiters are not valid COBS."""

    reason = "bad_cobs"


class TruncatedFrameError(FrameError):
    """The frame is shorter than its header says (bytes lost on the wire or cut by a reset)."""

    reason = "truncated"


class BadCrcError(FrameError):
    """The CRC-32 does not match the frame's bytes (noise, bit flips, merged frames)."""

    reason = "bad_crc"


class WrongVersionError(FrameError):
    """The frame is intact but speaks another protocol version; it is never acted on."""

    reason = "wrong_version"

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version
        """The protocol version the peer speaks."""


class LengthMismatchError(FrameError):
    """The header's payload length, or a payload's own counts, disagree with the bytes present."""

    reason = "length_mismatch"


class UnknownTypeError(FrameError):
    """The message type byte is not one this protocol version defines."""

    reason = "unknown_type"


class MalformedPayloadError(FrameError):
    """The payload has the right size but a field is invalid (bad UTF-8, zero joints, ...)."""

    reason = "malformed_payload"


class OversizeFrameError(FrameError):
    """More bytes than the largest legal frame arrived without a 0x00 delimiter."""

    reason = "oversize"


class MessageEncodeError(SerialLinkError, ValueError):
    """A message cannot be put on the wire as given: a field out of its range (joint count,
    name length, value count) or a payload over ``MAX_PAYLOAD`` (a ValueError too, so callers
    that caught the plain ValueError keep working)."""


class TransportError(SerialLinkError):
    """The port cannot be opened, vanished, or a read/write failed."""


class HandshakeError(SerialLinkError):
    """The device did not complete the hello / device-info exchange."""


class HandshakeTimeoutError(HandshakeError):
    """No matching device info arrived in time (wrong port, no firmware, baud mismatch)."""


class IncompatibleProtocolError(HandshakeError):
    """The device speaks another protocol version; the bridge stops and never commands it."""


class JointMismatchError(HandshakeError):
    """The device reports joints other than the ones the host expects (wrong robot or firmware)."""


class CommandError(SerialLinkError):
    """A command from the caller is unusable (wrong length, unknown joint, NaN); a safe command
    was sent instead."""


class LinkNotReadyError(SerialLinkError):
    """The operation needs a handshaken, fresh link and there is none."""


class LinkDownError(SerialLinkError):
    """The robot link failed for good, or stayed down longer than the caller could wait
    (``pearl-robot adapt --exit-when-done``): the run cannot do its job."""
