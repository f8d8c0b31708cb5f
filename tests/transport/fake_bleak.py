"""A radio-less stand-in for bleak: the BleakClient / BleakScanner surface ble.py uses,
bridged to an in-process :class:`simulator.SimTreadmill`.

Only the radio is faked. GATT semantics follow bleak on BlueZ: characteristics are
addressed by full 128-bit UUID strings, notifications need ``start_notify``, a write with
response raises ``BleakGATTProtocolError`` with the ATT code, and the disconnected
callback fires on every disconnect (also the ones we ask for). While connected the
"link layer" keeps the firmware's link watchdog fed, like BLE supervision does; when the
link goes (``disconnect`` or :meth:`FakeBleakClient.lose_link`) the watchdog stops the belt.

What the real stack showed and this fake now does too (tests/transport/test_ble_bumble.py
runs the same transport over Bumble's ATT/GATT): a Control Point write before its
indications are enabled is answered ATT 0xFD; a second ``start_notify`` on the same
characteristic is refused (BlueZ: InProgress); a write without response to a
characteristic that has no such property is refused (BlueZ: NotSupported); ``mtu_size``
is 23 with a warning until the BlueZ backend's ``_acquire_mtu()`` ran; BlueZ's services
cache can hold a stale GATT table (``FakeBlueZ.stale``) until the device is removed
(``unpair``).
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bleak.exc import BleakDBusError, BleakError, BleakGATTProtocolError

from treadctl.control.reverse import reverse_method
from treadctl.ftms.uuids import (
    BELT_DIRECTION,
    CONTROL_POINT,
    FEATURE,
    FITNESS_MACHINE_SERVICE,
    INCLINATION_RANGE,
    MACHINE_STATUS,
    SPEED_RANGE,
    TRAINING_STATUS,
    TREADMILL_DATA,
    full_uuid,
    short_uuid,
)
from treadctl.simulator import SimTreadmill

VENDOR_SERVICE = 0xFF00
ATT_CCCD_IMPROPERLY_CONFIGURED = 0xFD


@dataclass
class FakeBlueZ:
    """What bluetoothd keeps between connections: the services cache. While ``stale``
    names characteristics, a connect sees the GATT table without them (the table of an
    older firmware); RemoveDevice (bleak's ``unpair``) clears it."""

    stale: tuple[int, ...] = ()
    removed: int = 0


@dataclass(frozen=True)
class FakeBLEDevice:
    address: str
    name: str | None
    details: Any = None


@dataclass(frozen=True)
class FakeAdvertisementData:
    local_name: str | None
    rssi: int
    service_uuids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FakeCharacteristic:
    uuid: str
    properties: list[str]
    handle: int

    @property
    def short(self) -> int:
        s = short_uuid(self.uuid)
        assert s is not None
        return s


@dataclass
class FakeService:
    uuid: str
    characteristics: list[FakeCharacteristic]


class FakeServiceCollection:
    def __init__(self, services: list[FakeService]) -> None:
        self.services = {s.uuid: s for s in services}

    def get_service(self, uuid: str) -> FakeService | None:
        return self.services.get(uuid.lower())

    def get_characteristic(self, spec: str | int) -> FakeCharacteristic | None:
        for service in self.services.values():
            for char in service.characteristics:
                if spec in (char.uuid, char.handle):
                    return char
        return None

    def __iter__(self) -> Any:
        return iter(self.services.values())


def gatt_of(sim: SimTreadmill, without: tuple[int, ...] = ()) -> FakeServiceCollection:
    """The GATT table a treadmill with ``sim``'s firmware profile would expose (``without``
    those characteristics: a stale cached table)."""
    handle = iter(range(0x10, 0x100, 2))
    ftms = [
        (FEATURE, ["read"]),
        (TREADMILL_DATA, ["notify"]),
        (TRAINING_STATUS, ["read", "notify"]),
        (SPEED_RANGE, ["read"]),
        (INCLINATION_RANGE, ["read"]),
        (CONTROL_POINT, ["write", "indicate"]),
        (MACHINE_STATUS, ["notify"]),
    ]
    services = [
        FakeService(
            full_uuid(FITNESS_MACHINE_SERVICE),
            [FakeCharacteristic(full_uuid(u), p, next(handle)) for u, p in ftms
             if u not in without],
        )
    ]
    if reverse_method(sim.profile).vendor_characteristic:
        services.append(
            FakeService(
                full_uuid(VENDOR_SERVICE),
                [
                    FakeCharacteristic(
                        full_uuid(sim.profile.reverse.characteristic or BELT_DIRECTION),
                        ["read", "write", "notify"],
                        next(handle),
                    )
                ],
            )
        )
    return FakeServiceCollection(services)


class FakeBleakClient:
    """``BleakClient(device, disconnected_callback)`` talking to ``sim`` instead of a radio."""

    def __init__(
        self,
        sim: SimTreadmill,
        device: FakeBLEDevice | str,
        disconnected_callback: Callable[[Any], None] | None = None,
        *,
        fail_connects: int = 0,
        write_latency_s: float = 0.0,
        bluez: FakeBlueZ | None = None,
        mtu: int = 247,
    ) -> None:
        self.sim = sim
        self.bluez = bluez or FakeBlueZ()
        self._negotiated_mtu = mtu
        self._mtu_size: int | None = None
        self._backend = self  # bleak's BleakClient._backend: here the same object
        #: (uuid, response) of every write, as bleak was asked for it.
        self.writes: list[tuple[int, bool | None]] = []
        self.address = device if isinstance(device, str) else device.address
        self._disconnected_callback = disconnected_callback
        self._fail_connects = fail_connects
        self.write_latency_s = write_latency_s
        self._connected = False
        self._services: FakeServiceCollection | None = None
        self._callbacks: dict[int, tuple[FakeCharacteristic, Callable[..., Any]]] = {}
        self._supervision: asyncio.Task[None] | None = None
        self.connect_calls = 0

    # -- connection ------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def services(self) -> FakeServiceCollection:
        if self._services is None:
            raise BleakError("Service Discovery has not been performed yet")
        return self._services

    async def connect(self, **_kwargs: Any) -> None:
        self.connect_calls += 1
        await asyncio.sleep(0)
        if self._fail_connects > 0:
            self._fail_connects -= 1
            raise BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"])
        self._connected = True
        self._mtu_size = None
        self._services = gatt_of(self.sim, self.bluez.stale)
        self.sim.attach(self._on_sim_notify)
        self._supervision = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        # Link-layer traffic keeps flowing while connected: the firmware sees a live host.
        period_s = self.sim.profile.control.link_timeout_ms / 1000 / 4
        while True:
            self.sim.host_alive()
            await asyncio.sleep(period_s)

    def _teardown(self) -> None:
        was = self._connected
        self._connected = False
        self._callbacks.clear()
        if self.sim.notify_target == self._on_sim_notify:
            self.sim.attach(None)
        if self._supervision is not None:
            self._supervision.cancel()
            self._supervision = None
        if was and self._disconnected_callback is not None:
            self._disconnected_callback(self)

    async def disconnect(self) -> None:
        await asyncio.sleep(0)
        self._teardown()

    async def unpair(self) -> None:
        """BlueZ backend: RemoveDevice, which also drops the services cache."""
        await asyncio.sleep(0)
        self.bluez.stale = ()
        self.bluez.removed += 1
        self._teardown()

    @property
    def mtu_size(self) -> int:
        # bleak's BlueZ backend: unknown (warning, 23) until _acquire_mtu() ran.
        if self._mtu_size is None:
            warnings.warn("Using default MTU value. Call _acquire_mtu() first", stacklevel=2)
            return 23
        return self._mtu_size

    async def _acquire_mtu(self) -> None:
        await asyncio.sleep(0)
        self._mtu_size = self._negotiated_mtu

    def lose_link(self) -> None:
        """The treadmill vanishes (power cut, out of range): bleak reports a disconnect."""
        self._teardown()

    # -- GATT ------------------------------------------------------------------------

    def _char(self, spec: Any, need: tuple[str, ...]) -> FakeCharacteristic:
        if not self._connected:
            raise BleakError("Not connected")
        char = self.services.get_characteristic(spec)
        if char is None:
            raise BleakError(f"Characteristic {spec} was not found!")
        if not any(p in char.properties for p in need):
            raise BleakError(f"Characteristic {spec} does not support {'/'.join(need)}")
        return char

    async def start_notify(self, spec: Any, callback: Callable[..., Any], **_kw: Any) -> None:
        char = self._char(spec, ("notify", "indicate"))
        if char.short in self._callbacks:
            raise BleakDBusError("org.bluez.Error.InProgress", ["Notify already in progress"])
        await asyncio.sleep(0)
        self._callbacks[char.short] = (char, callback)

    async def stop_notify(self, spec: Any) -> None:
        char = self._char(spec, ("notify", "indicate"))
        self._callbacks.pop(char.short, None)

    def _on_sim_notify(self, uuid: int, value: bytes) -> None:
        entry = self._callbacks.get(uuid)
        if entry is not None and self._connected:
            char, callback = entry
            callback(char, bytearray(value))

    async def write_gatt_char(self, spec: Any, data: Any, response: bool | None = None) -> None:
        char = self._char(spec, ("write", "write-without-response"))
        self.writes.append((char.short, response))
        if response is None:  # bleak: with response where the characteristic has it
            response = "write" in char.properties
        if not response and "write-without-response" not in char.properties:
            raise BleakDBusError("org.bluez.Error.NotSupported", ["Operation is not supported"])
        if char.short == CONTROL_POINT and CONTROL_POINT not in self._callbacks:
            # FTMS: the Control Point answers 0xFD until its indications are enabled.
            await asyncio.sleep(0)
            raise BleakGATTProtocolError(ATT_CCCD_IMPROPERLY_CONFIGURED)
        # The request is on the air when the call is made; the response takes a while.
        status = self.sim.handle_write(char.short, bytes(data))
        if self.write_latency_s:
            await asyncio.sleep(self.write_latency_s)
        else:
            await asyncio.sleep(0)
        if not self._connected:
            raise BleakError("Not connected")
        if response and status:
            raise BleakGATTProtocolError(status)

    async def read_gatt_char(self, spec: Any, **_kw: Any) -> bytearray:
        char = self._char(spec, ("read",))
        await asyncio.sleep(0)
        status, value = self.sim.handle_read(char.short)
        if status:
            raise BleakGATTProtocolError(status)
        return bytearray(value)


class FakeScanner:
    """The classmethods of BleakScanner that ble.py uses, over a fixed set of adverts."""

    def __init__(self, adverts: list[tuple[FakeBLEDevice, FakeAdvertisementData]]) -> None:
        self.adverts = adverts
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _visible(
        self, service_uuids: list[str] | None
    ) -> list[tuple[FakeBLEDevice, FakeAdvertisementData]]:
        if not service_uuids:
            return list(self.adverts)
        wanted = {u.lower() for u in service_uuids}
        return [(d, a) for d, a in self.adverts if wanted & {u.lower() for u in a.service_uuids}]

    async def find_device_by_address(
        self, address: str, timeout: float = 10.0, **kwargs: Any  # noqa: ASYNC109 - bleak's
    ) -> FakeBLEDevice | None:
        self.calls.append(("find_device_by_address", {"timeout": timeout, **kwargs}))
        await asyncio.sleep(0)
        for dev, _ in self.adverts:
            if dev.address.upper() == address.upper():
                return dev
        await asyncio.sleep(timeout)  # a real scan runs the whole timeout when nothing matches
        return None

    async def find_device_by_filter(
        self,
        filterfunc: Callable[[Any, Any], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - bleak's signature
        **kwargs: Any,
    ) -> FakeBLEDevice | None:
        self.calls.append(("find_device_by_filter", {"timeout": timeout, **kwargs}))
        await asyncio.sleep(0)
        for dev, adv in self._visible(kwargs.get("service_uuids")):
            if filterfunc(dev, adv):
                return dev
        await asyncio.sleep(timeout)
        return None

    async def discover(
        self, timeout: float = 5.0, *, return_adv: bool = False, **kwargs: Any  # noqa: ASYNC109
    ) -> Any:
        self.calls.append(("discover", {"timeout": timeout, **kwargs}))
        await asyncio.sleep(timeout)
        visible = self._visible(kwargs.get("service_uuids"))
        if return_adv:
            return {d.address: (d, a) for d, a in visible}
        return [d for d, _ in visible]


def treadmill_advert(
    address: str = "F0:0D:12:34:56:78", name: str = "TREADCTL-REF", rssi: int = -60
) -> tuple[FakeBLEDevice, FakeAdvertisementData]:
    return (
        FakeBLEDevice(address, name),
        FakeAdvertisementData(name, rssi, [full_uuid(FITNESS_MACHINE_SERVICE)]),
    )


def other_advert(
    address: str = "C0:FF:EE:00:00:01", name: str = "TREADCTL-HRM", rssi: int = -40
) -> tuple[FakeBLEDevice, FakeAdvertisementData]:
    """A device whose name also matches a prefix, but which is not a fitness machine."""
    return (FakeBLEDevice(address, name), FakeAdvertisementData(name, rssi, [full_uuid(0x180D)]))


class ClientFactory:
    """``client_factory`` for BleTransport: every client it makes talks to ``sim``."""

    def __init__(self, sim: SimTreadmill, **client_kw: Any) -> None:
        self.sim = sim
        self.bluez: FakeBlueZ = client_kw.pop("bluez", None) or FakeBlueZ()
        self.client_kw = client_kw
        self.clients: list[FakeBleakClient] = []

    def __call__(self, device: Any, disconnected_callback: Callable[[Any], None]) -> Any:
        kw = dict(self.client_kw)
        # Failing connects are spread over successive clients, as BleakClient is made anew.
        fails = kw.pop("fail_connects", 0)
        client = FakeBleakClient(
            self.sim, device, disconnected_callback,
            fail_connects=1 if len(self.clients) < fails else 0, bluez=self.bluez, **kw,
        )
        self.clients.append(client)
        return client

    @property
    def last(self) -> FakeBleakClient:
        return self.clients[-1]


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
