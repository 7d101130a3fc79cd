"""ROS 2 CDR encoding of the two messages a dataset stores: the transition
(``std_msgs/msg/Float64MultiArray``, layout in :mod:`.schema`) and the task JSON
(``std_msgs/msg/String``).

A transition's CDR bytes are a constant prefix (encapsulation header + ``layout``) followed by
the float64 data, so :class:`TransitionCodec` encodes with ``prefix + vec.tobytes()`` and
decodes with one ``np.frombuffer``. The prefix is produced once per layout by
``mcap-ros2-support``'s own CDR encoder, so the bytes are exactly what the reference encoder
writes (a test checks both directions). The MCAP files around these bytes are
``mcap_writer.py`` and ``mcap_reader.py``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from mcap_ros2._dynamic import generate_dynamic, serialize_dynamic

from pearl_robot.datalog.schema import DimSpec, SchemaError, TransitionLayout

FLOAT64_MULTIARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"

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
