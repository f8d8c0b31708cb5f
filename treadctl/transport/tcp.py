"""``tcp://HOST:PORT``: the serial framing over a TCP connection (simulator process, bridges)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from treadctl.transport.base import TransportError
from treadctl.transport.framed import FramedTransport
from treadctl.transport.stream import AsyncioByteStream, ByteStream

DEFAULT_CONNECT_TIMEOUT_S = 5.0


class _TcpStream(AsyncioByteStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self._transport = writer.transport

    def abort(self) -> None:
        """Reset the connection without flushing: the peer sees the link die now."""
        with contextlib.suppress(Exception):
            self._transport.abort()


class TcpTransport(FramedTransport):
    def __init__(
        self, host: str, port: int, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(self._open, f"tcp://{shown}:{port}")
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s

    async def _open(self) -> ByteStream:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise TransportError(
                f"cannot connect to {self.name}: timed out after {self.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise TransportError(
                f"cannot connect to {self.name}: {exc.strerror or exc}"
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Small frames must leave now, not wait for Nagle to batch them.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _TcpStream(reader, writer)
