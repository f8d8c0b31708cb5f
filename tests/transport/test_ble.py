"""BleTransport (the real bleak code path in treadctl.transport.ble) against the fake bleak
client bridged to an in-process simulator, on virtual time. Also ``scan`` and the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from bleak.exc import BleakDBusError, BleakError, BleakGATTProtocolError

from treadctl.cli import main as cli_main
from treadctl.clock import run_virtual
from treadctl.ftms import (
    BELT_DIRECTION,
    CONTROL_POINT,
    FEATURE,
    FITNESS_MACHINE_SERVICE,
    TREADMILL_DATA,
    RequestControl,
    SetTargetSpeed,
    StartOrResume,
    encode_control_point,
    full_uuid,
)
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.transport import (
    LinkLost,
    ResponseTimeout,
    TransportError,
    WriteRejected,
    open_transport,
)
from treadctl.transport import ble as ble_mod
from treadctl.transport.ble import BleTransport, att_status, scan

import fake_bleak

FTMS = full_uuid(FITNESS_MACHINE_SERVICE)


class Bench:
    """A simulator with its run() task, and BleTransports wired to it."""

    def __init__(self, profile: str = "treadctl-reference", **client_kw: Any) -> None:
        self.sim = SimTreadmill(load_profile(profile))
        self.task = asyncio.get_running_loop().create_task(self.sim.run())
        self.factory = fake_bleak.ClientFactory(self.sim, **client_kw)
        self.scanner = fake_bleak.FakeScanner(
            [fake_bleak.other_advert(), fake_bleak.treadmill_advert()]
        )

    def transport(self, **kw: Any) -> BleTransport:
        kw.setdefault("scan_timeout_s", 2.0)
        if "address" not in kw:
            kw.setdefault("name_prefix", "TREADCTL")
        return BleTransport(client_factory=self.factory, scanner=self.scanner, **kw)

    async def stop(self) -> None:
        await fake_bleak.stop_task(self.task)


def virtual(fn: Callable[[Bench], Awaitable[None]], **bench_kw: Any) -> None:
    async def main() -> None:
        bench = Bench(**bench_kw)
        try:
            await fn(bench)
        finally:
            await bench.stop()

    run_virtual(main)


def test_name_prefix_picks_the_ftms_device_and_filters_by_service() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        assert type(t).__module__ == "treadctl.transport.ble"
        await t.connect()
        assert t.connected
        assert t._client.address == fake_bleak.treadmill_advert()[0].address
        (method, kw), (settle, settle_kw) = b.scanner.calls
        assert method == "find_device_by_filter"
        assert kw["service_uuids"] == [FTMS]
        # ...then a short listen for a second treadmill of that name (exactly one wins).
        assert (settle, settle_kw["service_uuids"]) == ("discover", [FTMS])
        await t.close()
        assert not t.connected

    virtual(body)


def test_by_address_and_not_found_is_one_line() -> None:
    async def body(b: Bench) -> None:
        t = b.transport(address="F0:0D:12:34:56:78")
        await t.connect()
        await t.close()
        missing = b.transport(address="AA:AA:AA:AA:AA:AA")
        with pytest.raises(TransportError, match=r"^no BLE device AA:AA:AA:AA:AA:AA found "
                                                 r"within 2 s"):
            await missing.connect()
        nobody = b.transport(name_prefix="NOPE")
        with pytest.raises(TransportError, match="no FTMS treadmill named 'NOPE'"):
            await nobody.connect()

    virtual(body)


def test_connect_retries_with_backoff() -> None:
    async def body(b: Bench) -> None:
        loop = asyncio.get_running_loop()
        t = b.transport(connect_attempts=3, backoff_s=1.0)
        t0 = loop.time()
        await t.connect()
        assert t.counters["connect_attempts"] == 3
        assert loop.time() - t0 >= 1.0 + 2.0  # backoff doubles
        await t.close()

    virtual(body, fail_connects=2)


def test_connect_gives_up_after_all_attempts() -> None:
    async def body(b: Bench) -> None:
        t = b.transport(connect_attempts=3, backoff_s=0.5)
        with pytest.raises(TransportError, match=r"after 3 attempts: .*le-connection-abort"):
            await t.connect()

    virtual(body, fail_connects=5)


def test_only_subscribed_characteristics_notify() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        got: list[int] = []
        t.set_notify_handler(lambda uuid, value: got.append(uuid))
        await t.connect()
        await t.subscribe(TREADMILL_DATA)
        with pytest.raises(WriteRejected) as info:  # FTMS: 0xFD until indications are on
            await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        assert info.value.status == 0xFD
        await asyncio.sleep(1.0)
        assert TREADMILL_DATA in got
        assert CONTROL_POINT not in got  # indication not enabled
        await t.subscribe(CONTROL_POINT)
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        await asyncio.sleep(0.5)
        assert CONTROL_POINT in got
        await t.close()

    virtual(body)


def test_att_errors_become_write_rejected_and_other_errors_are_one_line() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        await t.connect()
        with pytest.raises(WriteRejected) as info:
            await t.write(BELT_DIRECTION, b"\x01")  # no control yet -> 0x80
        assert (info.value.uuid, info.value.status) == (BELT_DIRECTION, 0x80)
        with pytest.raises(TransportError, match=r"write 0x2ACC failed: .*does not support"):
            await t.write(FEATURE, b"\x00")
        with pytest.raises(TransportError, match="0x1234"):
            await t.read(0x1234)
        assert (await t.read(BELT_DIRECTION)) == b"\x00"
        assert t.counters["rejected"] == 1
        await t.close()

    virtual(body)


def test_write_timeout_is_response_timeout() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        await t.connect()
        await t.subscribe(CONTROL_POINT)  # FTMS: indications on before any write
        with pytest.raises(ResponseTimeout, match=r"no write response for 0x2AD9 within 0\.5 s"):
            await t.write(CONTROL_POINT, encode_control_point(RequestControl()), timeout_s=0.5)
        assert t.counters["timeouts"] == 1
        await t.close()

    virtual(body, write_latency_s=5.0)


def test_write_reaches_the_device_before_the_first_suspension() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        await t.connect()
        await t.subscribe(CONTROL_POINT)  # FTMS: indications on before any write
        before = len(b.sim.wire_log)
        coro = t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        coro.send(None)  # run to the first suspension only
        assert len(b.sim.wire_log) == before + 1
        coro.close()
        await t.close()

    virtual(body)


def test_lost_link_reports_once_fails_writes_and_the_firmware_stops_the_belt() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        reasons: list[str] = []
        t.set_disconnect_handler(reasons.append)
        await t.connect()
        await t.subscribe(CONTROL_POINT)  # FTMS: indications on before any write
        for req in (RequestControl(), StartOrResume(), SetTargetSpeed(5.0)):
            await t.write(CONTROL_POINT, encode_control_point(req))
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        assert b.sim.truth().speed_kmh > 3.0
        b.factory.last.lose_link()
        assert reasons == ["BLE device disconnected"]
        with pytest.raises(LinkLost):
            await t.write(CONTROL_POINT, b"\x08\x01")
        await asyncio.sleep(5.0)
        truth = b.sim.truth()
        assert (truth.speed_kmh, truth.stop_reason) == (0.0, "watchdog")
        await t.close()
        assert reasons == ["BLE device disconnected"]

    virtual(body)


def test_close_is_quiet_and_reconnect_restores_subscriptions() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        reasons: list[str] = []
        got: list[int] = []
        t.set_disconnect_handler(reasons.append)
        t.set_notify_handler(lambda uuid, value: got.append(uuid))
        await t.connect()
        await t.subscribe(TREADMILL_DATA)
        await t.close()
        assert reasons == []
        got.clear()
        await t.connect()
        await asyncio.sleep(1.0)
        assert TREADMILL_DATA in got
        t.drop()
        await asyncio.sleep(0.1)
        assert not b.factory.last.is_connected
        assert reasons == []

    virtual(body)


def test_att_status_from_bleak_and_bluez_errors() -> None:
    assert att_status(BleakGATTProtocolError(0x80)) == 0x80
    assert att_status(
        BleakDBusError("org.bluez.Error.Failed", ["Operation failed with ATT error: 0x80"])
    ) == 0x80
    assert att_status(BleakDBusError("org.bluez.Error.NotPermitted", ["Write not permitted"])) \
        == 0x03
    assert att_status(BleakDBusError("org.bluez.Error.InProgress", ["In Progress"])) == 0xFE
    assert att_status(BleakError("Not connected")) is None
    assert att_status(TimeoutError()) is None


def test_scan_lists_ftms_treadmills_strongest_first() -> None:
    async def main() -> None:
        scanner = fake_bleak.FakeScanner(
            [
                fake_bleak.treadmill_advert("AA:00:00:00:00:01", "FAR", -80),
                fake_bleak.other_advert(),
                fake_bleak.treadmill_advert("AA:00:00:00:00:02", "NEAR", -45),
            ]
        )
        found = await scan(3.0, scanner=scanner)
        assert found == [
            {"address": "AA:00:00:00:00:02", "name": "NEAR", "rssi": -45},
            {"address": "AA:00:00:00:00:01", "name": "FAR", "rssi": -80},
        ]
        assert scanner.calls[0][1]["service_uuids"] == [FTMS]

    run_virtual(main)


def test_open_transport_ble_urls() -> None:
    t = open_transport("ble://f0:0d:12:34:56:78?timeout=3")
    assert isinstance(t, BleTransport)
    assert (t.address, t.name_prefix, t.scan_timeout_s) == ("F0:0D:12:34:56:78", None, 3.0)
    assert t.name == "ble://F0:0D:12:34:56:78"
    u = open_transport("ble://name=KS-")
    assert isinstance(u, BleTransport) and u.name_prefix == "KS-"


class _NoAdapterScanner:
    async def discover(self, **_kw: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory")


def test_scan_cli_without_adapter_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ble_mod, "_default_scanner", lambda: _NoAdapterScanner())
    assert cli_main(["scan", "--timeout", "0.01"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("treadctl: error: no Bluetooth adapter found (")
    assert "\n" not in err


def test_scan_cli_table_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scanner = fake_bleak.FakeScanner([fake_bleak.treadmill_advert(), fake_bleak.other_advert()])
    monkeypatch.setattr(ble_mod, "_default_scanner", lambda: scanner)
    assert cli_main(["scan", "--timeout", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "F0:0D:12:34:56:78" in out and "TREADCTL-REF" in out and "HRM" not in out
    assert cli_main(["scan", "--timeout", "0.01", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x) for x in lines] == [
        {"address": "F0:0D:12:34:56:78", "name": "TREADCTL-REF", "rssi": -60}
    ]
    assert cli_main(["scan", "--timeout", "0"]) == 2


def test_write_nowait_keeps_call_order_on_the_air() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        await t.connect()
        await t.subscribe(CONTROL_POINT)  # FTMS: indications on before any write
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        await asyncio.sleep(0.1)
        before = len(b.sim.wire_log)
        first = t.write_nowait(BELT_DIRECTION, b"\x00")
        second = t.write_nowait(CONTROL_POINT, b"\x08\x01")
        await asyncio.gather(first, second)
        assert [uuid for _, uuid, _ in b.sim.wire_log[before:]] == [BELT_DIRECTION, CONTROL_POINT]
        await t.close()

    virtual(body)


# -- BlueZ realities (what the Bumble stack or BlueZ do that the first fake did not) --------


def test_stale_services_cache_is_cleared_once_and_discovery_repeated() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        await t.connect()
        assert b.factory.bluez.removed == 1  # RemoveDevice (bleak: unpair) dropped the cache
        assert t.counters["cache_refreshes"] == 1
        assert len(b.factory.clients) == 2  # a fresh client, a fresh discovery
        await t.subscribe(CONTROL_POINT)
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        await t.close()

    virtual(body, bluez=fake_bleak.FakeBlueZ(stale=(CONTROL_POINT,)))


def test_a_control_point_missing_for_real_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fake_bleak.gatt_of
    monkeypatch.setattr(fake_bleak, "gatt_of", lambda sim, without=(): real(sim, (CONTROL_POINT,)))

    async def body(b: Bench) -> None:
        with pytest.raises(TransportError, match=r"^ble://name=TREADCTL: the Fitness Machine "
                           r"Service lacks 0x2AD9, even after clearing BlueZ's services cache$"):
            await b.transport().connect()
        assert not b.factory.last.is_connected

    virtual(body)


def test_reconnect_re_enables_notifications_and_indications_on_the_new_client() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        got: list[int] = []
        t.set_notify_handler(lambda uuid, value: got.append(uuid))
        await t.connect()
        for uuid in (TREADMILL_DATA, CONTROL_POINT):
            await t.subscribe(uuid)
        await t.subscribe(TREADMILL_DATA)  # again: no second StartNotify (BlueZ refuses it)
        b.factory.last.lose_link()
        await t.connect()
        assert len(b.factory.clients) == 2
        assert set(b.factory.last._callbacks) == {TREADMILL_DATA, CONTROL_POINT}
        got.clear()
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))  # no 0xFD
        await asyncio.sleep(1.0)
        assert TREADMILL_DATA in got and CONTROL_POINT in got
        await t.close()

    virtual(body)


def test_control_point_writes_are_write_requests() -> None:
    async def body(b: Bench) -> None:
        t = b.transport()
        await t.connect()
        await t.subscribe(CONTROL_POINT)
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        await asyncio.sleep(0.5)
        await t.write_nowait(CONTROL_POINT, b"\x08\x01")
        writes = b.factory.last.writes
        assert writes == [(CONTROL_POINT, True), (CONTROL_POINT, True)]  # never a Command
        await t.close()

    virtual(body)


def test_mtu_is_read_the_bluez_way_without_a_warning() -> None:
    import warnings

    async def body(b: Bench) -> None:
        t = b.transport()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # bleak warns if mtu_size is read too early
            await t.connect()
        assert (t.mtu, t.counters["mtu"]) == (185, 185)
        await t.close()

    virtual(body, mtu=185)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]),
         "connection aborted by the local adapter (treadmill out of range, or already "
         "connected to another central such as a phone app?) "
         "[org.bluez.Error.Failed: le-connection-abort-by-local]"),
        (BleakDBusError("org.bluez.Error.Failed", ["br-connection-profile-unavailable"]),
         "BlueZ tried Bluetooth Classic: not a BLE treadmill at that address (scan again) "
         "[org.bluez.Error.Failed: br-connection-profile-unavailable]"),
        (BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]),
         "BlueZ is busy with another operation on this device "
         "[org.bluez.Error.InProgress: Operation already in progress]"),
        (BleakDBusError("org.bluez.Error.AuthenticationFailed", ["Authentication Failed"]),
         "pairing failed; an FTMS treadmill needs none (bluetoothctl remove ADDRESS, retry) "
         "[org.bluez.Error.AuthenticationFailed: Authentication Failed]"),
        (BleakDBusError("org.freedesktop.DBus.Error.NoReply", ["Did not receive a reply.\nx"]),
         "BlueZ did not answer (bluetoothd busy or hung: sudo systemctl restart bluetooth) "
         "[org.freedesktop.DBus.Error.NoReply: Did not receive a reply.]"),
        (BleakDBusError("org.bluez.Error.NotConnected", []),
         "not connected [org.bluez.Error.NotConnected]"),
        (BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", ["The name is not"]),
         "BlueZ is not running ([org.freedesktop.DBus.Error.ServiceUnknown] The name is not; "
         "systemctl start bluetooth)"),
    ],
)
def test_bluez_dbus_errors_read_as_one_plain_line(error: BaseException, message: str) -> None:
    assert ble_mod.describe_ble_error(error) == message


def test_bluez_connect_error_reaches_the_user_in_one_line() -> None:
    async def body(b: Bench) -> None:
        with pytest.raises(TransportError) as info:
            await b.transport(connect_attempts=2, backoff_s=0.1).connect()
        text = str(info.value)
        assert "\n" not in text
        assert text.startswith("cannot connect to ble://name=TREADCTL after 2 attempts: "
                               "connection aborted by the local adapter")

    virtual(body, fail_connects=5)


def test_name_prefix_refuses_two_matching_treadmills_and_names_them() -> None:
    async def body(b: Bench) -> None:
        b.scanner.adverts.append(fake_bleak.treadmill_advert("F0:0D:00:00:00:02", "TREADCTL-2"))
        with pytest.raises(TransportError) as info:
            await b.transport(name_prefix="TREADCTL").connect()
        assert str(info.value) == (
            "2 FTMS treadmills match name 'TREADCTL': TREADCTL-2 (F0:0D:00:00:00:02), "
            "TREADCTL-REF (F0:0D:12:34:56:78); use ble://ADDRESS or a longer name prefix"
        )
        assert b.factory.clients == []  # refused before connecting to either
        t = b.transport(name_prefix="TREADCTL-R")  # the strap TREADCTL-HRM is no FTMS
        await t.connect()
        assert t._client.address == "F0:0D:12:34:56:78"
        await t.close()

    virtual(body)


def test_name_prefix_reconnect_to_the_chosen_treadmill_skips_the_second_listen() -> None:
    async def body(b: Bench) -> None:
        t = b.transport(name_prefix="TREADCTL")
        await t.connect()
        b.factory.last.lose_link()
        await t.connect()
        assert [m for m, _ in b.scanner.calls] == [
            "find_device_by_filter", "discover", "find_device_by_filter"
        ]
        await t.close()

    virtual(body)


def test_write_nowait_is_part_of_every_transport_and_says_what_it_guarantees() -> None:
    from typing import get_args

    from treadctl.transport.base import NowaitDelivery, Transport
    from treadctl.transport.framed import FramedTransport

    assert FramedTransport.nowait_delivery == "in-call"
    assert BleTransport.nowait_delivery == "after-outstanding-request"
    assert set(get_args(NowaitDelivery)) == {"in-call", "after-outstanding-request"}

    class NoStopPath(Transport):  # everything but write_nowait
        async def connect(self) -> None: ...
        async def close(self) -> None: ...
        async def subscribe(self, uuid: int) -> None: ...
        async def write(self, uuid: int, value: bytes, *, timeout_s: float = 1.0) -> None: ...
        async def read(self, uuid: int, *, timeout_s: float = 1.0) -> bytes:
            return b""

    with pytest.raises(TypeError, match="write_nowait"):
        NoStopPath()  # type: ignore[abstract]


def test_async_with_connects_and_close_is_idempotent() -> None:
    async def body(b: Bench) -> None:
        async with b.transport() as t:
            assert t.connected
        assert not t.connected and not b.factory.last.is_connected
        await t.close()  # again: nothing happens, nothing raises
        t.drop()

    virtual(body)
