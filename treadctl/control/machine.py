"""The safety state machine of one treadmill: states, the latch, every interlock, reset.

Sans-I/O, in the spirit of h11's ``_state.py``: no transport, no clock, no asyncio. The
controller (and, through it, the daemon's lane) feeds it one input per event - telemetry,
machine status, direction read-back, a loop tick, link lost / up, a command that failed
(with a typed :class:`Failure`), an e-stop, a reset - and each input returns a
:class:`Step`: the trip it decided (``None`` when none) and the state after it. The caller
does the I/O: a ``Step`` with a trip means "put a Stop on the wire now".

What lives here and nowhere else:

* the **states** and the explicit :data:`TRANSITIONS` table (an event a state does not
  accept raises :class:`IllegalTransition`, in one place);
* the **latch**: the first trip, kept until :meth:`SafetyMachine.reset`; ``motion_blocked``
  is derived from it, so the FTMS client's last line of defence cannot disagree;
* **every interlock decision**, with ``safety.py``'s pure checks as helpers, and the typed
  mapping from a failed command to its interlock (:data:`FAILURE_INTERLOCK`);
* **one reset rule** (:meth:`SafetyMachine.reset`): refused while a session is still
  ending or while fresh telemetry shows the belt moving; it never moves the belt.

The daemon keeps one machine per lane for the lane's whole life and hands it to every
controller it builds for that lane, so a latch survives a reconnect without a second copy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from treadctl import ftms
from treadctl.control.safety import (
    Interlock,
    Latch,
    SafetyConfig,
    TrackingMonitor,
    Trip,
    check_direction,
    check_heart_rate,
    check_heartbeat,
    check_overspeed,
    check_silence,
)
from treadctl.types import Direction

#: Telemetry younger than this is "fresh" for the reset rule (docs/safety.md).
RESET_FRESH_S = 1.0


class State(enum.StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    ESTOPPED = "estopped"
    FAULT = "fault"
    DISCONNECTED = "disconnected"


class Event(enum.StrEnum):
    """What moves the state. The session walker's steps, and the safety events."""

    START = "start"  # a session was accepted
    BELT_STARTING = "belt-starting"  # Start/first setpoint on the way (or resuming)
    RUNNING = "running"  # a segment is being followed
    STOPPING = "stopping"  # ramping down: end, stop request, pause, turn
    PAUSED = "paused"  # the belt stands, the session waits for resume
    ENDED = "ended"  # the session is over (not by a trip)
    TRIP = "trip"  # an interlock latched
    LINK_LOST = "link-lost"  # the device link is gone
    LINK_UP = "link-up"  # a (new) link is open, Stop sent first
    RESET = "reset"  # the latch was cleared by an explicit reset


class Failure(enum.StrEnum):
    """How a control-point procedure (or a step of the walker) failed: typed, not read
    from an exception's class."""

    TIMEOUT = "timeout"  # no response after every send
    REJECTED = "rejected"  # the firmware answered with a failure result
    DIRECTION = "direction"  # the direction read-back disagrees or never came
    NOT_STOPPED = "not-stopped"  # the belt did not reach standstill after our Stop
    WRITE_FAILED = "write-failed"  # the link refused the bytes
    BLOCKED = "blocked"  # refused locally: latched (not a new fault)
    PREEMPTED = "preempted"  # our own Stop overtook the procedure (not a fault)


#: A failed command is this interlock (None: not a fault, nothing trips).
FAILURE_INTERLOCK: dict[Failure, Interlock | None] = {
    Failure.TIMEOUT: Interlock.COMMAND_TIMEOUT,
    Failure.REJECTED: Interlock.COMMAND_REJECTED,
    Failure.WRITE_FAILED: Interlock.COMMAND_REJECTED,
    Failure.DIRECTION: Interlock.DIRECTION_MISMATCH,
    # Commanded 0 and the belt is still moving: the belt does not track its command.
    Failure.NOT_STOPPED: Interlock.TRACKING_ERROR,
    Failure.BLOCKED: None,
    Failure.PREEMPTED: None,
}

#: The state a trip leads to (default: estopped).
TRIP_STATE: dict[Interlock, State] = {
    Interlock.INTERNAL_ERROR: State.FAULT,
    Interlock.LINK_LOST: State.DISCONNECTED,
}

