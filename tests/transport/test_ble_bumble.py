"""treadctl.transport.ble against a real BLE stack: the simulator as an FTMS GATT server on
Bumble (treadctl.simulator.ble), reached by a Bumble central through bleak's own
``BleakClient`` with a Bumble backend, over two virtual controllers. No hardware; virtual
time (Bumble's controllers, host, ATT and GATT run on the event loop's timers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from treadctl import ftms
from treadctl.clock import run_virtual
from treadctl.ftms import (
    CONTROL_POINT,
    FEATURE,
    MACHINE_STATUS,
    TREADMILL_DATA,
    RequestControl,
    SetTargetSpeed,
    StartOrResume,
    encode_control_point,
    full_uuid,
)
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.simulator.ble import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    VirtualLink,
    split_treadmill_data,
)
from treadctl.transport import LinkLost, ResponseTimeout, TransportError, WriteRejected
from treadctl.transport.ble import BleTransport

REQUEST_CONTROL = encode_control_point(RequestControl())
START = encode_control_point(StartOrResume())


class Bench:
    def __init__(self, profile: str = "treadctl-reference", faults: str | None = None,
                 **link_kw: Any) -> None:
        self.sim = SimTreadmill(load_profile(profile), faults=faults)
        self.task = asyncio.get_running_loop().create_task(self.sim.run())
        self.link = VirtualLink(self.sim, **link_kw)

    def transport(self, **kw: Any) -> BleTransport:
        kw.setdefault("scan_timeout_s", 3.0)
        if "address" not in kw:
            kw.setdefault("name_prefix", "TREADCTL")
        return BleTransport(client_factory=self.link.client_factory, scanner=self.link.scanner,
                            **kw)

    async def connected(self, subscribe: bool = True, **kw: Any) -> BleTransport:
        t = self.transport(**kw)
        await t.connect()
        if subscribe:
            for uuid in (TREADMILL_DATA, MACHINE_STATUS, CONTROL_POINT, ftms.BELT_DIRECTION):
                await t.subscribe(uuid)
        return t

    async def aclose(self) -> None:
        await self.link.close()
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def virtual(fn: Callable[[Bench], Awaitable[None]], **bench_kw: Any) -> None:
    async def main() -> None:
        bench = Bench(**bench_kw)
        await bench.link.start()
        try:
            await fn(bench)
        finally:
            await bench.aclose()

    run_virtual(main)


async def start_belt(t: BleTransport, kmh: float) -> None:
    for data in (REQUEST_CONTROL, START, encode_control_point(SetTargetSpeed(kmh))):
        await t.write(CONTROL_POINT, data)
        await asyncio.sleep(0.3)  # the indication of the procedure, before the next one


def test_gatt_table_as_bleak_discovers_it() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected(subscribe=False)
        services = t._client.services
        ftms_service = services.get_service(full_uuid(ftms.FITNESS_MACHINE_SERVICE))
        props = {c.uuid: sorted(c.properties) for c in ftms_service.characteristics}
        assert props == {
            full_uuid(FEATURE): ["read"],
            full_uuid(TREADMILL_DATA): ["notify"],
            full_uuid(ftms.TRAINING_STATUS): ["notify", "read"],
            full_uuid(ftms.SPEED_RANGE): ["read"],
            full_uuid(ftms.INCLINATION_RANGE): ["read"],
            full_uuid(CONTROL_POINT): ["indicate", "write"],
            full_uuid(MACHINE_STATUS): ["notify"],
        }
        direction = services.get_characteristic(full_uuid(ftms.BELT_DIRECTION))
        assert sorted(direction.properties) == ["notify", "read", "write"]
        # Values are the firmware's: the speed range of the profile, read over ATT.
        rng = ftms.decode_speed_range(await t.read(ftms.SPEED_RANGE))
        p = b.sim.profile.speed
        assert (rng.min_kmh, rng.max_kmh) == (p.min_kmh, p.max_kmh)
        with pytest.raises(WriteRejected) as info:
            await t.read(TREADMILL_DATA)  # notify only: Bumble's server refuses the read
        assert info.value.status == 0x02
        await t.close()

    virtual(body)


def test_generic_ftms_has_no_belt_direction() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected(subscribe=False)
        assert t._client.services.get_characteristic(full_uuid(ftms.BELT_DIRECTION)) is None
        await t.close()

    virtual(body, profile="generic-ftms")


def test_control_point_answers_fd_until_indications_are_enabled() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected(subscribe=False)
        with pytest.raises(WriteRejected) as info:
            await t.write(CONTROL_POINT, REQUEST_CONTROL)
        assert info.value.status == ATT_CCCD_IMPROPERLY_CONFIGURED == 0xFD
        assert not b.sim.wire_log  # the firmware never saw it
        await t.subscribe(CONTROL_POINT)
        got: list[bytes] = []
        t.set_notify_handler(lambda uuid, v: got.append(v) if uuid == CONTROL_POINT else None)
        await t.write(CONTROL_POINT, REQUEST_CONTROL)
        await asyncio.sleep(0.5)
        assert got == [bytes([0x80, 0x00, 0x01])]  # the response, indicated
        await t.close()

    virtual(body)


def test_fe_while_a_procedure_is_in_progress() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        await t.write(CONTROL_POINT, REQUEST_CONTROL)
        # The write response comes at once, the indication after ack_delay_ms: a second
        # procedure now is refused by the firmware with 0xFE.
        with pytest.raises(WriteRejected) as info:
            await t.write(CONTROL_POINT, START)
        assert info.value.status == 0xFE
        await asyncio.sleep(0.5)
        await t.write(CONTROL_POINT, START)  # after the indication: accepted
        await t.close()

    virtual(body)


def test_a_write_waits_for_connection_events() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await t.write(CONTROL_POINT, REQUEST_CONTROL)
        # Request at the next event, response at the one after (virtual time, exact).
        assert loop.time() - t0 == pytest.approx(0.1, abs=0.051)
        assert loop.time() - t0 >= 0.05
        await t.close()

    virtual(body, connection_interval_ms=50)


def test_split_records_at_mtu_23_lose_no_sample() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        assert t._client.mtu_size == 23
        reader = ftms.TelemetryReader(pace_format=b.sim.profile.quirks.pace_format)
        samples: list[ftms.TreadmillData] = []
        parts: list[bytes] = []

        def on(uuid: int, value: bytes) -> None:
            if uuid == TREADMILL_DATA:
                parts.append(value)
                td = reader.treadmill_data(value)
                if td is not None:
                    samples.append(td)

        t.set_notify_handler(on)
        await start_belt(t, 6.0)
        await asyncio.sleep(10.0)
        await t.close()
        sent = [v for _, u, v in b.link.peripheral.sent if u == TREADMILL_DATA]
        assert parts == sent  # every notification arrived, in order
        assert max(len(p) for p in parts) <= 20
        records = [p for p in sent if not p[0] & 0x01]  # the last part of each record
        assert len(records) >= 100 - 5  # 10 Hz for ~10 s
        assert len(samples) == len(records)  # 0 lost samples
        assert reader.deviations["split-records"] == len(parts) - len(records) > 0
        last = samples[-1]
        assert last.speed_kmh == pytest.approx(6.0)
        # Merged: fields of the first part (average speed, energy) with the speed of the last.
        assert last.average_speed_kmh is not None and last.total_energy_kcal is not None
        assert last.heart_rate_bpm is not None and last.elapsed_time_s is not None

    virtual(body, long_records=True)


def test_mtu_exchange_lets_a_long_record_travel_whole() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        assert t._client.mtu_size == 185  # min(central 247, peripheral 185)
        await start_belt(t, 4.0)
        await asyncio.sleep(2.0)
        sent = [v for _, u, v in b.link.peripheral.sent if u == TREADMILL_DATA]
        assert sent and all(not v[0] & 0x01 for v in sent)  # no More Data: not split
        assert max(len(v) for v in sent) > 20
        await t.close()

    virtual(body, long_records=True, central_mtu=247, max_mtu=185)


def test_split_treadmill_data_follows_the_ftms_rule() -> None:
    td = ftms.TreadmillData(
        speed_kmh=5.5, average_speed_kmh=5.0, total_distance_m=1234, inclination_pct=2.0,
        ramp_angle_deg=1.1, instantaneous_pace=0.9, total_energy_kcal=80,
        energy_per_hour_kcal=385, energy_per_minute_kcal=6, heart_rate_bpm=120,
        metabolic_equivalent=5.9, elapsed_time_s=600,
    )
    fmt = "uint8-0.1kmpmin"
    whole = ftms.encode_treadmill_data(td, pace_format=fmt)
    assert len(whole) > 20
    parts = split_treadmill_data(whole, 20, pace_format=fmt)
    assert len(parts) >= 2 and all(len(p) <= 20 for p in parts)
    decoded = [ftms.decode_treadmill_data(p, pace_format=fmt) for p in parts]
    assert [d.more_data for d in decoded] == [True] * (len(parts) - 1) + [False]
    assembler = ftms.TreadmillDataAssembler()
    merged = [assembler.feed(d) for d in decoded][-1]
    assert merged == td
    assert split_treadmill_data(whole, 64, pace_format=fmt) == [whole]


def test_disconnect_in_the_middle_of_a_procedure_is_link_lost_at_once() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        reasons: list[str] = []
        t.set_disconnect_handler(reasons.append)
        await start_belt(t, 5.0)
        await asyncio.sleep(3.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending = asyncio.ensure_future(t.write(CONTROL_POINT, REQUEST_CONTROL, timeout_s=5.0))
        await asyncio.sleep(0)  # the request is on its way; the treadmill loses power
        b.link.peripheral.drop_connection()
        with pytest.raises(TransportError) as info:
            await pending
        assert not isinstance(info.value, ResponseTimeout)  # failed with the link, not later
        assert loop.time() - t0 < 1.0
        assert reasons == ["BLE device disconnected"]
        with pytest.raises(LinkLost):
            await t.write(CONTROL_POINT, REQUEST_CONTROL)
        await asyncio.sleep(3.0)
        truth = b.sim.truth()  # the firmware's watchdog stopped the belt
        assert (truth.speed_kmh, truth.stop_reason) == (0.0, "watchdog")
        await t.close()

    virtual(body, connection_interval_ms=30)


def test_link_drop_fault_silences_then_times_out_the_connection() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        reasons: list[str] = []
        t.set_disconnect_handler(reasons.append)
        await start_belt(t, 5.0)
        await asyncio.sleep(2.0)
        b.sim.inject("link-drop")
        with pytest.raises(ResponseTimeout):
            await t.write(CONTROL_POINT, REQUEST_CONTROL, timeout_s=0.5)
        assert reasons == []  # still connected: supervision has not timed out yet
        await asyncio.sleep(2.0)
        assert reasons == ["BLE device disconnected"]
        truth = b.sim.truth()
        assert (truth.speed_kmh, truth.stop_reason) == (0.0, "watchdog")
        await t.close()

    virtual(body, supervision_timeout_s=2.0)


def test_reconnect_rediscovers_and_resubscribes() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        got: list[int] = []
        t.set_notify_handler(lambda uuid, v: got.append(uuid))
        b.link.peripheral.drop_connection()
        await asyncio.sleep(0.5)
        assert not t.connected
        await t.connect()  # a new BleakClient: fresh discovery, the same subscriptions
        got.clear()
        await t.write(CONTROL_POINT, REQUEST_CONTROL)  # no 0xFD: indications re-enabled
        await asyncio.sleep(1.0)
        assert TREADMILL_DATA in got and CONTROL_POINT in got
        assert b.link.peripheral.connections == 2
        await t.close()

    virtual(body)


def test_name_prefix_scan_sees_real_adverts_and_skips_non_ftms() -> None:
    async def body(b: Bench) -> None:
        t = b.transport(name_prefix="TREADCTL")
        await t.connect()
        assert t._client.address == "F0:0D:12:34:56:78"
        await t.close()
        with pytest.raises(TransportError, match="no FTMS treadmill named 'TREADCTL-H"):
            await b.transport(name_prefix="TREADCTL-H").connect()  # the strap is not FTMS

    virtual(body, extra_peripherals=[("TREADCTL-HRM", "C0:FF:EE:00:00:01", [0x180D])])


def _spy_att_requests(t: BleTransport) -> list[bytes]:
    """Every ATT PDU the central's GATT client hands to L2CAP, as it is handed."""
    gatt_client = t._client._backend._peer.gatt_client
    sent: list[bytes] = []
    original = gatt_client.send_gatt_pdu

    def spy(pdu: bytes) -> None:
        sent.append(bytes(pdu))
        original(pdu)

    gatt_client.send_gatt_pdu = spy
    return sent


