"""The framed link (docs/framing.md) over any ``ByteStream``: serial, TCP and the in-process sim.

One reader task feeds a :class:`FrameDecoder`; NOTIFY frames go synchronously to the
notify handler, WRITE_RESPONSE / READ_RESPONSE frames complete the request with the same
8-bit sequence number (many requests may be in flight; the counter wraps and skips
numbers still outstanding). A write's frame is on the stream before the write first
awaits, and :meth:`FramedTransport.write_nowait` sends in the call itself, so whatever
calls ``write`` first leaves first (the stop path relies on this).

Keepalives are sent only when the caller asks (:meth:`keepalive`): the firmware's link
watchdog exists to catch a *controller* that stopped working, so the transport must not
keep the link alive on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from treadctl.transport.base import (
    LinkLost,
    ResponseTimeout,
    Transport,
    TransportError,
    WriteRejected,
)
from treadctl.transport.framing import (
    STATUS_OK,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
)
from treadctl.transport.stream import ByteStream

log = logging.getLogger(__name__)

StreamFactory = Callable[[], Awaitable[ByteStream]]

_NOTIFY = FrameType.NOTIFY
_WRITE_RESPONSE = FrameType.WRITE_RESPONSE
_READ_RESPONSE = FrameType.READ_RESPONSE
_EXPECTED = {FrameType.WRITE: _WRITE_RESPONSE, FrameType.READ: _READ_RESPONSE}
#: The KEEPALIVE frame of every sequence number, encoded once (the same bytes as
#: ``encode_frame`` gives; the loop sends one several times a second).
_KEEPALIVES = tuple(encode_frame(Frame(FrameType.KEEPALIVE, 0, b"", seq)) for seq in range(256))


class _Pending:
    """One outstanding request, completed by the response with its seq."""

    __slots__ = ("fut", "handle", "kind", "uuid")

    def __init__(
        self, fut: asyncio.Future[Any], kind: FrameType, uuid: int, handle: asyncio.TimerHandle
    ) -> None:
        self.fut = fut
        self.kind = kind
        self.uuid = uuid
        self.handle = handle


class FramedTransport(Transport):
    """A :class:`Transport` speaking the treadctl frame format over a byte stream.

    ``stream_factory`` opens the stream (called by :meth:`connect`); it may raise
    ``TransportError`` or ``OSError`` with a one-line reason.
    """

    def __init__(self, stream_factory: StreamFactory, name: str) -> None:
        super().__init__()
        self._factory = stream_factory
        self.name = name
        self._stream: ByteStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._decoder = FrameDecoder()
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._closing = False
        self._frames_sent = 0
        self._notifications = 0
        self._unmatched = 0
        self._timeouts = 0
        self._rejected = 0

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._stream is not None and not self._stream.closed

    @property
    def stream(self) -> ByteStream | None:
        """The byte stream of the open link (None before connect and after close): every
        frame this transport sends is one ``write`` on it (tests spy on what leaves)."""
        return self._stream

    async def connect(self) -> None:
        if self.connected:
            return
        try:
            stream = await self._factory()
        except TransportError:
            raise
        except OSError as exc:  # includes TimeoutError
            raise TransportError(f"cannot connect to {self.name}: {_reason(exc)}") from None
        self._stream = stream
        self._closing = False
        self._decoder = FrameDecoder()
        self._reader = asyncio.get_running_loop().create_task(
            self._read_loop(stream), name=f"framed-reader {self.name}"
        )

    async def close(self) -> None:
        self._closing = True
        reader = self._reader
        self._shutdown(LinkLost(f"{self.name}: link closed"))
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    def drop(self) -> bool:
        """Cut the link at once (TCP: reset, no flush) so the firmware watchdog stops the belt."""
        self._closing = True
        stream = self._stream
        if stream is not None:
            abort = getattr(stream, "abort", None)
            with contextlib.suppress(Exception):
                (abort or stream.close)()
        self._shutdown(LinkLost(f"{self.name}: link dropped by host"))
        if self._reader is not None:
            self._reader.cancel()
        return True

    def _shutdown(self, exc: TransportError) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self._reader = None
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.handle.cancel()
            if not p.fut.done():
                p.fut.set_exception(exc)
                # Nobody may be awaiting (write_nowait); don't warn "exception never retrieved".
                p.fut.exception()

    def _link_lost(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._shutdown(LinkLost(f"{self.name}: {reason}"))
        self._lost(reason)

    # -- reader --------------------------------------------------------------------------

    async def _read_loop(self, stream: ByteStream) -> None:
        feed = self._decoder.feed
        try:
            while True:
                data = await stream.read()
                if not data:
                    self._link_lost("link closed by peer")
                    return
                for frame in feed(data):
                    self._dispatch(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead stream, or a bug: either way the link is unusable
            log.exception("framed reader for %s failed", self.name)
            self._link_lost(f"link error: {_reason(exc)}")

    def _dispatch(self, frame: Frame) -> None:
        ftype = frame.type
        if ftype is _NOTIFY:
            self._notifications += 1
            handler = self._notify
            if handler is not None:
                try:
                    handler(frame.uuid, frame.value)
                except Exception:  # a handler bug must not kill the link (and the stop path)
                    log.exception("notify handler failed for 0x%04X", frame.uuid)
            return
        pending = self._pending.get(frame.seq)
        if (
            pending is None
            or _EXPECTED[pending.kind] is not ftype
            or pending.uuid != frame.uuid
        ):
            # Late (after a timeout), duplicated or foreign: counted, never acted on.
            self._unmatched += 1
            return
        del self._pending[frame.seq]
        pending.handle.cancel()
        fut = pending.fut
        if fut.done():  # the caller gave up (cancelled) before the response came
            return
        value = frame.value
        if ftype is _WRITE_RESPONSE:
            status = value[0] if value else STATUS_OK
            if status == STATUS_OK:
                fut.set_result(None)
            else:
                self._rejected += 1
                fut.set_exception(WriteRejected(frame.uuid, status))
        elif not value:
            fut.set_exception(
                TransportError(f"{self.name}: empty read response for 0x{frame.uuid:04X}")
            )
        elif value[0] != STATUS_OK:
            self._rejected += 1
            fut.set_exception(WriteRejected(frame.uuid, value[0]))
        else:
            fut.set_result(value[1:])

    # -- requests ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        pending = self._pending
        seq = (self._seq + 1) & 0xFF
        for _ in range(256):
            p = pending.get(seq)
            if p is None:
                self._seq = seq
                return seq
            if p.fut.done():  # abandoned by its caller: the number is free again
                p.handle.cancel()
                del pending[seq]
                self._seq = seq
                return seq
            seq = (seq + 1) & 0xFF
        raise TransportError(f"{self.name}: 256 requests in flight, no sequence number free")

    def _send_request(
        self, kind: FrameType, uuid: int, value: bytes, timeout_s: float
    ) -> asyncio.Future[Any]:
        """Put the request on the wire now; return the future of its outcome
        (WRITE: None, READ: the value without its status byte)."""
        stream = self._stream
        if stream is None or self._closing:
            raise LinkLost(f"{self.name}: not connected")
        seq = self._next_seq()
        data = encode_frame(Frame(kind, uuid, value, seq))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        handle = loop.call_later(timeout_s, self._expire, seq, timeout_s)
        self._pending[seq] = _Pending(fut, kind, uuid, handle)
        stream.write(data)
        self._frames_sent += 1
        return fut

    def _expire(self, seq: int, timeout_s: float) -> None:
        pending = self._pending.pop(seq, None)
        if pending is None or pending.fut.done():
            return
        self._timeouts += 1
        what = "write" if pending.kind is FrameType.WRITE else "read"
        pending.fut.set_exception(
            ResponseTimeout(
                f"{self.name}: no {what} response for 0x{pending.uuid:04X} within {timeout_s:g} s"
            )
        )

    def _release(self, fut: asyncio.Future[Any]) -> None:
        for seq, p in self._pending.items():
            if p.fut is fut:
                p.handle.cancel()
                del self._pending[seq]
                return

    async def _await(self, fut: asyncio.Future[Any]) -> Any:
        try:
            return await fut
        except asyncio.CancelledError:
            # The caller gave up: free the seq so a late response is counted as unmatched.
            self._release(fut)
            raise

    async def write(self, uuid: int, value: bytes, *, timeout_s: float = 1.0) -> None:
        # No await before _send_request: the frame is on the stream before we yield.
        await self._await(self._send_request(FrameType.WRITE, uuid, value, timeout_s))

    def write_nowait(
        self, uuid: int, value: bytes, *, timeout_s: float = 1.0
    ) -> asyncio.Future[None]:
        """Send now (in this call); the returned future resolves with the write-response
        (``WriteRejected`` / ``ResponseTimeout`` / ``LinkLost`` as for :meth:`write`).
        Cancelling it abandons the request."""
        fut: asyncio.Future[None] = self._send_request(FrameType.WRITE, uuid, value, timeout_s)
        return fut

    async def read(self, uuid: int, *, timeout_s: float = 1.0) -> bytes:
        value: bytes = await self._await(self._send_request(FrameType.READ, uuid, b"", timeout_s))
        return value

    async def subscribe(self, uuid: int) -> None:
        """Framed links notify everything unasked; nothing to enable."""

    async def keepalive(self) -> None:
        stream = self._stream
        if stream is None or self._closing:
            raise LinkLost(f"{self.name}: not connected")
        self._seq = (self._seq + 1) & 0xFF
        stream.write(_KEEPALIVES[self._seq])
        self._frames_sent += 1

    @property
    def counters(self) -> dict[str, int]:
        c = asdict(self._decoder.counters)
        c["frames_received"] = c.pop("frames")
        c["dropped"] = self._decoder.counters.dropped
        c["frames_sent"] = self._frames_sent
        c["notifications"] = self._notifications
        c["unmatched_responses"] = self._unmatched
        c["timeouts"] = self._timeouts
        c["rejected"] = self._rejected
        c["in_flight"] = sum(1 for p in self._pending.values() if not p.fut.done())
        return c


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
