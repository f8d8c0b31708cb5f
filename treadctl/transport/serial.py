"""``serial:///dev/ttyUSB0?baud=115200``: the framing over a serial port (or a pty).

pyserial opens and configures the port (raw mode, baud, exclusive lock); the bytes then
move through a small asyncio adapter on the file descriptor (``loop.add_reader``,
``os.write`` with ``add_writer`` for the rest when the port's buffer is full), so reads
never block the loop and a write is on its way in the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from typing import Any

from treadctl.transport.base import TransportError
from treadctl.transport.framed import FramedTransport
from treadctl.transport.stream import ByteStream

_READ_SIZE = 4096
# Errors that mean the device went away (USB unplugged, pty master closed).
_GONE = {errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF}


class FdByteStream:
    """A :class:`ByteStream` over a non-blocking file descriptor, for serial ports and ptys.

    ``owner`` (e.g. the ``serial.Serial``) is closed with the stream.
    """

    def __init__(self, fd: int, owner: Any = None) -> None:
        self._fd = fd
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._eof = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._out = bytearray()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            data = b""
        if not data:
            self._eof = True
            self._loop.remove_reader(self._fd)
        else:
            self._chunks.append(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof or self._closed:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def write(self, data: bytes) -> None:
        if self._closed or self._eof or not data:
            return
        if self._out:  # keep order: earlier bytes are still waiting for the port
            self._out += data
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._gone()
            return
        if n < len(data):
            self._out += data[n:]
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            n = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError:
            self._gone()
            return
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self._fd)

    def _gone(self) -> None:
        self._eof = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._gone()
        self._out.clear()
        if self._owner is not None:
            with contextlib.suppress(Exception):
                self._owner.close()
        else:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    @property
    def closed(self) -> bool:
        return self._closed or self._eof


class SerialTransport(FramedTransport):
    def __init__(self, path: str, baud: int = 115200) -> None:
        super().__init__(self._open, f"serial://{path}")
        self.path = path
        self.baud = baud

    async def _open(self) -> ByteStream:
        return open_serial_stream(self.path, self.baud)


def open_serial_stream(path: str, baud: int) -> FdByteStream:
    """Open ``path`` exclusively with pyserial; one-line ``TransportError`` on failure."""
    try:
        import serial  # pyserial
    except ImportError:  # pragma: no cover - a declared dependency
        raise TransportError("serial links need pyserial (pip install pyserial)") from None
    if not os.path.exists(path):
        raise TransportError(f"serial port {path} not found")
    try:
        port = serial.Serial(path, baudrate=baud, timeout=0, exclusive=True)
    except serial.SerialException as exc:
        text = str(exc)
        cause = exc.__context__ or exc.__cause__
        err = getattr(exc, "errno", None) or getattr(cause, "errno", None)
        if "exclusively lock" in text or err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            raise TransportError(
                f"serial port {path} is busy (another process has it open)"
            ) from None
        if err == errno.EACCES:
            raise TransportError(
                f"permission denied on {path} (add your user to the 'dialout' group)"
            ) from None
        if err == errno.ENOENT:
            raise TransportError(f"serial port {path} not found") from None
        raise TransportError(f"cannot open serial port {path}: {text}") from None
    except ValueError as exc:  # bad baud for this port
        raise TransportError(f"cannot open serial port {path}: {exc}") from None
    return FdByteStream(port.fileno(), owner=port)
