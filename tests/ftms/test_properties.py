"""Hypothesis properties: encode/decode round trips for every type, and decoders that raise
nothing but FTMSDecodeError whatever bytes arrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treadctl.ftms import (
    CHARACTERISTICS,
    BeltDirection,
    ControlPointResponse,
    FitnessMachineFeature,
    FTMSDecodeError,
    InclinationRange,
    OtherStatus,
    PaceFormat,
    ResultCode,
    SetTargetedDistance,
    SetTargetedTrainingTime,
    SetTargetHeartRate,
    SetTargetInclination,
    SetTargetSpeed,
    SpeedRange,
    StopOrPause,
    TargetHeartRateChanged,
    TargetInclineChanged,
    TargetSpeedChanged,
    TrainingStatus,
    TreadmillData,
    decode_belt_direction,
    decode_characteristic,
    decode_control_point,
    decode_control_point_response,
    decode_feature,
    decode_inclination_range,
    decode_machine_status,
    decode_speed_range,
    decode_training_status,
    decode_treadmill_data,
    encode_belt_direction,
    encode_control_point,
    encode_control_point_response,
    encode_feature,
    encode_inclination_range,
    encode_machine_status,
    encode_speed_range,
    encode_training_status,
    encode_treadmill_data,
    is_stop,
)
from treadctl.ftms.control_point import (
    RequestControl,
    ResetRequest,
    StartOrResume,
)
from treadctl.ftms.machine_status import (
    OTHER_OPCODES,
    ControlPermissionLost,
    StartedOrResumedByUser,
    StatusReset,
    StoppedBySafetyKey,
    StoppedOrPausedByUser,
)

QUIRKS: list[tuple[PaceFormat, bool]] = [
    (pace, signed) for pace in ("uint8-0.1kmpmin", "uint16-s-per-km") for signed in (False, True)
]
U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
S16 = st.integers(-0x8000, 0x7FFF)
U24 = st.integers(0, 0xFFFFFF)


def scaled(ints: st.SearchStrategy[int], div: int) -> st.SearchStrategy[float]:
    """Values exactly on the field's resolution grid (what a decoder can produce)."""
    return ints.map(lambda i: i / div)


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


