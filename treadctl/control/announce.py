"""Announcements: what the belt is about to do, said before it does it (issue 17, section 4).

Unexpected acceleration in remote and automatic modes has hurt people. So before every
direction change of a program (a rear-facing turn included) and before every program step
that raises the speed by more than the profile's ``motion.announce_step_kmh``, the
controller emits an ``upcoming`` event ``motion.announce_s`` (at least 5 s) before the
change begins; the live view counts it down and the session's record keeps it.

A change begins at its segment's entry in session time (the sum of the listed durations
before it): that is when the walker starts ramping down for a turn, or up for a faster
step. The walker never enters a segment before that time (it may be later, never
earlier), so an announcement made ``announce_s`` of session time ahead is at least that
far ahead of the change. Session time stands still during a pause or a rear-facing
turn-around wait, so does the countdown. Announcing costs the program no time: it happens
inside the previous segment.

:func:`planned_changes` is pure (the program and the profile's step in, the changes out);
:class:`Announcer` is the session's task that emits them, mixed into the controller.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from treadctl.control.core import ControllerCore
from treadctl.control.machine import Event
from treadctl.control.safety import Interlock, Trip
from treadctl.programs.model import Program
from treadctl.types import Direction

log = logging.getLogger("treadctl.control.controller")

#: ``what`` of an ``upcoming`` event.
DIRECTION_CHANGE = "direction-change"
SPEED_INCREASE = "speed-increase"
#: ... and of the countdown after a rear-facing turn was confirmed (turns.py).
START = "start"

# A step this close to the announce size is not above it (0.1 + 0.9 != 1.0 in floats).
_TOLERANCE_KMH = 1e-9


@dataclass(frozen=True)
class Change:
    """A change of a program that is announced before it begins."""

    at_s: float  # session time the change begins (its segment's entry)
    what: str  # DIRECTION_CHANGE or SPEED_INCREASE
    segment: int  # 1-based number of the segment that brings it
    direction: Direction  # the way the user walks after it
    speed_kmh: float  # the speed after it
    from_speed_kmh: float  # the speed before it


def planned_changes(program: Program, step_kmh: float) -> list[Change]:
    """Every announced change of ``program``, in order: each segment whose direction
    differs from the one before it, and each that raises the speed (same direction) by
    more than ``step_kmh``. The first segment's start is the user's own (no announcement)."""
    out: list[Change] = []
    t = 0.0
    segments = program.segments
    for i, seg in enumerate(segments):
        if i > 0:
            prev = segments[i - 1]
            what = None
            if seg.direction is not prev.direction:
                what = DIRECTION_CHANGE
            elif seg.speed_kmh - prev.speed_kmh > step_kmh + _TOLERANCE_KMH:
                what = SPEED_INCREASE
            if what is not None:
                out.append(Change(t, what, i + 1, seg.direction, seg.speed_kmh, prev.speed_kmh))
        t += seg.duration_s
    return out


class Announcer(ControllerCore):
    """The session's announcement task (see the module docstring)."""

    def _announce_now(
        self, what: str, in_s: float, direction: Direction, speed_kmh: float, **extra: object
    ) -> None:
        """One ``upcoming`` event: ``in_s`` seconds (session time) until it begins."""
        self._event(
            "upcoming",
            what=what,
            in_s=round(max(0.0, in_s), 1),
            direction=direction.value,
            speed_kmh=speed_kmh,
            **extra,
        )

    async def _count_down_to_start(
        self, direction: Direction, speed_kmh: float, segment: int | None
    ) -> None:
        """The belt stands and is about to start (after a rear-facing turn, or a resume):
        ``upcoming`` (``what = "start"``, phase ``countdown``), then ``motion.announce_s``
        of waiting; a stop during it ends the session with nothing moved."""
        self._step(Event.BELT_STARTING, phase="countdown")
        lead_s = self.profile.motion.announce_s
        self._announce_now(START, lead_s, direction, speed_kmh, segment=segment)
        until = self.clock.now() + lead_s
        while (left := until - self.clock.now()) > 1e-6:
            self._check_stop()
            await self._nap(left)  # woken by a stop
        self._check_stop()

    async def _announcer(self, program: Program) -> None:
        """Emit each planned change's ``upcoming`` event ``announce_s`` of session time
        before it (at the session's start for one that comes sooner than that)."""
        lead_s = self.profile.motion.announce_s
        pending = planned_changes(program, self.profile.motion.announce_step_kmh)
        try:
            while pending:
                change = pending[0]
                elapsed = self._elapsed(self.clock.now())
                wait = change.at_s - lead_s - elapsed
                if wait > 1e-6:
                    # Session time never runs faster than the clock: sleeping ``wait`` never
                    # oversleeps the change, and after a pause (session time held still)
                    # the wait is judged again.
                    await asyncio.sleep(wait)
                    continue
                pending.pop(0)
                self._announce_now(
                    change.what,
                    change.at_s - elapsed,
                    change.direction,
                    change.speed_kmh,
                    from_speed_kmh=change.from_speed_kmh,
                    segment=change.segment,
                    at_s=round(change.at_s, 3),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A change that could come unannounced is not safe to run into: an interlock,
            # like an error in the loop.
            log.exception("announcer error")
            self._trip(Trip(Interlock.INTERNAL_ERROR, f"announcer: {exc!r}"))


__all__ = [
    "DIRECTION_CHANGE",
    "SPEED_INCREASE",
    "START",
    "Announcer",
    "Change",
    "planned_changes",
]
