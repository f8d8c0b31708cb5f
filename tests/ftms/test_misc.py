"""Feature, ranges, belt direction, UUIDs, the tool registry and the JSON view."""

from __future__ import annotations

import json

import pytest

import treadctl.ftms as ftms
from treadctl.ftms import (
    CHARACTERISTICS,
    BeltDirection,
    FitnessMachineFeature,
    FTMSDecodeError,
    FTMSEncodeError,
    InclinationRange,
    SpeedRange,
    decode_belt_direction,
    decode_characteristic,
    decode_feature,
    decode_inclination_range,
    decode_speed_range,
    encode_belt_direction,
    encode_feature,
    encode_inclination_range,
    encode_speed_range,
    full_uuid,
    to_jsonable,
)


def test_uuids() -> None:
    assert ftms.FITNESS_MACHINE_SERVICE == 0x1826
    assert (ftms.FEATURE, ftms.TREADMILL_DATA, ftms.TRAINING_STATUS) == (0x2ACC, 0x2ACD, 0x2AD3)
    assert (ftms.SPEED_RANGE, ftms.INCLINATION_RANGE) == (0x2AD4, 0x2AD5)
    assert (ftms.CONTROL_POINT, ftms.MACHINE_STATUS) == (0x2AD9, 0x2ADA)
    assert ftms.BELT_DIRECTION == 0xFF01
    assert full_uuid(0x2ACD) == "00002acd-0000-1000-8000-00805f9b34fb"
    assert full_uuid(0xFF01) == "0000ff01-0000-1000-8000-00805f9b34fb"
    with pytest.raises(ValueError):
        full_uuid(0x10000)


def test_feature() -> None:
    # machine: avg speed, distance, inclination, elevation, energy, HR, elapsed time;
    # target: speed, inclination.
    data = bytes.fromhex("1d16000003000000")
    f = decode_feature(data)
    assert f == FitnessMachineFeature(machine=0x161D, target=0x03)
    assert f.supports_average_speed and f.supports_total_distance and f.supports_inclination
    assert f.supports_elevation_gain and f.supports_expended_energy and f.supports_heart_rate
    assert f.supports_elapsed_time and not f.supports_pace and not f.supports_remaining_time
    assert not f.supports_force_and_power and not f.supports_resistance
    assert f.can_set_speed and f.can_set_inclination and not f.can_set_heart_rate
    assert not f.can_set_distance and not f.can_set_training_time
    assert encode_feature(f) == data
    assert "heart_rate" in f.machine_features and f.target_features == ["speed", "inclination"]
    # Reserved bits (17-31) are kept so a newer machine still connects.
    assert decode_feature(bytes.fromhex("0000020000000080")).target == 0x80000000
    for bad in ("", "1d160000030000", "1d16000003000000ff"):
        with pytest.raises(FTMSDecodeError, match=r"feature: (truncated|1 trailing)"):
            decode_feature(bytes.fromhex(bad))
    with pytest.raises(FTMSEncodeError):
        encode_feature(FitnessMachineFeature(-1, 0))


def test_speed_range() -> None:
    data = bytes.fromhex("320008070a00")  # 0.50 .. 18.00 step 0.10
    r = decode_speed_range(data)
    assert r == SpeedRange(0.5, 18.0, 0.1)
    assert encode_speed_range(r) == data
    with pytest.raises(FTMSDecodeError, match="out of range: minimum 1800 > maximum 50"):
        decode_speed_range(bytes.fromhex("080732000a00"))
    with pytest.raises(FTMSDecodeError, match="out of range: increment is 0"):
        decode_speed_range(bytes.fromhex("320008070000"))
    with pytest.raises(FTMSDecodeError, match="truncated"):
        decode_speed_range(data[:5])
    with pytest.raises(FTMSEncodeError):
        encode_speed_range(SpeedRange(2.0, 1.0, 0.1))


def test_inclination_range() -> None:
    data = bytes.fromhex("ceff96000500")  # -5.0 .. 15.0 step 0.5
    r = decode_inclination_range(data)
    assert r == InclinationRange(-5.0, 15.0, 0.5)
    assert encode_inclination_range(r) == data
    with pytest.raises(FTMSDecodeError, match="inclination-range: out of range"):
        decode_inclination_range(bytes.fromhex("9600ceff0500"))
    with pytest.raises(FTMSDecodeError, match="trailing"):
        decode_inclination_range(data + b"\x00")
    with pytest.raises(FTMSEncodeError):
        encode_inclination_range(InclinationRange(0.0, 1.0, 0.0))


