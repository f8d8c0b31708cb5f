"""``ble://ADDRESS`` / ``ble://name=PREFIX``: FTMS over Bluetooth LE with bleak.

Finds the treadmill by address, or by name prefix among devices advertising the Fitness
Machine Service (0x1826), connects with retries and backoff, and maps the GATT surface
onto :class:`Transport`: ``subscribe`` = ``start_notify`` (notifications and indications
alike), ``write`` = write *with response* under a timeout, ``read`` = ``read_gatt_char``,
bleak's disconnected callback = link lost. ATT errors become :class:`WriteRejected` with
the ATT status, the same codes the framed links carry.

The bleak client and scanner are injectable (``client_factory``, ``scanner``) so the whole
code path runs in tests against an in-process simulator without a radio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import types
import warnings
from collections.abc import Callable, Coroutine, Generator
from typing import Any, ClassVar, Protocol, TypeVar

from treadctl.ftms.uuids import (
    CONTROL_POINT,
    FITNESS_MACHINE_SERVICE,
    MACHINE_STATUS,
    TREADMILL_DATA,
    full_uuid,
)
from treadctl.transport.base import (
    LinkLost,
    NowaitDelivery,
    ResponseTimeout,
    Transport,
    TransportError,
    WriteRejected,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

FTMS_SERVICE_UUID = full_uuid(FITNESS_MACHINE_SERVICE)
DEFAULT_SCAN_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 15.0
#: After the first device matching ``name=PREFIX``, scan this long for a second one.
DEFAULT_NAME_SETTLE_S = 2.0
#: What every FTMS treadmill exposes; missing after connecting = a stale GATT cache.
REQUIRED_CHARACTERISTICS = (TREADMILL_DATA, CONTROL_POINT, MACHINE_STATUS)

class GattServices(Protocol):
    """What treadctl asks of ``BleakClient.services`` (``BleakGATTServiceCollection``)."""

    def get_service(self, specifier: str) -> Any: ...

    def get_characteristic(self, specifier: str) -> Any: ...


class BleakClientLike(Protocol):
    """The part of ``bleak.BleakClient`` this transport uses. ``bleak.BleakClient`` (any
    backend, e.g. ``treadctl.simulator.ble``'s Bumble one) and the tests' fake offer it."""

    @property
    def address(self) -> str: ...

    @property
    def is_connected(self) -> bool: ...

    @property
    def services(self) -> GattServices: ...

    @property
    def mtu_size(self) -> int: ...

    async def connect(self, **kwargs: Any) -> None: ...

    async def disconnect(self) -> None: ...

    async def unpair(self) -> None: ...

    async def start_notify(
        self, char_specifier: str, callback: Callable[[Any, bytearray], None], **kwargs: Any
    ) -> None: ...

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool | None = None
    ) -> None: ...

    async def read_gatt_char(self, char_specifier: str, **kwargs: Any) -> bytearray: ...


class BleakScannerLike(Protocol):
    """The ``BleakScanner`` class methods this transport uses (the class itself fits)."""

    async def find_device_by_address(
        self, device_identifier: str, timeout: float = ..., **kwargs: Any  # noqa: ASYNC109
    ) -> Any: ...

    async def find_device_by_filter(
        self, filterfunc: Callable[[Any, Any], bool], timeout: float = ...,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> Any: ...

    async def discover(
        self, timeout: float = ..., *, return_adv: bool = ..., **kwargs: Any  # noqa: ASYNC109
    ) -> Any: ...


#: ``client_factory(device_or_address, disconnected_callback) -> BleakClient-like``
ClientFactory = Callable[[Any, Callable[[Any], None]], BleakClientLike]

# BlueZ (through D-Bus) reports ATT errors as text; bleak >= 3 raises BleakGATTProtocolError.
_ATT_IN_TEXT = re.compile(r"(?:ATT error|Protocol Error):?\s*0x([0-9A-Fa-f]{1,2})")
_BLUEZ_ERRORS = {
    "org.bluez.Error.NotPermitted": 0x03,
    "org.bluez.Error.NotSupported": 0x06,
    "org.bluez.Error.InProgress": 0xFE,
}


# BlueZ D-Bus errors (bleak's BleakDBusError: name + details) as one plain line each.
_BLUEZ_TEXT = {
    "org.bluez.Error.NotConnected": "not connected",
    "org.bluez.Error.InProgress": "BlueZ is busy with another operation on this device",
    "org.bluez.Error.AlreadyConnected": "BlueZ says the device is already connected",
    "org.bluez.Error.ConnectionAttemptFailed":
        "connection attempt failed (out of range, or another central such as a phone app "
        "holds the treadmill?)",
    "org.bluez.Error.AuthenticationFailed":
        "pairing failed; an FTMS treadmill needs none (bluetoothctl remove ADDRESS, retry)",
    "org.bluez.Error.AuthenticationCanceled":
        "pairing was cancelled; an FTMS treadmill needs none (bluetoothctl remove ADDRESS)",
    "org.bluez.Error.AuthenticationRejected":
        "pairing was rejected; an FTMS treadmill needs none (bluetoothctl remove ADDRESS)",
    "org.bluez.Error.DoesNotExist": "BlueZ no longer knows the device (scan again)",
    "org.freedesktop.DBus.Error.NoReply":
        "BlueZ did not answer (bluetoothd busy or hung: sudo systemctl restart bluetooth)",
    "org.freedesktop.DBus.Error.UnknownObject":
        "BlueZ has no such device or adapter (removed, or the dongle was unplugged)",
}
_BLUEZ_FAILED_TEXT = {
    "le-connection-abort-by-local":
        "connection aborted by the local adapter (treadmill out of range, or already "
        "connected to another central such as a phone app?)",
    "Software caused connection abort": "the connection dropped while connecting",
    "br-connection-profile-unavailable":
        "BlueZ tried Bluetooth Classic: not a BLE treadmill at that address (scan again)",
    "Operation already in progress": "BlueZ is busy with another operation on this device",
    "Not connected": "not connected",
}


def _default_scanner() -> BleakScannerLike:
    from bleak import BleakScanner

    # BleakScanner's class methods are overloaded on return_adv; they fit the protocol's use.
    scanner: Any = BleakScanner
    return scanner  # type: ignore[no-any-return,unused-ignore]


def att_status(exc: BaseException) -> int | None:
    """The ATT error code carried by a bleak exception, or None if it is not an ATT error."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return int(code)
    dbus_error = getattr(exc, "dbus_error", None)
    text = " ".join(str(a) for a in getattr(exc, "args", ()))
    match = _ATT_IN_TEXT.search(text)
    if match:
        return int(match.group(1), 16)
    if isinstance(dbus_error, str) and dbus_error in _BLUEZ_ERRORS:
        return _BLUEZ_ERRORS[dbus_error]
    return None


@types.coroutine
def _continue(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    # Drive a coroutine that already ran to its first suspension: hand what it yielded to
    # the task, pass results and exceptions (cancellation too) back into it.
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await _continue(coro, yielded)


def start_now(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` up to its first suspension inside this call, the rest in a task (what
    Python 3.12's eager tasks do). Only for code that does not ask for the current task
    before that suspension (``asyncio.timeout`` does: it would arm the caller's task)."""
    loop = asyncio.get_running_loop()
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except Exception as exc:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return loop.create_task(_resume(coro, yielded))


class BleTransport(Transport):
    """A connected FTMS treadmill over BLE. Give ``address`` or ``name_prefix``."""

    #: ATT has one outstanding request per connection: see :meth:`write_nowait`.
    nowait_delivery: ClassVar[NowaitDelivery] = "after-outstanding-request"

    def __init__(
        self,
        address: str | None = None,
        name_prefix: str | None = None,
        *,
        client_factory: ClientFactory | None = None,
        scanner: BleakScannerLike | None = None,
        scan_timeout_s: float = DEFAULT_SCAN_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        connect_attempts: int = 3,
        backoff_s: float = 1.0,
        name_settle_s: float = DEFAULT_NAME_SETTLE_S,
    ) -> None:
        super().__init__()
        if (address is None) == (name_prefix is None):
            raise ValueError("give exactly one of address or name_prefix")
        self.address = address
        self.name_prefix = name_prefix
        self.name = f"ble://{address}" if address else f"ble://name={name_prefix}"
        self._client_factory = client_factory
        self._scanner = scanner
        self.scan_timeout_s = scan_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.connect_attempts = max(1, connect_attempts)
        self.backoff_s = backoff_s
        self.name_settle_s = name_settle_s
        self._client: BleakClientLike | None = None
        self._closing = False
        self._subscribed: list[int] = []
        self._notifying: set[int] = set()  # enabled on the current client
        self._chosen: str | None = None  # the one device name=PREFIX picked
        #: ATT MTU of the current connection (23 until known).
        self.mtu = 23
        self._bg: set[asyncio.Task[Any]] = set()
        self._counts = {
            "writes": 0,
            "reads": 0,
            "notifications": 0,
            "timeouts": 0,
            "rejected": 0,
            "connect_attempts": 0,
            "cache_refreshes": 0,
        }

    # -- discovery and connection -------------------------------------------------------

    async def _find_device(self) -> Any:
        scanner = self._scanner or _default_scanner()
        prefix = self.name_prefix or ""

        def name_of(dev: Any, adv: Any) -> str:
            return str(getattr(adv, "local_name", None) or getattr(dev, "name", None) or "")

        def matches(dev: Any, adv: Any) -> bool:
            return name_of(dev, adv).startswith(prefix)

        try:
            if self.address is not None:
                device = await scanner.find_device_by_address(
                    self.address, timeout=self.scan_timeout_s
                )
                what = f"BLE device {self.address}"
            else:
                device = await scanner.find_device_by_filter(
                    matches, timeout=self.scan_timeout_s, service_uuids=[FTMS_SERVICE_UUID]
                )
                what = f"FTMS treadmill named {prefix!r}..."
                others = {}
                known = device is not None and device.address == self._chosen
                if device is not None and self.name_settle_s > 0 and not known:
                    # Exactly one: a second treadmill with a matching name must not be
                    # taken for the first one on the next connect. Listen a little longer.
                    seen = await scanner.discover(
                        timeout=self.name_settle_s, return_adv=True,
                        service_uuids=[FTMS_SERVICE_UUID],
                    )
                    others = {
                        d.address: name_of(d, a) for d, a in seen.values()
                        if matches(d, a) and _advertises_ftms(a)
                        and d.address.upper() != device.address.upper()
                    }
        except Exception as exc:
            raise TransportError(f"BLE scan failed: {describe_ble_error(exc)}") from None
        if device is None:
            raise TransportError(
                f"no {what} found within {self.scan_timeout_s:g} s (on, advertising, in range?)"
            )
        if self.address is None and others:
            found = {device.address: name_of(device, None), **others}
            names = ", ".join(f"{n or '?'} ({a})" for a, n in sorted(found.items()))
            raise TransportError(
                f"{len(found)} FTMS treadmills match name {prefix!r}: {names}; "
                "use ble://ADDRESS or a longer name prefix"
            )
        if self.address is None:
            self._chosen = device.address  # a reconnect to the same one needs no new check
        return device

    def _make_client(self, device: Any) -> BleakClientLike:
        if self._client_factory is not None:
            return self._client_factory(device, self._on_disconnected)
        from bleak import BleakClient

        return BleakClient(
            device, disconnected_callback=self._on_disconnected, timeout=self.connect_timeout_s
        )

    async def _open(self, device: Any) -> None:
        last = "no attempt made"
        for attempt in range(self.connect_attempts):
            if attempt:
                # Back off: BlueZ often refuses a reconnect right after a failed one.
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            self._counts["connect_attempts"] += 1
            client = self._make_client(device)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await client.connect()
            except Exception as exc:  # bleak raises several types; all mean "try again"
                last = describe_ble_error(exc)
                log.warning(
                    "BLE connect to %s failed (attempt %d): %s", self.name, attempt + 1, last
                )
                with contextlib.suppress(Exception):
                    await client.disconnect()
                continue
            self._client = client
            self._notifying = set()
            self._closing = False
            return
        raise TransportError(
            f"cannot connect to {self.name} after {self.connect_attempts} attempts: {last}"
        )

    def _missing(self) -> list[int] | None:
        """Required characteristics the discovered GATT table lacks; None = no FTMS."""
        client = self._require()
        try:
            services = client.services
        except Exception:  # bleak: "Service Discovery has not been performed yet"
            return list(REQUIRED_CHARACTERISTICS)
        if services is None:
            return []  # a client that does not tell; the first write will
        if services.get_service(FTMS_SERVICE_UUID) is None:
            return None
        return [u for u in REQUIRED_CHARACTERISTICS
                if services.get_characteristic(full_uuid(u)) is None]

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._closing = True  # our own disconnect is not "link lost"
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.disconnect()
            self._closing = False

    async def connect(self) -> None:
        if self.connected:
            return
        self._closing = False
        for refreshed in (False, True):
            await self._open(await self._find_device())
            missing = self._missing()
            if missing is None:
                await self.close()
                raise TransportError(f"{self.name} has no Fitness Machine Service (0x1826)")
            if not missing:
                break
            names = ", ".join(f"0x{u:04X}" for u in missing)
            if refreshed:
                await self.close()
                raise TransportError(
                    f"{self.name}: the Fitness Machine Service lacks {names}, even after "
                    "clearing BlueZ's services cache"
                )
            # BlueZ keeps a device's GATT table across connections; after a firmware
            # update it can be stale. RemoveDevice (bleak: unpair) drops it; then scan
            # and connect again for a fresh discovery.
            log.warning("%s: GATT table lacks %s (stale BlueZ services cache?); clearing it "
                        "and reconnecting", self.name, names)
            self._counts["cache_refreshes"] += 1
            client = self._require()
            self._closing = True  # the disconnect that RemoveDevice causes is ours
            with contextlib.suppress(Exception):
                await client.unpair()
            await self._drop_client()
        self.mtu = await self._read_mtu()
        for uuid in list(self._subscribed):  # after a reconnect, the same subscriptions
            await self._start_notify(uuid)

    async def _read_mtu(self) -> int:
        """The ATT MTU BlueZ negotiated at connect (bleak's BlueZ backend learns it only
        through AcquireNotify/AcquireWrite; ``mtu_size`` before that warns and says 23)."""
        client = self._require()
        acquire = getattr(getattr(client, "_backend", None), "_acquire_mtu", None)
        if acquire is not None and callable(acquire):
            with contextlib.suppress(Exception):
                await acquire()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mtu = int(client.mtu_size)
            except Exception:
                mtu = 23
        if mtu <= 23:
            log.info("%s: ATT MTU 23: long Treadmill Data records arrive split", self.name)
        return mtu

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    def _on_disconnected(self, _client: Any) -> None:
        if self._closing:
            return
        self._closing = True
        self._client = None
        self._lost("BLE device disconnected")

    async def close(self) -> None:
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.disconnect()

    def drop(self) -> bool:
        """Disconnect now, without waiting; the firmware's supervision timeout stops the belt."""
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            task = asyncio.get_running_loop().create_task(client.disconnect())
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return True

    # -- GATT -------------------------------------------------------------------------

    def _require(self) -> BleakClientLike:
        client = self._client
        if client is None or self._closing:
            raise LinkLost(f"{self.name}: not connected")
        return client

    def _map_error(self, uuid: int, exc: BaseException, what: str, timeout_s: float) -> Exception:
        if isinstance(exc, TimeoutError):
            self._counts["timeouts"] += 1
            return ResponseTimeout(
                f"{self.name}: no {what} response for 0x{uuid:04X} within {timeout_s:g} s"
            )
        status = att_status(exc)
        if status is not None:
            self._counts["rejected"] += 1
            return WriteRejected(uuid, status)
        if self._client is None or not self._client.is_connected:
            return LinkLost(f"{self.name}: {describe_ble_error(exc)}")
        return TransportError(f"{self.name}: {what} 0x{uuid:04X} failed: {describe_ble_error(exc)}")

    async def _start_notify(self, uuid: int) -> None:
        client = self._require()
        if uuid in self._notifying:
            return  # BlueZ refuses a second StartNotify on the same characteristic

        def on_value(_char: Any, data: bytearray) -> None:
            self._counts["notifications"] += 1
            try:
                self._deliver(uuid, bytes(data))
            except Exception:  # a handler bug must not kill bleak's dispatch
                log.exception("notify handler failed for 0x%04X", uuid)

        try:
            await client.start_notify(full_uuid(uuid), on_value)
        except Exception as exc:
            raise TransportError(
                f"{self.name}: cannot subscribe to 0x{uuid:04X}: {describe_ble_error(exc)}"
            ) from None
        self._notifying.add(uuid)

    async def subscribe(self, uuid: int) -> None:
        await self._start_notify(uuid)
        if uuid not in self._subscribed:
            self._subscribed.append(uuid)

    async def write(self, uuid: int, value: bytes, *, timeout_s: float = 1.0) -> None:
        client = self._require()
        self._counts["writes"] += 1
        try:
            # No await before write_gatt_char: the request is handed to the stack first.
            async with asyncio.timeout(timeout_s):
                await client.write_gatt_char(full_uuid(uuid), value, response=True)
        except Exception as exc:
            raise self._map_error(uuid, exc, "write", timeout_s) from None

    def write_nowait(
        self, uuid: int, value: bytes, *, timeout_s: float = 1.0
    ) -> asyncio.Future[None]:
        """Hand the Write Request to the stack inside this call (bleak -> backend -> ATT run
        up to their first suspension here, not in a later task). ATT allows one request
        outstanding per connection: with none on the air the request is sent in the call;
        otherwise the stack holds it and sends it when that response arrives, ahead of every
        write made after this call. BlueZ queues the same way inside bluetoothd."""
        client = self._require()
        self._counts["writes"] += 1
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        op = start_now(client.write_gatt_char(full_uuid(uuid), value, response=True))

        def expire() -> None:
            if not result.done():
                result.set_exception(self._map_error(uuid, TimeoutError(), "write", timeout_s))
                op.cancel()

        timer = loop.call_later(timeout_s, expire)

        def finished(f: asyncio.Future[None]) -> None:
            timer.cancel()
            if result.done():
                return
            if f.cancelled():
                result.set_exception(LinkLost(f"{self.name}: write 0x{uuid:04X} abandoned"))
                return
            exc = f.exception()
            if exc is None:
                result.set_result(None)
            else:
                result.set_exception(self._map_error(uuid, exc, "write", timeout_s))

        def abandoned(r: asyncio.Future[None]) -> None:
            if r.cancelled():
                timer.cancel()
                op.cancel()

        op.add_done_callback(finished)
        result.add_done_callback(abandoned)
        return result

    async def read(self, uuid: int, *, timeout_s: float = 1.0) -> bytes:
        client = self._require()
        self._counts["reads"] += 1
        try:
            async with asyncio.timeout(timeout_s):
                data = await client.read_gatt_char(full_uuid(uuid))
        except Exception as exc:
            raise self._map_error(uuid, exc, "read", timeout_s) from None
        return bytes(data)

    @property
    def counters(self) -> dict[str, int]:
        return {**self._counts, "mtu": self.mtu}

    async def __aenter__(self) -> BleTransport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def describe_ble_error(exc: BaseException) -> str:
    """One line for a bleak/D-Bus/OS error, with a hint where the cause is usually local."""
    text = str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    dbus_error = getattr(exc, "dbus_error", None)
    if isinstance(dbus_error, str):
        details = getattr(exc, "dbus_error_details", None)
        details = str(details).strip().splitlines()[0] if details else ""
        plain = _BLUEZ_TEXT.get(dbus_error)
        if dbus_error == "org.bluez.Error.Failed":
            plain = next((v for k, v in _BLUEZ_FAILED_TEXT.items() if k in details), None)
        if plain is not None:
            return f"{plain} [{dbus_error}{': ' + details if details else ''}]"
    if type(exc).__name__ == "BleakCharacteristicNotFoundError":
        return (f"{text} (stale BlueZ services cache? bluetoothctl remove ADDRESS, "
                "or let treadctl reconnect)")
    if isinstance(exc, FileNotFoundError):
        # dbus_fast cannot reach the system bus: no BlueZ here, hence no adapter we can use.
        return f"no Bluetooth adapter found (D-Bus system bus / BlueZ not reachable: {text})"
    if "No Bluetooth adapters found" in text or "NO_BLUETOOTH" in text:
        return f"no Bluetooth adapter found ({text})"
    if "org.freedesktop.DBus.Error.ServiceUnknown" in text:
        return f"BlueZ is not running ({text}; systemctl start bluetooth)"
    if "NotReady" in text or "POWERED_OFF" in text:
        return f"Bluetooth adapter is off ({text}; bluetoothctl power on)"
    if "AccessDenied" in text or "NotAuthorized" in text or isinstance(exc, PermissionError):
        return f"permission denied ({text}; see docs/transports.md, BLE permissions)"
    return text


def _advertises_ftms(adv: Any) -> bool:
    # The service filter is advisory on some stacks (BlueZ reports cached devices).
    uuids = [str(u).lower() for u in (getattr(adv, "service_uuids", None) or [])]
    return not uuids or FTMS_SERVICE_UUID in uuids


async def scan(
    timeout_s: float = 5.0, *, scanner: BleakScannerLike | None = None
) -> list[dict[str, Any]]:
    """FTMS treadmills advertising nearby: ``[{"address", "name", "rssi"}]``, strongest first."""
    scanner = scanner or _default_scanner()
    found = await scanner.discover(
        timeout=timeout_s, return_adv=True, service_uuids=[FTMS_SERVICE_UUID]
    )
    out: list[dict[str, Any]] = []
    for device, adv in found.values():
        # The filter is advisory on some stacks (BlueZ reports cached devices): check again.
        uuids = [str(u).lower() for u in (getattr(adv, "service_uuids", None) or [])]
        if uuids and FTMS_SERVICE_UUID not in uuids:
            continue
        out.append(
            {
                "address": device.address,
                "name": getattr(adv, "local_name", None) or device.name or "",
                "rssi": getattr(adv, "rssi", None),
            }
        )
    out.sort(key=lambda d: -(d["rssi"] if d["rssi"] is not None else -999))
    return out
