"""The heart-rate supervisor of one lane: sources -> filter -> choice -> interlock value and
governor, as one sans-I/O object the controller calls synchronously (docs/heart-rate.md).

No I/O, no asyncio, no clock of its own: every call passes ``now`` (seconds on the
controller's clock, ``clock.now()``). One :class:`HRSupervisor` per lane and session
(create it at the session start; a new session gets a new one). Nothing here commands a
treadmill: it *answers* with a :class:`HRStatus`, and the controller acts on it.

Calls (all return an :class:`HRStatus`, the lane's HR picture after the call)::

    sup = HRSupervisor(ceiling_bpm=lim.max_hr_bpm, strap_bound=url is not None,
                       cfg=SupervisorConfig(), age_years=None)
    sup.treadmill_hr(td.heart_rate_bpm, now)   # each Treadmill Data frame WITH an HR field
    sup.strap(measurement_or_bytes, now)       # each strap notification (0x2A37, decoded
                                               # HeartRateMeasurement or the raw bytes)
    sup.tick(now, speed_kmh, grade_pct, direction)   # the control loop's tick (any rate);
                                               # measured belt speed (magnitude), incline,
                                               # measured direction: the workload
    sup.begin_segment(segment, limits, now)    # a governed segment starts (hr_zone_bpm set)
    sup.end_segment(now)                       # it ends (also: session stop, pause, e-stop)
    sup.status                                 # the last HRStatus, without a call

What the controller does with an :class:`HRStatus` ``s``:

* **interlock**: feed ``s.interlock_bpm`` to the heart-rate interlock instead of the raw
  treadmill value (``Reading.hr_bpm`` of ``SafetyMachine.telemetry``, and once more
  right after each :meth:`strap` call, so a strap reading reaches the interlock without
  waiting for the next Treadmill Data frame). It is the filtered HR only while the
  chosen source is ``good``; otherwise ``None``, which resets the interlock's hold timer.
  A ``good`` value above ``ceiling_bpm`` counts only when it got there through
  rate-checked readings from at or below the ceiling (a plausible rise); one that did
  not (a first reading of 199, a relocked jump) is shown as ``unreliable`` with reason
  :data:`IMPLAUSIBLE_ABOVE_CEILING`. So only plausible readings latch the ceiling: a
  fake 199, a spike, a stuck or relocked value gives a ``hr-unreliable`` warning, never
  an e-stop.
* **display / MQTT / store**: ``s.bpm`` (filtered; ``None`` unless ``good``),
  ``s.source`` (``"strap"`` | ``"treadmill"`` | ``None``), ``s.quality`` (``"good"`` |
  ``"unreliable"`` | ``"lost"`` | ``None`` = no HR source at all), ``s.reason``,
  ``s.raw_bpm``, ``s.zone_bpm`` (the governed segment's zone or ``None``).
* **warnings**: ``s.warnings`` (a tuple of codes, :data:`WARNINGS`) belong in
  ``Snapshot.warnings`` for as long as they are present: ``hr-unreliable`` (the shown
  quality is not ``good``, ``s.reason`` says why, or was not within the last
  ``recover_s`` = 5 s), ``hr-strap-unreliable`` (a strap is
  bound but not good, the treadmill's HR is used), ``hr-loss-walk``, ``hr-loss-stop``,
  ``hr-zone-unreachable`` (governed: at the speed ceiling with the HR below the zone, or
  at the floor above it, for ``zone_unreachable_s`` = 120 s; informational, nothing
  moves because of it).
* **events**: ``s.events`` (dicts with a ``"type"``, :data:`EVENT_TYPES`) are edge-triggered
  and handed out exactly once (the next call's status no longer carries them): record
  and publish each. They are ``hr-unreliable`` (the chosen source stopped being good,
  with source, quality, reason, raw_bpm), ``hr-recovered`` (good again for 5 s: one
  episode per trouble, however often it flickers), ``hr-source`` (the source in
  use changed), ``hr-loss-walk`` (governed: HR lost, ramping to walking speed) and
  ``hr-loss-stop`` (governed: not recovered in time, controlled stop).
* **governed segment** (``s.decision``, :class:`Decision`):

  - ``NONE``: no governed segment: keep the program's setpoints;
  - ``GOVERN``: command ``s.wanted_speed_kmh`` (and ``s.wanted_incline_pct``) through the
    usual planner and ramps. It lies inside every limit layer (the segment's floor and
    ceiling ∩ profile ∩ defaults ∩ site ∩ program for the segment's direction, reverse cap
    included, :func:`treadctl.hr.governor.limits_for_segment`), on the speed increment,
    moving at most ``GovernorConfig.rate_kmh_per_s`` (0.05 km/h/s) while governing and
    ``loss_rate_kmh_per_s`` (0.2 km/h/s) down to walking speed on HR loss: well below
    every profile's ramps. The governor has no integrator wind-up;
  - ``CONTROLLED_STOP``: the HR did not recover within ``GovernorConfig.loss_stop_s``
    (default 60 s after the 5 s grace): make a **controlled stop** (the user-stop path),
    never an e-stop. It stays ``CONTROLLED_STOP`` until :meth:`end_segment`.

The governor runs at most once per ``governor_period_s`` (1 s) of ``tick`` calls, whatever
the tick rate; between runs the last wanted speed is repeated.

**Choosing the source.** Each source has its own :class:`treadctl.hr.filter.HRFilter`,
fed with the lane's workload (METs of the last tick's speed, grade and direction,
:func:`treadctl.hr.workload.met`) for the stuck-value and workload-following checks. The
strap is used whenever it is ``good``; else, once the strap has not been good for
``failover_s`` (3 s), the treadmill's HR field when that is ``good`` (a failover, with the
``hr-strap-unreliable`` warning); the strap takes over again after ``strap_return_s`` (10 s)
of good readings. Else nothing
is good, and the status shows the strap (when one is bound or has sent anything) or the
treadmill with its quality and reason and the ``hr-unreliable`` warning. A lane where no
source ever sent anything and no strap is bound has ``quality None`` and no warning (many
treadmills send no HR).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from treadctl.hr.codec import (
    HeartRateCodecError,
    HeartRateMeasurement,
    decode_heart_rate_measurement,
)
from treadctl.hr.filter import HR_UNRELIABLE, HRFilter, HRFilterConfig, HRReading, Quality
from treadctl.hr.governor import Governor, GovernorConfig, GovernorOutput, governor_for_segment
from treadctl.hr.workload import met
from treadctl.limits import EffectiveLimits
from treadctl.programs.model import Segment
from treadctl.types import Direction

Source = Literal["strap", "treadmill"]

#: The strap is bound but not good; the treadmill's own HR field is used meanwhile.
HR_STRAP_UNRELIABLE = "hr-strap-unreliable"
#: Governed segment, HR lost: ramping down to walking speed and holding there.
HR_LOSS_WALK = "hr-loss-walk"
#: Governed segment, HR not recovered in time: controlled stop.
HR_LOSS_STOP = "hr-loss-stop"
#: Governed segment: the governor has sat at its speed ceiling with the HR below the zone
#: (or at its floor with the HR above) for ``zone_unreachable_s``: the zone cannot be
#: reached inside the segment's limits, or the heart rate is not this person's. Nothing
#: moves because of it; trainers should look.
HR_ZONE_UNREACHABLE = "hr-zone-unreachable"
#: The reason given to a reading above the ceiling without a plausible rise to it.
IMPLAUSIBLE_ABOVE_CEILING = "above-ceiling-without-plausible-rise"
WARNINGS = (HR_UNRELIABLE, HR_STRAP_UNRELIABLE, HR_LOSS_WALK, HR_LOSS_STOP,
            HR_ZONE_UNREACHABLE)
EVENT_TYPES = ("hr-unreliable", "hr-recovered", "hr-source", HR_LOSS_WALK, HR_LOSS_STOP)


class Decision(enum.StrEnum):
    NONE = "none"  # no governed segment: the program's setpoints stand
    GOVERN = "govern"  # command wanted_speed_kmh / wanted_incline_pct
    CONTROLLED_STOP = "controlled-stop"  # HR not recovered in time: a controlled stop


#: A treadmill's HR field is whole bpm and smoothed by the console (the simulator's too):
#: at a steady walk it reads flat for minutes, and after a stop it needs a few seconds to
#: move by 1 bpm (tau ~30 s); a strap's beat-to-beat wobble never reads flat that long. So
#: the console's value counts as stuck only 10 s after a 1 MET move, or flat for 5 minutes
#: (seen: every built-in program on treadctl-reference warned hr-unreliable at each stop).
#: The workload-following check is the strap's (a strap on somebody else): the console
#: reads the person on its belt, and a heart that climbs while the belt slows (the soak's
#: hr-spike) must still reach the ceiling. A console's jump stays unreliable (no check
#: confirms it) and its stuck value is still caught.
TREADMILL_STUCK = {"stuck_workload_met": 1.0, "stuck_after_move_s": 10.0,
                   "stuck_flat_s": 300.0, "follow_met": math.inf}


@dataclass(frozen=True)
class SupervisorConfig:
    filter: HRFilterConfig = field(default_factory=HRFilterConfig)
    governor: GovernorConfig = field(default_factory=GovernorConfig)
    #: The governor runs at most this often (seconds of ``now``).
    governor_period_s: float = 1.0
    #: Saturated this long (at a speed limit, HR outside the zone on that side):
    #: the ``hr-zone-unreachable`` warning.
    zone_unreachable_s: float = 120.0
    #: A bound strap not good this long: the treadmill's HR field is used (when good).
    #: Below the governor's 5 s loss grace, so a failover never starts the HR-loss walk.
    failover_s: float = 3.0
    #: After a failover the strap is used again once it has been good this long.
    strap_return_s: float = 10.0
    #: Good this long after trouble: the ``hr-recovered`` event, the warning goes.
    recover_s: float = 5.0


@dataclass(frozen=True)
class HRStatus:
    """The lane's heart-rate picture after one call (see the module docstring)."""

    t: float
    bpm: int | None = None
    source: Source | None = None
    quality: Quality | None = None
    reason: str | None = None
    raw_bpm: int | None = None
    interlock_bpm: int | None = None
    warnings: tuple[str, ...] = ()
    events: tuple[Mapping[str, Any], ...] = ()
    decision: Decision = Decision.NONE
    wanted_speed_kmh: float | None = None
    wanted_incline_pct: float | None = None
    governor_state: str | None = None
    zone_bpm: tuple[float, float] | None = None

    def fields(self) -> dict[str, Any]:
        """The telemetry/store fields: ``hr_bpm``, ``hr_source``, ``hr_quality``,
        ``hr_zone_bpm`` (the names for Snapshot, MQTT and the store)."""
        return {"hr_bpm": self.bpm, "hr_source": self.source, "hr_quality": self.quality,
                "hr_zone_bpm": list(self.zone_bpm) if self.zone_bpm else None}


