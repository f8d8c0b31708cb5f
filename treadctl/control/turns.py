"""Rear-facing turns: backward walking on a forward-only treadmill (issue 17, section 3).

In rear-facing mode (``Controller(..., rear_facing=True)``, ``treadctl run --rear-facing``,
``rear_facing = true`` for a daemon lane) the belt always runs forward and the user walks
backward by facing the rear. A segment marked ``reverse`` gets the reverse cap and ramps
(``EffectiveLimits.rear_facing``), and every change of the way the user faces goes through
:meth:`TurnAround._turn_around`, called by the walker with the belt at measured standstill:

1. the ``turn-around`` event (``face``: the way to face now, ``segment``, ``speed_kmh``,
   ``message``), state ``paused`` with phase ``turn-around``;
2. a wait for a confirmation - Enter in ``treadctl run``, ``Controller.resume()`` (the
   daemon's ``cmd/resume``) - and for nothing else: no timer ends it. The interlocks stay
   armed (telemetry silence, the dead-man heartbeat, machine status), and a stop or
   e-stop ends the session from it as from any other point;
3. the ``turn-confirmed`` event, then, before a moving segment, a countdown of
   ``motion.announce_s`` (``upcoming`` with ``what = "start"``, phase ``countdown``): the
   user who confirmed at the console has the time to turn before the belt moves.

Session time stands still from the ``turn-around`` event to the end of the countdown, like
a pause: the listed durations are what the user walks, however long the turn takes.
"""

from __future__ import annotations

from treadctl.control.announce import Announcer
from treadctl.control.machine import Event
from treadctl.programs.model import Segment
from treadctl.types import Direction

#: What the user is asked, by the way they are to face (the ``message`` of the event).
TURN_MESSAGE = {
    Direction.REVERSE: "turn around to face the rear of the treadmill (you will walk "
    "backward), then confirm",
    Direction.FORWARD: "turn around to face the console again (you will walk forward), "
    "then confirm",
}


class TurnAround(Announcer):
    """The rear-facing turn of the session walker (see the module docstring)."""

    @property
    def turn_pending(self) -> Direction | None:
        """The way the user is asked to face while a turn waits for its confirmation."""
        return self._turn_pending

    def _confirm_turn(self) -> bool:
        """A confirmation (``resume()``): True when a turn was waiting for one."""
        if self._turn_pending is None:
            return False
        self._turn_pending = None  # confirmed: nothing waits any more
        self._turn_confirmed = True
        return True

    async def _turn_around(self, index: int, seg: Segment) -> None:
        """The belt stands: ask the user to face ``seg.direction``, wait for the
        confirmation, count down before a moving segment. Returns with the belt still
        standing (the walker starts it)."""
        face = seg.direction
        # The wait is judged like a driven belt (silence, heartbeat, machine status), also
        # before the first start.
        self.machine.arm()
        self._turn_confirmed = False
        self._step(Event.STOPPING, phase="turn-around", target_speed_kmh=0.0)
        self._paused_since = self.clock.now()  # session time stands still (module doc)
        try:
            self._turn_pending = face
            self._event(
                "turn-around",
                face=face.value,
                segment=index + 1,
                speed_kmh=seg.speed_kmh,
                message=TURN_MESSAGE[face],
            )
            self._step(Event.PAUSED, phase="turn-around")
            while not self._turn_confirmed:
                self._check_stop()
                await self._nap(None)  # woken by the confirmation (resume) or a stop
            self._turn_pending = None
            self._facing = face
            self._set_snapshot(direction=face)
            self._event("turn-confirmed", face=face.value, segment=index + 1)
            if seg.speed_kmh <= 0:
                self._step(Event.STOPPING, phase="stopping")  # a stand-still segment
                return
            await self._count_down_to_start(face, seg.speed_kmh, index + 1)
        finally:
            self._turn_pending = None
            if self._paused_since is not None:
                self._paused_total += self.clock.now() - self._paused_since
                self._paused_since = None


__all__ = ["TURN_MESSAGE", "TurnAround"]
