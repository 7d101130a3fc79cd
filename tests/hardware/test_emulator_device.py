"""The firmware emulator's device logic alone: an in-memory byte link, a fake clock and a plant
without MuJoCo, so the state machine (session, arming, clipping, the two watchdogs) is checked
without a pty, a socket or the wall clock. The OS endpoints have their own tests
(test_emulator.py, test_transport.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import numpy as np

import pearl_robot.hardware.emulator as emulator_module
from pearl_robot.hardware.emulator import EmulatorConfig, FirmwareEmulator
from pearl_robot.hardware.protocol import (
    Arm,
    Command,
    DeviceFlags,
    DeviceInfo,
    Fault,
    FaultCode,
    FrameSplitter,
    Hello,
    Message,
    State,
    decode_frame,
    decode_message,
    encode_message,
)


class _Joint(NamedTuple):
    name: str
    position_min: float
    position_max: float
    velocity_max: float
    effort_max: float


class _Spec(NamedTuple):
    joints: tuple[_Joint, ...]


class _Sample(NamedTuple):
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class _Plant:
    """Two joints that hold still and remember the effort they were given."""

    spec = _Spec((_Joint("a", -1.0, 1.0, 5.0, 2.0), _Joint("b", -1.0, 1.0, 5.0, 4.0)))

    def __init__(self) -> None:
        self.effort = np.zeros(2)

    def apply_command(self, effort: np.ndarray) -> None:
        self.effort = np.asarray(effort, dtype=float).copy()

    def advance(self, duration_s: float) -> _Sample:
        return self.state()

    def state(self) -> _Sample:
        return _Sample(np.zeros(2), np.zeros(2), self.effort.copy())


class _MemoryEndpoint:
    """The byte link as two buffers: what the host sent, what the device wrote."""

    def __init__(self) -> None:
        self.rx = bytearray()
        self.tx = bytearray()

    def read(self, timeout: float) -> bytes:
        data, self.rx = bytes(self.rx), bytearray()
        return data

    def write(self, data: bytes) -> int:
        self.tx += data
        return len(data)

    def close(self) -> None:
        pass


class _Rig:
    def __init__(self) -> None:
        self.t = 100.0
        self.plant = _Plant()
        self.link = _MemoryEndpoint()
        self.device = FirmwareEmulator(
            self.plant, self.link, EmulatorConfig(command_timeout_ms=100, link_timeout_ms=250),
            rng=np.random.default_rng(0), clock=lambda: self.t)
        self._splitter = FrameSplitter()
        self._seq = 0

    def send(self, msg: Message) -> None:
        self.link.rx += encode_message(msg, self._seq, 0, 0)
        self._seq += 1

    def step(self, dt: float = 0.0) -> list[Message]:
        """Advance the clock by ``dt``, run one loop turn, return what the device sent."""
        self.t += dt
        self.device.step(max_wait=0.0)
        out, self.link.tx = bytes(self.link.tx), bytearray()
        return [decode_message(decode_frame(c)) for c in self._splitter.feed(out)]


def _faults(msgs: list[Message]) -> list[FaultCode]:
    return [m.code for m in msgs if isinstance(m, Fault)]


def test_the_device_runs_a_session_over_an_in_memory_link_with_a_fake_clock() -> None:
    rig = _Rig()
    rig.send(Hello(7))
    info = [m for m in rig.step() if isinstance(m, DeviceInfo)]
    assert [i.session_id for i in info] == [7]
    assert info[0].joint_names == ("a", "b")
    # a command before arming is not applied
    rig.send(Command(np.array([1.0, 1.0])))
    rig.step(0.01)
    assert np.all(rig.plant.effort == 0.0)
    rig.send(Arm(True))
    rig.send(Command(np.array([3.0, -1.0])))
    states = [m for m in rig.step(0.01) if isinstance(m, State)]
    assert np.allclose(rig.plant.effort, [2.0, -1.0])  # clipped to effort_max
    assert states[-1].flags & DeviceFlags.ARMED and states[-1].flags & DeviceFlags.CLIPPED
    assert not states[-1].flags & DeviceFlags.SAFE


def test_the_watchdogs_trip_on_the_fake_clock() -> None:
    rig = _Rig()
    rig.send(Hello(1))
    rig.send(Arm(True))
    rig.send(Command(np.array([1.0, 1.0])))
    rig.step()
    assert np.allclose(rig.plant.effort, [1.0, 1.0])
    # no command for longer than command_timeout_ms: the safe command, the session stays
    assert FaultCode.COMMAND_TIMEOUT in _faults(rig.step(0.15))
    assert np.all(rig.plant.effort == 0.0)
    st = rig.device.status()
    assert st.armed and st.command_timeout and st.session_open
    # the host silent for longer than link_timeout_ms: disarmed, session closed
    assert FaultCode.LINK_TIMEOUT in _faults(rig.step(0.15))
    st = rig.device.status()
    assert not st.armed and not st.session_open


def test_the_device_module_opens_no_operating_system_endpoint() -> None:
    """pty, socket and select belong to emulator_endpoints.py; the device only sees the
    DeviceEndpoint protocol."""
    tree = ast.parse(Path(emulator_module.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"os", "pty", "tty", "select", "socket", "errno", "serial"}