class HRSupervisor:
    """One lane's heart rate for one session (module docstring for the contract)."""

    def __init__(self, *, ceiling_bpm: float = 185.0, strap_bound: bool = False,
                 cfg: SupervisorConfig | None = None, age_years: float | None = None) -> None:
        self.cfg = cfg or SupervisorConfig()
        fcfg = self.cfg.filter
        if age_years is not None:
            fcfg = HRFilterConfig.for_age(age_years, **fcfg.__dict__)
        self.ceiling_bpm = float(ceiling_bpm)
        self.strap_bound = strap_bound
        self.filters: dict[Source, HRFilter] = {
            "strap": HRFilter(fcfg),
            "treadmill": HRFilter(dataclasses.replace(fcfg, **TREADMILL_STUCK)),
        }
        self._seen: dict[Source, bool] = {"strap": False, "treadmill": False}
        self._readings: dict[Source, HRReading | None] = {"strap": None, "treadmill": None}
        self._workload: float | None = None
        self.bad_values = 0  # strap notifications that did not decode
        self._governor: Governor | None = None
        self._zone: tuple[float, float] | None = None
        self._gov_out: GovernorOutput | None = None
        self._gov_t = -math.inf
        self._saturated_since: float | None = None
        self._events: list[dict[str, Any]] = []
        self._prev_source: Source | None = None
        self._using: Source | None = None
        self._strap_good_since: float | None = None
        self._strap_bad_since: float | None = None
        self._good_since: float | None = None
        self._prev_good: bool | None = None  # None: nothing reported yet
        self.status = HRStatus(0.0)

    # ------------------------------------------------------------------ inputs

    def treadmill_hr(self, bpm: int | None, now: float) -> HRStatus:
        """The treadmill's HR field of one Treadmill Data frame (0 = nobody holding).
        ``None`` (a frame without the field) changes nothing. A treadmill whose field has
        only ever been 0 counts as no HR source (many send 0 all the time): it shows and
        warns only once it has sent a heart rate."""
        if bpm is not None:
            if bpm:
                self._seen["treadmill"] = True
            self._readings["treadmill"] = self.filters["treadmill"].update_bpm(
                int(bpm), now, workload_met=self._workload)
        return self._publish(now)

    def strap(self, m: HeartRateMeasurement | bytes | bytearray, now: float) -> HRStatus:
        """One strap notification: decoded, or the raw 0x2A37 bytes (an undecodable value
        counts in ``bad_values`` and is otherwise ignored: the dropout timer runs on)."""
        if not isinstance(m, HeartRateMeasurement):
            try:
                m = decode_heart_rate_measurement(m)
            except HeartRateCodecError:
                self.bad_values += 1
                return self._publish(now)
        self._seen["strap"] = True
        self._readings["strap"] = self.filters["strap"].update(m, now, self._workload)
        return self._publish(now)

    def tick(self, now: float, speed_kmh: float, grade_pct: float = 0.0,
             direction: Direction = Direction.FORWARD) -> HRStatus:
        """Time passes: the measured belt (speed magnitude, incline %, direction) gives the
        workload; dropouts are noticed; the governor runs (at most once per period)."""
        if math.isfinite(speed_kmh) and math.isfinite(grade_pct):
            self._workload = met(abs(speed_kmh), grade_pct, direction)
        for src, filt in self.filters.items():
            if self._seen[src] or (src == "strap" and self.strap_bound):
                self._readings[src] = filt.tick(now, self._workload)
        if self._governor is not None and now - self._gov_t >= self.cfg.governor_period_s - 1e-9:
            self._gov_t = now
            self._run_governor(now)
        return self._publish(now)

    def begin_segment(self, segment: Segment, limits: EffectiveLimits,
                      now: float) -> HRStatus:
        """A governed segment (``segment.hr_zone_bpm`` set) starts: the governor starts at
        the segment's ``speed_kmh`` inside ``limits_for_segment(segment, limits)``."""
        self._governor = governor_for_segment(segment, limits, now, cfg=self.cfg.governor)
        self._zone = self._governor.zone
        self._gov_out = None
        self._gov_t = -math.inf
        self._saturated_since = None
        self._run_governor(now)
        self._gov_t = now
        return self._publish(now)

    def end_segment(self, now: float) -> HRStatus:
        """The governed segment is over (next segment, stop, pause, e-stop): no decision."""
        self._governor = None
        self._zone = None
        self._gov_out = None
        self._saturated_since = None
        return self._publish(now)

    @property
    def governor(self) -> Governor | None:
        return self._governor

    # ------------------------------------------------------------------ internals

    def _plausible(self, r: HRReading | None) -> HRReading | None:
        """A good reading above the ceiling that did not rise there plausibly (a first
        reading of 199, a relocked jump) is not trusted for anything: unreliable."""
        if (r is not None and r.quality == "good" and r.bpm is not None
                and r.bpm > self.ceiling_bpm
                and (r.rise_floor_bpm is None or r.rise_floor_bpm > self.ceiling_bpm)):
            return HRReading(r.t, "unreliable", None, r.raw_bpm, IMPLAUSIBLE_ABOVE_CEILING)
        return r

    def _chosen(self, now: float) -> tuple[Source | None, HRReading | None]:
        """The source in use, with hysteresis: the strap leaves for the treadmill only
        after ``failover_s`` without a good strap reading (a single spike does not flip the
        source), and comes back once it has been good for ``strap_return_s``."""
        cfg = self.cfg
        strap = self._plausible(self._readings["strap"])
        tm = self._plausible(self._readings["treadmill"])
        strap_good = strap is not None and strap.quality == "good"
        tm_good = tm is not None and tm.quality == "good"
        if strap_good:
            self._strap_bad_since = None
            if self._strap_good_since is None:
                self._strap_good_since = now
        else:
            self._strap_good_since = None
            if self._strap_bad_since is None:
                self._strap_bad_since = now
        strap_expected = self.strap_bound or self._seen["strap"]
        use: Source | None
        if self._using == "treadmill" and tm_good:
            back = strap_good and now - self._strap_good_since >= cfg.strap_return_s  # type: ignore[operator]
            use = "strap" if back else "treadmill"
        elif strap_good:
            use = "strap"
        elif tm_good and (not strap_expected
                          or now - self._strap_bad_since >= cfg.failover_s):  # type: ignore[operator]
            use = "treadmill"
        elif strap_expected:
            use = "strap"
        elif self._seen["treadmill"]:
            use = "treadmill"
        else:
            use = None
        self._using = use
        return use, (strap if use == "strap" else tm if use == "treadmill" else None)

    def _run_governor(self, now: float) -> None:
        gov = self._governor
        assert gov is not None
        src, r = self._chosen(now)
        if r is None:  # nothing at all: the governor sees a lost reading
            r = HRReading(now, "lost", None, None, "no-data")
        before = gov.state
        out = gov.update(now, r)
        self._gov_out = out
        lim = gov.limits
        low, high = gov.zone
        saturated = out.state == "governing" and r.bpm is not None and (
            (out.speed_kmh >= lim.max_speed_kmh - 1e-9 and r.bpm < low)
            or (out.speed_kmh <= lim.min_speed_kmh + 1e-9 and r.bpm > high))
        if not saturated:
            self._saturated_since = None
        elif self._saturated_since is None:
            self._saturated_since = now
        if out.state != before or (out.stop and before != "hr-loss-stop"):
            if out.state == "hr-loss-walk":
                self._events.append({"type": HR_LOSS_WALK, "reason": r.reason,
                                     "source": src, "speed_kmh": out.speed_kmh})
            elif out.state == "hr-loss-stop":
                self._events.append({"type": HR_LOSS_STOP, "reason": out.reason,
                                     "source": src, "speed_kmh": out.speed_kmh})

    def _publish(self, now: float) -> HRStatus:
        src, r = self._chosen(now)
        good = r is not None and r.quality == "good"
        warnings: list[str] = []
        quality: Quality | None = None if r is None and src is None else (
            r.quality if r is not None else "lost")
        reason = r.reason if r is not None else ("no-data" if src is not None else None)
        if good and src == "treadmill" and (self.strap_bound or self._seen["strap"]):
            warnings.append(HR_STRAP_UNRELIABLE)
        # _chosen() already turned an implausible value above the ceiling into unreliable.
        interlock = r.bpm if good and r is not None else None
        # Edge-triggered events.
        if src != self._prev_source and src is not None:
            # Not while nothing was ever good (a bound strap shown before any reading).
            if self._prev_source is not None and self._prev_good is not None:
                self._events.append({"type": "hr-source", "source": src,
                                     "previous": self._prev_source, "reason": reason})
            self._prev_source = src
        # One hr-unreliable ... hr-recovered episode per trouble: it opens on the first
        # reading that is not good and closes after recover_s of good readings (spikes
        # every few seconds are one episode, and its warning stays up meanwhile).
        if good:
            if self._good_since is None:
                self._good_since = now
        else:
            self._good_since = None
        if quality is not None:
            if not good and self._prev_good is not False and not (
                    self._prev_good is None and reason == "no-data"):
                self._events.append({"type": "hr-unreliable", "source": src,
                                     "quality": quality, "reason": reason,
                                     "raw_bpm": r.raw_bpm if r is not None else None})
                self._prev_good = False
            elif (good and self._prev_good is False
                  and now - self._good_since >= self.cfg.recover_s):  # type: ignore[operator]
                self._events.append({"type": "hr-recovered", "source": src,
                                     "bpm": r.bpm if r is not None else None})
                self._prev_good = True
            elif good and self._prev_good is None:
                self._prev_good = True
        if (quality is not None and quality != "good") or self._prev_good is False:
            warnings.insert(0, HR_UNRELIABLE)
        out = self._gov_out
        decision = Decision.NONE
        if self._governor is not None and out is not None:
            decision = Decision.CONTROLLED_STOP if out.stop else Decision.GOVERN
            if out.state == "hr-loss-walk":
                warnings.append(HR_LOSS_WALK)
            elif out.state == "hr-loss-stop":
                warnings.append(HR_LOSS_STOP)
            since = self._saturated_since
            if since is not None and now - since >= self.cfg.zone_unreachable_s:
                warnings.append(HR_ZONE_UNREACHABLE)
        events, self._events = tuple(self._events), []
        self.status = HRStatus(
            t=now,
            bpm=r.bpm if good and r is not None else None,
            source=src,
            quality=quality,
            reason=reason,
            raw_bpm=r.raw_bpm if r is not None else None,
            interlock_bpm=interlock,
            warnings=tuple(warnings),
            events=events,
            decision=decision,
            wanted_speed_kmh=out.speed_kmh if decision is not Decision.NONE and out else None,
            wanted_incline_pct=out.incline_pct if decision is not Decision.NONE and out
            else None,
            governor_state=out.state if self._governor is not None and out else None,
            zone_bpm=self._zone,
        )
        return self.status
