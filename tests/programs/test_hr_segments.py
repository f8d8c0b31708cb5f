"""Heart-rate-governed segments in programs (docs/heart-rate.md): parsing (treadctl/programs/
model.py) and validation before anything moves (treadctl/programs/validate.py), every error
with its segment and field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from treadctl.limits import Limits, effective_limits
from treadctl.profiles import load_profile
from treadctl.programs.model import ProgramError, program_from_dict, program_from_json
from treadctl.programs.validate import (
    check_program,
    require_valid,
    validate_program,
)

REF = effective_limits(load_profile("treadctl-reference"))
KINETIC = load_profile("kinetic-rx2")


def program(**seg: Any) -> dict[str, Any]:
    base = {"duration_s": 600, "speed_kmh": 3.0, "direction": "reverse",
            "hr_zone_bpm": [100, 110], "min_speed_kmh": 2.0, "max_speed_kmh": 4.5}
    base.update(seg)
    return {"name": "hr", "segment": [{"duration_s": 120, "speed_kmh": 2.0,
                                       "direction": "forward"}, {k: v for k, v in base.items()
                                                                 if v is not None}]}


def errors(d: dict[str, Any], limits: Any = REF) -> list[str]:
    try:
        p = program_from_dict(d)
    except ProgramError as exc:
        return [str(v) for v in exc.violations]
    return [str(v) for v in validate_program(p, limits)]


def test_a_governed_segment_parses_validates_and_round_trips() -> None:
    p = program_from_dict(program())
    seg = p.segments[1]
    assert seg.governed and seg.hr_zone_bpm == (100.0, 110.0)
    assert (seg.min_speed_kmh, seg.max_speed_kmh) == (2.0, 4.5)
    assert not p.segments[0].governed
    # Well formed and valid: the controller drives the governor (treadctl/control/heart.py).
    assert [str(v) for v in validate_program(p, REF)] == []
    again = program_from_json(__import__("json").dumps(p.to_dict()))
    assert again.segments == p.segments


@pytest.mark.parametrize("seg, expected", [
    ({"hr_zone_bpm": [100]}, "segment 2: hr_zone_bpm: must be [LOW, HIGH] (two numbers, bpm)"),
    ({"hr_zone_bpm": "100-110"}, "segment 2: hr_zone_bpm: must be [LOW, HIGH]"),
    ({"hr_zone_bpm": [100, True]}, "segment 2: hr_zone_bpm: must be [LOW, HIGH]"),
    ({"min_speed_kmh": None}, "segment 2: min_speed_kmh: missing (required with hr_zone_bpm)"),
    ({"max_speed_kmh": "fast"}, "segment 2: max_speed_kmh: must be a number, got str"),
    ({"hr_zone_bpm": None}, "segment 2: min_speed_kmh: only allowed with hr_zone_bpm"),
])
def test_structure_errors_name_segment_and_field(seg: dict[str, Any], expected: str) -> None:
    assert any(e.startswith(expected) for e in errors(program(**seg))), errors(program(**seg))


@pytest.mark.parametrize("seg, expected", [
    ({"hr_zone_bpm": [110, 100]}, "segment 2: hr_zone_bpm: [110, 100]: LOW must be below HIGH"),
    ({"hr_zone_bpm": [20, 100]}, "segment 2: hr_zone_bpm: [20, 100] bpm is outside 30..220"),
    ({"hr_zone_bpm": [150, 190]}, "segment 2: hr_zone_bpm: HIGH 190 bpm is above the "
                                  "heart-rate ceiling of 185 bpm"),
    ({"max_speed_kmh": 7.0}, "segment 2: max_speed_kmh: 7 km/h is above the reverse cap of 6.0"),
    ({"min_speed_kmh": 0.1}, "segment 2: min_speed_kmh: 0.1 km/h is below the minimum speed"),
    ({"min_speed_kmh": 4.0, "max_speed_kmh": 3.5}, "segment 2: min_speed_kmh: 4 km/h is above "
                                                  "max_speed_kmh"),
    ({"speed_kmh": 5.0}, "segment 2: speed_kmh: 5 km/h (where the governed segment starts) is "
                         "outside"),
    ({"speed_kmh": 0.0}, "segment 2: speed_kmh: a governed segment starts moving"),
    ({"max_speed_kmh": 4.55}, "segment 2: max_speed_kmh: 4.55 km/h is not a multiple"),
])
def test_validation_errors_name_segment_and_field(seg: dict[str, Any], expected: str) -> None:
    got = errors(program(**seg))
    assert any(e.startswith(expected) for e in got), got


def test_program_and_site_limits_tighten_the_governed_range() -> None:
    d = program()
    d["limits"] = {"reverse_max_speed_kmh": 4.0}
    assert "segment 2: max_speed_kmh: 4.5 km/h is above the reverse cap of 4.0 km/h" in \
        errors(d)
    check = check_program(program_from_dict(program()), load_profile("treadctl-reference"),
                          Limits(max_hr_bpm=105))
    assert any("HIGH 110 bpm is above the heart-rate ceiling of 105" in str(v)
               for v in check.violations)


def test_refused_before_anything_moves_on_a_stricter_profile() -> None:
    p = program_from_dict(program(max_speed_kmh=5.5))
    with pytest.raises(ProgramError, match=re.escape(
            "segment 2: max_speed_kmh: 5.5 km/h is above the reverse cap of 5.0 km/h")):
        require_valid(p, KINETIC)


def test_a_governed_program_is_valid_where_the_limits_allow_it() -> None:
    check = check_program(program_from_dict(program()), load_profile("treadctl-reference"))
    assert check.ok and check.violations == []
    require_valid(program_from_dict(program()), load_profile("treadctl-reference"))
    # ... and still refused where a limit layer forbids it: a site ceiling below the zone.
    site = effective_limits(load_profile("treadctl-reference"), Limits(max_hr_bpm=105))
    assert [str(v) for v in validate_program(program_from_dict(program()), site)] == [
        "segment 2: hr_zone_bpm: HIGH 110 bpm is above the heart-rate ceiling of 105 bpm"
        " (max_hr_bpm)"]


def test_run_refuses_a_governed_program_outside_the_limits_with_exit_2(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from treadctl.cli import main

    path = tmp_path / "hr.toml"
    path.write_text(  # the zone's HIGH above the profile's 185 bpm ceiling
        'name = "hr"\n[[segment]]\nduration_s = 60\nspeed_kmh = 3.0\ndirection = "reverse"\n'
        "hr_zone_bpm = [150, 190]\nmin_speed_kmh = 2.0\nmax_speed_kmh = 4.0\n"
    )
    assert main(["run", str(path), "--speedup", "max", "--no-record"]) == 2
    assert "above the heart-rate ceiling" in capsys.readouterr().err
