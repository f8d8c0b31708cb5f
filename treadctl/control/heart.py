"""Heart rate in the controller: the lane's :class:`~treadctl.hr.supervisor.HRSupervisor`
fed from the treadmill's HR field, a strap and the loop's tick, and what the controller
does with its answer (docs/heart-rate.md, docs/safety.md).

* **sources**: the treadmill's HR field arrives with each Treadmill Data frame
  (``inputs.py`` calls :meth:`_hr_treadmill`); a strap (``ble://...`` through
  :class:`treadctl.hr.strap.StrapSource`, ``sim-hr://...`` on the simulator's heart model
  following this controller's simulated belt) is bound to the lane in the process-wide
  registry when the controller is built (a strap held by another lane is refused there,
  before anything opens) and started by :meth:`open` (:meth:`attach_strap` later). The
  strap connects and reconnects with backoff on its own; nothing it does commands the
  belt: its readings only reach the supervisor.
* **interlock**: the heart-rate ceiling (``SafetyMachine.telemetry`` / ``heart_rate``) is
  given only the supervisor's ``interlock_bpm`` (plausible readings, else None): a fake
  199, a spike or a stuck value shows as the ``hr-unreliable`` warning and event, never as
  an e-stop. A strap reading reaches the interlock inside its notification callback.
* **governed segments** (``hr_zone_bpm``): the walker calls :meth:`_hr_begin_segment` once
  the segment runs and :meth:`_hr_end_segment` when it ends (or pauses); the loop's tick
  asks the supervisor (at most every :data:`HR_TICK_S`), and a new wanted speed/incline
  becomes a ramp of the planner
  (``speed_ramp``/``incline_ramp`` within the effective limits), which the sender puts on
  the wire one increment at a time at no more than the ramp's rate. ``CONTROLLED_STOP``
  (HR lost and not back in time) is a stop request with :data:`HR_LOSS_STOP_REASON`: the
  session ends ``stopped``, the belt at its controlled-stop rate, never an e-stop.
* **snapshot**: ``hr_bpm`` is the supervisor's filtered HR (None unless ``good``),
  ``hr_source``, ``hr_quality``, ``hr_zone_bpm``; its warnings are ``Snapshot.warnings``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from treadctl.control.core import ControllerCore
from treadctl.control.machine import State
from treadctl.control.planner import incline_ramp, speed_ramp
from treadctl.control.snapshot import Snapshot
from treadctl.hr.registry import STRAPS
from treadctl.hr.strap import HRSource, HRURLError, open_hr_source, parse_hr_url
from treadctl.hr.supervisor import Decision, HRStatus, HRSupervisor, SupervisorConfig
from treadctl.limits import EffectiveLimits
from treadctl.programs.model import Segment
from treadctl.types import Direction

log = logging.getLogger("treadctl.control.controller")

#: The ``finished`` reason when a governed segment's heart rate did not come back in time.
HR_LOSS_STOP_REASON = "heart rate lost in a governed segment: not recovered in time"

#: The supervisor's tick (workload, dropouts, governor) runs at most this often: every loop
#: tick up to 10 Hz, every few ticks above (50 Hz: every 5th). Its timers are seconds (5 s
#: dropout, 3 s failover, a 1 s governor), and a strap reading reaches the HR ceiling in
#: its own callback, not here.
HR_TICK_S = 0.1


class HeartRateControl(ControllerCore):
    """The supervisor's inputs and outputs in the controller (see the module docstring)."""

    hr_url: str | None
    hr_config: SupervisorConfig | None
    hr_supervisor: HRSupervisor
    _hr_source: HRSource | None
    _hr_source_factory: Callable[..., HRSource] | None
    _hr_segment: Segment | None
    _hr_wanted: tuple[float | None, float | None]
    _hr_ticked: float
    #: The picture _hr_apply last put into the snapshot, and that snapshot.
    _hr_shown: tuple[tuple[Any, ...] | None, Snapshot | None]

    def _hr_init(self, hr_url: str | None, hr_source: HRSource | None,
                 hr_config: SupervisorConfig | None) -> None:
        """Bind ``hr_url`` to this lane (``StrapInUse``/``HRURLError``: refused, nothing
        opened) or take an already built ``hr_source``."""
        self.hr_url = hr_url
        self.hr_config = hr_config
        self._hr_source = hr_source
        self._hr_source_factory = None
        if hr_url is not None:
            STRAPS.bind(hr_url, self.treadmill_id)
        self._hr_segment = None
        self._hr_wanted = (None, None)
        self._hr_ticked = -math.inf
        self._hr_shown = (None, None)
        self.hr_supervisor = self._hr_new_supervisor(None)

    @property
    def hr_strap_bound(self) -> bool:
        return self.hr_url is not None or self._hr_source is not None

    @property
    def hr_strap(self) -> HRSource | None:
        """The strap source in use (None: none), e.g. its ``state`` for a status page."""
        return self._hr_source

    def _hr_new_supervisor(self, limits: EffectiveLimits | None) -> HRSupervisor:
        ceiling = limits.max_hr_bpm if limits is not None else self.limits_for(None).max_hr_bpm
        return HRSupervisor(ceiling_bpm=ceiling, strap_bound=self.hr_strap_bound,
                            cfg=self.hr_config)

    def _hr_session_start(self, limits: EffectiveLimits) -> None:
        """A session starts: a new supervisor with the session's ceiling (start())."""
        self.hr_supervisor = self._hr_new_supervisor(limits)
        self._hr_segment = None
        self._hr_wanted = (None, None)
        self._hr_apply(self.hr_supervisor.status)

    # ------------------------------------------------------------------ the strap
    async def attach_strap(self, url: str | None = None, *, source: HRSource | None = None
                           ) -> None:
        """Use a strap from now on: ``url`` (bound to this lane in the registry, refused
        when another lane holds it) or an already built ``source``. Without either, start
        the one given to the constructor. Replaces a strap already attached."""
        if url is not None or source is not None:
            await self.detach_strap()
            if url is not None:
                STRAPS.bind(url, self.treadmill_id)
            self.hr_url, self._hr_source = url, source
            self.hr_supervisor.strap_bound = True
        if self._hr_source is None and self.hr_url is not None:
            try:
                self._hr_source = open_hr_source(
                    self.hr_url, clock=self.clock, sim_workload=self._hr_sim_workload())
            except HRURLError:
                self._release_strap()
                raise
        if self._hr_source is not None:
            await self._hr_source.start(self._on_strap)

    async def detach_strap(self) -> None:
        """Stop using the strap (closed, released in the registry). Moves nothing."""
        source, self._hr_source = self._hr_source, None
        if source is not None:
            try:
                await source.close()
            except Exception as exc:  # closing a strap must never fail a session's end
                log.error("closing the heart-rate strap %s: %s", source.name, exc)
        self._release_strap()
        self.hr_supervisor.strap_bound = False
        if self._session_task is None or self._session_task.done():
            # Idle: a strap that is gone is no loss to show on the lane until its next start.
            self.hr_supervisor = self._hr_new_supervisor(None)
            self._hr_apply(self.hr_supervisor.status)

    def _release_strap(self) -> None:
        if self.hr_url is not None:
            STRAPS.release(self.hr_url, self.treadmill_id)
        self.hr_url = None

    def _hr_sim_workload(self) -> Callable[[], tuple[float, float, Direction]] | None:
        """For ``sim-hr://``: the simulated belt's truth when this controller drives the
        in-process simulator, else the controller's own measurements."""
        if self.hr_url is None or parse_hr_url(self.hr_url).scheme != "sim-hr":
            return None
        sim_truth = self.transport.simulated_truth
        if sim_truth is not None:
            from treadctl.simulator.heart import belt_workload

            truth = belt_workload(sim_truth)
            if not self.rear_facing:
                return truth
            # Rear-facing: the belt runs forward, the person walks the way they face.
            return lambda: (*truth()[:2], self._hr_direction())
        return lambda: (self.measured_kmh, self.snapshot.incline_pct, self._hr_direction())

    def _on_strap(self, value: bytes) -> None:
        """One strap notification (raw 0x2A37): the supervisor, then the ceiling at once."""
        now = self.clock.now()
        status = self.hr_supervisor.strap(value, now)
        self._hr_apply(status)
        if self.machine.armed and self._limits is not None:
            self._act(self.machine.heart_rate(status.interlock_bpm, self._limits.max_hr_bpm,
                                              now))

    # ------------------------------------------------------------------ inputs
    def _hr_treadmill(self, bpm: int, now: float) -> None:
        self._hr_apply(self.hr_supervisor.treadmill_hr(bpm, now))

    def _hr_interlock_bpm(self) -> int | None:
        return self.hr_supervisor.status.interlock_bpm

    def _hr_direction(self) -> Direction:
        if self.rear_facing:
            return self._limit_dir  # the way the user walks
        return self.measured_dir or self.commanded_dir

    def _hr_tick(self, now: float) -> None:
        """The loop's tick, at most every HR_TICK_S: the workload, dropouts, the governor
        (and its decision)."""
        if now - self._hr_ticked < HR_TICK_S - self.tick_s / 2:
            return
        self._hr_ticked = now
        status = self.hr_supervisor.tick(now, self.measured_kmh, self.snapshot.incline_pct,
                                         self._hr_direction())
        self._hr_apply(status)
        if self._hr_segment is not None:
            self._hr_govern(status, now)

    # ------------------------------------------------------------------ governed segments
    def _hr_begin_segment(self, seg: Segment, limits: EffectiveLimits) -> None:
        """The segment runs (the walker armed the machine): a governed one starts governing
        from ``seg.speed_kmh``."""
        if not seg.governed:
            return
        self._hr_segment = seg
        self._hr_wanted = (seg.speed_kmh, seg.incline_pct)
        status = self.hr_supervisor.begin_segment(seg, limits, self.clock.now())
        self._hr_apply(status)

    def _hr_end_segment(self) -> None:
        if self._hr_segment is None:
            return
        self._hr_segment = None
        self._hr_wanted = (None, None)
        self._hr_apply(self.hr_supervisor.end_segment(self.clock.now()))

    def _hr_resume_segment(self, speed_kmh: float, limits: EffectiveLimits,
                           seg: Segment | None) -> None:
        """After a pause: governing again from the speed it resumes at (bumpless)."""
        if seg is None or self._stop_requested:
            return
        lo = seg.min_speed_kmh if seg.min_speed_kmh is not None else speed_kmh
        hi = seg.max_speed_kmh if seg.max_speed_kmh is not None else speed_kmh
        self._hr_begin_segment(replace(seg, speed_kmh=min(max(speed_kmh, lo), hi)), limits)

    def _hr_govern(self, status: HRStatus, now: float) -> None:
        lim = self._limits
        if (
            lim is None
            or self._stop_requested
            or self._pause_requested
            or self.machine.latched
            or self.machine.state is not State.RUNNING
            or not self.belt_running
        ):
            return  # only a running segment's belt is governed; nothing after a Stop
        if status.decision is Decision.CONTROLLED_STOP:
            self._request_stop(HR_LOSS_STOP_REASON)
            return
        if status.decision is not Decision.GOVERN:
            return
        speed, incline = status.wanted_speed_kmh, status.wanted_incline_pct
        if (speed, incline) == self._hr_wanted:
            return
        old_speed, old_incline = self._hr_wanted
        self._hr_wanted = (speed, incline)
        d = self._limit_dir
        if speed is not None and speed != old_speed:
            self._speed_ramp = speed_ramp(
                now, self._ramp_value(self._speed_ramp, now), speed, lim, d)
            self._set_snapshot(target_speed_kmh=speed)
        if incline is not None and incline != old_incline:
            self._incline_ramp = incline_ramp(
                now, self._ramp_value(self._incline_ramp, now), incline, lim)
            self._set_snapshot(target_incline_pct=incline)

    # ------------------------------------------------------------------ out
    def _hr_apply(self, status: HRStatus) -> None:
        """The supervisor's picture into the snapshot; its events out (once each)."""
        key = (status.bpm, status.source, status.quality, status.zone_bpm, status.warnings)
        if not status.events and key == self._hr_shown[0] and self.snapshot is self._hr_shown[1]:
            return  # the snapshot already shows this picture (the steady case)
        fields: dict[str, Any] = status.fields()
        if list(status.warnings) != self.snapshot.warnings:
            fields["warnings"] = list(status.warnings)
        if any(getattr(self.snapshot, k) != v for k, v in fields.items()):
            self._set_snapshot(**fields)
        self._hr_shown = (key, self.snapshot)
        for event in status.events:
            data = {k: v for k, v in event.items() if k != "type"}
            self._event(str(event["type"]), **data)


__all__ = ["HR_LOSS_STOP_REASON", "HR_TICK_S", "HeartRateControl"]
