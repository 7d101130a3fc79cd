"""Host side of the serial link: handshake, state in, commands out, watchdogs, reconnect.

ROS-free on purpose: the ROS bridge node (``pearl_robot/ros/``) is a thin adapter that calls
:meth:`SerialBridge.send_command` on each /pearl/command message, publishes what
``on_state`` delivers as /joint_states, and publishes :meth:`SerialBridge.diagnostics` on
/diagnostics. Everything that decides safety lives here, where it is tested without ROS.

One dedicated reader thread owns the port: it reads, splits, decodes, updates state, and
between reads runs the timers (heartbeat, handshake retries, host watchdog, arm/e-stop
reconciliation, reconnect with backoff). Callers' threads only write frames (under a lock).
Nothing that arrives on the wire can raise out of the bridge: every bad frame is counted by
reason and dropped; a bug in handling one frame is logged, counted as ``internal_errors``, and
the loop goes on.

Safety decisions (docs/architecture.md, "Serial link"):
- A new session always starts disarmed; after a reconnect or a device reset the bridge does
  not re-arm unless ``rearm_after_reconnect`` is set.
- E-stop is latched on the host as well as on the device: while latched, every command the
  caller sends is replaced by the safe command (zero effort) and only :meth:`clear_estop`
  clears it. A device-side e-stop latches the host too.
- Host watchdog: no valid frame from the device for ``link_timeout_s`` marks the link stale
  (state samples stop, diagnostics go to ERROR), sends the safe command, and re-handshakes;
  stale for ``reopen_after_s`` closes and reopens the port.
- Command watchdog: armed and no caller command for ``command_timeout_s`` -> one safe command
  (the device's own watchdog then holds it).
- ``arm(when_commanded=True)`` (what the ROS bridge node uses): the device is armed only while
  the caller's commands flow, and disarmed as soon as they stop, before the device's own
  command watchdog would report a fault. A graph that starts or stops therefore never leaves
  the device armed with nobody commanding it.
- A link that is down (port missing, unreadable, vanished, device silent) is retried for ever
  with a bounded backoff. The first problem is logged at ERROR with what to check, then at most
  once per ``problem_log_period_s``. :meth:`SerialBridge.link_failure` tells a caller that
  cannot wait for ever (``pearl-robot adapt --exit-when-done``) when to give up.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pearl_robot.hardware.errors import (
    CommandError,
    FrameError,
    HandshakeError,
    HandshakeTimeoutError,
    IncompatibleProtocolError,
    JointMismatchError,
    TransportError,
    WrongVersionError,
)
from pearl_robot.hardware.link_stats import LinkCounters, RttEstimator, SeqTracker
from pearl_robot.hardware.protocol import (
    DEVICE_TO_HOST,
    NO_COMMAND,
    PROTOCOL_VERSION,
    SEQ_MOD,
    TIME_MOD,
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
    encode_message,
)
from pearl_robot.hardware.transport import Transport

log = logging.getLogger(__name__)

# Plain ints: IntFlag arithmetic costs microseconds per operation in the per-frame path.
_ARMED = int(DeviceFlags.ARMED)
_ESTOP = int(DeviceFlags.ESTOP)
_SAFE = int(DeviceFlags.SAFE)
_COMMAND_TIMEOUT = int(DeviceFlags.COMMAND_TIMEOUT)
_FAULT = int(DeviceFlags.FAULT)
_SESSION = int(DeviceFlags.SESSION)


@dataclass(frozen=True)
class BridgeConfig:
    """Timing and policy of the host side; defaults suit a 20 Hz policy (serial-protocol.md)."""

    heartbeat_period_s: float = 0.05
    """Send a HEARTBEAT when no other frame went out for this long."""
    link_timeout_s: float = 0.25
    """Host watchdog: no valid device frame for this long -> link stale, safe command."""
    command_timeout_s: float = 0.1
    """Armed and no caller command for this long -> send the safe command once."""
    handshake_retry_s: float = 0.2
    """Resend HELLO this often until DEVICE_INFO arrives."""
    backoff_initial_s: float = 0.05
    """First wait before reopening a port that failed or vanished."""
    backoff_max_s: float = 2.0
    """Longest wait between reopen attempts (the wait doubles up to this)."""
    reopen_after_s: float = 1.0
    """Stale this long (device silent) -> close and reopen the port (USB re-enumeration)."""
    control_retry_s: float = 0.1
    """Resend ARM / ESTOP this often until the device's flags confirm them (lossy links)."""
    expected_joints: tuple[str, ...] | None = None
    """Joint names the host expects (from the robot spec); a device reporting others is
    refused at handshake. None accepts any device."""
    rearm_after_reconnect: bool = False
    """Re-arm automatically after a re-handshake if the caller had armed. Off: a reconnect
    or device reset leaves the robot disarmed until someone arms it again."""
    incompatible_after: int = 3
    """Intact frames of another protocol version, with no valid frame between, before the
    bridge declares the device incompatible and stops talking to it."""
    problem_log_period_s: float = 10.0
    """While the link is down, its problem is logged at once (ERROR, with what to check),
    then repeated at most this often with the time down and the attempts made, so a robot
    left unplugged overnight does not fill the log."""
    idle_disarm_fraction: float = 0.75
    """``arm(when_commanded=True)``: the caller's commands count as stopped after this
    fraction of the device's command timeout (DEVICE_INFO ``command_timeout_ms``, capped at
    ``command_timeout_s``); the bridge then disarms before the device's own watchdog trips."""


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    """No open port (opening, or waiting to reopen)."""
    HANDSHAKING = "handshaking"
    """Port open; HELLO sent, waiting for DEVICE_INFO."""
    READY = "ready"
    """Session open and fresh: states arrive, commands are sent."""
    STALE = "stale"
    """Session open but the device went silent; re-handshaking."""
    FAILED = "failed"
    """Incompatible protocol or wrong joints: the bridge will not command this device."""
    STOPPED = "stopped"