#: Which input of :class:`SafetyMachine` decides each interlock (docs/safety.md, "Where
#: each interlock trips", is checked against this by a test).
INTERLOCK_INPUT: dict[Interlock, str] = {
    Interlock.REMOTE_ESTOP: "estop",
    Interlock.GYM_ESTOP: "estop",
    Interlock.BROKER_LOST: "broker_unreachable",
    Interlock.SAFETY_KEY: "status, danger",
    Interlock.MACHINE_STOP: "status, danger",
    Interlock.MACHINE_FAULT: "danger",
    Interlock.CONTROL_LOST: "status",
    Interlock.LINK_LOST: "link_lost",
    Interlock.TELEMETRY_SILENCE: "tick",
    Interlock.HEARTBEAT_MISSED: "tick",
    Interlock.OVERSPEED: "telemetry, danger",
    Interlock.TRACKING_ERROR: "telemetry, command_failed",
    Interlock.HEART_RATE: "telemetry, heart_rate",
    Interlock.DIRECTION_MISMATCH: "telemetry, direction, command_failed, danger",
    Interlock.COMMAND_TIMEOUT: "command_failed, danger",
    Interlock.COMMAND_REJECTED: "command_failed, danger",
    Interlock.INTERNAL_ERROR: "error",
}

#: A native machine's danger (``treadctl.drivers.base.Danger.kind``) is this interlock;
#: a kind not listed is a ``machine-fault``. A closed link is ``link_lost``, not a danger.
DANGER_INTERLOCK: dict[str, Interlock] = {
    "lanyard": Interlock.SAFETY_KEY,
    "machine-stopped": Interlock.MACHINE_STOP,
    "wrong-direction": Interlock.DIRECTION_MISMATCH,
    "overspeed": Interlock.OVERSPEED,
    "nacks": Interlock.COMMAND_REJECTED,
    "no-reply": Interlock.COMMAND_TIMEOUT,
    "comm-fault": Interlock.MACHINE_FAULT,
    "hardware-fault": Interlock.MACHINE_FAULT,
    "cds-disarmed": Interlock.MACHINE_FAULT,
    "watchdog-expired": Interlock.MACHINE_FAULT,
    "belts-differ": Interlock.MACHINE_FAULT,
}

_S, _E = State, Event
_SESSION = (_E.BELT_STARTING, _E.RUNNING, _E.STOPPING, _E.PAUSED, _E.ENDED)


def _latched(state: State) -> dict[Event, State]:
    """A latched state: the session's own steps change nothing (it is being torn down)."""
    table = {e: state for e in _SESSION}
    table.update({_E.TRIP: state, _E.LINK_LOST: _S.DISCONNECTED, _E.LINK_UP: state,
                  _E.RESET: _S.IDLE})
    return table


#: state -> event -> next state. A pair that is missing is illegal. A new link always comes
#: up idle (Stop sent first; a session of the old link is over), or latched. ``TRIP`` goes to the
#: listed state unless :data:`TRIP_STATE` names another for the interlock (first trip only).
TRANSITIONS: dict[State, dict[Event, State]] = {
    _S.IDLE: {
        _E.START: _S.STARTING, _E.ENDED: _S.IDLE, _E.TRIP: _S.ESTOPPED,
        _E.LINK_LOST: _S.DISCONNECTED, _E.LINK_UP: _S.IDLE, _E.RESET: _S.IDLE,
    },
    _S.STARTING: {
        _E.BELT_STARTING: _S.STARTING, _E.RUNNING: _S.RUNNING, _E.STOPPING: _S.STOPPING,
        _E.ENDED: _S.IDLE, _E.TRIP: _S.ESTOPPED, _E.LINK_LOST: _S.DISCONNECTED,
        _E.LINK_UP: _S.IDLE,
    },
    _S.RUNNING: {
        _E.BELT_STARTING: _S.STARTING, _E.RUNNING: _S.RUNNING, _E.STOPPING: _S.STOPPING,
        _E.ENDED: _S.IDLE, _E.TRIP: _S.ESTOPPED, _E.LINK_LOST: _S.DISCONNECTED,
        _E.LINK_UP: _S.IDLE,
    },
    _S.STOPPING: {
        _E.BELT_STARTING: _S.STARTING, _E.RUNNING: _S.RUNNING, _E.STOPPING: _S.STOPPING,
        _E.PAUSED: _S.PAUSED, _E.ENDED: _S.IDLE, _E.TRIP: _S.ESTOPPED,
        _E.LINK_LOST: _S.DISCONNECTED, _E.LINK_UP: _S.IDLE,
    },
    _S.PAUSED: {
        _E.BELT_STARTING: _S.STARTING, _E.STOPPING: _S.STOPPING, _E.ENDED: _S.IDLE,
        _E.TRIP: _S.ESTOPPED, _E.LINK_LOST: _S.DISCONNECTED, _E.LINK_UP: _S.IDLE,
    },
    _S.ESTOPPED: _latched(_S.ESTOPPED),
    _S.FAULT: _latched(_S.FAULT),
    _S.DISCONNECTED: {
        **{e: _S.DISCONNECTED for e in _SESSION},
        _E.TRIP: _S.DISCONNECTED, _E.LINK_LOST: _S.DISCONNECTED,
        # A latch other than link-lost comes back with the link (resolved in link_up()).
        _E.LINK_UP: _S.IDLE, _E.RESET: _S.DISCONNECTED,
    },
}

