"""Simulator speed: a 60-minute forward/reverse program on virtual time, driven by a scripted
host over the Control Point codec (directly, and over the framed link on memory_pipe()).

The figure of merit is the speed-up over real time (virtual seconds / wall seconds): every
test and the default ``treadctl run`` lean on it. Target >= 2000x.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from treadctl.clock import run_virtual
from treadctl.ftms.belt_direction import BeltDirection, encode_belt_direction
from treadctl.ftms.control_point import (
    ControlPointRequest,
    RequestControl,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
    decode_control_point_response,
    encode_control_point,
)
from treadctl.ftms.treadmill_data import decode_treadmill_data
from treadctl.ftms.uuids import BELT_DIRECTION, CONTROL_POINT, TREADMILL_DATA
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill, serve_stream
from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame
from treadctl.transport.stream import memory_pipe

TARGET_SPEEDUP = 2000.0
KEEPALIVE_S = 0.2

# (minutes, speed km/h, reverse, incline %): 60 minutes in all.
PROGRAM: tuple[tuple[float, float, bool, float], ...] = (
    (8, 4.5, False, 0.0),
    (4, 2.5, True, 0.0),
    (8, 7.0, False, 1.0),
    (4, 3.0, True, 2.0),
    (10, 9.0, False, 0.0),
    (5, 3.5, True, 0.0),
    (8, 6.0, False, 3.0),
    (5, 4.0, True, 0.0),
    (8, 5.0, False, 0.0),
)


class _Host:
    """Scripted host: writes setpoints at segment boundaries, waits for each response."""

    def __init__(self, write: Any, alive: Any) -> None:
        self._write = write  # (uuid, value) -> None
        self._alive = alive  # () -> None
        self._responses = 0
        self._event = asyncio.Event()
        self.last_speed_kmh = 0.0
        self.telemetry = 0

    def on_notify(self, uuid: int, value: bytes) -> None:
        if uuid == CONTROL_POINT:
            decode_control_point_response(value)
            self._responses += 1
            self._event.set()
        elif uuid == TREADMILL_DATA:
            td = decode_treadmill_data(value)
            self.last_speed_kmh = td.speed_kmh or 0.0
            self.telemetry += 1
            self._event.set()

    async def _until(self, pred: Any) -> None:
        while not pred():
            self._event.clear()
            await self._event.wait()

    async def command(self, req: ControlPointRequest) -> None:
        n = self._responses
        self._write(CONTROL_POINT, encode_control_point(req))
        await self._until(lambda: self._responses > n)

    def start_keepalive(self) -> asyncio.TimerHandle:
        # A bare timer, not a task: the benchmark measures the simulator, so the scripted
        # host keeps its own per-keepalive overhead as small as it can.
        loop = asyncio.get_running_loop()
        self._alive()
        self._keepalive = loop.call_later(KEEPALIVE_S, self.start_keepalive)
        return self._keepalive

    def stop_keepalive(self) -> None:
        self._keepalive.cancel()

    async def program(self, scale: float) -> None:
        await self.command(RequestControl())
        reverse = False
        for minutes, speed_kmh, rev, incline_pct in PROGRAM:
            if rev != reverse:
                await self.command(StopOrPause(pause=True))
                await self._until(lambda: self.last_speed_kmh == 0.0)  # measured standstill
                self._write(BELT_DIRECTION, encode_belt_direction(BeltDirection(rev)))
                reverse = rev
            await self.command(SetTargetSpeed(speed_kmh))
            await self.command(SetTargetInclination(incline_pct))
            await self.command(StartOrResume())
            await asyncio.sleep(minutes * 60 * scale)
        await self.command(StopOrPause())


def _measure(scale: float, framed: bool) -> dict[str, float]:
    profile = load_profile("treadctl-reference")
    out: dict[str, float] = {}

    async def main() -> None:
        sim = SimTreadmill(profile)
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(sim.run())]
        if framed:
            host_end, dev_end = memory_pipe()
            decoder = FrameDecoder()
            seq = 0

            def send(ftype: FrameType, uuid: int = 0, value: bytes = b"") -> None:
                nonlocal seq
                seq = (seq + 1) & 0xFF
                host_end.write(encode_frame(Frame(ftype, uuid, value, seq)))

            host = _Host(lambda u, v: send(FrameType.WRITE, u, v),
                         lambda: send(FrameType.KEEPALIVE))

            async def pump() -> None:
                while data := await host_end.read():
                    for frame in decoder.feed(data):
                        if frame.type is FrameType.NOTIFY:
                            host.on_notify(frame.uuid, frame.value)

            tasks += [asyncio.create_task(serve_stream(sim, dev_end)),
                      asyncio.create_task(pump())]
        else:
            host = _Host(sim.handle_write, sim.host_alive)
            sim.attach(host.on_notify)
        host.start_keepalive()
        t_virtual0 = sim.now_s()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await host.program(scale)
        out["wall_s"] = time.perf_counter() - wall0
        out["cpu_s"] = time.process_time() - cpu0
        out["virtual_s"] = sim.now_s() - t_virtual0
        out["telemetry"] = host.telemetry
        out["trace"] = len(sim.trace)
        host.stop_keepalive()
        assert not [e for _, e in sim.events if e == "watchdog"]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run_virtual(main)
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Best of several runs (wall time on a shared machine only ever gets worse)."""
    scale = 1 / 6 if quick else 1.0  # quick: the same program compressed to 10 minutes
    repeats = 1 if quick else 3
    label = "10min" if quick else "60min"
    results: list[dict[str, Any]] = []
    for framed in (False, True):
        runs = [_measure(scale, framed) for _ in range(1 if framed else repeats)]
        best_wall = min(runs, key=lambda m: m["wall_s"])
        best_cpu = min(runs, key=lambda m: m["cpu_s"])
        speedup = best_wall["virtual_s"] / best_wall["wall_s"]
        via = "framed link" if framed else "direct"
        row: dict[str, Any] = {
            "name": f"sim {label} program speed-up ({via})",
            "value": round(speedup, 1),
            "unit": "x real time",
        }
        if framed:
            # The target is the simulator's; over the framed link the pure-Python frame
            # codec (CRC + COBS, both ends) dominates and is reported for information.
            row["note"] = "includes encode_frame/FrameDecoder on both ends"
        else:
            row.update(target=TARGET_SPEEDUP, met=speedup >= TARGET_SPEEDUP)
            row["note"] = f"best of {repeats}; wall time, so a busy machine reads low"
        results.append(row)
        results.append({
            "name": f"sim CPU per virtual hour ({via})",
            "value": round(best_cpu["cpu_s"] * 3600 / best_cpu["virtual_s"], 3),
            "unit": "s",
        })
    return results


if __name__ == "__main__":
    for r in run():
        print(r)