class JointStateSample(NamedTuple):
    """One STATE frame mapped to joint names (device order = command order)."""

    names: tuple[str, ...]
    position: np.ndarray
    """rad (or m for slide joints)."""
    velocity: np.ndarray
    """rad/s."""
    effort: np.ndarray
    """N*m, the effort being applied (the safe command shows as zeros)."""
    device_time_s: float
    """Device clock at sampling, unwrapped (s since the device booted)."""
    host_time_s: float
    """Host monotonic clock when the frame was decoded."""
    flags: int
    """:class:`DeviceFlags` bits."""
    command_seq: int
    """Sequence number of the host COMMAND the device was applying."""


class BridgeStatus(NamedTuple):
    link: LinkState
    armed: bool
    """The device reports ARMED."""
    estop: bool
    """E-stop latched (host request or device flag)."""
    safe: bool
    """The device applies its safe command (or the link is not ready)."""
    command_timeout: bool
    """The device's watchdog tripped (armed, no fresh command)."""
    device_flags: int
    device_info: DeviceInfo | None
    last_error: str
    last_fault: Fault | None
    state_age_s: float
    """Seconds since the last STATE (inf if none)."""
    down_s: float = 0.0
    """Seconds since the link was last ready (since the bridge started if it never was);
    0 while ready."""
    open_attempts: int = 0
    """Port opens tried (failed or not) since the link was last ready."""


class LinkDiagnostics(NamedTuple):
    """What a /diagnostics status needs: level (0 OK, 1 WARN, 2 ERROR), message, key-values."""

    level: int
    message: str
    values: dict[str, str]


