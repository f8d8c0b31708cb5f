"""Byte streams under the framed transports: TCP, a pty/serial port, or an in-memory pipe.

A ``ByteStream`` is the smallest thing both ends of a framed link need: ``write`` puts
bytes on the wire *now* (no await, no application queue), ``read`` waits for whatever
bytes arrived (``b""`` at end of stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class ByteStream(Protocol):
    async def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class AsyncioByteStream:
    """Adapter over an asyncio (StreamReader, StreamWriter) pair, e.g. a TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(4096)
        except (ConnectionError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    def get_extra_info(self, name: str, default: object = None) -> object:
        """The connection's ``asyncio`` transport info (``"socket"``, ``"peername"``...)."""
        return self._writer.get_extra_info(name, default)


class _PipeEnd:
    def __init__(self) -> None:
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: _PipeEnd | None = None
        self._closed = False

    async def read(self) -> bytes:
        if self._closed and self._inbox.empty():
            return b""
        return await self._inbox.get()

    def write(self, data: bytes) -> None:
        if self._closed or self.peer is None or self.peer._closed:
            return
        if data:
            self.peer._inbox.put_nowait(bytes(data))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put_nowait(b"")
        if self.peer is not None and not self.peer._closed:
            self.peer._closed = True
            self.peer._inbox.put_nowait(b"")

    @property
    def closed(self) -> bool:
        return self._closed


def memory_pipe() -> tuple[ByteStream, ByteStream]:
    """Two connected in-memory byte streams (host end, device end)."""
    a, b = _PipeEnd(), _PipeEnd()
    a.peer, b.peer = b, a
    return a, b
