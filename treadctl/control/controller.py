"""The controller of one treadmill: lifecycle, commands, and the I/O around its safety
state machine.

One ``Controller`` per treadmill, long-lived (``treadctl run`` uses one for a single
session; the daemon builds one per link and hands each the lane's ``SafetyMachine``).
Every interlock is decided in ``machine.py``: this module feeds the machine its inputs
(telemetry, machine status, direction read-back, link loss, failed commands, e-stops,
reset); each ``Step`` is carried out in ``loop.py`` (``_act``): Stop on the wire first,
then the plan dropped, the ``estop`` event, the session cancelled, the escalation.
Telemetry is judged synchronously inside the notification handler, so a fault frame
becomes a stop frame within the same call.

Its parts (all deriving from ``core.ControllerCore``, which declares their shared state):
the program walker (``session.py``), the loop, sender, escalation and the carrying out of
a trip (``loop.py``), the machine's inputs (``inputs.py``: telemetry, status, danger, link
loss), heart rate (``heart.py``: the HR supervisor, the strap, governed segments), and the
snapshot and recorder interface (``snapshot.py``); docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from treadctl.clock import Clock, LoopClock
from treadctl.control.client import CommandError
from treadctl.control.heart import HeartRateControl
from treadctl.control.inputs import MachineInputs
from treadctl.control.loop import ControlLoop
from treadctl.control.machine import ControlError, Event, SafetyMachine, State
from treadctl.control.machine_link import LinkFactory, MachineLink, link_factory_for
from treadctl.control.planner import Ramp, incline_ramp, speed_ramp
from treadctl.control.reverse import reverse_method
from treadctl.control.safety import Interlock, Latch, SafetyConfig, setpoint_refusal
from treadctl.control.session import RAMP_OVERRUN_S, DirectionError, SessionWalker
from treadctl.control.snapshot import Outcome, SessionRecorder, SessionResult, Snapshot
from treadctl.hr.strap import HRSource
from treadctl.hr.supervisor import SupervisorConfig
from treadctl.limits import EffectiveLimits, Limits, effective_limits, rear_facing_refusal
from treadctl.profiles import FirmwareProfile
from treadctl.programs.model import Program
from treadctl.programs.validate import validate_program
from treadctl.transport.base import Transport
from treadctl.types import Direction

log = logging.getLogger(__name__)


#: The controller's loop sends at least this many keepalives per firmware link timeout, so
#: the firmware watchdog only fires after every host frame was lost for 7/8 of it.
KEEPALIVES_PER_LINK_TIMEOUT = 8


#: The snapshot fields whose change is a state change (``state_listeners`` are called).
_STATE_KEYS = ("state", "latched", "reason", "segment", "direction", "target_speed_kmh",
               "target_incline_pct", "phase", "program", "session_id", "hr_quality", "warnings")

#: The ``finished`` reason of a controlled stop asked for by an operator (cmd/stop, Ctrl-C).
STOP_REASON = "stopped on request"
#: ... and of the daemon's shutdown (SIGTERM/SIGINT), so a back-end can tell them apart.
SHUTDOWN_REASON = "daemon shutdown"


class Controller(SessionWalker, ControlLoop, MachineInputs, HeartRateControl):
    """One treadmill's controller: lifecycle, commands, the safety machine's inputs and
    their effects, and the snapshot (the walker is in ``session.py``, the loop, sender and
    escalation in ``loop.py``)."""

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
        link_factory: LinkFactory | None = None,
        rear_facing: bool = False,
        hr_url: str | None = None,
        hr_source: HRSource | None = None,
        hr_config: SupervisorConfig | None = None,
    ) -> None:
        if not 1 <= tick_hz <= 50:
            raise ValueError(f"tick_hz must be within 1..50, got {tick_hz}")
        refusal = rear_facing_refusal(profile) if rear_facing else None
        if refusal is not None:
            raise ValueError(refusal)
        #: Backward walking facing the rear of a forward-only belt (turns.py, docs/safety.md).
        self.rear_facing = rear_facing
        self.transport = transport
        self.profile = profile
        self.clock: Clock = clock or LoopClock()
        self.site_limits = site_limits
        self.cfg = safety or SafetyConfig()
        self.tick_s = 1.0 / tick_hz
        # Keepalives go out from the loop (a hung loop must starve the firmware watchdog), at
        # least KEEPALIVES_PER_LINK_TIMEOUT per link_timeout_ms: the link then survives
        # losing every host frame for 7/8 of the timeout (a noise burst), with margin,
        # instead of racing the deadline (docs/soak.md, soak-3). A tick longer than that
        # spacing has the loop wake more often than it ticks; a shorter one sends a
        # keepalive only every few ticks (at 50 Hz on treadctl-reference: every 3rd tick,
        # 60 ms against 62.5 ms), not at every tick: more would buy no margin.
        link_timeout_s = profile.control.link_timeout_ms / 1000
        #: The longest a keepalive may wait after the last one, on a loop that is on time.
        self.keepalive_every_s = link_timeout_s / KEEPALIVES_PER_LINK_TIMEOUT
        self._keepalives_per_tick = max(1, math.ceil(self.tick_s / self.keepalive_every_s - 1e-9))
        #: The loop's wake-up period: a tick, or a fraction of it when the link timeout is
        #: short (a keepalive is due more often than a tick).
        self.wake_s = self.tick_s / self._keepalives_per_tick
        self.treadmill_id = treadmill_id
        self.site_heartbeat_s = heartbeat_s
        self.recorder_factory = recorder_factory
        #: States, latch and interlocks (one per treadmill; the daemon's lane keeps its
        #: machine across the controllers it builds, so a latch survives a reconnect).
        self.machine = machine if machine is not None else SafetyMachine(self.cfg)
        self.reverse = reverse_method(profile)
        #: The one surface the machine is driven through: FTMS, or the native driver of
        #: the profile's protocol, unless a factory is given (docs/architecture.md).
        factory = link_factory or link_factory_for(profile)
        self.client: MachineLink = factory(transport, profile, self.clock)
        self.client.motion_guard = lambda: self.machine.motion_blocked
        self.client.on_telemetry = self._on_telemetry
        self.client.on_status = self._on_status
        self.client.on_direction = self._on_direction
        self.client.on_stop_result = self._on_stop_result
        self.client.on_danger = self._on_danger
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
        #: Called with the loop's time after every tick (the loop's timer interlocks and
        #: ramp following done): for measuring the loop, never for decisions.
        self.tick_listeners: list[Callable[[float], None]] = []

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
        self._facing = Direction.FORWARD
        self.belt_running = False
        self._last_speed_sent = -math.inf
        self._stop_envelope: Ramp | None = None

        # Plan being followed
        self._speed_ramp: Ramp | None = None
        self._incline_ramp: Ramp | None = None
        self._want_speed: float | None = None
        self._want_incline: float | None = None
        self._ramp_settled: tuple[Ramp, EffectiveLimits, float] | None = None
        self._incline_settled: tuple[Ramp, EffectiveLimits, float] | None = None
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
        self._walker_wake = asyncio.Event()
        self._last_heartbeat = -math.inf
        self._paused_since: float | None = None
        self._session_started = 0.0
        self._paused_total = 0.0
        self._recorder: Any = None
        self._turn_pending: Direction | None = None
        self._turn_confirmed = False
        self._driving = False  # the session task is still driving the belt (not recording)
        self._opened = False
        # Heart rate (heart.py): a strap URL is bound to this lane here (refused when another
        # lane holds it: StrapInUse), and started by open().
        self._hr_init(hr_url, hr_source, hr_config)

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
        await self.attach_strap()  # a strap never moves the belt: it only feeds the supervisor

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
        await self.detach_strap()
        await self.client.close()
        self._opened = False

    async def __aenter__(self) -> Controller:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ====================================================================== commands
    def limits_for(self, program: Program | None) -> EffectiveLimits:
        layer = program.limits if program else None
        return effective_limits(self.profile, self.site_limits, layer, rear_facing=self.rear_facing)

    def start(self, program: Program) -> asyncio.Task[SessionResult]:
        """Validate and start a session; returns its task. Raises ControlError."""
        self.machine.check_start(session_active=self._session_active(), speed_kmh=self.measured_kmh)
        limits = self.limits_for(program)
        violations = validate_program(program, limits)
        if violations:
            raise ControlError("; ".join(str(v) for v in violations))
        self._program = program
        self._limits = limits
        self._hr_session_start(limits)
        self._stop_requested = False
        self._stop_reason = STOP_REASON
        self._pause_requested = False
        self._resume.set()
        self._facing = Direction.FORWARD  # rear-facing: the user starts facing the console
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
        # The session's time base is set here, not in its task: a Treadmill Data frame that
        # arrives before the task's first step counts from this session, not the last one.
        self._session_started = self.clock.now()
        self._paused_total = 0.0
        self._paused_since = None
        self._step(Event.START)
        self._session_task = asyncio.create_task(self._session(program, limits, session_id))
        return self._session_task

    async def stop(self, reason: str = STOP_REASON) -> None:
        """Controlled stop: Stop, the session ends as 'stopped' with ``reason`` (a daemon
        shutdown says so, an operator's stop is "stopped on request"). Safe in any state."""
        if self._session_task is None or self._session_task.done():
            self.client.stop_now()
            return
        self._request_stop(reason)

    def pause(self) -> None:
        self.machine.check_pause()
        self._pause_requested = True
        self._resume.clear()
        self._wake_walker()

    def resume(self) -> None:
        """End a pause, or confirm a rear-facing turn-around (the user faces the way asked)."""
        self.machine.check_resume(pause_requested=self._pause_requested)
        if self._confirm_turn():
            self._wake_walker()
            return
        self._pause_requested = False
        self._resume.set()
        self._wake_walker()

    def set_manual(self, speed_kmh: float | None = None, incline_pct: float | None = None) -> None:
        """Change speed/incline of the running segment, inside the active limits."""
        self.machine.check_set()
        if self._limits is None:
            raise ControlError(f"cannot set while {self.machine.state.value}")
        lim = self._limits
        d = self._limit_dir
        refusal = setpoint_refusal(lim, d, speed_kmh, incline_pct)  # refused, never clamped
        if refusal is not None:
            raise ControlError(refusal)
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

    def broker_unreachable(self, detail: str) -> bool:
        """The daemon's broker stayed unreachable past its grace: the machine decides
        whether ``broker-lost`` trips (only while a session drives the belt). True when it
        latched now."""
        step = self.machine.broker_unreachable(detail)
        self._act(step)
        return step.first

    def fault(self, detail: str) -> None:
        """An unexpected error outside the controller (the daemon's lane): ``internal-error``,
        Stop on the wire first."""
        self._act(self.machine.error(detail))

    def reset(self, reason: str = "reset") -> None:
        """Clear the latch (the machine's one reset rule). Never moves the belt: it sends
        nothing, and a new start is needed afterwards."""
        old = self.machine.reset(
            session_ending=self._session_active(),
            speed_kmh=self.measured_kmh,
            telemetry_age_s=self.clock.now() - self.last_rx,
        )
        self.client.reset()
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

    @property
    def session_task(self) -> asyncio.Task[SessionResult] | None:
        return self._session_task

    @property
    def escalation_task(self) -> asyncio.Task[None] | None:
        return self._escalation

    @property
    def wanted_speed(self) -> float | None:
        """The setpoint the ramp wants now (km/h, on the increment grid), which the sender
        puts on the wire one step at a time; None when no ramp is followed."""
        return self._want_speed

    @property
    def active_limits(self) -> EffectiveLimits | None:
        """The limits of the running (or last) session: what ``set_manual`` and the
        telemetry interlocks judge against; None before the first start."""
        return self._limits

    def arm_without_session(self, limits: EffectiveLimits) -> None:
        """Judge telemetry against ``limits`` with no session: the safety machine armed as
        while a segment runs (benchmarks and tests of the telemetry interlocks). Refused
        while a session runs: its limits are the ones validated at its start."""
        if self._session_active():
            raise ControlError("a session is running: its limits apply")
        self._limits = limits
        self.machine.arm()

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
        if any(getattr(before, k) != getattr(after, k) for k in _STATE_KEYS):
            for listener in self.state_listeners:
                listener(after)

    def _event(self, type_: str, **data: Any) -> None:
        event = {"type": type_, "t_s": round(self.clock.now(), 3), **data}
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                self._recorder.event(self, event)
        for listener in self.event_listeners:
            listener(event)


def _new_session_id(treadmill_id: str, clock: Clock) -> str:
    stamp = clock.wall().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{treadmill_id}-{uuid.uuid4().hex[:4]}"


__all__ = [
    "KEEPALIVES_PER_LINK_TIMEOUT",
    "RAMP_OVERRUN_S",
    "SHUTDOWN_REASON",
    "STOP_REASON",
    "ControlError",
    "Controller",
    "DirectionError",
    "Outcome",
    "SessionRecorder",
    "SessionResult",
    "Snapshot",
    "State",
]
