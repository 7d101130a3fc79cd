"""The fault matrix, device side: the firmware emulator (real MuJoCo twin behind a real pty)
driven by a scripted host that sends exactly the bytes each case needs."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from pearl_robot.hardware.bridge import SerialBridge
from pearl_robot.hardware.emulator import (
    EmulatorConfig,
    FaultSwitches,
    FirmwareEmulator,
    make_twin_plant,
)
from pearl_robot.hardware.emulator_endpoints import PtyEndpoint
from pearl_robot.hardware.errors import FrameError
from pearl_robot.hardware.protocol import (
    Arm,
    Command,
    DeviceFlags,
    DeviceInfo,
    EStop,
    Fault,
    FaultCode,
    FrameSplitter,
    Heartbeat,
    Hello,
    Message,
    MsgType,
    State,
    decode_frame,
    decode_message,
    encode_frame,
    encode_message,
    pack_payload,
)
from pearl_robot.hardware.transport import PySerialTransport, SerialConfig, serial_factory

from .conftest import wait_until


class ScriptedHost:
    def __init__(self, path: str) -> None:
        self.t = PySerialTransport(SerialConfig(path))
        self.sp = FrameSplitter()
        self.seq = 0
        self.got: list[tuple[int, Message]] = []

    def send(self, msg: Message, seq: int | None = None) -> None:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        self.t.write(encode_message(msg, seq, 0, 0))

    def pump(self, duration: float = 0.02) -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            for chunk in self.sp.feed(self.t.read(4096)):
                try:
                    f = decode_frame(chunk)
                    self.got.append((f.msg_type, decode_message(f)))
                except FrameError:
                    pass

    def wait(self, kind: type, timeout: float = 2.0, where=lambda m: True):
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            self.pump(0.01)
            for _, m in self.got[seen:]:
                if isinstance(m, kind) and where(m):
                    return m
            seen = len(self.got)
        return None

    def last_state(self) -> State | None:
        states = [m for _, m in self.got if isinstance(m, State)]
        return states[-1] if states else None

    def close(self) -> None:
        self.t.close()


@pytest.fixture
def device():
    endpoint = PtyEndpoint()
    faults = FaultSwitches()
    emu = FirmwareEmulator(make_twin_plant(seed=0), endpoint,
                           EmulatorConfig(command_timeout_ms=100, link_timeout_ms=250), faults,
                           rng=np.random.default_rng(0)).start()
    host = ScriptedHost(endpoint.path)
    yield emu, host
    host.close()
    emu.stop()
    endpoint.close()


def _session(host: ScriptedHost) -> DeviceInfo:
    host.send(Hello(77))
    info = host.wait(DeviceInfo, where=lambda m: m.session_id == 77)
    assert info is not None
    return info


def test_hello_answers_device_info_from_the_robot_spec(device) -> None:
    from pearl_robot.robot.description import load_robot_spec

    emu, host = device
    info = _session(host)
    spec = load_robot_spec()
    assert info.joint_names == spec.joint_names
    assert [j.effort_max for j in info.joints] == pytest.approx(spec.effort_limits())
    assert (info.command_timeout_ms, info.link_timeout_ms) == (100, 250)
    assert emu.status().session_open and not emu.status().armed


def test_host_silence_applies_the_safe_command_then_disarms(device) -> None:
    emu, host = device
    _session(host)
    host.send(Arm(True))
    host.send(Command(np.array([1.0, 2.0, -1.0])))
    assert host.wait(State, where=lambda s: s.flags & DeviceFlags.ARMED and
                     not s.flags & DeviceFlags.SAFE) is not None
    assert np.allclose(emu.status().applied_effort, [1.0, 2.0, -1.0])
    # the host stops sending commands (heartbeats would keep the session, not the command)
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.COMMAND_TIMEOUT) is not None
    assert np.all(emu.status().applied_effort == 0.0)
    st = emu.status()
    assert st.armed and st.command_timeout
    # ... and stops sending anything: the link timeout disarms and closes the session
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.LINK_TIMEOUT) is not None
    assert not emu.status().armed and not emu.status().session_open
    hb = host.wait(Heartbeat, where=lambda h: not h.flags & DeviceFlags.SESSION)
    assert hb is not None and hb.flags & DeviceFlags.SAFE


def test_a_new_command_resumes_after_a_command_timeout(device) -> None:
    emu, host = device
    _session(host)
    host.send(Arm(True))
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.COMMAND_TIMEOUT) is not None
    host.send(Command(np.array([0.5, 0.0, 0.0])))
    assert wait_until(lambda: emu.status().applied_effort[0] == 0.5)
    assert not emu.status().command_timeout


def test_commands_are_ignored_until_armed_and_arming_needs_a_session(device) -> None:
    emu, host = device
    host.send(Arm(True))
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.ARM_REFUSED) is not None
    _session(host)
    host.send(Command(np.array([1.0, 1.0, 1.0])))
    s = host.wait(State, where=lambda s: s.command_seq != 0xFFFF)
    assert s is not None and s.flags & DeviceFlags.SAFE
    assert np.all(emu.status().applied_effort == 0.0)


def test_duplicate_and_late_commands_are_not_applied(device) -> None:
    emu, host = device
    _session(host)
    host.send(Arm(True))
    host.send(Command(np.array([1.0, 0.0, 0.0])), seq=10)
    host.send(Command(np.array([2.0, 0.0, 0.0])), seq=10)  # duplicate
    host.send(Command(np.array([3.0, 0.0, 0.0])), seq=9)  # late
    assert wait_until(lambda: emu.counters.duplicates == 1 and emu.counters.late == 1)
    assert emu.status().applied_effort[0] == 1.0
    assert emu.status().last_command_seq == 10


def test_bad_command_gets_the_safe_command_and_a_fault(device) -> None:
    emu, host = device
    _session(host)
    host.send(Arm(True))
    host.send(Command(np.array([1.0, 1.0, 1.0])))
    assert wait_until(lambda: emu.status().applied_effort[0] == 1.0)
    host.send(Command(np.array([1.0, 1.0])))  # two efforts for three joints
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.BAD_COMMAND) is not None
    assert np.all(emu.status().applied_effort == 0.0)


def test_efforts_beyond_limits_are_clipped_and_flagged(device) -> None:
    emu, host = device
    info = _session(host)
    host.send(Arm(True))
    host.send(Command(np.array([100.0, -100.0, 0.0])))
    s = host.wait(State, where=lambda s: s.flags & DeviceFlags.CLIPPED)
    assert s is not None
    lim = [j.effort_max for j in info.joints]
    assert np.allclose(emu.status().applied_effort, [lim[0], -lim[1], 0.0])


def test_estop_is_latched_without_a_session_and_clear_leaves_it_disarmed(device) -> None:
    emu, host = device
    host.send(EStop(True))
    assert wait_until(lambda: emu.status().estop)
    _session(host)
    host.send(Arm(True))
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.ARM_REFUSED) is not None
    host.send(EStop(False))
    assert wait_until(lambda: not emu.status().estop)
    assert not emu.status().armed


def test_wrong_version_hello_is_never_answered(device) -> None:
    emu, host = device
    host.t.write(encode_frame(MsgType.HELLO, 0, 0, 0, pack_payload(Hello(5)), version=2))
    host.pump(0.3)
    assert not any(isinstance(m, DeviceInfo) for _, m in host.got)
    assert emu.counters.frames_bad["wrong_version"] == 1
    assert not emu.status().session_open
    assert any(isinstance(m, Heartbeat) for _, m in host.got)  # still heard, in v1


def test_garbage_and_truncated_frames_at_the_device_are_counted(device) -> None:
    emu, host = device
    host.t.write(b"\x01\x02\x03\x00" + encode_message(Hello(9), 0, 0)[:7] + b"\x00")
    info = _session(host)
    assert info.session_id == 77
    assert wait_until(lambda: sum(emu.counters.frames_bad.values()) >= 2)
    assert emu.events["internal_errors"] == 0


def test_reset_restarts_numbering_and_sends_boot_fault(device) -> None:
    emu, host = device
    _session(host)
    boot = emu.status().boot_id
    emu.request_reset()
    assert host.wait(Fault, where=lambda f: f.code == FaultCode.BOOT) is not None
    st = emu.status()
    assert st.boot_id != boot and st.boots == 2 and not st.session_open


def test_emulate_cli_serves_the_twin_on_a_pty(tmp_path) -> None:
    """`pearl-robot emulate` as a user runs it: a separate process, the printed path, the
    bridge connects, commands move the twin, Ctrl-C-like termination ends it cleanly."""
    link = tmp_path / "ttyEMU"
    proc = subprocess.Popen([sys.executable, "-m", "pearl_robot.cli", "emulate", "--link",
                             str(link), "--duration", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not (lines and lines[-1].startswith("device: ")) and len(lines) < 50:
            lines.append(proc.stdout.readline())
        assert lines[-1].startswith("device: /dev/pts/"), lines
        assert wait_until(link.exists, 10.0)
        bridge = SerialBridge(serial_factory(SerialConfig(str(link)))).start()
        try:
            info = bridge.wait_ready(10.0)
            assert info.device_name == "pearl-emulator"
            bridge.arm()
            assert bridge.wait_for(lambda s: s.armed, 3.0)
            p0 = bridge.wait_state(0.0, 3.0).position[1]
            for _ in range(10):
                bridge.send_command([0.0, 5.0, 0.0])
                time.sleep(0.02)
            assert bridge.wait_state(time.monotonic(), 3.0).position[1] > p0
        finally:
            bridge.stop()
    finally:
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "stopped:" in out


def test_hardware_package_imports_neither_torch_nor_mujoco() -> None:
    code = ("import sys, pearl_robot.hardware.bridge, pearl_robot.hardware.emulator, "
            "pearl_robot.hardware.emulator_endpoints, "
            "pearl_robot.hardware.emulate_cli, pearl_robot.hardware.examples, "
            "pearl_robot.hardware.transport; "
            "bad = [m for m in ('torch', 'mujoco', 'rclpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("args,message", [
    (["--drop", "2"], "not a probability"),
    (["--reset-every", "0"], "must be > 0"),
    (["--twin-params", "[1, 2]"], "must be a JSON object"),
    (["--twin-params", "{bad"], "not valid JSON"),
])
def test_emulate_cli_rejects_bad_flags_with_one_line(args, message, capsys) -> None:
    from pearl_robot.cli import main

    try:
        rc = main(["emulate", *args, "--duration", "0.1"])
    except SystemExit as exc:  # argparse errors exit 2
        rc = exc.code
    err = capsys.readouterr().err
    assert rc in (1, 2) and message in err
    assert "Traceback" not in err


def test_velocity_fault_disarms_when_enabled() -> None:
    endpoint = PtyEndpoint()
    emu = FirmwareEmulator(make_twin_plant(seed=0), endpoint,
                           EmulatorConfig(velocity_fault=True, command_timeout_ms=2000),
                           rng=np.random.default_rng(0)).start()
    host = ScriptedHost(endpoint.path)
    try:
        _session(host)
        host.send(Arm(True))
        end = time.monotonic() + 3.0
        fault = None
        while fault is None and time.monotonic() < end:  # full torque on the shoulder
            host.send(Command(np.array([0.0, 6.0, 0.0])))
            fault = host.wait(Fault, 0.02, where=lambda f: f.code == FaultCode.LIMIT)
        assert fault is not None and "shoulder" in fault.text
        st = emu.status()
        assert not st.armed and np.all(st.applied_effort == 0.0)
        assert host.wait(State, where=lambda s: s.flags & DeviceFlags.FAULT and
                         not s.flags & DeviceFlags.ARMED) is not None
    finally:
        host.close()
        emu.stop()
        endpoint.close()


def test_emulate_cli_over_tcp_serves_one_host_after_another() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pearl_robot.cli", "emulate", "--tcp",
                             "127.0.0.1:0", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not (lines and lines[-1].startswith("device: ")) and len(lines) < 50:
            lines.append(proc.stdout.readline())
        url = lines[-1].split()[-1]
        assert url.startswith("socket://127.0.0.1:"), lines
        for _ in range(2):  # a second host connects after the first disconnects
            bridge = SerialBridge(serial_factory(SerialConfig(url))).start()
            try:
                bridge.wait_ready(10.0)
                assert bridge.wait_state(0.0, 3.0) is not None
            finally:
                bridge.stop()
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
