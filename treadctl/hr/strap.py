"""Heart-rate sources: a Bluetooth chest strap (bleak), the simulated strap, and the feed
that turns their notifications into filtered readings (docs/heart-rate.md).

* :class:`StrapSource` - a Heart Rate Service strap at ``ble://AA:BB:CC:DD:EE:FF`` (or
  ``ble://name=PREFIX``): connects, subscribes to Heart Rate Measurement (0x2A37) and, when
  the link drops or a connect fails, reconnects with exponential backoff (``backoff_s``
  doubling up to ``max_backoff_s``) until closed. It never raises into its user and never
  commands anything: a strap is never a reason for the belt to move. The bleak client and
  scanner are injectable (``client_factory``, ``scanner``) as in the FTMS transport.
* :class:`treadctl.simulator.heart.SimStrapSource` - ``sim-hr://?faults=SPEC`` on the
  simulator's heart model (:func:`open_hr_source` builds it).
* :class:`HRFeed` - source -> codec -> plausibility filter, on the caller's clock:
  ``feed.latest`` is what the interlock and the governor read; ``on_reading`` is called
  synchronously inside the notification callback (no task hop, no queue), so a reading is
  available to the interlock as soon as the notification has been decoded.

``parse_hr_url`` accepts ``ble://...`` (the FTMS device-URL syntax, docs/transports.md) and
``sim-hr://?faults=SPEC&seed=N&age=YEARS&rest=BPM``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from treadctl.clock import Clock, LoopClock
from treadctl.hr.codec import (
    HEART_RATE_MEASUREMENT,
    HeartRateCodecError,
    decode_heart_rate_measurement,
)
from treadctl.hr.filter import HRFilter, HRReading

log = logging.getLogger(__name__)

HRM_UUID = f"0000{HEART_RATE_MEASUREMENT:04x}-0000-1000-8000-00805f9b34fb"
HRS_UUID = "0000180d-0000-1000-8000-00805f9b34fb"


class HRSource(Protocol):
    """What a heart-rate source offers: notifications (raw 0x2A37 bytes) to a callback."""

    name: str
    source: str  # "strap" | "treadmill"

    async def start(self, on_value: Callable[[bytes], object]) -> None: ...

    async def close(self) -> None: ...


class HRURLError(ValueError):
    """A heart-rate source URL that cannot be used (one line naming it)."""


@dataclass(frozen=True)
class HRURL:
    scheme: str  # "ble" | "sim-hr"
    url: str
    ble_address: str | None = None
    ble_name_prefix: str | None = None
    faults: str | None = None
    seed: int = 0
    age_years: float | None = None
    hr_rest_bpm: float | None = None


_SIM_PARAMS = ("faults", "seed", "age", "rest")


def parse_hr_url(url: str) -> HRURL:
    """Parse ``ble://...`` or ``sim-hr://?...``; :class:`HRURLError` (one line) otherwise."""

    def bad(reason: str) -> HRURLError:
        return HRURLError(f"bad heart-rate URL {url!r}: {reason}")

    text = (url or "").strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("ble", "sim-hr"):
        hint = (" (sim:// is a simulated treadmill; the simulated strap is sim-hr://)"
                if scheme == "sim" else "")
        raise bad("expected ble://ADDRESS, ble://name=PREFIX or sim-hr://?faults=SPEC" + hint)
    if scheme == "ble":
        from treadctl.transport.url import DeviceURLError, parse_device_url

        try:
            d = parse_device_url(text)
        except DeviceURLError as exc:
            raise HRURLError(str(exc).replace("bad device URL", "bad heart-rate URL")) from None
        return HRURL("ble", text, ble_address=d.ble_address, ble_name_prefix=d.ble_name_prefix)
    location, _, query = rest.partition("?")
    if location.strip("/"):
        raise bad(f"sim-hr:// takes no host or path (got {location!r})")
    q: dict[str, str] = {}
    for part in query.split("&") if query else []:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise bad(f"malformed query {query!r} (expected NAME=VALUE&...)")
        key = unquote(key)
        if key not in _SIM_PARAMS:
            raise bad(f"unknown query parameter {key!r} (allowed: {', '.join(_SIM_PARAMS)})")
        if key in q:
            raise bad(f"query parameter {key!r} given twice")
        q[key] = unquote(value)
    faults = q.get("faults") or None
    if faults:
        from treadctl.simulator.faults import FaultSpecError
        from treadctl.simulator.heart import parse_strap_faults

        try:
            parse_strap_faults(faults)
        except FaultSpecError as exc:
            raise bad(f"faults: {exc}") from None
    seed = 0
    if "seed" in q:
        try:
            seed = int(q["seed"])
        except ValueError:
            raise bad(f"seed must be an integer, got {q['seed']!r}") from None
        if seed < 0:
            raise bad(f"seed must be >= 0, got {seed}")

    def number(key: str, low: float, high: float) -> float | None:
        if key not in q:
            return None
        try:
            value = float(q[key])
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise bad(f"{key} must be a number in {low:g}..{high:g}, got {q[key]!r}")
        return value

    return HRURL("sim-hr", text, faults=faults, seed=seed, age_years=number("age", 10, 100),
                 hr_rest_bpm=number("rest", 30, 120))


