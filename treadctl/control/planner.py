"""Motion planning: speed and incline ramps, setpoint quantisation.

Trapezoidal ramps (constant acceleration to the target, then hold). We do not jerk-limit:
the firmware's own motor controller already smooths its ramp, setpoints move in the
profile's increment (0.1 km/h typically) no faster than its command interval, and the
acceleration we ask for is never above the firmware's own, so the belt follows the plan
within one telemetry period. Limits are separate for forward and reverse and come from
profile ∩ site ∩ program (``treadctl.limits.effective_limits``).

The runner follows :class:`Ramp` objects live (direction changes wait on the measured
standstill). Pure floats, no numpy: the control path stays light to import. Nothing in
treadctl or the soak imports numpy; it is installed for matplotlib (the store's plots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from treadctl.types import KMH_PER_MPS, Direction

if TYPE_CHECKING:
    from treadctl.limits import EffectiveLimits


@dataclass(frozen=True)
class Ramp:
    """A scalar moving from ``v0`` at ``t0`` toward ``v1`` at ``rate`` units per second."""

    t0: float
    v0: float
    v1: float
    rate: float

    @property
    def duration(self) -> float:
        if self.rate <= 0:
            return 0.0 if self.v0 == self.v1 else math.inf
        return abs(self.v1 - self.v0) / self.rate

    @property
    def t_end(self) -> float:
        return self.t0 + self.duration

    def at(self, t: float) -> float:
        if t <= self.t0:
            return self.v0
        if t >= self.t_end:
            return self.v1
        step = self.rate * (t - self.t0)
        return self.v0 + step if self.v1 > self.v0 else self.v0 - step

    def done(self, t: float) -> bool:
        return t >= self.t_end


def accel_limits(limits: EffectiveLimits, direction: Direction) -> tuple[float, float]:
    """(accel, decel) in m/s² for belt motion in ``direction``."""
    if direction is Direction.REVERSE:
        return limits.reverse_accel_mps2, limits.reverse_decel_mps2
    return limits.accel_mps2, limits.decel_mps2


def speed_ramp(
    t0: float, v0_kmh: float, v1_kmh: float, limits: EffectiveLimits, direction: Direction
) -> Ramp:
    """Ramp of the speed magnitude in one direction, accelerating or decelerating."""
    accel, decel = accel_limits(limits, direction)
    rate_mps2 = accel if v1_kmh > v0_kmh else decel
    return Ramp(t0, v0_kmh, v1_kmh, rate_mps2 * KMH_PER_MPS)


def incline_ramp(t0: float, i0_pct: float, i1_pct: float, limits: EffectiveLimits) -> Ramp:
    return Ramp(t0, i0_pct, i1_pct, limits.incline_rate_pct_per_s)


def planned_ramp_s(
    v0_kmh: float,
    v1_kmh: float,
    limits: EffectiveLimits,
    direction: Direction,
    step_interval_s: float = 0.0,
) -> float:
    """How long the live ramp from ``v0_kmh`` to ``v1_kmh`` takes: the planner's rate, or
    one setpoint increment per ``step_interval_s`` (the firmware's command pace) if slower."""
    ramp = speed_ramp(0.0, v0_kmh, v1_kmh, limits, direction)
    steps = math.ceil(abs(v1_kmh - v0_kmh) / limits.speed_increment_kmh - 1e-9)
    return max(ramp.duration, steps * step_interval_s)


def quantize_toward(value: float, increment: float, start: float, end: float) -> float:
    """Snap ``value`` to the increment grid without overshooting the leg start→end.

    Rounds toward ``start`` so a ramp never commands beyond where the plan is now; the
    end value itself is validated to lie on the grid, so the last step lands on it."""
    steps = value / increment
    snapped = math.floor(steps + 1e-9) if end >= start else math.ceil(steps - 1e-9)
    result = round(snapped * increment, 6)
    lo, hi = min(start, end), max(start, end)
    # Rounded again: a leg that starts where another was caught mid-way starts off the grid
    # by float noise (1.9399999999999957), which the sender could never reach exactly.
    return round(min(max(result, lo), hi), 6)


def on_grid(value: float, increment: float) -> bool:
    steps = value / increment
    return abs(steps - round(steps)) < 1e-6
