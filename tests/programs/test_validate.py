"""Validation rules: each one reported with its segment number and field, nothing rounded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from treadctl.limits import Limits, effective_limits
from treadctl.profiles import load_profile
from treadctl.programs.model import Program, ProgramError, Segment, Violation
from treadctl.programs.validate import (
    check_program,
    ramp_warnings,
    require_valid,
    validate_program,
)
from treadctl.types import Direction

F, R = Direction.FORWARD, Direction.REVERSE
REFERENCE = load_profile("treadctl-reference")
KINETIC = load_profile("kinetic-rx2")
GENERIC = load_profile("generic-ftms")
REF = effective_limits(REFERENCE)


def prog(*segments: Segment, limits: Limits | None = None, **kw: object) -> Program:
    return Program("t", "", tuple(segments), limits, **kw)  # type: ignore[arg-type]


def msgs(program: Program, limits: object = REF) -> list[str]:
    return [str(v) for v in validate_program(program, limits)]  # type: ignore[arg-type]


def test_valid_program_has_no_violations() -> None:
    p = prog(Segment(60, 4.0, F), Segment(10, 0.0, F), Segment(60, 2.5, R, 2.0))
    assert validate_program(p, REF) == []


def test_violation_str_format() -> None:
    assert str(Violation(3, "speed_kmh", "x")) == "segment 3: speed_kmh: x"
    assert str(Violation(None, "duration_s", "y")) == "duration_s: y"


def test_reverse_speed_above_cap_has_the_documented_message() -> None:
    p = prog(Segment(60, 4.0, F), Segment(60, 5.0, F), Segment(60, 7.5, R))
    assert msgs(p) == ["segment 3: speed_kmh: 7.5 km/h is above the reverse cap of 6.0 km/h"]


def test_durations_must_be_positive() -> None:
    p = prog(Segment(0, 4.0, F), Segment(-5, 4.0, F), Segment(float("nan"), 4.0, F))
    assert msgs(p) == [
        "segment 1: duration_s: 0 s must be > 0 s",
        "segment 2: duration_s: -5 s must be > 0 s",
        "segment 3: duration_s: nan s must be > 0 s",
    ]


def test_total_duration_limit() -> None:
    p = prog(Segment(3000, 4.0, F), Segment(3000, 4.0, F), limits=Limits(max_duration_s=5400))
    assert msgs(p) == [
        "duration_s: total 1:40:00 (6000 s) is above the maximum session length "
        "of 1:30:00 (5400 s)"
    ]
    # Default ceiling (4 h) without any program limit.
    long = prog(*[Segment(3600, 4.0, F)] * 5)
    assert msgs(long)[-1].startswith("duration_s: total 5:00:00 (18000 s) is above")


def test_speed_range_forward() -> None:
    p = prog(Segment(60, 0.3, F), Segment(60, 18.5, F), Segment(60, -1.0, F))
    assert msgs(p) == [
        "segment 1: speed_kmh: 0.3 km/h is below the minimum speed of 0.5 km/h "
        "(0 is allowed: a stand-still segment)",
        "segment 2: speed_kmh: 18.5 km/h is above the maximum speed of 18.0 km/h",
        "segment 3: speed_kmh: -1 km/h is negative: speed is a magnitude, "
        'use direction = "reverse" to run backward',
    ]


def test_speed_zero_is_a_stand_still_segment_in_either_direction() -> None:
    assert msgs(prog(Segment(10, 0.0, F), Segment(10, 0.0, R))) == []


def test_reverse_below_minimum_speed() -> None:
    assert msgs(prog(Segment(60, 0.4, R))) == [
        "segment 1: speed_kmh: 0.4 km/h is below the minimum speed of 0.5 km/h "
        "(0 is allowed: a stand-still segment)"
    ]


def test_reverse_on_forward_only_profile() -> None:
    p = prog(Segment(60, 4.0, F), Segment(60, 2.5, R))
    assert msgs(p, effective_limits(GENERIC)) == [
        "segment 2: direction: this treadmill's firmware profile cannot run reverse"
    ]


def test_reverse_cap_follows_profile_and_program() -> None:
    p = prog(Segment(60, 5.5, R))
    assert msgs(p, effective_limits(KINETIC)) == [
        "segment 1: speed_kmh: 5.5 km/h is above the reverse cap of 5.0 km/h"
    ]
    tightened = replace(p, limits=Limits(reverse_max_speed_kmh=4.0))
    assert msgs(tightened) == [
        "segment 1: speed_kmh: 5.5 km/h is above the reverse cap of 4.0 km/h"
    ]


def test_program_limits_only_tighten() -> None:
    # A looser program cap has no effect: the profile's 6 km/h still applies.
    p = prog(Segment(60, 7.0, R), limits=Limits(reverse_max_speed_kmh=9.0, max_speed_kmh=25.0))
    assert msgs(p) == ["segment 1: speed_kmh: 7 km/h is above the reverse cap of 6.0 km/h"]
    result = check_program(p, REFERENCE)
    assert [str(x) for x in result.loosened] == [
        "program limits: max_speed_kmh = 25 km/h is above the 18 km/h already in force "
        "and has no effect",
        "program limits: reverse_max_speed_kmh = 9 km/h is above the 6 km/h already in force "
        "and has no effect",
    ]
    # Applying the program limits twice (caller already did) changes nothing.
    once = effective_limits(REFERENCE, program=p.limits)
    assert validate_program(p, once) == validate_program(p, REF)


def test_incline_ranges_per_direction() -> None:
    p = prog(
        Segment(60, 4.0, F, 12.5),
        Segment(60, 4.0, F, -0.5),
        Segment(60, 2.5, R, 6.5),
        Segment(60, 2.5, R, 5.0),
    )
    assert msgs(p) == [
        "segment 1: incline_pct: 12.5 % is above the maximum incline of 12 %",
        "segment 2: incline_pct: -0.5 % is below the minimum incline of 0 %",
        "segment 3: incline_pct: 6.5 % is above the reverse maximum incline of 6 %",
    ]
    site_min = effective_limits(REFERENCE, Limits(reverse_min_incline_pct=1.0))
    assert msgs(prog(Segment(60, 2.5, R, 0.5)), site_min) == [
        "segment 1: incline_pct: 0.5 % is below the reverse minimum incline of 1 %"
    ]


def test_unrepresentable_setpoints_are_violations_never_rounded() -> None:
    p = prog(Segment(60, 2.55, F), Segment(60, 4.0, F, 1.25))
    assert msgs(p) == [
        "segment 1: speed_kmh: 2.55 km/h is not a multiple of this treadmill's speed increment "
        "0.1 km/h (nearest: 2.5 or 2.6); setpoints are never rounded",
        "segment 2: incline_pct: 1.25 % is not a multiple of this treadmill's incline increment "
        "0.5 % (nearest: 1 or 1.5); setpoints are never rounded",
    ]
    # generic-ftms has 1 % incline steps.
    assert msgs(prog(Segment(60, 4.0, F, 1.5)), effective_limits(GENERIC)) == [
        "segment 1: incline_pct: 1.5 % is not a multiple of this treadmill's incline increment "
        "1 % (nearest: 1 or 2); setpoints are never rounded"
    ]


def test_float_noise_is_not_an_increment_violation() -> None:
    speeds = [0.1 * 3, 0.7 + 0.1, 4.0 - 0.1 * 7, 17.9]
    assert msgs(prog(*[Segment(60, s, F) for s in speeds if s >= 0.5])) == []


def test_several_rules_in_one_segment_are_all_reported() -> None:
    p = prog(Segment(60, 4.0, F), Segment(0, 7.55, R, 7.0))
    assert msgs(p) == [
        "segment 2: duration_s: 0 s must be > 0 s",
        "segment 2: speed_kmh: 7.55 km/h is above the reverse cap of 6.0 km/h",
        "segment 2: speed_kmh: 7.55 km/h is not a multiple of this treadmill's speed increment "
        "0.1 km/h (nearest: 7.5 or 7.6); setpoints are never rounded",
        "segment 2: incline_pct: 7 % is above the reverse maximum incline of 6 %",
    ]


def test_program_level_rules() -> None:
    assert msgs(prog()) == ["segment: at least one segment is required"]
    assert msgs(prog(Segment(60, 4.0, F), heartbeat_s=0.0)) == [
        "heartbeat_s: 0 s must be > 0 s"
    ]
    nameless = Program(" ", "", (Segment(60, 4.0, F),))
    assert msgs(nameless) == ["name: must not be empty"]


def test_contradictory_program_limits_are_a_violation() -> None:
    p = prog(Segment(60, 5.0, F), limits=Limits(min_speed_kmh=5.0))
    assert check_program(p, REFERENCE).ok
    bad = prog(Segment(60, 5.0, F), limits=Limits(min_speed_kmh=5.0))
    site = Limits(max_speed_kmh=4.5)
    result = check_program(bad, REFERENCE, site)
    assert not result.ok and result.limits is None
    assert str(result.violations[0]).startswith(
        "limits: min_speed_kmh = 5 km/h is above max_speed_kmh = 4.5 km/h"
    )
    # The segment is still checked against the (contradictory) limits in force.
    assert [str(v) for v in result.violations[1:]] == [
        "segment 1: speed_kmh: 5 km/h is above the maximum speed of 4.5 km/h"
    ]
    with pytest.raises(ProgramError, match="limits: min_speed_kmh = 5 km/h is above"):
        require_valid(bad, REFERENCE, site)


def test_require_valid_returns_limits_or_raises_with_all_violations() -> None:
    ok = prog(Segment(60, 4.0, F), Segment(60, 2.5, R), limits=Limits(reverse_max_speed_kmh=3.0))
    lim = require_valid(ok, REFERENCE)
    assert lim.reverse_max_speed_kmh == 3.0
    bad = prog(Segment(60, 4.0, F), Segment(60, 2.5, R), Segment(60, 3.0, R))
    with pytest.raises(ProgramError) as exc:
        require_valid(bad, GENERIC)
    assert [v.segment for v in exc.value.violations] == [2, 3]


def test_ramp_warnings_count_stop_dwell_and_reacceleration() -> None:
    # 5 km/h forward -> reverse 4 km/h on the reference profile: stop 1.39 m/s at 0.7 m/s²
    # (~2 s), dwell 2 s, accelerate 1.11 m/s at 0.25 m/s² (~4.4 s) = ~8.4 s > 5 s.
    p = prog(Segment(60, 5.0, F), Segment(5, 4.0, R), Segment(60, 4.0, R))
    warnings = ramp_warnings(p, REF)
    assert warnings == [
        "segment 2: reaching 4 km/h reverse at 0 % takes about 8 s of ramps (with the "
        "direction-change dwell), longer than the segment's 5 s"
    ]
    assert check_program(p, REFERENCE).warnings == warnings
    assert ramp_warnings(prog(Segment(60, 5.0, F), Segment(20, 4.0, R)), REF) == []