# --------------------------------------------------------------------------- BLE strap

#: ``client_factory(device_or_address, disconnected_callback) -> BleakClient-like``
ClientFactory = Callable[[Any, Callable[[Any], None]], Any]


class StrapSource:
    """A Heart Rate Service strap over BLE (bleak), reconnecting with backoff until closed."""

    source = "strap"

    def __init__(
        self,
        address: str | None = None,
        *,
        name_prefix: str | None = None,
        client_factory: ClientFactory | None = None,
        scanner: Any = None,
        clock: Clock | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        scan_timeout_s: float = 10.0,
    ) -> None:
        if (address is None) == (name_prefix is None):
            raise ValueError("give exactly one of address and name_prefix")
        self.address = address
        self.name_prefix = name_prefix
        self.name = f"ble://{address}" if address else f"ble://name={name_prefix}"
        self._factory = client_factory
        self._scanner = scanner
        self._clock = clock
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self.scan_timeout_s = scan_timeout_s
        self.state = "idle"  # connecting | connected | backoff | closed
        self.connects = 0
        self.failures = 0
        self.bad_values = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._client: Any = None
        self._on_value: Callable[[bytes], object] | None = None

    async def start(self, on_value: Callable[[bytes], object]) -> None:
        """Start connecting in the background; returns at once."""
        self._on_value = on_value
        self._lost = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self) -> None:
        self.state = "closed"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_client()

    # ------------------------------------------------------------------ internals

    def _disconnected(self, _client: Any) -> None:
        if self._lost is not None:
            self._lost.set()

    def _notified(self, _sender: Any, data: bytearray) -> None:
        if self._on_value is None:
            return
        try:
            self._on_value(bytes(data))
        except Exception:  # a consumer bug must not kill the strap's link
            log.exception("heart-rate consumer failed on %s", bytes(data).hex())

    async def _find(self) -> Any:
        if self.address is not None:
            return self.address
        scanner = self._scanner
        if scanner is None:
            from bleak import BleakScanner

            scanner = BleakScanner
        prefix = self.name_prefix or ""

        def match(device: Any, adv: Any) -> bool:
            uuids = [u.lower() for u in (getattr(adv, "service_uuids", None) or [])]
            name = getattr(adv, "local_name", None) or getattr(device, "name", None) or ""
            return name.startswith(prefix) and (not uuids or HRS_UUID in uuids)

        device = await scanner.find_device_by_filter(match, timeout=self.scan_timeout_s)
        if device is None:
            raise LookupError(f"no heart-rate strap named {prefix!r}* found")
        return device

    def _make(self, device: Any) -> Any:
        if self._factory is not None:
            return self._factory(device, self._disconnected)
        from bleak import BleakClient

        return BleakClient(device, disconnected_callback=self._disconnected,
                           timeout=self.connect_timeout_s)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def _run(self) -> None:
        clock = self._clock or LoopClock()
        delay = self.backoff_s
        assert self._lost is not None
        while True:
            self.state = "connecting"
            try:
                device = await self._find()
                client = self._make(device)
                self._client = client
                self._lost.clear()
                async with asyncio.timeout(self.connect_timeout_s):
                    await client.connect()
                    await client.start_notify(HRM_UUID, self._notified)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bleak raises many types; all mean "try again later"
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("heart-rate strap %s: %s; retrying in %g s", self.name,
                            self.last_error, delay)
                await self._drop_client()
                self.state = "backoff"
                await clock.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self.connects += 1
            self.state = "connected"
            delay = self.backoff_s
            await self._lost.wait()
            log.warning("heart-rate strap %s disconnected; reconnecting", self.name)
            await self._drop_client()
            self.state = "backoff"
            await clock.sleep(delay)


