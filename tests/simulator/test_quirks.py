"""Firmware quirks: the simulator sends the FTMS deviations of real machines, one switch each.

Judged from the bytes the simulated firmware puts out: the strict FTMS 1.0 decoder refuses
the deviations (step count, short record, trailing status bytes), the tolerant one reads
them; split records and "not available" values are FTMS 1.0 and both decoders read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from treadctl.clock import LoopClock, run_virtual
from treadctl.control.client import FTMSClient
from treadctl.ftms import (
    CONTROL_POINT,
    MACHINE_STATUS,
    TREADMILL_DATA,
    ControlPointRequest,
    FTMSDecodeError,
    RequestControl,
    ResultCode,
    SetTargetSpeed,
    StartedOrResumedByUser,
    StartOrResume,
    StopOrPause,
    StoppedOrPausedByUser,
    TelemetryReader,
    decode_control_point_response,
    decode_machine_status,
    decode_treadmill_data,
    encode_control_point,
)
from treadctl.profiles import load_profile
from treadctl.simulator.firmware import QUIRKS, QuirkSpecError, SimTreadmill, parse_quirks
from treadctl.transport.tcp import TcpTransport
from treadctl.transport.url import DeviceURLError, parse_device_url

REPO = Path(__file__).resolve().parents[2]
REF = "treadctl-reference"


class Host:
    """Records every notification; runs Control Point procedures one at a time (a small
    version of tests/simulator/conftest.py's scripted host)."""

    def __init__(self, sim: SimTreadmill) -> None:
        self.sim = sim
        self.notes: list[tuple[float, int, bytes]] = []
        self._changed = asyncio.Event()
        sim.attach(self._on_notify)

    def _on_notify(self, uuid: int, value: bytes) -> None:
        self.notes.append((self.sim.now_s(), uuid, value))
        self._changed.set()

    async def command(self, req: ControlPointRequest) -> ResultCode:
        def answers() -> list[bytes]:
            return [v for _, u, v in self.notes if u == CONTROL_POINT]

        before = len(answers())
        assert self.sim.handle_write(CONTROL_POINT, encode_control_point(req)) == 0
        async with asyncio.timeout(10):
            while len(answers()) <= before:
                self._changed.clear()
                await self._changed.wait()
        result = decode_control_point_response(answers()[before]).result
        assert result == ResultCode.SUCCESS, (req, result)
        return result

    async def run_keepalive(self) -> None:
        while True:
            self.sim.host_alive()
            await asyncio.sleep(0.1)


def simulate(profile: str, body: Any, *, quirks: str | None = None) -> Any:
    """As tests/simulator/conftest.py's simulate, with the firmware's quirks on:
    ``body(sim, host)`` on virtual time with sim.run() and host keepalives going."""

    async def main() -> Any:
        sim = SimTreadmill(load_profile(profile), quirks=quirks)
        host = Host(sim)
        tasks = [asyncio.create_task(sim.run()), asyncio.create_task(host.run_keepalive())]
        try:
            return await body(sim, host)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    return run_virtual(main)


def test_quirk_names() -> None:
    assert set(QUIRKS) == {
        "step-count", "short-record", "status-trailing-bytes", "split-records", "not-available"
    }
    assert parse_quirks("step-count, short-record") == {"step-count", "short-record"}
    assert parse_quirks("") == frozenset() and parse_quirks(None) == frozenset()
    with pytest.raises(QuirkSpecError, match="unknown quirk 'bogus'"):
        parse_quirks("step-count,bogus")


def test_device_url_quirks() -> None:
    u = parse_device_url("sim://?profile=kinetic-rx2&quirks=step-count,split-records")
    assert u.quirks == "step-count,split-records"
    assert parse_device_url("sim://").quirks is None
    with pytest.raises(DeviceURLError, match="quirks: unknown quirk 'nope'"):
        parse_device_url("sim://?quirks=nope")


def test_sim_command_refuses_unknown_quirks() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from treadctl.cli import main; sys.exit(main())",
         "sim", "--quirks", "bogus"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("treadctl: error: --quirks: unknown quirk 'bogus'")


async def _walk(sim: Any, host: Host, speed_kmh: float = 4.0) -> None:
    """Request control, start, walk at ``speed_kmh`` for a while, then stop."""
    await host.command(RequestControl())
    await host.command(StartOrResume())
    await host.command(SetTargetSpeed(speed_kmh))
    await asyncio.sleep(20)
    await host.command(StopOrPause(pause=False))
    await asyncio.sleep(5)


def _values(host: Host, uuid: int) -> list[bytes]:
    return [v for _, u, v in host.notes if u == uuid]


def _session(quirks: str | None, profile: str = REF) -> Host:
    async def body(sim: Any, host: Host) -> Host:
        await _walk(sim, host)
        return host

    result: Host = simulate(profile, body, quirks=quirks)
    return result


@pytest.fixture(scope="module")
def plain() -> Host:
    return _session(None)


def test_no_quirks_is_plain_ftms(plain: Host) -> None:
    for value in _values(plain, TREADMILL_DATA):
        td = decode_treadmill_data(value)
        assert td.deviations is None and td.not_available is None and not td.more_data
    for value in _values(plain, MACHINE_STATUS):
        decode_machine_status(value)


def test_step_count() -> None:
    host = _session("step-count")
    values = _values(host, TREADMILL_DATA)
    assert values and all(v[1] & 0x20 for v in values)  # flag bit 13
    for v in values:
        with pytest.raises(FTMSDecodeError, match="reserved"):
            decode_treadmill_data(v)
    steps = [decode_treadmill_data(v, strict=False).step_count for v in values]
    assert steps == sorted(steps) and steps[-1] is not None and steps[-1] > 20
    # 4 km/h for ~20 s is ~22 m: at 0.7 m a step, ~30 steps.
    assert 20 < steps[-1] < 45


def test_short_record() -> None:
    host = _session("short-record")
    values = _values(host, TREADMILL_DATA)
    assert values and all(len(v) == 20 for v in values)
    moving = []
    for v in values:
        with pytest.raises(FTMSDecodeError, match="truncated"):
            decode_treadmill_data(v)
        td = decode_treadmill_data(v, strict=False)
        assert td.deviations == ("short-record",)
        assert td.heart_rate_bpm is None and td.missing and "heart_rate_bpm" in td.missing
        assert td.speed_kmh is not None and td.total_distance_m is not None
        moving.append(td.speed_kmh)
    assert max(moving) == 4.0


def test_status_trailing_bytes() -> None:
    host = _session("status-trailing-bytes")
    values = _values(host, MACHINE_STATUS)
    assert values and all(len(v) >= 3 for v in values)
    kinds = set()
    for v in values:
        status = decode_machine_status(v, strict=False)
        kinds.add(type(status))
        if len(v) > 3 or v[0] in (0x05, 0x06):
            continue  # a Target Changed status is 3 bytes by itself
        with pytest.raises(FTMSDecodeError, match="trailing"):
            decode_machine_status(v)
        assert status.deviations == ("status-trailing-bytes",)
    assert StartedOrResumedByUser in kinds and StoppedOrPausedByUser in kinds


def test_status_trailing_bytes_on_a_stop_at_the_machine() -> None:
    async def body(sim: Any, host: Host) -> bytes:
        await host.command(RequestControl())
        await host.command(StartOrResume())
        await host.command(SetTargetSpeed(3.0))
        await asyncio.sleep(5)
        sim.press_stop()
        await asyncio.sleep(0.1)
        return _values(host, MACHINE_STATUS)[-1]

    value = simulate(REF, body, quirks="status-trailing-bytes")
    assert value == bytes.fromhex("020100")  # what the CITYSPORTS pad sends


def test_split_records() -> None:
    host = _session("split-records")
    values = _values(host, TREADMILL_DATA)
    parts = [decode_treadmill_data(v) for v in values]  # FTMS 1.0: strict reads each part
    assert parts[0].more_data and not parts[1].more_data
    assert all(p.more_data == (i % 2 == 0) for i, p in enumerate(parts))
    reader = TelemetryReader()
    samples = [s for s in (reader.treadmill_data(v) for v in values) if s is not None]
    assert len(samples) == len(values) // 2
    assert all(s.total_distance_m is not None and s.heart_rate_bpm is not None for s in samples)
    assert max(s.speed_kmh or 0 for s in samples) == 4.0
    assert reader.deviations["split-records"] == len(samples)


def test_not_available() -> None:
    host = _session("not-available")
    for v in _values(host, TREADMILL_DATA):
        td = decode_treadmill_data(v)  # FTMS 1.0 sentinels: strict reads them
        assert td.inclination_pct is None and td.ramp_angle_deg is not None
        assert td.not_available == (
            "inclination_pct", "energy_per_hour_kcal", "energy_per_minute_kcal"
        )
        assert td.total_energy_kcal is not None


def test_all_quirks_together() -> None:
    host = _session(",".join(QUIRKS))
    reader = TelemetryReader()
    samples = [
        s for s in (reader.treadmill_data(v) for v in _values(host, TREADMILL_DATA)) if s
    ]
    for v in _values(host, MACHINE_STATUS):
        reader.machine_status(v)
    assert set(reader.deviations) == set(QUIRKS)
    assert max(s.speed_kmh or 0 for s in samples) == 4.0


def test_quirks_over_tcp_with_the_simulator_in_its_own_process() -> None:
    """The wire: ``treadctl sim --quirks`` in its own process, our client over TCP."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from treadctl.cli import main; sys.exit(main())",
         "sim", "--listen", "tcp://127.0.0.1:0", "--quirks", "step-count,status-trailing-bytes"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        host, port = url.removeprefix("tcp://").rsplit(":", 1)

        async def talk() -> tuple[dict[str, int], list[Any], list[str]]:
            transport = TcpTransport(host, int(port))
            client = FTMSClient(transport, load_profile(REF), LoopClock())
            statuses: list[Any] = []
            once: list[str] = []
            started = asyncio.Event()
            stepped = asyncio.Event()

            def on_status(status: Any) -> None:
                statuses.append(status)
                started.set()

            client.on_status = on_status
            client.on_deviation = once.append
            client.on_telemetry = lambda td: stepped.set() if td.step_count is not None else None
            await client.connect()
            try:
                await client.request_control()
                await client.command(StartOrResume())
                async with asyncio.timeout(20):
                    await stepped.wait()
                    await started.wait()
                client.stop_now()
            finally:
                await client.close()
            return dict(client.deviations), statuses, once

        deviations, statuses, once = asyncio.run(talk())
        assert deviations.get("step-count", 0) >= 1
        assert deviations.get("status-trailing-bytes", 0) >= 1
        assert any(isinstance(s, StartedOrResumedByUser) for s in statuses)
        assert sorted(once) == ["status-trailing-bytes", "step-count"]  # once each
    finally:
        proc.terminate()
        proc.wait(10)


def test_device_url_reaches_the_simulated_firmware() -> None:
    from treadctl.transport import open_transport

    async def main() -> frozenset[str]:
        transport = open_transport("sim://?quirks=split-records,not-available")
        await transport.connect()
        try:
            return transport.sim.quirks  # type: ignore[attr-defined, no-any-return]
        finally:
            await transport.close()

    assert run_virtual(main) == {"split-records", "not-available"}
