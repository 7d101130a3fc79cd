"""logger_node over real rclpy: what arrives before the dataset is open (its callbacks fed
directly, in the order the executor would run them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datalog"))
from datalog_synthetic import LAYOUT  # noqa: E402

from pearl_robot.datalog.cdr import TransitionCodec  # noqa: E402
from pearl_robot.datalog.reader import manifest_entries  # noqa: E402


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, **_: Any) -> None:
        self.lines.append(msg)

    warning = error = info


def test_transitions_before_the_open_keep_their_task_and_the_start_line_is_honest(
        ros_context, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    from pearl_robot.ros import logger_node

    codec = TransitionCodec(LAYOUT)
    ds = tmp_path / "night"
    node = logger_node.LoggerNode(context=ros_context, parameter_overrides=[
        Parameter("dataset_dir", value=str(ds))])
    log = _Log()
    monkeypatch.setattr(node, "get_logger", lambda: log)
    opened = []
    real_open = node._open  # noqa: SLF001

    def hold_open(layout: Any) -> None:  # the dataset opens only after everything below
        opened.append(layout)

    monkeypatch.setattr(node, "_open", hold_open)
    try:
        for ep, index in ((0, 7), (1, 9)):
            node._on_task(String(data=json.dumps(  # noqa: SLF001
                {"family": "synthetic", "index": index, "episode": ep, "state": "running"})))
            for s in range(4):
                t = ep * 10.0 + s * 0.05
                vec = LAYOUT.pack(np.zeros(3), np.zeros(2), -1.0, np.zeros(3), False, s == 3,
                                  ep, s, index, (t, t, t), np.zeros(5))
                node._on_transition(codec.encode(vec))  # noqa: SLF001
        node._opener.join(10)  # noqa: SLF001
        assert len(opened) == 1 and node.writer is None
        real_open(opened[0])
        assert node.writer is not None
    finally:
        node.destroy_node()
    entries = {e["episode"]: e["task"]["index"] for e in manifest_entries(ds)}
    assert entries == {0: 7, 1: 9}
    assert any(line.endswith("open; no episodes on disk yet") for line in log.lines), log.lines
