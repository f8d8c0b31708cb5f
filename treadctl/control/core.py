"""The state a controller's parts share, declared once (types only; ``Controller.__init__``
sets it), and the few methods one part calls on another.

``Controller`` is split along its tasks: ``session.py`` (the program walker), ``loop.py``
(the fixed-rate loop, the sender, the escalation) and ``controller.py`` (lifecycle,
commands, the safety machine's inputs and their effects, the snapshot). Each part derives
from :class:`ControllerCore`, so mypy checks every attribute and cross-call against one
declaration. Decisions about safety are not here: they are the ``SafetyMachine``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from treadctl.clock import Clock
from treadctl.control.client import CommandError
from treadctl.control.machine import Event, SafetyMachine, Step
from treadctl.control.machine_link import MachineLink
from treadctl.control.planner import Ramp
from treadctl.control.reverse import ReverseMethod
from treadctl.control.safety import Latch, SafetyConfig, Trip
from treadctl.control.snapshot import SessionResult, Snapshot
from treadctl.limits import EffectiveLimits, Limits
from treadctl.profiles import FirmwareProfile
from treadctl.programs.model import Program, Segment
from treadctl.transport.base import Transport
from treadctl.types import Direction


class StopRequested(Exception):
    """A stop request (cmd/stop, Ctrl-C) seen by the session walker: a controlled stop."""


class ControllerCore:
    # Configuration
    transport: Transport
    profile: FirmwareProfile
    clock: Clock
    site_limits: Limits | None
    cfg: SafetyConfig
    tick_s: float
    #: A keepalive at least this often (link_timeout_ms / KEEPALIVES_PER_LINK_TIMEOUT).
    keepalive_every_s: float
    #: The loop wakes this often: a tick, or a fraction of one (short link timeouts).
    wake_s: float
    _keepalives_per_tick: int
    treadmill_id: str
    site_heartbeat_s: float | None
    machine: SafetyMachine
    reverse: ReverseMethod  # the profile's reverse method, chosen once
    client: MachineLink
    snapshot: Snapshot
    state_listeners: list[Callable[[Snapshot], None]]
    telemetry_listeners: list[Callable[[Snapshot], None]]
    event_listeners: list[Callable[[dict[str, Any]], None]]
    #: Called with the tick's time after each of the loop's ticks (benchmarks time it).
    tick_listeners: list[Callable[[float], None]]
    # Measurements
    last_rx: float
    measured_kmh: float
    measured_dir: Direction | None
    _distance_base_m: float | None
    _telemetry_seen: asyncio.Event
    _deviations_reported: set[str]
    # What we told the firmware
    commanded_kmh: float
    commanded_incline: float
    commanded_dir: Direction
    #: Rear-facing mode (forward-only machines): the belt always runs forward, and
    #: ``_facing`` is the way the user walks, whose limits apply (docs/safety.md).
    rear_facing: bool
    _facing: Direction
    belt_running: bool
    _last_speed_sent: float
    _stop_envelope: Ramp | None
    # Plan being followed
    _speed_ramp: Ramp | None
    _incline_ramp: Ramp | None
    _want_speed: float | None
    _want_incline: float | None
    #: (ramp, limits, wanted) once a ramp has ended and its end is the wanted setpoint.
    _ramp_settled: tuple[Ramp, EffectiveLimits, float] | None
    _incline_settled: tuple[Ramp, EffectiveLimits, float] | None
    _want_changed: asyncio.Event
    # Session
    _program: Program | None
    _limits: EffectiveLimits | None
    _session_task: asyncio.Task[SessionResult] | None
    _escalation: asyncio.Task[None] | None
    _tasks: list[asyncio.Task[None]]
    _stop_requested: bool
    _stop_reason: str
    _pause_requested: bool
    _resume: asyncio.Event
    #: Set by every command the walker's waits must see at once (stop, pause, resume, a
    #: turn's confirmation): the walker sleeps until its deadline or this, not in ticks.
    _walker_wake: asyncio.Event
    _last_heartbeat: float
    _paused_since: float | None
    _session_started: float
    _paused_total: float
    _recorder: Any
    # Rear-facing turns (turns.py): the direction the user was asked to face, and whether
    # they confirmed (Enter, Controller.resume()).
    _turn_pending: Direction | None
    _turn_confirmed: bool
    _driving: bool
    _opened: bool
    #: The governed segment running now (heart.py), or None.
    _hr_segment: Segment | None

    # ------------------------------------------------------------ shared helpers
    def _elapsed(self, now: float) -> float:
        """Session time: wall of the session minus time spent paused (incl. a pause now)."""
        paused = self._paused_total
        if self._paused_since is not None:
            paused += now - self._paused_since
        return max(0.0, now - self._session_started - paused)

    def session_elapsed_s(self) -> float:
        """Session time now: pauses and rear-facing turn waits excluded (the live view's
        countdowns run on it)."""
        return self._elapsed(self.clock.now())

    @property
    def _limit_dir(self) -> Direction:
        """The direction whose caps and ramps apply: the belt's, or in rear-facing mode the
        way the user walks (the belt then always runs forward)."""
        return self._facing if self.rear_facing else self.commanded_dir

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise StopRequested()

    def _wake_walker(self) -> None:
        """A command the session walker waits on (stop, pause, resume, turn confirmed)."""
        self._walker_wake.set()

    def _request_stop(self, reason: str) -> None:
        """A controlled stop of the running session: the walker sees it at once."""
        self._stop_reason = reason
        self._stop_requested = True
        self._resume.set()
        self._want_changed.set()
        self._wake_walker()

    async def _nap(self, timeout_s: float | None) -> None:
        """The walker's sleep: until ``timeout_s`` passed (None: no limit) or a command
        woke it (:meth:`_wake_walker`). The caller checks its conditions right before (no
        await between), so a command in between is never missed; a trip cancels the task."""
        self._walker_wake.clear()
        if timeout_s is None:
            await self._walker_wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._walker_wake.wait()

    @staticmethod
    def _ramp_value(ramp: Ramp | None, now: float) -> float:
        return ramp.at(now) if ramp is not None else 0.0

    # ------------------------------------------------------------ implemented elsewhere
    # (controller.py, session.py, loop.py); declared here so each part type-checks alone.
    @property
    def latch(self) -> Latch:
        raise NotImplementedError

    def _act(self, step: Step, *, stop_sent: bool = False) -> None:
        raise NotImplementedError

    def _trip(self, trip: Trip, *, stop_sent: bool = False) -> None:
        raise NotImplementedError

    def _trip_command(self, exc: CommandError) -> None:
        raise NotImplementedError

    def _step(self, event: Event, **changes: Any) -> None:
        raise NotImplementedError

    def _show_machine(self, **changes: Any) -> None:
        raise NotImplementedError

    def _set_snapshot(self, **changes: Any) -> None:
        raise NotImplementedError

    def _event(self, type_: str, **data: Any) -> None:
        raise NotImplementedError

    def _on_deviation(self, name: str) -> None:
        raise NotImplementedError

    def _send_request_control(self) -> None:
        raise NotImplementedError

    def _begin_stop_envelope(self) -> None:
        raise NotImplementedError

    async def wait_stopped(self, timeout_s: float) -> bool:
        raise NotImplementedError

    def _heartbeat_period(self) -> float | None:
        raise NotImplementedError

    def limits_for(self, program: Program | None) -> EffectiveLimits:
        raise NotImplementedError

    def _remaining_s(self, now: float) -> float | None:
        raise NotImplementedError

    # Heart rate (heart.py): the supervisor's hooks in the telemetry, the loop and the walker.
    def _hr_treadmill(self, bpm: int, now: float) -> None:
        raise NotImplementedError

    def _hr_interlock_bpm(self) -> int | None:
        raise NotImplementedError

    def _hr_tick(self, now: float) -> None:
        raise NotImplementedError

    def _hr_begin_segment(self, seg: Segment, limits: EffectiveLimits) -> None:
        raise NotImplementedError

    def _hr_end_segment(self) -> None:
        raise NotImplementedError

    def _hr_resume_segment(self, speed_kmh: float, limits: EffectiveLimits,
                           seg: Segment | None) -> None:
        raise NotImplementedError
