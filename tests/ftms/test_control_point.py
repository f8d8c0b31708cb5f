"""Fitness Machine Control Point (0x2AD9): requests and responses at the byte level."""

from __future__ import annotations

import pytest

from treadctl.ftms import (
    ControlPointRequest,
    ControlPointResponse,
    FTMSDecodeError,
    FTMSEncodeError,
    OpCode,
    RequestControl,
    ResetRequest,
    ResultCode,
    SetTargetedDistance,
    SetTargetedTrainingTime,
    SetTargetHeartRate,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
    decode_control_point,
    decode_control_point_response,
    encode_control_point,
    encode_control_point_response,
    is_stop,
)

REQUESTS: list[tuple[ControlPointRequest, str]] = [
    (RequestControl(), "00"),
    (ResetRequest(), "01"),
    (SetTargetSpeed(12.34), "02d204"),
    (SetTargetSpeed(0.0), "020000"),
    (SetTargetInclination(-1.5), "03f1ff"),
    (SetTargetInclination(10.0), "036400"),
    (SetTargetHeartRate(120), "0678"),
    (StartOrResume(), "07"),
    (StopOrPause(), "0801"),
    (StopOrPause(pause=True), "0802"),
    (SetTargetedDistance(5000), "0c881300"),
    (SetTargetedTrainingTime(600), "0d5802"),
]


@pytest.mark.parametrize(("req", "hexdata"), REQUESTS)
def test_request_bytes(req: ControlPointRequest, hexdata: str) -> None:
    assert encode_control_point(req).hex() == hexdata
    assert decode_control_point(bytes.fromhex(hexdata)) == req
    assert bytes.fromhex(hexdata)[0] == req.opcode


def test_signed_target_speed() -> None:
    assert encode_control_point(SetTargetSpeed(-2.5), signed_speed=True).hex() == "0206ff"
    assert decode_control_point(bytes.fromhex("0206ff"), signed_speed=True) == SetTargetSpeed(-2.5)
    assert decode_control_point(bytes.fromhex("0206ff")) == SetTargetSpeed(652.86)
    with pytest.raises(FTMSEncodeError, match="speed_kmh"):
        encode_control_point(SetTargetSpeed(-2.5))
    with pytest.raises(FTMSEncodeError, match="out of range"):
        encode_control_point(SetTargetSpeed(400.0), signed_speed=True)


def test_is_stop() -> None:
    assert is_stop(b"\x08\x01")
    assert is_stop(bytearray(b"\x08\x01"))
    assert not is_stop(b"\x08\x02")  # pause
    assert not is_stop(b"\x08")
    assert not is_stop(b"\x08\x01\x00")
    assert not is_stop(b"")
    assert is_stop(encode_control_point(StopOrPause()))


@pytest.mark.parametrize(
    ("hexdata", "message", "reason"),
    [
        ("", "empty write", "empty"),
        ("04", "unsupported opcode 0x04", "unsupported"),
        ("80", "unsupported opcode 0x80", "unsupported"),
        ("02d2", "truncated", "truncated"),
        ("0c8813", "truncated", "truncated"),
        ("0801ff", "trailing", "trailing"),
        ("0000", "trailing", "trailing"),
        ("0803", "parameter 0x03 at offset 1 out of range", "range"),
        ("08", "truncated", "truncated"),
    ],
)
def test_request_decode_errors(hexdata: str, message: str, reason: str) -> None:
    with pytest.raises(FTMSDecodeError, match=message) as info:
        decode_control_point(bytes.fromhex(hexdata))
    assert info.value.reason == reason
    assert str(info.value).startswith("control-point: ")


@pytest.mark.parametrize(
    "req",
    [
        SetTargetHeartRate(256),
        SetTargetHeartRate(-1),
        SetTargetedDistance(1 << 24),
        SetTargetedTrainingTime(70000),
        SetTargetInclination(float("inf")),
    ],
)
def test_request_encode_errors(req: ControlPointRequest) -> None:
    with pytest.raises(FTMSEncodeError):
        encode_control_point(req)


def test_response_bytes() -> None:
    resp = ControlPointResponse(OpCode.SET_TARGET_SPEED, ResultCode.SUCCESS)
    assert encode_control_point_response(resp).hex() == "800201"
    assert decode_control_point_response(bytes.fromhex("800201")) == resp
    denied = decode_control_point_response(bytes.fromhex("800705"))
    assert denied.request_opcode is OpCode.START_OR_RESUME
    assert denied.result is ResultCode.CONTROL_NOT_PERMITTED
    # Unknown request opcodes are kept as ints (e.g. 0x04 Set Target Resistance Level).
    unknown = decode_control_point_response(bytes.fromhex("800402"))
    assert unknown == ControlPointResponse(4, ResultCode.OP_CODE_NOT_SUPPORTED)
    assert type(unknown.request_opcode) is int
    with_params = decode_control_point_response(bytes.fromhex("80130101020304"))
    assert with_params.params == b"\x01\x02\x03\x04"
    assert encode_control_point_response(with_params).hex() == "80130101020304"


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("", "truncated"),
        ("8002", "truncated"),
        ("020201", "not the response code 0x80"),
        ("800200", "result code 0x00 at offset 2 out of range"),
        ("800206", "result code 0x06"),
    ],
)
def test_response_decode_errors(hexdata: str, message: str) -> None:
    with pytest.raises(FTMSDecodeError, match=message):
        decode_control_point_response(bytes.fromhex(hexdata))


def test_response_encode_errors() -> None:
    with pytest.raises(FTMSEncodeError, match="result"):
        encode_control_point_response(ControlPointResponse(2, 9))  # type: ignore[arg-type]
    with pytest.raises(FTMSEncodeError, match="request_opcode"):
        encode_control_point_response(ControlPointResponse(256, ResultCode.SUCCESS))
