"""Session summary: the numbers a member sees at the end of a run and in ``sessions show``.

Pure function over recorded samples and events, so the recorder, the store (when it closes
or aborts a session) and the exporters all compute it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from treadctl.store.model import Event, Sample
from treadctl.types import KMH_PER_MPS, Direction

# Below this the belt counts as standing (telemetry noise at standstill is ~0.0x km/h).
MOVING_KMH = 0.1


def summarize(
    samples: Sequence[Sample],
    events: Sequence[Event],
    *,
    outcome: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """Totals of a session.

    * ``duration_s``: last recorded session time (samples or events).
    * distances: machine odometer deltas (``distance_m``) attributed to the direction the belt
      was moving; where the odometer is missing or went backwards, speed is integrated.
    * ``reverse_time_s``: time the belt was moving in reverse.
    * ``max_speed_kmh``: highest belt speed in either direction (a magnitude);
      ``max_reverse_speed_kmh`` the highest in reverse.
    * ``segments_completed``: program segments left for a later one, plus the last one when
      the session finished normally (a segment cut short by a stop does not count).
    """
    forward_m = 0.0
    reverse_m = 0.0
    reverse_time_s = 0.0
    max_speed = 0.0
    max_reverse = 0.0
    hr_sum = 0
    hr_n = 0
    hr_max: int | None = None
    segments: set[int] = set()
    prev: Sample | None = None
    for s in samples:
        max_speed = max(max_speed, s.speed_kmh)
        if s.direction == Direction.REVERSE:
            max_reverse = max(max_reverse, s.speed_kmh)
        hr = s.hr_trusted  # not the readings marked unreliable or lost
        if hr is not None:
            hr_sum += hr
            hr_n += 1
            hr_max = hr if hr_max is None else max(hr_max, hr)
        if s.segment is not None and s.segment >= 0:
            segments.add(s.segment)
        if prev is not None:
            dt = s.t_s - prev.t_s
            if dt > 0:
                if (
                    prev.distance_m is not None
                    and s.distance_m is not None
                    and s.distance_m >= prev.distance_m
                ):
                    delta_m = s.distance_m - prev.distance_m
                else:
                    delta_m = (prev.speed_kmh + s.speed_kmh) / 2 / KMH_PER_MPS * dt
                # Direction only changes at standstill, so the earlier sample's direction is
                # the one the belt moved in over this interval.
                if prev.direction == Direction.REVERSE:
                    reverse_m += delta_m
                    if prev.speed_kmh > MOVING_KMH or s.speed_kmh > MOVING_KMH:
                        reverse_time_s += dt
                else:
                    forward_m += delta_m
        prev = s
    last_t = max(
        [s.t_s for s in samples[-1:]] + [e.t_s for e in events[-1:]] + [0.0],
    )
    completed = len(segments) - 1 + (1 if outcome == "finished" else 0)
    return {
        "duration_s": round(last_t, 3),
        "distance_m": round(forward_m + reverse_m, 2),
        "forward_distance_m": round(forward_m, 2),
        "reverse_distance_m": round(reverse_m, 2),
        "reverse_time_s": round(reverse_time_s, 3),
        "max_speed_kmh": round(max_speed, 2),
        "max_reverse_speed_kmh": round(max_reverse, 2),
        "avg_hr_bpm": round(hr_sum / hr_n, 1) if hr_n else None,
        "max_hr_bpm": hr_max,
        "segments_completed": max(completed, 0),
        "outcome": outcome,
        "reason": reason,
    }


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def print_summary(summary: Mapping[str, Any]) -> str:
    """One line summing up a session, e.g. for the last line of ``treadctl run``.

    ``finished · 32:00 · 4.21 km (reverse 0.52 km in 6:00) · max 8.0 km/h, reverse 3.0 km/h
    · HR avg 132 / max 151 bpm · 8 segments completed``
    """

    def num(key: str) -> float:
        value = summary.get(key)
        return float(value) if value is not None else 0.0

    head = str(summary.get("outcome") or "session")
    if summary.get("reason"):
        head += f" ({summary['reason']})"
    parts = [head, format_duration(num("duration_s"))]
    dist = f"{num('distance_m') / 1000:.2f} km"
    if num("reverse_distance_m") > 0 or num("reverse_time_s") > 0:
        dist += (
            f" (reverse {num('reverse_distance_m') / 1000:.2f} km in "
            f"{format_duration(num('reverse_time_s'))})"
        )
    parts.append(dist)
    speed = f"max {num('max_speed_kmh'):.1f} km/h"
    if num("max_reverse_speed_kmh") > 0:
        speed += f", reverse {num('max_reverse_speed_kmh'):.1f} km/h"
    parts.append(speed)
    if summary.get("avg_hr_bpm") is not None:
        parts.append(f"HR avg {num('avg_hr_bpm'):.0f} / max {summary.get('max_hr_bpm')} bpm")
    n = int(num("segments_completed"))
    parts.append(f"{n} segment{'s' if n != 1 else ''} completed")
    return " · ".join(parts)
