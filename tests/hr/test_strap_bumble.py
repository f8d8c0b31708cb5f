"""The BLE strap source (treadctl/hr/strap.py) against a real BLE stack: a Heart Rate Service
GATT server (0x180D / 0x2A37) on a Bumble virtual controller, reached through bleak's own
``BleakClient`` with the Bumble backend of treadctl/simulator/ble.py. No hardware; virtual
time."""

from __future__ import annotations

import asyncio

from bumble.core import AdvertisingData
from bumble.gatt import Characteristic, Service

from treadctl.clock import LoopClock, run_virtual, wait_until
from treadctl.hr.codec import HeartRateMeasurement, encode_heart_rate_measurement
from treadctl.hr.strap import HRFeed, StrapSource
from treadctl.simulator.ble import (
    CENTRAL_ADDRESS,
    BumbleScanner,
    PacedLink,
    _virtual_device,
    bumble_bleak_backend,
    uuid16,
)

STRAP_NAME = "Polar H10 SIM"
STRAP_ADDRESS = "F0:0D:00:00:00:02"


def test_strap_over_bumble_notifies_reconnects_and_closes() -> None:
    async def main() -> None:
        from bleak import BleakClient

        link = PacedLink(0.0)
        strap = _virtual_device(link, STRAP_NAME, STRAP_ADDRESS)
        hrm = Characteristic(uuid16(0x2A37), Characteristic.Properties.NOTIFY,
                             Characteristic.Permissions.READABLE, b"")
        strap.add_services([Service(uuid16(0x180D), [hrm])])
        central = _virtual_device(link, "treadctl", CENTRAL_ADDRESS)
        await central.power_on()
        await strap.power_on()
        adv = AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes(uuid16(0x180D))),
            (AdvertisingData.COMPLETE_LOCAL_NAME, STRAP_NAME.encode()),
        ])
        await strap.start_advertising(advertising_data=bytes(adv), auto_restart=True)
        clients: list[BleakClient] = []

        def factory(device: object, disconnected: object) -> BleakClient:
            c = BleakClient(device, disconnected, backend=bumble_bleak_backend(),  # type: ignore[arg-type]
                            central=central, timeout=10.0)
            clients.append(c)
            return c

        src = StrapSource(name_prefix="Polar", client_factory=factory,
                          scanner=BumbleScanner(central), clock=LoopClock())
        feed = HRFeed(src, workload=lambda: 2.0)
        await feed.start()
        assert await wait_until(lambda: src.state == "connected", 20.0)
        await asyncio.sleep(0.5)  # the CCCD write reaches the server

        async def beat(bpm: int) -> None:
            value = encode_heart_rate_measurement(HeartRateMeasurement(
                bpm=bpm, contact_supported=True, contact_detected=True,
                rr_intervals=(round(61440 / bpm),)))
            await strap.notify_subscribers(hrm, value)
            await asyncio.sleep(1.0)

        for bpm in (72, 73, 74):
            await beat(bpm)
        assert feed.latest is not None and feed.latest.quality == "good"
        assert feed.latest.bpm == 74

        # The strap drops the link: the source reconnects by itself.
        for conn in list(strap.connections.values()):
            await conn.disconnect()
        assert await wait_until(lambda: src.state != "connected", 5.0)
        assert await wait_until(lambda: src.state == "connected" and src.connects == 2, 30.0)
        await asyncio.sleep(0.5)
        await beat(76)
        assert feed.latest.bpm == 76 and feed.latest.quality == "good"

        await feed.close()
        assert src.state == "closed"
        for dev in (central, strap):
            await dev.power_off()

    run_virtual(main)