class SerialBridge:
    """The host end of one serial link. Start it, wait for ready, then command and read."""

    def __init__(self, transport_factory: Callable[[], Transport],
                 config: BridgeConfig | None = None, *,
                 on_state: Callable[[JointStateSample], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: np.random.Generator | None = None, port_name: str = "") -> None:
        self.config = config or BridgeConfig()
        self.port_name = port_name or "the device"
        """What the link is called in messages and logs (the port path or URL)."""
        self._factory = transport_factory
        self._state_callback = on_state
        self._clock = clock
        self._rng = rng if rng is not None else np.random.default_rng()
        self._transport: Transport | None = None
        self._tx_lock = threading.Lock()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._splitter = FrameSplitter()
        self._rx_seq = SeqTracker()
        self.counters = LinkCounters()
        self.rtt = RttEstimator()
        self.events: Counter[str] = Counter()
        """Link events: handshakes, reconnects, device_resets, watchdog_trips,
        command_timeouts, safe_commands, commands_clipped, commands_rejected, ..."""
        self.faults: Counter[str] = Counter()
        """FAULT frames received, by code name."""
        # link state (written by the reader thread, read anywhere under _cond)
        self._link = LinkState.DISCONNECTED
        self._session = 0
        self._info: DeviceInfo | None = None
        self._boot_id: int | None = None
        self._device_flags = 0
        self._latest: JointStateSample | None = None
        self._last_error = ""
        self._last_fault: Fault | None = None
        self._wrong_version_run = 0
        self._peer_version: int | None = None
        self._time_base = 0
        self._last_dtime: int | None = None
        # host intent
        self._want_armed = False
        self._arm_when_commanded = False
        self._host_estop = False
        self._estop_clear_pending = False
        # timers (monotonic seconds)
        now = clock()
        self._tx_seq = 0
        self._last_tx = -1e9
        self._last_rx_valid = now
        self._last_hello = -1e9
        self._last_state_t = -1e9
        self._last_user_cmd = -1e9
        self._last_control_tx = -1e9
        self._last_arm_tx = -1e9
        self._last_disarm_tx = -1e9
        self._safe_sent = False
        self._stale_since: float | None = None
        self._backoff = self.config.backoff_initial_s
        self._reopen_at = now
        self._down_since = now
        self._open_attempts = 0
        self._problem_logged_at: float | None = None
        self._joint_names: tuple[str, ...] = ()
        self._effort_max = np.zeros(0)
        self._effort_min = np.zeros(0)
        self.last_command_seq: int | None = None
        """Sequence number of the newest caller command sent (STATE.command_seq echoes it)."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SerialBridge:
        """Start the reader thread (opens the port, then handshakes). Returns self."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="serial-bridge", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Send the safe command and DISARM (best effort), then close the port."""
        if self._link is LinkState.READY and self._info is not None:
            self._send_safe("bridge stopping")
            self._send(Arm(False))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_transport()
        self._set_link(LinkState.STOPPED, "stopped")

    def __enter__(self) -> SerialBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 5.0) -> DeviceInfo:
        """Block until the handshake completes; raise a typed error naming why it did not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._link is not LinkState.READY:
                if self._link is LinkState.FAILED:
                    raise self._failure
                left = deadline - time.monotonic()
                if left <= 0:
                    bad = sum(self.counters.frames_bad.values())
                    raise HandshakeTimeoutError(
                        f"no device info within {timeout:.1f} s (link {self._link.value}; "
                        f"{self._last_error or 'no reply to HELLO'}; frames ok "
                        f"{self.counters.frames_ok}, bad {bad})")
                self._cond.wait(min(left, 0.05))
            assert self._info is not None
            return self._info

    def wait_for(self, predicate: Callable[[BridgeStatus], bool], timeout: float) -> bool:
        """Wait until ``predicate(status)`` holds (re-checked after every frame)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self._status_locked()):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    # ------------------------------------------------------------------ caller API

    @property
    def device_info(self) -> DeviceInfo | None:
        return self._info

    @property
    def latest_state(self) -> JointStateSample | None:
        """Newest fresh state, or None while the link is not ready."""
        with self._cond:
            return self._latest if self._link is LinkState.READY else None

    def wait_state(self, newer_than: float, timeout: float) -> JointStateSample | None:
        """Wait for a state decoded after host time ``newer_than`` (monotonic seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                s = self._latest
                if s is not None and s.host_time_s > newer_than and \
                        self._link is LinkState.READY:
                    return s
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def send_command(self, effort: Sequence[float] | np.ndarray,
                     joint_names: Sequence[str] | None = None) -> bool:
        """Send joint efforts (N*m). Returns True if the caller's command went out.

        ``joint_names`` gives the order of ``effort`` (e.g. a bundle's action names); without
        it, efforts are in the device's joint order. Efforts beyond the device's limits are
        clipped (counted). Returns False, sending nothing, while the link is not ready; returns
        False after sending the safe command while the e-stop is latched. Raises
        :class:`CommandError` (after sending the safe command) for a wrong length, an unknown
        joint name or a non-finite value.
        """
        info = self._info
        if self._link is not LinkState.READY or info is None:
            self.events["commands_not_ready"] += 1
            return False
        arr = np.asarray(effort, dtype=np.float64).reshape(-1)
        names = self._joint_names
        if joint_names is not None:
            idx = {n: i for i, n in enumerate(joint_names)}
            if len(joint_names) != arr.shape[0] or set(idx) != set(names):
                self._reject(f"command joints {list(joint_names)} with {arr.shape[0]} values "
                             f"do not match the device joints {list(names)}")
            arr = arr[[idx[n] for n in names]]
        elif arr.shape[0] != len(names):
            self._reject(f"command has {arr.shape[0]} efforts, the device has {len(names)} "
                         f"joints {list(names)}")
        if not np.isfinite(arr).all():
            bad = [names[i] for i in np.flatnonzero(~np.isfinite(arr))]
            self._reject(f"command has non-finite effort for joint(s) {bad}")
        now = self._clock()
        self._last_user_cmd = now
        if self._host_estop or self._device_flags & _ESTOP:
            self._send_safe("e-stop latched")
            return False
        clipped = np.clip(arr, self._effort_min, self._effort_max)
        if (clipped != arr).any():
            self.events["commands_clipped"] += 1
        # The frame stream is ordered, so what the device will be when this command arrives
        # is decided by the last ARM/DISARM sent, not by the last STATE (which may not have
        # answered it yet): a DISARM after the last ARM means disarmed; an ARM within a retry
        # period means armed. Only ARM/DISARM count, not EStop: the DISARM of an idle disarm a
        # tick ago must not hold the re-arm back, or the device ignores the next commands
        # (219 in a loaded 2-minute demo run before this).
        disarm_last = self._last_disarm_tx > self._last_arm_tx
        disarmed = disarm_last or not self._device_flags & _ARMED
        arm_in_flight = (not disarm_last
                         and now - self._last_arm_tx < self.config.control_retry_s)
        if disarmed and not arm_in_flight:
            if self._arm_when_commanded and self._want_armed:
                self._send(Arm(True), now=now)  # commands flow: arm, then apply this one
            else:
                # the device ignores it: what tells a measured run how much of it the robot
                # really executed
                self.events["commands_while_disarmed"] += 1
        self._safe_sent = False
        seq = self._send(Command(clipped), now=now)
        if seq is None:
            return False
        self.rtt.sent(seq, now)
        self.last_command_seq = seq
        return True

    def arm(self, when_commanded: bool = False) -> None:
        """Ask the device to arm (resent until its flags confirm; refused under e-stop).

        ``when_commanded``: arm only while the caller's commands flow. ARM goes out with the
        first command (and with the first one after a pause); when the commands stop for
        ``idle_disarm_fraction`` of the device's command timeout, the bridge sends the safe
        command and DISARM, so the device's own watchdog never trips at start-up or
        shutdown. The intent stays until :meth:`disarm`, an e-stop or a reconnect (without
        ``rearm_after_reconnect``). Without it, the device arms now and the host command
        watchdog starts at once.
        """
        if self._host_estop:
            raise CommandError("cannot arm: the e-stop is latched; clear it first")
        self._want_armed = True
        self._arm_when_commanded = when_commanded
        if when_commanded:
            return
        self._last_user_cmd = self._clock()
        self._send(Arm(True))

    def disarm(self) -> None:
        self._want_armed = False
        self._arm_when_commanded = False
        self._send(Arm(False))

    def link_failure(self, give_up_after_s: float = float("inf")) -> str | None:
        """Why a caller should stop waiting for this link, or None while it may still come.

        A FAILED link (another protocol version, a device with other joints) never recovers;
        any other link is retried for ever, and counts as failed here once it has not been
        ready for ``give_up_after_s`` (a missing, unreadable or vanished port, a device that
        stays silent). The message names the port, the time down and the last error.
        """
        st = self.status()
        if st.link is LinkState.FAILED:
            return f"serial link to {self.port_name} failed: {st.last_error}"
        if st.link in (LinkState.READY, LinkState.STOPPED) or st.down_s < give_up_after_s:
            return None
        return (f"serial link to {self.port_name} not ready for {st.down_s:.1f} s "
                f"({st.open_attempts} port open attempt(s)): "
                f"{st.last_error or 'no reply to HELLO'}")

    def estop(self) -> None:
        """Latch the e-stop on host and device: safe command now, commands ignored until
        :meth:`clear_estop`."""
        self._host_estop = True
        self._want_armed = False
        self._estop_clear_pending = False
        self.events["estops"] += 1
        self._send(EStop(True))
        if self._info is not None:
            self._send_safe("e-stop")

    def clear_estop(self) -> None:
        """Clear the latched e-stop (host and device). The robot stays disarmed."""
        self._host_estop = False
        self._estop_clear_pending = True
        self._send(EStop(False))

    def status(self) -> BridgeStatus:
        with self._cond:
            return self._status_locked()

    def stats(self) -> dict[str, float]:
        """All counters as one flat dict (for /diagnostics and benchmarks)."""
        out: dict[str, float] = dict(self.counters.as_dict())
        out.update({f"events.{k}": v for k, v in sorted(self.events.items())})
        out.update({f"faults.{k}": v for k, v in sorted(self.faults.items())})
        out["splitter_oversize"] = self._splitter.oversize
        out["rtt_count"] = self.rtt.count
        out["rtt_last_ms"] = self.rtt.last_s * 1e3
        out["rtt_mean_ms"] = self.rtt.mean_s * 1e3
        out["rtt_max_ms"] = self.rtt.max_s * 1e3
        return out

    def diagnostics(self) -> LinkDiagnostics:
        st = self.status()
        values = {k: (f"{v:.3f}" if isinstance(v, float) else str(v))
                  for k, v in self.stats().items()}
        values.update(link=st.link.value, armed=str(st.armed), estop=str(st.estop),
                      safe=str(st.safe), command_timeout=str(st.command_timeout),
                      state_age_s=f"{st.state_age_s:.3f}", last_error=st.last_error,
                      protocol_version=str(PROTOCOL_VERSION))
        if st.device_info is not None:
            values.update(device=st.device_info.device_name,
                          firmware=str(st.device_info.firmware_version),
                          boot_id=f"{st.device_info.boot_id:08x}")
        if st.last_fault is not None:
            values["last_fault"] = (f"{_fault_name(st.last_fault.code)}: "
                                    f"{st.last_fault.text}")
        values.update(port=self.port_name, down_s=f"{st.down_s:.1f}",
                      open_attempts=str(st.open_attempts))
        if st.link is not LinkState.READY:
            return LinkDiagnostics(
                2, f"serial link to {self.port_name} {st.link.value} for {st.down_s:.1f} s: "
                f"{st.last_error or 'not opened yet'}", values)
        if st.estop:
            return LinkDiagnostics(1, "e-stop latched", values)
        if st.command_timeout:
            return LinkDiagnostics(1, "device watchdog: no fresh command, safe command "
                                   "applied", values)
        if st.device_flags & _FAULT:
            return LinkDiagnostics(1, "device fault active", values)
        return LinkDiagnostics(0, "armed" if st.armed else "ready, disarmed", values)

    # ------------------------------------------------------------------ internals

    @property
    def _failure(self) -> HandshakeError:
        if self._peer_version is not None:
            return IncompatibleProtocolError(self._last_error)
        return JointMismatchError(self._last_error)

    def _status_locked(self) -> BridgeStatus:
        flags = self._device_flags
        ready = self._link is LinkState.READY
        age = (self._clock() - self._latest.host_time_s) if self._latest else float("inf")
        return BridgeStatus(
            link=self._link, armed=ready and bool(flags & _ARMED),
            estop=self._host_estop or bool(flags & _ESTOP),
            safe=not ready or bool(flags & _SAFE),
            command_timeout=ready and bool(flags & _COMMAND_TIMEOUT),
            device_flags=flags, device_info=self._info, last_error=self._last_error,
            last_fault=self._last_fault, state_age_s=age,
            down_s=0.0 if ready else max(self._clock() - self._down_since, 0.0),
            open_attempts=self._open_attempts)

    def _set_link(self, link: LinkState, why: str) -> None:
        with self._cond:
            old = self._link
            now = self._clock()
            down_s = now - self._down_since
            if link is not old:
                self._link = link
                if old is LinkState.READY:
                    self._down_since = now
                    self._open_attempts = 0
            if link is not LinkState.READY:
                self._last_error = why
            self._cond.notify_all()
        if link is old:
            return
        name = self.port_name
        if link is LinkState.READY:
            after = (f" (after {down_s:.1f} s down)" if self._problem_logged_at is not None
                     else "")
            log.info("serial link to %s %s -> ready: %s%s", name, old.value, why, after)
            self._problem_logged_at = None
        elif link is LinkState.FAILED:
            log.error("serial link to %s failed: %s", name, why)
        elif link is LinkState.STOPPED:
            log.info("serial link to %s %s -> stopped", name, old.value)
        elif old is LinkState.READY:
            log.warning("serial link to %s ready -> %s: %s", name, link.value, why)
            self._problem_logged_at = now
        elif link is LinkState.HANDSHAKING:
            # a normal start logs it; inside a retry cycle it is part of the problem
            log.log(logging.INFO if self._problem_logged_at is None else logging.DEBUG,
                    "serial link to %s %s -> handshaking: %s", name, old.value, why)
        else:
            self._problem(why)

    def _problem(self, why: str) -> None:
        """Log a problem of a link that is down: the first at once (ERROR), then at most once
        per ``problem_log_period_s`` (the reconnect loop itself runs every few seconds)."""
        now = self._clock()
        last = self._problem_logged_at
        if last is None:
            log.error("serial link to %s: %s (retrying; repeated here at most every %.0f s)",
                      self.port_name, why, self.config.problem_log_period_s)
        elif now - last >= self.config.problem_log_period_s:
            log.warning("serial link to %s still %s after %.0f s (%d port open attempt(s)): %s",
                        self.port_name, self._link.value, now - self._down_since,
                        self._open_attempts, why)
        else:
            self.events["log_lines_suppressed"] += 1
            return
        self._problem_logged_at = now

    def _reject(self, why: str) -> None:
        self.events["commands_rejected"] += 1
        self._send_safe(why)
        raise CommandError(f"{why}; sent the safe command (zero effort) instead")

    def _send_safe(self, why: str) -> None:
        info = self._info
        if info is None:
            return
        if self._send(Command(np.zeros(len(info.joints)))) is not None:
            self.events["safe_commands"] += 1
            self._safe_sent = True
            log.debug("safe command sent: %s", why)

    def _send(self, msg: Message, now: float | None = None) -> int | None:
        """Encode and write one frame; returns its seq, or None if there is no working port."""
        with self._tx_lock:
            transport = self._transport
            if transport is None:
                return None
            seq = self._tx_seq
            frame = encode_message(msg, seq, self._ack_seq(), self._last_dtime or 0)
            try:
                transport.write(frame)
            except TransportError as exc:
                self._last_error = str(exc)
                self._tx_broken = True
                return None
            self._tx_seq = (seq + 1) % SEQ_MOD
            self._last_tx = self._clock() if now is None else now
            self.counters.frames_tx += 1
            self.counters.bytes_tx += len(frame)
            if isinstance(msg, (Arm, EStop)):
                self._last_control_tx = self._last_tx
            if isinstance(msg, Arm):
                if msg.arm:
                    self._last_arm_tx = self._last_tx
                else:
                    self._last_disarm_tx = self._last_tx
            return seq

    _tx_broken = False

    def _ack_seq(self) -> int:
        return self._rx_seq.last if self._rx_seq.last is not None else 0

    def _close_transport(self) -> None:
        with self._tx_lock:
            t, self._transport = self._transport, None
        if t is not None:
            t.close()

    def _open(self, now: float) -> None:
        self._open_attempts += 1
        try:
            transport = self._factory()
        except TransportError as exc:
            self.events["open_failures"] += 1
            was = self._link
            self._set_link(LinkState.DISCONNECTED, str(exc))
            if was is LinkState.DISCONNECTED:  # no state change: _set_link logged nothing
                self._problem(str(exc))
            self._schedule_reopen(now)
            return
        with self._tx_lock:
            self._transport = transport
            self._tx_broken = False
            try:  # end any partial frame the device was receiving (spec section 2)
                transport.write(b"\x00")
            except TransportError:
                self._tx_broken = True
        self._splitter.reset()
        self.events["port_opens"] += 1
        self._begin_handshake(now, "port opened")

    def _command_idle_s(self) -> float:
        """How long without a caller command counts as "commands stopped"."""
        cfg = self.config
        info = self._info
        if not self._arm_when_commanded or info is None or not info.command_timeout_ms:
            return cfg.command_timeout_s
        return min(cfg.command_timeout_s,
                   cfg.idle_disarm_fraction * info.command_timeout_ms * 1e-3)

    def _schedule_reopen(self, now: float) -> None:
        self._reopen_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.config.backoff_max_s)

    def _begin_handshake(self, now: float, why: str) -> None:
        self._session = int(self._rng.integers(1, 1 << 32))
        self._stale_since = now
        self._set_link(LinkState.HANDSHAKING, why)
        self._send_hello(now)

    def _send_hello(self, now: float) -> None:
        self._last_hello = now
        self._send(Hello(self._session), now=now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a bug must not kill the link: log, count, go on
                self.events["internal_errors"] += 1
                if self.events["internal_errors"] <= 3:
                    log.exception("serial bridge: internal error (continuing)")
                time.sleep(0.01)

    def _step(self) -> None:
        now = self._clock()
        if self._link is LinkState.FAILED:
            self._stop.wait(0.05)
            if self._transport is not None:
                self._drain()
            return
        if self._transport is None:
            if now < self._reopen_at:
                self._stop.wait(min(self._reopen_at - now, 0.05))
                return
            self._open(now)
            if self._transport is None:
                return
        if self._tx_broken:
            self._lost_port("write failed: " + self._last_error)
            return
        self._drain()
        self._tick(self._clock())

    def _drain(self) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            data = transport.read(4096)
        except TransportError as exc:
            self._lost_port(str(exc))
            return
        if data:
            self.counters.bytes_rx += len(data)
            now = self._clock()
            for chunk in self._splitter.feed(data):
                self._handle_chunk(chunk, now)
            if self._splitter.oversize:
                self.counters.frames_bad["oversize"] = self._splitter.oversize

    def _lost_port(self, why: str) -> None:
        self._close_transport()
        if self._link is LinkState.FAILED:  # terminal: never reconnect to that device
            return
        self.events["reconnects"] += 1
        self._stale_since = None
        self._set_link(LinkState.DISCONNECTED, why)
        self._schedule_reopen(self._clock())

    def _handle_chunk(self, chunk: bytes, now: float) -> None:
        try:
            frame = decode_frame(chunk)
            msg = decode_message(frame)
        except WrongVersionError as exc:
            self.counters.frames_bad[exc.reason] += 1
            self._wrong_version_run += 1
            if self._wrong_version_run >= self.config.incompatible_after and \
                    self._link is not LinkState.FAILED:
                self._peer_version = exc.version
                self._fail(f"device speaks serial protocol v{exc.version}, this host speaks "
                           f"v{PROTOCOL_VERSION}: update the firmware or pearl_robot so they "
                           "match; the bridge will not command this device")
            return
        except FrameError as exc:
            self.counters.frames_bad[exc.reason] += 1
            if sum(self.counters.frames_bad.values()) <= 5:
                log.warning("serial: dropped a bad frame: %s", exc)
            return
        self._wrong_version_run = 0
        if frame.msg_type not in DEVICE_TO_HOST:
            self.counters.unexpected += 1
            return
        self.counters.frames_ok += 1
        if self._link is LinkState.FAILED:
            return
        self._last_rx_valid = now
        self._track_time(frame.device_time_us)
        if isinstance(msg, DeviceInfo):
            self._on_device_info(frame.seq, msg, now)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(frame.seq, msg, now)
        else:
            result = self._rx_seq.observe(frame.seq)
            self.counters.count_seq(result)
            if isinstance(msg, State):
                if result.accept:
                    self._on_state(msg, now)
            elif isinstance(msg, Fault):
                self._on_fault(msg)
        with self._cond:
            self._cond.notify_all()

    def _track_time(self, dtime: int) -> None:
        if self._last_dtime is not None:
            step = (dtime - self._last_dtime) % TIME_MOD
            if step < TIME_MOD // 2:  # forward (wrapping past 2^32 adds a full turn)
                if dtime < self._last_dtime:
                    self._time_base += TIME_MOD
            else:
                return  # a late frame; keep the newest time
        self._last_dtime = dtime

    def _device_time_s(self) -> float:
        return (self._time_base + (self._last_dtime or 0)) * 1e-6

    def _fail(self, why: str) -> None:
        self._want_armed = False
        self._set_link(LinkState.FAILED, why)  # logs it at ERROR

    def _on_device_info(self, seq: int, info: DeviceInfo, now: float) -> None:
        if info.session_id != self._session:
            self.events["stale_device_info"] += 1
            return
        expected = self.config.expected_joints
        if expected is not None and tuple(expected) != info.joint_names:
            self._fail(f"device {info.device_name!r} reports joints {list(info.joint_names)}, "
                       f"the robot spec expects {list(expected)}: wrong robot, firmware or "
                       "joint order; the bridge will not command it")
            return
        if info.heartbeat_period_ms and self.config.heartbeat_period_s * 1e3 >= \
                info.link_timeout_ms:
            log.warning("host heartbeat period %.0f ms is not shorter than the device's link "
                        "timeout %d ms; the device will keep timing out",
                        self.config.heartbeat_period_s * 1e3, info.link_timeout_ms)
        if self._boot_id is not None and info.boot_id != self._boot_id:
            self.events["device_resets"] += 1
            log.warning("serial: device %r rebooted (boot id %08x -> %08x)",
                        info.device_name, self._boot_id, info.boot_id)
        reconnect = self._info is not None
        if self._boot_id != info.boot_id:
            self._time_base = 0
            self._last_dtime = None
        self._boot_id = info.boot_id
        self._rx_seq.reset(seq)
        self.rtt.clear()
        self._joint_names = info.joint_names
        self._effort_max = np.array([j.effort_max for j in info.joints])
        self._effort_min = -self._effort_max
        with self._cond:
            self._info = info
            self._device_flags = 0
            self._latest = None
        if reconnect and not self.config.rearm_after_reconnect:
            self._want_armed = False
        self._stale_since = None
        self._backoff = self.config.backoff_initial_s
        self.events["handshakes"] += 1
        self._set_link(LinkState.READY, "device info received")
        self._last_error = ""
        if self._host_estop:
            self._send(EStop(True), now=now)

    def _on_heartbeat(self, seq: int, hb: Heartbeat, now: float) -> None:
        if self._boot_id is not None and hb.ident != self._boot_id:
            # The device rebooted: its numbering restarted, our session is gone.
            self._rx_seq.reset(seq)
            self._time_base = 0
            self._last_dtime = None
            if self._link is LinkState.READY:
                self.events["device_resets"] += 1
                self._boot_id = hb.ident
                log.warning("serial: device rebooted (heartbeat boot id %08x)", hb.ident)
                self._session_lost(now, "device rebooted")
            return
        result = self._rx_seq.observe(seq)
        self.counters.count_seq(result)
        with self._cond:
            self._device_flags = hb.flags
        self._sync_host_estop(hb.flags)
        if self._link is LinkState.READY and not hb.flags & _SESSION:
            self._session_lost(now, "device closed the session (its link timeout)")

    def _session_lost(self, now: float, why: str) -> None:
        with self._cond:
            self._latest = None
            self._device_flags = 0
        self.events["sessions_lost"] += 1
        self._begin_handshake(now, why)

    def _sync_host_estop(self, flags: int) -> None:
        if flags & _ESTOP:
            if not self._host_estop and not self._estop_clear_pending:
                log.warning("serial: the device latched its e-stop")
                self._host_estop = True
                self.events["device_estops"] += 1
            self._want_armed = False
        elif self._estop_clear_pending:
            self._estop_clear_pending = False

    def _on_state(self, st: State, now: float) -> None:
        info = self._info
        if self._link is not LinkState.READY or info is None:
            self.events["states_outside_session"] += 1
            return
        if st.position.shape[0] != len(info.joints):
            self.counters.frames_bad["joint_count"] += 1
            return
        if not (np.isfinite(st.position).all() and np.isfinite(st.velocity).all()
                and np.isfinite(st.effort).all()):
            # A sensor fault: never hand NaN joint states to the policy. Persisting, it
            # starves the host watchdog, which then sends the safe command.
            self.counters.frames_bad["non_finite_state"] += 1
            return
        if st.command_seq != NO_COMMAND:
            self.rtt.acked(st.command_seq, now)
        sample = JointStateSample(self._joint_names, st.position, st.velocity, st.effort,
                                  self._device_time_s(), now, st.flags, st.command_seq)
        with self._cond:
            self._device_flags = st.flags
            self._latest = sample
            self._last_state_t = now
        self._sync_host_estop(st.flags)
        if self._state_callback is not None:
            try:
                self._state_callback(sample)
            except Exception:
                self.events["callback_errors"] += 1
                log.exception("serial bridge: on_state callback raised (continuing)")

    def _on_fault(self, fault: Fault) -> None:
        name = _fault_name(fault.code)
        self.faults[name] += 1
        self._last_fault = fault
        if fault.code == FaultCode.ARM_REFUSED:
            self._want_armed = False
        if self.faults[name] <= 3:
            log.warning("serial: device fault %s: %s", name, fault.text)

    def _tick(self, now: float) -> None:
        cfg = self.config
        link = self._link
        if link is LinkState.READY and now - self._last_rx_valid > cfg.link_timeout_s:
            self.events["watchdog_trips"] += 1
            self._stale_since = now
            self._send_safe("host watchdog: device silent")
            with self._cond:
                self._latest = None
            self._set_link(LinkState.STALE, f"no valid frame from the device for "
                           f"{now - self._last_rx_valid:.3f} s")
            self._send_hello(now)
            link = LinkState.STALE
        if link in (LinkState.HANDSHAKING, LinkState.STALE):
            if self._stale_since is None:
                self._stale_since = now
            silent = now - max(self._stale_since, self._last_rx_valid)
            if silent > cfg.reopen_after_s:
                self._lost_port(f"device silent for {silent:.1f} s; reopening the port")
                return
            if now - self._last_hello >= cfg.handshake_retry_s:
                self._send_hello(now)
        if link is LinkState.READY:
            flags = self._device_flags
            idle = now - self._last_user_cmd > self._command_idle_s()
            if flags & _ARMED and not self._safe_sent and idle:
                # counted after the send: whoever sees the timeout also sees the safe command
                self._send_safe("host command watchdog: caller sent no command")
                if self._arm_when_commanded:  # before the device's own watchdog trips
                    self._send(Arm(False), now=now)
                    self.events["idle_disarms"] += 1
                self.events["command_timeouts"] += 1
            want_armed = self._want_armed and not (self._arm_when_commanded and idle)
            if now - self._last_control_tx >= cfg.control_retry_s:
                if self._host_estop and not flags & _ESTOP:
                    self._send(EStop(True), now=now)
                elif self._estop_clear_pending and flags & _ESTOP:
                    self._send(EStop(False), now=now)
                elif (want_armed and not flags & _ARMED
                      and not flags & _ESTOP):
                    self._send(Arm(True), now=now)
                elif not want_armed and flags & _ARMED:
                    self._send(Arm(False), now=now)
        if self._transport is not None and now - self._last_tx >= cfg.heartbeat_period_s:
            self._send(Heartbeat(self._session, 0), now=now)


def _fault_name(code: int) -> str:
    try:
        return FaultCode(code).name.lower()
    except ValueError:
        return f"code_{code}"


__all__ = ["BridgeConfig", "BridgeStatus", "JointStateSample", "LinkDiagnostics", "LinkState",
           "SerialBridge", "MsgType"]
