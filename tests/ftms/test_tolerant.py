"""The tolerant decoders, byte by byte: each deviation real treadmills send, strict vs tolerant.

Payloads marked "capture" are notifications a CITYSPORTS CS-WP8 walking pad sent, as logged
by nRF Connect (hughesjs/FitnessMachine, protocol/CS-WP8/, see tests/vectors); the Matrix
payload is TrackMyIndoorWorkout's fixture; the rest are hand-made from the FTMS 1.0 layout.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadctl.ftms import (
    DEVIATIONS,
    FTMSDecodeError,
    StartedOrResumedByUser,
    StoppedBySafetyKey,
    StoppedOrPausedByUser,
    TargetSpeedChanged,
    TelemetryReader,
    TreadmillData,
    TreadmillDataAssembler,
    decode_machine_status,
    decode_treadmill_data,
    encode_treadmill_data,
)
from treadctl.ftms.treadmill_data import PACE_FORMATS

CS_WALKING = bytes.fromhex("84242c0109000000000000000d000c0000")  # capture
CS_STARTED = bytes.fromhex("040000")  # capture
CS_STOPPED = bytes.fromhex("020100")  # capture
MATRIX = bytes.fromhex("9e1f5100b2005800000000ff7f0000ffff0c0097")  # TMIW fixture


# ----------------------------------------------------------------- step count (flag bit 13)
def test_step_count_strict_rejects_tolerant_reads_it() -> None:
    with pytest.raises(FTMSDecodeError) as info:
        decode_treadmill_data(CS_WALKING)
    assert info.value.reason == "reserved"
    td = decode_treadmill_data(CS_WALKING, strict=False)
    assert td.speed_kmh == 3.0
    assert td.total_distance_m == 9
    assert (td.total_energy_kcal, td.energy_per_hour_kcal, td.energy_per_minute_kcal) == (0, 0, 0)
    assert td.elapsed_time_s == 13
    assert td.step_count == 12
    assert td.deviations == ("step-count",)
    assert td.missing is None and td.not_available is None


def test_step_count_is_uint24_after_force_and_power() -> None:
    # flags 0x3001: More Data (no speed), bit 12 force + power, bit 13 steps.
    data = bytes.fromhex("0130" "f6ff" "c800" "563412")
    td = decode_treadmill_data(data, strict=False)
    assert (td.force_on_belt_n, td.power_output_w, td.step_count) == (-10, 200, 0x123456)
    assert td.more_data and td.speed_kmh is None


def test_step_count_encodes_bit_13() -> None:
    data = encode_treadmill_data(TreadmillData(speed_kmh=5.0, step_count=12345))
    assert data == bytes.fromhex("0020f401393000")
    assert decode_treadmill_data(data, strict=False) == TreadmillData(
        speed_kmh=5.0, step_count=12345
    )


def test_bits_14_and_15_stay_reserved_when_tolerant() -> None:
    for flags in (0x4000, 0x8000, 0x6000):
        data = flags.to_bytes(2, "little") + b"\xe8\x03" + bytes(3)
        with pytest.raises(FTMSDecodeError) as info:
            decode_treadmill_data(data, strict=False)
        assert info.value.reason == "reserved"


# ----------------------------------------------------------------- short records
def test_short_record_strict_rejects_tolerant_reads_whole_fields() -> None:
    with pytest.raises(FTMSDecodeError) as info:
        decode_treadmill_data(MATRIX)
    assert info.value.reason == "truncated"
    td = decode_treadmill_data(MATRIX, strict=False)
    assert td.speed_kmh == 0.81
    assert td.average_speed_kmh == 1.78
    assert td.total_distance_m == 88
    assert td.inclination_pct == 0.0
    assert td.total_energy_kcal == 12
    # 0x97 is half of Energy per Hour: never guessed.
    assert td.energy_per_hour_kcal is None
    assert td.heart_rate_bpm is None and td.elapsed_time_s is None
    assert td.deviations == ("short-record",)
    assert td.missing is not None and td.missing[0] == "energy_per_hour_kcal"
    assert "power_output_w" in td.missing and "total_energy_kcal" not in td.missing


def test_short_record_without_the_whole_speed_is_an_error() -> None:
    for data in (bytes.fromhex("0400e8"), bytes.fromhex("0400")):
        with pytest.raises(FTMSDecodeError) as info:
            decode_treadmill_data(data, strict=False)
        assert info.value.reason == "truncated"


def test_short_record_with_step_count_flag() -> None:
    td = decode_treadmill_data(bytes.fromhex("0020e803"), strict=False)
    assert td.speed_kmh == 10.0 and td.step_count is None
    assert td.deviations == ("step-count", "short-record")
    assert td.missing == ("step_count",)


def test_trailing_bytes_stay_an_error_when_tolerant() -> None:
    # No known device appends bytes its flags do not announce.
    with pytest.raises(FTMSDecodeError) as info:
        decode_treadmill_data(bytes.fromhex("0000e80300"), strict=False)
    assert info.value.reason == "trailing"


def test_short_more_data_part() -> None:
    td = decode_treadmill_data(bytes.fromhex("070010270000"), strict=False)
    # More Data + average speed (2) + distance (3) announced, 4 bytes carried.
    assert td.more_data and td.speed_kmh is None
    assert td.average_speed_kmh == 100.0 and td.total_distance_m is None
    assert td.missing == ("total_distance_m",)


# ----------------------------------------------------------------- "data not available"
def test_not_available_is_kept_apart_from_values_and_absence() -> None:
    # flags 0x0088: speed, bit 3 incline + ramp, bit 7 energy.
    data = bytes.fromhex("8800" "f401" "ff7f" "0a00" "0500" "ffff" "ff")
    for strict in (True, False):
        td = decode_treadmill_data(data, strict=strict)
        assert td.inclination_pct is None and td.ramp_angle_deg == 1.0
        assert td.total_energy_kcal == 5
        assert td.not_available == (
            "inclination_pct",
            "energy_per_hour_kcal",
            "energy_per_minute_kcal",
        )
        assert td.deviations is None
    # A literal value next to the sentinel (0x7FFE = 3276.6 %) is a value.
    literal = decode_treadmill_data(bytes.fromhex("0800" "f401" "fe7f" "0a00"))
    assert literal.inclination_pct == 3276.6 and literal.not_available is None
    # An absent field is neither.
    absent = decode_treadmill_data(bytes.fromhex("0000f401"))
    assert absent.inclination_pct is None and absent.not_available is None


def test_metadata_takes_no_part_in_equality() -> None:
    a = decode_treadmill_data(bytes.fromhex("0800f401ff7f0a00"))
    assert a == TreadmillData(speed_kmh=5.0, ramp_angle_deg=1.0)
    assert a.not_available == ("inclination_pct",)


# ----------------------------------------------------------------- Machine Status
@pytest.mark.parametrize(
    ("data", "expected", "trailing"),
    [
        (CS_STARTED, StartedOrResumedByUser(), 2),
        (CS_STOPPED, StoppedOrPausedByUser(paused=False), 1),
        (bytes.fromhex("030000"), StoppedBySafetyKey(), 2),
        (bytes.fromhex("05960000"), TargetSpeedChanged(1.5), 1),
    ],
)
def test_status_trailing_bytes(data: bytes, expected: Any, trailing: int) -> None:
    with pytest.raises(FTMSDecodeError) as info:
        decode_machine_status(data)
    assert info.value.reason == "trailing"
    assert f"{trailing} trailing bytes" in str(info.value)
    status = decode_machine_status(data, strict=False)
    assert status == expected
    assert status.deviations == ("status-trailing-bytes",)


def test_status_tolerance_is_only_for_trailing_bytes() -> None:
    exact = decode_machine_status(bytes.fromhex("0201"), strict=False)
    assert exact == StoppedOrPausedByUser(paused=False) and exact.deviations is None
    for bad, reason in (("02", "truncated"), ("020300", "range"), ("00", "unsupported")):
        with pytest.raises(FTMSDecodeError) as info:
            decode_machine_status(bytes.fromhex(bad), strict=False)
        assert info.value.reason == reason


# ----------------------------------------------------------------- split records
def test_assembler_merges_a_split_record() -> None:
    asm = TreadmillDataAssembler()
    first = decode_treadmill_data(bytes.fromhex("0f01" "2c01" "7b0000" "1400" "0b00" "46"))
    assert first.more_data
    assert asm.feed(first) is None
    last = decode_treadmill_data(bytes.fromhex("0004" "1c02" "0900"))
    merged = asm.feed(last)
    assert merged == TreadmillData(
        speed_kmh=5.4,
        average_speed_kmh=3.0,
        total_distance_m=123,
        inclination_pct=2.0,
        ramp_angle_deg=1.1,
        heart_rate_bpm=70,
        elapsed_time_s=9,
    )
    assert not asm.pending
    # The next record that is not split passes through as it is.
    plain = decode_treadmill_data(bytes.fromhex("0000f401"))
    assert asm.feed(plain) is plain


def test_assembler_final_part_wins_and_metadata_is_merged() -> None:
    asm = TreadmillDataAssembler()
    assert asm.feed(decode_treadmill_data(bytes.fromhex("0905" "ff7f0000" "4b" "0a00"))) is None
    merged = asm.feed(decode_treadmill_data(bytes.fromhex("0001" "e803" "50")))
    assert merged is not None
    assert merged.speed_kmh == 10.0
    assert merged.heart_rate_bpm == 80  # the part with the speed wins
    assert merged.elapsed_time_s == 10  # filled from the first part
    assert merged.not_available == ("inclination_pct",)


def test_reader_counts_and_reports_each_deviation_once() -> None:
    seen: list[str] = []
    reader = TelemetryReader(on_new=seen.append)
    for _ in range(50):
        assert reader.treadmill_data(CS_WALKING) is not None
        reader.treadmill_data(MATRIX)
        reader.machine_status(CS_STOPPED)
        assert reader.treadmill_data(bytes.fromhex("0301" "2c01" "46")) is None
        merged = reader.treadmill_data(bytes.fromhex("0800" "e803" "ff7f0000"))
        assert merged is not None and merged.average_speed_kmh == 3.0
    assert seen == [
        "step-count",
        "short-record",
        "not-available",
        "status-trailing-bytes",
        "split-records",
    ]
    assert set(seen) == set(DEVIATIONS)
    assert reader.deviations["step-count"] == 50
    assert reader.deviations["not-available"] == 100  # Matrix ramp + the merged incline
    assert reader.deviations["split-records"] == 50


def test_reader_propagates_what_it_cannot_read() -> None:
    reader = TelemetryReader()
    with pytest.raises(FTMSDecodeError):
        reader.treadmill_data(b"\x00")
    with pytest.raises(FTMSDecodeError):
        reader.machine_status(b"\x02")
    assert not reader.deviations


# ----------------------------------------------------------------- fuzz
QUIRKS = [(p, s) for p in PACE_FORMATS for s in (False, True)]


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0xFFFF), st.binary(max_size=48))
def test_fuzz_tolerant_treadmill_data_raises_only_decode_error(flags: int, tail: bytes) -> None:
    data = flags.to_bytes(2, "little") + tail
    for pace, signed in QUIRKS:
        try:
            td = decode_treadmill_data(data, pace_format=pace, signed_speed=signed, strict=False)
        except FTMSDecodeError:
            continue
        if not flags & 1:
            assert td.speed_kmh == int.from_bytes(data[2:4], "little", signed=signed) / 100
        for name in td.missing or ():
            assert getattr(td, name) is None
        if not td.deviations:
            strict = decode_treadmill_data(data, pace_format=pace, signed_speed=signed)
            assert strict == td


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12))
def test_fuzz_tolerant_machine_status_raises_only_decode_error(data: bytes) -> None:
    for signed in (False, True):
        try:
            status = decode_machine_status(data, signed_speed=signed, strict=False)
        except FTMSDecodeError:
            continue
        reader = TelemetryReader(signed_speed=signed)
        assert reader.machine_status(data) == status


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=30), max_size=6))
def test_fuzz_reader_raises_only_decode_error(values: list[bytes]) -> None:
    reader = TelemetryReader()
    for value in values:
        try:
            td = reader.treadmill_data(value)
        except FTMSDecodeError:
            continue
        if td is not None:
            assert td.speed_kmh is not None
