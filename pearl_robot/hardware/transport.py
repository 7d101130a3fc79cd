"""Byte transport for the host: pyserial's ``serial_for_url`` behind a small interface.

One URL string selects the link: a device path (``/dev/ttyACM0``, a udev symlink, a
pseudo-terminal such as ``/dev/pts/5``), ``loop://`` (loopback, for codec tests),
``socket://host:port`` (a device simulator behind TCP) or any other pyserial URL. The bridge
takes a *factory* returning a :class:`Transport`, so tests and other links can be injected.

Every failure becomes :class:`~pearl_robot.hardware.errors.TransportError`, which the bridge
treats as "the port vanished": close, back off, reopen.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import serial

from pearl_robot.hardware.errors import TransportError


class Transport(Protocol):
    """What the bridge needs from a byte link."""

    def read(self, max_bytes: int) -> bytes:
        """Bytes available now, waiting at most the transport's read timeout for the first."""
        ...

    def write(self, data: bytes) -> None:
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class SerialConfig:
    """How to open the port."""

    url: str
    """Device path or pyserial URL (``loop://``, ``socket://host:port``, ``/dev/pts/N``)."""
    baudrate: int = 921_600
    """Line rate; ignored by USB CDC-ACM, pseudo-terminals and sockets."""
    read_timeout_s: float = 0.005
    """Longest a read blocks waiting for the first byte: bounds how late the bridge's timers
    (heartbeat, watchdog) can run."""
    write_timeout_s: float = 0.05
    """A write blocked longer than this (device not draining) is a transport failure."""
    exclusive: bool = True
    """Lock the port (POSIX flock) so a second process cannot interleave frames."""


def open_hint(url: str, exc: BaseException) -> str:
    """What to check when a port does not open, from its errno (pyserial wraps the OSError
    and keeps ``errno``): the path, the dialout group, another process holding it."""
    if "://" in url:
        return ""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc.__context__, OSError):
        code = exc.__context__.errno
    if code == errno.ENOENT or (code is None and not os.path.exists(url)):
        return ("; no such device: check the cable and the path (a USB adapter's stable "
                "name is under /dev/serial/by-id/; `ls -l /dev/serial/by-id/` lists them)")
    if code in (errno.EACCES, errno.EPERM):
        return ("; permission denied: add the user to the group owning the device (usually "
                "dialout: `sudo usermod -aG dialout $USER`, then log in again)")
    if code == errno.EBUSY:
        return "; the port is in use by another process (`fuser -v " + url + "` names it)"
    return ""


class PySerialTransport:
    """A pyserial port opened with ``serial_for_url``."""

    def __init__(self, config: SerialConfig) -> None:
        self.config = config
        kwargs: dict[str, object] = {"baudrate": config.baudrate,
                                     "timeout": config.read_timeout_s,
                                     "write_timeout": config.write_timeout_s}
        if config.exclusive and "://" not in config.url:
            kwargs["exclusive"] = True
        try:
            self._port = serial.serial_for_url(config.url, **kwargs)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open {config.url!r}: {exc}"
                                 f"{open_hint(config.url, exc)}") from None
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError, NotImplementedError):
            pass

    def read(self, max_bytes: int = 4096) -> bytes:
        fd = getattr(self._port, "fd", None)
        if isinstance(fd, int) and fd >= 0:
            return self._read_fd(fd, max_bytes)
        try:
            waiting = self._port.in_waiting
            return self._port.read(min(max(waiting, 1), max_bytes))
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's posix read after a concurrent close
            raise TransportError(f"read from {self.config.url!r} failed: {exc}") from None

    def _read_fd(self, fd: int, max_bytes: int) -> bytes:
        """POSIX ports: one select and one read drain everything available. pyserial's own
        ``read(n)`` returns after exactly ``n`` bytes, which costs a select + read per call
        and one more loop turn per frame (measured in bench/bench_serial.py)."""
        try:
            ready, _, _ = select.select([fd], [], [], self.config.read_timeout_s)
            if not ready:
                return b""
            data = os.read(fd, max_bytes)
        except (BlockingIOError, InterruptedError):
            return b""
        except (OSError, ValueError) as exc:
            raise TransportError(f"read from {self.config.url!r} failed: {exc}") from None
        if not data:  # readable but empty: the device is gone (USB unplugged, pty closed)
            raise TransportError(f"read from {self.config.url!r} failed: the device "
                                 "disconnected")
        return data

    def write(self, data: bytes) -> None:
        fd = getattr(self._port, "fd", None)
        if isinstance(fd, int) and fd >= 0:
            self._write_fd(fd, data)
            return
        try:
            n = self._port.write(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise TransportError(f"write to {self.config.url!r} failed: {exc}") from None
        if n is not None and n != len(data):
            raise TransportError(f"short write to {self.config.url!r}: {n} of {len(data)}")

    def _write_fd(self, fd: int, data: bytes) -> None:
        """POSIX ports: write directly, waiting for room only when the kernel buffer is full.
        (pyserial's write selects after every write when a write timeout is set: 2.5x the
        cost of the write itself, measured in bench/bench_serial.py.)"""
        view = memoryview(data)
        deadline = None
        try:
            while view:
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    n = 0
                view = view[n:]
                if view:
                    if deadline is None:
                        deadline = time.monotonic() + self.config.write_timeout_s
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [fd], [], left)[1]:
                        raise TransportError(f"write to {self.config.url!r} timed out after "
                                             f"{self.config.write_timeout_s} s (device not "
                                             "reading)")
        except (OSError, ValueError) as exc:
            raise TransportError(f"write to {self.config.url!r} failed: {exc}") from None

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass

    @property
    def port(self) -> serial.SerialBase:
        """The underlying pyserial object (tests inject bytes into ``loop://`` through it)."""
        return self._port


def serial_factory(config: SerialConfig) -> Callable[[], Transport]:
    """A factory that opens ``config`` anew on each call (each reconnect)."""
    return lambda: PySerialTransport(config)
