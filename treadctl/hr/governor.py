"""The heart-rate governor of a segment with ``hr_zone_bpm = [LOW, HIGH]`` (docs/heart-rate.md).

Pure: the control core calls :meth:`Governor.update` with the time and the filtered reading
(:class:`treadctl.hr.filter.HRReading`) about once a second and commands what comes back,
through its usual planner and ramps. The governor never commands anything itself and has no
e-stop output.

* **Limits**: :class:`GovernorLimits` is the already intersected speed range (the segment's
  ``min_speed_kmh``/``max_speed_kmh`` ∩ profile ∩ site ∩ program, the reverse cap included)
  and, optionally, an incline range. Every output lies inside it.
* **Control**: a PI controller on the zone's centre. The speed moves at most
  ``rate_kmh_per_s`` (default 0.05 km/h per second, about 1/18 of a 0.25 m/s² reverse ramp),
  in whole speed increments. No integrator wind-up: the integral only runs while the output
  is free to move that way (not at a limit, not rate-limited), and it is re-based on the
  output whenever the output is held (conditional integration with back-calculation).
* **Incline** (``use_incline``): only once the speed sits at its maximum and the HR is still
  below the zone, the incline rises (at ``incline_rate_pct_per_s``); above the zone the
  incline comes down before the speed does.
* **HR loss** (research-treadmill rule): a reading that is not ``good`` freezes the output
  at once. After ``loss_grace_s`` without a good reading the speed ramps down to the walking
  speed (``walk_speed_kmh``, inside the limits; a belt already slower stays where it is) at
  ``loss_rate_kmh_per_s`` and holds there.
  A good reading within ``loss_stop_s`` of the loss resumes the governing from where the
  belt is (bumpless). Otherwise the output asks for a **controlled stop** (``stop=True``);
  never an e-stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from treadctl.hr.filter import HRReading
from treadctl.limits import EffectiveLimits
from treadctl.programs.model import Segment

State = Literal["governing", "holding", "hr-loss-walk", "hr-loss-stop"]


@dataclass(frozen=True)
class GovernorLimits:
    min_speed_kmh: float
    max_speed_kmh: float
    speed_increment_kmh: float = 0.1
    min_incline_pct: float = 0.0
    max_incline_pct: float = 0.0
    incline_increment_pct: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.min_speed_kmh <= self.max_speed_kmh):
            raise ValueError(f"bad speed limits {self.min_speed_kmh}..{self.max_speed_kmh}")
        if self.min_incline_pct > self.max_incline_pct:
            raise ValueError(f"bad incline limits {self.min_incline_pct}..{self.max_incline_pct}")


@dataclass(frozen=True)
class GovernorConfig:
    kp_kmh_per_bpm: float = 0.08
    ti_s: float = 40.0
    rate_kmh_per_s: float = 0.05
    use_incline: bool = False
    incline_rate_pct_per_s: float = 0.05
    walk_speed_kmh: float = 3.0
    loss_grace_s: float = 5.0
    loss_stop_s: float = 60.0
    loss_rate_kmh_per_s: float = 0.2


@dataclass(frozen=True)
class GovernorOutput:
    t: float
    speed_kmh: float
    incline_pct: float
    state: State
    stop: bool = False  # ask for a controlled stop (HR not recovered in time)
    reason: str | None = None


def _quantize_toward(value: float, current: float, inc: float) -> float:
    """The multiple of ``inc`` nearest ``value`` that does not pass it coming from
    ``current`` (so a rate-limited value never rounds up past its budget)."""
    steps = (value - current) / inc
    whole = math.floor(steps + 1e-9) if steps >= 0 else math.ceil(steps - 1e-9)
    return round(current + whole * inc, 9)


class Governor:
    """One governed segment. ``zone`` = (low, high) bpm; ``start_speed_kmh`` = the segment's
    ``speed_kmh`` (clamped into the limits: the validator already refused one outside)."""

    def __init__(self, zone: tuple[float, float], limits: GovernorLimits,
                 start_speed_kmh: float, *, start_incline_pct: float = 0.0,
                 cfg: GovernorConfig | None = None, now: float = 0.0) -> None:
        low, high = zone
        if not 0 < low < high:
            raise ValueError(f"bad heart-rate zone {zone!r}")
        self.zone = (float(low), float(high))
        self.limits = limits
        self.cfg = cfg or GovernorConfig()
        self.speed = self._clamp_speed(start_speed_kmh)
        self.incline = min(max(start_incline_pct, limits.min_incline_pct),
                           limits.max_incline_pct)
        self._v = self.speed  # rate-limited continuous speed (before quantizing)
        self._i = self.incline
        self._integral = 0.0
        self._base = self.speed  # PI output = base + kp*e + integral
        self._t = now
        self._bad_since: float | None = None
        self._loss_since: float | None = None
        self.state: State = "governing"

    @property
    def target_bpm(self) -> float:
        return (self.zone[0] + self.zone[1]) / 2

    def _clamp_speed(self, v: float) -> float:
        lim = self.limits
        return min(max(v, lim.min_speed_kmh), lim.max_speed_kmh)

    def _out(self, now: float, reason: str | None = None, stop: bool = False) -> GovernorOutput:
        return GovernorOutput(now, self.speed, self.incline, self.state, stop, reason)

    def update(self, now: float, reading: HRReading) -> GovernorOutput:
        dt = max(0.0, now - self._t)
        self._t = now
        cfg = self.cfg
        if reading.quality != "good" or reading.bpm is None:
            if self._bad_since is None:
                self._bad_since = now
            if self.state == "hr-loss-stop":
                return self._out(now, "heart rate not recovered", stop=True)
            if now - self._bad_since < cfg.loss_grace_s and self.state != "hr-loss-walk":
                self.state = "holding"
                return self._out(now, f"heart rate {reading.quality}: holding")
            if self._loss_since is None:
                self._loss_since = self._bad_since + cfg.loss_grace_s
            self.state = "hr-loss-walk"
            if now - self._loss_since >= cfg.loss_stop_s:
                self.state = "hr-loss-stop"
                return self._out(now, "heart rate not recovered", stop=True)
            # Down to walking speed, never up to it: losing the HR never speeds the belt.
            walk = min(self._clamp_speed(cfg.walk_speed_kmh), self.speed)
            step = min(cfg.loss_rate_kmh_per_s, cfg.rate_kmh_per_s * 4) * dt
            self._v = walk if abs(walk - self._v) <= step else self._v + math.copysign(
                step, walk - self._v)
            self.speed = self._clamp_speed(
                _quantize_toward(self._v, self.speed, self.limits.speed_increment_kmh)
                if abs(self._v - walk) > 1e-9 else walk)
            self._i = self.incline = self._step_incline(self.limits.min_incline_pct, dt)
            return self._out(now, "heart rate lost: walking")
        if self.state == "hr-loss-stop":
            return self._out(now, "heart rate not recovered", stop=True)
        # A good reading.
        if self.state != "governing":
            # Bumpless: resume from where the output is, with an empty integrator.
            self._base = self.speed
            self._v = self.speed
            self._integral = 0.0
        self._bad_since = None
        self._loss_since = None
        self.state = "governing"
        return self._govern(now, float(reading.bpm), dt)

    def _govern(self, now: float, hr: float, dt: float) -> GovernorOutput:
        cfg, lim = self.cfg, self.limits
        low, high = self.zone
        error = self.target_bpm - hr  # positive: HR too low -> go faster
        # Incline stage first when it applies.
        if cfg.use_incline and lim.max_incline_pct > lim.min_incline_pct:
            at_max = self.speed >= lim.max_speed_kmh - 1e-9
            if hr < low and at_max and self.incline < lim.max_incline_pct:
                self.incline = self._step_incline(lim.max_incline_pct, dt)
                return self._out(now, "speed at its maximum: raising the incline")
            if hr > high and self.incline > lim.min_incline_pct:
                self.incline = self._step_incline(lim.min_incline_pct, dt)
                self._base = self.speed
                self._integral = 0.0
                return self._out(now, "above the zone: lowering the incline first")
        kp = cfg.kp_kmh_per_bpm
        wanted = self._base + kp * error + self._integral
        candidate_integral = self._integral + kp * error * dt / cfg.ti_s
        # Rate limit on the continuous speed.
        step = cfg.rate_kmh_per_s * dt
        desired = self._clamp_speed(wanted)
        moved = min(max(desired, self._v - step), self._v + step)
        free = abs(moved - wanted) < 1e-9
        pushing_out = (error > 0 and moved < wanted) or (error < 0 and moved > wanted)
        if free or not pushing_out:
            self._integral = candidate_integral
        # Whatever happened, base + integral stays inside the speed range: the integral can
        # never hold more than the limits allow (no wind-up).
        self._integral = min(max(self._integral, lim.min_speed_kmh - self._base),
                             lim.max_speed_kmh - self._base)
        self._v = moved
        inc = lim.speed_increment_kmh
        q = _quantize_toward(self._v, self.speed, inc)
        self.speed = self._clamp_speed(q) if abs(q - self.speed) >= inc - 1e-9 else self.speed
        return self._out(now)

    def _step_incline(self, goal: float, dt: float) -> float:
        step = self.cfg.incline_rate_pct_per_s * dt
        self._i = goal if abs(goal - self._i) <= step else self._i + math.copysign(
            step, goal - self._i)
        q = _quantize_toward(self._i, self.incline, self.limits.incline_increment_pct)
        q = min(max(q, self.limits.min_incline_pct), self.limits.max_incline_pct)
        return q if abs(q - self.incline) >= self.limits.incline_increment_pct - 1e-9 \
            or (abs(self._i - goal) < 1e-9 and q == goal) else self.incline


def limits_for_segment(seg: Segment, lim: EffectiveLimits, *,
                       use_incline: bool = False) -> GovernorLimits:
    """The governor's limits for a validated governed segment: its floor and ceiling ∩ the
    limits in force for its direction (profile ∩ defaults ∩ site ∩ program, reverse cap
    included). With ``use_incline`` the incline may move inside the direction's incline
    range from the segment's incline upward; otherwise it stays at the segment's."""
    if seg.min_speed_kmh is None or seg.max_speed_kmh is None:
        raise ValueError("not a heart-rate-governed segment")
    low = max(seg.min_speed_kmh, lim.min_speed_kmh)
    high = min(seg.max_speed_kmh, lim.max_speed_for(seg.direction))
    if use_incline:
        inc_low, inc_high = seg.incline_pct, lim.incline_range_for(seg.direction)[1]
    else:
        inc_low = inc_high = seg.incline_pct
    return GovernorLimits(low, high, lim.speed_increment_kmh, inc_low, max(inc_low, inc_high),
                          lim.incline_increment_pct)


def governor_for_segment(seg: Segment, lim: EffectiveLimits, now: float, *,
                         cfg: GovernorConfig | None = None) -> Governor:
    """The seam for the control core: one governor per governed segment, started at the
    segment's ``speed_kmh`` and incline when the segment begins."""
    if seg.hr_zone_bpm is None:
        raise ValueError("not a heart-rate-governed segment")
    cfg = cfg or GovernorConfig()
    return Governor(seg.hr_zone_bpm, limits_for_segment(seg, lim, use_incline=cfg.use_incline),
                    seg.speed_kmh, start_incline_pct=seg.incline_pct, cfg=cfg, now=now)
