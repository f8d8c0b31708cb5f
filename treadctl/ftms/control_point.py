"""Fitness Machine Control Point (0x2AD9): the requests a treadmill controller writes and the
responses the machine indicates.

Request: uint8 opcode + parameters. Response: 0x80, request opcode, uint8 result code, then
optional response parameters. Both directions are encoded and decoded because the simulator
is the other side of the link.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final

from treadctl.ftms._wire import s16, to_int, u8, u16, u24
from treadctl.ftms.errors import ByteData, FTMSDecodeError, FTMSEncodeError, check_size

_NAME: Final = "control-point"
_RESPONSE_NAME: Final = "control-point-response"


class OpCode(enum.IntEnum):
    REQUEST_CONTROL = 0x00
    RESET = 0x01
    SET_TARGET_SPEED = 0x02
    SET_TARGET_INCLINATION = 0x03
    SET_TARGET_HEART_RATE = 0x06
    START_OR_RESUME = 0x07
    STOP_OR_PAUSE = 0x08
    SET_TARGETED_DISTANCE = 0x0C
    SET_TARGETED_TRAINING_TIME = 0x0D
    RESPONSE_CODE = 0x80


class ResultCode(enum.IntEnum):
    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_PARAMETER = 0x03
    OPERATION_FAILED = 0x04
    CONTROL_NOT_PERMITTED = 0x05


STOP_PARAM: Final = 0x01
PAUSE_PARAM: Final = 0x02


@dataclass(frozen=True)
class RequestControl:
    opcode: ClassVar[OpCode] = OpCode.REQUEST_CONTROL


@dataclass(frozen=True)
class ResetRequest:
    opcode: ClassVar[OpCode] = OpCode.RESET


@dataclass(frozen=True)
class SetTargetSpeed:
    """Target belt speed; negative (reverse) only on signed-speed firmware."""

    speed_kmh: float
    opcode: ClassVar[OpCode] = OpCode.SET_TARGET_SPEED


@dataclass(frozen=True)
class SetTargetInclination:
    incline_pct: float
    opcode: ClassVar[OpCode] = OpCode.SET_TARGET_INCLINATION


@dataclass(frozen=True)
class SetTargetHeartRate:
    bpm: int
    opcode: ClassVar[OpCode] = OpCode.SET_TARGET_HEART_RATE


@dataclass(frozen=True)
class StartOrResume:
    opcode: ClassVar[OpCode] = OpCode.START_OR_RESUME


@dataclass(frozen=True)
class StopOrPause:
    """Stop (parameter 0x01) or, with ``pause=True``, Pause (0x02)."""

    pause: bool = False
    opcode: ClassVar[OpCode] = OpCode.STOP_OR_PAUSE


@dataclass(frozen=True)
class SetTargetedDistance:
    distance_m: int
    opcode: ClassVar[OpCode] = OpCode.SET_TARGETED_DISTANCE


@dataclass(frozen=True)
class SetTargetedTrainingTime:
    seconds: int
    opcode: ClassVar[OpCode] = OpCode.SET_TARGETED_TRAINING_TIME


ControlPointRequest = (
    RequestControl
    | ResetRequest
    | SetTargetSpeed
    | SetTargetInclination
    | SetTargetHeartRate
    | StartOrResume
    | StopOrPause
    | SetTargetedDistance
    | SetTargetedTrainingTime
)


@dataclass(frozen=True)
class ControlPointResponse:
    """The machine's answer: ``request_opcode`` is an :class:`OpCode` when known, else the int."""

    request_opcode: int
    result: ResultCode
    params: bytes = b""


_STOP: Final = bytes((OpCode.STOP_OR_PAUSE, STOP_PARAM))


def is_stop(data: ByteData) -> bool:
    """True if this Control Point write is Stop (opcode 0x08, parameter 0x01)."""
    return data == _STOP


def encode_control_point(req: ControlPointRequest, *, signed_speed: bool = False) -> bytes:
    """The Control Point write for ``req``; bad values raise :class:`FTMSEncodeError`."""
    op = u8(req.opcode)
    where = f"{_NAME}: {type(req).__name__}"
    if isinstance(req, RequestControl | ResetRequest | StartOrResume):
        return op
    if isinstance(req, SetTargetSpeed):
        if signed_speed:
            return op + s16(to_int(f"{where}.speed_kmh", req.speed_kmh, 100, -0x8000, 0x7FFF))
        return op + u16(to_int(f"{where}.speed_kmh", req.speed_kmh, 100, 0, 0xFFFF))
    if isinstance(req, SetTargetInclination):
        return op + s16(to_int(f"{where}.incline_pct", req.incline_pct, 10, -0x8000, 0x7FFF))
    if isinstance(req, SetTargetHeartRate):
        return op + u8(to_int(f"{where}.bpm", req.bpm, 1, 0, 0xFF))
    if isinstance(req, StopOrPause):
        return op + u8(PAUSE_PARAM if req.pause else STOP_PARAM)
    if isinstance(req, SetTargetedDistance):
        return op + u24(to_int(f"{where}.distance_m", req.distance_m, 1, 0, 0xFFFFFF))
    if isinstance(req, SetTargetedTrainingTime):
        return op + u16(to_int(f"{where}.seconds", req.seconds, 1, 0, 0xFFFF))
    raise FTMSEncodeError(f"{_NAME}: not a control point request: {req!r}")


