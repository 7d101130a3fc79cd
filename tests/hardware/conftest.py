"""Rigs for the serial-link tests: a scripted device on a real pseudo-terminal, and the firmware
emulator (driving the real MuJoCo twin) connected to the real bridge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pearl_robot.hardware.bridge import BridgeConfig, JointStateSample, SerialBridge
from pearl_robot.hardware.emulator import (
    EmulatorConfig,
    FaultSwitches,
    FirmwareEmulator,
    make_twin_plant,
)
from pearl_robot.hardware.emulator_endpoints import PtyEndpoint
from pearl_robot.hardware.errors import FrameError
from pearl_robot.hardware.protocol import (
    DeviceFlags,
    DeviceInfo,
    Frame,
    FrameSplitter,
    Heartbeat,
    Hello,
    JointInfo,
    Message,
    MsgType,
    State,
    decode_frame,
    decode_message,
    encode_message,
)
from pearl_robot.hardware.transport import SerialConfig, serial_factory

JOINTS = (JointInfo("base_yaw", -2.6, 2.6, 6.0, 3.0), JointInfo("shoulder", -1.9, 1.9, 6.0, 6.0),
          JointInfo("elbow", -2.4, 2.4, 8.0, 3.0))
BOOT_ID = 0xB007B007


def wait_until(predicate, timeout: float = 3.0, period: float = 0.005) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (a bound, not a measured quantity)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


class ScriptedDevice:
    """A device the test drives byte by byte, on the master side of a real pty."""

    def __init__(self) -> None:
        self.endpoint = PtyEndpoint()
        self.splitter = FrameSplitter()
        self.seq = 0
        self.received: list[tuple[Frame, Message]] = []
        self.session: int | None = None

    @property
    def path(self) -> str:
        return self.endpoint.path

    def frame(self, msg: Message, seq: int | None = None, dtime: int = 1000) -> bytes:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        return encode_message(msg, seq, 0, dtime)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.endpoint.write(bytes(view))
            if n == 0:
                time.sleep(0.001)
            view = view[n:]

    def send(self, msg: Message, seq: int | None = None, dtime: int = 1000) -> None:
        self.write(self.frame(msg, seq, dtime))

    def pump(self, timeout: float = 0.01) -> list[tuple[Frame, Message]]:
        new = []
        data = self.endpoint.read(timeout)
        for chunk in self.splitter.feed(data):
            try:
                frame = decode_frame(chunk)
                new.append((frame, decode_message(frame)))
            except FrameError:
                pass
        self.received.extend(new)
        return new

    def wait_for(self, msg_type: MsgType, timeout: float = 3.0, after: int = 0
                 ) -> tuple[Frame, Message] | None:
        deadline = time.monotonic() + timeout
        idx = after
        while time.monotonic() < deadline:
            self.pump()
            for i in range(idx, len(self.received)):
                if self.received[i][0].msg_type == msg_type:
                    return self.received[i]
            idx = len(self.received)
        return None

    def handshake(self, timeout: float = 3.0) -> int:
        got = self.wait_for(MsgType.HELLO, timeout)
        assert got is not None, "the bridge sent no HELLO"
        hello = got[1]
        assert isinstance(hello, Hello)
        self.session = hello.session_id
        self.send(DeviceInfo(hello.session_id, BOOT_ID, 1, 100, 50, 100, 250, 0, "scripted",
                             JOINTS))
        return hello.session_id

    def state(self, position: float, flags: int = DeviceFlags.SESSION | DeviceFlags.SAFE,
              seq: int | None = None) -> bytes:
        n = len(JOINTS)
        return self.frame(State(int(flags), 0xFFFF, np.full(n, position), np.zeros(n),
                                np.zeros(n)), seq)

    def heartbeat(self, flags: int = DeviceFlags.SESSION | DeviceFlags.SAFE) -> bytes:
        return self.frame(Heartbeat(BOOT_ID, int(flags)))

    def close(self) -> None:
        self.endpoint.close()


class Recorder:
    """on_state callback that keeps every sample."""

    def __init__(self) -> None:
        self.samples: list[JointStateSample] = []

    def __call__(self, sample: JointStateSample) -> None:
        self.samples.append(sample)

    def positions(self) -> list[float]:
        return [round(float(s.position[0]), 4) for s in self.samples]


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedDevice, SerialBridge, Recorder]]:
    """A scripted device and a handshaken bridge with a long watchdog (the test controls time)."""
    dev = ScriptedDevice()
    rec = Recorder()
    bridge = SerialBridge(serial_factory(SerialConfig(dev.path)),
                          BridgeConfig(link_timeout_s=5.0, reopen_after_s=10.0,
                                       heartbeat_period_s=0.5),
                          on_state=rec, rng=np.random.default_rng(1)).start()
    dev.handshake()
    bridge.wait_ready(3.0)
    try:
        yield dev, bridge, rec
    finally:
        bridge.stop()
        dev.close()


class EmulatorRig:
    """The firmware emulator (real twin) on a pty, and the real bridge connected to it."""

    def __init__(self, tmp: Path, bridge_config: BridgeConfig | None = None,
                 emulator_config: EmulatorConfig | None = None, symlink: bool = False) -> None:
        self.faults = FaultSwitches()
        self.endpoint = PtyEndpoint(link=tmp / "ttyPEARL" if symlink else None)
        self.plant = make_twin_plant(seed=0)
        self.emulator = FirmwareEmulator(self.plant, self.endpoint,
                                         emulator_config or EmulatorConfig(), self.faults,
                                         rng=np.random.default_rng(0)).start()
        self.recorder = Recorder()
        cfg = bridge_config or BridgeConfig(expected_joints=self.plant.spec.joint_names,
                                            reopen_after_s=0.5)
        self.bridge = SerialBridge(serial_factory(SerialConfig(self.endpoint.host_path)), cfg,
                                   on_state=self.recorder, rng=np.random.default_rng(2))

    def close(self) -> None:
        self.bridge.stop()
        self.emulator.stop()
        self.endpoint.close()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator:
    rigs: list[EmulatorRig] = []

    def make(**kwargs) -> EmulatorRig:
        rig = EmulatorRig(tmp_path, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(rig_factory) -> EmulatorRig:
    r = rig_factory()
    r.bridge.start()
    r.bridge.wait_ready(5.0)
    return r
