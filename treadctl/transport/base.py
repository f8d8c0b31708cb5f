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

NotifyHandler = Callable[[int, bytes], None]
DisconnectHandler = Callable[[str], None]


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

    def write_nowait(self, uuid: int, value: bytes) -> asyncio.Future[None]:
        """Write with response, the bytes leaving for the wire *in this call* where the
        link allows it (framed links override this). The returned future resolves with
        the write-response. The stop path uses it so nothing can be sent ahead of a stop."""
        return asyncio.ensure_future(self.write(uuid, value))

    async def keepalive(self) -> None:  # noqa: B027 - optional for transports without one
        """Tell the firmware the host is alive (serial/TCP/sim). BLE: nothing to do."""

    def drop(self) -> None:  # noqa: B027 - optional
        """Cut the link abruptly so the firmware's own link watchdog stops the belt.

        The last escalation step when a stop is not obeyed (docs/safety.md)."""

    @property
    def counters(self) -> dict[str, int]:
        """Link statistics (frames, CRC errors, ...) for state/telemetry/logs."""
        return {}
