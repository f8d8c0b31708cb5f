"""A realistic synthetic session for store tests and plots (no simulator dependency).

Program: forward warm-up, two reverse walking bouts with a forward run between, backward
uphill walk, then a remote e-stop during the last forward segment. Belt speed follows the
target with a ramp; direction changes happen at standstill after a dwell, like the real
controller (docs/safety.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from treadctl.store.db import SessionStore
from treadctl.store.model import Event, Sample, SessionMeta
from treadctl.store.recorder import SessionRecorder
from treadctl.types import KMH_PER_MPS, Direction

STARTED_AT = datetime(2026, 11, 26, 10, 30, 0, tzinfo=UTC)
HZ = 4

PROGRAM: dict[str, Any] = {
    "name": "reverse-walk-intro",
    "segment": [
        {"duration_s": 120, "speed_kmh": 4.0, "direction": "forward", "incline_pct": 0.0},
        {"duration_s": 60, "speed_kmh": 2.5, "direction": "reverse", "incline_pct": 0.0},
        {"duration_s": 120, "speed_kmh": 6.0, "direction": "forward", "incline_pct": 1.0},
        {"duration_s": 90, "speed_kmh": 3.0, "direction": "reverse", "incline_pct": 4.0},
        {"duration_s": 180, "speed_kmh": 8.0, "direction": "forward", "incline_pct": 0.0},
    ],
}

META = SessionMeta(
    treadmill_id="lane-1",
    device="sim://?profile=treadctl-reference",
    profile="treadctl-reference",
    program_name="reverse-walk-intro",
    program=PROGRAM,
    started_at=STARTED_AT,
)

ESTOP_AT_S = 480.0  # during the last forward segment


def synthetic_session(estop: bool = True) -> tuple[list[Sample], list[Event]]:
    accel = 1.0  # km/h per second
    incline_rate = 0.5  # % per second
    dt = 1 / HZ
    samples: list[Sample] = []
    events: list[Event] = [Event(t_s=0.0, type="state", data={"state": "starting"})]
    t = 0.0
    speed = 0.0
    incline = 0.0
    distance = 0.0
    hr = 78.0
    direction = Direction.FORWARD
    dwell_until = -1.0
    seg_start = 0.0
    estopped = False
    seg_index = 0
    events.append(Event(t_s=0.0, type="segment", data={"index": 0, **PROGRAM["segment"][0]}))
    while True:
        seg = PROGRAM["segment"][seg_index]
        if not estopped and t >= seg_start + seg["duration_s"]:
            seg_start += seg["duration_s"]
            seg_index += 1
            if seg_index >= len(PROGRAM["segment"]):
                break
            seg = PROGRAM["segment"][seg_index]
            events.append(Event(t_s=t, type="segment", data={"index": seg_index, **seg}))
        if estop and not estopped and t >= ESTOP_AT_S:
            estopped = True
            events.append(Event(t_s=t, type="command", data={"command": "estop", "source": "mqtt"}))
            events.append(
                Event(
                    t_s=t,
                    type="estop",
                    data={"reason": "remote e-stop (front desk)", "source": "mqtt"},
                )
            )
        want_dir = Direction(seg["direction"])
        state = "estopped" if estopped else "running"
        if estopped:
            target = 0.0
            target_incline = incline
        elif want_dir != direction:
            target = 0.0  # stop, dwell, switch, confirm, then accelerate
            target_incline = seg["incline_pct"]
            if speed == 0.0:
                if dwell_until < 0:
                    dwell_until = t + 3.0
                elif t >= dwell_until:
                    direction = want_dir
                    dwell_until = -1.0
                    events.append(Event(t_s=t, type="state", data={"direction": str(direction)}))
        else:
            target = seg["speed_kmh"]
            target_incline = seg["incline_pct"]
        step = accel * dt * (2.0 if estopped else 1.0)
        speed = min(target, speed + step) if speed < target else max(target, speed - step)
        speed = round(speed, 4)
        if incline < target_incline:
            incline = min(target_incline, incline + incline_rate * dt)
        else:
            incline = max(target_incline, incline - incline_rate * dt)
        distance += speed / KMH_PER_MPS * dt
        effort = speed * (1.35 if direction == Direction.REVERSE else 1.0) + incline * 1.5
        hr += (75 + effort * 9 - hr) * 0.02
        measured = speed + (0.03 * math.sin(t * 1.7) if speed > 0.2 else 0.0)
        samples.append(
            Sample(
                t_s=round(t, 3),
                target_speed_kmh=target,
                speed_kmh=round(max(measured, 0.0), 3),
                direction=direction,
                incline_pct=round(incline, 2),
                target_incline_pct=target_incline,
                distance_m=round(distance, 2),
                hr_bpm=round(hr),
                state=state,
                segment=seg_index,
            )
        )
        if estopped and speed == 0.0 and t > ESTOP_AT_S + 2:
            break
        t += dt
    return samples, events


def record(store: SessionStore, estop: bool = True) -> str:
    """Record the synthetic session through the real recorder; return its id."""
    samples, events = synthetic_session(estop)
    rec = SessionRecorder.start(store, META)
    for s in samples:
        rec.record_sample(s)
    for e in events:
        rec.record_event(e)
    if estop:
        rec.finish("estopped", "remote e-stop (front desk)")
    else:
        rec.finish("finished")
    return rec.session_id
