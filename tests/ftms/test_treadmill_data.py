"""Treadmill Data (0x2ACD) at the byte level: hand-computed payloads, quirks, every error path."""

from __future__ import annotations

import pytest

from treadctl.ftms import (
    FTMSDecodeError,
    FTMSEncodeError,
    TreadmillData,
    decode_treadmill_data,
    encode_treadmill_data,
)

# flags 0x1FFE: every field group (bits 1-12) present, bit0 clear -> speed present too.
ALL_FIELDS = bytes.fromhex(
    "fe1f"  # flags
    "d204"  # speed 1234 -> 12.34 km/h
    "e803"  # average speed 1000 -> 10.00 km/h
    "40e201"  # total distance 0x01e240 = 123456 m
    "e7ff"  # inclination -25 -> -2.5 %
    "ff7f"  # ramp angle 0x7fff -> not available
    "7b00"  # positive elevation gain 123 -> 12.3 m
    "2d00"  # negative elevation gain 45 -> 4.5 m
    "02"  # instantaneous pace 2 -> 0.2 km/min
    "01"  # average pace 1 -> 0.1 km/min
    "fa00"  # total energy 250 kcal
    "ffff"  # energy per hour: not available
    "ff"  # energy per minute: not available
    "96"  # heart rate 150
    "55"  # MET 85 -> 8.5
    "100e"  # elapsed 3600 s
    "5802"  # remaining 600 s
    "ecff"  # force on belt -20 N
    "fa00"  # power 250 W
)
ALL_FIELDS_TD = TreadmillData(
    speed_kmh=12.34,
    average_speed_kmh=10.0,
    total_distance_m=123456,
    inclination_pct=-2.5,
    ramp_angle_deg=None,
    positive_elevation_gain_m=12.3,
    negative_elevation_gain_m=4.5,
    instantaneous_pace=0.2,
    average_pace=0.1,
    total_energy_kcal=250,
    energy_per_hour_kcal=None,
    energy_per_minute_kcal=None,
    heart_rate_bpm=150,
    metabolic_equivalent=8.5,
    elapsed_time_s=3600,
    remaining_time_s=600,
    force_on_belt_n=-20,
    power_output_w=250,
)


def test_ftms_md_example() -> None:
    td = decode_treadmill_data(bytes.fromhex("0c00e80310270032001400"))
    assert td == TreadmillData(
        speed_kmh=10.0, total_distance_m=10000, inclination_pct=5.0, ramp_angle_deg=2.0
    )
    assert td.more_data is False
    assert encode_treadmill_data(td).hex() == "0c00e80310270032001400"


def test_every_field() -> None:
    assert len(ALL_FIELDS) == 34
    td = decode_treadmill_data(ALL_FIELDS)
    assert td == ALL_FIELDS_TD
    assert encode_treadmill_data(td) == ALL_FIELDS


def test_speed_only_and_empty_record() -> None:
    assert decode_treadmill_data(bytes.fromhex("0000f401")) == TreadmillData(speed_kmh=5.0)
    assert encode_treadmill_data(TreadmillData(speed_kmh=5.0)).hex() == "0000f401"
    # bit0 set = More Data: no speed; the rest of a split record.
    td = decode_treadmill_data(bytes.fromhex("010100"))
    assert td.speed_kmh is None and td.more_data is True and td.heart_rate_bpm == 0
    assert decode_treadmill_data(b"\x01\x00") == TreadmillData()
    assert encode_treadmill_data(TreadmillData()) == b"\x01\x00"


def test_more_data_is_derived_from_speed() -> None:
    assert TreadmillData().more_data is True
    assert TreadmillData(speed_kmh=0.0).more_data is False
    assert TreadmillData(speed_kmh=1.0, more_data=True).more_data is False


def test_uint16_pace_quirk() -> None:
    data = bytes.fromhex("6000e8032c016801")  # speed 10, pace 300 s/km, avg 360 s/km
    td = decode_treadmill_data(data, pace_format="uint16-s-per-km")
    assert td == TreadmillData(speed_kmh=10.0, instantaneous_pace=300, average_pace=360)
    assert encode_treadmill_data(td, pace_format="uint16-s-per-km") == data
    with pytest.raises(FTMSDecodeError, match="trailing"):
        decode_treadmill_data(data)  # the same bytes are too long for uint8 pace


def test_signed_speed_quirk() -> None:
    data = bytes.fromhex("0200a2fe9cff")  # speed -350, average -100
    td = decode_treadmill_data(data, signed_speed=True)
    assert td.speed_kmh == -3.5 and td.average_speed_kmh == -1.0
    assert encode_treadmill_data(td, signed_speed=True) == data
    # unsigned reading of the same bytes: 0xfea2 = 65186
    assert decode_treadmill_data(data).speed_kmh == 651.86
    with pytest.raises(FTMSEncodeError, match="speed_kmh"):
        encode_treadmill_data(TreadmillData(speed_kmh=-1.0))


