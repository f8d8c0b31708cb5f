"""Control-core timings (issue 4): fault to stop-on-the-wire latency, loop tick jitter at
10 and 50 Hz, CPU of one running session, and a whole session on virtual time.

* fault -> stop: a Treadmill Data frame showing overspeed is put on the host's link (an
  in-memory byte pipe; the "firmware" end is this benchmark), timed until the Stop frame is
  written back. Baseline in the same run: the same frame delivered to a no-op handler
  (the link + decode floor every notification pays).
* jitter: the controller's tick loop on real time during a session against a simulator in
  a separate process (TCP), vs a bare ``asyncio.sleep`` loop at the same period.
* CPU: process CPU of the controller process during that session (the simulator is the
  other process and not counted), as % of one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import subprocess
import sys
import time
from typing import Any

from treadctl import clock, ftms
from treadctl.control.controller import Controller
from treadctl.limits import effective_limits
from treadctl.profiles import load_profile
from treadctl.programs.model import program_from_dict
from treadctl.transport.framed import FramedTransport
from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame
from treadctl.transport.stream import memory_pipe

PROFILE = load_profile("treadctl-reference")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- fault -> stop
async def _fault_to_stop(trials: int) -> tuple[list[float], list[float]]:
    host, device = memory_pipe()
    transport = FramedTransport(lambda: _ready(host), "bench")
    ctl = Controller(transport, PROFILE, tick_hz=10)
    await transport.connect()
    transport.set_notify_handler(ctl.client.on_notification)
    stop = ftms.encode_control_point(ftms.StopOrPause(pause=False))
    decoder = FrameDecoder()
    fast = encode_frame(
        Frame(
            FrameType.NOTIFY,
            ftms.TREADMILL_DATA,
            ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=9.0)),
        )
    )
    calm = encode_frame(
        Frame(
            FrameType.NOTIFY,
            ftms.TREADMILL_DATA,
            ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=0.0)),
        )
    )
    # Arm the telemetry interlocks as during a session cruising at 5 km/h.
    ctl.arm_without_session(effective_limits(PROFILE))
    latencies: list[float] = []
    floor: list[float] = []
    loop = asyncio.get_running_loop()
    for _ in range(trials):
        # Clear the last trial's latch and arm the interlocks (the safety machine's own
        # inputs; motion blocking follows its latch).
        ctl.machine.reset(session_ending=False, speed_kmh=None, telemetry_age_s=math.inf)
        ctl.commanded_kmh = 5.0
        ctl.machine.arm()
        got = loop.create_future()

        async def wait_stop(fut: asyncio.Future[float] = got) -> None:
            while True:
                data = await device.read()
                for frame in decoder.feed(data):
                    if frame.type is FrameType.WRITE:
                        # Answer like a firmware would, so no request stays in flight.
                        device.write(
                            encode_frame(
                                Frame(FrameType.WRITE_RESPONSE, frame.uuid, b"\x00", frame.seq)
                            )
                        )
                    if frame.type is FrameType.WRITE and frame.value == stop:
                        if not fut.done():
                            fut.set_result(time.perf_counter())
                        return

        waiter = loop.create_task(wait_stop())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        device.write(fast)
        # The controller's part ends when its stop frame is written to the link; the pipe
        # hop back to this task costs one more loop pass, measured below as part of the floor.
        t_end = await got
        latencies.append(t_end - t0)
        waiter.cancel()
        if ctl.escalation_task is not None:
            ctl.escalation_task.cancel()
        device.write(calm)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Floor: the same frame, same pipe, to a handler that only echoes a frame back.
        echo = loop.create_future()
        transport.set_notify_handler(
            lambda u, v, f=echo: (
                host.write(encode_frame(Frame(FrameType.WRITE, 0, stop))),
                f.done() or f.set_result(None),
            )
        )
        got2 = loop.create_future()
        waiter2 = loop.create_task(wait_stop(got2))
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        device.write(fast)
        floor.append(await got2 - t0)
        waiter2.cancel()
        transport.set_notify_handler(ctl.client.on_notification)
    await ctl.close()  # never opened: no loop tasks; closes the link
    return latencies, floor


async def _ready(stream: Any) -> Any:
    return stream


# --------------------------------------------------------------------------- jitter + CPU
async def _session_timing(tick_hz: float, seconds: float, port: int) -> dict[str, float]:
    from treadctl.transport import open_transport

    ctl = Controller(
        open_transport(f"tcp://127.0.0.1:{port}", profile=PROFILE), PROFILE, tick_hz=tick_hz
    )
    ticks: list[float] = []
    ctl.tick_listeners.append(lambda now: ticks.append(time.perf_counter()))
    await ctl.open()
    prog = program_from_dict(
        {
            "name": "bench",
            "segment": [{"duration_s": seconds + 30, "speed_kmh": 5.0, "direction": "forward"}],
        },
        "bench",
    )
    task = ctl.start(prog)
    await asyncio.sleep(5)  # past the ramp
    ticks.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await ctl.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    await ctl.close()
    period = 1.0 / tick_hz
    jitter = [abs((b - a) - period) for a, b in itertools.pairwise(ticks)]
    return {
        "p50": _pct(jitter, 0.5),
        "p99": _pct(jitter, 0.99),
        "cpu_pct": 100 * cpu / wall,
        "n": len(jitter),
    }


async def _bare_jitter(tick_hz: float, seconds: float) -> float:
    period = 1.0 / tick_hz
    loop = asyncio.get_running_loop()
    times: list[float] = []
    next_t = loop.time()
    end = next_t + seconds
    while loop.time() < end:
        next_t += period
        await asyncio.sleep(max(0.0, next_t - loop.time()))
        times.append(time.perf_counter())
    return _pct([abs((b - a) - period) for a, b in itertools.pairwise(times)], 0.99)


def _start_sim() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadctl", "sim", "--listen", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, int(line.rsplit(":", 1)[1])


def _virtual_session() -> tuple[float, float]:
    """A 60-minute program, controller + in-process simulator, on virtual time."""
    segs = []
    for i in range(12):
        reverse = i % 2 == 1
        segs.append(
            {
                "duration_s": 300,
                "speed_kmh": 3.0 if reverse else 6.0,
                "direction": "reverse" if reverse else "forward",
            }
        )
    prog = program_from_dict({"name": "hour", "segment": segs}, "bench")

    async def main() -> float:
        from treadctl.transport.sim import SimTransport

        ctl = Controller(SimTransport(PROFILE), PROFILE)
        await ctl.open()
        result = await ctl.start(prog)
        await ctl.close()
        return result.elapsed_s

    t0 = time.perf_counter()
    virtual = clock.run(main(), speedup=None)
    return virtual, time.perf_counter() - t0


def run(quick: bool = False) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    trials = 200 if quick else 2000
    lat, floor = clock.run(_fault_to_stop(trials), speedup=1)
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        ours, base = _pct(lat, q) * 1000, _pct(floor, q) * 1000
        results.append(
            {
                "name": f"fault->stop on the wire {name}",
                "value": round(ours, 4),
                "unit": "ms",
                "baseline": round(base, 4),
                "ratio": round(ours / base, 2) if base else None,
                **({"target": 1.0, "met": ours <= 1.0} if name == "p99" else {}),
                "note": f"{trials} trials; baseline = same frame, link + echo handler only",
            }
        )
    proc, port = _start_sim()
    try:
        for hz, secs in ((10.0, 10 if quick else 30), (50.0, 5 if quick else 12)):
            timing = clock.run(_session_timing(hz, secs, port), speedup=1)
            bare = clock.run(_bare_jitter(hz, secs), speedup=1)
            results.append(
                {
                    "name": f"loop tick jitter p99 @ {hz:g} Hz",
                    "value": round(timing["p99"] * 1000, 3),
                    "unit": "ms",
                    "baseline": round(bare * 1000, 3),
                    "ratio": round(timing["p99"] / bare, 2) if bare else None,
                    "target": 2.0,
                    "met": timing["p99"] * 1000 <= 2.0,
                    "note": f"{timing['n']} ticks; baseline = bare asyncio.sleep loop",
                }
            )
            results.append(
                {
                    "name": f"CPU per running session @ {hz:g} Hz",
                    "value": round(timing["cpu_pct"], 2),
                    "unit": "% of one core",
                    "target": 2.0,
                    "met": timing["cpu_pct"] <= 2.0,
                    "note": "controller process only (simulator in its own process over TCP)",
                }
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    virtual, wall = _virtual_session()
    results.append(
        {
            "name": "60-min session, controller + sim, virtual time",
            "value": round(virtual / wall),
            "unit": "x real time",
            "note": f"{virtual:.0f} s session in {wall:.2f} s wall",
        }
    )
    return results


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
