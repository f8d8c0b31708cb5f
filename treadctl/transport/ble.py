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
from collections.abc import Callable, Coroutine, Generator
from typing import Any, ClassVar, TypeVar

from treadctl.ftms.uuids import FITNESS_MACHINE_SERVICE, full_uuid
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

#: ``client_factory(device_or_address, disconnected_callback) -> BleakClient-like``
ClientFactory = Callable[[Any, Callable[[Any], None]], Any]

# BlueZ (through D-Bus) reports ATT errors as text; bleak >= 3 raises BleakGATTProtocolError.
_ATT_IN_TEXT = re.compile(r"(?:ATT error|Protocol Error):?\s*0x([0-9A-Fa-f]{1,2})")
_BLUEZ_ERRORS = {
    "org.bluez.Error.NotPermitted": 0x03,
    "org.bluez.Error.NotSupported": 0x06,
    "org.bluez.Error.InProgress": 0xFE,
}


def _default_scanner() -> Any:
    from bleak import BleakScanner

    return BleakScanner


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
        scanner: Any = None,
        scan_timeout_s: float = DEFAULT_SCAN_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        connect_attempts: int = 3,
        backoff_s: float = 1.0,
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
        self._client: Any = None
        self._closing = False
        self._subscribed: list[int] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._counts = {
            "writes": 0,
            "reads": 0,
            "notifications": 0,
            "timeouts": 0,
            "rejected": 0,
            "connect_attempts": 0,
        }

    # -- discovery and connection -------------------------------------------------------

    async def _find_device(self) -> Any:
        scanner = self._scanner or _default_scanner()
        try:
            if self.address is not None:
                device = await scanner.find_device_by_address(
                    self.address, timeout=self.scan_timeout_s
                )
                what = f"BLE device {self.address}"
            else:
                prefix = self.name_prefix or ""

                def matches(dev: Any, adv: Any) -> bool:
                    name = getattr(adv, "local_name", None) or getattr(dev, "name", None) or ""
                    return str(name).startswith(prefix)

                device = await scanner.find_device_by_filter(
                    matches, timeout=self.scan_timeout_s, service_uuids=[FTMS_SERVICE_UUID]
                )
                what = f"FTMS treadmill named {prefix!r}..."
        except Exception as exc:
            raise TransportError(f"BLE scan failed: {describe_ble_error(exc)}") from None
        if device is None:
            raise TransportError(
                f"no {what} found within {self.scan_timeout_s:g} s (on, advertising, in range?)"
            )
        return device

    def _make_client(self, device: Any) -> Any:
        if self._client_factory is not None:
            return self._client_factory(device, self._on_disconnected)
        from bleak import BleakClient

        return BleakClient(
            device, disconnected_callback=self._on_disconnected, timeout=self.connect_timeout_s
        )

    async def connect(self) -> None:
        if self.connected:
            return
        self._closing = False
        device = await self._find_device()
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
            break
        else:
            raise TransportError(
                f"cannot connect to {self.name} after {self.connect_attempts} attempts: {last}"
            )
        services = getattr(self._client, "services", None)
        if services is not None and services.get_service(FTMS_SERVICE_UUID) is None:
            await self.close()
            raise TransportError(f"{self.name} has no Fitness Machine Service (0x1826)")
        for uuid in list(self._subscribed):  # after a reconnect, the same subscriptions
            await self._start_notify(uuid)

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

    def drop(self) -> None:
        """Disconnect now, without waiting; the firmware's supervision timeout stops the belt."""
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            task = asyncio.get_running_loop().create_task(client.disconnect())
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- GATT -------------------------------------------------------------------------

    def _require(self) -> Any:
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
        return dict(self._counts)


def describe_ble_error(exc: BaseException) -> str:
    """One line for a bleak/D-Bus/OS error, with a hint where the cause is usually local."""
    text = str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
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


async def scan(timeout_s: float = 5.0, *, scanner: Any = None) -> list[dict[str, Any]]:
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
