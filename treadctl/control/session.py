"""The program walker: one session of a program, segment by segment.

Segment entry, direction changes through a measured standstill plus dwell and a read-back,
pause/resume, the final ramp down, and the session's ending (the record closed, the
``finished`` event). Every state change is a step of the safety machine
(``Controller._step``); a failure is raised with its typed ``Failure`` and becomes an
interlock in the machine, never here. Mixed into :class:`~treadctl.control.controller.
Controller`, whose state it shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from treadctl import ftms
from treadctl.control.client import CommandError
from treadctl.control.core import StopRequested
from treadctl.control.machine import Event, Failure
from treadctl.control.planner import Ramp, incline_ramp, planned_ramp_s, speed_ramp
from treadctl.control.safety import Interlock, Trip, stop_bound_s
from treadctl.control.snapshot import Outcome, SessionResult
from treadctl.control.turns import TurnAround
from treadctl.limits import EffectiveLimits
from treadctl.programs.model import Program, Segment
from treadctl.types import KMH_PER_MPS, Direction

log = logging.getLogger("treadctl.control.controller")

#: A ramp down the sender cannot follow (a firmware's slow command pace) is given this long
#: past its planned end; then the Stop goes out and the firmware brakes at its stop rate.
RAMP_OVERRUN_S = 5.0


class DirectionError(CommandError):
    """The machine's direction read-back does not match what was commanded."""

    failure = Failure.DIRECTION


