"""Cutting a recorded session into segment spans (laps) and a running distance.

Shared by the exporters (one TCX/FIT lap per segment) and the plots (shaded segments), so
a lap in Garmin Connect and a band on the PNG always cover the same time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from treadctl.store.model import Sample
from treadctl.store.summary import MOVING_KMH
from treadctl.types import KMH_PER_MPS, Direction


@dataclass(frozen=True, slots=True)
class Span:
    """Samples ``[start, stop)`` that belong to one program segment (``index`` 0-based,
    ``None`` for samples outside any segment, e.g. manual control)."""

    index: int | None
    direction: Direction
    start: int
    stop: int
    t_start_s: float
    t_end_s: float  # start of the next span, or the last sample of the session
    target_speed_kmh: float
    target_incline_pct: float

    @property
    def duration_s(self) -> float:
        return max(self.t_end_s - self.t_start_s, 0.0)

    @property
    def label(self) -> str:
        """Human label, 1-based: ``"3 · reverse 2.5 km/h"``."""
        head = f"{self.index + 1}" if self.index is not None else "manual"
        return f"{head} · {self.direction} {self.target_speed_kmh:.1f} km/h"


def cumulative_distance_m(samples: Sequence[Sample]) -> list[float]:
    """Belt travel since the first sample (both directions add up), from the odometer where
    it is present and increasing, integrated from speed elsewhere (same rule as summarize)."""
    out: list[float] = []
    total = 0.0
    prev: Sample | None = None
    for s in samples:
        if prev is not None and s.t_s > prev.t_s:
            if (
                prev.distance_m is not None
                and s.distance_m is not None
                and s.distance_m >= prev.distance_m
            ):
                total += s.distance_m - prev.distance_m
            else:
                total += (prev.speed_kmh + s.speed_kmh) / 2 / KMH_PER_MPS * (s.t_s - prev.t_s)
        out.append(total)
        prev = s
    return out


def program_segments(program: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The segment list of a stored program (TOML ``[[segment]]`` or JSON ``segments``)."""
    if not program:
        return []
    segs = program.get("segment", program.get("segments"))
    return [s for s in segs if isinstance(s, Mapping)] if isinstance(segs, list) else []


def segment_spans(
    samples: Sequence[Sample], program: Mapping[str, Any] | None = None
) -> list[Span]:
    """Contiguous runs of samples with the same segment index.

    A segment's direction comes from the program when it is known, otherwise from where
    the belt spent most of its moving time in the span (a reverse segment begins with the
    forward belt slowing down, so the first sample's direction is not the answer).
    """
    segs = program_segments(program)
    spans: list[Span] = []
    n = len(samples)
    start = 0
    while start < n:
        index = samples[start].segment
        stop = start + 1
        while stop < n and samples[stop].segment == index:
            stop += 1
        chunk = samples[start:stop]
        t_end = samples[stop].t_s if stop < n else samples[-1].t_s
        direction: Direction | None = None
        if index is not None and 0 <= index < len(segs):
            try:
                direction = Direction(str(segs[index].get("direction", "forward")))
            except ValueError:
                direction = None
        if direction is None:
            rev = sum(
                1 for s in chunk if s.direction == Direction.REVERSE and s.speed_kmh > MOVING_KMH
            )
            fwd = sum(
                1 for s in chunk if s.direction == Direction.FORWARD and s.speed_kmh > MOVING_KMH
            )
            direction = Direction.REVERSE if rev > fwd else Direction.FORWARD
        spans.append(
            Span(
                index=index,
                direction=direction,
                start=start,
                stop=stop,
                t_start_s=chunk[0].t_s,
                t_end_s=t_end,
                target_speed_kmh=max(s.target_speed_kmh for s in chunk),
                target_incline_pct=max(
                    chunk, key=lambda s: abs(s.target_incline_pct)
                ).target_incline_pct,
            )
        )
        start = stop
    return spans
