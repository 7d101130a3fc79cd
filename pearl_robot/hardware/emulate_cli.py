"""Run the firmware emulator: the MuJoCo robot twin behind the serial protocol.

Opens a pseudo-terminal pair, prints the device path to connect to, and behaves like the
robot's microcontroller until Ctrl-C: answers HELLO, streams joint state, applies effort
commands while armed, and runs the device watchdogs (no command for --command-timeout-ms while
armed -> zero effort; host silent for --link-timeout-ms -> disarm). Connect the serial bridge
(or `adapt` with a serial robot) to the printed path.

Fault injection for testing a host: --drop/--corrupt/--duplicate/--garbage (probability per
outgoing frame), --delay-ms, --reset-every (reboot the device), --silent-every/--silent-for
(stop transmitting for a while), --replug-every (the port vanishes and comes back; use
--link so the host keeps one path, as a udev symlink gives a real robot).

Examples:
  pearl-robot emulate
  pearl-robot emulate --tcp 127.0.0.1:5760     # host URL socket://127.0.0.1:5760
  pearl-robot emulate --link /tmp/ttyPEARL --drop 0.01 --corrupt 0.01 --reset-every 30
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pearl_robot.errors import ConfigError
from pearl_robot.hardware.emulator import (
    DeviceEndpoint,
    EmulatorConfig,
    FaultSwitches,
    FirmwareEmulator,
    make_twin_plant,
)
from pearl_robot.hardware.emulator_endpoints import PtyEndpoint, SocketEndpoint, TcpDeviceServer

log = logging.getLogger(__name__)


def _probability(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{v} is not a probability in [0, 1]")
    return v


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("device")
    g.add_argument("--link", type=Path, default=None,
                   help="also create this symlink to the pty (a stable path, like a udev rule)")
    g.add_argument("--tcp", default=None, metavar="HOST:PORT",
                   help="serve on TCP instead of a pty (hosts connect with "
                   "socket://HOST:PORT); one host at a time, a new one may connect after the "
                   "last disconnects")
    g.add_argument("--mjcf", type=Path, default=None,
                   help="robot model (default: sim/arm3.xml); joint names and limits come "
                   "from it")
    g.add_argument("--twin-params", default=None,
                   help="JSON object of twin physics parameters (payload, friction, latency, "
                   "...; see pearl_robot.robot.randomization)")
    g.add_argument("--seed", type=int, default=0, help="seed for sensor noise and faults")
    g.add_argument("--device-name", default="pearl-emulator")
    g.add_argument("--state-rate", type=int, default=100,
                   help="unsolicited STATE frames per second (default 100; plus one per command)")
    g.add_argument("--heartbeat-ms", type=int, default=50)
    g.add_argument("--command-timeout-ms", type=int, default=100,
                   help="armed and no command this long -> zero effort (default 100)")
    g.add_argument("--link-timeout-ms", type=int, default=250,
                   help="host silent this long -> disarm and close the session (default 250)")
    g.add_argument("--velocity-fault", action="store_true",
                   help="fault and disarm when a joint exceeds its velocity limit, as a real "
                   "drive does (off by default)")
    f = parser.add_argument_group("fault injection")
    f.add_argument("--drop", type=_probability, default=0.0, help="drop outgoing frames")
    f.add_argument("--corrupt", type=_probability, default=0.0, help="flip a bit in frames")
    f.add_argument("--duplicate", type=_probability, default=0.0, help="send frames twice")
    f.add_argument("--garbage", type=_probability, default=0.0,
                   help="random bytes before frames")
    f.add_argument("--delay-ms", type=float, default=0.0, help="delay every outgoing frame")
    f.add_argument("--reset-every", type=_positive, default=None, metavar="S",
                   help="reboot the device every S seconds")
    f.add_argument("--silent-every", type=_positive, default=None, metavar="S",
                   help="stop transmitting every S seconds ...")
    f.add_argument("--silent-for", type=_positive, default=1.0, metavar="S",
                   help="... for this long (default 1 s)")
    f.add_argument("--replug-every", type=_positive, default=None, metavar="S",
                   help="unplug and re-plug the port every S seconds")
    parser.add_argument("--duration", type=_positive, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--stats-every", type=_positive, default=10.0,
                        help="log link counters every S seconds (default 10)")


def run(args: argparse.Namespace) -> int:
    plant = make_twin_plant(params=_twin_params(args.twin_params), seed=args.seed,
                            mjcf_path=args.mjcf)
    faults = FaultSwitches(drop=args.drop, corrupt=args.corrupt, duplicate=args.duplicate,
                           garbage=args.garbage, delay_s=args.delay_ms * 1e-3)
    config = _emulator_config(args)
    endpoint, server = _open_endpoint(args)
    emulator = FirmwareEmulator(plant, endpoint, config, faults,
                                rng=np.random.default_rng(args.seed))
    print(f"robot:  {plant.spec.name}, joints {', '.join(plant.spec.joint_names)} "
          f"(effort N*m); Ctrl-C to stop", flush=True)
    emulator.start()
    try:
        _supervise(emulator, endpoint, server, faults, args)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        emulator.endpoint.close()
        if server is not None:
            server.close()
        print(f"stopped: {_summary(emulator)}", flush=True)
    return 0


def _twin_params(text: str | None) -> dict[str, Any] | None:
    """``--twin-params``: a JSON object, or None for the twin's nominal parameters."""
    if not text:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--twin-params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ConfigError("--twin-params must be a JSON object")
    return params


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(state_rate_hz=args.state_rate,
                          heartbeat_period_ms=args.heartbeat_ms,
                          command_timeout_ms=args.command_timeout_ms,
                          link_timeout_ms=args.link_timeout_ms,
                          device_name=args.device_name,
                          velocity_fault=args.velocity_fault)


