"""Small value types shared by every layer."""

from __future__ import annotations

import enum

KMH_PER_MPS = 3.6


class Direction(enum.StrEnum):
    FORWARD = "forward"
    REVERSE = "reverse"

    @property
    def sign(self) -> int:
        return -1 if self is Direction.REVERSE else 1


def kmh_to_mps(speed_kmh: float) -> float:
    return speed_kmh / KMH_PER_MPS


def mps_to_kmh(speed_mps: float) -> float:
    return speed_mps * KMH_PER_MPS