_PARAM_SIZES: Final = {
    OpCode.REQUEST_CONTROL: 0,
    OpCode.RESET: 0,
    OpCode.SET_TARGET_SPEED: 2,
    OpCode.SET_TARGET_INCLINATION: 2,
    OpCode.SET_TARGET_HEART_RATE: 1,
    OpCode.START_OR_RESUME: 0,
    OpCode.STOP_OR_PAUSE: 1,
    OpCode.SET_TARGETED_DISTANCE: 3,
    OpCode.SET_TARGETED_TRAINING_TIME: 2,
}


def decode_control_point(data: ByteData, *, signed_speed: bool = False) -> ControlPointRequest:
    """Decode a Control Point write (the machine's side). Opcodes outside the treadmill set
    above, and the response opcode 0x80, raise :class:`FTMSDecodeError` with
    ``reason="unsupported"`` (answer them with OP_CODE_NOT_SUPPORTED)."""
    if not data:
        raise FTMSDecodeError(_NAME, "empty write: no opcode", reason="empty")
    code = data[0]
    if code not in _PARAM_SIZES:
        raise FTMSDecodeError(
            _NAME, f"unsupported opcode 0x{code:02x} at offset 0", reason="unsupported"
        )
    op = OpCode(code)
    check_size(_NAME, data, 1 + _PARAM_SIZES[op], f"opcode {op.name} parameters")
    if op is OpCode.REQUEST_CONTROL:
        return RequestControl()
    if op is OpCode.RESET:
        return ResetRequest()
    if op is OpCode.START_OR_RESUME:
        return StartOrResume()
    if op is OpCode.SET_TARGET_SPEED:
        return SetTargetSpeed(int.from_bytes(data[1:3], "little", signed=signed_speed) / 100)
    if op is OpCode.SET_TARGET_INCLINATION:
        return SetTargetInclination(int.from_bytes(data[1:3], "little", signed=True) / 10)
    if op is OpCode.SET_TARGET_HEART_RATE:
        return SetTargetHeartRate(data[1])
    if op is OpCode.STOP_OR_PAUSE:
        if data[1] not in (STOP_PARAM, PAUSE_PARAM):
            raise FTMSDecodeError(
                _NAME,
                f"STOP_OR_PAUSE parameter 0x{data[1]:02x} at offset 1 out of range"
                " (0x01 stop, 0x02 pause)",
                reason="range",
            )
        return StopOrPause(pause=data[1] == PAUSE_PARAM)
    if op is OpCode.SET_TARGETED_DISTANCE:
        return SetTargetedDistance(int.from_bytes(data[1:4], "little"))
    return SetTargetedTrainingTime(int.from_bytes(data[1:3], "little"))


def encode_control_point_response(resp: ControlPointResponse) -> bytes:
    where = f"{_RESPONSE_NAME}"
    opcode = to_int(f"{where}.request_opcode", resp.request_opcode, 1, 0, 0xFF)
    result = to_int(f"{where}.result", resp.result, 1, 1, 5)
    if not isinstance(resp.params, bytes | bytearray):
        raise FTMSEncodeError(f"{where}.params: expected bytes")
    return bytes((OpCode.RESPONSE_CODE, opcode, result)) + bytes(resp.params)


def decode_control_point_response(data: ByteData) -> ControlPointResponse:
    """Decode the machine's indication ``0x80, request opcode, result[, params]``."""
    if len(data) < 3:
        raise FTMSDecodeError(
            _RESPONSE_NAME,
            f"truncated: a response needs 3 bytes (0x80, opcode, result), got {len(data)}",
            reason="truncated",
        )
    if data[0] != OpCode.RESPONSE_CODE:
        raise FTMSDecodeError(
            _RESPONSE_NAME,
            f"offset 0 is 0x{data[0]:02x}, not the response code 0x80",
            reason="unsupported",
        )
    try:
        result = ResultCode(data[2])
    except ValueError:
        raise FTMSDecodeError(
            _RESPONSE_NAME,
            f"result code 0x{data[2]:02x} at offset 2 out of range (0x01-0x05)",
            reason="range",
        ) from None
    request: int = data[1]
    if request in _PARAM_SIZES:
        request = OpCode(request)
    return ControlPointResponse(request, result, bytes(data[3:]))
