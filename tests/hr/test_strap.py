"""Heart-rate sources (treadctl/hr/strap.py): the BLE strap against a bleak-like fake
(reconnect and backoff on virtual time), the feed (decode -> filter), sim-hr:// URLs and the
simulated strap on the simulator's belt truth."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.hr.fake_bleak_hr import FakeStrapRadio
from treadctl.clock import LoopClock, run_virtual
from treadctl.hr.strap import HRFeed, HRURLError, StrapSource, open_hr_source, parse_hr_url
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.simulator.heart import SimStrapSource, belt_workload

ADDR = "AA:BB:CC:DD:EE:01"


def test_strap_connects_subscribes_and_feeds_the_filter() -> None:
    async def main() -> None:
        radio = FakeStrapRadio()
        src = StrapSource(ADDR, client_factory=radio.factory, clock=LoopClock())
        feed = HRFeed(src, workload=lambda: 2.5)
        await feed.start()
        await asyncio.sleep(1.0)
        assert src.state == "connected"
        for k in range(5):
            assert radio.push(bytes([0x16, 80 + k, 0x00, 0x03]))
            await asyncio.sleep(1.0)
        assert feed.latest is not None and feed.latest.quality == "good"
        assert feed.latest.bpm == 84
        radio.push(b"\x16")  # undecodable: counted, ignored
        assert feed.bad_values == 1 and feed.latest.bpm == 84
        await feed.close()
        assert src.state == "closed"
        assert radio.log[-1][1] == "disconnect"

    run_virtual(main)


def test_connect_failures_back_off_exponentially() -> None:
    async def main() -> None:
        radio = FakeStrapRadio(fail_connects=4)
        src = StrapSource(ADDR, client_factory=radio.factory, clock=LoopClock(),
                          backoff_s=1.0, max_backoff_s=4.0)
        await src.start(lambda v: None)
        await asyncio.sleep(30.0)
        connects = [t for t, what in radio.log if what == "connect"]
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(connects)]
        # 0.05 s connect attempt + 1, 2, 4, 4 s of backoff.
        assert gaps == [1.05, 2.05, 4.05, 4.05]
        assert src.state == "connected" and src.failures == 4 and src.connects == 1
        await src.close()

    run_virtual(main)


def test_link_loss_reconnects_and_the_feed_shows_the_gap() -> None:
    async def main() -> None:
        radio = FakeStrapRadio()
        src = StrapSource(ADDR, client_factory=radio.factory, clock=LoopClock())
        feed = HRFeed(src)
        await feed.start()
        await asyncio.sleep(0.5)
        for _ in range(3):
            radio.push(b"\x06\x50")
            await asyncio.sleep(1.0)
        radio.lose_link()
        radio.fail_connects = 2
        qualities = []
        for _ in range(10):
            await asyncio.sleep(1.0)
            qualities.append(feed.tick().quality)
        assert "lost" in qualities  # the dropout is visible
        await asyncio.sleep(5.0)
        assert src.state == "connected" and src.connects == 2
        radio.push(b"\x06\x52")
        assert feed.latest is not None and feed.latest.quality == "good"
        await feed.close()

    run_virtual(main)


def test_a_consumer_error_does_not_kill_the_link() -> None:
    async def main() -> None:
        radio = FakeStrapRadio()
        src = StrapSource(ADDR, client_factory=radio.factory, clock=LoopClock())
        seen: list[bytes] = []

        def consumer(v: bytes) -> None:
            seen.append(v)
            raise RuntimeError("boom")

        await src.start(consumer)
        await asyncio.sleep(0.5)
        radio.push(b"\x00\x50")
        radio.push(b"\x00\x51")
        assert len(seen) == 2 and src.state == "connected"
        await src.close()

    run_virtual(main)


def test_close_while_backing_off_ends_cleanly() -> None:
    async def main() -> None:
        radio = FakeStrapRadio(fail_connects=100)
        src = StrapSource(ADDR, client_factory=radio.factory, clock=LoopClock())
        await src.start(lambda v: None)
        await asyncio.sleep(3.0)
        await src.close()
        assert src.state == "closed"
        n = len(radio.log)
        await asyncio.sleep(60.0)
        assert len(radio.log) == n  # nothing runs after close

    run_virtual(main)


@pytest.mark.parametrize("url, error", [
    ("sim-hr://?faults=nope@1", "unknown strap fault 'nope'"),
    ("sim-hr://?fault=dropout@1", "unknown query parameter 'fault'"),
    ("sim-hr://host", "takes no host"),
    ("sim-hr://?seed=-1", "seed must be >= 0"),
    ("sim-hr://?age=300", "age must be a number in 10..100"),
    ("ble://nope", "bad MAC address"),
    ("hr://x", "expected ble://ADDRESS"),
])
def test_bad_urls_are_one_line(url: str, error: str) -> None:
    with pytest.raises(HRURLError, match="bad heart-rate URL") as info:
        parse_hr_url(url)
    assert error in str(info.value) and "\n" not in str(info.value)


def test_good_urls() -> None:
    u = parse_hr_url("sim-hr://?faults=dropout@30+5,fake-199@90&seed=3&age=50&rest=60")
    assert (u.faults, u.seed, u.age_years, u.hr_rest_bpm) == (
        "dropout@30+5,fake-199@90", 3, 50.0, 60.0)
    assert parse_hr_url("ble://aa:bb:cc:dd:ee:01").ble_address == "AA:BB:CC:DD:EE:01"
    assert parse_hr_url("ble://name=Polar%20H10").ble_name_prefix == "Polar H10"


def test_sim_strap_on_the_simulators_belt_truth_moves_nothing() -> None:
    """The simulated strap on a real simulator lane, with a dropout from its URL: one value
    per second on virtual time, the gap visible, and the treadmill untouched."""

    async def main() -> None:
        sim = SimTreadmill(load_profile("treadctl-reference"))
        src = open_hr_source("sim-hr://?faults=dropout@10+5", clock=LoopClock(),
                             sim_workload=belt_workload(sim.truth))
        assert isinstance(src, SimStrapSource)
        got: list[tuple[float, bytes]] = []
        loop = asyncio.get_running_loop()
        await src.start(lambda v: got.append((loop.time(), v)))
        await asyncio.sleep(30.5)
        await src.close()
        times = [round(t) for t, _ in got]
        assert times == [t for t in range(1, 31) if not 10 <= t < 15]
        assert sim.wire_log == [] and sim.truth().speed_kmh == 0.0

    run_virtual(main)


def test_sim_hr_needs_a_lane() -> None:
    with pytest.raises(HRURLError, match="needs a simulated lane"):
        open_hr_source("sim-hr://")