def _open_endpoint(args: argparse.Namespace) -> tuple[DeviceEndpoint, TcpDeviceServer | None]:
    """The device's end of the link (a pty, or a TCP server waiting for its host), with the
    path or URL to connect to printed for the user."""
    if args.tcp is None:
        endpoint = PtyEndpoint(link=args.link)
        print(f"device: {endpoint.path}", flush=True)
        if args.link is not None:
            print(f"link:   {args.link} -> {endpoint.path}", flush=True)
        return endpoint, None
    host, _, port = args.tcp.rpartition(":")
    try:
        server = TcpDeviceServer(host or "127.0.0.1", int(port))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--tcp {args.tcp!r}: {exc}") from None
    print(f"device: {server.url}", flush=True)
    return SocketEndpoint.unconnected(), server


class _Every:
    """The periodic fault injections (``--reset-every`` ...): when each one is next due."""

    def __init__(self, periods: dict[str, float | None], start: float) -> None:
        self._period = {k: v for k, v in periods.items() if v is not None}
        self._due = {k: start + v for k, v in self._period.items()}

    def due(self, name: str, now: float) -> bool:
        """``name`` is due at ``now`` (it is then scheduled one period later)."""
        if name not in self._due or now < self._due[name]:
            return False
        self._due[name] += self._period[name]
        return True


def _supervise(emulator: FirmwareEmulator, endpoint: DeviceEndpoint,
               server: TcpDeviceServer | None, faults: FaultSwitches,
               args: argparse.Namespace) -> None:
    """The CLI's loop beside the emulator's thread, until ``--duration`` or Ctrl-C: hand a
    newly connected TCP host to the device, inject the periodic faults, log the counters."""
    start = time.monotonic()
    next_stats = start + args.stats_every
    every = _Every({"reset": args.reset_every, "silent": args.silent_every,
                    "replug": args.replug_every}, start)
    silent_until = None
    while args.duration is None or time.monotonic() - start < args.duration:
        time.sleep(0.02)
        now = time.monotonic()
        if server is not None and getattr(emulator.endpoint, "closed", False):
            _accept_host(emulator, server)
        if every.due("reset", now):
            log.info("fault: device reset")
            emulator.request_reset()
        if every.due("replug", now):
            log.info("fault: port unplugged and re-plugged")
            emulator.request_replug()
            print(f"device: {endpoint.path}", flush=True)  # type: ignore[attr-defined]
        if every.due("silent", now):
            log.info("fault: going silent for %.1f s", args.silent_for)
            faults.silent = True
            silent_until = now + args.silent_for
        if silent_until is not None and now >= silent_until:
            faults.silent = False
            silent_until = None
        if now >= next_stats:
            next_stats += args.stats_every
            log.info("emulator: %s", _summary(emulator))


def _accept_host(emulator: FirmwareEmulator, server: TcpDeviceServer) -> None:
    """A host waiting on the TCP port becomes the device's endpoint (one at a time)."""
    try:
        conn = server.accept(timeout=0.0)
    except (BlockingIOError, TimeoutError, OSError):
        return
    log.info("host connected over TCP")
    emulator.endpoint = conn


def _summary(emulator: FirmwareEmulator) -> str:
    s = emulator.stats()
    st = emulator.status()
    keys = ("frames_ok", "frames_bad", "frames_tx", "dropped", "duplicates", "late")
    parts = [f"{k}={s[k]}" for k in keys]
    parts += [f"{k.removeprefix('events.')}={v}" for k, v in s.items()
              if k.startswith("events.") and v]
    return (f"session={'open' if st.session_open else 'none'} armed={st.armed} "
            f"estop={st.estop} " + " ".join(parts))
