"""Serial link benchmark: round trip, sustained 1 kHz, codec cost, decoder fuzz.

Everything runs through real pseudo-terminals, with the device in a separate process (as a
microcontroller is), and every latency is reported next to its floor measured in the same run:

1. ``rtt``: command -> state round trip. Floor: a bare pty echo of the same command bytes (a
   child process reads the pty master and writes the bytes back; the host writes and reads,
   nothing else). Measured, each against two devices in a child process -- ``pearl-robot
   emulate`` (the MuJoCo twin, Python) and a minimal "reflector" (answers each COMMAND with a
   STATE, standing in for a microcontroller's microsecond processing):
   (a) ``bridge``: ``SerialBridge.send_command`` until the STATE naming that command reaches
   the ``on_state`` callback in the bridge's reader thread (where the ROS node publishes it);
   ``(caller woken)`` adds waking the calling thread; (b) ``sync``: the host does the codec
   in one thread, no bridge, which separates protocol cost from thread hand-offs. All cases
   run interleaved in blocks so load changes on the shared machine hit them alike. Goal:
   bridge median <= 2x the echo median.
2. ``rate_1khz``: commands at 1 kHz on absolute deadlines through the bridge to the emulator
   for ``--seconds``; reports achieved rate, lost commands (sent but never echoed in a STATE),
   device -> host sequence gaps, bad frames on both ends.
3. ``codec``: encode + decode of a 3-joint STATE, per frame, versus the 1 ms budget at 1 kHz.
4. ``fuzz``: the decoder on mutated and random inputs for ``--fuzz-seconds``: inputs tried,
   typed rejections by reason, crashes (any exception that is not a FrameError).

Run: ``python -m bench.bench_serial`` (about 1 min) or ``--quick`` (about 15 s); results in
``bench/results/serial.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from cobs import cobs

from pearl_robot.hardware.bridge import BridgeConfig, SerialBridge
from pearl_robot.hardware.errors import FrameError
from pearl_robot.hardware.protocol import (
    HEADER,
    PROTOCOL_VERSION,
    Command,
    FrameSplitter,
    Hello,
    MsgType,
    State,
    decode_frame,
    decode_message,
    encode_message,
)
from pearl_robot.hardware.transport import PySerialTransport, SerialConfig, serial_factory

RESULTS = Path(__file__).resolve().parent / "results" / "serial.json"
ECHO_CHILD = r"""
import os, select, sys
fd = int(sys.argv[1])
while True:
    r, _, _ = select.select([fd], [], [], 1.0)
    if not r:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
"""


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _summary_us(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median_us": _pct(values, 50) * 1e6,
            "p90_us": _pct(values, 90) * 1e6, "p99_us": _pct(values, 99) * 1e6,
            "max_us": max(values) * 1e6 if values else float("nan")}


# --------------------------------------------------------------------------- device processes


class Emulator:
    """`pearl-robot emulate` in a child process, on a pty behind a symlink."""

    def __init__(self, state_rate: int = 100) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench_serial_")
        self.link = Path(self.dir.name) / "ttyBENCH"
        env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pearl_robot.cli", "emulate", "--link", str(self.link),
             "--state-rate", str(state_rate), "--stats-every", "3600"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 30
        while not self.link.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start: {self.proc.stdout.read()}")
            time.sleep(0.05)

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(2)
        out, _ = self.proc.communicate(timeout=20)
        self.dir.cleanup()
        line = next((ln for ln in out.splitlines() if ln.startswith("stopped:")), "")
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def reflector_main(fd: int) -> None:
    """A minimal device in a child process: answers HELLO with DEVICE_INFO and every COMMAND
    with one STATE naming it, with no plant and no timers. Stands in for a microcontroller,
    whose processing time is microseconds, to isolate the host side's cost."""
    from pearl_robot.hardware.examples import EXAMPLE_JOINTS
    from pearl_robot.hardware.protocol import Arm, DeviceFlags, DeviceInfo, Heartbeat

    sp = FrameSplitter()
    seq = 0
    flags = int(DeviceFlags.SESSION | DeviceFlags.SAFE)
    zeros = np.zeros(3)
    while True:
        r, _, _ = select.select([fd], [], [], 1.0)
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            continue
        except OSError:
            return
        out = []
        for chunk in sp.feed(data):
            try:
                frame = decode_frame(chunk)
                msg = decode_message(frame)
            except FrameError:
                continue
            if isinstance(msg, Hello):
                reply = DeviceInfo(msg.session_id, 1, 1, 0, 50, 100, 250, 0, "reflector",
                                   EXAMPLE_JOINTS)
            elif isinstance(msg, Command):
                reply = State(flags, frame.seq, zeros, zeros, msg.effort)
            elif isinstance(msg, Arm):
                flags = int(DeviceFlags.SESSION | (DeviceFlags.ARMED if msg.arm
                                                   else DeviceFlags.SAFE))
                reply = State(flags, 0xFFFF, zeros, zeros, zeros)
            elif isinstance(msg, Heartbeat):
                reply = Heartbeat(1, flags)
            else:
                continue
            out.append(encode_message(reply, seq, frame.seq, 0))
            seq += 1
        if out:
            os.write(fd, b"".join(out))


