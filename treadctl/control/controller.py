"""The controller of one treadmill: sessions, the fixed-rate loop, interlocks and the latch.

One ``Controller`` per treadmill, long-lived (the daemon keeps one per lane; ``treadctl
run`` uses one for a single session). Three activities share it:

* the **session task** walks the program: segment entry, direction changes through a
  measured standstill plus dwell and a read-back, pause/resume, the final ramp down;
* the **loop task** ticks at ``tick_hz``: keepalive to the firmware's watchdog (more often
  than a tick when the profile's link timeout is short), timer interlocks (telemetry
  silence, dead-man heartbeat), and following the current ramps by handing setpoints to
  the sender;
* the **sender task** puts the latest wanted setpoints on the wire, one procedure at a
  time, only when they moved by an increment.

Telemetry checks (overspeed, direction, tracking, heart rate) run synchronously inside
the notification handler, so a fault frame becomes a stop frame within the same call.
Any trip goes through :meth:`_trip`: latch, Stop on the wire, motion blocked, escalation.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from treadctl import ftms
from treadctl.clock import Clock, LoopClock
from treadctl.control.client import (
    CommandError,
    FTMSClient,
    MotionBlocked,
    consume_result,
)
from treadctl.control.machine import (
    ControlError,
    Event,
    Failure,
    Reading,
    SafetyMachine,
    State,
    Step,
)
from treadctl.control.planner import (
    Ramp,
    incline_ramp,
    on_grid,
    planned_ramp_s,
    quantize_toward,
    speed_ramp,
)
from treadctl.control.safety import Interlock, Latch, SafetyConfig, Trip
from treadctl.limits import EffectiveLimits, Limits, effective_limits
from treadctl.profiles import FirmwareProfile
from treadctl.programs.model import Program, Segment
from treadctl.programs.validate import validate_program
from treadctl.transport.base import Transport
from treadctl.types import KMH_PER_MPS, Direction

log = logging.getLogger(__name__)


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
    hr_bpm: int | None = None
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


#: The controller's loop sends at least this many keepalives per firmware link timeout, so
#: the firmware watchdog only fires after every host frame was lost for 7/8 of it.
KEEPALIVES_PER_LINK_TIMEOUT = 8


#: A ramp down the sender cannot follow (a firmware's slow command pace) is given this long
#: past its planned end; then the Stop goes out and the firmware brakes at its stop rate.
RAMP_OVERRUN_S = 5.0


#: The ``finished`` reason of a controlled stop asked for by an operator (cmd/stop, Ctrl-C).
STOP_REASON = "stopped on request"
#: ... and of the daemon's shutdown (SIGTERM/SIGINT), so a back-end can tell them apart.
SHUTDOWN_REASON = "daemon shutdown"


class DirectionError(CommandError):
    """The machine's direction read-back does not match what was commanded."""

    failure = Failure.DIRECTION


class _StopRequested(Exception):
    pass