def test_not_available_values() -> None:
    td = decode_treadmill_data(bytes.fromhex("0900ff7fff7f"))
    assert td.inclination_pct is None and td.ramp_angle_deg is None and td.more_data
    # incline present without a ramp angle -> ramp angle sent as "not available"
    assert encode_treadmill_data(TreadmillData(inclination_pct=1.0)).hex() == "09000a00ff7f"
    energy = decode_treadmill_data(bytes.fromhex("8100ffff2c01ff"))
    assert energy.total_energy_kcal is None and energy.energy_per_hour_kcal == 300
    assert energy.energy_per_minute_kcal is None


def test_accepts_bytearray_and_memoryview() -> None:
    raw = bytes.fromhex("0c00e80310270032001400")
    expected = decode_treadmill_data(raw)
    assert decode_treadmill_data(bytearray(raw)) == expected
    assert decode_treadmill_data(memoryview(raw)) == expected


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("", "truncated: the flags field needs 2 bytes, got 0"),
        ("0c", "truncated: the flags field needs 2 bytes, got 1"),
        ("0c00e803102700", r"truncated: flags 0x000c announce 11 bytes .*got 7"),
        ("0000f4", "truncated"),
        ("0c00e8031027003200140000", "1 trailing bytes at offset 11"),
        ("0100ff", "trailing"),
        ("0020", r"reserved flag bits set: flags 0x2000"),
        ("0180", "reserved flag bits"),
    ],
)
def test_decode_errors(hexdata: str, message: str) -> None:
    with pytest.raises(FTMSDecodeError, match=message) as info:
        decode_treadmill_data(bytes.fromhex(hexdata))
    assert str(info.value).startswith("treadmill-data: ")


def test_error_names_the_fields_and_offsets() -> None:
    with pytest.raises(FTMSDecodeError) as info:
        decode_treadmill_data(bytes.fromhex("0401"))
    text = str(info.value)
    assert "speed_kmh@2" in text and "total_distance_m@4" in text and "heart_rate_bpm@7" in text
    assert info.value.reason == "truncated"


def test_round_to_resolution() -> None:
    data = encode_treadmill_data(TreadmillData(speed_kmh=12.345678, inclination_pct=1.04))
    assert decode_treadmill_data(data) == TreadmillData(
        speed_kmh=12.35, inclination_pct=1.0, ramp_angle_deg=None
    )


@pytest.mark.parametrize(
    ("td", "message"),
    [
        (TreadmillData(speed_kmh=655.36), "out of range"),
        (TreadmillData(heart_rate_bpm=256), "heart_rate_bpm"),
        (TreadmillData(total_distance_m=1 << 24), "total_distance_m"),
        (TreadmillData(inclination_pct=3276.7), "out of range"),  # 0x7fff means n/a
        (TreadmillData(total_energy_kcal=0xFFFF), "out of range"),
        (TreadmillData(instantaneous_pace=25.6), "instantaneous_pace"),
        (TreadmillData(speed_kmh=float("nan")), "not a finite number"),
        (TreadmillData(speed_kmh="fast"), "expected a number"),  # type: ignore[arg-type]
        (TreadmillData(positive_elevation_gain_m=1.0), "travel together"),
        (TreadmillData(power_output_w=100), "force_on_belt_n is None"),
    ],
)
def test_encode_errors(td: TreadmillData, message: str) -> None:
    with pytest.raises(FTMSEncodeError, match=message):
        encode_treadmill_data(td)


def test_unknown_pace_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown pace_format"):
        decode_treadmill_data(b"\x00\x00\x00\x00", pace_format="mph")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown pace_format"):
        encode_treadmill_data(TreadmillData(), pace_format="mph")  # type: ignore[arg-type]


def test_decoded_values_are_frozen_and_hashable() -> None:
    td = decode_treadmill_data(ALL_FIELDS)
    with pytest.raises(AttributeError):
        td.speed_kmh = 1.0  # type: ignore[misc]
    assert hash(td) == hash(ALL_FIELDS_TD)
    assert {td, ALL_FIELDS_TD} == {td}


def test_decoded_values_behave_like_constructed_ones() -> None:
    import copy
    import dataclasses
    import pickle

    td = decode_treadmill_data(ALL_FIELDS)
    assert pickle.loads(pickle.dumps(td)) == td
    assert copy.deepcopy(td) == td
    # Only the record's metadata differs: the decoder names the "not available" fields.
    assert dataclasses.asdict(td) == dataclasses.asdict(
        dataclasses.replace(
            ALL_FIELDS_TD,
            not_available=("ramp_angle_deg", "energy_per_hour_kcal", "energy_per_minute_kcal"),
        )
    )
    slower = dataclasses.replace(td, speed_kmh=None)
    assert slower.more_data is True and slower.total_distance_m == 123456
