"""Limit layers: profile ∩ defaults ∩ site ∩ program, tightest wins; parsing names the field."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadctl.limits import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_HR_BPM,
    DEFAULT_REVERSE_MAX_SPEED_KMH,
    FIELD_BOUNDS,
    Limits,
    LimitsError,
    effective_limits,
    limits_from_dict,
    loosened_fields,
    profile_limits,
)
from treadctl.profiles import ReverseSpec, load_profile, profile_from_dict
from treadctl.types import Direction

REFERENCE = load_profile("treadctl-reference")
KINETIC = load_profile("kinetic-rx2")
GENERIC = load_profile("generic-ftms")
_PROFILES = {p.name: p for p in (REFERENCE, KINETIC, GENERIC)}


def test_reference_profile_limits_come_from_the_profile() -> None:
    lim = effective_limits(REFERENCE)
    assert lim.max_speed_kmh == 18.0
    assert lim.min_speed_kmh == 0.5
    assert lim.reverse_max_speed_kmh == 6.0
    assert lim.accel_mps2 == 0.5 and lim.decel_mps2 == 0.7
    assert lim.reverse_accel_mps2 == 0.25 and lim.reverse_decel_mps2 == 0.5
    assert (lim.min_incline_pct, lim.max_incline_pct) == (0.0, 12.0)
    assert (lim.reverse_min_incline_pct, lim.reverse_max_incline_pct) == (0.0, 6.0)
    assert lim.incline_rate_pct_per_s == 0.6
    assert lim.speed_increment_kmh == 0.1 and lim.incline_increment_pct == 0.5
    assert lim.standstill_dwell_s == 2.0
    assert lim.reverse_allowed is True
    assert lim.max_hr_bpm == DEFAULT_MAX_HR_BPM == 185.0
    assert lim.max_duration_s == DEFAULT_MAX_DURATION_S


def test_kinetic_reverse_cap_is_its_own_lower_cap() -> None:
    lim = effective_limits(KINETIC)
    assert lim.reverse_max_speed_kmh == 5.0
    assert lim.standstill_dwell_s == 3.0
    assert lim.reverse_allowed is True


def test_generic_ftms_cannot_reverse() -> None:
    assert effective_limits(GENERIC).reverse_allowed is False


def test_default_reverse_cap_applies_when_profile_allows_more() -> None:
    data = {k: v for k, v in asdict(KINETIC).items() if k != "source"}  # a complete profile
    fast = profile_from_dict({**data, "name": "fast-reverse",
                              "reverse": {**data["reverse"], "max_speed_kmh": 10.0}})  # fmt: skip
    assert fast.reverse.max_speed_kmh == 10.0
    assert effective_limits(fast).reverse_max_speed_kmh == DEFAULT_REVERSE_MAX_SPEED_KMH
    # A site cannot raise it past the default either; it is reported as loosened instead.
    site = Limits(reverse_max_speed_kmh=8.0)
    assert effective_limits(fast, site).reverse_max_speed_kmh == DEFAULT_REVERSE_MAX_SPEED_KMH
    assert [f.field for f in loosened_fields(fast, site)] == ["reverse_max_speed_kmh"]


def test_tightest_wins_across_site_and_program() -> None:
    site = Limits(max_speed_kmh=12.0, reverse_max_speed_kmh=5.0, min_incline_pct=1.0,
                  max_hr_bpm=175.0)
    program = Limits(max_speed_kmh=14.0, reverse_max_speed_kmh=4.0, reverse_accel_mps2=0.2,
                     min_incline_pct=0.5)
    lim = effective_limits(REFERENCE, site, program)
    assert lim.max_speed_kmh == 12.0  # site tighter than program and profile
    assert lim.reverse_max_speed_kmh == 4.0  # program tightest
    assert lim.reverse_accel_mps2 == 0.2
    assert lim.min_incline_pct == 1.0  # max of minima
    assert lim.max_hr_bpm == 175.0


def test_direction_helpers() -> None:
    lim = effective_limits(REFERENCE, program=Limits(reverse_max_incline_pct=4.0))
    assert lim.max_speed_for(Direction.FORWARD) == 18.0
    assert lim.max_speed_for(Direction.REVERSE) == 6.0
    assert lim.incline_range_for(Direction.REVERSE) == (0.0, 4.0)
    assert lim.incline_range_for(Direction.FORWARD) == (0.0, 12.0)
    assert lim.accel_for(Direction.REVERSE) == 0.25
    assert lim.decel_for(Direction.FORWARD) == 0.7


def test_contradictory_layers_are_listed_naming_both_fields() -> None:
    assert effective_limits(REFERENCE).contradictions() == []
    lim = effective_limits(REFERENCE, Limits(min_speed_kmh=5.0), Limits(max_speed_kmh=3.0))
    assert lim.min_speed_kmh == 5.0 and lim.max_speed_kmh == 3.0  # still tightest-wins
    problems = lim.contradictions()
    assert problems[0].startswith("min_speed_kmh = 5 km/h is above max_speed_kmh = 3 km/h")
    # The reverse cap only matters where reverse exists.
    assert effective_limits(GENERIC, Limits(min_speed_kmh=7.0)).contradictions() == []
    assert len(effective_limits(REFERENCE, Limits(min_speed_kmh=7.0)).contradictions()) == 1


def test_loosened_fields_reports_looser_values_by_layer() -> None:
    site = Limits(max_speed_kmh=20.0, reverse_max_speed_kmh=5.0)
    program = Limits(reverse_max_speed_kmh=5.5, min_incline_pct=-2.0, max_hr_bpm=170.0)
    loose = loosened_fields(REFERENCE, site, program)
    assert [(f.layer, f.field) for f in loose] == [
        ("site", "max_speed_kmh"),
        ("program", "reverse_max_speed_kmh"),
        ("program", "min_incline_pct"),
    ]
    assert str(loose[0]) == (
        "site limits: max_speed_kmh = 20 km/h is above the 18 km/h already in force "
        "and has no effect"
    )
    assert "below the 0 %" in str(loose[2])
    # Loosened values have no effect on the result.
    lim = effective_limits(REFERENCE, site, program)
    assert lim.max_speed_kmh == 18.0 and lim.reverse_max_speed_kmh == 5.0
    assert lim.min_incline_pct == 0.0


def test_limits_from_dict_accepts_ints_and_floats() -> None:
    lim = limits_from_dict({"reverse_max_speed_kmh": 4, "min_incline_pct": -1.5}, "t")
    assert lim == Limits(reverse_max_speed_kmh=4.0, min_incline_pct=-1.5)
    assert isinstance(lim.reverse_max_speed_kmh, float)
    assert lim.to_dict() == {"reverse_max_speed_kmh": 4.0, "min_incline_pct": -1.5}


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"max_speed": 5}, r"site: unknown field 'max_speed'"),
        ({"max_speed_kmh": "fast"}, r"site: max_speed_kmh must be a number, got str"),
        ({"max_speed_kmh": True}, r"site: max_speed_kmh must be a number, got bool"),
        ({"max_speed_kmh": float("nan")}, r"site: max_speed_kmh must be a finite number"),
        ({"accel_mps2": 0}, r"site: accel_mps2 must be > 0"),
        ({"min_speed_kmh": -1}, r"site: min_speed_kmh must not be negative"),
        (
            {"min_speed_kmh": 4, "max_speed_kmh": 3},
            r"site: min_speed_kmh = 4 is above max_speed_kmh",
        ),
        (
            {"reverse_min_incline_pct": 3, "reverse_max_incline_pct": 2},
            r"reverse_min_incline_pct = 3 is above reverse_max_incline_pct",
        ),
    ],
)
def test_limits_from_dict_errors_name_the_field(data: dict[str, object], pattern: str) -> None:
    with pytest.raises(LimitsError, match=pattern):
        limits_from_dict(data, "site")


def test_limits_from_dict_rejects_non_table() -> None:
    with pytest.raises(LimitsError, match="limits must be a table"):
        limits_from_dict([1, 2], "site")  # type: ignore[arg-type]


def test_forward_only_profile_still_has_consistent_reverse_fields() -> None:
    spec = ReverseSpec()
    lim = profile_limits(GENERIC)
    assert lim.reverse_max_speed_kmh <= lim.max_speed_kmh
    assert lim.reverse_accel_mps2 <= spec.accel_mps2


# ---- property: the result is never looser than any input layer ---------------------------

def _field_strategy(name: str) -> st.SearchStrategy[float | None]:
    # Minima low and maxima high most of the time, like real configs (contradictory layers
    # still occur and must obey the property too).
    if name == "min_speed_kmh":
        base = st.floats(min_value=0.0, max_value=3.0)
    elif name in ("min_incline_pct", "reverse_min_incline_pct"):
        base = st.floats(min_value=-5.0, max_value=3.0)
    elif name in ("max_incline_pct", "reverse_max_incline_pct"):
        base = st.floats(min_value=2.0, max_value=20.0)
    elif name == "max_hr_bpm":
        base = st.floats(min_value=60.0, max_value=230.0)
    elif name == "max_duration_s":
        base = st.floats(min_value=60.0, max_value=30000.0)
    else:
        base = st.floats(min_value=0.05, max_value=30.0)
    return st.none() | base


_LAYERS = st.builds(Limits, **{name: _field_strategy(name) for name in FIELD_BOUNDS})


@settings(max_examples=300, deadline=None)
@given(
    profile_name=st.sampled_from(["treadctl-reference", "kinetic-rx2", "generic-ftms"]),
    site=_LAYERS,
    program=_LAYERS,
)
def test_effective_limits_never_looser_than_any_input(
    profile_name: str, site: Limits, program: Limits
) -> None:
    profile = _PROFILES[profile_name]
    result = effective_limits(profile, site, program)
    base = profile_limits(profile)
    for name, bound in FIELD_BOUNDS.items():
        value: float = getattr(result, name)
        inputs = [getattr(base, name)] + [
            v for v in (getattr(site, name), getattr(program, name)) if v is not None
        ]
        if bound == "max":
            assert value <= min(inputs), name
        else:
            assert value >= max(inputs), name
        # ...and it is one of the inputs: tightening never invents a value.
        assert value in inputs, name
    assert result.reverse_max_speed_kmh <= DEFAULT_REVERSE_MAX_SPEED_KMH
    assert result.max_hr_bpm <= DEFAULT_MAX_HR_BPM
    assert result.reverse_max_speed_kmh <= profile.reverse.max_speed_kmh
    # Same layers, any order of application: intersection is commutative.
    assert effective_limits(profile, program, site) == result
