"""TrackMaster TMX425/428 serial protocol (RS-232 or USB FTDI, 4800 8N1), sans-I/O.

Built from the TMX428/TMX428CP/TMX58 Service Manual 317-160-406 Rev 4 (May 2021), chapter 8,
pages 63-65 (docs/protocols.md, "TrackMaster"), which the Medisoft 870-S service manual
repeats. Input commands ``A0``-``AC`` (parameters 4 or 2 ASCII digits) are acknowledged
with ``B0``-``BC`` (command + 10h); ``BE`` data out of range, ``BF`` illegal command.
Status requests ``C0``-``CD`` are answered with ``D0``-``DD`` + data. The controller only
ever answers. Speeds are 0.1 of the display unit per hour (``0040`` = 4.0 mph); elevation
is 0.1 %, last digit 0 or 5. ``A0`` starts with the Communication Disconnect Stop armed:
the belt stops when no command arrives within 0.5 s.

The "transmit acknowledge data" mode (``AC`` toggles it; off at power-up) echoes data after
the ack and makes replies depend on the command: treadctl never enables it and this
decoder does not read it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from treadctl.protocols.common import (
    ProtocolError,
    StreamDecoder,
    ascii_digits,
    decode_one,
    digit_field,
)


class Code(enum.IntEnum):
    START_CDS = 0xA0
    START_NO_CDS = 0xA1  # treadctl never sends it
    STOP = 0xA2
    SET_SPEED = 0xA3
    SET_ELEVATION = 0xA4
    SET_TIME = 0xA5
    SET_PROTOCOL = 0xA6
    SET_STAGE = 0xA7
    RESET_COUNTERS = 0xA8
    SET_WEIGHT = 0xA9
    AUTO_STOP = 0xAA
    COOL_DOWN = 0xAB
    TOGGLE_ACK_DATA = 0xAC


class Status(enum.IntEnum):
    BELT = 0xC0
    ACTUAL_SPEED = 0xC1
    ACTUAL_ELEVATION = 0xC2
    SET_SPEED = 0xC3
    SET_ELEVATION = 0xC4
    LAP_TIME = 0xC5
    TOTAL_TIME = 0xC6
    DISTANCE = 0xC7
    PROTOCOL = 0xC8
    STAGE = 0xC9
    WEIGHT = 0xCA
    CALORIES = 0xCB
    VO2 = 0xCC
    METS = 0xCD


OUT_OF_RANGE = 0xBE
ILLEGAL = 0xBF
BELT_STOPPED = 0x31
BELT_RUNNING_CDS = 0x32
BELT_RUNNING_NO_CDS = 0x33
_BELT_STATES = (BELT_STOPPED, BELT_RUNNING_CDS, BELT_RUNNING_NO_CDS)

_PARAM_DIGITS = {Code.SET_SPEED: 4, Code.SET_ELEVATION: 4, Code.SET_TIME: 4,
                 Code.SET_PROTOCOL: 2, Code.SET_STAGE: 2, Code.SET_WEIGHT: 4}  # fmt: skip
_STATUS_DIGITS: dict[Status, int] = {s: (2 if s in (Status.PROTOCOL, Status.STAGE) else 4)
                  for s in Status if s is not Status.BELT}  # fmt: skip


@dataclass(frozen=True)
class Command:
    code: Code


@dataclass(frozen=True)
class SetValue:
    code: Code
    value: int


@dataclass(frozen=True)
class Request:
    status: Status


HostMessage = Command | SetValue | Request


def encode_command(msg: HostMessage) -> bytes:
    if isinstance(msg, Command):
        if msg.code in _PARAM_DIGITS:
            raise ProtocolError(f"{Code(msg.code).name} needs a parameter")
        return bytes([Code(msg.code)])
    if isinstance(msg, SetValue):
        if msg.code not in _PARAM_DIGITS:
            raise ProtocolError(f"{Code(msg.code).name} takes no parameter")
        data = ascii_digits(msg.value, _PARAM_DIGITS[msg.code], Code(msg.code).name)
        if msg.code == Code.SET_ELEVATION and data[-1] not in b"05":
            raise ProtocolError("elevation must be a multiple of 0.5 %")
        return bytes([msg.code]) + data
    if isinstance(msg, Request):
        return bytes([Status(msg.status)])
    raise ProtocolError(f"not a TrackMaster command: {msg!r}")


def parse_command(buf: bytes) -> tuple[HostMessage, int] | None:
    """Decodes what the manual defines; an elevation that is not a half percent decodes
    (the treadmill answers it with BE)."""
    if not buf:
        return None
    lead = buf[0]
    if lead in Status._value2member_map_:
        return Request(Status(lead)), 1
    if lead not in Code._value2member_map_:
        raise ProtocolError(f"unknown TrackMaster command {lead:02x}")
    code = Code(lead)
    n = _PARAM_DIGITS.get(code)
    if n is None:
        return Command(code), 1
    value = digit_field(buf, 1, n, code.name)
    return None if value is None else (SetValue(code, value), 1 + n)


def decode_command(data: bytes) -> HostMessage:
    return decode_one(parse_command, data, "TrackMaster command")


def command_decoder() -> StreamDecoder[HostMessage]:
    return StreamDecoder(parse_command)


# ----------------------------------------------------------------- treadmill -> host


@dataclass(frozen=True)
class Ack:
    code: Code


@dataclass(frozen=True)
class Refused:
    """``BE`` (data out of range) or ``BF`` (illegal command)."""

    out_of_range: bool


@dataclass(frozen=True)
class BeltStatus:
    value: int  # BELT_STOPPED / BELT_RUNNING_CDS / BELT_RUNNING_NO_CDS

    @property
    def running(self) -> bool:
        return self.value != BELT_STOPPED

    @property
    def cds_armed(self) -> bool:
        return self.value == BELT_RUNNING_CDS


@dataclass(frozen=True)
class Value:
    status: Status
    value: int


DeviceMessage = Ack | Refused | BeltStatus | Value


def encode_reply(msg: DeviceMessage) -> bytes:
    if isinstance(msg, Ack):
        return bytes([int(Code(msg.code)) + 0x10])
    if isinstance(msg, Refused):
        return bytes([OUT_OF_RANGE if msg.out_of_range else ILLEGAL])
    if isinstance(msg, BeltStatus):
        if msg.value not in _BELT_STATES:
            raise ProtocolError(f"belt status must be 31, 32 or 33, got {msg.value:02x}")
        return bytes([0xD0, msg.value])
    if isinstance(msg, Value):
        if msg.status not in _STATUS_DIGITS:
            raise ProtocolError("BELT status is a BeltStatus")
        return bytes([int(msg.status) + 0x10]) + ascii_digits(
            msg.value, _STATUS_DIGITS[msg.status], Status(msg.status).name
        )
    raise ProtocolError(f"not a TrackMaster reply: {msg!r}")


def parse_reply(buf: bytes) -> tuple[DeviceMessage, int] | None:
    if not buf:
        return None
    lead = buf[0]
    if 0xB0 <= lead <= 0xBC:
        return Ack(Code(lead - 0x10)), 1
    if lead in (OUT_OF_RANGE, ILLEGAL):
        return Refused(lead == OUT_OF_RANGE), 1
    if lead == 0xD0:
        if len(buf) < 2:
            return None
        if buf[1] not in _BELT_STATES:
            raise ProtocolError(f"belt status must be 31, 32 or 33, got {buf[1]:02x}")
        return BeltStatus(buf[1]), 2
    if 0xD1 <= lead <= 0xDD:
        status = Status(lead - 0x10)
        n = _STATUS_DIGITS[status]
        value = digit_field(buf, 1, n, status.name)
        return None if value is None else (Value(status, value), 1 + n)
    raise ProtocolError(f"unknown TrackMaster reply {lead:02x}")


def decode_reply(data: bytes) -> DeviceMessage:
    return decode_one(parse_reply, data, "TrackMaster reply")


def reply_decoder() -> StreamDecoder[DeviceMessage]:
    return StreamDecoder(parse_reply)


def expected_reply(msg: HostMessage) -> int:
    if isinstance(msg, Request):
        return int(msg.status) + 0x10
    return int(msg.code) + 0x10
