"""The codec's two errors: bytes that cannot be decoded, values that cannot be encoded.

Every decoder raises only :class:`FTMSDecodeError` for bad input, whatever the bytes, so a
transport or the simulator can catch exactly one thing. The message names the characteristic
and says what was wrong (truncated, trailing bytes, reserved bits, value out of range, ...);
``reason`` carries the same as a short machine-readable word for code that must branch on it
(the simulator answers ``unsupported`` Control Point writes with "Op Code Not Supported").
"""

from __future__ import annotations

from typing import Literal, TypeAlias

#: What decoders accept: bleak hands notifications over as bytearray, framing as bytes.
ByteData: TypeAlias = bytes | bytearray | memoryview

DecodeReason = Literal[
    "truncated", "trailing", "reserved", "range", "unsupported", "encoding", "empty"
]


class FTMSDecodeError(ValueError):
    """Bytes that are not a valid value of the characteristic named in the message."""

    def __init__(self, characteristic: str, message: str, *, reason: DecodeReason) -> None:
        super().__init__(f"{characteristic}: {message}")
        self.characteristic = characteristic
        self.reason: DecodeReason = reason


class FTMSEncodeError(ValueError):
    """A value that cannot be put on the wire (out of the field's range, wrong type, ...)."""


def truncated(characteristic: str, what: str, need: int, got: int) -> FTMSDecodeError:
    return FTMSDecodeError(
        characteristic,
        f"truncated: {what} needs {need} bytes, got {got}",
        reason="truncated",
    )


def trailing(characteristic: str, expected: int, got: int) -> FTMSDecodeError:
    return FTMSDecodeError(
        characteristic,
        f"{got - expected} trailing bytes after offset {expected} (expected {expected} bytes,"
        f" got {got})",
        reason="trailing",
    )


def check_size(characteristic: str, data: ByteData, size: int, what: str) -> None:
    """Exactly ``size`` bytes, or the matching error."""
    n = len(data)
    if n < size:
        raise truncated(characteristic, what, size, n)
    if n > size:
        raise trailing(characteristic, size, n)
