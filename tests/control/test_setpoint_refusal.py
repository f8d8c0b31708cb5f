"""``safety.setpoint_refusal``: the manual-setpoint rule (``Controller.set_manual``) judged
directly, without a session: out of range or off the grid is refused, never clamped."""

from __future__ import annotations

import pytest

from treadctl.control.safety import setpoint_refusal
from treadctl.limits import EffectiveLimits, effective_limits
from treadctl.profiles import load_profile
from treadctl.types import Direction

F, R = Direction.FORWARD, Direction.REVERSE


@pytest.fixture(scope="module")
def lim() -> EffectiveLimits:
    return effective_limits(load_profile("treadctl-reference"))


def test_inside_the_limits_nothing_is_refused(lim: EffectiveLimits) -> None:
    assert setpoint_refusal(lim, F, lim.max_speed_kmh, lim.max_incline_pct) is None
    assert setpoint_refusal(lim, R, lim.reverse_max_speed_kmh, lim.reverse_max_incline_pct) is None
    assert setpoint_refusal(lim, F, lim.min_speed_kmh, None) is None
    assert setpoint_refusal(lim, F, None, None) is None


@pytest.mark.parametrize(
    ("direction", "speed", "incline", "words"),
    [
        (F, 18.1, None, "outside 0.5..18.0 km/h (forward)"),
        (R, 6.1, None, "outside 0.5..6.0 km/h (reverse)"),  # the reverse cap in reverse
        (F, 0.4, None, "outside"),
        (F, 5.05, None, "not a multiple of 0.1 km/h"),
        (F, None, 12.5, "incline_pct 12.5 outside 0.0..12.0 %"),
        (R, None, 6.5, "outside 0.0..6.0 %"),  # the reverse incline range in reverse
        (F, None, -0.5, "outside"),
        (F, None, 1.25, "not a multiple of 0.5 %"),
    ],
)
def test_out_of_range_or_off_grid_is_refused(
    lim: EffectiveLimits, direction: Direction, speed: float | None, incline: float | None,
    words: str,
) -> None:
    refusal = setpoint_refusal(lim, direction, speed, incline)
    assert refusal is not None and words in refusal


def test_a_good_speed_does_not_hide_a_bad_incline(lim: EffectiveLimits) -> None:
    refusal = setpoint_refusal(lim, F, 5.0, 20.0)
    assert refusal is not None and refusal.startswith("incline_pct 20.0")