def test_belt_direction() -> None:
    assert decode_belt_direction(b"\x00") == BeltDirection(reverse=False)
    assert decode_belt_direction(b"\x01") == BeltDirection(reverse=True)
    assert encode_belt_direction(BeltDirection(True)) == b"\x01"
    assert encode_belt_direction(BeltDirection(False)) == b"\x00"
    with pytest.raises(FTMSDecodeError, match="value 0x02 out of range"):
        decode_belt_direction(b"\x02")
    with pytest.raises(FTMSDecodeError, match="truncated"):
        decode_belt_direction(b"")
    with pytest.raises(FTMSDecodeError, match="trailing"):
        decode_belt_direction(b"\x00\x00")


def test_registry_names_and_uuids() -> None:
    assert set(CHARACTERISTICS) == {
        "feature",
        "treadmill-data",
        "training-status",
        "speed-range",
        "inclination-range",
        "control-point",
        "control-point-response",
        "machine-status",
        "belt-direction",
    }
    td = bytes.fromhex("0c00e80310270032001400")
    by_name = decode_characteristic("treadmill-data", td)
    assert decode_characteristic("0x2ACD", td) == by_name
    assert decode_characteristic("2acd", td) == by_name
    assert decode_characteristic(full_uuid(0x2ACD), td) == by_name
    assert decode_characteristic("0xff01", b"\x01") == BeltDirection(True)
    # 0x2AD9 carries both directions: 0x80 marks a response.
    assert type(decode_characteristic("0x2ad9", b"\x80\x00\x01")).__name__ == "ControlPointResponse"
    assert type(decode_characteristic("0x2ad9", b"\x08\x01")).__name__ == "StopOrPause"
    signed = decode_characteristic("treadmill-data", bytes.fromhex("0000a2fe"), signed_speed=True)
    assert getattr(signed, "speed_kmh") == -3.5  # noqa: B009
    with pytest.raises(ValueError, match="unknown characteristic"):
        decode_characteristic("heart-rate", b"")
    with pytest.raises(ValueError, match="unknown quirk"):
        decode_characteristic("treadmill-data", td, mph=True)


def test_to_jsonable() -> None:
    td = decode_characteristic("treadmill-data", bytes.fromhex("0c00e80310270032001400"))
    assert to_jsonable(td) == {
        "type": "TreadmillData",
        "speed_kmh": 10.0,
        "total_distance_m": 10000,
        "inclination_pct": 5.0,
        "ramp_angle_deg": 2.0,
        "more_data": False,
    }
    resp = to_jsonable(decode_characteristic("control-point-response", b"\x80\x02\x01"))
    assert resp == {
        "type": "ControlPointResponse",
        "request_opcode": "SET_TARGET_SPEED",
        "result": "SUCCESS",
        "params": "",
    }
    assert to_jsonable(decode_characteristic("control-point-response", b"\x80\x04\x02")) == {
        "type": "ControlPointResponse",
        "request_opcode": 4,
        "result": "OP_CODE_NOT_SUPPORTED",
        "params": "",
    }
    stop = to_jsonable(decode_characteristic("control-point", b"\x08\x02"))
    assert stop == {"type": "StopOrPause", "opcode": "STOP_OR_PAUSE", "pause": True}
    ts = to_jsonable(decode_characteristic("training-status", b"\x01\x01Idle"))
    assert ts == {"type": "TrainingStatus", "status": 1, "status_name": "IDLE", "string": "Idle"}
    feat = to_jsonable(decode_feature(bytes.fromhex("0800000001000000")))
    assert feat["machine_features"] == ["inclination"] and feat["target_features"] == ["speed"]
    other = to_jsonable(decode_characteristic("machine-status", b"\x0d\x10\x27\x00"))
    assert other == {"type": "OtherStatus", "opcode": 13, "params": "102700"}
    for value in (to_jsonable(td), resp, ts, feat, other):
        json.dumps(value)
    with pytest.raises(TypeError):
        to_jsonable(42)


def test_public_api_is_exported() -> None:
    for name in ftms.__all__:
        assert hasattr(ftms, name), name
    for name in ("FTMSDecodeError", "FTMSEncodeError"):
        assert issubclass(getattr(ftms, name), ValueError)
