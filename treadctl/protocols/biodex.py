"""Biodex RTM 400/500 remote protocol (RS-232), sans-I/O.

Built from the command table of the RTM 400 Installation/Operation Manual 950-275 (FN 06-172
Rev A 5/09), pages 16-17 (docs/protocols.md, "Biodex"). Command codes have bit 7 set and
their parameters are ASCII; a command is acknowledged by echoing its code, a request is
answered with the request code followed by its data, anything invalid with ``AF`` (NACK).

Not confirmed by the manual (docs/protocols.md lists them): the unit of the 3-digit speed
and 2-digit elevation, what the third byte of the ``A7`` status reply holds, the contents
of the ``B0``/``B1`` status packets (not implemented), and the ``B2`` reply having 3 digits
where ``86`` sets 4.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from treadctl.protocols.common import (
    ProtocolError,
    StreamDecoder,
    ascii_digits,
    decode_one,
    digit_field,
)

NACK = 0xAF


class Code(enum.IntEnum):
    START = 0x80
    STOP = 0x81
    SET_SPEED = 0x82
    SET_ELEVATION = 0x83
    SET_DIRECTION = 0x84
    SET_WEIGHT = 0x85
    SET_TIME = 0x86
    FIRMWARE_VERSION = 0x9E
    WHO_ARE_YOU = 0x9F


class Request(enum.IntEnum):
    SPEED = 0xA0
    ELEVATION = 0xA1
    DIRECTION = 0xA2
    TIME = 0xA3
    DISTANCE = 0xA4
    CALORIES = 0xA5
    METS = 0xA6
    STATUS = 0xA7
    SET_TIME = 0xB2
    WEIGHT = 0xB3


#: Digits of the parameter of each command that has one.
_COMMAND_DIGITS = {Code.SET_SPEED: 3, Code.SET_ELEVATION: 2, Code.SET_WEIGHT: 3,
                   Code.SET_TIME: 4}  # fmt: skip
#: Reply code and digits of each numeric request.
_REPLY = {Request.SPEED: (0xA0, 3), Request.ELEVATION: (0xA1, 2), Request.TIME: (0xA3, 4),
          Request.DISTANCE: (0xA4, 4), Request.CALORIES: (0xA5, 4), Request.METS: (0xA6, 4),
          Request.SET_TIME: (0xB5, 3), Request.WEIGHT: (0xB7, 3)}  # fmt: skip
_REPLY_BY_CODE = {code: (req, n) for req, (code, n) in _REPLY.items()}
#: Who-are-you answers (96h + ASCII): single RS-232 unit, RS-422 multi-drop unit, RTM3.
IDENTITIES = {"4": "single RS-232", "5": "multiple RS-422", "6": "RTM3"}
MAX_VERSION_CHARS = 32

# Communication Status byte (p. 17).
COMM_ILLEGAL = 0x01
COMM_UNEXPECTED = 0x02
COMM_NEW = 0x04
COMM_TIME = 0x08
COMM_UART = 0x10
COMM_HW_FAULT = 0x20
COMM_RANGE = 0x40
# System Status Byte 1 (p. 17): the lower control board's error codes.
SYS_NO_HALL = 0x01
SYS_HALL_OVERSPEED = 0x02
SYS_TACH_OVERSPEED = 0x04
SYS_NO_TACH = 0x08
SYS_GRADE_POT = 0x10
SYS_AMPLIFIER = 0x20
SYS_LANYARD = 0x40
SYS_COMM_FAULT = 0x80
SYS_HARDWARE = (SYS_NO_HALL | SYS_HALL_OVERSPEED | SYS_TACH_OVERSPEED | SYS_NO_TACH
                | SYS_GRADE_POT | SYS_AMPLIFIER)  # fmt: skip


# ----------------------------------------------------------------- host -> treadmill


@dataclass(frozen=True)
class Command:
    """A command without parameter: START, STOP, FIRMWARE_VERSION, WHO_ARE_YOU."""

    code: Code


@dataclass(frozen=True)
class SetValue:
    """SET_SPEED (3 digits), SET_ELEVATION (2), SET_WEIGHT (3), SET_TIME (4)."""

    code: Code
    value: int


@dataclass(frozen=True)
class SetDirection:
    reverse: bool
    code: ClassVar[Code] = Code.SET_DIRECTION


@dataclass(frozen=True)
class Read:
    request: Request


HostMessage = Command | SetValue | SetDirection | Read


def _parse_direction(buf: bytes) -> bool | None:
    """The ``F``/``R`` byte after the lead (``84`` and ``A2``): True for reverse, None
    while it has not come."""
    if len(buf) < 2:
        return None
    if buf[1] not in b"FR":
        raise ProtocolError(f"direction must be 'F' or 'R', got {buf[1]:02x}")
    return buf[1] == 0x52


def encode_command(msg: HostMessage) -> bytes:
    if isinstance(msg, Command):
        if msg.code in _COMMAND_DIGITS or msg.code == Code.SET_DIRECTION:
            raise ProtocolError(f"{msg.code.name} needs a parameter")
        return bytes([Code(msg.code)])
    if isinstance(msg, SetValue):
        if msg.code not in _COMMAND_DIGITS:
            raise ProtocolError(f"{Code(msg.code).name} takes no numeric parameter")
        return bytes([msg.code]) + ascii_digits(msg.value, _COMMAND_DIGITS[msg.code],
                                                Code(msg.code).name)
    if isinstance(msg, SetDirection):
        return bytes([Code.SET_DIRECTION]) + (b"R" if msg.reverse else b"F")
    if isinstance(msg, Read):
        return bytes([Request(msg.request)])
    raise ProtocolError(f"not a Biodex command: {msg!r}")


def parse_command(buf: bytes) -> tuple[HostMessage, int] | None:
    """The first command in ``buf`` (see :class:`StreamDecoder`)."""
    if not buf:
        return None
    lead = buf[0]
    if lead in Request._value2member_map_:
        return Read(Request(lead)), 1
    if lead not in Code._value2member_map_:
        raise ProtocolError(f"unknown Biodex command code {lead:02x}")
    code = Code(lead)
    if code is Code.SET_DIRECTION:
        reverse = _parse_direction(buf)
        return None if reverse is None else (SetDirection(reverse), 2)
    n = _COMMAND_DIGITS.get(code)
    if n is None:
        return Command(code), 1
    value = digit_field(buf, 1, n, code.name)
    return None if value is None else (SetValue(code, value), 1 + n)


def decode_command(data: bytes) -> HostMessage:
    return decode_one(parse_command, data, "Biodex command")


def command_decoder() -> StreamDecoder[HostMessage]:
    return StreamDecoder(parse_command)


# ----------------------------------------------------------------- treadmill -> host


@dataclass(frozen=True)
class Ack:
    """The echo of a command code (80h-86h)."""

    code: Code


@dataclass(frozen=True)
class Nack:
    pass


@dataclass(frozen=True)
class Identity:
    kind: str  # "4" "5" "6" (IDENTITIES)


@dataclass(frozen=True)
class FirmwareVersion:
    text: str


@dataclass(frozen=True)
class Value:
    """The answer to a numeric request: its digits as an int."""

    request: Request
    value: int


@dataclass(frozen=True)
class Direction:
    reverse: bool


@dataclass(frozen=True)
class Status:
    """``A7`` + Comm Status + System Status 1 + a third byte the manual does not name."""

    comm: int
    system: int
    extra: int = 0

    @property
    def lanyard_pulled(self) -> bool:
        return bool(self.system & SYS_LANYARD)

    @property
    def comm_fault(self) -> bool:
        """System Status 1 bit 7. (Comm Status bit 4, one UART error, is not a danger: it
        comes with a NACK, and repeated NACKs latch on their own.)"""
        return bool(self.system & SYS_COMM_FAULT)

    @property
    def hardware_fault(self) -> bool:
        return bool(self.system & SYS_HARDWARE) or bool(self.comm & COMM_HW_FAULT)


DeviceMessage = Ack | Nack | Identity | FirmwareVersion | Value | Direction | Status


def encode_reply(msg: DeviceMessage) -> bytes:
    if isinstance(msg, Ack):
        code = Code(msg.code)
        if code in (Code.FIRMWARE_VERSION, Code.WHO_ARE_YOU):
            raise ProtocolError(f"{code.name} is answered with data, not an echo")
        return bytes([code])
    if isinstance(msg, Nack):
        return bytes([NACK])
    if isinstance(msg, Identity):
        if msg.kind not in IDENTITIES:
            raise ProtocolError(f"identity must be one of {', '.join(IDENTITIES)}")
        return b"\x96" + msg.kind.encode()
    if isinstance(msg, FirmwareVersion):
        raw = msg.text.encode("ascii", "replace")
        if len(raw) > MAX_VERSION_CHARS or any(not 0x20 <= b < 0x7F for b in raw):
            raise ProtocolError("firmware version must be printable ASCII, <= 32 characters")
        return b"\x9e" + raw + b"\x00"
    if isinstance(msg, Value):
        if msg.request not in _REPLY:
            raise ProtocolError(f"{Request(msg.request).name} is not a numeric request")
        lead, n = _REPLY[msg.request]
        return bytes([lead]) + ascii_digits(msg.value, n, Request(msg.request).name)
    if isinstance(msg, Direction):
        return b"\xa2" + (b"R" if msg.reverse else b"F")
    if isinstance(msg, Status):
        for name, b in (("comm", msg.comm), ("system", msg.system), ("extra", msg.extra)):
            if not 0 <= b <= 0xFF:
                raise ProtocolError(f"status {name} byte {b} out of range")
        if msg.comm & 0x80:
            raise ProtocolError("Comm Status bit 7 must be zero")
        return bytes([0xA7, msg.comm, msg.system, msg.extra])
    raise ProtocolError(f"not a Biodex reply: {msg!r}")


def parse_reply(buf: bytes) -> tuple[DeviceMessage, int] | None:
    if not buf:
        return None
    lead = buf[0]
    if 0x80 <= lead <= 0x86:
        return Ack(Code(lead)), 1
    if lead == NACK:
        return Nack(), 1
    if lead == 0x96:
        if len(buf) < 2:
            return None
        kind = chr(buf[1])
        if kind not in IDENTITIES:
            raise ProtocolError(f"unknown identity {buf[1]:02x}")
        return Identity(kind), 2
    if lead == 0x9E:
        end = buf.find(b"\x00", 1)
        text = buf[1:] if end < 0 else buf[1:end]
        if any(not 0x20 <= b < 0x7F for b in text) or len(text) > MAX_VERSION_CHARS:
            raise ProtocolError("firmware version is not printable ASCII")
        if end < 0:
            return None
        return FirmwareVersion(text.decode("ascii")), end + 1
    if lead == 0xA2:
        reverse = _parse_direction(buf)
        return None if reverse is None else (Direction(reverse), 2)
    if lead == 0xA7:
        if len(buf) >= 2 and buf[1] & 0x80:
            raise ProtocolError("Comm Status bit 7 set: not a status reply")
        if len(buf) < 4:
            return None
        return Status(buf[1], buf[2], buf[3]), 4
    if lead in _REPLY_BY_CODE:
        req, n = _REPLY_BY_CODE[lead]
        value = digit_field(buf, 1, n, req.name)
        return None if value is None else (Value(req, value), 1 + n)
    raise ProtocolError(f"unknown Biodex reply code {lead:02x}")


def decode_reply(data: bytes) -> DeviceMessage:
    return decode_one(parse_reply, data, "Biodex reply")


def reply_decoder() -> StreamDecoder[DeviceMessage]:
    return StreamDecoder(parse_reply)


def expected_reply(msg: HostMessage) -> int:
    """The lead byte of the reply that answers ``msg`` (a NACK may come instead)."""
    if isinstance(msg, Read):
        if msg.request in _REPLY:
            return _REPLY[msg.request][0]
        return int(msg.request)  # DIRECTION -> A2, STATUS -> A7
    if msg.code == Code.WHO_ARE_YOU:
        return 0x96
    return int(msg.code)
