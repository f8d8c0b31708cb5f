"""Fitness Machine Status (0x2ADA) and Training Status (0x2AD3) at the byte level."""

from __future__ import annotations

import pytest

from treadctl.ftms import (
    ControlPermissionLost,
    FTMSDecodeError,
    FTMSEncodeError,
    MachineStatus,
    OtherStatus,
    StartedOrResumedByUser,
    StatusReset,
    StoppedBySafetyKey,
    StoppedOrPausedByUser,
    TargetHeartRateChanged,
    TargetInclineChanged,
    TargetSpeedChanged,
    TrainingStatus,
    TrainingStatusCode,
    decode_machine_status,
    decode_training_status,
    encode_machine_status,
    encode_training_status,
)

STATUSES: list[tuple[MachineStatus, str]] = [
    (StatusReset(), "01"),
    (StoppedOrPausedByUser(paused=False), "0201"),
    (StoppedOrPausedByUser(paused=True), "0202"),
    (StoppedBySafetyKey(), "03"),
    (StartedOrResumedByUser(), "04"),
    (TargetSpeedChanged(5.5), "052602"),
    (TargetInclineChanged(-0.5), "06fbff"),
    (TargetHeartRateChanged(140), "098c"),
    (ControlPermissionLost(), "ff"),
    (OtherStatus(0x0D, b"\x10\x27\x00"), "0d102700"),  # targeted distance changed
    (OtherStatus(0x07), "07"),
]


@pytest.mark.parametrize(("status", "hexdata"), STATUSES)
def test_machine_status_bytes(status: MachineStatus, hexdata: str) -> None:
    assert encode_machine_status(status).hex() == hexdata
    assert decode_machine_status(bytes.fromhex(hexdata)) == status


def test_signed_target_speed_changed() -> None:
    assert decode_machine_status(bytes.fromhex("05a2fe"), signed_speed=True) == TargetSpeedChanged(
        -3.5
    )
    assert encode_machine_status(TargetSpeedChanged(-3.5), signed_speed=True).hex() == "05a2fe"
    with pytest.raises(FTMSEncodeError):
        encode_machine_status(TargetSpeedChanged(-3.5))


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("", "empty notification"),
        ("00", "reserved opcode 0x00"),
        ("16", "reserved opcode 0x16"),
        ("fe", "reserved opcode 0xfe"),
        ("0203", "parameter 0x03 at offset 1 out of range"),
        ("02", "truncated"),
        ("0526", "truncated"),
        ("0100", "trailing"),
        ("ff00", "trailing"),
    ],
)
def test_machine_status_errors(hexdata: str, message: str) -> None:
    with pytest.raises(FTMSDecodeError, match=message) as info:
        decode_machine_status(bytes.fromhex(hexdata))
    assert str(info.value).startswith("machine-status: ")


def test_other_status_must_be_another_spec_opcode() -> None:
    with pytest.raises(FTMSEncodeError, match="0x01"):
        encode_machine_status(OtherStatus(0x01))
    with pytest.raises(FTMSEncodeError, match="0x20"):
        encode_machine_status(OtherStatus(0x20))


def test_training_status_bytes() -> None:
    assert encode_training_status(TrainingStatus(0x01)).hex() == "0001"
    idle = decode_training_status(bytes.fromhex("0001"))
    assert idle == TrainingStatus(TrainingStatusCode.IDLE) and idle.string is None
    ts = decode_training_status(bytes.fromhex("010d") + b"Quick start")
    assert ts == TrainingStatus(TrainingStatusCode.MANUAL_MODE, "Quick start")
    assert encode_training_status(ts) == bytes.fromhex("010d") + b"Quick start"
    assert decode_training_status(bytes.fromhex("010f")) == TrainingStatus(0x0F, "")
    utf8 = decode_training_status(bytes.fromhex("0102") + "Échauffement".encode())
    assert utf8.string == "Échauffement"


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("", "truncated"),
        ("00", "truncated"),
        ("0401", "reserved flag bits set: flags 0x04"),
        ("0201", "extended string"),
        ("0010", "status 0x10 at offset 1 out of range"),
        ("000141", "trailing bytes at offset 2 but the string flag is clear"),
        ("0101ff", "not valid UTF-8 at offset 2"),
        ("010141c3", "not valid UTF-8 at offset 3"),
    ],
)
def test_training_status_errors(hexdata: str, message: str) -> None:
    with pytest.raises(FTMSDecodeError, match=message) as info:
        decode_training_status(bytes.fromhex(hexdata))
    assert str(info.value).startswith("training-status: ")


def test_training_status_encode_errors() -> None:
    with pytest.raises(FTMSEncodeError, match="status"):
        encode_training_status(TrainingStatus(0x10))
    with pytest.raises(FTMSEncodeError, match="UTF-8"):
        encode_training_status(TrainingStatus(1, "\ud800"))