#: States a session drives the belt in (a start is refused, a reset waits).
ACTIVE = frozenset({State.STARTING, State.RUNNING, State.PAUSED, State.STOPPING})

#: The interlocks :meth:`SafetyMachine.estop` takes: an operator's e-stop.
OPERATOR_ESTOPS = frozenset({Interlock.REMOTE_ESTOP, Interlock.GYM_ESTOP})


class ControlError(Exception):
    """A command that cannot be carried out now (wrong state, invalid value, latched)."""


class IllegalTransition(ControlError):
    """An event the current state does not accept (a bug in the caller, never a user's)."""


@dataclass(frozen=True)
class Step:
    """What one input decided: the trip (Stop it now), whether it is the first (latched
    now), and the state after it."""

    trip: Trip | None
    state: State
    first: bool = False


@dataclass(frozen=True)
class Reading:
    """One Treadmill Data sample, judged against what the belt should do."""

    now: float
    speed_kmh: float  # measured, unsigned
    direction: Direction | None  # measured, when known
    hr_bpm: int | None  # the HR supervisor's plausible value only (heart.py), else None
    reference_kmh: float  # the setpoint, or the stop envelope after our own Stop
    commanded_kmh: float  # what the firmware was told last
    cap_kmh: float  # the active cap in the commanded direction
    expected: Direction  # the commanded direction
    max_hr_bpm: float


