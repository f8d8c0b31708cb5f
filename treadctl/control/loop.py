"""The fixed-rate loop, the setpoint sender and the stop escalation of a controller.

* the **loop** ticks at ``tick_hz``: keepalive to the firmware's watchdog (more often than
  a tick when the profile's link timeout is short), the safety machine's timer input
  (telemetry silence, dead-man heartbeat), and following the current ramps;
* the **sender** puts the latest wanted setpoints on the wire, one procedure at a time,
  only when they moved by an increment;
* the **escalation** follows a trip: resend the Stop, then drop the link for the
  firmware's own watchdog;
* **carrying out a trip** (``_act``): whatever the safety machine decided in its inputs
  (telemetry, status, timers, failed commands, e-stops), Stop on the wire first, then the
  plan dropped, the ``estop`` event, the session cancelled and the escalation begun.

Mixed into :class:`~treadctl.control.controller.Controller`, whose state it shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from treadctl import ftms
from treadctl.control.client import CommandError, MotionBlocked
from treadctl.control.core import ControllerCore
from treadctl.control.machine import Step
from treadctl.control.planner import quantize_toward
from treadctl.control.safety import Interlock, Trip
from treadctl.types import Direction

log = logging.getLogger("treadctl.control.controller")


class ControlLoop(ControllerCore):
    """The loop, sender and escalation tasks' methods (see the module docstring)."""

    # ------------------------------------------------------------ a trip carried out
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

    def _trip_command(self, exc: CommandError) -> None:
        """A failed procedure: the machine maps its typed failure to the interlock."""
        self._act(self.machine.command_failed(exc.failure, str(exc)))

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
            if not self.transport.drop():
                # No watchdog to hand over to (Biodex, Bertec): the link stays and the stop
                # went out again; beyond that only the machine's own stop switch is left.
                self._event("escalate", action="keep-link", speed_kmh=self.measured_kmh)
                log.error("belt not decelerating after stop, and this machine has no"
                          " watchdog: the stop is repeated; use the machine's stop switch")
                return
            self._event("escalate", action="drop-link", speed_kmh=self.measured_kmh)
            log.error(
                "belt not decelerating after stop: dropped the link for the firmware watchdog"
            )
            # drop() is deliberate, so the transport reports no loss: we do.
            self.machine.link_dropped()
            self._show_machine()
            return

    async def _loop(self) -> None:
        """Fixed-rate loop: timer interlocks and ramp following every tick; a keepalive
        whenever waiting for the next wake-up would leave more than ``keepalive_every_s``
        since the last one (every wake-up when the link timeout is short, every few ticks
        when the tick is short; and at the first wake-up after the loop ran late)."""
        next_t = self.clock.now()
        step = 0
        last_keepalive = -math.inf
        # Float noise may only make a keepalive go out early, never late.
        due_after = self.keepalive_every_s - self.wake_s - 1e-9
        while True:
            next_t += self.wake_s
            delay = next_t - self.clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = self.clock.now()  # overran: do not try to catch up in a burst
            step += 1
            if step >= self._keepalives_per_tick:
                step = 0
                now = self.clock.now()
                try:
                    self._tick(now)
                    for listener in self.tick_listeners:
                        listener(now)
                except Exception as exc:  # an error in the loop is itself an interlock
                    log.exception("control loop error")
                    self._trip(Trip(Interlock.INTERNAL_ERROR, f"control loop: {exc!r}"))
            now = self.clock.now()
            if now - last_keepalive <= due_after:
                continue
            last_keepalive = now
            try:  # noqa: SIM105 (no context manager object at every keepalive)
                await self.transport.keepalive()
            except Exception:  # a lost link is the transport's to report (link-lost)
                pass

    def _tick(self, now: float) -> None:
        step = self.machine.tick(now, self.last_rx, self._last_heartbeat, self._heartbeat_period())
        self._act(step)
        self._hr_tick(now)  # heart rate: workload, dropouts, the governor (heart.py)
        if self.machine.latched:
            return
        lim = self._limits
        ramp = self._speed_ramp
        # A ramp that has ended wants its end value for good: once that is the wanted
        # setpoint (same ramp, same limits), there is nothing to work out at every tick.
        if ramp is not None and lim is not None and (
            self._ramp_settled != (ramp, lim, self._want_speed)
        ):
            want = ramp.at(now)
            q = quantize_toward(want, lim.speed_increment_kmh, ramp.v0, ramp.v1)
            q = max(q, lim.min_speed_kmh) if q > 0 else 0.0
            if q != self._want_speed:
                self._want_speed = q
                self._want_changed.set()
            if ramp.done(now):
                self._ramp_settled = (ramp, lim, q)
        iramp = self._incline_ramp
        if iramp is not None and lim is not None and (
            self._incline_settled != (iramp, lim, self._want_incline)
        ):
            want_i = iramp.at(now)
            qi = quantize_toward(want_i, lim.incline_increment_pct, iramp.v0, iramp.v1)
            if qi != self._want_incline:
                self._want_incline = qi
                self._want_changed.set()
            if iramp.done(now):
                self._incline_settled = (iramp, lim, qi)

    def _heartbeat_period(self) -> float | None:
        prog = self._program.heartbeat_s if self._program is not None else None
        site = self.site_heartbeat_s
        if prog is None or site is None:
            return site if prog is None else prog
        return min(prog, site)

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
                    # Not for float noise: a step rounded to the same value would be sent
                    # again and again without the loop's clock moving.
                    and abs(speed - self.commanded_kmh) > 1e-6
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


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
