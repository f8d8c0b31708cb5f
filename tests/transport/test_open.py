"""open_transport: the URL picks the transport; SimTransport specifics (profile, faults, close)."""

from __future__ import annotations

import asyncio

import pytest

from treadctl.clock import run_virtual
from treadctl.ftms import CONTROL_POINT, RequestControl, encode_control_point
from treadctl.profiles import ProfileError, load_profile
from treadctl.transport import DeviceURLError, open_transport, parse_device_url
from treadctl.transport.serial import SerialTransport
from treadctl.transport.sim import SimTransport
from treadctl.transport.tcp import TcpTransport


def test_url_picks_the_transport_unconnected() -> None:
    tcp = open_transport("tcp://127.0.0.1:5000?timeout=2")
    assert isinstance(tcp, TcpTransport)
    assert (tcp.host, tcp.port, tcp.connect_timeout_s, tcp.name) == (
        "127.0.0.1", 5000, 2.0, "tcp://127.0.0.1:5000"
    )
    ser = open_transport(parse_device_url("serial:///dev/ttyUSB0?baud=9600"))
    assert isinstance(ser, SerialTransport)
    assert (ser.path, ser.baud, ser.connected) == ("/dev/ttyUSB0", 9600, False)
    sim = open_transport("sim://")
    assert isinstance(sim, SimTransport)
    assert sim.profile.name == "treadctl-reference"
    with pytest.raises(RuntimeError, match="after connect"):
        _ = sim.sim


def test_bad_url_and_unknown_profile() -> None:
    with pytest.raises(DeviceURLError):
        open_transport("tcp://nohost")
    with pytest.raises(ProfileError):
        open_transport("sim://?profile=no-such-firmware")


def test_sim_profile_from_url_wins_over_argument() -> None:
    kinetic = load_profile("kinetic-rx2")
    generic = load_profile("generic-ftms")
    t = open_transport("sim://?profile=kinetic-rx2", profile=generic)
    assert isinstance(t, SimTransport) and t.profile.name == "kinetic-rx2"
    u = open_transport("sim://", profile=kinetic)
    assert isinstance(u, SimTransport) and u.profile is kinetic


def test_sim_faults_and_seed_reach_the_simulator_and_close_stops_it() -> None:
    async def main() -> None:
        t = open_transport("sim://?faults=safety-key@2&seed=3")
        assert isinstance(t, SimTransport)
        await t.connect()
        sim = t.sim
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        assert sim.truth().safety_key_in
        await asyncio.sleep(2.5)
        assert not sim.truth().safety_key_in
        tasks = list(t._tasks)
        await t.close()
        assert all(task.done() for task in tasks)
        await t.close()

    run_virtual(main)


def test_sim_link_counts_frames_both_ways() -> None:
    async def main() -> None:
        t = open_transport("sim://")
        await t.connect()
        for _ in range(3):
            await t.keepalive()
        await t.write(CONTROL_POINT, encode_control_point(RequestControl()))
        await asyncio.sleep(1.0)  # 10 Hz telemetry on the reference firmware
        c = t.counters
        assert c["frames_sent"] == 4
        assert c["frames_received"] >= 10
        assert c["dropped"] == 0
        assert isinstance(t, SimTransport)
        assert t.sim.link_counters is not None and t.sim.link_counters.frames == 4
        await t.close()

    run_virtual(main)
