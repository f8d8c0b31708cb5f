"""Training Status (0x2AD3): what phase of training the machine is in, with an optional text.

Wire format: uint8 flags (bit0 Training Status String present, bit1 Extended String
present, bits 2-7 reserved), uint8 status, then the UTF-8 string when bit0 is set.
Extended strings (a string continued over several notifications) are rejected: no
treadmill firmware treadctl supports sends them, and half a string is worse than an error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from treadctl.ftms._wire import to_int
from treadctl.ftms.errors import ByteData, FTMSDecodeError, FTMSEncodeError

_NAME: Final = "training-status"
STRING_PRESENT: Final = 0x01
EXTENDED_STRING: Final = 0x02


class TrainingStatusCode(enum.IntEnum):
    OTHER = 0x00
    IDLE = 0x01
    WARMING_UP = 0x02
    LOW_INTENSITY_INTERVAL = 0x03
    HIGH_INTENSITY_INTERVAL = 0x04
    RECOVERY_INTERVAL = 0x05
    ISOMETRIC = 0x06
    HEART_RATE_CONTROL = 0x07
    FITNESS_TEST = 0x08
    SPEED_OUTSIDE_CONTROL_REGION_LOW = 0x09
    SPEED_OUTSIDE_CONTROL_REGION_HIGH = 0x0A
    COOL_DOWN = 0x0B
    WATT_CONTROL = 0x0C
    MANUAL_MODE = 0x0D
    PRE_WORKOUT = 0x0E
    POST_WORKOUT = 0x0F


@dataclass(frozen=True)
class TrainingStatus:
    """``status`` is a :class:`TrainingStatusCode` value (0x00-0x0F); ``string`` None = absent."""

    status: int
    string: str | None = None


def decode_training_status(data: ByteData) -> TrainingStatus:
    """Decode one Training Status value; raises only :class:`FTMSDecodeError`."""
    if len(data) < 2:
        raise FTMSDecodeError(
            _NAME, f"truncated: flags and status need 2 bytes, got {len(data)}", reason="truncated"
        )
    flags, code = data[0], data[1]
    if flags & ~(STRING_PRESENT | EXTENDED_STRING):
        raise FTMSDecodeError(
            _NAME, f"reserved flag bits set: flags 0x{flags:02x} (bits 2-7)", reason="reserved"
        )
    if flags & EXTENDED_STRING:
        raise FTMSDecodeError(
            _NAME, "extended string (flags bit1) is not supported", reason="unsupported"
        )
    if code > max(TrainingStatusCode):
        raise FTMSDecodeError(
            _NAME, f"status 0x{code:02x} at offset 1 out of range (0x00-0x0F)", reason="range"
        )
    status = TrainingStatusCode(code)
    if not flags & STRING_PRESENT:
        if len(data) > 2:
            raise FTMSDecodeError(
                _NAME,
                f"{len(data) - 2} trailing bytes at offset 2 but the string flag is clear",
                reason="trailing",
            )
        return TrainingStatus(status)
    try:
        text = bytes(data[2:]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FTMSDecodeError(
            _NAME, f"string is not valid UTF-8 at offset {2 + exc.start}", reason="encoding"
        ) from None
    return TrainingStatus(status, text)


def encode_training_status(ts: TrainingStatus) -> bytes:
    code = to_int(f"{_NAME}.status", ts.status, 1, 0, max(TrainingStatusCode))
    if ts.string is None:
        return bytes((0, code))
    if not isinstance(ts.string, str):
        raise FTMSEncodeError(f"{_NAME}.string: expected str, got {type(ts.string).__name__}")
    try:
        raw = ts.string.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FTMSEncodeError(f"{_NAME}.string: not encodable as UTF-8: {exc.reason}") from None
    return bytes((STRING_PRESENT, code)) + raw