# --------------------------------------------------------------------------- the feed


class HRFeed:
    """Source -> decode -> filter. ``workload()`` gives the lane's workload in METs now
    (None: unknown). ``latest`` is the last reading; ``tick()`` (call it at the control
    rate) notices dropouts. Undecodable values count as ``bad_values`` and are otherwise
    ignored (the dropout timer runs on)."""

    def __init__(self, source: HRSource, *, clock: Clock | None = None,
                 filt: HRFilter | None = None,
                 workload: Callable[[], float | None] | None = None,
                 on_reading: Callable[[HRReading], None] | None = None) -> None:
        self.source = source
        self.filter = filt or HRFilter()
        self._clock = clock
        self._workload = workload or (lambda: None)
        self.on_reading = on_reading
        self.bad_values = 0
        self.latest: HRReading | None = None

    def _now(self) -> float:
        if self._clock is None:
            self._clock = LoopClock()
        return self._clock.now()

    def handle(self, value: bytes) -> HRReading | None:
        """One notification (what the source calls)."""
        try:
            m = decode_heart_rate_measurement(value)
        except HeartRateCodecError:
            self.bad_values += 1
            return None
        r = self.filter.update(m, self._now(), self._workload())
        self.latest = r
        if self.on_reading is not None:
            self.on_reading(r)
        return r

    def tick(self) -> HRReading:
        r = self.filter.tick(self._now(), self._workload())
        self.latest = r
        return r

    async def start(self) -> None:
        await self.source.start(self.handle)

    async def close(self) -> None:
        await self.source.close()


def open_hr_source(url: str, *, clock: Clock | None = None,
                   sim_workload: Callable[[], Any] | None = None,
                   client_factory: ClientFactory | None = None,
                   scanner: Any = None) -> HRSource:
    """The source for ``url``. ``sim-hr://`` needs ``sim_workload`` (the lane's
    ``(speed_kmh, grade_pct, direction)``, e.g. :func:`treadctl.simulator.heart.belt_workload`
    of the lane's simulator)."""
    u = parse_hr_url(url)
    if u.scheme == "ble":
        return StrapSource(u.ble_address, name_prefix=u.ble_name_prefix if not u.ble_address
                           else None, client_factory=client_factory, scanner=scanner,
                           clock=clock)
    from treadctl.simulator.heart import HeartModel, Person, SimStrap, SimStrapSource

    if sim_workload is None:
        raise HRURLError(f"bad heart-rate URL {url!r}: sim-hr:// needs a simulated lane")
    person = Person(**{k: v for k, v in (("age_years", u.age_years),
                                         ("hr_rest_bpm", u.hr_rest_bpm)) if v is not None})
    strap = SimStrap(sim_workload, model=HeartModel(person, seed=u.seed), faults=u.faults,
                     seed=u.seed)
    return SimStrapSource(strap, clock, name=u.url)
