"""Belt Direction (vendor 0xFF01, treadctl reference firmware): uint8, 0 forward, 1 reverse.

Written by the host to command the direction (only at standstill) and notified by the
firmware with the belt's ACTUAL direction. Any other byte value is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from treadctl.ftms.errors import ByteData, FTMSDecodeError, check_size

_NAME: Final = "belt-direction"
_FORWARD: Final = b"\x00"
_REVERSE: Final = b"\x01"


@dataclass(frozen=True)
class BeltDirection:
    reverse: bool


def decode_belt_direction(data: ByteData) -> BeltDirection:
    check_size(_NAME, data, 1, "the direction byte")
    if data[0] > 1:
        raise FTMSDecodeError(
            _NAME, f"value 0x{data[0]:02x} out of range (0 forward, 1 reverse)", reason="range"
        )
    return BeltDirection(reverse=data[0] == 1)


def encode_belt_direction(direction: BeltDirection) -> bytes:
    return _REVERSE if direction.reverse else _FORWARD
