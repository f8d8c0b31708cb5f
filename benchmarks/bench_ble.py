"""BLE over a real stack (issue 13): fault seen -> Stop written, over the Bumble link next to
TCP and in-process, in one run; telemetry at 10 Hz with MTU 23 and split records.

* fault -> stop: a controller runs a session against the simulator (in this process) over
  each link: ``sim://`` (in-memory pipe), ``tcp://`` (a real socket to ``serve_tcp`` in
  this loop) and BLE (BleTransport -> bleak's BleakClient -> Bumble central -> virtual
  controllers with 15 ms connection events -> the FTMS GATT server, MTU 23). The fault is
  the safety key pulled in the simulator; "seen" is the Fitness Machine Status
  notification reaching the transport's notify handler, "written" is the Stop handed to
  the link (framed: the frame on the stream; BLE: the ATT Write Request handed to L2CAP,
  which waits behind a request already on the air). Real CPU time (perf_counter) on a
  loop scaled 5x so the belt ramps take less real time; the BLE row also reports the Stop
  reaching the firmware in link time (connection events included).
* telemetry: an hour-like run at 10 Hz on virtual time over the Bumble link at MTU 23 with
  the long record (two notifications each): samples the firmware sent vs samples the
  TelemetryReader merged (lost = the difference), and the CPU of merging a split record
  vs decoding the same record whole.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from treadctl import clock, ftms
from treadctl.control.client import FTMSClient
from treadctl.control.controller import Controller, State
from treadctl.profiles import load_profile
from treadctl.programs.model import program_from_dict
from treadctl.simulator import SimTreadmill
from treadctl.simulator.link import serve_tcp
from treadctl.transport.base import Transport
from treadctl.transport.sim import SimTransport
from treadctl.transport.tcp import TcpTransport

PROFILE = load_profile("treadctl-reference")
STOP = ftms.encode_control_point(ftms.StopOrPause(pause=False))
SPEEDUP = 5.0
CONNECTION_INTERVAL_MS = 15.0
PROGRAM = program_from_dict(
    {"name": "bench", "segment": [{"duration_s": 3600, "speed_kmh": 2.0,
                                   "direction": "forward"}]}, "bench"
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _until(cond: Callable[[], bool], timeout_s: float) -> bool:
    return await clock.wait_until(cond, timeout_s, 0.01)


class _Probe:
    """Timestamps of one trial: fault seen at the host, Stop on the link/stack."""

    def __init__(self) -> None:
        self.seen: float | None = None
        self.written: float | None = None

    def reset(self) -> None:
        self.seen = self.written = None


async def _trials(
    transport: Transport, sim: SimTreadmill, trials: int, probe: _Probe,
    on_air: Callable[[], list[tuple[float, int, bytes]]] | None = None,
) -> tuple[list[float], list[float]]:
    ctl = Controller(transport, PROFILE, tick_hz=10.0)
    await ctl.open()
    # The handler the client's connect() gave the transport (FTMS: the reference profile).
    assert isinstance(ctl.client, FTMSClient)
    handler = ctl.client.on_notification

    def seen(uuid: int, value: bytes) -> None:
        if uuid == ftms.MACHINE_STATUS and value[:1] == b"\x03" and probe.seen is None:
            probe.seen = time.perf_counter()  # Stopped by safety key, at the host
        handler(uuid, value)

    transport.set_notify_handler(seen)
    latencies: list[float] = []
    to_firmware: list[float] = []
    try:
        for _ in range(trials):
            session = ctl.start(PROGRAM)
            assert await _until(lambda: sim.truth().speed_kmh > 1.5, 30), sim.truth()
            probe.reset()
            before = len(sim.wire_log)
            t_fault = sim.now_s()
            sim.pull_safety_key()
            assert await _until(lambda: probe.written is not None, 5), "no Stop written"
            assert probe.seen is not None
            latencies.append(probe.written - probe.seen)
            assert await _until(
                lambda b=before: any(v == STOP for _, _, v in sim.wire_log[b:]), 5
            )
            t_stop = next(t for t, _, v in sim.wire_log[before:] if v == STOP)
            to_firmware.append(t_stop - t_fault)
            await asyncio.wait_for(session, 30)
            assert await _until(
                lambda: sim.truth().speed_kmh == 0.0 and ctl.measured_kmh == 0.0, 30
            )
            sim.insert_safety_key()
            ctl.reset("bench")
            assert await _until(lambda: ctl.snapshot.state is State.IDLE, 10), ctl.snapshot
    finally:
        await ctl.close()
    return latencies, to_firmware


def _framed_probe(transport: Any, probe: _Probe) -> None:
    original = transport.write_nowait

    def write_nowait(uuid: int, value: bytes, **kw: Any) -> Any:
        fut = original(uuid, value, **kw)
        if value == STOP and probe.written is None:
            probe.written = time.perf_counter()  # the frame is on the stream (in-call)
        return fut

    transport.write_nowait = write_nowait


async def _inproc(trials: int) -> tuple[list[float], list[float]]:
    transport = SimTransport(PROFILE)
    probe = _Probe()
    _framed_probe(transport, probe)
    await transport.connect()  # the controller's open() finds it connected
    assert transport.sim is not None
    return await _trials(transport, transport.sim, trials, probe)


async def _tcp(trials: int) -> tuple[list[float], list[float]]:
    sims: list[SimTreadmill] = []

    def make() -> SimTreadmill:
        sims.append(SimTreadmill(PROFILE))
        return sims[-1]

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[str, int]] = loop.create_future()
    server = loop.create_task(serve_tcp(make, "127.0.0.1", 0, ready=ready))
    host, port = await ready
    try:
        transport = TcpTransport(host, port)
        probe = _Probe()
        _framed_probe(transport, probe)
        await transport.connect()
        assert await _until(lambda: bool(sims), 5)
        return await _trials(transport, sims[0], trials, probe)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def _ble(trials: int) -> tuple[list[float], list[float]]:
    from treadctl.simulator.ble import VirtualLink
    from treadctl.transport.ble import BleTransport

    sim = SimTreadmill(PROFILE)
    sim_task = asyncio.get_running_loop().create_task(sim.run())
    link = VirtualLink(sim, long_records=True, connection_interval_ms=CONNECTION_INTERVAL_MS)
    await link.start()
    transport = BleTransport(name_prefix="TREADCTL", client_factory=link.client_factory,
                             scanner=link.scanner, scan_timeout_s=5.0, name_settle_s=0.2)
    probe = _Probe()
    await transport.connect()
    gatt_client = link.last_client._backend._peer.gatt_client
    original = gatt_client.send_gatt_pdu

    def send_gatt_pdu(pdu: bytes) -> None:
        if pdu[:1] == b"\x12" and bytes(pdu[3:]) == STOP and probe.written is None:
            probe.written = time.perf_counter()  # the Write Request handed to L2CAP
        original(pdu)

    gatt_client.send_gatt_pdu = send_gatt_pdu
    try:
        return await _trials(transport, sim, trials, probe)
    finally:
        await link.close()
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)


async def _telemetry(seconds: float) -> dict[str, float]:
    from treadctl.simulator.ble import VirtualLink
    from treadctl.transport.ble import BleTransport

    sim = SimTreadmill(PROFILE)
    sim_task = asyncio.get_running_loop().create_task(sim.run())
    link = VirtualLink(sim, long_records=True, connection_interval_ms=CONNECTION_INTERVAL_MS)
    await link.start()
    transport = BleTransport(name_prefix="TREADCTL", client_factory=link.client_factory,
                             scanner=link.scanner, scan_timeout_s=5.0, name_settle_s=0.2)
    fmt = PROFILE.quirks.pace_format
    reader = ftms.TelemetryReader(pace_format=fmt)
    parts: list[bytes] = []
    samples = 0

    def on(uuid: int, value: bytes) -> None:
        nonlocal samples
        if uuid == ftms.TREADMILL_DATA:
            parts.append(value)
            if reader.treadmill_data(value) is not None:
                samples += 1

    transport.set_notify_handler(on)
    await transport.connect()
    for uuid in (ftms.TREADMILL_DATA, ftms.MACHINE_STATUS, ftms.CONTROL_POINT):
        await transport.subscribe(uuid)
    for req in (ftms.RequestControl(), ftms.StartOrResume(), ftms.SetTargetSpeed(6.0)):
        await transport.write(ftms.CONTROL_POINT, ftms.encode_control_point(req))
        await asyncio.sleep(0.3)
    await asyncio.sleep(seconds)
    await transport.close()
    await link.close()
    sim_task.cancel()
    await asyncio.gather(sim_task, return_exceptions=True)
    sent = [v for _, u, v in link.peripheral.sent if u == ftms.TREADMILL_DATA]
    records = sum(1 for v in sent if not v[0] & 0x01)
    # Merge cost: the same records decoded from their parts vs whole (one notification).
    held: list[ftms.TreadmillData] = []
    asm = ftms.TreadmillDataAssembler()
    for p in parts:
        merged = asm.feed(ftms.decode_treadmill_data(p, pace_format=fmt))
        if merged is not None:
            held.append(merged)
    wholes = [ftms.encode_treadmill_data(td, pace_format=fmt) for td in held]
    t0 = time.perf_counter()
    split_reader = ftms.TelemetryReader(pace_format=fmt)
    for p in parts:
        split_reader.treadmill_data(p)
    t_split = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole_reader = ftms.TelemetryReader(pace_format=fmt)
    for w in wholes:
        whole_reader.treadmill_data(w)
    t_whole = time.perf_counter() - t0
    return {
        "records": records, "samples": samples, "parts": len(parts), "sent_parts": len(sent),
        "max_part": max(len(p) for p in parts),
        "split_us": t_split / max(1, len(held)) * 1e6,
        "whole_us": t_whole / max(1, len(wholes)) * 1e6,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    trials = 8 if quick else 40
    results: list[dict[str, Any]] = []
    runs = {
        "in-process": clock.run(_inproc(trials), speedup=SPEEDUP),
        "tcp": clock.run(_tcp(trials), speedup=SPEEDUP),
        "ble (Bumble)": clock.run(_ble(trials), speedup=SPEEDUP),
    }
    base = _pct(runs["in-process"][0], 0.99) * 1000
    for name, (lat, fw) in runs.items():
        p99 = _pct(lat, 0.99) * 1000
        results.append({
            "name": f"fault seen->Stop written p99, {name}",
            "value": round(p99, 3),
            "unit": "ms",
            "baseline": round(base, 3),
            "ratio": round(p99 / base, 2) if base else None,
            "note": f"{len(lat)} trials, p50 {_pct(lat, 0.5) * 1000:.3f} ms; Stop at the "
                    f"firmware p99 {_pct(fw, 0.99) * 1000:.1f} ms link time after the key"
                    " pull" + (f" ({CONNECTION_INTERVAL_MS:g} ms connection events, MTU 23)"
                               if name.startswith("ble") else ""),
        })
    tel = clock.run_virtual(lambda: _telemetry(120.0 if quick else 600.0))
    lost = tel["records"] - tel["samples"]
    results.append({
        "name": "BLE telemetry 10 Hz, MTU 23, split records: lost samples",
        "value": int(lost),
        "unit": "samples",
        "target": 0,
        "met": lost == 0,
        "note": f"{int(tel['records'])} records sent as {int(tel['sent_parts'])} notifications"
                f" (max {int(tel['max_part'])} B), {int(tel['samples'])} merged samples",
    })
    results.append({
        "name": "merge cost per split sample (TelemetryReader)",
        "value": round(tel["split_us"], 2),
        "unit": "us",
        "baseline": round(tel["whole_us"], 2),
        "ratio": round(tel["split_us"] / tel["whole_us"], 2) if tel["whole_us"] else None,
        "note": "baseline = the same merged record decoded whole (one notification)",
    })
    return results


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
