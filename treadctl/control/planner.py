"""Motion planning: speed and incline ramps, setpoint quantisation, nominal timelines.

Trapezoidal ramps (constant acceleration to the target, then hold). We do not jerk-limit:
the firmware's own motor controller already smooths its ramp, setpoints move in the
profile's increment (0.1 km/h typically) no faster than its command interval, and the
acceleration we ask for is never above the firmware's own, so the belt follows the plan
within one telemetry period. Limits are separate for forward and reverse and come from
profile ∩ site ∩ program (``treadctl.limits.effective_limits``).

The runner follows :class:`Ramp` objects live (direction changes wait on the measured
standstill); :func:`plan_program` computes the nominal whole-session timeline with numpy
for ETA, plots and the property tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from treadctl.types import KMH_PER_MPS, Direction

if TYPE_CHECKING:
    from treadctl.limits import EffectiveLimits
    from treadctl.programs.model import Program


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
    return min(max(result, lo), hi)


def on_grid(value: float, increment: float) -> bool:
    steps = value / increment
    return abs(steps - round(steps)) < 1e-6


@dataclass(frozen=True)
class Timeline:
    """Nominal session: sample times, signed speed (negative = reverse), incline, segment."""

    t_s: npt.NDArray[np.float64]
    speed_kmh: npt.NDArray[np.float64]
    incline_pct: npt.NDArray[np.float64]
    segment: npt.NDArray[np.int32]

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1]) if len(self.t_s) else 0.0


def _leg(v0: float, v1: float, rate: float, dt: float) -> npt.NDArray[np.float64]:
    if rate <= 0 or v0 == v1:
        return np.empty(0)
    n = max(1, math.ceil(abs(v1 - v0) / rate / dt))
    return np.linspace(v0, v1, n + 1)[1:]


def plan_program(program: Program, limits: EffectiveLimits, dt: float = 0.1) -> Timeline:
    """Nominal timeline of ``program``: ramps, direction changes via standstill + dwell.

    A direction change (ramp down, dwell) is inserted before the segment and does not
    count toward its duration; the ramp up does. The final ramp to 0 is appended."""
    speeds: list[npt.NDArray[np.float64]] = []
    inclines: list[npt.NDArray[np.float64]] = []
    segs: list[npt.NDArray[np.int32]] = []
    v = 0.0  # signed km/h
    inc = 0.0
    direction = Direction.FORWARD

    def hold(n: int, seg: int) -> None:
        speeds.append(np.full(n, v))
        inclines.append(np.full(n, inc))
        segs.append(np.full(n, seg, dtype=np.int32))

    def ramp_to(target_signed: float, target_inc: float, seg: int, d: Direction) -> int:
        nonlocal v, inc
        accel, decel = accel_limits(limits, d)
        rate = (accel if abs(target_signed) > abs(v) else decel) * KMH_PER_MPS
        sv = _leg(v, target_signed, rate, dt)
        si = _leg(inc, target_inc, limits.incline_rate_pct_per_s, dt)
        n = max(len(sv), len(si))
        if n == 0:
            return 0
        sv = np.concatenate([sv, np.full(n - len(sv), target_signed)])
        si = np.concatenate([si, np.full(n - len(si), target_inc)])
        speeds.append(sv)
        inclines.append(si)
        segs.append(np.full(n, seg, dtype=np.int32))
        v, inc = target_signed, target_inc
        return n

    for index, segment in enumerate(program.segments):
        target = segment.speed_kmh * segment.direction.sign
        if segment.direction is not direction and v != 0.0:
            ramp_to(0.0, inc, index, direction)
            hold(max(1, round(limits.standstill_dwell_s / dt)), index)
        direction = segment.direction
        n_ramp = ramp_to(target, segment.incline_pct, index, direction)
        n_total = max(1, round(segment.duration_s / dt))
        if n_total > n_ramp:
            hold(n_total - n_ramp, index)
    ramp_to(0.0, inc, len(program.segments) - 1, direction)
    speed = np.concatenate(speeds) if speeds else np.zeros(0)
    t = np.arange(1, len(speed) + 1, dtype=np.float64) * dt
    return Timeline(
        t,
        speed,
        np.concatenate(inclines) if inclines else np.zeros(0),
        np.concatenate(segs) if segs else np.zeros(0, dtype=np.int32),
    )
