"""Native-protocol drivers: one per maker's remote protocol, selected by a profile's
``protocol`` field (docs/protocols.md). Each offers :class:`~treadctl.drivers.base.TreadmillDriver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from treadctl.clock import Clock, LoopClock
from treadctl.drivers.base import DriverError, Opener, TreadmillDriver
from treadctl.profiles import FirmwareProfile
from treadctl.transport.base import TransportError
from treadctl.transport.serial import open_serial_stream
from treadctl.transport.stream import AsyncioByteStream, ByteStream
from treadctl.transport.url import DeviceURLError, parse_device_url

__all__ = ["DriverError", "TreadmillDriver", "make_driver", "make_driver_on", "open_stream"]


async def open_stream(url: str, profile: FirmwareProfile, timeout_s: float = 5.0) -> ByteStream:
    """The byte stream of ``serial://PATH[?baud=N]`` (default baud: the profile's) or
    ``tcp://HOST:PORT``; one-line :class:`~treadctl.transport.base.TransportError` on failure."""
    try:
        parsed = parse_device_url(url)
    except DeviceURLError as exc:
        raise TransportError(str(exc)) from None
    if parsed.scheme == "serial":
        assert parsed.serial_path is not None
        baud = parsed.baud if parsed.param("baud") is not None else profile.wire.baud
        return open_serial_stream(parsed.serial_path, baud or profile.wire.baud)
    if parsed.scheme == "tcp":
        assert parsed.host is not None and parsed.port is not None
        try:
            async with asyncio.timeout(parsed.timeout_s or timeout_s):
                reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"cannot connect to {url}: {exc or 'timed out'}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return AsyncioByteStream(reader, writer)
    raise TransportError(f"{profile.name} ({profile.protocol}) needs a serial:// or tcp:// URL")


def make_driver(url: str, profile: FirmwareProfile, clock: Clock | None = None) -> TreadmillDriver:
    """The driver of ``profile.protocol`` on ``url`` (not connected yet)."""

    async def opener() -> ByteStream:
        return await open_stream(url, profile)

    return make_driver_on(opener, profile, clock)


def make_driver_on(
    opener: Opener, profile: FirmwareProfile, clock: Clock | None = None
) -> TreadmillDriver:
    """The driver of ``profile.protocol`` on the stream ``opener`` returns (not connected)."""
    from treadctl.drivers.bertec import BertecDriver
    from treadctl.drivers.biodex import BiodexDriver
    from treadctl.drivers.trackmaster import TrackMasterDriver
    from treadctl.drivers.woodway import WoodwayDriver

    classes = {"biodex": BiodexDriver, "woodway": WoodwayDriver, "bertec": BertecDriver,
               "trackmaster": TrackMasterDriver}  # fmt: skip
    cls = classes.get(profile.protocol)
    if cls is None:
        raise DriverError(f"no native driver for protocol {profile.protocol!r}")
    driver: TreadmillDriver = cls(opener, profile, clock or LoopClock())
    return driver
