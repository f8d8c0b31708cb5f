"""Woodway remote protocol (RS-232), the dialect of the open pyWoodway client, sans-I/O.

Built from Munroe-Meyer-Institute-VR-Laboratory/pyWoodway ``pywoodway/treadmill.py``
@60cf72871f7b89710161bd735b22c5778bad2c86 (docs/protocols.md, "Woodway"): one command
byte, ASCII parameters, and a reply byte that is the command + 10h. The speed command
carries the direction: ``A3`` + direction (``'0'`` forward, ``'3'`` reverse) + three
digits of 0.1 mph; elevation is four digits of 0.1 %. Errors: ``BD`` master time-out,
``BE`` invalid data, ``BF`` invalid command.

The machine clamps out-of-range values silently (PPS manual, "RS-232 Interface"), so the
encoder refuses what does not fit and the driver validates against the profile before it
sends. The "WOODWAY standard protocol" of the PPS manuals is a different command set whose
literal bytes are not public: it is not implemented (docs/protocols.md).
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

FORWARD = 0x30  # '0'
REVERSE = 0x33  # '3'
#: pyWoodway refuses more than 29.9 mph (three digits: tens, units, tenths).
MAX_SPEED_TENTHS_MPH = 299


class Code(enum.IntEnum):
    START_WITH_TIMER = 0xA0  # the belt runs while commands keep the comm timer fed
    DISENGAGE = 0xA2
    SET_SPEED = 0xA3
    SET_ELEVATION = 0xA4
    START = 0xA9  # without the comm timer: treadctl never sends it
    AUTO_STOP = 0xAA
    TEST_COMMS = 0xC0
    GET_SPEED = 0xC1
    GET_ELEVATION = 0xC2
    GET_FIRMWARE = 0xC3


class Error(enum.IntEnum):
    MASTER_TIMEOUT = 0xBD
    INVALID_DATA = 0xBE
    INVALID_COMMAND = 0xBF


_SIMPLE = frozenset({Code.START_WITH_TIMER, Code.DISENGAGE, Code.START, Code.AUTO_STOP,
                     Code.TEST_COMMS, Code.GET_SPEED, Code.GET_ELEVATION,
                     Code.GET_FIRMWARE})  # fmt: skip


@dataclass(frozen=True)
class Command:
    code: Code


@dataclass(frozen=True)
class SetSpeed:
    tenths_mph: int  # magnitude, 0..299
    reverse: bool = False


@dataclass(frozen=True)
class SetElevation:
    tenths_pct: int  # 0..9999 (the machine's own maximum is lower: the profile's)


HostMessage = Command | SetSpeed | SetElevation


def _speed_digits(tenths: int) -> bytes:
    if isinstance(tenths, int) and not isinstance(tenths, bool) and tenths > MAX_SPEED_TENTHS_MPH:
        raise ProtocolError(f"speed {tenths / 10} mph above 29.9")
    return ascii_digits(tenths, 3, "speed")


def _parse_speed(buf: bytes) -> tuple[int, bool] | None:
    """Direction byte + three digits of 0.1 mph after the lead byte (``A3`` and ``D1``)."""
    if len(buf) >= 2 and buf[1] not in (FORWARD, REVERSE):
        raise ProtocolError(f"direction byte must be '0' or '3', got {buf[1]:02x}")
    tenths = digit_field(buf, 2, 3, "speed")
    return None if tenths is None else (tenths, buf[1] == REVERSE)


def encode_command(msg: HostMessage) -> bytes:
    if isinstance(msg, Command):
        if msg.code not in _SIMPLE:
            raise ProtocolError(f"{Code(msg.code).name} needs a parameter")
        return bytes([msg.code])
    if isinstance(msg, SetSpeed):
        return bytes([Code.SET_SPEED, REVERSE if msg.reverse else FORWARD]) + _speed_digits(
            msg.tenths_mph
        )
    if isinstance(msg, SetElevation):
        return bytes([Code.SET_ELEVATION]) + ascii_digits(msg.tenths_pct, 4, "elevation")
    raise ProtocolError(f"not a Woodway command: {msg!r}")


def parse_command(buf: bytes) -> tuple[HostMessage, int] | None:
    if not buf:
        return None
    lead = buf[0]
    if lead not in Code._value2member_map_:
        raise ProtocolError(f"unknown Woodway command {lead:02x}")
    code = Code(lead)
    if code in _SIMPLE:
        return Command(code), 1
    if code is Code.SET_SPEED:
        speed = _parse_speed(buf)
        return None if speed is None else (SetSpeed(*speed), 5)
    tenths_pct = digit_field(buf, 1, 4, "elevation")  # SET_ELEVATION
    return None if tenths_pct is None else (SetElevation(tenths_pct), 5)


def decode_command(data: bytes) -> HostMessage:
    return decode_one(parse_command, data, "Woodway command")


def command_decoder() -> StreamDecoder[HostMessage]:
    return StreamDecoder(parse_command)


# ----------------------------------------------------------------- treadmill -> host

_ACKED = (Code.START_WITH_TIMER, Code.DISENGAGE, Code.SET_SPEED, Code.SET_ELEVATION,
          Code.START, Code.AUTO_STOP)  # fmt: skip
_ACK_CODES = {int(c) + 0x10: c for c in _ACKED}


@dataclass(frozen=True)
class Ack:
    """The reply (command + 10h) to a command without data in its answer."""

    code: Code


@dataclass(frozen=True)
class Fault:
    error: Error


@dataclass(frozen=True)
class State:
    """``D0`` + one byte: the answer to TEST_COMMS (the byte's meaning is not public)."""

    value: int


@dataclass(frozen=True)
class Speed:
    tenths_mph: int
    reverse: bool


@dataclass(frozen=True)
class Elevation:
    tenths_pct: int


@dataclass(frozen=True)
class Firmware:
    revision: int  # four bytes, big-endian


DeviceMessage = Ack | Fault | State | Speed | Elevation | Firmware


def encode_reply(msg: DeviceMessage) -> bytes:
    if isinstance(msg, Ack):
        if msg.code not in _ACKED:
            raise ProtocolError(f"{Code(msg.code).name} is answered with data")
        return bytes([int(msg.code) + 0x10])
    if isinstance(msg, Fault):
        return bytes([Error(msg.error)])
    if isinstance(msg, State):
        if not 0 <= msg.value <= 0xFF:
            raise ProtocolError("state must be one byte")
        return bytes([0xD0, msg.value])
    if isinstance(msg, Speed):
        return bytes([0xD1, REVERSE if msg.reverse else FORWARD]) + _speed_digits(msg.tenths_mph)
    if isinstance(msg, Elevation):
        return b"\xd2" + ascii_digits(msg.tenths_pct, 4, "elevation")
    if isinstance(msg, Firmware):
        if not 0 <= msg.revision <= 0xFFFFFFFF:
            raise ProtocolError("firmware revision must fit four bytes")
        return b"\xd3" + msg.revision.to_bytes(4, "big")
    raise ProtocolError(f"not a Woodway reply: {msg!r}")


def parse_reply(buf: bytes) -> tuple[DeviceMessage, int] | None:
    if not buf:
        return None
    lead = buf[0]
    if lead in _ACK_CODES:
        return Ack(_ACK_CODES[lead]), 1
    if lead in Error._value2member_map_:
        return Fault(Error(lead)), 1
    if lead == 0xD0:
        return (State(buf[1]), 2) if len(buf) >= 2 else None
    if lead == 0xD1:
        speed = _parse_speed(buf)
        return None if speed is None else (Speed(*speed), 5)
    if lead == 0xD2:
        tenths_pct = digit_field(buf, 1, 4, "elevation")
        return None if tenths_pct is None else (Elevation(tenths_pct), 5)
    if lead == 0xD3:
        return (Firmware(int.from_bytes(buf[1:5], "big")), 5) if len(buf) >= 5 else None
    raise ProtocolError(f"unknown Woodway reply {lead:02x}")


def decode_reply(data: bytes) -> DeviceMessage:
    return decode_one(parse_reply, data, "Woodway reply")


def reply_decoder() -> StreamDecoder[DeviceMessage]:
    return StreamDecoder(parse_reply)


def expected_reply(msg: HostMessage) -> int:
    """The lead byte of the reply that answers ``msg`` (an error byte may come instead)."""
    code = msg.code if isinstance(msg, Command) else (
        Code.SET_SPEED if isinstance(msg, SetSpeed) else Code.SET_ELEVATION
    )
    return int(code) + 0x10