class Reflector:
    """:func:`reflector_main` in a child process on a raw pty."""

    def __init__(self) -> None:
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.link = os.ttyname(self.slave)
        code = f"from bench.bench_serial import reflector_main; reflector_main({self.master})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[self.master],
                                     cwd=str(Path(__file__).resolve().parents[1]))

    def stop(self) -> dict[str, int]:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)
        return {}


class Echo:
    """A bare pty echo in a child process: the floor for a round trip through a pty."""

    def __init__(self) -> None:
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO_CHILD, str(self.master)],
                                     pass_fds=[self.master])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


# --------------------------------------------------------------------------- 1. round trip


class EchoCase:
    """Floor: write the command bytes to a pty, a child echoes them, read them back."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.dev = Echo()
        self.port = PySerialTransport(SerialConfig(self.dev.path, read_timeout_s=1.0))

    def begin_block(self) -> None:
        pass

    def one(self) -> float | None:
        t0 = time.perf_counter()
        self.port.write(self.payload)
        got = 0
        while got < len(self.payload):
            got += len(self.port.read(len(self.payload) - got))
        return time.perf_counter() - t0

    def close(self) -> None:
        self.port.close()
        self.dev.stop()


class BridgeCase:
    """SerialBridge.send_command until the STATE naming that command reaches on_state."""

    def __init__(self, device: type) -> None:
        self.dev = device()
        self.done = threading.Event()
        self.want: int | None = None
        self.bridge = SerialBridge(serial_factory(SerialConfig(str(self.dev.link))),
                                   BridgeConfig(), on_state=self._on_state,
                                   rng=np.random.default_rng(0))
        self.bridge.start()
        self.bridge.wait_ready(20.0)
        self.effort = np.array([0.2, -0.3, 0.1])
        self.t_state = 0.0
        self.woken: list[float] = []
        """Round trips until the calling thread is awake again (adds one thread hand-off)."""

    def _on_state(self, sample) -> None:
        if sample.command_seq == self.want:
            self.t_state = time.perf_counter()
            self.done.set()

    def begin_block(self) -> None:
        self.bridge.wait_ready(5.0)
        self.bridge.arm()
        self.bridge.wait_for(lambda s: s.armed, 2.0)

    def one(self) -> float | None:
        self.done.clear()
        self.want = self.bridge._tx_seq  # the seq this command will carry
        t0 = time.perf_counter()
        self.bridge.send_command(self.effort)
        if not self.done.wait(1.0):
            return None
        self.woken.append(time.perf_counter() - t0)
        return self.t_state - t0

    def close(self) -> None:
        self.bridge.stop()
        self.dev.stop()


class SyncCase:
    """Protocol cost without the bridge: one thread encodes, writes, reads, decodes."""

    def __init__(self, device: type) -> None:
        self.dev = device()
        self.port = PySerialTransport(SerialConfig(str(self.dev.link), read_timeout_s=0.05))
        self.sp = FrameSplitter()
        self.seq = 0
        self.effort = np.array([0.2, -0.3, 0.1])

    def _exchange(self, msg, until) -> bool:
        self.port.write(encode_message(msg, self.seq, 0, 0))
        mine = self.seq
        self.seq += 1
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for chunk in self.sp.feed(self.port.read(4096)):
                try:
                    m = decode_message(decode_frame(chunk))
                except FrameError:
                    continue
                if until(m, mine):
                    return True
        return False

    def begin_block(self) -> None:
        from pearl_robot.hardware.protocol import Arm, DeviceInfo

        self._exchange(Hello(42), lambda m, s: isinstance(m, DeviceInfo))
        self._exchange(Arm(True), lambda m, s: isinstance(m, State))

    def one(self) -> float | None:
        t0 = time.perf_counter()
        ok = self._exchange(Command(self.effort),
                            lambda m, s: isinstance(m, State) and m.command_seq == s)
        return time.perf_counter() - t0 if ok else None

    def close(self) -> None:
        self.port.close()
        self.dev.stop()


def bench_rtt(n: int, payload: bytes, block: int = 25) -> dict[str, list[float]]:
    """All cases set up at once and measured in interleaved blocks, so a change in the shared
    machine's load hits every case alike (the ratios stay meaningful)."""
    cases = {"echo floor": EchoCase(payload),
             "bridge+emulator": BridgeCase(Emulator), "sync+emulator": SyncCase(Emulator),
             "bridge+reflector": BridgeCase(Reflector), "sync+reflector": SyncCase(Reflector)}
    out: dict[str, list[float]] = {k: [] for k in cases}
    missing: Counter[str] = Counter()
    try:
        for r in range(-(-n // block) + 2):  # two warm-up rounds
            for name, case in cases.items():
                case.begin_block()
                for _ in range(block):
                    dt = case.one()
                    if r < 2:
                        continue
                    if dt is None:
                        missing[name] += 1
                    else:
                        out[name].append(dt)
    finally:
        for case in cases.values():
            case.close()
    for name, case in cases.items():
        if isinstance(case, BridgeCase):
            out[f"{name} (caller woken)"] = case.woken[2 * block:]
    out["_missing"] = dict(missing)  # type: ignore[assignment]
    return out


# --------------------------------------------------------------------------- 2. 1 kHz


def bench_rate(seconds: float, rate_hz: float = 1000.0) -> dict[str, object]:
    emu = Emulator()
    acked: set[int] = set()
    lock = threading.Lock()

    def on_state(sample) -> None:
        with lock:
            acked.add(sample.command_seq)

    bridge = SerialBridge(serial_factory(SerialConfig(str(emu.link))), BridgeConfig(),
                          on_state=on_state, rng=np.random.default_rng(1))
    sent: list[int] = []
    late = 0
    try:
        bridge.start()
        bridge.wait_ready(20.0)
        bridge.arm()
        bridge.wait_for(lambda s: s.armed, 5.0)
        period = 1.0 / rate_hz
        n = int(seconds * rate_hz)
        effort = np.zeros(3)
        t_start = time.perf_counter()
        for k in range(n):
            deadline = t_start + k * period
            now = time.perf_counter()
            if now < deadline:
                # sleep, never spin: a spinning Python thread holds the GIL and starves the
                # bridge's reader thread (measured: mean RTT 0.8-1.8 ms, max 35 ms with a spin)
                time.sleep(deadline - now)
            elif now - deadline > period:
                late += 1
            effort[0] = 0.1 * np.sin(k * 0.01)
            seq = bridge._tx_seq
            if bridge.send_command(effort):
                sent.append(seq)
        elapsed = time.perf_counter() - t_start
        time.sleep(0.3)  # let the last replies arrive
        stats = bridge.stats()
        with lock:
            lost = [s for s in sent if s not in acked]
    finally:
        bridge.stop()
        dev = emu.stop()
    return {"target_hz": rate_hz, "seconds": elapsed, "commands_sent": len(sent),
            "achieved_hz": len(sent) / elapsed, "late_ticks": late,
            "commands_without_state": len(lost),
            "host_rx_dropped": stats["dropped"], "host_rx_bad": stats["frames_bad"],
            "host_rx_duplicates": stats["duplicates"], "host_frames_ok": stats["frames_ok"],
            "device_rx_bad": dev.get("frames_bad", -1),
            "device_rx_dropped": dev.get("dropped", -1),
            "device_rx_ok": dev.get("frames_ok", -1),
            "rtt_mean_ms": stats["rtt_mean_ms"], "rtt_max_ms": stats["rtt_max_ms"],
            "watchdog_trips": stats.get("events.watchdog_trips", 0)}


# --------------------------------------------------------------------------- 3. codec


def bench_codec(n: int) -> dict[str, float]:
    msg = State(0x41, 7, np.array([0.1, 0.2, 0.3]), np.zeros(3), np.ones(3))
    wire = encode_message(msg, 1, 2, 3)
    t0 = time.perf_counter()
    for i in range(n):
        encode_message(msg, i, 2, 3)
    enc = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        decode_message(decode_frame(wire[:-1]))
    dec = (time.perf_counter() - t0) / n
    body = cobs.decode(wire[:-1])
    t0 = time.perf_counter()
    for _ in range(n):
        zlib.crc32(cobs.decode(cobs.encode(body)))
    floor = (time.perf_counter() - t0) / n
    return {"encode_us": enc * 1e6, "decode_us": dec * 1e6,
            "floor_cobs_crc_us": floor * 1e6, "frame_bytes": len(wire),
            "share_of_1khz_budget": (enc + dec) / 1e-3}


# --------------------------------------------------------------------------- 4. fuzz


def _fuzz_input(rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    kind = int(rng.integers(0, 6))
    if kind == 0:  # random bytes
        return rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
    base = bytearray(seeds[int(rng.integers(0, len(seeds)))][:-1])
    if kind == 1:  # bit flips
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(base)))
            base[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(base)
    if kind == 2:  # truncation
        return bytes(base[: int(rng.integers(0, len(base)))])
    if kind == 3:  # byte insertions / deletions
        pos = int(rng.integers(0, len(base)))
        if rng.random() < 0.5:
            del base[pos]
        else:
            base.insert(pos, int(rng.integers(1, 256)))
        return bytes(base)
    # CRC-valid frames with random header fields and payload: reaches the payload parsers
    msg_type = int(rng.choice([t.value for t in MsgType] + [0, 9, 200]))
    payload = rng.integers(0, 256, int(rng.integers(0, 120)), dtype=np.uint8).tobytes()
    if kind == 4 and payload:
        payload = bytes([int(rng.integers(1, 8))]) + payload[1:]  # plausible joint counts
    plen = len(payload) if rng.random() < 0.9 else int(rng.integers(0, 2000))
    version = PROTOCOL_VERSION if rng.random() < 0.95 else int(rng.integers(0, 256))
    body = HEADER.pack(version, msg_type, 1, 2, 3, plen) + payload
    return cobs.encode(body + struct.pack("<I", zlib.crc32(body)))


def bench_fuzz(seconds: float, seed: int = 0) -> dict[str, object]:
    from pearl_robot.hardware.examples import WORKED_EXAMPLES

    rng = np.random.default_rng(seed)
    seeds = [ex.wire for ex in WORKED_EXAMPLES]
    reasons: Counter[str] = Counter()
    crashes: list[str] = []
    n = ok = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(200):
            data = _fuzz_input(rng, seeds)
            n += 1
            try:
                decode_message(decode_frame(data))
                ok += 1
            except FrameError as exc:
                reasons[exc.reason] += 1
            except Exception as exc:  # a crash: the decoder raised something untyped
                if len(crashes) < 20:
                    crashes.append(f"{type(exc).__name__}: {exc} on {data[:40].hex()}")
    return {"seconds": seconds, "inputs": n, "inputs_per_s": n / seconds,
            "crashes": len(crashes), "crash_examples": crashes, "decoded_ok": ok,
            "rejected_by_reason": dict(reasons.most_common()), "seed": seed}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    p.add_argument("--round-trips", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None, help="1 kHz run length")
    p.add_argument("--fuzz-seconds", type=float, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    n = args.round_trips or (300 if args.quick else 2000)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    fuzz_s = args.fuzz_seconds or (3.0 if args.quick else 30.0)

    cmd_bytes = encode_message(Command(np.array([0.2, -0.3, 0.1])), 1, 2, 3)
    print(f"round trips: {n} per case, interleaved in blocks of 25 (after 2 warm-up "
          "blocks)", flush=True)
    measured = bench_rtt(n, cmd_bytes)
    missing = measured.pop("_missing")
    echo = measured.pop("echo floor")
    floor = statistics.median(echo)
    rtt: dict[str, object] = {"echo_floor": _summary_us(echo), "command_bytes": len(cmd_bytes),
                              "goal_ratio": 2.0, "missing_replies": missing}
    print(f"  {'echo floor':<18} median {floor * 1e6:6.0f} us, "
          f"p99 {_pct(echo, 99) * 1e6:6.0f} us", flush=True)
    for name, values in measured.items():
        summary = _summary_us(values)
        summary["ratio_median_to_echo"] = statistics.median(values) / floor
        summary["ratio_p99_to_echo_p99"] = _pct(values, 99) / _pct(echo, 99)
        rtt[name] = summary
        print(f"  {name:<18} median {summary['median_us']:6.0f} us, "
              f"p99 {summary['p99_us']:6.0f} us -> {summary['ratio_median_to_echo']:.2f}x "
              "the echo", flush=True)
    print(f"1 kHz for {seconds:.0f} s", flush=True)
    rate = bench_rate(seconds)
    print("  " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in rate.items()), flush=True)
    codec = bench_codec(20000 if not args.quick else 5000)
    print(f"codec: encode {codec['encode_us']:.1f} us, decode {codec['decode_us']:.1f} us "
          f"(cobs+crc floor {codec['floor_cobs_crc_us']:.1f} us), "
          f"{codec['share_of_1khz_budget'] * 100:.1f}% of a 1 kHz tick", flush=True)
    fuzz = bench_fuzz(fuzz_s)
    print(f"fuzz: {fuzz['inputs']} inputs in {fuzz_s:.0f} s, crashes {fuzz['crashes']}, "
          f"decoded ok {fuzz['decoded_ok']}, rejected {fuzz['rejected_by_reason']}", flush=True)
    result = {"bench": "serial", "quick": args.quick,
              "command": "python -m bench.bench_serial" + (" --quick" if args.quick else ""),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "rtt": rtt, "rate_1khz": rate, "codec": codec, "fuzz": fuzz}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {args.out}")
    ok = fuzz["crashes"] == 0 and rate["commands_without_state"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
