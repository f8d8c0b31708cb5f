"""Program validation against the limits in force, before anything moves (docs/programs.md,
docs/safety.md).

This module owns the rules a program must meet on a given treadmill: positive durations and
a total inside ``max_duration_s``, speeds inside the (direction's) speed range, reverse only
on firmware that can run it (or, on a forward-only treadmill, in rear-facing mode: limits
built with ``rear_facing=True`` allow it under the reverse cap), inclines inside the
(direction's) incline range, and setpoints exactly representable at the treadmill's
increments. Nothing is ever clamped or rounded: every problem is a :class:`Violation` naming
the segment (1-based) and field.

Speed 0 is allowed in any segment as a stand-still segment (a pause, or the stop before a
direction change); any other speed must be at least the minimum speed.

A heart-rate-governed segment (``hr_zone_bpm = [LOW, HIGH]`` with ``min_speed_kmh`` and
``max_speed_kmh``, docs/heart-rate.md) must also have: a zone with LOW < HIGH, inside
30..220 bpm and with HIGH at or below the heart-rate ceiling in force (``max_hr_bpm``); a
floor and ceiling that are valid speeds of the segment's direction (the reverse cap
included) with floor <= ``speed_kmh`` <= ceiling; and a moving start (not 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from treadctl.limits import (
    EffectiveLimits,
    Limits,
    LoosenedField,
    effective_limits,
    loosened_fields,
)
from treadctl.profiles import FirmwareProfile
from treadctl.programs.model import Program, ProgramError, Segment, Violation
from treadctl.types import Direction, kmh_to_mps

__all__ = [
    "ProgramCheck",
    "ProgramError",
    "Violation",
    "check_program",
    "ramp_warnings",
    "require_valid",
    "validate_program",
]

# A setpoint is representable when it is this close to a whole number of increments
# (absorbs float noise such as 0.1 * 3 != 0.3, nothing a treadmill could display).
_INCREMENT_TOLERANCE = 1e-6


def _multiple_of(value: float, increment: float) -> bool:
    steps = value / increment
    return abs(steps - round(steps)) <= _INCREMENT_TOLERANCE * max(1.0, abs(steps))


def _neighbours(value: float, increment: float) -> str:
    low = math.floor(value / increment) * increment
    return f"{low:.6g} or {low + increment:.6g}"


def _fmt_duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _check_segment(n: int, seg: Segment, lim: EffectiveLimits) -> list[Violation]:
    out: list[Violation] = []

    def bad(field_name: str, message: str) -> None:
        out.append(Violation(n, field_name, message))

    if not math.isfinite(seg.duration_s) or seg.duration_s <= 0:
        bad("duration_s", f"{seg.duration_s:g} s must be > 0 s")

    reverse = seg.direction is Direction.REVERSE
    if reverse and not lim.reverse_allowed:
        bad("direction", "this treadmill's firmware profile cannot run reverse")

    speed = seg.speed_kmh
    if not math.isfinite(speed):
        bad("speed_kmh", f"{speed!r} is not a finite number")
    elif speed < 0:
        bad("speed_kmh", f"{speed:g} km/h is negative: speed is a magnitude, "
                         'use direction = "reverse" to run backward')
    elif speed > 0:
        cap = lim.max_speed_for(seg.direction)
        if speed < lim.min_speed_kmh:
            bad("speed_kmh", f"{speed:g} km/h is below the minimum speed of "
                             f"{lim.min_speed_kmh:g} km/h (0 is allowed: a stand-still segment)")
        elif reverse and speed > cap:
            bad("speed_kmh", f"{speed:g} km/h is above the reverse cap of {cap:.1f} km/h")
        elif not reverse and speed > cap:
            bad("speed_kmh", f"{speed:g} km/h is above the maximum speed of {cap:.1f} km/h")
        if not _multiple_of(speed, lim.speed_increment_kmh):
            bad("speed_kmh", f"{speed:g} km/h is not a multiple of this treadmill's speed "
                             f"increment {lim.speed_increment_kmh:g} km/h "
                             f"(nearest: {_neighbours(speed, lim.speed_increment_kmh)}); "
                             "setpoints are never rounded")

    incline = seg.incline_pct
    low, high = lim.incline_range_for(seg.direction)
    which = "reverse " if reverse else ""
    if not math.isfinite(incline):
        bad("incline_pct", f"{incline!r} is not a finite number")
    else:
        if incline > high:
            bad("incline_pct", f"{incline:g} % is above the {which}maximum incline of {high:g} %")
        elif incline < low:
            bad("incline_pct", f"{incline:g} % is below the {which}minimum incline of {low:g} %")
        if not _multiple_of(incline, lim.incline_increment_pct):
            bad("incline_pct", f"{incline:g} % is not a multiple of this treadmill's incline "
                               f"increment {lim.incline_increment_pct:g} % "
                               f"(nearest: {_neighbours(incline, lim.incline_increment_pct)}); "
                               "setpoints are never rounded")
    if seg.governed or seg.min_speed_kmh is not None or seg.max_speed_kmh is not None:
        out.extend(_check_governed(n, seg, lim))
    return out


#: The physiological range a heart-rate zone must lie in (the plausibility filter's bounds).
ZONE_MIN_BPM = 30.0
ZONE_MAX_BPM = 220.0


def _check_governed(n: int, seg: Segment, lim: EffectiveLimits) -> list[Violation]:
    out: list[Violation] = []

    def bad(field_name: str, message: str) -> None:
        out.append(Violation(n, field_name, message))

    if seg.hr_zone_bpm is None:
        for key in ("min_speed_kmh", "max_speed_kmh"):
            if getattr(seg, key) is not None:
                bad(key, "only allowed with hr_zone_bpm (a heart-rate-governed segment)")
        return out
    low, high = seg.hr_zone_bpm
    if not (math.isfinite(low) and math.isfinite(high)):
        bad("hr_zone_bpm", f"[{low!r}, {high!r}] must be finite numbers")
    elif low >= high:
        bad("hr_zone_bpm", f"[{low:g}, {high:g}]: LOW must be below HIGH")
    elif low < ZONE_MIN_BPM or high > ZONE_MAX_BPM:
        bad("hr_zone_bpm", f"[{low:g}, {high:g}] bpm is outside {ZONE_MIN_BPM:g}..{ZONE_MAX_BPM:g}"
                           " bpm")
    elif high > lim.max_hr_bpm:
        bad("hr_zone_bpm", f"HIGH {high:g} bpm is above the heart-rate ceiling of "
                           f"{lim.max_hr_bpm:g} bpm (max_hr_bpm)")
    floor, ceiling = seg.min_speed_kmh, seg.max_speed_kmh
    if floor is None or ceiling is None:
        for key, value in (("min_speed_kmh", floor), ("max_speed_kmh", ceiling)):
            if value is None:
                bad(key, "missing (required with hr_zone_bpm)")
        return out
    cap = lim.max_speed_for(seg.direction)
    which = "reverse cap" if seg.direction is Direction.REVERSE else "maximum speed"
    for key, value in (("min_speed_kmh", floor), ("max_speed_kmh", ceiling)):
        if not math.isfinite(value):
            bad(key, f"{value!r} is not a finite number")
        elif value < lim.min_speed_kmh:
            bad(key, f"{value:g} km/h is below the minimum speed of {lim.min_speed_kmh:g} km/h"
                     " (a governed segment never stands still)")
        elif value > cap:
            bad(key, f"{value:g} km/h is above the {which} of {cap:.1f} km/h")
        elif not _multiple_of(value, lim.speed_increment_kmh):
            bad(key, f"{value:g} km/h is not a multiple of this treadmill's speed increment "
                     f"{lim.speed_increment_kmh:g} km/h "
                     f"(nearest: {_neighbours(value, lim.speed_increment_kmh)})")
    if math.isfinite(floor) and math.isfinite(ceiling) and floor > ceiling:
        bad("min_speed_kmh", f"{floor:g} km/h is above max_speed_kmh = {ceiling:g} km/h")
    elif math.isfinite(seg.speed_kmh) and seg.speed_kmh == 0:
        bad("speed_kmh", "a governed segment starts moving: 0 (stand still) is not allowed")
    elif math.isfinite(seg.speed_kmh) and not floor <= seg.speed_kmh <= ceiling:
        bad("speed_kmh", f"{seg.speed_kmh:g} km/h (where the governed segment starts) is "
                         f"outside min_speed_kmh..max_speed_kmh = {floor:g}..{ceiling:g} km/h")
    return out


def validate_program(program: Program, limits: EffectiveLimits) -> list[Violation]:
    """Every violation of ``program`` against ``limits`` (empty list = valid).

    The program's own ``[limits]`` are applied on top of ``limits`` here (tightest wins), so
    they take effect even when the caller passed profile ∩ site limits only; applying them
    twice changes nothing.
    """
    lim = limits.tightened(program.limits)
    out = [Violation(None, "limits", problem) for problem in lim.contradictions()]
    if not program.name.strip():
        out.append(Violation(None, "name", "must not be empty"))
    if program.heartbeat_s is not None and not (
        math.isfinite(program.heartbeat_s) and program.heartbeat_s > 0
    ):
        out.append(Violation(None, "heartbeat_s", f"{program.heartbeat_s:g} s must be > 0 s"))
    if not program.segments:
        out.append(Violation(None, "segment", "at least one segment is required"))
    for n, seg in enumerate(program.segments, start=1):
        out.extend(_check_segment(n, seg, lim))
    total = program.total_duration_s
    if math.isfinite(total) and total > lim.max_duration_s:
        out.append(Violation(
            None, "duration_s",
            f"total {_fmt_duration(total)} ({total:g} s) is above the maximum session length "
            f"of {_fmt_duration(lim.max_duration_s)} ({lim.max_duration_s:g} s)",
        ))
    return out


def ramp_warnings(program: Program, limits: EffectiveLimits) -> list[str]:
    """Segments too short to reach their speed/incline at the ramp limits (advice, not errors).

    Counts the stop, the standstill dwell and the re-acceleration at a direction change. The
    program stays valid: the planner simply spends the whole segment ramping.
    """
    warnings: list[str] = []
    speed_mps = 0.0
    direction = Direction.FORWARD
    incline = 0.0
    for n, seg in enumerate(program.segments, start=1):
        target = kmh_to_mps(max(seg.speed_kmh, 0.0))
        needed = 0.0
        turning = target > 0 and seg.direction is not direction
        if turning:
            needed = speed_mps / limits.decel_for(direction) + limits.standstill_dwell_s
            needed += target / limits.accel_for(seg.direction)
            direction = seg.direction
        elif target >= speed_mps:
            needed = (target - speed_mps) / limits.accel_for(direction)
        else:
            needed = (speed_mps - target) / limits.decel_for(direction)
        incline_s = abs(seg.incline_pct - incline) / limits.incline_rate_pct_per_s
        needed = max(needed, incline_s)
        if math.isfinite(seg.duration_s) and needed > seg.duration_s:
            warnings.append(
                f"segment {n}: reaching {seg.speed_kmh:g} km/h {seg.direction.value} at "
                f"{seg.incline_pct:g} % takes about {needed:.0f} s of ramps"
                f"{' (with the direction-change dwell)' if turning else ''}, longer than the "
                f"segment's "
                f"{seg.duration_s:g} s"
            )
        speed_mps = target
        incline = seg.incline_pct
    return warnings


@dataclass(frozen=True)
class ProgramCheck:
    """Everything ``validate`` has to say about a program on one treadmill."""

    program: Program
    limits: EffectiveLimits | None  # None when the limit layers contradict each other
    violations: list[Violation] = field(default_factory=list)
    loosened: list[LoosenedField] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_program(
    program: Program,
    profile: FirmwareProfile,
    site: Limits | None = None,
    *,
    rear_facing: bool = False,
) -> ProgramCheck:
    """Validate ``program`` against profile ∩ defaults ∩ site ∩ program limits
    (``rear_facing``: reverse segments on a forward-only profile, run with the belt
    forward; :func:`treadctl.limits.profile_limits`)."""
    limits = effective_limits(profile, site, program.limits, rear_facing=rear_facing)
    violations = validate_program(program, limits)
    usable = not limits.contradictions()
    warnings = ramp_warnings(program, limits) if not violations else []
    return ProgramCheck(
        program,
        limits if usable else None,
        violations,
        loosened_fields(profile, site, program.limits),
        warnings,
    )


def require_valid(
    program: Program,
    profile: FirmwareProfile,
    site: Limits | None = None,
    *,
    rear_facing: bool = False,
) -> EffectiveLimits:
    """The effective limits to run ``program`` with, or :class:`ProgramError` listing every
    violation (the runner calls this before anything moves)."""
    result = check_program(program, profile, site, rear_facing=rear_facing)
    if result.violations or result.limits is None:
        raise ProgramError(result.violations, program.source)
    return result.limits
