"""Characteristic names for tools (``treadctl ftms decode``, logs) and a JSON view of values."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, Final

from treadctl.ftms import uuids
from treadctl.ftms.belt_direction import decode_belt_direction
from treadctl.ftms.control_point import (
    OpCode,
    ResultCode,
    decode_control_point,
    decode_control_point_response,
)
from treadctl.ftms.errors import ByteData
from treadctl.ftms.feature import FitnessMachineFeature, decode_feature
from treadctl.ftms.machine_status import decode_machine_status
from treadctl.ftms.ranges import decode_inclination_range, decode_speed_range
from treadctl.ftms.training_status import (
    TrainingStatus,
    TrainingStatusCode,
    decode_training_status,
)
from treadctl.ftms.treadmill_data import decode_treadmill_data

#: Tool-facing names -> 16-bit UUID. ``control-point`` decodes a request (what the host
#: writes), ``control-point-response`` the machine's indication on the same UUID.
CHARACTERISTICS: Final[dict[str, int]] = {
    "feature": uuids.FEATURE,
    "treadmill-data": uuids.TREADMILL_DATA,
    "training-status": uuids.TRAINING_STATUS,
    "speed-range": uuids.SPEED_RANGE,
    "inclination-range": uuids.INCLINATION_RANGE,
    "control-point": uuids.CONTROL_POINT,
    "control-point-response": uuids.CONTROL_POINT,
    "machine-status": uuids.MACHINE_STATUS,
    "belt-direction": uuids.BELT_DIRECTION,
}

_QUIRKS: Final = frozenset({"pace_format", "signed_speed"})
_OPCODES: Final = frozenset(int(op) for op in OpCode)


def _decoder(name: str, quirks: dict[str, Any], strict: bool) -> Callable[[ByteData], object]:
    pace = quirks.get("pace_format", "uint8-0.1kmpmin")
    signed = bool(quirks.get("signed_speed", False))
    table: dict[str, Callable[[ByteData], object]] = {
        "feature": decode_feature,
        "treadmill-data": lambda d: decode_treadmill_data(
            d, pace_format=pace, signed_speed=signed, strict=strict
        ),
        "training-status": decode_training_status,
        "speed-range": decode_speed_range,
        "inclination-range": decode_inclination_range,
        "control-point": lambda d: decode_control_point(d, signed_speed=signed),
        "control-point-response": decode_control_point_response,
        "machine-status": lambda d: decode_machine_status(d, signed_speed=signed, strict=strict),
        "belt-direction": decode_belt_direction,
    }
    return table[name]


def characteristic_name(name_or_uuid: str, data: ByteData = b"") -> str:
    """The registry name for a name or UUID ("treadmill-data", "0x2acd", "2ACD", full UUID).

    UUID 0x2AD9 names both directions of the Control Point; a value starting with 0x80 is a
    response. Unknown names raise ``ValueError``.
    """
    key = name_or_uuid.strip().lower().replace("_", "-")
    if key in CHARACTERISTICS:
        return key
    short = uuids.short_uuid(key)
    if short == uuids.CONTROL_POINT:
        return "control-point-response" if data[:1] == b"\x80" else "control-point"
    for name, uuid in CHARACTERISTICS.items():
        if uuid == short:
            return name
    known = ", ".join(CHARACTERISTICS)
    raise ValueError(f"unknown characteristic {name_or_uuid!r} (known: {known}, or a 16-bit UUID)")


def decode_characteristic(
    name_or_uuid: str, data: ByteData, *, strict: bool = True, **quirks: Any
) -> object:
    """Decode ``data`` as the named characteristic. Quirks: ``pace_format``, ``signed_speed``.

    ``strict=False`` reads Treadmill Data and Machine Status tolerantly (the deviations real
    devices send, named in the value's ``deviations``); the other characteristics have one
    decoder. Raises ``ValueError`` for an unknown name or quirk, :class:`FTMSDecodeError`
    for bad bytes.
    """
    unknown = set(quirks) - _QUIRKS
    if unknown:
        raise ValueError(f"unknown quirk(s): {', '.join(sorted(unknown))}")
    return _decoder(characteristic_name(name_or_uuid, data), quirks, strict)(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, tuple):
        return list(value)
    return value


def to_jsonable(obj: object) -> dict[str, Any]:
    """A JSON-ready dict of a decoded value: ``"type"`` (the class name) plus the fields that
    are present (None fields left out). Enums become their names, bytes become hex, tuples
    (``deviations``, ``missing``, ``not_available``) become lists."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"not a decoded FTMS value: {obj!r}")
    out: dict[str, Any] = {"type": type(obj).__name__}
    opcode = getattr(type(obj), "opcode", None)
    if isinstance(opcode, int) and "opcode" not in {f.name for f in dataclasses.fields(obj)}:
        out["opcode"] = _jsonable(opcode)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if f.name == "request_opcode" and value in _OPCODES:
            value = OpCode(value)
        elif f.name == "result" and isinstance(value, int):
            value = ResultCode(value)
        elif f.name == "status" and isinstance(obj, TrainingStatus):
            out["status"] = int(value)
            out["status_name"] = TrainingStatusCode(value).name
            continue
        out[f.name] = _jsonable(value)
    if isinstance(obj, FitnessMachineFeature):
        out["machine_features"] = obj.machine_features
        out["target_features"] = obj.target_features
    return out
