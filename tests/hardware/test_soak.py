"""Soak (slow, `make test-slow`): `pearl-robot emulate` with every fault switch on at once,
the real bridge commanding it at 20 Hz the way the policy node does, for 40 s."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from pearl_robot.hardware.bridge import BridgeConfig, LinkState, SerialBridge
from pearl_robot.hardware.transport import SerialConfig, serial_factory

from .conftest import Recorder, wait_until


@pytest.mark.slow
def test_bridge_survives_every_fault_at_once(tmp_path) -> None:
    link = tmp_path / "ttySOAK"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pearl_robot.cli", "emulate", "--link", str(link),
         "--drop", "0.02", "--corrupt", "0.02", "--duplicate", "0.02", "--garbage", "0.02",
         "--reset-every", "9", "--silent-every", "7", "--silent-for", "0.6",
         "--replug-every", "13", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rec = Recorder()
    bridge = SerialBridge(serial_factory(SerialConfig(str(link))),
                          BridgeConfig(rearm_after_reconnect=True), on_state=rec)
    try:
        assert wait_until(link.exists, 15.0)
        bridge.start()
        bridge.wait_ready(15.0)
        bridge.arm()
        end = time.monotonic() + 40.0
        sent = 0
        while time.monotonic() < end:
            if bridge.send_command(np.array([0.3, -0.2, 0.1])):
                sent += 1
            time.sleep(0.05)
        assert wait_until(lambda: bridge.status().link is LinkState.READY, 10.0)
        stats = bridge.stats()
        assert stats.get("events.internal_errors", 0) == 0
        assert stats["frames_bad"] > 0 and stats["dropped"] > 0
        assert stats.get("events.device_resets", 0) >= 3
        assert stats.get("events.reconnects", 0) >= 2
        assert stats.get("events.watchdog_trips", 0) >= 3
        assert sent > 400 and len(rec.samples) > 1000
    finally:
        bridge.stop()
        proc.send_signal(2)
        proc.communicate(timeout=20)
