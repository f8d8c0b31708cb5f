"""Workload of treadmill walking and running, from speed, grade and direction
(docs/heart-rate.md).

The ACSM metabolic equations (ACSM's Guidelines for Exercise Testing and Prescription,
Table 6.3, as printed in Bushman 2020, ACSM's Health & Fitness Journal 24(4),
doi:10.1249/FIT.0000000000000577), with S the speed in m/min and G the grade as a decimal::

    walking  VO2 = 3.5 + 0.1 * S + 1.8 * S * G      (mL/kg/min)
    running  VO2 = 3.5 + 0.2 * S + 0.9 * S * G

Walking applies up to about 100 m/min (6 km/h); the running equation from 134 m/min, and
from 80 m/min when the person really runs. We switch at :data:`WALK_RUN_KMH`; backward
locomotion switches earlier (the backward walk-to-run transition near 5.9 km/h,
docs/reverse-training.md), which we round to the same value. Backward, the net (above
rest) cost is multiplied by :data:`REVERSE_FACTOR` (about +35 %, docs/reverse-training.md).
A downhill grade counts as level (the ACSM equations are not meant for negative grades).
1 MET = 3.5 mL/kg/min.
"""

from __future__ import annotations

from treadctl.types import Direction

REST_VO2 = 3.5
MET_VO2 = 3.5
#: Speed (km/h) from which the running equation is used.
WALK_RUN_KMH = 6.0
#: Backward walking/running costs about 35 % more energy than forward at the same speed.
REVERSE_FACTOR = 1.35


def vo2_ml_kg_min(speed_kmh: float, grade_pct: float = 0.0,
                  direction: Direction = Direction.FORWARD) -> float:
    """Gross oxygen uptake (mL/kg/min) walking or running at ``speed_kmh`` (magnitude)."""
    s = abs(speed_kmh) * 1000.0 / 60.0  # m/min
    g = max(grade_pct, 0.0) / 100.0
    net = 0.1 * s + 1.8 * s * g if abs(speed_kmh) < WALK_RUN_KMH else 0.2 * s + 0.9 * s * g
    if direction is Direction.REVERSE:
        net *= REVERSE_FACTOR
    return REST_VO2 + net


def met(speed_kmh: float, grade_pct: float = 0.0,
        direction: Direction = Direction.FORWARD) -> float:
    """Workload in METs (1 = rest)."""
    return vo2_ml_kg_min(speed_kmh, grade_pct, direction) / MET_VO2


def tanaka_hr_max(age_years: float) -> float:
    """Age-predicted maximal heart rate, 208 - 0.7 * age (Tanaka, Monahan & Seals 2001;
    docs/heart-rate.md). A population estimate: individuals differ by about 10 bpm."""
    return 208.0 - 0.7 * age_years


def karvonen(hr_rest: float, hr_max: float, fraction: float) -> float:
    """Heart rate at ``fraction`` (0..1) of the heart-rate reserve (Karvonen):
    HRrest + fraction * (HRmax - HRrest)."""
    return hr_rest + fraction * (hr_max - hr_rest)