def pairs(a: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    return st.none().map(lambda _: (None, None)) | st.tuples(a, a)


@st.composite
def treadmill_data(draw: st.DrawFn, pace_format: PaceFormat, signed: bool) -> TreadmillData:
    speed = scaled(S16 if signed else U16, 100)
    pace = scaled(U8, 10) if pace_format == "uint8-0.1kmpmin" else scaled(U16, 1)
    na_s16 = scaled(st.integers(-0x8000, 0x7FFE), 10)
    elevation = draw(pairs(scaled(U16, 10)))
    force_power = draw(pairs(S16))
    return TreadmillData(
        speed_kmh=draw(opt(speed)),
        average_speed_kmh=draw(opt(speed)),
        total_distance_m=draw(opt(U24)),
        inclination_pct=draw(opt(na_s16)),
        ramp_angle_deg=draw(opt(na_s16)),
        positive_elevation_gain_m=elevation[0],
        negative_elevation_gain_m=elevation[1],
        instantaneous_pace=draw(opt(pace)),
        average_pace=draw(opt(pace)),
        total_energy_kcal=draw(opt(st.integers(0, 0xFFFE))),
        energy_per_hour_kcal=draw(opt(st.integers(0, 0xFFFE))),
        energy_per_minute_kcal=draw(opt(st.integers(0, 0xFE))),
        heart_rate_bpm=draw(opt(U8)),
        metabolic_equivalent=draw(opt(scaled(U8, 10))),
        elapsed_time_s=draw(opt(U16)),
        remaining_time_s=draw(opt(U16)),
        force_on_belt_n=force_power[0],
        power_output_w=force_power[1],
    )


@pytest.mark.parametrize(("pace_format", "signed"), QUIRKS)
def test_treadmill_data_round_trip(pace_format: PaceFormat, signed: bool) -> None:
    @given(treadmill_data(pace_format, signed))
    def check(td: TreadmillData) -> None:
        data = encode_treadmill_data(td, pace_format=pace_format, signed_speed=signed)
        assert decode_treadmill_data(data, pace_format=pace_format, signed_speed=signed) == td

    check()


@given(
    speed=st.floats(0, 655.35),
    incline=st.floats(-3276.8, 3276.6),
    met=st.floats(0, 25.5),
)
def test_treadmill_data_rounds_to_resolution(speed: float, incline: float, met: float) -> None:
    td = TreadmillData(speed_kmh=speed, inclination_pct=incline, metabolic_equivalent=met)
    back = decode_treadmill_data(encode_treadmill_data(td))
    assert back.speed_kmh is not None and abs(back.speed_kmh - speed) <= 0.005 + 1e-9
    assert back.inclination_pct is not None and abs(back.inclination_pct - incline) <= 0.05 + 1e-9
    assert back.metabolic_equivalent is not None
    assert abs(back.metabolic_equivalent - met) <= 0.05 + 1e-9


@pytest.mark.parametrize("signed", [False, True])
def test_control_point_round_trip(signed: bool) -> None:
    requests = st.one_of(
        st.just(RequestControl()),
        st.just(ResetRequest()),
        st.just(StartOrResume()),
        scaled(S16 if signed else U16, 100).map(SetTargetSpeed),
        scaled(S16, 10).map(SetTargetInclination),
        U8.map(SetTargetHeartRate),
        st.booleans().map(StopOrPause),
        U24.map(SetTargetedDistance),
        U16.map(SetTargetedTrainingTime),
    )

    @given(requests)
    def check(req: Any) -> None:
        data = encode_control_point(req, signed_speed=signed)
        assert decode_control_point(data, signed_speed=signed) == req
        assert is_stop(data) == (req == StopOrPause(pause=False))

    check()


@given(st.integers(0, 0xFF), st.sampled_from(list(ResultCode)), st.binary(max_size=8))
def test_control_point_response_round_trip(op: int, result: ResultCode, params: bytes) -> None:
    resp = ControlPointResponse(op, result, params)
    assert decode_control_point_response(encode_control_point_response(resp)) == resp


@pytest.mark.parametrize("signed", [False, True])
def test_machine_status_round_trip(signed: bool) -> None:
    statuses = st.one_of(
        st.sampled_from(
            [StatusReset(), StoppedBySafetyKey(), StartedOrResumedByUser(), ControlPermissionLost()]
        ),
        st.booleans().map(StoppedOrPausedByUser),
        scaled(S16 if signed else U16, 100).map(TargetSpeedChanged),
        scaled(S16, 10).map(TargetInclineChanged),
        U8.map(TargetHeartRateChanged),
        st.builds(OtherStatus, st.sampled_from(sorted(OTHER_OPCODES)), st.binary(max_size=10)),
    )

    @given(statuses)
    def check(status: Any) -> None:
        data = encode_machine_status(status, signed_speed=signed)
        assert decode_machine_status(data, signed_speed=signed) == status

    check()


@given(st.integers(0, 0x0F), st.none() | st.text(max_size=30))
def test_training_status_round_trip(status: int, string: str | None) -> None:
    ts = TrainingStatus(status, string)
    assert decode_training_status(encode_training_status(ts)) == ts


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_feature_round_trip(machine: int, target: int) -> None:
    f = FitnessMachineFeature(machine, target)
    assert decode_feature(encode_feature(f)) == f


@given(st.lists(U16, min_size=2, max_size=2).map(sorted), st.integers(1, 0xFFFF))
def test_speed_range_round_trip(bounds: list[int], inc: int) -> None:
    r = SpeedRange(bounds[0] / 100, bounds[1] / 100, inc / 100)
    assert decode_speed_range(encode_speed_range(r)) == r


@given(st.lists(S16, min_size=2, max_size=2).map(sorted), st.integers(1, 0xFFFF))
def test_inclination_range_round_trip(bounds: list[int], inc: int) -> None:
    r = InclinationRange(bounds[0] / 10, bounds[1] / 10, inc / 10)
    assert decode_inclination_range(encode_inclination_range(r)) == r


@given(st.booleans())
def test_belt_direction_round_trip(reverse: bool) -> None:
    assert decode_belt_direction(encode_belt_direction(BeltDirection(reverse))) == BeltDirection(
        reverse
    )


# --- fuzz: any bytes -> a value or FTMSDecodeError, nothing else -------------------------

Decoder = Callable[[bytes], object]
ENCODE_AGAIN: dict[str, Callable[[Any], bytes]] = {
    "feature": encode_feature,
    "training-status": encode_training_status,
    "speed-range": encode_speed_range,
    "inclination-range": encode_inclination_range,
    "control-point-response": encode_control_point_response,
    "belt-direction": encode_belt_direction,
}


def _quirked(name: str) -> list[tuple[str, Decoder, Callable[[Any], bytes] | None]]:
    out: list[tuple[str, Decoder, Callable[[Any], bytes] | None]] = []
    quirked = name in ("treadmill-data", "control-point", "machine-status")
    for pace, signed in QUIRKS if quirked else QUIRKS[:1]:

        def dec(data: bytes, pace: PaceFormat = pace, signed: bool = signed) -> object:
            return decode_characteristic(name, data, pace_format=pace, signed_speed=signed)

        def enc(value: Any, pace: PaceFormat = pace, signed: bool = signed) -> bytes:
            if name == "treadmill-data":
                return encode_treadmill_data(value, pace_format=pace, signed_speed=signed)
            if name == "control-point":
                return encode_control_point(value, signed_speed=signed)
            if name == "machine-status":
                return encode_machine_status(value, signed_speed=signed)
            return ENCODE_AGAIN[name](value)

        out.append((f"{name}[{pace},{signed}]", dec, enc))
    return out


DECODERS = [d for name in CHARACTERISTICS for d in _quirked(name)]

# Bias the fuzz towards plausible records: a real flags/opcode byte and a tail of any length.
FUZZ_BYTES = st.binary(max_size=48) | st.builds(
    lambda head, tail: head + tail, st.binary(min_size=1, max_size=2), st.binary(max_size=40)
)


@pytest.mark.parametrize(("label", "decode", "encode"), DECODERS, ids=[d[0] for d in DECODERS])
def test_fuzz_decoders_raise_only_ftms_decode_error(
    label: str, decode: Decoder, encode: Callable[[Any], bytes]
) -> None:
    @settings(max_examples=150, deadline=None)
    @given(FUZZ_BYTES)
    def check(data: bytes) -> None:
        try:
            value = decode(data)
        except FTMSDecodeError:
            return
        # Whatever decodes re-encodes to bytes that decode to the same value.
        assert decode(encode(value)) == value

    check()


@settings(max_examples=250, deadline=None)
@given(U16.filter(lambda f: not f & 0xE000), st.binary(max_size=40))
def test_fuzz_treadmill_data_by_flags(flags: int, tail: bytes) -> None:
    data = flags.to_bytes(2, "little") + tail
    for pace, signed in QUIRKS:
        try:
            td = decode_treadmill_data(data, pace_format=pace, signed_speed=signed)
        except FTMSDecodeError as exc:
            assert exc.reason in ("truncated", "trailing")
            continue
        again = encode_treadmill_data(td, pace_format=pace, signed_speed=signed)
        assert decode_treadmill_data(again, pace_format=pace, signed_speed=signed) == td
        assert len(again) <= len(data)