class Controller:
    def __init__(
        self,
        transport: Transport,
        profile: FirmwareProfile,
        *,
        clock: Clock | None = None,
        site_limits: Limits | None = None,
        safety: SafetyConfig | None = None,
        tick_hz: float = 10.0,
        treadmill_id: str = "local",
        heartbeat_s: float | None = None,
        recorder_factory: Callable[[Controller, Program, str], Any] | None = None,
        machine: SafetyMachine | None = None,
    ) -> None:
        if not 1 <= tick_hz <= 50:
            raise ValueError(f"tick_hz must be within 1..50, got {tick_hz}")
        self.transport = transport
        self.profile = profile
        self.clock: Clock = clock or LoopClock()
        self.site_limits = site_limits
        self.cfg = safety or SafetyConfig()
        self.tick_s = 1.0 / tick_hz
        # Keepalives go out from the loop (a hung loop must starve the firmware watchdog), at
        # least KEEPALIVES_PER_LINK_TIMEOUT per link_timeout_ms and at least once per tick:
        # the link then survives losing every host frame for 7/8 of the timeout (a noise
        # burst), with margin, instead of racing the deadline (docs/soak.md, soak-3).
        link_timeout_s = profile.control.link_timeout_ms / 1000
        self._keepalives_per_tick = max(
            1, math.ceil(self.tick_s * KEEPALIVES_PER_LINK_TIMEOUT / link_timeout_s - 1e-9)
        )
        self.keepalive_s = self.tick_s / self._keepalives_per_tick
        self.treadmill_id = treadmill_id
        self.site_heartbeat_s = heartbeat_s
        self.recorder_factory = recorder_factory
        #: States, latch and interlocks (one per treadmill; the daemon's lane keeps its
        #: machine across the controllers it builds, so a latch survives a reconnect).
        self.machine = machine if machine is not None else SafetyMachine(self.cfg)
        self.client = FTMSClient(transport, profile, self.clock)
        self.client.motion_guard = lambda: self.machine.motion_blocked
        self.client.on_telemetry = self._on_telemetry
        self.client.on_status = self._on_status
        self.client.on_direction = self._on_direction
        self.client.on_stop_result = self._on_stop_result
        # Once per session and deviation (docs/ftms.md, "Real devices that deviate"): a
        # daemon lane keeps its connection across sessions, each session's record says it.
        self._deviations_reported: set[str] = set()
        self.client.on_deviation = self._on_deviation
        transport.set_disconnect_handler(self._on_link_lost)

        self.snapshot = Snapshot(
            state=self.machine.state,
            latched=self.machine.latched,
            reason=self.machine.trip.reason if self.machine.trip else None,
        )
        self.state_listeners: list[Callable[[Snapshot], None]] = []
        self.telemetry_listeners: list[Callable[[Snapshot], None]] = []
        self.event_listeners: list[Callable[[dict[str, Any]], None]] = []

        # Measurements
        self.last_rx = -math.inf
        self.measured_kmh = 0.0
        self.measured_dir: Direction | None = None
        self._distance_base_m: float | None = None
        self._telemetry_seen = asyncio.Event()

        # What we told the firmware
        self.commanded_kmh = 0.0
        self.commanded_incline = 0.0
        self.commanded_dir = Direction.FORWARD
        self.belt_running = False
        self._last_speed_sent = -math.inf
        self._stop_envelope: Ramp | None = None

        # Plan being followed
        self._speed_ramp: Ramp | None = None
        self._incline_ramp: Ramp | None = None
        self._want_speed: float | None = None
        self._want_incline: float | None = None
        self._want_changed = asyncio.Event()

        self._program: Program | None = None
        self._limits: EffectiveLimits | None = None
        self._session_task: asyncio.Task[SessionResult] | None = None
        self._escalation: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_requested = False
        self._stop_reason = STOP_REASON
        self._pause_requested = False
        self._resume = asyncio.Event()
        self._last_heartbeat = -math.inf
        self._paused_since: float | None = None
        self._session_started = 0.0
        self._paused_total = 0.0
        self._recorder: Any = None
        self._driving = False  # the session task is still driving the belt (not recording)
        self._opened = False

    # ====================================================================== lifecycle
    async def open(self) -> None:
        """Connect, take control and command Stop before anything else (docs/safety.md)."""
        await self.client.connect()
        self._opened = True
        self._tasks.append(asyncio.create_task(self._loop(), name="treadctl-loop"))
        self._tasks.append(asyncio.create_task(self._sender(), name="treadctl-sender"))
        with contextlib.suppress(CommandError):
            await self.client.request_control()
        self.client.stop_now()
        self.last_rx = self.clock.now()
        step = self.machine.link_up()
        if step.trip is not None:
            # A latch that outlived the last link (daemon lane): Stop again on this one.
            self._begin_escalation()
        self._show_machine()

    async def close(self) -> None:
        """Stop the belt (always), end any session, close the link."""
        if self._session_task is not None and not self._session_task.done():
            self._session_task.cancel()
            with contextlib.suppress(BaseException):
                await self._session_task
        if self._opened:
            self.client.stop_now()
            # Let the stop frame flush before the link goes away.
            await asyncio.sleep(0)
        for task in self._tasks:
            task.cancel()
        if self._escalation is not None:
            self._escalation.cancel()
        pending = [t for t in [*self._tasks, self._escalation] if t is not None]
        if pending:
            # Bounded: closing must never hang on a task that will not finish.
            await asyncio.wait(pending, timeout=2.0)
        self._tasks.clear()
        await self.client.close()
        self._opened = False

    async def __aenter__(self) -> Controller:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ====================================================================== commands
    def limits_for(self, program: Program | None) -> EffectiveLimits:
        return effective_limits(self.profile, self.site_limits, program.limits if program else None)

    def start(self, program: Program) -> asyncio.Task[SessionResult]:
        """Validate and start a session; returns its task. Raises ControlError."""
        self.machine.check_start(session_active=self._session_active(), speed_kmh=self.measured_kmh)
        limits = self.limits_for(program)
        violations = validate_program(program, limits)
        if violations:
            raise ControlError("; ".join(str(v) for v in violations))
        self._program = program
        self._limits = limits
        self._stop_requested = False
        self._stop_reason = STOP_REASON
        self._pause_requested = False
        self._resume.set()
        session_id = _new_session_id(self.treadmill_id, self.clock)
        self._recorder = None
        if self.recorder_factory is not None:
            try:
                self._recorder = self.recorder_factory(self, program, session_id)
                session_id = getattr(self._recorder, "session_id", session_id)
            except Exception as exc:  # recording must never stop a session from being safe
                log.error("session recorder unavailable: %s", exc)
        self.snapshot = replace(
            self.snapshot,
            program=program.name,
            segment=None,
            segment_count=len(program.segments),
            session_id=session_id,
            elapsed_s=0.0,
            distance_m=0.0,
            remaining_s=sum(s.duration_s for s in program.segments),
            reason=None,
            warnings=[],
        )
        self._distance_base_m = None
        self._last_heartbeat = self.clock.now()
        self._step(Event.START)
        self._session_task = asyncio.create_task(self._session(program, limits, session_id))
        return self._session_task

    async def stop(self, reason: str = STOP_REASON) -> None:
        """Controlled stop: Stop, the session ends as 'stopped' with ``reason`` (a daemon
        shutdown says so, an operator's stop is "stopped on request"). Safe in any state."""
        if self._session_task is None or self._session_task.done():
            self.client.stop_now()
            return
        self._stop_reason = reason
        self._stop_requested = True
        self._resume.set()
        self._want_changed.set()

    def pause(self) -> None:
        self.machine.check_pause()
        self._pause_requested = True
        self._resume.clear()

    def resume(self) -> None:
        self.machine.check_resume(pause_requested=self._pause_requested)
        self._pause_requested = False
        self._resume.set()

    def set_manual(self, speed_kmh: float | None = None, incline_pct: float | None = None) -> None:
        """Change speed/incline of the running segment, inside the active limits."""
        self.machine.check_set()
        if self._limits is None:
            raise ControlError(f"cannot set while {self.machine.state.value}")
        lim = self._limits
        d = self.commanded_dir
        if speed_kmh is not None:
            cap = lim.reverse_max_speed_kmh if d is Direction.REVERSE else lim.max_speed_kmh
            if not lim.min_speed_kmh <= speed_kmh <= cap:
                raise ControlError(
                    f"speed_kmh {speed_kmh} outside {lim.min_speed_kmh}..{cap} km/h ({d.value})"
                )
            if not on_grid(speed_kmh, lim.speed_increment_kmh):
                raise ControlError(
                    f"speed_kmh {speed_kmh} is not a multiple of {lim.speed_increment_kmh} km/h"
                )
        if incline_pct is not None:
            lo, hi = (
                (lim.reverse_min_incline_pct, lim.reverse_max_incline_pct)
                if d is Direction.REVERSE
                else (lim.min_incline_pct, lim.max_incline_pct)
            )
            if not lo <= incline_pct <= hi:
                raise ControlError(f"incline_pct {incline_pct} outside {lo}..{hi} %")
            if not on_grid(incline_pct, lim.incline_increment_pct):
                raise ControlError(
                    f"incline_pct {incline_pct} is not a multiple of {lim.incline_increment_pct} %"
                )
        now = self.clock.now()
        if speed_kmh is not None:
            self._speed_ramp = speed_ramp(
                now, self._ramp_value(self._speed_ramp, now), speed_kmh, lim, d
            )
            self._set_snapshot(target_speed_kmh=speed_kmh)
        if incline_pct is not None:
            self._incline_ramp = incline_ramp(
                now, self._ramp_value(self._incline_ramp, now), incline_pct, lim
            )
            self._set_snapshot(target_incline_pct=incline_pct)
        self._event("command", command="set", speed_kmh=speed_kmh, incline_pct=incline_pct)

    def estop(
        self,
        reason: str = "remote e-stop",
        interlock: Interlock = Interlock.REMOTE_ESTOP,
        *,
        stop_sent: bool = False,
    ) -> None:
        """Emergency stop: synchronous, from any state, any caller.

        ``stop_sent=True`` only when the caller put ``client.stop_now()`` on the wire in the
        same synchronous step (a gym-wide fan-out sends every Stop first, then latches)."""
        self._act(self.machine.estop(interlock, reason), stop_sent=stop_sent)

    def reset(self, reason: str = "reset") -> None:
        """Clear the latch (the machine's one reset rule). Never moves the belt: it sends
        nothing, and a new start is needed afterwards."""
        old = self.machine.reset(
            session_ending=self._session_active(),
            speed_kmh=self.measured_kmh,
            telemetry_age_s=self.clock.now() - self.last_rx,
        )
        if old is not None:
            self._event("reset", reason=reason, cleared=old.reason)
        self._show_machine(phase=None)

    @property
    def latch(self) -> Latch:
        """The safety machine's latch (read-only here; only :meth:`reset` clears it)."""
        return self.machine.latch

    def _session_active(self) -> bool:
        return self._session_task is not None and not self._session_task.done()

    def heartbeat(self) -> None:
        self._last_heartbeat = self.clock.now()

    async def wait_stopped(self, timeout_s: float) -> bool:
        """Wait until the measured belt speed is at standstill (True) or timeout (False)."""
        deadline = self.clock.now() + timeout_s
        while self.clock.now() < deadline:
            if (
                self.measured_kmh <= self.cfg.standstill_kmh
                and self.clock.now() - self.last_rx < 1.0
            ):
                return True
            if self.snapshot.state is State.DISCONNECTED:
                return False
            await asyncio.sleep(self.tick_s)
        return False

    async def wait_telemetry(self, timeout_s: float) -> bool:
        """Has any Treadmill Data arrived since the link opened (waiting up to ``timeout_s``)?
        A peer that accepts a connection but never speaks FTMS fails here, before a start."""
        if self._telemetry_seen.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._telemetry_seen.wait()
        return self._telemetry_seen.is_set()

    @property
    def session_task(self) -> asyncio.Task[SessionResult] | None:
        return self._session_task

    @property
    def escalation_task(self) -> asyncio.Task[None] | None:
        return self._escalation

    # ====================================================================== trips
    def _act(self, step: Step, *, stop_sent: bool = False) -> None:
        """Carry out what the safety machine decided: a trip puts Stop on the wire first
        (even when already latched: a second trip stops again), then, for the first trip,
        drops the plan, tells the world, cancels the session and starts the escalation."""
        trip = step.trip
        if trip is None:
            return
        # Stop goes out first, whatever else is happening (motion is already blocked: the
        # client reads the machine's latch).
        if not stop_sent:
            self.client.stop_now()
        if not step.first:
            return
        self._speed_ramp = self._incline_ramp = None
        self._want_speed = self._want_incline = None
        self.commanded_kmh = 0.0
        self.belt_running = False
        log.warning("interlock %s: %s", trip.interlock.value, trip.detail)
        self._show_machine(target_speed_kmh=0.0, phase=None)
        self._event("estop", interlock=trip.interlock.value, reason=trip.reason)
        task = self._session_task
        if (
            task is not None
            and self._driving
            and not task.done()
            and task is not _current_task()
        ):
            task.cancel()
        self._begin_escalation()

    def _trip(self, trip: Trip, *, stop_sent: bool = False) -> None:
        """An e-stop decided outside the telemetry/timer inputs (kept for the loop's and the
        session's internal errors; everything else goes through the machine's inputs)."""
        if trip.interlock is Interlock.INTERNAL_ERROR:
            self._act(self.machine.error(trip.detail), stop_sent=stop_sent)
        else:
            self._act(self.machine.estop(trip.interlock, trip.detail), stop_sent=stop_sent)

    def _begin_escalation(self) -> None:
        if self._escalation is None or self._escalation.done():
            with contextlib.suppress(RuntimeError):
                self._escalation = asyncio.get_running_loop().create_task(self._escalate())

    async def _escalate(self) -> None:
        """If the belt does not decelerate after a stop: resend, then drop the link."""
        t0 = self.clock.now()
        v0 = self.measured_kmh
        resends = 0
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock.now()
            fresh = now - self.last_rx <= self.cfg.telemetry_timeout_s
            if fresh and self.measured_kmh <= self.cfg.standstill_kmh:
                self._event("stopped", after_s=round(now - t0, 3))
                return
            if now - t0 < self.cfg.stop_confirm_s * (resends + 1):
                continue
            decelerating = fresh and self.measured_kmh < v0 - 0.2
            if decelerating:
                v0 = self.measured_kmh
                t0 = now
                resends = 0
                continue
            if resends < self.cfg.escalate_after_resends:
                resends += 1
                self._event("escalate", action="resend-stop", speed_kmh=self.measured_kmh)
                if not self.client.in_control:
                    self._send_request_control()
                self.client.stop_now()
                continue
            self._event("escalate", action="drop-link", speed_kmh=self.measured_kmh)
            log.error(
                "belt not decelerating after stop: dropping the link for the firmware watchdog"
            )
            self.transport.drop()
            # drop() is deliberate, so the transport reports no loss: we do.
            self.machine.link_dropped()
            self._show_machine()
            return

    def _trip_command(self, exc: CommandError) -> None:
        """A failed procedure: the machine maps its typed failure to the interlock."""
        self._act(self.machine.command_failed(exc.failure, str(exc)))

    def _on_deviation(self, name: str) -> None:
        if name in self._deviations_reported:
            return
        self._deviations_reported.add(name)
        self._event("ftms-deviation", deviation=name, description=ftms.DEVIATIONS.get(name, name))

    def _send_request_control(self) -> None:
        data = ftms.encode_control_point(ftms.RequestControl())
        with contextlib.suppress(Exception):
            self.transport.write_nowait(ftms.CONTROL_POINT, data).add_done_callback(consume_result)

    def _on_stop_result(self, result: ftms.ResultCode) -> None:
        if result == ftms.ResultCode.CONTROL_NOT_PERMITTED:
            # Control was taken from us: take it back only to stop, then stop again.
            self._send_request_control()
            self.client.stop_now()

    def _on_link_lost(self, reason: str) -> None:
        self._act(self.machine.link_lost(reason))
        self._show_machine()

    # ====================================================================== telemetry
    def _on_telemetry(self, td: ftms.TreadmillData) -> None:
        now = self.clock.now()
        self.last_rx = now
        if td.speed_kmh is not None:
            speed = td.speed_kmh
            if self.client.signed_speed:
                if abs(speed) >= self.cfg.direction_min_speed_kmh:
                    self.measured_dir = Direction.REVERSE if speed < 0 else Direction.FORWARD
                speed = abs(speed)
            self.measured_kmh = speed
        snap = self.snapshot
        changes: dict[str, Any] = {"speed_kmh": round(self.measured_kmh, 2)}
        if td.inclination_pct is not None:
            changes["incline_pct"] = td.inclination_pct
        if td.heart_rate_bpm is not None:
            changes["hr_bpm"] = td.heart_rate_bpm
        if td.total_distance_m is not None and snap.session_id is not None:
            if self._distance_base_m is None:
                self._distance_base_m = float(td.total_distance_m)
            changes["distance_m"] = float(td.total_distance_m) - self._distance_base_m
        if self.measured_dir is not None and self.measured_kmh >= self.cfg.direction_min_speed_kmh:
            changes["direction"] = self.measured_dir
        if self._session_task is not None and not self._session_task.done():
            changes["elapsed_s"] = round(self._elapsed(now), 2)
            changes["remaining_s"] = self._remaining_s(now)
        self.snapshot = replace(snap, **changes)
        if self.machine.armed and self._limits is not None:
            self._act(self.machine.telemetry(self._reading(now, td, self._limits)))
        self._telemetry_seen.set()
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                self._recorder.sample(self, now)
        for listener in self.telemetry_listeners:
            listener(self.snapshot)

    def _begin_stop_envelope(self) -> None:
        """After our own Stop/Pause the firmware decelerates at its own rate: until the belt
        stands, judge it against that deceleration, not against 'commanded 0'."""
        decel = min(
            self.profile.motion.stop_decel_mps2,
            self.profile.motion.decel_mps2,
            self.profile.reverse.decel_mps2,
        )
        start = max(self.measured_kmh, self.commanded_kmh)
        self._stop_envelope = Ramp(self.clock.now(), start, 0.0, decel * 3.6)

    def _reference_kmh(self, now: float) -> float:
        """The speed the belt should be at now: the setpoint, or the stop envelope."""
        if self._stop_envelope is not None:
            return max(self.commanded_kmh, self._stop_envelope.at(now))
        return self.commanded_kmh

    def _reading(self, now: float, td: ftms.TreadmillData, lim: EffectiveLimits) -> Reading:
        d = self.commanded_dir
        return Reading(
            now=now,
            speed_kmh=self.measured_kmh,
            direction=self.measured_dir,
            hr_bpm=td.heart_rate_bpm,
            reference_kmh=self._reference_kmh(now),
            commanded_kmh=self.commanded_kmh,
            cap_kmh=lim.reverse_max_speed_kmh if d is Direction.REVERSE else lim.max_speed_kmh,
            expected=d,
            max_hr_bpm=lim.max_hr_bpm,
        )

    def _on_direction(self, direction: Direction) -> None:
        self.measured_dir = direction
        fresh = self.clock.now() - self.last_rx <= self.cfg.telemetry_timeout_s
        self._act(self.machine.direction(direction, self.commanded_dir, self.measured_kmh, fresh))

    def _on_status(self, status: ftms.MachineStatus) -> None:
        now = self.clock.now()
        # stop_is_ours() consumes one of our own stops: ask only for a user stop/pause.
        ours = (
            isinstance(status, ftms.StoppedOrPausedByUser)
            and self.machine.armed
            and not self.machine.latched
            and self.client.stop_is_ours(now)
        )
        belt_may_move = self.belt_running or self.measured_kmh > self.cfg.standstill_kmh
        self._act(self.machine.status(status, belt_may_move=belt_may_move, stop_is_ours=ours))
        self._event("machine-status", status=type(status).__name__)

    # ====================================================================== loop + sender
    async def _loop(self) -> None:
        """Fixed-rate loop: timer interlocks and ramp following every tick, a keepalive
        every ``keepalive_s`` (a tick, or a fraction of it when the link timeout is short)."""
        next_t = self.clock.now()
        step = 0
        while True:
            next_t += self.keepalive_s
            delay = next_t - self.clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = self.clock.now()  # overran: do not try to catch up in a burst
            step += 1
            if step >= self._keepalives_per_tick:
                step = 0
                try:
                    self._tick(self.clock.now())
                except Exception as exc:  # an error in the loop is itself an interlock
                    log.exception("control loop error")
                    self._trip(Trip(Interlock.INTERNAL_ERROR, f"control loop: {exc!r}"))
            with contextlib.suppress(Exception):
                await self.transport.keepalive()

    def _tick(self, now: float) -> None:
        step = self.machine.tick(now, self.last_rx, self._last_heartbeat, self._heartbeat_period())
        self._act(step)
        if self.machine.latched:
            return
        if self._speed_ramp is not None and self._limits is not None:
            want = self._ramp_value(self._speed_ramp, now)
            q = quantize_toward(
                want, self._limits.speed_increment_kmh, self._speed_ramp.v0, self._speed_ramp.v1
            )
            q = max(q, self._limits.min_speed_kmh) if q > 0 else 0.0
            if q != self._want_speed:
                self._want_speed = q
                self._want_changed.set()
        if self._incline_ramp is not None and self._limits is not None:
            want_i = self._ramp_value(self._incline_ramp, now)
            qi = quantize_toward(
                want_i,
                self._limits.incline_increment_pct,
                self._incline_ramp.v0,
                self._incline_ramp.v1,
            )
            if qi != self._want_incline:
                self._want_incline = qi
                self._want_changed.set()

    def _heartbeat_period(self) -> float | None:
        prog = self._program.heartbeat_s if self._program is not None else None
        periods = [p for p in (prog, self.site_heartbeat_s) if p is not None]
        return min(periods) if periods else None

    async def _sender(self) -> None:
        """Put wanted setpoints on the wire: speed moves one increment per procedure, and no
        faster than the ramp's rate, so a link that falls behind the plan makes the belt
        lag (safe) instead of catching up in a burst of acceleration."""
        while True:
            await self._want_changed.wait()
            self._want_changed.clear()
            while not self.latch.latched:
                speed, incline = self._want_speed, self._want_incline
                # A setpoint only for a belt we started: after our Stop it is not wanted.
                if (
                    self.belt_running
                    and speed is not None
                    and speed > 0
                    and speed != self.commanded_kmh
                ):
                    step, wait = self._next_speed_step(speed)
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait):
                                await self._want_changed.wait()
                        self._want_changed.clear()
                        continue
                    await self._send_speed(step)
                elif incline is not None and incline != self.commanded_incline:
                    await self._send_incline(incline)
                else:
                    break

    def _next_speed_step(self, want: float) -> tuple[float, float]:
        """(next setpoint, seconds to wait before sending it)."""
        lim = self._limits
        current = self.commanded_kmh
        if lim is None or current <= 0:
            return want, 0.0
        inc = lim.speed_increment_kmh
        step = min(want, current + inc) if want > current else max(want, current - inc)
        step = max(round(step, 6), lim.min_speed_kmh)
        ramp = self._speed_ramp
        rate = ramp.rate if ramp is not None and ramp.rate > 0 else math.inf
        wait = self._last_speed_sent + abs(step - current) / rate - self.clock.now()
        # Below a microsecond a timer could not move the clock (float resolution): go now.
        return step, (wait if wait > 1e-6 else 0.0)

    async def _send_speed(self, speed: float) -> None:
        signed = (
            -speed
            if self.commanded_dir is Direction.REVERSE and self.client.signed_speed
            else speed
        )
        prev = self.commanded_kmh
        # Commanded is raised before the ack (overspeed margin must cover the new target),
        # and lowered only after it, so the interlocks always judge the more lenient one.
        self.commanded_kmh = max(prev, speed)
        try:
            self._last_speed_sent = self.clock.now()
            await self.client.command(ftms.SetTargetSpeed(signed))
            self.commanded_kmh = speed
            if abs(speed - prev) > 2 * self.cfg.tracking_band_kmh:
                self.machine.track_reset()
        except MotionBlocked:
            return
        except CommandError as exc:
            self._trip_command(exc)

    async def _send_incline(self, incline: float) -> None:
        try:
            await self.client.command(ftms.SetTargetInclination(incline))
            self.commanded_incline = incline
        except MotionBlocked:
            return
        except CommandError as exc:
            self._trip_command(exc)

    def _elapsed(self, now: float) -> float:
        """Session time: wall of the session minus time spent paused (incl. a pause now)."""
        paused = self._paused_total
        if self._paused_since is not None:
            paused += now - self._paused_since
        return max(0.0, now - self._session_started - paused)

    @staticmethod
    def _ramp_value(ramp: Ramp | None, now: float) -> float:
        return ramp.at(now) if ramp is not None else 0.0

    # ====================================================================== session
    async def _session(
        self, program: Program, limits: EffectiveLimits, session_id: str
    ) -> SessionResult:
        self._session_started = self.clock.now()
        self._paused_total = 0.0
        completed = 0
        outcome = Outcome.FINISHED
        reason: str | None = None
        self._event("session-start", program=program.name, session_id=session_id)
        self._deviations_reported = set()
        for name in list(self.client.deviations):
            self._on_deviation(name)  # seen on this connection before the session began
        self._driving = True
        try:
            # Nested: a trip (or shutdown) that cancels us while we carry out a stop request
            # lands in the handlers below, not out of an except clause as a raw cancel.
            try:
                if self.latch.latched:
                    # Tripped between start() and our first step (a trip cannot cancel a
                    # task that never ran: its body, and this bookkeeping, would be skipped).
                    raise asyncio.CancelledError()
                if not self.client.in_control:
                    await self.client.request_control()
                for index, segment in enumerate(program.segments):
                    await self._run_segment(index, segment, limits)
                    completed = index + 1
                await self._ramp_down_and_stop(limits)
            except _StopRequested:
                outcome = Outcome.STOPPED
                reason = self._stop_reason
                await self._ramp_down_and_stop(limits, quick=True)
        except asyncio.CancelledError:
            # Cancelled by a trip (latched) or by shutdown: the belt is commanded to stop.
            self.client.stop_now()
            if self.latch.latched:
                outcome, reason = (
                    Outcome.ESTOPPED,
                    self.latch.trip.reason if self.latch.trip else None,
                )
            else:
                outcome, reason = Outcome.STOPPED, "cancelled"
                self._step(Event.ENDED)
        except CommandError as exc:
            self._trip_command(exc)
            outcome, reason = (
                Outcome.ESTOPPED,
                self.latch.trip.reason if self.latch.trip else str(exc),
            )
        except Exception as exc:
            log.exception("session error")
            self._trip(Trip(Interlock.INTERNAL_ERROR, f"session: {exc!r}"))
            outcome, reason = (
                Outcome.ERROR,
                self.latch.trip.reason if self.latch.trip else repr(exc),
            )
        finally:
            # From here on a trip only latches: cancelling the bookkeeping below would lose
            # the record and the 'finished' event.
            self._driving = False
            self.machine.disarm()
            self._speed_ramp = self._incline_ramp = None
            self._want_speed = self._want_incline = None
        if self.latch.latched and outcome is not Outcome.ERROR:
            outcome = Outcome.ESTOPPED
            reason = self.latch.trip.reason if self.latch.trip else reason
        elapsed = self._elapsed(self.clock.now())
        result = SessionResult(
            outcome=outcome,
            reason=reason,
            session_id=session_id,
            elapsed_s=round(elapsed, 2),
            distance_m=round(self.snapshot.distance_m, 1),
            segments_completed=completed,
            belt_stopped=self.measured_kmh <= self.cfg.standstill_kmh,
        )
        if outcome is Outcome.FINISHED:
            self._set_snapshot(remaining_s=0.0)
        if not self.latch.latched:
            self._step(Event.ENDED, segment=None, phase=None, target_speed_kmh=0.0)
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            finishing = asyncio.ensure_future(recorder.finish(self, result))
            while not finishing.done():
                # A shutdown cancelling us now must not leave the session 'running' in the
                # store: the session is over, only its record is being written.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(finishing)
            try:
                result.summary = finishing.result()
            except Exception as exc:
                log.error("could not finish the session record: %s", exc)
        self._event(
            "finished",
            outcome=outcome.value,
            reason=reason,
            session_id=session_id,
            elapsed_s=result.elapsed_s,
            distance_m=result.distance_m,
            segments_completed=completed,
            summary=result.summary,
        )
        return result

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise _StopRequested()

    async def _wait_session_time(self, end_s: float) -> None:
        """Until session time (pauses excluded) reaches ``end_s``, in ticks, so stop and
        pause requests are seen promptly (a pause holds session time still)."""
        while True:
            self._check_stop()
            if self._pause_requested:
                await self._pause_cycle()
                continue
            left = end_s - self._elapsed(self.clock.now())
            if left <= 1e-6:
                return
            await asyncio.sleep(min(self.tick_s, left))

    def _remaining_s(self, now: float) -> float | None:
        """Program time left: listed total minus session time. It reaches 0 only when the
        session is over (the belt stands): until then it shows at least 0.1 s."""
        if self._program is None:
            return None
        left = self._program.total_duration_s - self._elapsed(now)
        return round(max(left, 0.1), 1)

    def _final_stop_lead_s(self, seg: Segment, limits: EffectiveLimits) -> float:
        """How long before the program's end the final ramp down must begin, so the belt
        stands when the listed duration is over: the planner's ramp to the minimum speed
        (no faster than one increment per procedure), then the firmware's stop from there
        and one telemetry period to see it."""
        if seg.speed_kmh <= 0:
            return 0.0
        ctl = self.profile.control
        step_s = max(ctl.min_command_interval_ms, ctl.ack_delay_ms) / 1000
        v0, v_min = seg.speed_kmh, limits.min_speed_kmh
        ramp_s = planned_ramp_s(v0, v_min, limits, seg.direction, step_s)
        nominal_s = planned_ramp_s(v0, v_min, limits, seg.direction)
        v_stop = v_min
        if ramp_s > nominal_s + RAMP_OVERRUN_S:
            # A slow command pace: the Stop goes out when the ramp overruns (_sleep_ramp).
            ramp_s = nominal_s + RAMP_OVERRUN_S
            v_stop = max(v_min, v0 - ramp_s / step_s * limits.speed_increment_kmh)
        stop_s = v_stop / KMH_PER_MPS / self.profile.motion.stop_decel_mps2
        return ramp_s + step_s + stop_s + 1.0 / ctl.telemetry_hz

    async def _pause_cycle(self) -> None:
        assert self._limits is not None
        resume_speed = self._speed_ramp.v1 if self._speed_ramp else 0.0
        resume_incline = self.commanded_incline
        self._step(Event.STOPPING, phase="pausing")
        await self._to_standstill(self._limits, pause=True)
        self._paused_since = self.clock.now()
        self._step(Event.PAUSED, phase=None)
        self._event("paused")
        try:
            await self._resume.wait()
        finally:
            if self._paused_since is not None:
                self._paused_total += self.clock.now() - self._paused_since
                self._paused_since = None
        self._check_stop()
        self._step(Event.BELT_STARTING, phase="resuming")
        await self._start_belt(self.commanded_dir, self._limits)
        now = self.clock.now()
        self._speed_ramp = speed_ramp(
            now, self._limits.min_speed_kmh, resume_speed, self._limits, self.commanded_dir
        )
        self._incline_ramp = incline_ramp(now, self.commanded_incline, resume_incline, self._limits)
        self._step(Event.RUNNING, phase=None)
        self._event("resumed")

    async def _run_segment(self, index: int, seg: Segment, limits: EffectiveLimits) -> None:
        self._check_stop()
        label = seg.label or f"{seg.direction.value} {seg.speed_kmh:g} km/h"
        self._set_snapshot(
            segment=index + 1,
            segment_label=label,
            target_speed_kmh=seg.speed_kmh,
            target_incline_pct=seg.incline_pct,
        )
        self._event(
            "segment",
            segment=index + 1,
            direction=seg.direction.value,
            speed_kmh=seg.speed_kmh,
            incline_pct=seg.incline_pct,
            duration_s=seg.duration_s,
        )
        needs_turn = seg.direction is not self.commanded_dir
        if needs_turn or seg.speed_kmh == 0:
            # Heading for standstill first: that is the target until the turn is done.
            self._set_snapshot(target_speed_kmh=0.0)
            if self.belt_running or self.measured_kmh > self.cfg.standstill_kmh:
                phase = "direction-change" if needs_turn else "stopping"
                self._step(Event.STOPPING, phase=phase)
                await self._to_standstill(limits)
            if needs_turn:
                await self._change_direction(seg.direction, limits)
            # The machine confirmed the new direction (read-back): show it from now on.
            self._set_snapshot(target_speed_kmh=seg.speed_kmh, direction=seg.direction)
        t_seg = self.clock.now()
        now = t_seg
        if seg.speed_kmh > 0:
            if not self.belt_running:
                self._step(Event.BELT_STARTING, phase="starting")
                await self._start_belt(seg.direction, limits)
                now = self.clock.now()
            v0 = max(self._ramp_value(self._speed_ramp, now), limits.min_speed_kmh)
            self._speed_ramp = speed_ramp(now, v0, seg.speed_kmh, limits, seg.direction)
        self._incline_ramp = incline_ramp(now, self.commanded_incline, seg.incline_pct, limits)
        self.machine.arm()
        self._step(Event.RUNNING, phase=None, direction=seg.direction)
        # The listed durations are what the user gets: a segment's time runs from its
        # entry (its direction change, start and ramps count toward it), and the last one
        # ends early enough for the final ramp down to end with the program.
        segments = self._program.segments if self._program else [seg]
        end_s = sum(s.duration_s for s in segments[: index + 1])
        if index == len(segments) - 1:
            end_s -= self._final_stop_lead_s(seg, limits)
        await self._wait_session_time(end_s)

    async def _start_belt(self, direction: Direction, limits: EffectiveLimits) -> None:
        """From standstill: first setpoint at the minimum speed, Start, wait for motion."""
        self._stop_envelope = None
        # Trust the machine, not our memory: after a failed direction change the firmware
        # may hold the other direction. Ask it before every start.
        if (
            self.profile.reverse.method == "vendor-characteristic"
            and await self.client.read_direction() is not direction
        ):
            await self._change_direction(direction, limits)
        self.commanded_dir = direction
        first = limits.min_speed_kmh
        signed = -first if direction is Direction.REVERSE and self.client.signed_speed else first
        self.machine.track_reset()
        if self.profile.control.requires_start_before_speed:
            await self.client.command(ftms.StartOrResume())
            self.belt_running = True
            self.commanded_kmh = first
            await self.client.command(ftms.SetTargetSpeed(signed))
        else:
            self.commanded_kmh = first
            await self.client.command(ftms.SetTargetSpeed(signed))
            await self.client.command(ftms.StartOrResume())
            self.belt_running = True
        self._want_speed = first
        self._speed_ramp = Ramp(self.clock.now(), first, first, 1.0)
        if self.client.signed_speed and direction is Direction.REVERSE:
            # Read-back for signed-speed firmware is the sign of the belt it reports.
            await self._await_direction(direction, limits)
        # The firmware ramps to its minimum speed on its own; our ramp starts from there.
        deadline = self.clock.now() + 5.0
        while self.measured_kmh < first - 0.05 and self.clock.now() < deadline:
            self._check_stop()
            await asyncio.sleep(self.tick_s)

    async def _await_direction(self, direction: Direction, limits: EffectiveLimits) -> None:
        deadline = self.clock.now() + self.cfg.direction_readback_timeout_s + 2.0
        while self.clock.now() < deadline:
            self._check_stop()
            if (
                self.measured_dir is direction
                and self.measured_kmh >= self.cfg.direction_min_speed_kmh
            ):
                return
            if (
                self.measured_dir is not None
                and self.measured_dir is not direction
                and self.measured_kmh >= self.cfg.direction_min_speed_kmh
            ):
                raise DirectionError(
                    f"belt started {self.measured_dir.value}, expected {direction.value}"
                )
            await asyncio.sleep(self.tick_s)
        raise DirectionError(f"no read-back of direction {direction.value} after start")

    async def _to_standstill(self, limits: EffectiveLimits, pause: bool = False) -> None:
        """Ramp down at the planner's decel to the minimum speed, Stop/Pause, wait for 0."""
        now = self.clock.now()
        if self.belt_running and self.commanded_kmh > limits.min_speed_kmh:
            self._speed_ramp = speed_ramp(
                now, self.commanded_kmh, limits.min_speed_kmh, limits, self.commanded_dir
            )
            await self._sleep_ramp(self._speed_ramp)
        self._speed_ramp = None
        self._want_speed = None
        await self.client.command(ftms.StopOrPause(pause=pause))
        self._begin_stop_envelope()
        self.belt_running = False
        self.commanded_kmh = 0.0
        if not await self.wait_stopped(timeout_s=10.0):
            raise CommandError(
                "belt did not reach standstill after stop", failure=Failure.NOT_STOPPED
            )

    async def _sleep_ramp(self, ramp: Ramp) -> None:
        while not ramp.done(self.clock.now()) or self.commanded_kmh != ramp.v1:
            self._check_stop()
            if self.latch.latched:
                return
            await asyncio.sleep(self.tick_s)
            if self.clock.now() > ramp.t_end + RAMP_OVERRUN_S:
                return

    async def _change_direction(self, direction: Direction, limits: EffectiveLimits) -> None:
        """Standstill + dwell, command the new direction, wait for the read-back."""
        self._step(Event.STOPPING, phase="dwell")
        dwell_until = self.clock.now() + limits.standstill_dwell_s
        while self.clock.now() < dwell_until:
            self._check_stop()
            if self.measured_kmh > self.cfg.standstill_kmh:
                dwell_until = self.clock.now() + limits.standstill_dwell_s
            await asyncio.sleep(self.tick_s)
        self._set_snapshot(phase="direction-change")
        self._event("direction-change", to=direction.value)
        if self.profile.reverse.method == "vendor-characteristic":
            await self.client.write_direction(direction)
            deadline = self.clock.now() + self.cfg.direction_readback_timeout_s
            while True:
                read = await self.client.read_direction()
                if read is direction:
                    break
                if self.clock.now() > deadline:
                    raise DirectionError(
                        f"direction read-back says {read.value}, expected {direction.value}"
                    )
                await asyncio.sleep(self.tick_s)
        self.commanded_dir = direction

    async def _ramp_down_and_stop(self, limits: EffectiveLimits, quick: bool = False) -> None:
        self._step(Event.STOPPING, phase="stopping")
        if quick:
            self.machine.disarm()
        self._stop_requested = False
        if quick:
            # Nothing may follow our Stop: a wanted setpoint left behind would be sent by the
            # sender (commanded drops to 0 below), and a firmware that wants Start before
            # speed refuses it (kinetic-rx2: operation_failed, a false e-stop).
            self._speed_ramp = self._incline_ramp = None
            self._want_speed = self._want_incline = None
            self.client.stop_now()
            self._begin_stop_envelope()
            self.belt_running = False
            self.commanded_kmh = 0.0
            await self.wait_stopped(timeout_s=15.0)
            return
        if self.belt_running:
            await self._to_standstill(limits)
        self._incline_ramp = None

    # ====================================================================== state out
    def _step(self, event: Event, **changes: Any) -> None:
        """A step of the session walker: the machine moves the state (its table)."""
        self.machine.session(event)
        self._show_machine(**changes)

    def _show_machine(self, **changes: Any) -> None:
        """Publish the machine's state and latch in the snapshot (a view, never a copy
        that is read back: decisions read the machine)."""
        trip = self.machine.trip
        self._set_snapshot(
            state=self.machine.state,
            latched=trip is not None,
            reason=trip.reason if trip is not None else None,
            **changes,
        )

    def _set_snapshot(self, **changes: Any) -> None:
        before = self.snapshot
        after = replace(before, **changes)
        self.snapshot = after
        keys = (
            "state",
            "latched",
            "reason",
            "segment",
            "direction",
            "target_speed_kmh",
            "target_incline_pct",
            "phase",
            "program",
            "session_id",
        )
        if any(getattr(before, k) != getattr(after, k) for k in keys):
            for listener in self.state_listeners:
                listener(after)

    def _event(self, type_: str, **data: Any) -> None:
        event = {"type": type_, "t_s": round(self.clock.now(), 3), **data}
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                self._recorder.event(self, event)
        for listener in self.event_listeners:
            listener(event)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _new_session_id(treadmill_id: str, clock: Clock) -> str:
    stamp = clock.wall().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{treadmill_id}-{uuid.uuid4().hex[:4]}"


__all__ = [
    "ControlError",
    "Controller",
    "Outcome",
    "SessionResult",
    "Snapshot",
    "State",
]
