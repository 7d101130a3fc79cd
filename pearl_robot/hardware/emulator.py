"""Firmware emulator: the device side of the serial protocol, driving a plant in real time.

It behaves as docs/serial-protocol.md asks a firmware to behave (it is the executable
reference for firmware authors): it answers HELLO with DEVICE_INFO, streams STATE, applies
COMMANDs only while armed and not e-stopped, and runs its own watchdogs: no COMMAND for
``command_timeout_ms`` while armed -> the safe command (zero effort); no host frame for
``link_timeout_ms`` -> disarm and close the session. Fault injection switches (drop, corrupt,
duplicate, delay, go silent, go deaf, reset, unplug) make it the "robot" of the fault-matrix
tests and of the demo.

The plant is anything with the :class:`Plant` interface; ``pearl-robot emulate`` uses the MuJoCo
twin (:class:`pearl_robot.twin.arm.ArmTwin`), imported lazily so this module stays free of
MuJoCo (robot-side packages must not import it). The plant advances by the wall-clock time
that passed (zero-order hold on the command), in whole physics steps.

The byte link is any :class:`DeviceEndpoint`. This module is the device alone: no pty, socket
or ``select``, so its state machine runs over an in-memory endpoint with a fake clock
(``tests/hardware/test_emulator_device.py``). The operating system's endpoints (a
pseudo-terminal, a TCP socket and its server) live in ``emulator_endpoints.py``.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from pearl_robot.hardware.errors import FrameError, WrongVersionError
from pearl_robot.hardware.link_stats import LinkCounters, SeqTracker
from pearl_robot.hardware.protocol import (
    COMMAND_INTERFACE_EFFORT,
    HOST_TO_DEVICE,
    NO_COMMAND,
    SEQ_MOD,
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
    JointInfo,
    Message,
    Severity,
    State,
    decode_frame,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)


class PlantSample(Protocol):
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class Plant(Protocol):
    """What the emulator drives (``ArmTwin`` satisfies it)."""

    spec: Any
    """A :class:`pearl_robot.robot.description.RobotSpec` (joint names and limits)."""

    def apply_command(self, effort: np.ndarray) -> None: ...

    def advance(self, duration_s: float) -> PlantSample: ...

    def state(self) -> PlantSample: ...


# --------------------------------------------------------------------------- the byte link


class DeviceEndpoint(Protocol):
    """The device's side of the byte link (``emulator_endpoints``: a pty, a TCP socket)."""

    def read(self, timeout: float) -> bytes:
        """Bytes from the host, waiting at most ``timeout`` s; b"" if none."""
        ...

    def write(self, data: bytes) -> int:
        """Write without blocking; returns bytes written (a full buffer drops the rest, as a
        UART with nobody reading would)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EmulatorConfig:
    """Device-side timing and identity (reported to the host in DEVICE_INFO)."""

    state_rate_hz: int = 100
    """Unsolicited STATE frames per second while a session is open (plus one per COMMAND)."""
    heartbeat_period_ms: int = 50
    """A HEARTBEAT goes out when nothing else was sent for this long."""
    command_timeout_ms: int = 100
    """Armed and no COMMAND for this long -> safe command (zero effort), flag COMMAND_TIMEOUT."""
    link_timeout_ms: int = 250
    """No valid host frame for this long -> disarm, close the session, FAULT LINK_TIMEOUT."""
    firmware_version: int = 1
    device_name: str = "pearl-emulator"
    max_advance_s: float = 0.1
    """Longest plant advance per loop: after a host-side stall the plant lags wall time
    rather than jumping."""
    velocity_fault: bool = False
    """Fault on a joint faster than its ``velocity_max`` (FAULT LIMIT, safe command, disarm;
    the FAULT flag stays until the next ARM), as a real drive would. Off by default so a demo
    with an untrained policy is not stopped by it."""


@dataclass
class FaultSwitches:
    """Fault injection on the device's transmit side (and its receive side for ``deaf``).

    Plain mutable fields: tests and the CLI flip them while the emulator runs (each read is a
    single attribute load, atomic under the GIL). Probabilities apply per outgoing frame.
    """

    drop: float = 0.0
    """Probability that an outgoing frame is never sent (its sequence number is used up)."""
    corrupt: float = 0.0
    """Probability that one random bit of an outgoing frame is flipped."""
    duplicate: float = 0.0
    """Probability that an outgoing frame is sent twice."""
    delay_s: float = 0.0
    """Every outgoing frame leaves this much later (a slow or buffered link)."""
    silent: bool = False
    """Send nothing at all (a hung transmitter); the watchdogs keep running."""
    deaf: bool = False
    """Ignore everything received (a hung receiver): the device watchdogs will trip."""
    garbage: float = 0.0
    """Probability of writing 1-16 random bytes before an outgoing frame (line noise)."""


class EmulatorStatus(NamedTuple):
    session_open: bool
    armed: bool
    estop: bool
    command_timeout: bool
    applied_effort: np.ndarray
    """Effort currently sent to the plant (zeros = the safe command)."""
    last_command_seq: int
    boot_id: int
    boots: int


# --------------------------------------------------------------------------- the emulator


class FirmwareEmulator:
    """Device side of the protocol. ``start()`` runs it in a thread; ``run()`` in the caller."""

    def __init__(self, plant: Plant, endpoint: DeviceEndpoint,
                 config: EmulatorConfig | None = None, faults: FaultSwitches | None = None,
                 rng: np.random.Generator | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plant = plant
        self.endpoint = endpoint
        self.config = config or EmulatorConfig()
        self.faults = faults or FaultSwitches()
        self._rng = rng if rng is not None else np.random.default_rng()
        self._clock = clock
        spec = plant.spec
        self.joints = tuple(JointInfo(j.name, j.position_min, j.position_max, j.velocity_max,
                                      j.effort_max) for j in spec.joints)
        self._limits = np.array([j.effort_max for j in self.joints])
        self._velocity_max = np.array([j.velocity_max for j in self.joints])
        self._physics_dt = float(getattr(plant, "physics_dt", 0.001))
        self.counters = LinkCounters()
        self.events: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self.boots = 0
        self._boot()

    # ---------------------------------------------------------------- control

    def start(self) -> FirmwareEmulator:
        self._thread = threading.Thread(target=self.run, name="firmware-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def request_reset(self, cut_frame: bool = True) -> None:
        """Reboot the device at the next loop turn. ``cut_frame`` first sends half a frame, as
        a reset in the middle of a transmission does."""
        with self._lock:
            self._requests.append("reset_cut" if cut_frame else "reset")

    def request_replug(self) -> None:
        """Unplug and re-plug the cable (only for endpoints with ``replug``)."""
        with self._lock:
            self._requests.append("replug")

    def trigger_estop_input(self) -> None:
        """A device-side e-stop input (button) latches the e-stop."""
        with self._lock:
            self._requests.append("estop_input")

    def status(self) -> EmulatorStatus:
        return EmulatorStatus(self._session is not None, self._armed, self._estop,
                              self._command_timeout, self._applied.copy(),
                              self._last_cmd_seq, self.boot_id, self.boots)

    # ---------------------------------------------------------------- state

    def _boot(self) -> None:
        now = self._clock()
        self.boots += 1
        self.boot_id = int(self._rng.integers(1, 1 << 32))
        self._boot_t = now
        self._tx_seq = 0
        self._rx_seq = SeqTracker()
        self._splitter = FrameSplitter()
        self._session: int | None = None
        self._armed = False
        self._estop = False
        self._command_timeout = False
        self._clipped = False
        self._fault_active = False
        self._command = np.zeros(len(self.joints))
        self._applied = np.zeros(len(self.joints))
        self._last_cmd_seq = NO_COMMAND
        self._last_cmd_t = now
        self._last_host_rx = now
        self._last_tx = -1e9
        self._last_state_tx = -1e9
        self._plant_t = now
        self._plant_debt = 0.0
        self._delayed: list[tuple[float, int, bytes]] = []
        self._apply(np.zeros(len(self.joints)))
        self.endpoint.write(b"\x00")  # end any frame the host was receiving when we reset
        self._emit(Fault(FaultCode.BOOT, Severity.INFO,
                         f"{self.config.device_name} booted (boot id {self.boot_id:08x})"))

    def _device_time_us(self, now: float) -> int:
        return int((now - self._boot_t) * 1e6)

    def _flags(self) -> int:
        f = 0
        if self._armed:
            f |= DeviceFlags.ARMED
        if self._estop:
            f |= DeviceFlags.ESTOP
        if not self._armed or self._estop or self._command_timeout:
            f |= DeviceFlags.SAFE
        if self._command_timeout:
            f |= DeviceFlags.COMMAND_TIMEOUT
        if self._fault_active:
            f |= DeviceFlags.FAULT
        if self._clipped:
            f |= DeviceFlags.CLIPPED
        if self._session is not None:
            f |= DeviceFlags.SESSION
        return f

    def _apply(self, effort: np.ndarray) -> None:
        self._applied = effort
        try:
            self.plant.apply_command(effort)
        except Exception as exc:  # a plant refusing a command: hold zero, report
            self._applied = np.zeros(len(self.joints))
            self._emit(Fault(FaultCode.HARDWARE, Severity.ERROR, f"plant refused: {exc}"))

    def _apply_safe(self) -> None:
        if np.any(self._applied != 0.0):
            self._apply(np.zeros(len(self.joints)))

    def _advance_plant(self, now: float) -> None:
        """Zero-order hold: simulate the wall time since the last advance, in whole steps."""
        self._plant_debt += min(now - self._plant_t, self.config.max_advance_s)
        self._plant_t = now
        steps = int(self._plant_debt / self._physics_dt)
        if steps > 0:
            sample = self.plant.advance(steps * self._physics_dt)
            self._plant_debt -= steps * self._physics_dt
            if self.config.velocity_fault and self._armed:
                self._check_velocity(np.asarray(sample.velocity), now)

    def _check_velocity(self, velocity: np.ndarray, now: float) -> None:
        over = np.flatnonzero(np.abs(velocity) > self._velocity_max)
        if over.size == 0:
            return
        names = [self.joints[i].name for i in over]
        self._armed = False
        self._fault_active = True
        self._apply_safe()
        self.events["velocity_faults"] += 1
        self._emit(Fault(FaultCode.LIMIT, Severity.ERROR,
                         f"velocity limit exceeded on {', '.join(names)}; disarmed"), now)

    # ---------------------------------------------------------------- transmit

    def _emit(self, msg: Message, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        seq = self._tx_seq
        self._tx_seq = (seq + 1) % SEQ_MOD
        self._last_tx = now
        if isinstance(msg, State):
            self._last_state_tx = now
        ack = self._rx_seq.last if self._rx_seq.last is not None else 0
        frame = encode_message(msg, seq, ack, self._device_time_us(now))
        f = self.faults
        if f.silent:
            self.events["tx_silenced"] += 1
            return
        rng = self._rng
        if f.drop and rng.random() < f.drop:
            self.events["tx_dropped"] += 1
            return
        if f.corrupt and rng.random() < f.corrupt:
            buf = bytearray(frame)
            pos = int(rng.integers(0, len(buf) - 1))  # keep the delimiter: one frame per flip
            buf[pos] ^= 1 << int(rng.integers(0, 8))
            frame = bytes(buf)
            self.events["tx_corrupted"] += 1
        if f.garbage and rng.random() < f.garbage:
            frame = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes() \
                + frame
            self.events["tx_garbage"] += 1
        if f.duplicate and rng.random() < f.duplicate:
            frame = frame + frame
            self.events["tx_duplicated"] += 1
        if f.delay_s > 0:
            heapq.heappush(self._delayed, (now + f.delay_s, seq, frame))
            return
        self._write(frame)

    def _write(self, frame: bytes) -> None:
        n = self.endpoint.write(frame)
        self.counters.frames_tx += 1
        self.counters.bytes_tx += max(n, 0)
        if n < len(frame):
            self.events["tx_overflow"] += 1

    def _flush_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            self._write(heapq.heappop(self._delayed)[2])

    def _send_state(self, now: float) -> None:
        s = self.plant.state()
        self._emit(State(self._flags(), self._last_cmd_seq, np.asarray(s.position),
                         np.asarray(s.velocity), np.asarray(s.effort)), now)

    def _device_info(self, session: int) -> DeviceInfo:
        c = self.config
        return DeviceInfo(session, self.boot_id, c.firmware_version, c.state_rate_hz,
                          c.heartbeat_period_ms, c.command_timeout_ms, c.link_timeout_ms,
                          COMMAND_INTERFACE_EFFORT, c.device_name, self.joints)

    # ---------------------------------------------------------------- receive

    def _handle_chunk(self, chunk: bytes, now: float) -> None:
        try:
            frame = decode_frame(chunk)
            msg = decode_message(frame)
        except WrongVersionError as exc:
            # Never act on another version's frame; our heartbeats (in our version) tell the
            # host what we speak.
            self.counters.frames_bad[exc.reason] += 1
            return
        except FrameError as exc:
            self.counters.frames_bad[exc.reason] += 1
            return
        if frame.msg_type not in HOST_TO_DEVICE:
            self.counters.unexpected += 1
            return
        self.counters.frames_ok += 1
        if isinstance(msg, Hello):
            self._open_session(msg.session_id, frame.seq, now)
            return
        if isinstance(msg, EStop):  # honoured with or without a session
            self._rx_seq.observe(frame.seq)
            self._on_estop(msg.engage, now)
            return
        if self._session is None:
            self.events["rx_outside_session"] += 1
            if isinstance(msg, Arm) and msg.arm:
                self._emit(Fault(FaultCode.ARM_REFUSED, Severity.WARNING,
                                 "arm refused: no session (send HELLO first)"), now)
            return
        self._last_host_rx = now
        result = self._rx_seq.observe(frame.seq)
        self.counters.count_seq(result)
        if isinstance(msg, Command):
            if result.accept:  # a duplicate or late command is never applied over a newer one
                self._on_command(msg, frame.seq, now)
        elif isinstance(msg, Arm):
            self._on_arm(msg.arm, now)

    def _open_session(self, session: int, seq: int, now: float) -> None:
        self._session = session
        self._rx_seq.reset(seq)
        self._last_host_rx = now
        self._armed = False  # every session starts disarmed
        self._command_timeout = False
        self._last_cmd_seq = NO_COMMAND
        self._apply_safe()
        self.events["sessions"] += 1
        self._emit(self._device_info(session), now)

    def _on_command(self, cmd: Command, seq: int, now: float) -> None:
        effort = cmd.effort
        if effort.shape[0] != len(self.joints) or not np.all(np.isfinite(effort)):
            self._apply_safe()
            self._emit(Fault(FaultCode.BAD_COMMAND, Severity.ERROR,
                             f"command with {effort.shape[0]} efforts for {len(self.joints)} "
                             "joints or non-finite values; safe command applied"), now)
            return
        self._advance_plant(now)
        self._last_cmd_seq = seq
        self._last_cmd_t = now
        self._command_timeout = False
        if self._armed and not self._estop:
            clipped = np.clip(effort, -self._limits, self._limits)
            self._clipped = not np.array_equal(clipped, effort)
            self._apply(clipped)
        else:
            self.events["commands_while_safe"] += 1
        self._send_state(now)

    def _on_arm(self, arm: bool, now: float) -> None:
        if arm and self._estop:
            self._emit(Fault(FaultCode.ARM_REFUSED, Severity.WARNING,
                             "arm refused: e-stop latched"), now)
        elif arm and not self._armed:
            self._armed = True
            self._fault_active = False
            self._last_cmd_t = now  # the command watchdog starts at arming
            self._command_timeout = False
        elif not arm and self._armed:
            self._armed = False
            self._apply_safe()
        if self._session is not None:
            self._send_state(now)

    def _on_estop(self, engage: bool, now: float) -> None:
        if engage:
            if not self._estop:
                self.events["estops"] += 1
            self._estop = True
            self._armed = False
            self._apply_safe()
        else:
            self._estop = False  # cleared, still disarmed
        if self._session is not None:
            self._send_state(now)
        else:
            self._emit(Heartbeat(self.boot_id, self._flags()), now)

    # ---------------------------------------------------------------- loop

    def _watchdogs(self, now: float) -> None:
        c = self.config
        if self._armed and not self._command_timeout and \
                now - self._last_cmd_t > c.command_timeout_ms * 1e-3:
            self._command_timeout = True
            self._apply_safe()
            self.events["command_timeouts"] += 1
            self._emit(Fault(FaultCode.COMMAND_TIMEOUT, Severity.WARNING,
                             f"no command for {c.command_timeout_ms} ms while armed; safe "
                             "command applied"), now)
        if self._session is not None and now - self._last_host_rx > c.link_timeout_ms * 1e-3:
            self._session = None
            self._armed = False
            self._command_timeout = False
            self._apply_safe()
            self.events["link_timeouts"] += 1
            self._emit(Fault(FaultCode.LINK_TIMEOUT, Severity.ERROR,
                             f"host silent for {c.link_timeout_ms} ms; disarmed, session "
                             "closed"), now)

    def _service_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for req in requests:
            if req.startswith("reset"):
                if req == "reset_cut":
                    frame = encode_message(Heartbeat(self.boot_id, self._flags()),
                                           self._tx_seq, 0, 0)
                    self.endpoint.write(frame[: len(frame) // 2])
                self.events["resets"] += 1
                self._boot()
            elif req == "replug":
                replug = getattr(self.endpoint, "replug", None)
                if replug is not None:
                    replug()
                    self.events["replugs"] += 1
                    self._splitter.reset()
            elif req == "estop_input":
                self._on_estop(True, self._clock())
                self._emit(Fault(FaultCode.ESTOP_INPUT, Severity.ERROR,
                                 "e-stop input latched"))

    def step(self, max_wait: float = 0.005) -> None:
        """One loop turn: receive (waiting at most ``max_wait``), watchdogs, periodic frames."""
        c = self.config
        now = self._clock()
        state_period = 1.0 / c.state_rate_hz if c.state_rate_hz > 0 else float("inf")
        next_due = min(self._last_state_tx + state_period if self._session is not None
                       else float("inf"),
                       self._last_tx + c.heartbeat_period_ms * 1e-3,
                       self._delayed[0][0] if self._delayed else float("inf"))
        data = self.endpoint.read(min(max(next_due - now, 0.0), max_wait))
        now = self._clock()
        if data and not self.faults.deaf:
            self.counters.bytes_rx += len(data)
            for chunk in self._splitter.feed(data):
                self._handle_chunk(chunk, now)
            self.counters.frames_bad["oversize"] = self._splitter.oversize
        self._service_requests()
        self._watchdogs(now)
        self._advance_plant(now)
        if self._session is not None and now - self._last_state_tx >= state_period:
            self._send_state(now)
        if now - self._last_tx >= c.heartbeat_period_ms * 1e-3:
            self._emit(Heartbeat(self.boot_id, self._flags()), now)
        self._flush_delayed(now)

    def run(self, duration_s: float | None = None) -> None:
        """Loop until :meth:`stop` (or ``duration_s``). Errors in one turn are logged, counted
        and survived, as a firmware main loop must."""
        end = None if duration_s is None else self._clock() + duration_s
        while not self._stop.is_set() and (end is None or self._clock() < end):
            try:
                self.step()
            except Exception:
                self.events["internal_errors"] += 1
                if self.events["internal_errors"] <= 3:
                    log.exception("emulator: error in loop turn (continuing)")
                time.sleep(0.01)

    def stats(self) -> dict[str, int]:
        out = dict(self.counters.as_dict())
        out.update({f"events.{k}": v for k, v in sorted(self.events.items())})
        out["boots"] = self.boots
        return out


def make_twin_plant(params: dict[str, Any] | None = None, seed: int | None = None,
                    mjcf_path: str | Path | None = None) -> Plant:
    """The MuJoCo twin as the emulator's plant (imports MuJoCo; robot code never calls this)."""
    from pearl_robot.twin.arm import ArmTwin

    return ArmTwin(params=params, seed=seed, mjcf_path=mjcf_path)
