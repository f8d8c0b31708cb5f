"""Built-in programs: all valid on the reverse-capable profiles, shaped by
docs/reverse-training.md."""

from __future__ import annotations

import itertools

import pytest

from treadctl.limits import effective_limits
from treadctl.profiles import load_profile
from treadctl.programs.model import Program, builtin_names, list_builtin, load_builtin
from treadctl.programs.validate import check_program, validate_program
from treadctl.types import Direction

PROGRAMS = {p.name: p for p in list_builtin()}
REQUIRED = {
    "reverse-walk-intro",
    "reverse-walk-progression",
    "reverse-intervals",
    "backward-uphill-walk",
    "reverse-jog",
    "forward-warmup-cooldown",
    "quick-demo",
    "backward-walk-hr-zone",
}


def _reverse(p: Program) -> list[float]:
    return [s.speed_kmh for s in p.segments if s.direction is Direction.REVERSE]


def test_required_builtins_exist_and_file_names_match() -> None:
    assert set(PROGRAMS) >= REQUIRED
    assert sorted(PROGRAMS) == builtin_names()
    assert len(PROGRAMS) >= 6


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_every_builtin_is_valid_and_clean(name: str, profile: str) -> None:
    p = PROGRAMS[name]
    result = check_program(p, load_profile(profile))
    # Heart-rate-governed built-ins (backward-walk-hr-zone) run like any other: the
    # controller drives the governor (treadctl/control/heart.py).
    assert [str(v) for v in result.violations] == []
    assert result.ok
    assert result.loosened == []  # built-ins only ever tighten
    assert result.warnings == []  # every segment long enough to reach its setpoints


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_builtin_explains_itself(name: str) -> None:
    p = PROGRAMS[name]
    assert p.description and p.why and "\n" not in p.why
    assert "docs/reverse-training.md" in p.why
    assert all(s.label for s in p.segments)


def test_forward_only_program_runs_on_generic_ftms_and_reverse_ones_do_not() -> None:
    generic = effective_limits(load_profile("generic-ftms"))
    assert validate_program(PROGRAMS["forward-warmup-cooldown"], generic) == []
    for name, p in PROGRAMS.items():
        if p.uses_reverse:
            assert any(v.field == "direction" for v in validate_program(p, generic)), name


def test_backward_walk_hr_zone_is_a_governed_backward_walk_at_walking_speeds() -> None:
    p = PROGRAMS["backward-walk-hr-zone"]
    warm, zone, cool = p.segments
    assert warm.direction is cool.direction is Direction.FORWARD
    assert not warm.governed and not cool.governed
    assert zone.direction is Direction.REVERSE and zone.governed
    assert zone.hr_zone_bpm == (100.0, 110.0)
    # Walking backward: below the ~5.9 km/h backward walk-to-run transition and every
    # reverse cap (kinetic-rx2: 5 km/h), never a standstill floor.
    assert zone.min_speed_kmh == 2.0 and zone.max_speed_kmh == 5.0
    assert p.limits is not None and p.limits.reverse_max_speed_kmh == 5.0
    assert zone.duration_s >= 10 * 60  # time to settle (about 2 min on the model) and hold
    assert "docs/heart-rate.md" in p.why


def test_reverse_walk_intro_matches_the_contract_shape() -> None:
    p = load_builtin("reverse-walk-intro")
    assert p.limits is not None and p.limits.reverse_max_speed_kmh == 4.0
    assert p.segments[0].direction is Direction.FORWARD
    assert all(2.0 <= v <= 3.0 for v in _reverse(p))
    assert 13 * 60 <= p.total_duration_s <= 17 * 60
    assert all(s.duration_s <= 60 for s in p.segments if s.direction is Direction.REVERSE)
    # Forward and reverse alternate: short reverse bouts between forward walking.
    dirs = [s.direction for s in p.segments]
    assert all(a is not b for a, b in itertools.pairwise(dirs))


def test_reverse_intervals_run_reverse_at_about_70_percent_of_forward() -> None:
    p = PROGRAMS["reverse-intervals"]
    segs = p.segments
    for before, rev in itertools.pairwise(segs):
        if rev.direction is Direction.REVERSE:
            assert before.direction is Direction.FORWARD
            assert rev.speed_kmh / before.speed_kmh == pytest.approx(0.7, abs=0.02)
    assert max(_reverse(p)) <= 5.0
    assert _reverse(p) == sorted(_reverse(p))  # progressive


def test_backward_uphill_walk_is_slow_reverse_at_a_few_percent() -> None:
    p = PROGRAMS["backward-uphill-walk"]
    rev = [s for s in p.segments if s.direction is Direction.REVERSE]
    assert rev and all(2.0 <= s.incline_pct <= 5.0 for s in rev)
    assert all(s.speed_kmh <= 3.5 for s in rev)


def test_reverse_speeds_stay_under_every_cap() -> None:
    for p in PROGRAMS.values():
        assert all(v <= 5.0 for v in _reverse(p)), p.name  # kinetic-rx2's cap, below 6 km/h
    assert max(_reverse(PROGRAMS["reverse-jog"])) > max(_reverse(PROGRAMS["reverse-walk-intro"]))


def test_quick_demo_is_about_90_s_forward_stop_reverse_forward() -> None:
    p = PROGRAMS["quick-demo"]
    assert 80 <= p.total_duration_s <= 100
    shape = [(s.direction, s.speed_kmh > 0) for s in p.segments]
    assert shape == [
        (Direction.FORWARD, True),
        (Direction.FORWARD, False),
        (Direction.REVERSE, True),
        (Direction.FORWARD, True),
    ]
