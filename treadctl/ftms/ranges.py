"""Supported Speed Range (0x2AD4) and Supported Inclination Range (0x2AD5).

Speed: uint16 min, uint16 max, uint16 increment, 0.01 km/h. Inclination: sint16 min,
sint16 max, uint16 increment, 0.1 %. A range with min > max or a zero increment is
rejected: a controller must not plan setpoints against it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from treadctl.ftms._wire import to_int
from treadctl.ftms.errors import ByteData, FTMSDecodeError, FTMSEncodeError, check_size

_SPEED: Final = "speed-range"
_INCLINE: Final = "inclination-range"
_U3: Final = struct.Struct("<HHH")
_S2U: Final = struct.Struct("<hhH")


@dataclass(frozen=True)
class SpeedRange:
    min_kmh: float
    max_kmh: float
    increment_kmh: float


@dataclass(frozen=True)
class InclinationRange:
    min_pct: float
    max_pct: float
    increment_pct: float


def _check(name: str, lo: int, hi: int, inc: int) -> None:
    if lo > hi:
        raise FTMSDecodeError(name, f"out of range: minimum {lo} > maximum {hi}", reason="range")
    if inc == 0:
        raise FTMSDecodeError(name, "out of range: increment is 0 (offset 4)", reason="range")


def decode_speed_range(data: ByteData) -> SpeedRange:
    check_size(_SPEED, data, 6, "min, max and increment")
    lo, hi, inc = _U3.unpack(data)
    _check(_SPEED, lo, hi, inc)
    return SpeedRange(lo / 100, hi / 100, inc / 100)


def decode_inclination_range(data: ByteData) -> InclinationRange:
    check_size(_INCLINE, data, 6, "min, max and increment")
    lo, hi, inc = _S2U.unpack(data)
    _check(_INCLINE, lo, hi, inc)
    return InclinationRange(lo / 10, hi / 10, inc / 10)


def _check_encode(name: str, lo: int, hi: int, inc: int) -> None:
    if lo > hi or inc == 0:
        raise FTMSEncodeError(f"{name}: need min <= max and increment > 0, got {lo}, {hi}, {inc}")


def encode_speed_range(r: SpeedRange) -> bytes:
    lo = to_int(f"{_SPEED}.min_kmh", r.min_kmh, 100, 0, 0xFFFF)
    hi = to_int(f"{_SPEED}.max_kmh", r.max_kmh, 100, 0, 0xFFFF)
    inc = to_int(f"{_SPEED}.increment_kmh", r.increment_kmh, 100, 0, 0xFFFF)
    _check_encode(_SPEED, lo, hi, inc)
    return _U3.pack(lo, hi, inc)


def encode_inclination_range(r: InclinationRange) -> bytes:
    lo = to_int(f"{_INCLINE}.min_pct", r.min_pct, 10, -0x8000, 0x7FFF)
    hi = to_int(f"{_INCLINE}.max_pct", r.max_pct, 10, -0x8000, 0x7FFF)
    inc = to_int(f"{_INCLINE}.increment_pct", r.increment_pct, 10, 0, 0xFFFF)
    _check_encode(_INCLINE, lo, hi, inc)
    return _S2U.pack(lo, hi, inc)
