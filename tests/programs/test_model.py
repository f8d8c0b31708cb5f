"""Program parsing: TOML and JSON forms, every structural error named by segment and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from treadctl.limits import Limits
from treadctl.programs.model import (
    Program,
    ProgramError,
    Segment,
    builtin_names,
    load_builtin,
    load_program,
    load_program_file,
    program_from_dict,
    program_from_json,
)
from treadctl.types import Direction

CONTRACT_EXAMPLE = """\
name = "reverse-walk-intro"
description = "Walk backward first: short reverse bouts between forward walking"
[limits]                 # optional, may only tighten the site/profile limits
reverse_max_speed_kmh = 4.0
[[segment]]
duration_s = 120
speed_kmh = 4.0
direction = "forward"    # "forward" | "reverse"
incline_pct = 0.0
[[segment]]
duration_s = 60
speed_kmh = 2.5
direction = "reverse"
"""

EXPECTED = Program(
    name="reverse-walk-intro",
    description="Walk backward first: short reverse bouts between forward walking",
    segments=(
        Segment(120.0, 4.0, Direction.FORWARD, 0.0),
        Segment(60.0, 2.5, Direction.REVERSE, 0.0),
    ),
    limits=Limits(reverse_max_speed_kmh=4.0),
)


def _messages(exc: pytest.ExceptionInfo[ProgramError]) -> list[str]:
    return [str(v) for v in exc.value.violations]


def test_contract_toml_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "intro.toml"
    path.write_text(CONTRACT_EXAMPLE)
    program = load_program_file(path)
    assert program == EXPECTED
    assert program.source == str(path)
    assert program.total_duration_s == 180.0
    assert program.reverse_duration_s == 60.0
    assert program.reverse_share == pytest.approx(1 / 3)
    assert program.uses_reverse


def test_json_form_with_segments_key_parses_the_same() -> None:
    doc = {
        "name": "reverse-walk-intro",
        "description": "Walk backward first: short reverse bouts between forward walking",
        "limits": {"reverse_max_speed_kmh": 4},
        "segments": [
            {"duration_s": 120, "speed_kmh": 4, "direction": "forward", "incline_pct": 0},
            {"duration_s": 60, "speed_kmh": 2.5, "direction": "reverse"},
        ],
    }
    assert program_from_json(json.dumps(doc)) == EXPECTED
    # ...and the TOML spelling "segment" is accepted in JSON too.
    doc["segment"] = doc.pop("segments")
    assert program_from_dict(doc) == EXPECTED


def test_json_file_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(EXPECTED.to_dict()))
    assert load_program_file(path) == EXPECTED
    assert load_program(str(path)) == EXPECTED


def test_optional_fields() -> None:
    program = program_from_dict({
        "name": "x",
        "why": "because",
        "heartbeat_s": 5,
        "segment": [{"duration_s": 10, "speed_kmh": 0, "direction": "forward", "label": "stand"}],
    })
    assert program.description == ""
    assert program.why == "because"
    assert program.heartbeat_s == 5.0
    assert program.limits is None
    assert program.segments[0] == Segment(10.0, 0.0, Direction.FORWARD, 0.0, "stand")
    assert program_from_dict(program.to_dict()) == program


def test_unknown_keys_are_errors_at_both_levels() -> None:
    with pytest.raises(ProgramError) as exc:
        program_from_dict({
            "name": "x",
            "colour": "red",
            "segment": [{"duration_s": 1, "speed_kmh": 1, "direction": "forward", "speed": 3}],
        }, "p.toml")
    msgs = _messages(exc)
    assert msgs[0].startswith("colour: unknown field")
    assert msgs[1].startswith("segment 1: speed: unknown field")
    assert str(exc.value).startswith("p.toml: colour: unknown field")


def test_every_structural_error_is_reported_with_segment_and_field() -> None:
    with pytest.raises(ProgramError) as exc:
        program_from_dict({
            "name": 3,
            "description": ["x"],
            "heartbeat_s": 0,
            "segment": [
                {"duration_s": "60", "speed_kmh": 2.0, "direction": "forward"},
                {"duration_s": 60, "speed_kmh": True, "direction": "backward"},
                {"speed_kmh": 1.0},
                {"duration_s": 60, "speed_kmh": 1.0, "direction": "forward",
                 "incline_pct": float("inf"), "label": 7},
                "not a table",
            ],
        })
    assert _messages(exc) == [
        "name: must be a string, got int",
        "description: must be a string, got an array",
        "heartbeat_s: must be > 0 s, got 0",
        "segment 1: duration_s: must be a number, got str",
        "segment 2: speed_kmh: must be a number, got bool",
        "segment 2: direction: must be \"forward\" or \"reverse\", got 'backward'",
        "segment 3: duration_s: missing (required)",
        'segment 3: direction: missing (required): "forward" or "reverse"',
        "segment 4: incline_pct: must be a finite number, got inf",
        "segment 4: label: must be a string, got int",
        "segment 5: segment: must be a table, got str",
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"segment": [{"duration_s": 1, "speed_kmh": 1, "direction": "forward"}]},
         "name: missing (required)"),
        ({"name": " ", "segment": [{"duration_s": 1, "speed_kmh": 1, "direction": "forward"}]},
         "name: must not be empty"),
        ({"name": "x"}, "segment: missing (required): at least one [[segment]]"),
        ({"name": "x", "segment": []}, "segment: at least one segment is required"),
        ({"name": "x", "segment": {"duration_s": 1}}, "segment: must be an array of tables"),
        ({"name": "x", "segment": [], "segments": []},
         'segments: give either "segment" or "segments", not both'),
        ({"name": "x", "limits": {"reverse_max_speed": 3},
          "segment": [{"duration_s": 1, "speed_kmh": 1, "direction": "forward"}]},
         "limits: unknown field 'reverse_max_speed'"),
        ({"name": "x", "limits": {"max_speed_kmh": "3"},
          "segment": [{"duration_s": 1, "speed_kmh": 1, "direction": "forward"}]},
         "limits: max_speed_kmh must be a number, got str"),
    ],
)
def test_program_level_errors(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ProgramError) as exc:
        program_from_dict(doc)
    assert any(m.startswith(message) for m in _messages(exc)), _messages(exc)


def test_not_a_table() -> None:
    with pytest.raises(ProgramError, match="program: must be a table/object, got an array"):
        program_from_dict([1])


def test_bad_toml_and_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ProgramError, match=r"bad.toml: file: invalid TOML"):
        load_program_file(bad)
    badj = tmp_path / "bad.json"
    badj.write_text("{nope")
    with pytest.raises(ProgramError, match=r"bad.json: program: invalid JSON"):
        load_program_file(badj)
    with pytest.raises(ProgramError, match=r"missing.toml: file: cannot read"):
        load_program_file(tmp_path / "missing.toml")


def test_load_program_by_builtin_name_and_unknown_name() -> None:
    assert "reverse-walk-intro" in builtin_names()
    program = load_program("reverse-walk-intro")
    assert program == load_builtin("reverse-walk-intro")
    assert program.source == "builtin:reverse-walk-intro"
    known = r"unknown built-in program 'nope' \(built-in: .*quick-demo"
    with pytest.raises(ProgramError, match=known):
        load_program("nope")
    with pytest.raises(ProgramError, match="unknown built-in program"):
        load_builtin("../limits")


def test_remote_program_name_never_reaches_the_file_system() -> None:
    """Fuzz finding: a 400-character name raised OSError (file name too long)."""
    from treadctl.programs.model import ProgramError, load_builtin

    for name in ("x" * 400, "../../etc/passwd", "quick-demo\x00", "a/b"):
        with pytest.raises(ProgramError, match="unknown built-in program"):
            load_builtin(name)
