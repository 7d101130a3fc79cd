"""The firmware emulator's OS endpoints: how its bytes reach a host.

:class:`~pearl_robot.hardware.emulator.FirmwareEmulator` (the device) reads and writes any
:class:`~pearl_robot.hardware.emulator.DeviceEndpoint`; this module holds the ones backed by
the operating system, kept apart so the device logic is tested with an in-memory endpoint too:

- :class:`PtyEndpoint`: the master side of a pseudo-terminal (the host opens the slave path, or
  an optional stable symlink like a udev rule makes), with :meth:`PtyEndpoint.replug` to
  simulate pulling the cable;
- :class:`SocketEndpoint` and :class:`TcpDeviceServer`: a TCP socket for ``socket://HOST:PORT``
  hosts, one host at a time.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path


def open_raw_pty() -> tuple[int, int, str]:
    """A pseudo-terminal pair in raw mode: (master fd, slave fd, slave path)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyEndpoint:
    """The device end of a pseudo-terminal. The host opens :attr:`path` (or :attr:`link`).

    ``link`` is an optional symlink kept pointing at the current pty, the way a udev rule gives
    a USB device a stable name; :meth:`replug` simulates unplugging and re-plugging the cable:
    the old pty disappears (the host's reads fail) and a new one appears behind the link.
    """

    def __init__(self, link: str | Path | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self._open()

    def _open(self) -> None:
        self.master, self._slave, self.path = open_raw_pty()
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.path)
            os.replace(tmp, self.link)

    @property
    def host_path(self) -> str:
        """What the host should open: the symlink if there is one, else the pty path."""
        return str(self.link) if self.link is not None else self.path

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.master], [], [], max(timeout, 0.0))
            if not ready:
                return b""
            return os.read(self.master, 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no host has the slave open: like a floating line
                time.sleep(min(timeout, 0.01))
                return b""
            raise

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return 0
            raise

    def replug(self) -> None:
        """Close this pty (the host sees its port vanish) and open a fresh one."""
        self._close_fds()
        self._open()

    def _close_fds(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        self._close_fds()
        if self.link is not None:
            self.link.unlink(missing_ok=True)


class SocketEndpoint:
    """The device end of a TCP connection (the host uses ``socket://host:port``)."""

    def __init__(self, conn: socket.socket | None) -> None:
        self.conn = conn
        self.closed = conn is None
        if conn is not None:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def unconnected(cls) -> SocketEndpoint:
        """A placeholder until a host connects (reads idle, writes go nowhere)."""
        return cls(None)

    def read(self, timeout: float) -> bytes:
        if self.closed:
            time.sleep(timeout)
            return b""
        ready, _, _ = select.select([self.conn], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.closed = True
        return data

    def write(self, data: bytes) -> int:
        if self.closed:
            return 0
        try:
            return self.conn.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.closed = True
            return 0

    def close(self) -> None:
        self.closed = True
        if self.conn is not None:
            self.conn.close()


@dataclass
class TcpDeviceServer:
    """Serve the emulator on a TCP port for ``socket://HOST:PORT`` hosts (one host at a time)."""

    host: str = "127.0.0.1"
    port: int = 0
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def accept(self, timeout: float | None = None) -> SocketEndpoint:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        return SocketEndpoint(conn)

    def close(self) -> None:
        self.sock.close()
