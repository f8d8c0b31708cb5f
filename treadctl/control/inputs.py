"""The controller's inputs from the machine: Treadmill Data (judged synchronously inside
the notification handler, so a fault frame becomes a stop frame within the same call), the
direction read-back, Fitness Machine Status, a native machine's danger, link loss, FTMS
deviations; the stop envelope they are judged against after our own Stop; and the waits on
what they measure (standstill, first telemetry). Mixed into
:class:`~treadctl.control.controller.Controller` (moved out of controller.py; the heart-rate
supervisor's part is in ``heart.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

from treadctl import ftms
from treadctl.control.client import consume_result
from treadctl.control.core import ControllerCore
from treadctl.control.machine import Reading, State
from treadctl.control.planner import Ramp
from treadctl.limits import EffectiveLimits
from treadctl.types import Direction


class MachineInputs(ControllerCore):
    """Telemetry, direction and status handlers (see the module docstring)."""

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
        if td.heart_rate_bpm is not None:
            self._hr_treadmill(td.heart_rate_bpm, now)  # the supervisor judges it first
        # The interlocks judge the frame before anything else is done with it, and a trip's
        # Stop leaves at once; the snapshot below still shows the frame that tripped.
        step = None
        if self.machine.armed and self._limits is not None:
            step = self.machine.telemetry(self._reading(now, td, self._limits))
            if step.trip is not None:
                self.client.stop_now()
        snap = self.snapshot
        changes: dict[str, Any] = {"speed_kmh": round(self.measured_kmh, 2)}
        if td.inclination_pct is not None:
            changes["incline_pct"] = td.inclination_pct
        if td.total_distance_m is not None and snap.session_id is not None:
            if self._distance_base_m is None:
                self._distance_base_m = float(td.total_distance_m)
            changes["distance_m"] = float(td.total_distance_m) - self._distance_base_m
        if (
            self.measured_dir is not None
            and not self.rear_facing  # the snapshot shows the way the user walks
            and self.measured_kmh >= self.cfg.direction_min_speed_kmh
        ):
            changes["direction"] = self.measured_dir
        if self._session_task is not None and not self._session_task.done():
            changes["elapsed_s"] = round(self._elapsed(now), 2)
            changes["remaining_s"] = self._remaining_s(now)
        self.snapshot = replace(snap, **changes)
        if step is not None:
            self._act(step, stop_sent=True)
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
        d = self._limit_dir  # the cap: rear-facing, the way the user walks
        return Reading(
            now=now,
            speed_kmh=self.measured_kmh,
            direction=self.measured_dir,
            hr_bpm=self._hr_interlock_bpm(),  # plausible readings only (heart.py)
            reference_kmh=self._reference_kmh(now),
            commanded_kmh=self.commanded_kmh,
            cap_kmh=lim.reverse_max_speed_kmh if d is Direction.REVERSE else lim.max_speed_kmh,
            expected=self.commanded_dir,
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

    def _on_danger(self, kind: str, detail: str) -> None:
        """A native machine's danger: the driver sent its stop, the machine latches."""
        self._act(self.machine.danger(kind, detail), stop_sent=True)
        self._event("machine-danger", kind=kind, detail=detail)

    def _on_link_lost(self, reason: str) -> None:
        self._act(self.machine.link_lost(reason))
        self._show_machine()

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
