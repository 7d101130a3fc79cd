"""The fault matrix, host side: each fault has an expected outcome (counted, safe command,
recovered) and none raises out of the bridge (``internal_errors`` stays 0).

Bytes go through real pseudo-terminals: a scripted device (exact bytes chosen by the test) or
the firmware emulator driving the MuJoCo twin."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.hardware.bridge import BridgeConfig, LinkState, SerialBridge
from pearl_robot.hardware.errors import IncompatibleProtocolError, JointMismatchError
from pearl_robot.hardware.protocol import (
    Command,
    DeviceFlags,
    MsgType,
    encode_frame,
)
from pearl_robot.hardware.transport import SerialConfig, serial_factory

from .conftest import JOINTS, ScriptedDevice, wait_until


def _no_internal_errors(bridge: SerialBridge) -> None:
    assert bridge.events["internal_errors"] == 0
    assert bridge.events["callback_errors"] == 0


def _bad(bridge: SerialBridge) -> int:
    return sum(bridge.counters.frames_bad.values())


def test_random_garbage_between_frames_is_counted_and_every_state_arrives(scripted) -> None:
    dev, bridge, rec = scripted
    rng = np.random.default_rng(0)
    for i in range(50):
        garbage = rng.integers(1, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
        dev.write(garbage + b"\x00" + dev.state(i * 0.01))  # garbage, then a delimiter
    assert wait_until(lambda: len(rec.samples) == 50)
    assert rec.positions() == [round(i * 0.01, 4) for i in range(50)]
    assert _bad(bridge) == 50
    assert bridge.counters.dropped == 0
    assert bridge.status().link is LinkState.READY
    _no_internal_errors(bridge)


def test_garbage_glued_to_a_frame_costs_exactly_that_frame(scripted) -> None:
    dev, bridge, rec = scripted
    glued = {3, 7, 8, 20}
    for i in range(25):
        prefix = b"\x11\x22\x33" if i in glued else b""
        dev.write(prefix + dev.state(float(i)))
    assert wait_until(lambda: len(rec.samples) == 25 - len(glued))
    assert rec.positions() == [float(i) for i in range(25) if i not in glued]
    assert _bad(bridge) == len(glued)
    assert bridge.counters.dropped == len(glued)  # the sequence gaps show the loss too
    _no_internal_errors(bridge)


def test_bit_flips_are_rejected_never_delivered(scripted) -> None:
    dev, bridge, rec = scripted
    rng = np.random.default_rng(1)
    flipped = 0
    for i in range(200):
        frame = bytearray(dev.state(1.5))
        if i % 2 and i != 199:
            pos = int(rng.integers(0, len(frame) - 1))
            frame[pos] ^= 1 << int(rng.integers(0, 8))
            flipped += 1
        dev.write(bytes(frame))
    assert wait_until(lambda: len(rec.samples) == 200 - flipped)
    assert all(p == 1.5 for p in rec.positions())  # no corrupted value got through
    assert _bad(bridge) >= flipped
    assert bridge.counters.dropped == flipped
    _no_internal_errors(bridge)


def test_truncated_frames_are_counted_and_the_next_frame_is_fine(scripted) -> None:
    dev, bridge, rec = scripted
    for cut in (1, 5, 12, 20, 40):
        dev.write(dev.state(9.0)[:cut] + b"\x00")
        dev.write(dev.state(float(cut)))
    assert wait_until(lambda: len(rec.samples) == 5)
    assert rec.positions() == [1.0, 5.0, 12.0, 20.0, 40.0]
    assert bridge.counters.frames_bad["truncated"] + bridge.counters.frames_bad["bad_cobs"] \
        + bridge.counters.frames_bad["bad_crc"] == 5
    _no_internal_errors(bridge)


def test_frames_split_at_every_byte_boundary_through_the_pty(scripted) -> None:
    dev, bridge, rec = scripted
    frames = [dev.state(float(i)) for i in range(3)]
    stream = b"".join(frames)
    n = 0
    for cut in range(1, len(stream)):
        dev.write(stream[:cut])
        dev.write(stream[cut:])
        n += 3
        # renumber the next copy so the bridge does not discard it as duplicates
        frames = [dev.state(float(i)) for i in range(3)]
        stream = b"".join(frames)
    assert wait_until(lambda: len(rec.samples) == n, 10.0)
    assert _bad(bridge) == 0
    _no_internal_errors(bridge)


def test_non_finite_states_are_counted_and_never_delivered(scripted) -> None:
    dev, bridge, rec = scripted
    dev.write(dev.state(float("nan")) + dev.state(0.5) + dev.state(float("inf")))
    assert wait_until(lambda: bridge.counters.frames_bad["non_finite_state"] == 2)
    assert rec.positions() == [0.5]
    _no_internal_errors(bridge)


def test_duplicated_and_reordered_sequence_numbers_are_never_applied(scripted) -> None:
    dev, bridge, rec = scripted
    base = dev.seq
    order = [1, 2, 2, 3, 5, 4, 6, 6, 7]
    for k in order:
        dev.write(dev.state(float(k), seq=base + k - 1))
    assert wait_until(lambda: len(rec.samples) >= 6)
    assert wait_until(lambda: bridge.counters.duplicates == 2)
    assert rec.positions() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
    assert (bridge.counters.duplicates, bridge.counters.late) == (2, 1)
    assert bridge.counters.dropped == 1  # 4 was missing when 5 came; late 4 is not "found"
    _no_internal_errors(bridge)


def test_device_silence_trips_the_host_watchdog_then_recovers() -> None:
    dev = ScriptedDevice()
    bridge = SerialBridge(serial_factory(SerialConfig(dev.path)),
                          BridgeConfig(link_timeout_s=0.2, reopen_after_s=5.0),
                          rng=np.random.default_rng(3)).start()
    try:
        dev.handshake()
        bridge.wait_ready(3.0)
        dev.write(dev.state(0.3, flags=DeviceFlags.SESSION | DeviceFlags.ARMED))
        assert wait_until(lambda: bridge.latest_state is not None)
        mark = len(dev.received)
        # the device goes silent: the host must notice, send the safe command, re-handshake
        assert wait_until(lambda: bridge.status().link is LinkState.STALE, 3.0)
        assert bridge.latest_state is None
        assert bridge.diagnostics().level == 2
        cmd = dev.wait_for(MsgType.COMMAND, 2.0, after=mark)
        assert cmd is not None and np.all(cmd[1].effort == 0.0)
        assert bridge.events["watchdog_trips"] == 1
        dev.handshake()  # answer the re-sent HELLO: recovered
        bridge.wait_ready(3.0)
        assert bridge.status().link is LinkState.READY
        assert bridge.events["handshakes"] == 2
        _no_internal_errors(bridge)
    finally:
        bridge.stop()
        dev.close()


def test_wrong_protocol_version_fails_loudly_and_nothing_is_commanded() -> None:
    dev = ScriptedDevice()
    bridge = SerialBridge(serial_factory(SerialConfig(dev.path)),
                          BridgeConfig(link_timeout_s=5.0), rng=np.random.default_rng(4))
    bridge.start()
    try:
        assert dev.wait_for(MsgType.HELLO, 3.0) is not None
        for seq in range(5):  # a v2 device: intact frames, other version byte
            dev.write(encode_frame(MsgType.HEARTBEAT, seq, 0, 0, bytes(8), version=2))
        with pytest.raises(IncompatibleProtocolError, match="v2.*v1"):
            bridge.wait_ready(3.0)
        assert bridge.status().link is LinkState.FAILED
        assert bridge.counters.frames_bad["wrong_version"] >= 3
        assert bridge.send_command([1.0, 1.0, 1.0]) is False
        mark = len(dev.received)
        dev.pump(0.2)
        assert not any(f.msg_type == MsgType.COMMAND for f, _ in dev.received[mark:])
        assert bridge.diagnostics().level == 2
        _no_internal_errors(bridge)
    finally:
        bridge.stop()
        dev.close()


def test_a_device_with_other_joints_is_refused() -> None:
    dev = ScriptedDevice()
    bridge = SerialBridge(serial_factory(SerialConfig(dev.path)),
                          BridgeConfig(expected_joints=("a", "b", "c")),
                          rng=np.random.default_rng(5)).start()
    try:
        dev.handshake()
        with pytest.raises(JointMismatchError, match="base_yaw"):
            bridge.wait_ready(3.0)
        assert bridge.status().link is LinkState.FAILED
    finally:
        bridge.stop()
        dev.close()


def test_bad_caller_commands_raise_typed_errors_and_send_the_safe_command(scripted) -> None:
    from pearl_robot.hardware.errors import CommandError

    dev, bridge, _ = scripted
    mark = len(dev.received)
    with pytest.raises(CommandError, match="non-finite.*shoulder"):
        bridge.send_command([0.0, float("nan"), 0.0])
    with pytest.raises(CommandError, match="2 efforts"):
        bridge.send_command([0.0, 1.0])
    with pytest.raises(CommandError, match="do not match"):
        bridge.send_command([1.0, 2.0, 3.0], joint_names=["elbow", "shoulder", "wrist"])
    assert bridge.send_command([1.0, 2.0, 3.0], joint_names=["elbow", "shoulder", "base_yaw"])
    assert bridge.send_command([99.0, -99.0, 0.5])  # clipped to the device's limits
    assert wait_until(lambda: sum(f.msg_type == MsgType.COMMAND
                                  for f, _ in dev.pump() or dev.received[mark:]) >= 5)
    cmds = [m.effort for f, m in dev.received[mark:] if isinstance(m, Command)]
    assert [c.tolist() for c in cmds[:3]] == [[0.0, 0.0, 0.0]] * 3
    assert cmds[3].tolist() == [3.0, 2.0, 1.0]  # reordered into device order
    assert cmds[4].tolist() == [JOINTS[0].effort_max, -JOINTS[1].effort_max, 0.5]
    assert bridge.events["commands_rejected"] == 3
    assert bridge.events["commands_clipped"] == 1


# ------------------------------------------------------------------ against the emulator


def test_end_to_end_effort_moves_the_twin_joint(rig) -> None:
    b = rig.bridge
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    start = b.latest_state.position.copy()
    for _ in range(15):
        b.send_command([2.0, 0.0, 0.0])
        assert b.wait_state(b.latest_state.host_time_s, 1.0) is not None
        rig.emulator._stop.wait(0.02)
    moved = b.latest_state.position - start
    assert moved[0] > 0.01  # positive torque on base_yaw turns it positive
    assert b.rtt.count >= 10
    assert b.diagnostics().level == 0
    _no_internal_errors(b)


def test_device_reset_mid_run_is_detected_and_the_robot_stays_disarmed(rig) -> None:
    b = rig.bridge
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    b.send_command([1.0, 0.0, 0.0])
    rig.emulator.request_reset(cut_frame=True)
    assert wait_until(lambda: b.events["handshakes"] >= 2 and
                      b.status().link is LinkState.READY, 5.0)
    assert b.events["device_resets"] >= 1
    assert _bad(b) >= 1  # the frame cut by the reset
    assert not b.wait_for(lambda s: s.armed, 0.3)  # not re-armed by itself
    assert not rig.emulator.status().armed
    _no_internal_errors(b)


def test_rearm_after_reconnect_when_configured(rig_factory) -> None:
    rig = rig_factory(bridge_config=BridgeConfig(rearm_after_reconnect=True))
    b = rig.bridge.start()
    b.wait_ready(5.0)
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    rig.emulator.request_reset(cut_frame=False)
    assert wait_until(lambda: b.events["handshakes"] >= 2, 5.0)
    assert b.wait_for(lambda s: s.armed, 2.0)


def test_port_closed_and_reopened_reconnects_through_the_same_path(rig_factory) -> None:
    rig = rig_factory(symlink=True)
    b = rig.bridge.start()
    b.wait_ready(5.0)
    rig.emulator.request_replug()
    assert wait_until(lambda: b.events["reconnects"] >= 1, 5.0)
    assert wait_until(lambda: b.status().link is LinkState.READY and
                      b.events["port_opens"] >= 2, 8.0)
    assert wait_until(lambda: b.latest_state is not None, 3.0)
    _no_internal_errors(b)


def test_host_silence_makes_the_device_safe_and_the_host_re_handshakes(rig) -> None:
    b = rig.bridge
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    b.send_command([1.0, 1.0, 1.0])
    assert wait_until(lambda: np.any(rig.emulator.status().applied_effort != 0))
    rig.faults.deaf = True  # the device hears nothing: as if the host hung
    assert wait_until(lambda: rig.emulator.status().command_timeout, 2.0)
    assert np.all(rig.emulator.status().applied_effort == 0.0)
    assert wait_until(lambda: not rig.emulator.status().session_open, 2.0)
    assert b.wait_for(lambda s: s.link is not LinkState.READY, 2.0)  # saw SESSION clear
    rig.faults.deaf = False
    b.wait_ready(5.0)
    assert b.faults["command_timeout"] >= 1 and b.faults["link_timeout"] >= 1
    assert not rig.emulator.status().armed
    _no_internal_errors(b)


def test_estop_latches_on_both_sides_until_cleared(rig) -> None:
    from pearl_robot.hardware.errors import CommandError

    b = rig.bridge
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    b.estop()
    assert b.wait_for(lambda s: s.device_flags & DeviceFlags.ESTOP, 2.0)
    assert rig.emulator.status().estop and not rig.emulator.status().armed
    assert b.send_command([2.0, 2.0, 2.0]) is False
    assert np.all(rig.emulator.status().applied_effort == 0.0)
    with pytest.raises(CommandError, match="e-stop"):
        b.arm()
    assert b.diagnostics().level == 1
    b.clear_estop()
    assert b.wait_for(lambda s: not s.estop, 2.0)
    assert not rig.emulator.status().armed  # clearing does not arm
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)


def test_device_estop_input_latches_the_host(rig) -> None:
    b = rig.bridge
    rig.emulator.trigger_estop_input()
    assert b.wait_for(lambda s: s.estop, 2.0)
    assert b.events["device_estops"] == 1
    assert b.send_command([1.0, 0.0, 0.0]) is False


def test_host_command_watchdog_sends_the_safe_command(rig) -> None:
    b = rig.bridge
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    b.send_command([1.0, 0.0, 0.0])
    assert wait_until(lambda: b.events["command_timeouts"] >= 1, 2.0)
    assert b.events["safe_commands"] >= 1
    assert b.wait_for(lambda s: s.safe, 2.0)


def test_lossy_noisy_link_keeps_running(rig_factory) -> None:
    rig = rig_factory()
    rig.faults.drop = 0.05
    rig.faults.corrupt = 0.05
    rig.faults.duplicate = 0.05
    rig.faults.garbage = 0.05
    b = rig.bridge.start()
    b.wait_ready(5.0)
    b.arm()
    for _ in range(60):
        b.send_command([0.5, 0.0, 0.0])
        rig.emulator._stop.wait(0.01)
    assert wait_until(lambda: b.counters.dropped > 0 and _bad(b) > 0 and
                      b.counters.duplicates > 0, 3.0)
    assert len(rig.recorder.samples) > 50
    assert b.status().link is LinkState.READY
    _no_internal_errors(b)


def test_delayed_link_still_works_and_rtt_shows_the_delay(rig_factory) -> None:
    rig = rig_factory()
    rig.faults.delay_s = 0.03
    b = rig.bridge.start()
    b.wait_ready(5.0)
    for _ in range(10):
        b.send_command([0.0, 0.0, 0.0])
        rig.emulator._stop.wait(0.02)
    assert wait_until(lambda: b.rtt.count >= 5, 3.0)
    assert b.rtt.max_s >= 0.03


def test_device_going_silent_trips_the_host_watchdog_and_recovers(rig) -> None:
    b = rig.bridge
    b.arm()
    assert b.wait_for(lambda s: s.armed, 2.0)
    rig.faults.silent = True  # the device's transmitter hangs; it still hears the host
    assert b.wait_for(lambda s: s.link is LinkState.STALE, 2.0)
    assert b.events["watchdog_trips"] == 1 and b.latest_state is None
    assert b.diagnostics().level == 2
    # the host's safe command and re-HELLO reached the device: it is disarmed, zero effort
    assert wait_until(lambda: not rig.emulator.status().armed, 2.0)
    assert np.all(rig.emulator.status().applied_effort == 0.0)
    rig.faults.silent = False
    b.wait_ready(5.0)
    assert wait_until(lambda: b.latest_state is not None, 2.0)
    assert not b.status().armed
    _no_internal_errors(b)
