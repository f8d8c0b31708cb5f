"""Heart-rate benchmarks (docs/heart-rate.md, docs/benchmarks.md). Baselines in the same run.

``hr.supervisor.cpu_per_lane``
    What one lane's heart rate costs the control loop per second of session, through
    :class:`treadctl.hr.supervisor.HRSupervisor` as the controller will call it: one strap
    notification (raw 0x2A37 bytes: decode, filter, source choice), ten control ticks
    (workload, dropout check; the governor runs once a second) in a governed reverse walk
    with spikes and a dropout. CPU time (``process_time``), best of several runs, as a
    share of one core. Target < 0.1 %. Baseline: the bare pieces (decode + filter +
    filter tick + governor, once a second, no supervisor), so ``ratio`` is what the
    supervisor's plumbing costs on top.
``hr.notify_to_filtered.p99``
    From a strap notification entering the BLE source's callback (``StrapSource._notified``,
    what bleak calls) to the filtered value being in the supervisor's status for the
    interlock (``sup.strap(bytes, now).interlock_bpm``), per notification, wall time, p99.
    The radio and BlueZ are not in it (not ours to measure). Target <= 1 ms. Baseline: the
    same callback into a consumer that only keeps the bytes.
``hr.governed_reverse.settle_s`` / ``.overshoot_bpm`` / ``.max_step_kmh_per_s``
    Issue 14's targets on the simulator's heart model: a governed reverse walk (zone
    100-110 bpm, 2.0-5.5 km/h, start 3.0 km/h, default person, belt following at the
    0.9 km/h/s reverse ramp, control ticks every 0.25 s) through the supervisor: the time
    from the segment's start after which the heart stays in the zone (target <= 180 s), the
    highest heart rate above the zone (target <= 8 bpm) and the largest belt speed change
    per second (target <= the 0.9 km/h/s ramp). Baseline: a fixed setpoint that already
    knows the answer (the speed the governor settles at, from the start): how fast the
    first-order heart gets there with no controller at all.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Any

from treadctl.hr.codec import decode_heart_rate_measurement
from treadctl.hr.filter import HRFilter
from treadctl.hr.governor import Governor, GovernorLimits
from treadctl.hr.strap import StrapSource
from treadctl.hr.supervisor import HRSupervisor
from treadctl.hr.workload import met
from treadctl.limits import effective_limits
from treadctl.profiles import load_profile
from treadctl.programs.model import Segment
from treadctl.simulator.heart import HeartModel, SimStrap
from treadctl.types import Direction

CPU_TARGET_PCT = 0.1
LATENCY_TARGET_MS = 1.0
SETTLE_TARGET_S = 180.0
OVERSHOOT_TARGET_BPM = 8.0
RAMP_KMH_PER_S = 0.9  # 0.25 m/s^2, treadctl-reference's reverse ramps
ZONE = (100.0, 110.0)
TICKS_PER_S = 10
REV = Direction.REVERSE
SEGMENT = Segment(duration_s=1200, speed_kmh=3.0, direction=REV, hr_zone_bpm=ZONE,
                  min_speed_kmh=2.0, max_speed_kmh=5.5)
LIMITS = effective_limits(load_profile("treadctl-reference"))


def _session(seconds: int) -> list[tuple[float, bytes | None, float]]:
    """A governed reverse walk on the heart model: (t, notification, belt km/h) per second,
    with a minute of spikes and a 10 s dropout."""
    belt = [0.0]
    strap = SimStrap(lambda: (belt[0], 0.0, REV), model=HeartModel(),
                     faults="spike@300+60,dropout@600+10")
    gov = Governor(ZONE, GovernorLimits(2.0, 5.5), 3.0)
    filt = HRFilter()
    out = []
    for k in range(1, seconds + 1):
        t = float(k)
        raw = strap.sample(t)
        w = met(belt[0], 0.0, REV)
        r = filt.update(decode_heart_rate_measurement(raw), t, w) if raw else filt.tick(t, w)
        g = gov.update(t, r)
        out.append((t, raw, belt[0]))
        belt[0] += max(-RAMP_KMH_PER_S, min(RAMP_KMH_PER_S, g.speed_kmh - belt[0]))
    return out


def _cpu_bare(session: list[tuple[float, bytes | None, float]], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        filt = HRFilter()
        gov = Governor(ZONE, GovernorLimits(2.0, 5.5), 3.0)
        start = time.process_time()
        for t, raw, belt in session:
            w = met(belt, 0.0, REV)
            if raw is not None:
                filt.update(decode_heart_rate_measurement(raw), t, w)
            gov.update(t + 0.5, filt.tick(t + 0.5, w))
        best = min(best, (time.process_time() - start) / len(session))
    return best * 100.0


def _cpu_supervisor(session: list[tuple[float, bytes | None, float]], repeats: int) -> float:
    best = float("inf")
    dt = 1.0 / TICKS_PER_S
    for _ in range(repeats):
        sup = HRSupervisor(strap_bound=True)
        sup.begin_segment(SEGMENT, LIMITS, 0.0)
        start = time.process_time()
        for t, raw, belt in session:
            if raw is not None:
                sup.strap(raw, t)
            for k in range(TICKS_PER_S):
                sup.tick(t + k * dt, belt, 0.0, REV)
        best = min(best, (time.process_time() - start) / len(session))
    return best * 100.0


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def _latencies(session: list[tuple[float, bytes | None, float]], repeats: int,
               bare: bool) -> list[float]:
    clock = _Clock()
    src = StrapSource("AA:BB:CC:DD:EE:FF")
    out: list[float] = []
    for _ in range(repeats):
        sup = HRSupervisor(strap_bound=True)
        sup.begin_segment(SEGMENT, LIMITS, clock.t)
        kept: list[bytes] = []
        if bare:
            src._on_value = kept.append  # what start() wires, without a radio
        else:
            def consume(value: bytes, sup: HRSupervisor = sup) -> None:
                sup.strap(value, clock.now())

            src._on_value = consume
        for _t, raw, belt in session:
            clock.t += 1.0
            sup.tick(clock.t - 0.5, belt, 0.0, REV)
            if raw is None:
                continue
            data = bytearray(raw)
            t0 = time.perf_counter_ns()
            src._notified(None, data)  # bleak's notification callback
            t1 = time.perf_counter_ns()
            if not bare:
                assert sup.status.t == clock.t  # the reading is in the status
            out.append((t1 - t0) / 1e6)
    return out


@dataclass
class _Walk:
    t: list[float]
    belt: list[float]
    hr: list[float]
    final_speed_kmh: float


def governed_walk(seconds: float = 900, fixed_kmh: float | None = None) -> _Walk:
    """The governed reverse walk of the module docstring (or, with ``fixed_kmh``, the same
    walk at a fixed setpoint), sampled every control tick."""
    dt = 0.25
    belt = [0.0]
    model = HeartModel()
    strap = SimStrap(lambda: (belt[0], 0.0, REV), model=model)
    sup = HRSupervisor(strap_bound=True)
    status = sup.begin_segment(SEGMENT, LIMITS, 0.0)
    walk = _Walk([], [], [], 0.0)
    t = 0.0
    for _ in range(round(seconds / dt)):
        t = round(t + dt, 9)
        goal = fixed_kmh if fixed_kmh is not None else (status.wanted_speed_kmh or 0.0)
        step = RAMP_KMH_PER_S * dt
        belt[0] = goal if abs(goal - belt[0]) <= step else belt[0] + (
            step if goal > belt[0] else -step)
        strap.advance(t)
        if abs(t - round(t)) < 1e-9:
            raw = strap.sample(t)
            if raw is not None:
                sup.strap(raw, t)
        status = sup.tick(t, belt[0], 0.0, REV)
        walk.t.append(t)
        walk.belt.append(belt[0])
        walk.hr.append(model.hr_bpm)
    walk.final_speed_kmh = belt[0]
    return walk


def settle_numbers(w: _Walk) -> dict[str, float | None]:
    """Settle time (None: not in the zone at the end), overshoot, largest belt step."""
    outside = [t for t, hr in zip(w.t, w.hr, strict=True) if not ZONE[0] <= hr <= ZONE[1]]
    settled: float | None = max(outside) if outside else 0.0
    if settled is not None and settled >= w.t[-1]:
        settled = None
    belt = [0.0, *w.belt]
    per_s = max(abs(b - a) for a, b in itertools.pairwise(belt)) / 0.25
    return {"settled_s": settled, "overshoot_bpm": max(0.0, max(w.hr) - ZONE[1]),
            "max_step_kmh_per_s": per_s, "max_hr_bpm": max(w.hr)}


def run(quick: bool = False) -> list[dict[str, Any]]:
    session = _session(300 if quick else 1200)
    repeats = 3 if quick else 10
    cpu_bare = _cpu_bare(session, repeats)
    cpu_sup = _cpu_supervisor(session, repeats)
    lat = sorted(_latencies(session, 3 if quick else 20, bare=False))
    lat0 = sorted(_latencies(session, 3 if quick else 20, bare=True))

    def p99(xs: list[float]) -> float:
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))]

    gov = governed_walk(600 if quick else 900)
    n = settle_numbers(gov)
    oracle = settle_numbers(governed_walk(600 if quick else 900, fixed_kmh=gov.final_speed_kmh))
    settled = n["settled_s"]
    base_settle = oracle["settled_s"]
    return [
        {"name": "hr.supervisor.cpu_per_lane", "value": cpu_sup, "unit": "% of a core",
         "baseline": cpu_bare, "ratio": round(cpu_sup / cpu_bare, 2) if cpu_bare else None,
         "target": CPU_TARGET_PCT, "met": cpu_sup < CPU_TARGET_PCT,
         "note": f"1 strap notification + {TICKS_PER_S} ticks per session second, best of "
                 f"{repeats} runs over {len(session)} s; baseline: decode + filter + tick + "
                 "governor at 1 Hz without the supervisor"},
        {"name": "hr.notify_to_filtered.p99", "value": p99(lat), "unit": "ms",
         "baseline": p99(lat0), "ratio": round(p99(lat) / p99(lat0), 2) if p99(lat0) else None,
         "target": LATENCY_TARGET_MS, "met": p99(lat) <= LATENCY_TARGET_MS,
         "note": f"bleak callback -> sup.strap() status; p50 {statistics.median(lat) * 1000:.1f}"
                 f" us, max {lat[-1] * 1000:.1f} us over {len(lat)} notifications; baseline: "
                 "the callback into a consumer that only keeps the bytes"},
        {"name": "hr.governed_reverse.settle_s", "value": settled, "unit": "s",
         "baseline": base_settle,
         "ratio": round(settled / base_settle, 2) if settled and base_settle else None,
         "target": SETTLE_TARGET_S, "met": settled is not None and settled <= SETTLE_TARGET_S,
         "note": f"in the {ZONE[0]:.0f}-{ZONE[1]:.0f} bpm zone from then on; settles at "
                 f"{gov.final_speed_kmh:.1f} km/h backward; baseline: fixed "
                 f"{gov.final_speed_kmh:.1f} km/h from the start (knowing the answer)"},
        {"name": "hr.governed_reverse.overshoot_bpm", "value": n["overshoot_bpm"],
         "unit": "bpm", "baseline": oracle["overshoot_bpm"],
         "target": OVERSHOOT_TARGET_BPM,
         "met": (n["overshoot_bpm"] or 0.0) <= OVERSHOOT_TARGET_BPM,
         "note": f"highest heart rate above the zone's top (0 = never above): "
                 f"{n['max_hr_bpm']:.1f} bpm against the top of {ZONE[1]:.0f}"},
        {"name": "hr.governed_reverse.max_step_kmh_per_s", "value": n["max_step_kmh_per_s"],
         "unit": "km/h per s", "baseline": oracle["max_step_kmh_per_s"],
         "target": RAMP_KMH_PER_S,
         "met": (n["max_step_kmh_per_s"] or 0.0) <= RAMP_KMH_PER_S + 1e-9,
         "note": "largest belt speed change per second (the initial ramp from standstill "
                 "included); the governor's own steps are 0.1 km/h at most once a second"},
    ]
