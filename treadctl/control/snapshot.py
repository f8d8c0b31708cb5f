"""What the outside world sees of a controller, and the recorder interface it writes to.

``Snapshot`` is a published view (MQTT state/telemetry, the CLI's progress, JSON lines):
its ``state``, ``latched`` and ``reason`` are copied from the safety machine when they
change, never read back for a decision. ``SessionRecorder`` is what the session store
implements (``treadctl.store.integration.ControllerRecorder``) and the daemon wraps.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from treadctl.control.machine import State
from treadctl.types import Direction

if TYPE_CHECKING:
    from treadctl.control.controller import Controller


class Outcome(enum.StrEnum):
    FINISHED = "finished"
    STOPPED = "stopped"
    ESTOPPED = "estopped"
    ERROR = "error"


@dataclass
class Snapshot:
    """What the outside world sees (MQTT state/telemetry, CLI progress, JSON lines)."""

    state: State = State.IDLE
    latched: bool = False
    reason: str | None = None
    program: str | None = None
    segment: int | None = None  # 1-based
    segment_count: int = 0
    segment_label: str | None = None
    direction: Direction = Direction.FORWARD
    target_speed_kmh: float = 0.0
    speed_kmh: float = 0.0
    incline_pct: float = 0.0
    target_incline_pct: float = 0.0
    distance_m: float = 0.0
    #: The heart rate shown: the supervisor's filtered HR, None unless its quality is good
    #: (docs/heart-rate.md); where it comes from, its quality, and a governed segment's zone.
    hr_bpm: int | None = None
    hr_source: str | None = None  # "strap" | "treadmill" | None
    hr_quality: str | None = None  # "good" | "unreliable" | "lost" | None (no HR source)
    hr_zone_bpm: list[float] | None = None
    elapsed_s: float = 0.0
    remaining_s: float | None = None
    session_id: str | None = None
    phase: str | None = None  # e.g. "direction-change", "dwell"
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["direction"] = self.direction.value
        return d


@dataclass
class SessionResult:
    outcome: Outcome
    reason: str | None
    session_id: str
    elapsed_s: float
    distance_m: float
    segments_completed: int
    belt_stopped: bool  # measured standstill confirmed at the end
    summary: dict[str, Any] | None = None  # from the session store, when recording


class SessionRecorder(Protocol):
    """One session's record: the controller calls ``sample`` on every telemetry frame and
    ``event`` on every event (both synchronous and cheap: they only enqueue), and awaits
    ``finish`` once at the end (its result is the session's summary)."""

    def sample(self, ctl: Controller, now: float) -> None: ...

    def event(self, ctl: Controller, event: dict[str, Any]) -> None: ...

    def finish(self, ctl: Controller, result: SessionResult) -> Any: ...


__all__ = ["Outcome", "SessionRecorder", "SessionResult", "Snapshot"]
