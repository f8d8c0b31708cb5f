"""The one Transport interface: a GATT-shaped link to an FTMS treadmill.

Everything above this layer speaks characteristic UUIDs (16-bit) and value bytes; BLE,
serial, TCP and the in-process simulator are interchangeable behind it (like python-can's
``Bus``). There is deliberately no outbound queue here: a write goes to the wire when it
is called, so the only queue of commands is the FTMS client's, where stop pre-empts.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any, ClassVar, Literal

NotifyHandler = Callable[[int, bytes], None]
DisconnectHandler = Callable[[str], None]

#: What :meth:`Transport.write_nowait` guarantees on a link (``Transport.nowait_delivery``):
#:
#: * ``"in-call"`` - the bytes are on the link when the call returns (framed links: the
#:   frame is written to the stream inside the call).
#: * ``"after-outstanding-request"`` - the request is handed to the stack inside the call
#:   and leaves ahead of every request made after it; ATT allows one outstanding request
#:   per connection, so if one is already on the air it goes out as soon as that request's
#:   response arrives (BLE: one or two connection events).
NowaitDelivery = Literal["in-call", "after-outstanding-request"]


class TransportError(Exception):
    """A link-level failure. The message names what failed, in one line."""


class LinkLost(TransportError):
    """The link is gone (closed, dropped, unplugged)."""


class WriteRejected(TransportError):
    """The peer answered a write or read with an ATT error status."""

    def __init__(self, uuid: int, status: int) -> None:
        super().__init__(f"write to 0x{uuid:04X} rejected with ATT status 0x{status:02X}")
        self.uuid = uuid
        self.status = status


class ResponseTimeout(TransportError):
    """No write-response / read-response arrived in time."""


class Transport(abc.ABC):
    """A connected FTMS peer. Not thread-safe; one event loop owns it."""

    #: Human-readable endpoint, e.g. ``tcp://127.0.0.1:5000``.
    name: str = "transport"
    #: What :meth:`write_nowait` guarantees here (:data:`NowaitDelivery`). A transport
    #: that can do neither must not exist: the stop path relies on one of the two.
    nowait_delivery: ClassVar[NowaitDelivery] = "in-call"

    def __init__(self) -> None:
        self._notify: NotifyHandler | None = None
        self._on_disconnect: DisconnectHandler | None = None

    def set_notify_handler(self, handler: NotifyHandler | None) -> None:
        """Called synchronously for every notification/indication: ``handler(uuid, value)``."""
        self._notify = handler

    def set_disconnect_handler(self, handler: DisconnectHandler | None) -> None:
        """Called once when the link is lost unexpectedly: ``handler(reason)``."""
        self._on_disconnect = handler

    def _deliver(self, uuid: int, value: bytes) -> None:
        if self._notify is not None:
            self._notify(uuid, value)

    def _lost(self, reason: str) -> None:
        if self._on_disconnect is not None:
            handler, self._on_disconnect = self._on_disconnect, None
            handler(reason)

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the link. Raises TransportError with a one-line reason on failure."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the link; idempotent; never raises."""

    @abc.abstractmethod
    async def subscribe(self, uuid: int) -> None:
        """Enable notifications/indications of ``uuid`` (no-op where always on)."""

    @abc.abstractmethod
    async def write(self, uuid: int, value: bytes, *, timeout_s: float = 1.0) -> None:
        """Write with response. The bytes leave for the wire before the first await."""

    @abc.abstractmethod
    async def read(self, uuid: int, *, timeout_s: float = 1.0) -> bytes:
        """Read a characteristic value."""

    @abc.abstractmethod
    def write_nowait(
        self, uuid: int, value: bytes, *, timeout_s: float = 1.0
    ) -> asyncio.Future[None]:
        """Write with response, started *in this call*: nothing written later can leave
        ahead of it. :attr:`nowait_delivery` says how far the call gets: the bytes on the
        link (``in-call``), or the request in the stack behind at most one request already
        on the air (``after-outstanding-request``, BLE). The returned future resolves with
        the write-response (``WriteRejected`` / ``ResponseTimeout`` / ``LinkLost`` as for
        :meth:`write`); cancelling it abandons the request. Raises ``LinkLost`` in the call
        when not connected. The stop path uses it so nothing can be sent ahead of a stop.

        Abstract on purpose: a default that only schedules a task would make the promise
        on a transport that cannot keep it."""

    async def keepalive(self) -> None:  # noqa: B027 - optional for transports without one
        """Tell the firmware the host is alive (serial/TCP/sim). BLE: nothing to do."""

    def drop(self) -> bool:
        """Cut the link abruptly so the firmware's own link watchdog stops the belt; True
        when the link was cut (a link that cannot be cut, or whose machine has no
        watchdog, stays up: False).

        The last escalation step when a stop is not obeyed (docs/safety.md)."""
        return False

    @property
    def counters(self) -> dict[str, int]:
        """Link statistics (frames, CRC errors, ...) for state/telemetry/logs."""
        return {}

    @property
    def simulated_truth(self) -> Callable[[], Any] | None:
        """The ground truth (``BeltTruth``) of the in-process simulator behind a connected
        ``sim://`` link, None on a real one: a simulated heart strap (``sim-hr://``) reads
        the belt's workload from it (treadctl/simulator/heart.py)."""
        return None