STOP = encode_control_point(ftms.StopOrPause(pause=False))
ATT_WRITE_REQUEST = 0x12


def test_write_nowait_hands_the_request_to_the_stack_in_the_call() -> None:
    assert BleTransport.nowait_delivery == "after-outstanding-request"

    async def body(b: Bench) -> None:
        t = await b.connected()
        sent = _spy_att_requests(t)
        fut = t.write_nowait(CONTROL_POINT, STOP)
        # No await yet: the Write Request is already with L2CAP/HCI.
        handle = t._client.services.get_characteristic(full_uuid(CONTROL_POINT)).handle
        assert sent == [bytes([ATT_WRITE_REQUEST]) + handle.to_bytes(2, "little") + STOP]
        await fut
        assert b.sim.wire_log[-1][2] == STOP
        await t.close()

    virtual(body, connection_interval_ms=30)


def test_write_nowait_goes_right_after_the_request_on_the_air_and_before_later_ones() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        await start_belt(t, 4.0)
        first = t.write_nowait(ftms.BELT_DIRECTION, b"\x00")  # on the air (refused: moving)
        later = asyncio.ensure_future(t.write(CONTROL_POINT, encode_control_point(
            SetTargetSpeed(5.0))))  # made before the stop, but its task has not run yet
        stop = t.write_nowait(CONTROL_POINT, STOP)
        results = await asyncio.gather(first, stop, later, return_exceptions=True)
        assert isinstance(results[0], WriteRejected) and results[1] is None
        order = [(u, v) for _, u, v in b.sim.wire_log[-3:]]
        assert order[:2] == [(ftms.BELT_DIRECTION, b"\x00"), (CONTROL_POINT, STOP)]
        await t.close()

    virtual(body, connection_interval_ms=30)


def test_write_nowait_times_out_and_fails_with_the_link() -> None:
    async def body(b: Bench) -> None:
        t = await b.connected()
        b.sim.inject("link-drop")
        with pytest.raises(ResponseTimeout, match=r"within 0\.2 s"):
            await t.write_nowait(CONTROL_POINT, STOP, timeout_s=0.2)
        await asyncio.sleep(3.0)  # supervision timeout: the link is gone
        with pytest.raises(LinkLost):
            t.write_nowait(CONTROL_POINT, STOP)
        await t.close()

    virtual(body, supervision_timeout_s=1.0)
