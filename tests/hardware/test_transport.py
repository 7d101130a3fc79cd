"""Transport: pyserial URLs (loop://, socket://, pty paths), typed errors on missing ports."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_robot.hardware.bridge import BridgeConfig, LinkState, SerialBridge
from pearl_robot.hardware.emulator import FirmwareEmulator, make_twin_plant
from pearl_robot.hardware.emulator_endpoints import TcpDeviceServer
from pearl_robot.hardware.errors import TransportError
from pearl_robot.hardware.protocol import Command, FrameSplitter, decode_frame, encode_message
from pearl_robot.hardware.transport import PySerialTransport, SerialConfig, serial_factory

from .conftest import wait_until


def test_loop_url_round_trips_frames_through_pyserial() -> None:
    t = PySerialTransport(SerialConfig("loop://"))
    frames = b"".join(encode_message(Command(np.full(3, float(i))), i, 0) for i in range(20))
    t.write(frames)
    got, sp = [], FrameSplitter()
    for _ in range(100):
        got += sp.feed(t.read(4096))
        if len(got) == 20:
            break
    t.close()
    assert [decode_frame(c).seq for c in got] == list(range(20))


def test_missing_port_is_a_transport_error_naming_it(tmp_path) -> None:
    with pytest.raises(TransportError, match="ttyNOPE.*no such device.*/dev/serial/by-id"):
        PySerialTransport(SerialConfig(str(tmp_path / "ttyNOPE")))


def test_open_hints_name_what_to_check() -> None:
    import errno

    from pearl_robot.hardware.transport import open_hint

    assert "dialout" in open_hint("/dev/ttyACM0", OSError(errno.EACCES, "Permission denied"))
    assert "in use" in open_hint("/dev/ttyACM0", OSError(errno.EBUSY, "busy"))
    assert open_hint("socket://127.0.0.1:1", OSError(errno.ECONNREFUSED, "refused")) == ""


def test_bridge_on_a_looped_back_line_never_readies_and_never_raises() -> None:
    """TX wired to RX (a wiring fault): the bridge hears its own HELLOs, counts them as
    unexpected, stays handshaking, and wait_ready reports a timeout."""
    bridge = SerialBridge(serial_factory(SerialConfig("loop://")),
                          BridgeConfig(handshake_retry_s=0.02, heartbeat_period_s=0.02))
    bridge.start()
    try:
        assert wait_until(lambda: bridge.counters.unexpected >= 3, 3.0)
        assert bridge.status().link is LinkState.HANDSHAKING
        assert bridge.send_command([0.0, 0.0, 0.0]) is False
        assert bridge.events["internal_errors"] == 0
    finally:
        bridge.stop()


def test_bridge_over_socket_url_reaches_the_emulator() -> None:
    server = TcpDeviceServer()
    bridge = SerialBridge(serial_factory(SerialConfig(server.url)))
    bridge.start()
    endpoint = server.accept(timeout=5.0)
    emulator = FirmwareEmulator(make_twin_plant(seed=0), endpoint,
                                rng=np.random.default_rng(0)).start()
    try:
        info = bridge.wait_ready(5.0)
        assert info.joint_names == ("base_yaw", "shoulder", "elbow")
        assert wait_until(lambda: bridge.latest_state is not None, 3.0)
    finally:
        bridge.stop()
        emulator.stop()
        endpoint.close()
        server.close()


def test_reopen_backoff_doubles_up_to_the_cap() -> None:
    bridge = SerialBridge(lambda: None, BridgeConfig(backoff_initial_s=0.05,
                                                     backoff_max_s=0.3))
    waits = []
    for _ in range(6):
        bridge._schedule_reopen(100.0)
        waits.append(round(bridge._reopen_at - 100.0, 6))
    assert waits == [0.05, 0.1, 0.2, 0.3, 0.3, 0.3]


def test_port_missing_at_start_is_retried_until_it_appears(tmp_path) -> None:
    """The robot is powered after the host starts: opens fail (counted, DISCONNECTED with the
    reason), then the port appears and the handshake completes."""
    from pearl_robot.hardware.emulator_endpoints import PtyEndpoint

    link = tmp_path / "ttyLATE"
    bridge = SerialBridge(serial_factory(SerialConfig(str(link))),
                          BridgeConfig(backoff_initial_s=0.01, backoff_max_s=0.05))
    bridge.start()
    endpoint = emulator = None
    try:
        assert wait_until(lambda: bridge.events["open_failures"] >= 3, 3.0)
        st = bridge.status()
        assert st.link is LinkState.DISCONNECTED and "ttyLATE" in st.last_error
        endpoint = PtyEndpoint(link=link)
        emulator = FirmwareEmulator(make_twin_plant(seed=0), endpoint,
                                    rng=np.random.default_rng(0)).start()
        bridge.wait_ready(5.0)
        assert bridge.events["port_opens"] == 1
    finally:
        bridge.stop()
        if emulator is not None:
            emulator.stop()
        if endpoint is not None:
            endpoint.close()
