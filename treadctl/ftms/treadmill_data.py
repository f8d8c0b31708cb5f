"""Treadmill Data (0x2ACD): the telemetry notification, decoded at telemetry rate by controllers.

Wire format (FTMS 1.0 §4.9): uint16 flags, then the fields of each flag that is set, in bit
order. Bit 0 ("More Data") is inverted: 0 means Instantaneous Speed IS present. Bits 13-15
are reserved and rejected.

Decoding is the hot path. For each distinct (flags, pace format, signed speed) combination a
small decoder function is generated once and cached: one precompiled ``struct.Struct``
unpack, one exact length check, and the result object is filled directly (only present
fields are stored on the instance; absent fields read the class default ``None``), so a
decode does no per-field branching and no intermediate dictionaries.

Units: speeds km/h, distance m, inclination %, ramp angle degrees, elevation gain m, energy
kcal, heart rate bpm, metabolic equivalent METs, times s, force N, power W. Pace is in the
profile's pace unit: km/min (0.1 resolution) with ``pace_format="uint8-0.1kmpmin"`` (FTMS
1.0), whole seconds per km with ``"uint16-s-per-km"`` (errata / many real devices).
"Data not available" values (0x7FFF inclination and ramp angle, 0xFFFF total energy and
energy per hour, 0xFF energy per minute) decode to ``None``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from treadctl.ftms._wire import to_int
from treadctl.ftms.errors import ByteData, FTMSDecodeError, FTMSEncodeError

_NAME: Final = "treadmill-data"

#: How Instantaneous / Average Pace travel: FTMS 1.0 uint8 in 0.1 km/min, or (errata, many
#: real devices) uint16 whole seconds per km. Firmware profiles name one (``quirks.pace_format``).
PaceFormat = Literal["uint8-0.1kmpmin", "uint16-s-per-km"]
DEFAULT_PACE_FORMAT: Final[PaceFormat] = "uint8-0.1kmpmin"
PACE_FORMATS: Final[tuple[PaceFormat, ...]] = ("uint8-0.1kmpmin", "uint16-s-per-km")
RESERVED_FLAGS: Final = 0xE000


@dataclass(frozen=True)
class TreadmillData:
    """One Treadmill Data notification; ``None`` = field absent (or "data not available").

    ``more_data`` mirrors flag bit 0: True exactly when ``speed_kmh`` is None (the speed
    travels in another notification of a split record). The constructor derives it from
    ``speed_kmh``; the encoder derives the flag the same way.
    """

    speed_kmh: float | None = None
    average_speed_kmh: float | None = None
    total_distance_m: int | None = None
    inclination_pct: float | None = None
    ramp_angle_deg: float | None = None
    positive_elevation_gain_m: float | None = None
    negative_elevation_gain_m: float | None = None
    instantaneous_pace: float | None = None
    average_pace: float | None = None
    total_energy_kcal: int | None = None
    energy_per_hour_kcal: int | None = None
    energy_per_minute_kcal: int | None = None
    heart_rate_bpm: int | None = None
    metabolic_equivalent: float | None = None
    elapsed_time_s: int | None = None
    remaining_time_s: int | None = None
    force_on_belt_n: int | None = None
    power_output_w: int | None = None
    more_data: bool = False

    def __post_init__(self) -> None:
        # Only the constructor runs this; decoders build instances directly.
        object.__setattr__(self, "more_data", self.speed_kmh is None)


@dataclass(frozen=True)
class _Field:
    name: str
    fmt: str  # struct format, "U" = uint24
    div: int  # wire integer / div = physical value
    na: int | None = None  # "data not available" sentinel, decodes to None


_RANGES: Final = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "h": (-0x8000, 0x7FFF),
    "U": (0, 0xFFFFFF),
}


_Groups = tuple[tuple[int, tuple[_Field, ...]], ...]


def _groups(pace_format: PaceFormat, signed_speed: bool) -> _Groups:
    speed = "h" if signed_speed else "H"
    pace = _Field("", "B", 10) if pace_format == "uint8-0.1kmpmin" else _Field("", "H", 1)
    return (
        (0, (_Field("speed_kmh", speed, 100),)),
        (1, (_Field("average_speed_kmh", speed, 100),)),
        (2, (_Field("total_distance_m", "U", 1),)),
        (
            3,
            (
                _Field("inclination_pct", "h", 10, 0x7FFF),
                _Field("ramp_angle_deg", "h", 10, 0x7FFF),
            ),
        ),
        (
            4,
            (
                _Field("positive_elevation_gain_m", "H", 10),
                _Field("negative_elevation_gain_m", "H", 10),
            ),
        ),
        (5, (_Field("instantaneous_pace", pace.fmt, pace.div),)),
        (6, (_Field("average_pace", pace.fmt, pace.div),)),
        (
            7,
            (
                _Field("total_energy_kcal", "H", 1, 0xFFFF),
                _Field("energy_per_hour_kcal", "H", 1, 0xFFFF),
                _Field("energy_per_minute_kcal", "B", 1, 0xFF),
            ),
        ),
        (8, (_Field("heart_rate_bpm", "B", 1),)),
        (9, (_Field("metabolic_equivalent", "B", 10),)),
        (10, (_Field("elapsed_time_s", "H", 1),)),
        (11, (_Field("remaining_time_s", "H", 1),)),
        (12, (_Field("force_on_belt_n", "h", 1), _Field("power_output_w", "h", 1))),
    )


_GROUPS: Final = {
    (pace, signed): _groups(pace, signed) for pace in PACE_FORMATS for signed in (False, True)
}

_Decoder = Callable[[ByteData], TreadmillData]
_DECODERS: dict[int, _Decoder] = {}
_SIGNED_KEY: Final = 1 << 16
_PACE16_KEY: Final = 1 << 17


def _present(flags: int, bit: int) -> bool:
    return not flags & 1 if bit == 0 else bool(flags >> bit & 1)


def _compile(key: int) -> _Decoder:
    """Generate the decoder for one flags/quirk combination (runs once per combination)."""
    flags = key & 0xFFFF
    pace: PaceFormat = "uint16-s-per-km" if key & _PACE16_KEY else "uint8-0.1kmpmin"
    groups = _GROUPS[(pace, bool(key & _SIGNED_KEY))]
    fmt = "<"
    names: list[str] = []
    entries: list[str] = []
    layout: list[str] = []  # for error messages: "speed_kmh@2"
    offset = 2
    for bit, fields in groups:
        if not _present(flags, bit):
            continue
        for f in fields:
            layout.append(f"{f.name}@{offset}")
            v = f"v{len(names)}"
            if f.fmt == "U":
                fmt += "HB"
                names += [v, v + "h"]
                expr = f"{v} | {v}h << 16"
                offset += 3
            else:
                fmt += f.fmt
                names.append(v)
                expr = v
                offset += struct.calcsize(f.fmt)
            if f.div != 1:
                expr = f"{expr} / {f.div}"
            if f.na is not None:
                expr = f"(None if {v} == {f.na} else {expr})"
            entries.append(f"{f.name!r}: {expr}")
    if flags & 1:
        entries.append("'more_data': True")
    size = offset
    lines = [
        "def decode(data):",
        f"    if len(data) != {size}:",
        "        raise _size_error(data, _SIZE, _LAYOUT)",
    ]
    if names:
        lines.append(f"    {', '.join(names)}, = _unpack(data, 2)")
    lines += [
        "    obj = _new(_cls)",
        f"    _set(obj, '__dict__', {{{', '.join(entries)}}})",
        "    return obj",
    ]
    namespace: dict[str, object] = {
        "_unpack": struct.Struct(fmt).unpack_from,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": TreadmillData,
        "_size_error": _size_error,
        "_SIZE": size,
        "_LAYOUT": ", ".join(layout) or "no fields",
    }
    # A named pseudo-file so tracebacks say which generated decoder ran.
    code = compile("\n".join(lines), f"<treadmill-data decoder 0x{key:05x}>", "exec")
    exec(code, namespace)
    decoder: _Decoder = namespace["decode"]  # type: ignore[assignment]
    _DECODERS[key] = decoder
    return decoder


def _size_error(data: ByteData, size: int, layout: str) -> FTMSDecodeError:
    flags = data[0] | data[1] << 8
    n = len(data)
    if n < size:
        return FTMSDecodeError(
            _NAME,
            f"truncated: flags 0x{flags:04x} announce {size} bytes ({layout}), got {n}",
            reason="truncated",
        )
    return FTMSDecodeError(
        _NAME,
        f"{n - size} trailing bytes at offset {size}: flags 0x{flags:04x} announce {size} bytes"
        f" ({layout}), got {n}",
        reason="trailing",
    )


def _quirk_key(pace_format: str, signed_speed: bool) -> int:
    key = _SIGNED_KEY if signed_speed else 0
    if pace_format == "uint16-s-per-km":
        key |= _PACE16_KEY
    elif pace_format != "uint8-0.1kmpmin":
        raise ValueError(f"unknown pace_format {pace_format!r} (expected one of {PACE_FORMATS})")
    return key


def decode_treadmill_data(
    data: ByteData,
    *,
    pace_format: PaceFormat = DEFAULT_PACE_FORMAT,
    signed_speed: bool = False,
) -> TreadmillData:
    """Decode one Treadmill Data notification; raises only :class:`FTMSDecodeError` for bad bytes.

    ``signed_speed=True`` reads Instantaneous and Average Speed as sint16 (negative = belt
    running in reverse, the ``kinetic-rx2`` quirk).
    """
    if len(data) < 2:
        raise FTMSDecodeError(
            _NAME, f"truncated: the flags field needs 2 bytes, got {len(data)}", reason="truncated"
        )
    key = data[0] | data[1] << 8
    if signed_speed:
        key |= _SIGNED_KEY
    if pace_format != "uint8-0.1kmpmin":
        key |= _quirk_key(pace_format, signed_speed)
    decoder = _DECODERS.get(key)
    if decoder is None:
        if key & RESERVED_FLAGS:
            raise FTMSDecodeError(
                _NAME,
                f"reserved flag bits set: flags 0x{key & 0xFFFF:04x} (bits 13-15 are reserved)",
                reason="reserved",
            )
        decoder = _compile(key)
    return decoder(data)


def encode_treadmill_data(
    td: TreadmillData,
    *,
    pace_format: PaceFormat = DEFAULT_PACE_FORMAT,
    signed_speed: bool = False,
) -> bytes:
    """The notification for ``td``: flags from which fields are not None, values rounded to
    each field's resolution; out-of-range or partial fields raise :class:`FTMSEncodeError`.

    Fields that travel together (inclination + ramp angle, the three energy values) may be
    partly None where the spec has a "data not available" value; elevation gains and
    force + power have none, so both of a pair must be given.
    """
    _quirk_key(pace_format, signed_speed)  # validates pace_format
    flags = 0
    out = bytearray(2)
    for bit, fields in _GROUPS[(pace_format, signed_speed)]:
        values = [getattr(td, f.name) for f in fields]
        if all(v is None for v in values):
            if bit == 0:
                flags |= 1  # More Data: speed absent
            continue
        if bit:
            flags |= 1 << bit
        for f, value in zip(fields, values, strict=True):
            if value is None:
                if f.na is None:
                    others = ", ".join(g.name for g in fields if g is not f)
                    raise FTMSEncodeError(
                        f"{_NAME}: {f.name} is None but {others} is set; they travel together"
                    )
                raw = f.na
            else:
                lo, hi = _RANGES[f.fmt]
                if f.na == hi:
                    hi -= 1  # the top value means "not available"
                raw = to_int(f"{_NAME}: {f.name}", value, f.div, lo, hi)
            if f.fmt == "U":
                out += raw.to_bytes(3, "little")
            else:
                out += struct.pack("<" + f.fmt, raw)
    out[0:2] = flags.to_bytes(2, "little")
    return bytes(out)
