"""Transports: one :class:`Transport` interface, chosen by a device URL (docs/transports.md).

``open_transport(url)`` returns an unconnected transport (``await t.connect()``):

* ``sim://``      in-process simulator over an in-memory framed link (:mod:`.sim`)
* ``tcp://``      framed link over TCP (:mod:`.tcp`)
* ``serial://``   framed link over a serial port or pty (:mod:`.serial`)
* ``ble://``      FTMS over Bluetooth LE with bleak (:mod:`.ble`)

Transport modules are imported on demand so that e.g. ``sim://`` never imports bleak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadctl.transport.base import (
    DisconnectHandler,
    LinkLost,
    NotifyHandler,
    ResponseTimeout,
    Transport,
    TransportError,
    WriteRejected,
)
from treadctl.transport.url import DeviceURL, DeviceURLError, parse_device_url

if TYPE_CHECKING:
    from treadctl.profiles import FirmwareProfile

__all__ = [
    "DeviceURL",
    "DeviceURLError",
    "DisconnectHandler",
    "LinkLost",
    "NotifyHandler",
    "ResponseTimeout",
    "Transport",
    "TransportError",
    "WriteRejected",
    "open_transport",
    "parse_device_url",
    "require_ftms",
]


def require_ftms(profile: FirmwareProfile) -> None:
    """``TransportError`` for a profile that does not speak FTMS (an FTMS client, a BLE
    link or the ``treadctl ftms`` tools must never send FTMS frames to such a machine)."""
    if profile.protocol != "ftms":
        raise TransportError(
            f"profile {profile.name} speaks the {profile.protocol} protocol, not FTMS"
            " (docs/protocols.md)"
        )


def open_transport(
    url: str | DeviceURL, *, profile: FirmwareProfile | None = None
) -> Transport:
    """The transport for ``url``, not connected yet.

    ``profile`` is the controller's firmware profile. For ``sim://`` it is also the
    simulated firmware unless the URL names one (``sim://?profile=NAME`` wins, so a test
    can run a controller against a firmware it does not expect). ``speedup`` in a sim
    URL is for the caller choosing the event loop (:func:`treadctl.clock.run`); the
    transport follows whatever loop it runs on. Raises :class:`DeviceURLError` for a
    bad URL and ``ProfileError`` for an unknown profile. A profile of a native protocol
    (Biodex, Woodway, Bertec, TrackMaster) gets a ``NativeTransport``: the controller
    drives it through that protocol's driver (``treadctl.drivers.link``; docs/protocols.md),
    and ``sim://`` then runs the protocol's simulator personality in this process.
    """
    u = parse_device_url(url) if isinstance(url, str) else url
    if profile is not None and profile.protocol != "ftms":
        if u.scheme == "ble":
            raise TransportError(
                f"profile {profile.name} speaks the {profile.protocol} protocol over a"
                " serial:// or tcp:// link (sim:// for its simulator), not Bluetooth"
            )
        from treadctl.drivers.link import NativeTransport

        return NativeTransport(u, profile)
    if u.scheme == "sim":
        from treadctl.transport.sim import SimTransport

        sim_profile: FirmwareProfile | str | None = u.profile or profile
        return SimTransport(sim_profile, faults=u.faults, seed=u.seed, quirks=u.quirks)
    if u.scheme == "tcp":
        from treadctl.transport.tcp import DEFAULT_CONNECT_TIMEOUT_S, TcpTransport

        assert u.host is not None and u.port is not None
        return TcpTransport(
            u.host, u.port, connect_timeout_s=u.timeout_s or DEFAULT_CONNECT_TIMEOUT_S
        )
    if u.scheme == "serial":
        from treadctl.transport.serial import SerialTransport

        assert u.serial_path is not None
        return SerialTransport(u.serial_path, u.baud or 115200)
    from treadctl.transport.ble import DEFAULT_SCAN_TIMEOUT_S, BleTransport

    return BleTransport(
        u.ble_address,
        u.ble_name_prefix,
        scan_timeout_s=u.timeout_s or DEFAULT_SCAN_TIMEOUT_S,
    )
