"""Shared encoder helpers: physical value -> integer on the wire (or FTMSEncodeError), packing."""

from __future__ import annotations

import math

from treadctl.ftms.errors import FTMSEncodeError


def to_int(where: str, value: object, scale: float, lo: int, hi: int) -> int:
    """``value * scale`` rounded to the nearest integer, which must lie in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FTMSEncodeError(f"{where}: expected a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FTMSEncodeError(f"{where}: {value} is not a finite number")
    raw = round(value * scale) if scale != 1 else round(value)
    if not lo <= raw <= hi:
        raise FTMSEncodeError(f"{where}: {value} out of range [{lo / scale:g}, {hi / scale:g}]")
    return int(raw)


def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def s16(value: int) -> bytes:
    return value.to_bytes(2, "little", signed=True)


def u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")
