"""Heart-rate benchmarks (docs/heart-rate.md, docs/benchmarks.md).

``hr.governor.cpu_per_lane``
    What one governed lane costs per second of session: one strap notification decoded and
    filtered, one filter tick and one governor update (the control core's 1 Hz HR step),
    timed over a simulated 20-minute governed reverse walk; reported as a share of one core.
    Target < 0.1 %.
``hr.notify_to_filtered.p99``
    From a strap notification entering the BLE source's callback (``StrapSource._notified``,
    what bleak calls) to the filtered reading being in ``HRFeed.latest`` for the interlock:
    p99 over recorded notifications of the same session, per notification, wall time. The
    radio and BlueZ are not in it (they are not ours to measure here). Target <= 1 ms.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from treadctl.hr.codec import decode_heart_rate_measurement
from treadctl.hr.filter import HRFilter
from treadctl.hr.governor import Governor, GovernorLimits
from treadctl.hr.strap import HRFeed, StrapSource
from treadctl.hr.workload import met
from treadctl.simulator.heart import HeartModel, SimStrap
from treadctl.types import Direction

CPU_TARGET_PCT = 0.1
LATENCY_TARGET_MS = 1.0


def _session(seconds: int) -> list[tuple[float, bytes | None, float]]:
    """A governed reverse walk on the heart model: (t, notification, workload) per second."""
    belt = [0.0]
    model = HeartModel()
    strap = SimStrap(lambda: (belt[0], 0.0, Direction.REVERSE), model=model,
                     faults="spike@300+60,dropout@600+10")
    gov = Governor((100, 110), GovernorLimits(2.0, 5.5), 3.0)
    filt = HRFilter()
    out = []
    for k in range(1, seconds + 1):
        t = float(k)
        raw = strap.sample(t)
        w = met(belt[0], 0.0, Direction.REVERSE)
        r = filt.update(decode_heart_rate_measurement(raw), t, w) if raw else filt.tick(t, w)
        g = gov.update(t, r)
        belt[0] += max(-0.9, min(0.9, g.speed_kmh - belt[0]))
        out.append((t, raw, w))
    return out


def _cpu_per_lane(session: list[tuple[float, bytes | None, float]], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        filt = HRFilter()
        gov = Governor((100, 110), GovernorLimits(2.0, 5.5), 3.0)
        start = time.process_time()
        for t, raw, w in session:
            if raw is not None:
                filt.update(decode_heart_rate_measurement(raw), t, w)
            r = filt.tick(t + 0.5, w)
            gov.update(t + 0.5, r)
        elapsed = time.process_time() - start
        best = min(best, elapsed / len(session))  # CPU seconds per session second
    return best * 100.0


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def _latencies(session: list[tuple[float, bytes | None, float]], repeats: int) -> list[float]:
    clock = _Clock()
    src = StrapSource("AA:BB:CC:DD:EE:FF")
    workload = [1.0]
    feed = HRFeed(src, clock=clock, workload=lambda: workload[0])  # type: ignore[arg-type]
    src._on_value = feed.handle  # what start() wires, without a radio
    out: list[float] = []
    for _ in range(repeats):
        for _t, raw, w in session:
            if raw is None:
                continue
            clock.t += 1.0
            workload[0] = w
            data = bytearray(raw)
            t0 = time.perf_counter_ns()
            src._notified(None, data)  # bleak's notification callback
            assert feed.latest is not None and feed.latest.t == clock.t
            out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    session = _session(300 if quick else 1200)
    cpu = _cpu_per_lane(session, 3 if quick else 10)
    lat = sorted(_latencies(session, 3 if quick else 20))
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return [
        {"name": "hr.governor.cpu_per_lane", "value": cpu, "unit": "% of a core",
         "target": CPU_TARGET_PCT, "met": cpu < CPU_TARGET_PCT,
         "note": f"decode + filter + tick + governor per session second, best of runs over "
                 f"{len(session)} s"},
        {"name": "hr.notify_to_filtered.p99", "value": p99, "unit": "ms",
         "target": LATENCY_TARGET_MS, "met": p99 <= LATENCY_TARGET_MS,
         "note": f"p50 {statistics.median(lat) * 1000:.1f} us, max {lat[-1] * 1000:.1f} us "
                 f"over {len(lat)} notifications"},
    ]