class SessionWalker(TurnAround):
    """The session task's methods (see the module docstring); announcements and rear-facing
    turns are in ``announce.py`` and ``turns.py``."""

    async def _session(self, program: Program, limits: EffectiveLimits, session_id: str
    ) -> SessionResult:
        completed = 0
        outcome = Outcome.FINISHED
        reason: str | None = None
        self._event("session-start", program=program.name, session_id=session_id)
        self._deviations_reported = set()
        for name in list(self.client.deviations):
            self._on_deviation(name)  # seen on this connection before the session began
        self._driving = True
        announcer = asyncio.create_task(self._announcer(program), name="treadctl-announcer")
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
            except StopRequested:
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
            announcer.cancel()
            self.machine.disarm()
            self._speed_ramp = self._incline_ramp = None
            self._want_speed = self._want_incline = None
        if self.latch.latched and outcome is not Outcome.ERROR:
            outcome = Outcome.ESTOPPED
            reason = self.latch.trip.reason if self.latch.trip else reason
        if self.latch.latched and self._recorder is not None:
            # The belt runs down after an e-stop: keep recording until it stands (or the
            # link is gone), within the worst-case stop bound.
            bound = stop_bound_s(self.profile, self.cfg, self.measured_kmh)
            with contextlib.suppress(asyncio.CancelledError):
                await self.wait_stopped(timeout_s=bound)
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
        finished = {
            "outcome": outcome.value,
            "reason": reason,
            "session_id": session_id,
            "elapsed_s": result.elapsed_s,
            "distance_m": result.distance_m,
            "segments_completed": completed,
        }
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            # The record gets its 'finished' too (its summary is the record's own).
            with contextlib.suppress(Exception):
                recorder.event(
                    self, {"type": "finished", "t_s": round(self.clock.now(), 3), **finished}
                )
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
        self._event("finished", **finished, summary=result.summary)
        return result

    async def _wait_session_time(self, end_s: float) -> None:
        """Until session time (pauses excluded) reaches ``end_s``. It sleeps until that
        deadline, woken at once by a stop or pause request (``_nap``): session time never
        runs faster than the clock, so the deadline is never overslept, and a trip cancels
        the task wherever it waits."""
        while True:
            self._check_stop()
            if self._pause_requested:
                await self._pause_cycle()
                continue
            left = end_s - self._elapsed(self.clock.now())
            if left <= 1e-6:
                return
            await self._nap(left)

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
        # A governed segment may end anywhere up to its ceiling.
        v0, v_min = max(seg.speed_kmh, seg.max_speed_kmh or 0.0), limits.min_speed_kmh
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
        governed = self._hr_segment
        self._hr_end_segment()  # no governing while paused; resumed below
        self._step(Event.STOPPING, phase="pausing", target_speed_kmh=0.0)
        await self._to_standstill(self._limits, pause=True)
        self._paused_since = self.clock.now()
        self._step(Event.PAUSED, phase=None)
        self._event("paused")
        try:
            await self._resume.wait()
            await self._resume_countdown(resume_speed)
        finally:
            if self._paused_since is not None:
                self._paused_total += self.clock.now() - self._paused_since
                self._paused_since = None
        self._check_stop()
        self._step(Event.BELT_STARTING, phase="resuming")
        await self._start_belt(self.commanded_dir, self._limits)
        now = self.clock.now()
        self._speed_ramp = speed_ramp(
            now, self._limits.min_speed_kmh, resume_speed, self._limits, self._limit_dir
        )
        self._incline_ramp = incline_ramp(now, self.commanded_incline, resume_incline, self._limits)
        self._step(Event.RUNNING, phase=None, target_speed_kmh=resume_speed)
        self._event("resumed")
        self._hr_resume_segment(resume_speed, self._limits, governed)

    async def _resume_countdown(self, speed_kmh: float) -> None:
        """A resume (an operator's ``cmd/resume`` as well as the user's own) starts the belt
        only ``motion.announce_s`` after its ``upcoming`` event (``what = "start"``, phase
        ``countdown``), as after a rear-facing turn: the person on the belt hears it coming.
        Session time stands still meanwhile (still paused); a stop ends it, nothing moves."""
        if speed_kmh <= 0:
            return  # a stand-still segment: nothing starts
        self._check_stop()
        await self._count_down_to_start(self.commanded_dir, speed_kmh, self.snapshot.segment)

    async def _run_segment(
        self,
        index: int,
        seg: Segment,
        limits: EffectiveLimits,
    ) -> None:
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
        # A turn: the belt's direction, or in rear-facing mode the way the user faces.
        needs_turn = seg.direction is not self._limit_dir
        if needs_turn or seg.speed_kmh == 0:
            # Heading for standstill first: that is the target until the turn is done.
            self._set_snapshot(target_speed_kmh=0.0)
            if self.belt_running or self.measured_kmh > self.cfg.standstill_kmh:
                phase = "direction-change" if needs_turn else "stopping"
                self._step(Event.STOPPING, phase=phase)
                await self._to_standstill(limits)
            if needs_turn and self.rear_facing:
                await self._turn_around(index, seg)  # the belt stays forward
            elif needs_turn:
                await self._change_direction(seg.direction, limits)
            # The machine confirmed the new direction (read-back): show it from now on.
            self._set_snapshot(target_speed_kmh=seg.speed_kmh, direction=seg.direction)
        t_seg = self.clock.now()
        now = t_seg
        if seg.speed_kmh > 0:
            if not self.belt_running:
                self._step(Event.BELT_STARTING, phase="starting")
                belt = Direction.FORWARD if self.rear_facing else seg.direction
                await self._start_belt(belt, limits)
                now = self.clock.now()
            v0 = max(self._ramp_value(self._speed_ramp, now), limits.min_speed_kmh)
            self._speed_ramp = speed_ramp(now, v0, seg.speed_kmh, limits, seg.direction)
        self._incline_ramp = incline_ramp(now, self.commanded_incline, seg.incline_pct, limits)
        self.machine.arm()
        self._step(Event.RUNNING, phase=None, direction=seg.direction)
        self._hr_begin_segment(seg, limits)  # a governed segment governs from here (heart.py)
        # The listed durations are what the user gets: a segment's time runs from its
        # entry (its direction change, start and ramps count toward it), and the last one
        # ends early enough for the final ramp down to end with the program.
        segments = self._program.segments if self._program else [seg]
        end_s = sum(s.duration_s for s in segments[: index + 1])
        if index == len(segments) - 1:
            end_s -= self._final_stop_lead_s(seg, limits)
        try:
            await self._wait_session_time(end_s)
        finally:
            self._hr_end_segment()

    async def _start_belt(self, direction: Direction, limits: EffectiveLimits) -> None:
        """From standstill: first setpoint at the minimum speed, Start, wait for motion."""
        self._stop_envelope = None
        # Trust the machine, not our memory: after a failed direction change the firmware
        # may hold the other direction. Ask it before every start.
        if (
            self.reverse.reads_back_before_start
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
        if (
            self.client.signed_speed
            and not self.reverse.writes_direction
            and direction is Direction.REVERSE
        ):
            # Read-back for signed-speed firmware is the sign of the belt it reports (a
            # direction command was read back before the start; the sign is then judged
            # by the telemetry interlock).
            await self._await_direction(direction, limits)
        # The firmware ramps to its minimum speed on its own; our ramp starts from there.
        deadline = self.clock.now() + 5.0
        while self.measured_kmh < first - 0.05 and self.clock.now() < deadline:
            self._check_stop()
            await asyncio.sleep(self.tick_s)

    async def _await_direction(
        self,
        direction: Direction,
        limits: EffectiveLimits,
    ) -> None:
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

    async def _to_standstill(
        self,
        limits: EffectiveLimits,
        pause: bool = False,
    ) -> None:
        """Ramp down at the planner's decel to the minimum speed, Stop/Pause, wait for 0."""
        now = self.clock.now()
        if self.belt_running and self.commanded_kmh > limits.min_speed_kmh:
            self._speed_ramp = speed_ramp(
                now, self.commanded_kmh, limits.min_speed_kmh, limits, self._limit_dir
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

    async def _change_direction(
        self,
        direction: Direction,
        limits: EffectiveLimits,
    ) -> None:
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
        if self.reverse.writes_direction:
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

    async def _ramp_down_and_stop(
        self,
        limits: EffectiveLimits,
        quick: bool = False,
    ) -> None:
        # Where the belt is heading now is 0 (the record and the state say so).
        self._step(Event.STOPPING, phase="stopping", target_speed_kmh=0.0)
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
