"""Bertec Treadmill Control Panel remote control (TCP, port 4000), sans-I/O.

Built from willpower2727/HMRL-Matlab-Treadmill-Functions ``getPayload.m``,
``int16toBytes.m`` and ``readTreadmillPacket.m`` @38c066d9193eae78619e246cc6a3659599811051
and UM-LoCoLab/NeuroLocoMiddleware ``BertecMan.py`` @b17db5c58e9b0c24c3110fa0f24771477d114802
(docs/protocols.md, "Bertec"):

* command, 64 bytes: ``[0]`` format 0; ``[1:19]`` nine big-endian int16 - belt speeds right,
  left, right-rear, left-rear (mm/s, signed), the four belt accelerations (mm/s^2) and the
  incline (0.01 deg); ``[19:37]`` the same 18 bytes each XOR FFh (the complement check);
  ``[37:64]`` zero.
* feedback, 32 bytes, pushed by the panel without being asked: ``[0]`` format; ``[1:9]`` the
  four belt speeds (int16, mm/s); ``[9:11]`` incline (int16, 0.01 deg); ``[11:32]`` padding.

The feedback carries no check, so this decoder is strict by default (format 0, padding
zero) to find its way back after garbage; whether a real panel ever fills the padding is
an open question (docs/protocols.md).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from treadctl.protocols.common import ProtocolError, StreamDecoder

COMMAND_LEN = 64
FEEDBACK_LEN = 32
DEFAULT_PORT = 4000
_NINE = struct.Struct(">9h")
_FIVE = struct.Struct(">5h")
INT16 = range(-32768, 32768)


@dataclass(frozen=True)
class Command:
    """What the host asks for: signed belt speeds (mm/s), accelerations (mm/s^2, > 0 for
    every belt that is to move) and incline (0.01 deg)."""

    speed_right: int
    speed_left: int
    accel_right: int
    accel_left: int
    incline: int = 0
    speed_right_rear: int = 0
    speed_left_rear: int = 0
    accel_right_rear: int = 0
    accel_left_rear: int = 0

    def fields(self) -> tuple[int, ...]:
        return (self.speed_right, self.speed_left, self.speed_right_rear, self.speed_left_rear,
                self.accel_right, self.accel_left, self.accel_right_rear, self.accel_left_rear,
                self.incline)  # fmt: skip


@dataclass(frozen=True)
class Feedback:
    speed_right: int
    speed_left: int
    speed_right_rear: int = 0
    speed_left_rear: int = 0
    incline: int = 0
    format: int = 0


def _check_int16(values: tuple[int, ...]) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v not in INT16:
            raise ProtocolError(f"{v!r} is not a 16-bit signed integer")


def encode_command(cmd: Command) -> bytes:
    values = cmd.fields()
    _check_int16(values)
    if any(a < 0 for a in values[4:8]):
        raise ProtocolError("accelerations must not be negative")
    if cmd.incline < 0:
        raise ProtocolError("incline must not be negative")
    data = _NINE.pack(*values)
    return b"\x00" + data + bytes(b ^ 0xFF for b in data) + bytes(27)


def parse_command(buf: bytes) -> tuple[Command, int] | None:
    if not buf:
        return None
    if buf[0] != 0:
        raise ProtocolError(f"command format byte must be 0, got {buf[0]:02x}")
    if len(buf) < COMMAND_LEN:
        return None
    frame = buf[:COMMAND_LEN]
    data, check = frame[1:19], frame[19:37]
    if any(a ^ b != 0xFF for a, b in zip(data, check, strict=True)):
        raise ProtocolError("complement check failed")
    if any(frame[37:]):
        raise ProtocolError("trailing bytes of a command must be zero")
    s_r, s_l, s_rr, s_lr, a_r, a_l, a_rr, a_lr, inc = _NINE.unpack(data)
    return Command(s_r, s_l, a_r, a_l, inc, s_rr, s_lr, a_rr, a_lr), COMMAND_LEN


def decode_command(data: bytes) -> Command:
    got = parse_command(data)
    if got is None or got[1] != len(data):
        raise ProtocolError(f"a Bertec command is exactly {COMMAND_LEN} bytes")
    return got[0]


def command_decoder() -> StreamDecoder[Command]:
    return StreamDecoder(parse_command)


def encode_feedback(fb: Feedback) -> bytes:
    values = (fb.speed_right, fb.speed_left, fb.speed_right_rear, fb.speed_left_rear,
              fb.incline)  # fmt: skip
    _check_int16(values)
    if not 0 <= fb.format <= 0xFF:
        raise ProtocolError("format must be one byte")
    return bytes([fb.format]) + _FIVE.pack(*values) + bytes(21)


def make_feedback_parser(strict: bool = True) -> Callable[[bytes], tuple[Feedback, int] | None]:
    """The feedback parser; ``strict`` also checks the format byte and the padding."""

    def parse(buf: bytes) -> tuple[Feedback, int] | None:
        if not buf:
            return None
        if strict and buf[0] != 0:
            raise ProtocolError(f"feedback format byte must be 0, got {buf[0]:02x}")
        if strict and any(buf[11:FEEDBACK_LEN]):
            raise ProtocolError("feedback padding must be zero")
        if len(buf) < FEEDBACK_LEN:
            return None
        s_r, s_l, s_rr, s_lr, inc = _FIVE.unpack(buf[1:11])
        return Feedback(s_r, s_l, s_rr, s_lr, inc, buf[0]), FEEDBACK_LEN

    return parse


parse_feedback = make_feedback_parser(strict=True)


def decode_feedback(data: bytes, *, strict: bool = True) -> Feedback:
    got = make_feedback_parser(strict)(data)
    if got is None or got[1] != len(data):
        raise ProtocolError(f"a Bertec feedback record is exactly {FEEDBACK_LEN} bytes")
    return got[0]


def feedback_decoder(strict: bool = True) -> StreamDecoder[Feedback]:
    return StreamDecoder(make_feedback_parser(strict))
