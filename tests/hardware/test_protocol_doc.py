"""docs/serial-protocol.md's worked examples are the codec's bytes, and they decode."""

from __future__ import annotations

import re
from pathlib import Path

from pearl_robot.hardware.examples import WORKED_EXAMPLES
from pearl_robot.hardware.protocol import FrameSplitter, decode_frame, decode_message

DOC = Path(__file__).resolve().parents[2] / "docs" / "serial-protocol.md"


def _doc_wires() -> list[bytes]:
    """Every ``wire:`` block (with its continuation lines) in the document, as bytes."""
    wires, current = [], None
    for line in DOC.read_text().splitlines():
        if line.startswith("wire: "):
            current = [line[len("wire: "):]]
            wires.append(current)
        elif current is not None and re.fullmatch(r" {6}([0-9a-f]{2} ?)+", line):
            current.append(line.strip())
        else:
            current = None
    return [bytes.fromhex(" ".join(w)) for w in wires]


def test_document_quotes_every_worked_example_exactly() -> None:
    wires = _doc_wires()
    assert len(wires) == len(WORKED_EXAMPLES)
    for ex, wire in zip(WORKED_EXAMPLES, wires):
        assert wire == ex.wire, f"docs/serial-protocol.md example {ex.name!r} is stale"


def test_document_bytes_decode_to_the_documented_messages() -> None:
    stream = b"".join(_doc_wires())
    chunks = FrameSplitter().feed(stream)
    assert len(chunks) == len(WORKED_EXAMPLES)
    for ex, chunk in zip(WORKED_EXAMPLES, chunks):
        frame = decode_frame(chunk)
        assert (frame.seq, frame.ack, frame.device_time_us) == (ex.seq, ex.ack,
                                                                ex.device_time_us)
        assert type(decode_message(frame)) is type(ex.message)
