"""Value types of the session store: what a session, a sample and an event look like.

Kept free of I/O so the recorder, the exporters, the plots and the CLI share one
definition. Units are in the field names; speeds are magnitudes and ``direction`` says
which way the belt moved (``signed_speed_kmh`` is negative in reverse).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from treadctl.types import Direction


class Outcome(enum.StrEnum):
    """How a session ended (``running`` while it is still being recorded)."""

    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    ESTOPPED = "estopped"
    ABORTED = "aborted"
    ERROR = "error"


class EventType(enum.StrEnum):
    """Event types the store knows how to draw and summarise; others are stored as given."""

    SEGMENT = "segment"  # data: {"index", "direction", "speed_kmh", "incline_pct", ...}
    STATE = "state"  # data: {"state", "reason"?}
    COMMAND = "command"  # data: {"command", "source"?, "request_id"?, ...}
    INTERLOCK = "interlock"  # data: {"interlock", "reason", ...} — tripped a latch
    ESTOP = "estop"  # data: {"reason", "source"?}
    FAULT = "fault"  # data: {"fault", "reason"?}


#: Event types drawn as red vertical lines on plots (safety-relevant).
ALARM_EVENT_TYPES = frozenset({EventType.INTERLOCK, EventType.ESTOP, EventType.FAULT})


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One telemetry sample of a session. ``t_s`` is elapsed session time (loop clock).

    ``ts`` may be left ``None`` when recording: the store derives it from the session's
    ``started_at`` + ``t_s``, which keeps the control loop's hot path cheap.
    """

    t_s: float
    speed_kmh: float
    direction: Direction = Direction.FORWARD
    target_speed_kmh: float = 0.0
    incline_pct: float = 0.0
    target_incline_pct: float = 0.0
    distance_m: float | None = None
    hr_bpm: int | None = None
    state: str = "running"
    segment: int | None = None
    ts: datetime | None = None
    #: Where ``hr_bpm`` came from (``"strap"`` | ``"treadmill"``) and its plausibility
    #: (``"good"`` | ``"unreliable"`` | ``"lost"``), docs/heart-rate.md; None = unknown
    #: (no HR source, or recorded before these were stored).
    hr_source: str | None = None
    hr_quality: str | None = None

    @property
    def hr_trusted(self) -> int | None:
        """``hr_bpm`` if it is a heart rate to show and export: 1..254 bpm and not marked
        unreliable or lost (unknown quality, as in old recordings, counts as trusted)."""
        hr = self.hr_bpm
        if hr is None or not 0 < hr < 255 or self.hr_quality not in (None, "good"):
            return None
        return hr

    # A standing reverse belt is 0.0, not -0.0 (which prints as "-0.00").
    @property
    def signed_speed_kmh(self) -> float:
        reverse = self.direction == Direction.REVERSE and self.speed_kmh != 0
        return -self.speed_kmh if reverse else self.speed_kmh

    @property
    def signed_target_speed_kmh(self) -> float:
        reverse = self.direction == Direction.REVERSE and self.target_speed_kmh != 0
        return -self.target_speed_kmh if reverse else self.target_speed_kmh


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened during a session (segment change, interlock, command...)."""

    t_s: float
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    ts: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionMeta:
    """What is known when a session starts (argument of ``SessionStore.create_session``)."""

    treadmill_id: str = "local"
    device: str = ""
    profile: str = ""
    program_name: str = ""
    program: Mapping[str, Any] | None = None
    started_at: datetime | None = None  # default: now (UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """A stored session (row of the ``sessions`` table, decoded)."""

    id: str
    treadmill_id: str
    device: str
    profile: str
    program_name: str
    program: Mapping[str, Any] | None
    started_at: datetime
    ended_at: datetime | None
    outcome: Outcome
    reason: str
    summary: Mapping[str, Any] | None
    sample_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "treadmill_id": self.treadmill_id,
            "device": self.device,
            "profile": self.profile,
            "program_name": self.program_name,
            "program": dict(self.program) if self.program is not None else None,
            "started_at": iso_utc(self.started_at),
            "ended_at": iso_utc(self.ended_at) if self.ended_at else None,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "summary": dict(self.summary) if self.summary is not None else None,
            "sample_count": self.sample_count,
        }


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_utc(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` — sortable as text, accepted by TCX."""
    naive = as_utc(value).replace(tzinfo=None)
    return naive.isoformat(timespec="milliseconds") + "Z"


def parse_iso(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))


def ts_at(started_at: datetime, t_s: float) -> datetime:
    return as_utc(started_at) + timedelta(seconds=t_s)
