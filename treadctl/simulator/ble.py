"""The simulator as a Bluetooth LE FTMS treadmill, on the Bumble stack.

:class:`FtmsPeripheral` puts one :class:`~treadctl.simulator.firmware.SimTreadmill` behind a
real GATT server (Bumble's ATT/GATT, L2CAP, HCI): the Fitness Machine Service 0x1826 with
Feature, Treadmill Data, Training Status, Supported Speed/Inclination Range, Control Point
and Fitness Machine Status, plus the vendor Belt Direction characteristic 0xFF01 on
``vendor-characteristic`` firmware (docs/reference-firmware.md). The firmware logic is the
simulator's; this module only adds what the radio adds:

* **ATT rules.** A Control Point write while its indications are not enabled answers ATT
  0xFD (Client Characteristic Configuration Descriptor improperly configured); 0xFE
  (procedure already in progress) comes from the firmware while a procedure is pending.
  Reads and writes carry the firmware's ATT statuses.
* **MTU.** A notification carries at most ATT_MTU - 3 bytes (20 at the default MTU of 23).
  A Treadmill Data record longer than that is split the FTMS way: every part but the
  last has More Data set (no Instantaneous Speed); the last carries the speed.
  ``max_mtu`` caps what an MTU exchange may agree; ``long_records`` makes the firmware
  send the long record of a full-featured console (average speed, energy, METs), which
  needs two notifications at MTU 23.
* **Connection interval.** On a real adapter the peripheral asks the central for
  ``connection_interval_ms`` after connecting; on the virtual link, :class:`PacedLink`
  delivers every packet at the next connection event, so a write waits for one.
* **Link faults.** While the connection lasts, link-layer traffic keeps the firmware's
  link watchdog fed (BLE supervision). ``link-drop`` silences the link (nothing passes,
  writes go unanswered) and the connection times out after ``supervision_timeout_s``;
  :meth:`FtmsPeripheral.drop_connection` is a power cut. ``telemetry-stop``,
  ``safety-key``, ``slow-acks`` and the rest act in the firmware as on every link.

:func:`serve_ble` serves one simulator over a real adapter through a Bumble HCI transport
(``usb:0``, ``hci-socket:0``, ``serial:/dev/ttyACM0``, ``tcp-client:HOST:PORT``, ...):
``treadctl sim --ble``. :class:`VirtualLink` runs the peripheral and a Bumble central on
virtual controllers in one process (no hardware) and offers the central as a bleak
*backend* (:class:`BumbleBleakBackend`, bleak's ``BleakClient(..., backend=...)``) and a
scanner, so ``treadctl.transport.ble`` runs unchanged over a real ATT/GATT stack.

Bumble is an optional dependency (``pip install 'treadctl[ble-sim]'``); nothing else in
treadctl imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

from bumble import hci
from bumble.att import ATT_Error, ATT_Handle_Value_Notification
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from treadctl.control.reverse import reverse_method
from treadctl.ftms import (
    CONTROL_POINT,
    FEATURE,
    FITNESS_MACHINE_SERVICE,
    INCLINATION_RANGE,
    MACHINE_STATUS,
    SPEED_RANGE,
    TRAINING_STATUS,
    TREADMILL_DATA,
    FTMSEncodeError,
    TreadmillData,
    decode_treadmill_data,
    encode_treadmill_data,
)
from treadctl.ftms.treadmill_data import PaceFormat
from treadctl.simulator.firmware import SimTreadmill
from treadctl.types import KMH_PER_MPS

log = logging.getLogger(__name__)

ATT_DEFAULT_MTU = 23
#: ATT 0xFD: Client Characteristic Configuration Descriptor Improperly Configured.
ATT_CCCD_IMPROPERLY_CONFIGURED = 0xFD
#: The vendor service that holds the Belt Direction characteristic.
VENDOR_SERVICE = 0xFF00
DEFAULT_NAME = "TREADCTL-SIM"
DEFAULT_ADDRESS = "F0:0D:12:34:56:78"
CENTRAL_ADDRESS = "C0:00:00:00:00:01"
#: BLE connection supervision timeout used when the link goes silent (``link-drop``).
DEFAULT_SUPERVISION_TIMEOUT_S = 2.0
#: FTMS Service Data (advertised): flags bit 0 = machine available; type bit 0 = treadmill.
FTMS_SERVICE_DATA = bytes([0x01]) + struct.pack("<H", 0x0001)

_READ = Characteristic.Permissions.READABLE
_WRITE = Characteristic.Permissions.WRITEABLE
_NONE = Characteristic.Permissions(0)
_P = Characteristic.Properties


def uuid16(value: int) -> UUID:
    return UUID.from_16_bits(value)


# ------------------------------------------------------------------ split records


def split_treadmill_data(
    value: bytes,
    max_len: int,
    *,
    pace_format: PaceFormat,
    signed_speed: bool = False,
) -> list[bytes]:
    """One Treadmill Data record as notifications of at most ``max_len`` bytes (FTMS 1.0,
    4.9.1: fields in flag order, More Data set in every part but the last, the speed in the
    last). A record that fits, or one the strict decoder cannot read (a firmware quirk),
    goes out as it is."""
    if len(value) <= max_len:
        return [value]
    try:
        td = decode_treadmill_data(value, pace_format=pace_format, signed_speed=signed_speed)
    except Exception:
        return [value[:max_len]]  # what ATT would do with it: cut at the MTU
    groups = _field_groups(td)
    parts: list[bytes] = []
    current: dict[str, Any] = {}

    def encode(fields: dict[str, Any]) -> bytes:
        return encode_treadmill_data(
            TreadmillData(**fields), pace_format=pace_format, signed_speed=signed_speed
        )

    for group in groups:
        trial = {**current, **group}
        if current and len(encode(trial)) > max_len:
            parts.append(encode(current))
            current = dict(group)
        else:
            current = trial
    last = {**current, "speed_kmh": td.speed_kmh}
    if len(encode(last)) <= max_len:
        parts.append(encode(last))
    else:
        if current:
            parts.append(encode(current))
        parts.append(encode({"speed_kmh": td.speed_kmh}))
    return parts


#: Fields that share one flag bit travel together.
_TOGETHER = (
    ("inclination_pct", "ramp_angle_deg"),
    ("positive_elevation_gain_m", "negative_elevation_gain_m"),
    ("total_energy_kcal", "energy_per_hour_kcal", "energy_per_minute_kcal"),
)


def _field_groups(td: TreadmillData) -> list[dict[str, Any]]:
    meta = {"speed_kmh", "more_data", "deviations", "missing", "not_available"}
    groups: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in dataclasses.fields(TreadmillData):
        name = f.name
        if name in meta or name in seen:
            continue
        together = next((g for g in _TOGETHER if name in g), (name,))
        seen.update(together)
        values = {n: getattr(td, n) for n in together}
        if any(v is not None for v in values.values()):
            groups.append(values)
    return groups


def long_record(td: TreadmillData, *, mass_kg: float = 70.0) -> TreadmillData:
    """``td`` with what a full-featured console adds: average speed, energy, METs."""
    speed = abs(td.speed_kmh or 0.0)
    elapsed = td.elapsed_time_s or 0
    distance = td.total_distance_m or 0
    average = min(distance / elapsed * KMH_PER_MPS, 655.35) if elapsed else 0.0
    kcal_per_h = round(mass_kg * speed)  # ~1 kcal per kg per km
    return dataclasses.replace(
        td,
        average_speed_kmh=round(average, 2),
        total_energy_kcal=min(round(distance * mass_kg / 1000), 0xFFFE),
        energy_per_hour_kcal=min(kcal_per_h, 0xFFFE),
        energy_per_minute_kcal=min(round(kcal_per_h / 60), 0xFE),
        metabolic_equivalent=round(min(1.0 + speed * 0.9, 25.5), 1),
    )


# ------------------------------------------------------------------ the peripheral


class FtmsPeripheral:
    """A :class:`SimTreadmill` behind Bumble's GATT server on ``device`` (not powered yet).

    One central at a time, like most treadmill consoles. ``sim`` may be given later
    (:meth:`set_sim`): :func:`serve_ble` creates the simulator at the first connection.
    """

    def __init__(
        self,
        device: Device,
        sim: SimTreadmill | None = None,
        *,
        name: str = DEFAULT_NAME,
        max_mtu: int = 517,
        long_records: bool = False,
        connection_interval_ms: float | None = None,
        supervision_timeout_s: float = DEFAULT_SUPERVISION_TIMEOUT_S,
        make_sim: Callable[[], SimTreadmill] | None = None,
        direction_uuid: int | None = None,
        record: bool = True,
    ) -> None:
        if max_mtu < ATT_DEFAULT_MTU:
            raise ValueError(f"max_mtu must be >= {ATT_DEFAULT_MTU}, got {max_mtu}")
        self.device = device
        self.name = name
        self.long_records = long_records
        self.connection_interval_ms = connection_interval_ms
        self.supervision_timeout_s = supervision_timeout_s
        self._make_sim = make_sim
        self.sim: SimTreadmill | None = None
        self._sim_task: asyncio.Task[None] | None = None
        self.connection: Connection | None = None
        self._indications: set[Connection] = set()
        self._alive_task: asyncio.Task[None] | None = None
        self._silence_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stalled: set[asyncio.Future[None]] = set()
        #: What went out: (sim time s, uuid, value) per notification/indication (tests and
        #: benchmarks; ``record=False`` for a long-running server).
        self.sent: list[tuple[float, int, bytes]] = []
        self._record_sent = record
        self.connections = 0
        self.disconnect_reasons: list[int] = []
        if sim is not None and direction_uuid is None:
            direction_uuid = _direction_uuid(sim)
        self._build(direction_uuid)
        device.gatt_server.max_mtu = max_mtu
        device.on(device.EVENT_CONNECTION, self._on_connection)
        if sim is not None:
            self.set_sim(sim)

    # -- GATT table ----------------------------------------------------------------------

    def _build(self, direction_uuid: int | None) -> None:
        def readable(uuid: int) -> CharacteristicValue[Any]:
            return CharacteristicValue(read=lambda _conn: self._read(uuid))

        def writable(uuid: int, *, read: bool) -> CharacteristicValue[Any]:
            return CharacteristicValue(
                read=(lambda _conn: self._read(uuid)) if read else None,
                write=lambda conn, value: self._write(conn, uuid, value),
            )

        self.chars: dict[int, Characteristic[Any]] = {
            FEATURE: Characteristic(uuid16(FEATURE), _P.READ, _READ, readable(FEATURE)),
            # Notify-only: a read reaches the firmware, which answers 0x02 (Bumble's server does
            # not enforce the permission by itself).
            TREADMILL_DATA: Characteristic(
                uuid16(TREADMILL_DATA), _P.NOTIFY, _NONE, readable(TREADMILL_DATA)
            ),
            TRAINING_STATUS: Characteristic(
                uuid16(TRAINING_STATUS), _P.READ | _P.NOTIFY, _READ, readable(TRAINING_STATUS)
            ),
            SPEED_RANGE: Characteristic(
                uuid16(SPEED_RANGE), _P.READ, _READ, readable(SPEED_RANGE)
            ),
            INCLINATION_RANGE: Characteristic(
                uuid16(INCLINATION_RANGE), _P.READ, _READ, readable(INCLINATION_RANGE)
            ),
            CONTROL_POINT: Characteristic(
                uuid16(CONTROL_POINT), _P.WRITE | _P.INDICATE, _WRITE,
                writable(CONTROL_POINT, read=False),
            ),
            MACHINE_STATUS: Characteristic(
                uuid16(MACHINE_STATUS), _P.NOTIFY, _NONE, readable(MACHINE_STATUS)
            ),
        }
        order = [FEATURE, TREADMILL_DATA, TRAINING_STATUS, SPEED_RANGE, INCLINATION_RANGE,
                 CONTROL_POINT, MACHINE_STATUS]
        services = [Service(uuid16(FITNESS_MACHINE_SERVICE), [self.chars[u] for u in order])]
        self.direction_uuid = direction_uuid
        if direction_uuid is not None:
            uuid = direction_uuid
            self.chars[uuid] = Characteristic(
                uuid16(uuid), _P.READ | _P.WRITE | _P.NOTIFY, _READ | _WRITE,
                writable(uuid, read=True),
            )
            services.append(Service(uuid16(VENDOR_SERVICE), [self.chars[uuid]]))
        self.chars[CONTROL_POINT].on("subscription", self._on_cp_subscription)
        self.device.add_services(services)

    def advertising_data(self) -> bytes:
        return bytes(
            AdvertisingData(
                [
                    (AdvertisingData.FLAGS, bytes([0x06])),  # LE general discoverable, no BR/EDR
                    (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                     bytes(uuid16(FITNESS_MACHINE_SERVICE))),
                    (AdvertisingData.SERVICE_DATA_16_BIT_UUID,
                     bytes(uuid16(FITNESS_MACHINE_SERVICE)) + FTMS_SERVICE_DATA),
                    (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                ]
            )
        )

    async def start_advertising(self) -> None:
        await self.device.start_advertising(
            advertising_data=self.advertising_data(), auto_restart=True,
            advertising_interval_min=20.0, advertising_interval_max=30.0,
        )

    # -- the simulator -------------------------------------------------------------------

    def set_sim(self, sim: SimTreadmill) -> None:
        self.sim = sim
        sim.attach(self._on_sim_notify)
        sim.add_fault_listener(self._on_fault)

    def _need_sim(self) -> SimTreadmill:
        if self.sim is None:
            if self._make_sim is None:
                raise RuntimeError("FtmsPeripheral has no simulator")
            sim = self._make_sim()
            self._sim_task = asyncio.get_running_loop().create_task(sim.run())
            self.set_sim(sim)
        assert self.sim is not None
        return self.sim

    def _read(self, uuid: int) -> bytes:
        status, value = self._need_sim().handle_read(uuid)
        if status:
            raise ATT_Error(status)
        return value

    async def _write(self, conn: Connection, uuid: int, value: bytes) -> None:
        sim = self._need_sim()
        if sim.fault_active("link-drop"):
            # Nothing reaches the firmware and no response comes back: the request stays
            # pending until the connection times out (supervision timeout).
            stalled = asyncio.get_running_loop().create_future()
            self._stalled.add(stalled)
            try:
                await stalled
            finally:
                self._stalled.discard(stalled)
        if uuid == CONTROL_POINT and conn not in self._indications:
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        status = sim.handle_write(uuid, bytes(value))
        if status:
            raise ATT_Error(status)

    def _on_cp_subscription(self, bearer: Any, notify: bool, indicate: bool) -> None:
        conn = bearer if isinstance(bearer, Connection) else getattr(bearer, "connection", None)
        if conn is None:
            return
        if indicate:
            self._indications.add(conn)
        else:
            self._indications.discard(conn)

    def _on_sim_notify(self, uuid: int, value: bytes) -> None:
        conn = self.connection
        sim = self.sim
        if conn is None or sim is None or sim.fault_active("link-drop"):
            return
        char = self.chars.get(uuid)
        if char is None:
            return
        if uuid == TREADMILL_DATA:
            for part in self._telemetry_parts(sim, conn, value):
                self._notify(conn, char, uuid, part)
        elif uuid == CONTROL_POINT:
            self._indicate(conn, char, uuid, value)
        else:
            self._notify(conn, char, uuid, value)

    def _telemetry_parts(self, sim: SimTreadmill, conn: Connection, value: bytes) -> list[bytes]:
        fmt = sim.profile.quirks.pace_format
        signed = reverse_method(sim.profile).signed_speed
        if self.long_records:
            try:
                td = decode_treadmill_data(value, pace_format=fmt, signed_speed=signed)
                value = encode_treadmill_data(long_record(td), pace_format=fmt,
                                              signed_speed=signed)
            except (FTMSEncodeError, ValueError):
                pass  # a quirked record stays as the firmware made it
        return split_treadmill_data(value, conn.att_mtu - 3, pace_format=fmt,
                                    signed_speed=signed)

    def _cccd(self, conn: Connection, char: Characteristic[Any]) -> int:
        value = self.device.gatt_server.subscribers.get(conn, {}).get(char.handle)
        return value[0] if value else 0

    def _notify(self, conn: Connection, char: Characteristic[Any], uuid: int, value: bytes) -> None:
        # Synchronous, so notifications leave in the firmware's order.
        if not self._cccd(conn, char) & 0x01:
            return
        value = value[: conn.att_mtu - 3]  # ATT cannot carry more
        self._record(uuid, value)
        pdu = ATT_Handle_Value_Notification(attribute_handle=char.handle, attribute_value=value)
        self.device.gatt_server.send_gatt_pdu(conn, bytes(pdu))

    def _indicate(
        self, conn: Connection, char: Characteristic[Any], uuid: int, value: bytes
    ) -> None:
        if not self._cccd(conn, char) & 0x02:
            return
        self._record(uuid, value)
        # One indication outstanding per connection: Bumble's server holds the next one
        # until the central confirms (ATT flow control).
        self._spawn(self.device.gatt_server.indicate_subscriber(conn, char, value))

    def _record(self, uuid: int, value: bytes) -> None:
        if not self._record_sent:
            return
        sim = self.sim
        self.sent.append((sim.now_s() if sim else 0.0, uuid, value))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- connections ---------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        if self.connection is not None:
            # One central at a time, like the consoles: a second one is turned away.
            self._spawn(conn.disconnect())
            return
        self.connection = conn
        self.connections += 1
        self._need_sim()
        conn.on(conn.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(conn, reason))
        self._alive_task = asyncio.get_running_loop().create_task(self._keep_alive())
        if self.connection_interval_ms is not None and not _is_virtual(self.device):
            ms = self.connection_interval_ms
            # Supervision timeout: at least 6 intervals and 100 ms (Core spec rule of thumb).
            self._spawn(conn.update_parameters(ms, ms, 0, max(100.0, 6 * ms)))
        log.info("BLE central connected: %s", conn.peer_address)

    def _on_disconnection(self, conn: Connection, reason: int) -> None:
        self._indications.discard(conn)
        for stalled in list(self._stalled):  # requests the silent link swallowed
            stalled.cancel()
        self.disconnect_reasons.append(reason)
        if self.connection is conn:
            self.connection = None
            for task in (self._alive_task, self._silence_task):
                if task is not None:
                    task.cancel()
            self._alive_task = self._silence_task = None
        log.info("BLE central disconnected (reason 0x%02X)", reason)

    async def _keep_alive(self) -> None:
        # The link layer exchanges packets at every connection event, so while the
        # connection lasts the firmware sees a live host (its watchdog stays fed).
        sim = self._need_sim()
        period = sim.profile.control.link_timeout_ms / 1000 / 4
        while True:
            sim.host_alive()
            await asyncio.sleep(period)

    def _on_fault(self, name: str, active: bool) -> None:
        if name == "link-drop" and active and self.connection is not None:
            conn = self.connection
            self._silence_task = asyncio.get_running_loop().create_task(self._time_out(conn))

    async def _time_out(self, conn: Connection) -> None:
        await asyncio.sleep(self.supervision_timeout_s)
        with contextlib.suppress(Exception):
            await conn.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)

    def drop_connection(self) -> None:
        """The treadmill vanishes (power cut): the connection ends now."""
        conn = self.connection
        if conn is not None:
            self._spawn(conn.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR))

    async def close(self) -> None:
        for task in [*self._tasks, self._alive_task, self._silence_task, self._sim_task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.sim is not None:
            self.sim.remove_fault_listener(self._on_fault)
            if self.sim.notify_target == self._on_sim_notify:
                self.sim.attach(None)


def _is_virtual(device: Device) -> bool:
    controller = getattr(device.host, "controller", None)  # Host(controller, sink) form
    return isinstance(controller, Controller) or isinstance(
        getattr(device.host, "hci_sink", None), AsyncPipeSink
    )


# ------------------------------------------------------------------ virtual link


class PacedLink(LocalLink):
    """A LocalLink whose ACL data (ATT) moves only at connection events.

    ``connection_interval_s`` = 0 delivers at once (Bumble's LocalLink). Otherwise every
    packet waits for the next multiple of the interval on the loop clock, in order, the
    way a write waits for the next connection event on a real radio."""

    def __init__(self, connection_interval_s: float = 0.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.connection_interval_s = connection_interval_s
        self._queue: list[Callable[[], None]] = []
        self._event: asyncio.TimerHandle | None = None
        #: Set to make the link carry nothing (ACL dropped both ways).
        self.silent = False

    def send_acl_data(self, sender_controller: Any, destination_address: Any,
                      transport: Any, data: bytes) -> None:
        if self.silent:
            return
        if not self.connection_interval_s:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        self._queue.append(
            lambda: LocalLink.send_acl_data(
                self, sender_controller, destination_address, transport, data
            )
        )
        if self._event is None:
            loop = asyncio.get_running_loop()
            interval = self.connection_interval_s
            # The next event strictly after now (1e-9: float noise must not make it "now").
            when = (math.floor(loop.time() / interval + 1e-9) + 1) * interval
            self._event = loop.call_at(when, self._connection_event)

    def _connection_event(self) -> None:
        self._event = None
        queue, self._queue = self._queue, []
        for send in queue:
            send()


class VirtualLink:
    """A peripheral (:class:`FtmsPeripheral` on ``sim``) and a Bumble central on two virtual
    controllers joined by a :class:`PacedLink`: a real BLE stack, no hardware.

    ``backend`` / ``client_factory`` / ``scanner`` plug the central into
    :class:`treadctl.transport.ble.BleTransport` through bleak's own ``BleakClient``."""

    def __init__(
        self,
        sim: SimTreadmill,
        *,
        name: str = DEFAULT_NAME,
        address: str = DEFAULT_ADDRESS,
        max_mtu: int = 517,
        central_mtu: int | None = None,
        long_records: bool = False,
        connection_interval_ms: float = 0.0,
        supervision_timeout_s: float = DEFAULT_SUPERVISION_TIMEOUT_S,
        extra_peripherals: Iterable[tuple[str, str, list[int]]] = (),
    ) -> None:
        self.sim = sim
        self.link = PacedLink(connection_interval_ms / 1000)
        self.peripheral_device = _virtual_device(self.link, name, address)
        self.peripheral = FtmsPeripheral(
            self.peripheral_device, sim, name=name, max_mtu=max_mtu,
            long_records=long_records, connection_interval_ms=connection_interval_ms or None,
            supervision_timeout_s=supervision_timeout_s,
        )
        self.central = _virtual_device(self.link, "treadctl", CENTRAL_ADDRESS)
        #: ``None`` = no MTU exchange (stays 23); else the MTU the central asks for.
        self.central_mtu = central_mtu
        self._extra = list(extra_peripherals)
        self.others: list[Device] = []
        self.clients: list[Any] = []

    async def start(self) -> None:
        await self.central.power_on()
        await self.peripheral_device.power_on()
        await self.peripheral.start_advertising()
        for name, address, services in self._extra:
            dev = _virtual_device(self.link, name, address)
            await dev.power_on()
            data = AdvertisingData(
                [(AdvertisingData.FLAGS, bytes([0x06])),
                 (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                  b"".join(bytes(uuid16(s)) for s in services)),
                 (AdvertisingData.COMPLETE_LOCAL_NAME, name.encode())]
            )
            await dev.start_advertising(advertising_data=bytes(data), auto_restart=True)
            self.others.append(dev)

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
        await self.peripheral.close()
        for dev in (self.central, self.peripheral_device, *self.others):
            with contextlib.suppress(Exception):
                await dev.power_off()

    def client_factory(self, device: Any, disconnected_callback: Callable[[Any], None]) -> Any:
        """``BleTransport(client_factory=...)``: a real ``bleak.BleakClient`` on the central."""
        from bleak import BleakClient

        client = BleakClient(
            device, disconnected_callback, backend=bumble_bleak_backend(), central=self.central,
            mtu=self.central_mtu, timeout=10.0,
        )
        self.clients.append(client)
        return client

    @property
    def scanner(self) -> BumbleScanner:
        return BumbleScanner(self.central)

    @property
    def last_client(self) -> Any:
        return self.clients[-1]


def _virtual_device(link: LocalLink, name: str, address: str) -> Device:
    controller = Controller(f"ctl-{name}", link=link, public_address=address)
    return Device(
        name=name, address=hci.Address(address), host=Host(controller, AsyncPipeSink(controller))
    )


# ------------------------------------------------------------------ central: bleak backend


def _make_backend_class() -> type:
    from bleak.backends.characteristic import BleakGATTCharacteristic
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.descriptor import BleakGATTDescriptor
    from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
    from bleak.exc import BleakError, BleakGATTProtocolError

    props_names = [
        (_P.BROADCAST, "broadcast"), (_P.READ, "read"),
        (_P.WRITE_WITHOUT_RESPONSE, "write-without-response"), (_P.WRITE, "write"),
        (_P.NOTIFY, "notify"), (_P.INDICATE, "indicate"),
        (_P.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
    ]

    class _Backend(BaseBleakClient):
        """bleak's backend interface over a Bumble central (``central=`` a powered Device).

        What BlueZ does and a central must do too: discover every service,
        characteristic and descriptor at connect; exchange the MTU when asked (``mtu=``);
        report ATT errors as ``BleakGATTProtocolError``; a request cut by a disconnect
        fails with ``BleakError("Not connected")`` (Bumble cancels it)."""

        def __init__(self, address_or_ble_device: Any, *, central: Device,
                     mtu: int | None = None, **kwargs: Any) -> None:
            kwargs.pop("bluez", None)
            kwargs.pop("winrt", None)
            kwargs.pop("services", None)
            super().__init__(address_or_ble_device, **kwargs)
            self._central = central
            self._mtu_wanted = mtu
            self._connection: Connection | None = None
            self._peer: Peer | None = None
            self._notify: dict[int, Callable[[bytes], None]] = {}

        @property
        def mtu_size(self) -> int:
            return self._connection.att_mtu if self._connection else ATT_DEFAULT_MTU

        @property
        def is_connected(self) -> bool:
            return self._connection is not None

        @property
        def name(self) -> str:
            return str(self.address)

        async def connect(self, pair: bool, **kwargs: Any) -> None:
            try:
                conn = await self._central.connect(
                    hci.Address(self.address), timeout=self._timeout
                )
            except Exception as exc:
                raise BleakError(f"connect to {self.address} failed: {exc}") from None
            self._connection = conn
            conn.on(conn.EVENT_DISCONNECTION, self._on_disconnection)
            peer = Peer(conn)
            self._peer = peer
            try:
                if self._mtu_wanted:
                    await peer.request_mtu(self._mtu_wanted)
                await peer.discover_services()
                collection = BleakGATTServiceCollection()
                for svc in peer.services:
                    await svc.discover_characteristics()
                    bsvc = BleakGATTService(svc, svc.handle, _full(svc.uuid))
                    collection.add_service(bsvc)
                    for ch in svc.characteristics:
                        await peer.discover_descriptors(ch)
                        props: list[Any] = [n for bit, n in props_names if ch.properties & bit]
                        bch = BleakGATTCharacteristic(
                            ch, ch.handle, _full(ch.uuid), props,
                            lambda: self.mtu_size - 3, bsvc,
                        )
                        collection.add_characteristic(bch)
                        for d in ch.descriptors:
                            collection.add_descriptor(
                                BleakGATTDescriptor(d, d.handle, _full(d.type), bch)
                            )
                self.services = collection
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                raise

        def _on_disconnection(self, reason: int) -> None:
            self._connection = None
            self._peer = None
            self._notify.clear()
            if self._disconnected_callback is not None:
                self._disconnected_callback()

        async def disconnect(self) -> None:
            conn = self._connection
            if conn is None:
                return
            with contextlib.suppress(Exception):
                await conn.disconnect()

        async def pair(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("pairing is not used by treadctl")

        async def unpair(self) -> None:
            raise NotImplementedError("pairing is not used by treadctl")

        def _need_peer(self) -> Peer:
            if self._peer is None:
                raise BleakError("Not connected")
            return self._peer

        async def _att(self, coro: Any) -> Any:
            try:
                return await coro
            except ATT_Error as exc:
                raise BleakGATTProtocolError(exc.error_code) from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._connection is None and not (task and task.cancelling()):
                    raise BleakError("Not connected") from None  # Bumble cancels on disconnect
                raise

        async def read_gatt_char(self, characteristic: Any, use_cached: bool = False,
                                 **kwargs: Any) -> bytearray:
            peer = self._need_peer()
            return bytearray(await self._att(peer.read_value(characteristic.obj)))

        async def read_gatt_descriptor(self, descriptor: Any, use_cached: bool = False,
                                       **kwargs: Any) -> bytearray:
            peer = self._need_peer()
            return bytearray(await self._att(peer.read_value(descriptor.obj)))

        async def write_gatt_char(self, characteristic: Any, data: Any, response: bool) -> None:
            peer = self._need_peer()
            await self._att(peer.write_value(characteristic.obj, bytes(data),
                                             with_response=response))

        async def write_gatt_descriptor(self, descriptor: Any, data: Any) -> None:
            peer = self._need_peer()
            await self._att(peer.write_value(descriptor.obj, bytes(data), with_response=True))

        async def start_notify(self, characteristic: Any, callback: Callable[[bytearray], None],
                               **kwargs: Any) -> None:
            peer = self._need_peer()

            def deliver(value: bytes) -> None:
                callback(bytearray(value))

            old = self._notify.pop(characteristic.handle, None)
            if old is not None:
                await self._att(peer.unsubscribe(characteristic.obj, old))
            self._notify[characteristic.handle] = deliver
            # Like BlueZ: notifications where the characteristic has them, else indications.
            await self._att(peer.subscribe(characteristic.obj, deliver, prefer_notify=True))

        async def stop_notify(self, characteristic: Any) -> None:
            peer = self._need_peer()
            fn = self._notify.pop(characteristic.handle, None)
            await self._att(peer.unsubscribe(characteristic.obj, fn))

    _Backend.__name__ = "BumbleBleakBackend"
    return _Backend


def _full(uuid: UUID) -> str:
    """A Bumble UUID as bleak spells it: 128-bit, lower case, dashed."""
    import uuid as pyuuid

    return str(pyuuid.UUID(bytes=bytes(reversed(uuid.to_bytes(force_128=True)))))


_BACKEND: type | None = None


def bumble_bleak_backend() -> type:
    """The bleak backend class over a Bumble central (bleak is imported on first use)."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _make_backend_class()
    return _BACKEND


def __getattr__(name: str) -> Any:
    if name == "BumbleBleakBackend":
        return bumble_bleak_backend()
    raise AttributeError(name)


class BumbleScanner:
    """What ``treadctl.transport.ble`` asks of ``BleakScanner`` (``find_device_by_address``,
    ``find_device_by_filter``, ``discover``), done by a Bumble central's real scan: devices
    and advertisement data are bleak's own types, built from the advertising PDUs."""

    def __init__(self, central: Device) -> None:
        self.central = central
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def _scan(
        self,
        timeout: float,  # noqa: ASYNC109 - bleak's signature
        stop: Callable[[Any, Any], bool] | None,
        service_uuids: list[str] | None,
    ) -> dict[str, tuple[Any, Any]]:
        from bleak.backends.device import BLEDevice
        from bleak.backends.scanner import AdvertisementData

        wanted = {u.lower() for u in service_uuids or []}
        found: dict[str, tuple[Any, Any]] = {}
        done = asyncio.get_running_loop().create_future()

        def on_adv(adv: Advertisement) -> None:
            data = adv.data
            listed = data.get(AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS)
            uuids = [_full(u) for u in listed or []]
            if wanted and not wanted & set(uuids):
                return
            name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
            address = str(adv.address).split("/")[0]
            dev = BLEDevice(address, name, adv)
            ad = AdvertisementData(name, {}, {}, uuids, None, adv.rssi, (adv,))
            found[address] = (dev, ad)
            if stop is not None and not done.done() and stop(dev, ad):
                done.set_result(dev)

        self.central.on(self.central.EVENT_ADVERTISEMENT, on_adv)
        await self.central.start_scanning(filter_duplicates=False)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), timeout)
        finally:
            self.central.remove_listener(self.central.EVENT_ADVERTISEMENT, on_adv)
            await self.central.stop_scanning()
        if done.done():
            found["__match__"] = (done.result(), None)
        return found

    async def find_device_by_address(self, address: str, timeout: float = 10.0,  # noqa: ASYNC109
                                     **kwargs: Any) -> Any:
        self.calls.append(("find_device_by_address", {"timeout": timeout, **kwargs}))
        found = await self._scan(timeout, lambda d, a: d.address.upper() == address.upper(),
                                 kwargs.get("service_uuids"))
        return found["__match__"][0] if "__match__" in found else None

    async def find_device_by_filter(self, filterfunc: Callable[[Any, Any], bool],
                                    timeout: float = 10.0,  # noqa: ASYNC109
                                    **kwargs: Any) -> Any:
        self.calls.append(("find_device_by_filter", {"timeout": timeout, **kwargs}))
        found = await self._scan(timeout, filterfunc, kwargs.get("service_uuids"))
        return found["__match__"][0] if "__match__" in found else None

    async def discover(self, timeout: float = 5.0, *, return_adv: bool = False,  # noqa: ASYNC109
                       **kwargs: Any) -> Any:
        self.calls.append(("discover", {"timeout": timeout, **kwargs}))
        found = await self._scan(timeout, None, kwargs.get("service_uuids"))
        found.pop("__match__", None)
        return found if return_adv else [d for d, _ in found.values()]


# ------------------------------------------------------------------ serving over an adapter


async def serve_ble(
    make_sim: Callable[[], SimTreadmill],
    hci_spec: str,
    *,
    name: str = DEFAULT_NAME,
    address: str = DEFAULT_ADDRESS,
    long_records: bool = False,
    connection_interval_ms: float | None = None,
    max_mtu: int = 517,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve one simulator as a BLE FTMS treadmill through the Bumble HCI transport
    ``hci_spec`` until cancelled. The simulator is created at the first connection and
    outlives every connection, like a treadmill outlives its central."""
    from bumble.transport import open_transport

    async with await open_transport(hci_spec) as transport:
        device = Device.with_hci(name, hci.Address(address), transport.source, transport.sink)
        peripheral = FtmsPeripheral(
            device, name=name, make_sim=make_sim, long_records=long_records,
            connection_interval_ms=connection_interval_ms, max_mtu=max_mtu,
            direction_uuid=_direction_uuid(make_sim()), record=False,
        )
        await device.power_on()
        try:
            await peripheral.start_advertising()
            if on_ready is not None:
                on_ready(f"ble://{str(device.random_address).split('/')[0]}")
            await asyncio.get_running_loop().create_future()
        finally:
            await peripheral.close()
            with contextlib.suppress(Exception):
                await device.power_off()


def _direction_uuid(sim: SimTreadmill) -> int | None:
    # The GATT table is fixed before the first connection creates the simulator (serve_ble
    # asks a throwaway one, which never runs): the profile decides it.
    return reverse_method(sim.profile).direction_uuid


# ------------------------------------------------------------------ treadctl sim --ble

#: The HCI transport ``treadctl sim --ble`` opens without ``--hci``: the first USB dongle.
DEFAULT_HCI = "usb:0"


def run_cli(
    make_sim: Callable[[], SimTreadmill],
    hci_spec: str | None,
    speedup: float,
    announce: Callable[[str], None],
) -> int:
    """``treadctl sim --ble [--hci TRANSPORT]``: serve until SIGINT/SIGTERM (exit 0); the
    first line is the device URL (``ble://ADDRESS``). A radio runs in real time only."""
    import signal
    import sys

    from treadctl import clock
    from treadctl.cli import UsageError

    if speedup != 1.0:
        raise UsageError("--ble runs in real time: a radio cannot follow --speedup")
    spec = hci_spec or DEFAULT_HCI

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await serve_ble(make_sim, spec, on_ready=announce)

    try:
        clock.run(main(), 1.0)
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # Bumble's transport errors: one line, with the usual cause
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        hint = (
            " (is the dongle plugged in and not claimed by BlueZ? docs/transports.md)"
            if spec.startswith(("usb", "hci-socket", "pyusb")) else ""
        )
        print(f"treadctl sim: cannot serve BLE on {spec}: {text}{hint}", file=sys.stderr)
        return 1
    return 0