class SafetyMachine:
    """States, latch and interlocks of one treadmill (see the module docstring)."""

    def __init__(self, cfg: SafetyConfig | None = None) -> None:
        self.cfg = cfg or SafetyConfig()
        self._state = State.IDLE
        self._latch = Latch()
        self._armed = False  # telemetry and timer interlocks judge a driven belt
        self._tracking = TrackingMonitor(self.cfg)
        self._hr_above_since: float | None = None

    # ------------------------------------------------------------------ read-only view
    @property
    def state(self) -> State:
        return self._state

    @property
    def latch(self) -> Latch:
        """The latch (read it; only :meth:`reset` clears it)."""
        return self._latch

    @property
    def trip(self) -> Trip | None:
        return self._latch.trip

    @property
    def latched(self) -> bool:
        return self._latch.latched

    @property
    def motion_blocked(self) -> bool:
        """No write that can move the belt may reach the wire (derived from the latch)."""
        return self._latch.latched

    @property
    def armed(self) -> bool:
        return self._armed

    # ------------------------------------------------------------------ transitions
    def _go(self, event: Event, target: State | None = None) -> State:
        try:
            nxt = TRANSITIONS[self._state][event]
        except KeyError:
            raise IllegalTransition(
                f"event {event.value!r} is not allowed in state {self._state.value!r}"
            ) from None
        self._state = target if target is not None else nxt
        return self._state

    def session(self, event: Event) -> State:
        """One step of the session walker (start, belt starting, running, ...)."""
        if event not in (_E.START, *_SESSION):
            raise IllegalTransition(f"{event.value!r} is not a session step")
        return self._go(event)

    def arm(self) -> None:
        """A session drives the belt: telemetry and timer interlocks judge it. Arming from
        disarmed starts the heart-rate hold over (a heart above the ceiling at the end of
        the last session is not held against this one); re-arming within a session (each
        segment's start) keeps it."""
        if not self._armed:
            self._hr_above_since = None
        self._armed = True

    def disarm(self) -> None:
        self._armed = False
        self._hr_above_since = None

    def track_reset(self) -> None:
        """A large setpoint step (or a fresh start): the tracking error starts over."""
        self._tracking.reset()

    # ------------------------------------------------------------------ trips
    def _latch_trip(self, trip: Trip) -> Step:
        first = self._latch.set(trip)
        if first:
            self._armed = False
            target = TRIP_STATE.get(trip.interlock) if self._state is not State.DISCONNECTED \
                else None
            self._go(_E.TRIP, target)
        return Step(trip, self._state, first)

    def _decide(self, trip: Trip | None) -> Step:
        """Latch ``trip`` when a check found one; else nothing changes."""
        return self._latch_trip(trip) if trip is not None else Step(None, self._state)

    def estop(self, interlock: Interlock, detail: str) -> Step:
        """An operator's e-stop (``remote-estop``, ``gym-estop``): any state. It takes the
        place of a ``link-lost`` latch, which ends with the old link (:meth:`link_up`): an
        e-stop made while the link is down is applied when it comes back. Other interlocks
        have their own inputs (a broker outage is :meth:`broker_unreachable`, an error
        :meth:`error`): anything else is a ValueError."""
        if interlock not in OPERATOR_ESTOPS:
            raise ValueError(f"{interlock} is not an operator e-stop")
        held = self._latch.trip
        if held is not None and held.interlock is Interlock.LINK_LOST:
            self._latch.reset()
        return self._latch_trip(Trip(interlock, detail))

    def broker_unreachable(self, detail: str) -> Step:
        """The MQTT broker stayed unreachable past its grace (policy ``stop``): the remote
        e-stop is gone, so ``broker-lost`` trips, but only while a session drives the belt
        (:data:`ACTIVE`, paused and a rear-facing turn-around's waits included); idle, latched
        or disconnected, nothing trips."""
        if self._state not in ACTIVE:
            return Step(None, self._state)
        return self._latch_trip(Trip(Interlock.BROKER_LOST, detail))

    def error(self, detail: str) -> Step:
        """An unexpected error in the loop, the session or the daemon."""
        return self._latch_trip(Trip(Interlock.INTERNAL_ERROR, detail))

    def command_failed(self, failure: Failure, detail: str) -> Step:
        """A control-point procedure (or a walker step) failed; ``failure`` says how."""
        interlock = FAILURE_INTERLOCK[failure]
        if interlock is None or self._latch.latched:
            return Step(None, self._state)  # our own stop overtook it, or latched already
        return self._latch_trip(Trip(interlock, detail))

    def telemetry(self, r: Reading) -> Step:
        """Overspeed, direction, tracking and heart rate on one Treadmill Data sample."""
        if not self._armed or self._latch.latched:
            return Step(None, self._state)
        trip = check_overspeed(r.speed_kmh, r.reference_kmh, r.cap_kmh, self.cfg)
        if trip is None:
            trip = check_direction(r.direction, r.expected, r.speed_kmh, self.cfg)
        if trip is None:
            # While stopping, anything between the setpoint and the envelope is on track
            # (a firmware may brake harder than the envelope assumes).
            tracked = min(max(r.speed_kmh, r.commanded_kmh), r.reference_kmh)
            trip = self._tracking.update(r.speed_kmh, tracked, r.now)
        if trip is None:
            trip, self._hr_above_since = check_heart_rate(
                r.hr_bpm, r.max_hr_bpm, self._hr_above_since, r.now, self.cfg
            )
        return self._decide(trip)

    def heart_rate(self, hr_bpm: int | None, max_hr_bpm: float, now: float) -> Step:
        """The heart-rate ceiling alone, between Treadmill Data frames (a strap reading):
        ``hr_bpm`` is the supervisor's plausible value, or None (which resets the hold)."""
        if not self._armed or self._latch.latched:
            return Step(None, self._state)
        trip, self._hr_above_since = check_heart_rate(
            hr_bpm, max_hr_bpm, self._hr_above_since, now, self.cfg
        )
        return self._decide(trip)

    def direction(self, measured: Direction, expected: Direction, speed_kmh: float,
                  fresh: bool) -> Step:
        """A direction read-back (vendor characteristic), judged against the command."""
        if not self._armed or self._latch.latched or not fresh:
            return Step(None, self._state)
        trip = check_direction(measured, expected, speed_kmh, self.cfg)
        return self._decide(trip)

    def status(self, status: ftms.MachineStatus, *, belt_may_move: bool,
               stop_is_ours: bool) -> Step:
        """A Fitness Machine Status notification."""
        if isinstance(status, ftms.StoppedBySafetyKey):
            return self._latch_trip(
                Trip(Interlock.SAFETY_KEY, "safety key pulled (machine reported)")
            )
        if isinstance(status, ftms.ControlPermissionLost):
            if belt_may_move or self._armed:
                return self._latch_trip(
                    Trip(Interlock.CONTROL_LOST, "machine reported control permission lost")
                )
        elif isinstance(status, ftms.StoppedOrPausedByUser) and self._armed \
                and not stop_is_ours and not self._latch.latched:
            what = "paused" if status.paused else "stopped"
            return self._latch_trip(Trip(Interlock.MACHINE_STOP, f"belt {what} at the machine"))
        return Step(None, self._state)

    def danger(self, kind: str, detail: str) -> Step:
        """A native machine reported danger (its driver has already sent the stop). It
        latches in every state: the machine says the belt is not safe to move."""
        interlock = DANGER_INTERLOCK.get(kind, Interlock.MACHINE_FAULT)
        return self._latch_trip(Trip(interlock, f"{detail} ({kind}, machine reported)"))

    def tick(self, now: float, last_rx: float, last_heartbeat: float,
             heartbeat_s: float | None) -> Step:
        """The loop's timer interlocks: telemetry silence, dead-man heartbeat."""
        if not self._armed or self._latch.latched:
            return Step(None, self._state)
        trip = check_silence(last_rx, now, self.cfg) or check_heartbeat(
            last_heartbeat, now, heartbeat_s
        )
        return self._decide(trip)

    def link_lost(self, reason: str) -> Step:
        """The transport reported the link gone."""
        step = self._latch_trip(Trip(Interlock.LINK_LOST, reason))
        self._go(_E.LINK_LOST)
        return Step(step.trip, self._state, step.first)

    def link_dropped(self) -> State:
        """We dropped the link ourselves (escalation): latched already, now disconnected."""
        return self._go(_E.LINK_LOST)

    def link_up(self) -> Step:
        """A link is open (Stop sent first). A ``link-lost`` latch ends with the old link;
        any other latch carries over: the returned trip is to be stopped on the new link."""
        trip = self._latch.trip
        if trip is not None and trip.interlock is Interlock.LINK_LOST:
            self._latch.reset()
            trip = None
        target = None
        if trip is not None:
            target = TRIP_STATE.get(trip.interlock, State.ESTOPPED)
            if target is State.DISCONNECTED:
                target = State.ESTOPPED
        self._go(_E.LINK_UP, target)
        self._armed = False
        return Step(trip, self._state)

    # ------------------------------------------------------------------ reset
    def reset(self, *, session_ending: bool, speed_kmh: float | None,
              telemetry_age_s: float) -> Trip | None:
        """The one reset rule: refused while a session is still ending, and while fresh
        telemetry (< 1 s) shows the belt above standstill. It never moves the belt: it
        only clears the latch (returns the cleared trip, None when there was none)."""
        if session_ending:
            raise ControlError("session still ending; try again in a moment")
        moving = speed_kmh is not None and speed_kmh > self.cfg.standstill_kmh
        if moving and telemetry_age_s < RESET_FRESH_S:
            raise ControlError(f"belt still moving ({speed_kmh:.1f} km/h); not reset")
        if _E.RESET not in TRANSITIONS[self._state]:
            raise IllegalTransition(f"reset is not allowed while {self._state.value}")
        old = self._latch.reset()
        self._go(_E.RESET)
        return old

    # ------------------------------------------------------------------ command guards
    def check_start(self, *, session_active: bool, speed_kmh: float) -> None:
        if self._latch.latched:
            reason = self._latch.trip.reason if self._latch.trip else None
            raise ControlError(f"latched ({reason}); send reset first")
        if self._state is State.DISCONNECTED:
            raise ControlError("treadmill is disconnected")
        if session_active:
            raise ControlError(f"a session is already {self._state.value}")
        if speed_kmh > self.cfg.standstill_kmh:
            raise ControlError(f"belt is still moving ({speed_kmh:.1f} km/h)")

    def check_pause(self) -> None:
        if self._state is not State.RUNNING:
            raise ControlError(f"cannot pause while {self._state.value}")

    def check_resume(self, *, pause_requested: bool) -> None:
        if self._latch.latched:
            raise ControlError("latched; reset and start again")
        if self._state is not State.PAUSED and not pause_requested:
            raise ControlError(f"cannot resume while {self._state.value}")

    def check_set(self) -> None:
        if self._state is not State.RUNNING:
            raise ControlError(f"cannot set while {self._state.value}")


__all__ = [
    "ACTIVE", "DANGER_INTERLOCK", "FAILURE_INTERLOCK", "INTERLOCK_INPUT", "OPERATOR_ESTOPS",
    "TRANSITIONS", "TRIP_STATE", "ControlError", "Event", "Failure", "IllegalTransition",
    "Reading", "SafetyMachine", "State", "Step",
]
