"""Treadmill Data (0x2ACD): the telemetry notification, decoded at telemetry rate by controllers.

Wire format (FTMS 1.0 §4.9): uint16 flags, then the fields of each flag that is set, in bit
order. Bit 0 ("More Data") is inverted: 0 means Instantaneous Speed IS present. Bits 13-15
are reserved and rejected by the strict decoder (the default).

``strict=False`` is the tolerant decoder for what real treadmills send (docs/ftms.md, "Real
devices that deviate"): flag bit 13 with a uint24 step count after the standard fields, and
records shorter than their flags announce (the fields wholly present are read at their
flag-order offsets, the rest are listed in ``missing``; a record that does not carry the
whole speed is still an error). Each deviation a record uses is named in ``deviations``.

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
energy per hour, 0xFF energy per minute) decode to ``None`` and the field is named in
``not_available``, so a sentinel is never mistaken for a literal value or for an absent field.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
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
#: Flag bit 13: Step Count (uint24), sent by walking pads (not in FTMS 1.0; docs/ftms.md).
STEP_COUNT_FLAG: Final = 0x2000
#: Bits 14-15 stay reserved even for the tolerant decoder (no known device, no known layout).
TOLERANT_RESERVED_FLAGS: Final = 0xC000
#: Deviation names (``TreadmillData.deviations``; docs/ftms.md).
STEP_COUNT: Final = "step-count"
SHORT_RECORD: Final = "short-record"


@dataclass(frozen=True)
class TreadmillData:
    """One Treadmill Data notification; ``None`` = field absent (or "data not available").

    ``more_data`` mirrors flag bit 0: True exactly when ``speed_kmh`` is None (the speed
    travels in another notification of a split record). The constructor derives it from
    ``speed_kmh``; the encoder derives the flag the same way.

    ``step_count`` is flag bit 13 (a deviation from FTMS 1.0: only the tolerant decoder
    reads it; the encoder sets the bit when it is given). The last three fields say how the
    record was read and take no part in equality: ``deviations`` names the deviations from
    FTMS 1.0 it used, ``missing`` the fields its flags announced but it did not carry,
    ``not_available`` the fields that carried the "data not available" value; None = none.
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
    step_count: int | None = None
    more_data: bool = False
    deviations: tuple[str, ...] | None = field(default=None, compare=False)
    missing: tuple[str, ...] | None = field(default=None, compare=False)
    not_available: tuple[str, ...] | None = field(default=None, compare=False)

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
        (13, (_Field("step_count", "U", 1),)),
    )


_GROUPS: Final = {
    (pace, signed): _groups(pace, signed) for pace in PACE_FORMATS for signed in (False, True)
}

_Decoder = Callable[[ByteData], TreadmillData]
_DECODERS: dict[int, _Decoder] = {}
_SIGNED_KEY: Final = 1 << 16
_PACE16_KEY: Final = 1 << 17
_TOLERANT_KEY: Final = 1 << 18

#: One announced field: name, struct format ("U" = uint24), offset, size, divisor, sentinel.
_Slot = tuple[str, str, int, int, int, int | None]
_LAYOUTS: dict[int, tuple[_Slot, ...]] = {}


def _present(flags: int, bit: int) -> bool:
    return not flags & 1 if bit == 0 else bool(flags >> bit & 1)


def _layout(key: int) -> tuple[_Slot, ...]:
    """The fields the flags of ``key`` announce, in wire order, with their offsets."""
    slots = _LAYOUTS.get(key)
    if slots is not None:
        return slots
    flags = key & 0xFFFF
    pace: PaceFormat = "uint16-s-per-km" if key & _PACE16_KEY else "uint8-0.1kmpmin"
    out: list[_Slot] = []
    offset = 2
    for bit, fields in _GROUPS[(pace, bool(key & _SIGNED_KEY))]:
        if not _present(flags, bit):
            continue
        for f in fields:
            size = 3 if f.fmt == "U" else struct.calcsize(f.fmt)
            out.append((f.name, f.fmt, offset, size, f.div, f.na))
            offset += size
    slots = _LAYOUTS[key] = tuple(out)
    return slots


def _compile(key: int) -> _Decoder:
    """Generate the decoder for one flags/quirk/mode combination (runs once per combination)."""
    flags = key & 0xFFFF
    tolerant = bool(key & _TOLERANT_KEY)
    fmt = "<"
    names: list[str] = []
    entries: list[str] = []
    sentinels: list[tuple[str, str, int]] = []  # (variable, field name, "not available" value)
    layout: list[str] = []  # for error messages: "speed_kmh@2"
    size = 2
    for name, ffmt, offset, fsize, div, na in _layout(key):
        layout.append(f"{name}@{offset}")
        v = f"v{len(names)}"
        if ffmt == "U":
            fmt += "HB"
            names += [v, v + "h"]
            expr = f"{v} | {v}h << 16"
        else:
            fmt += ffmt
            names.append(v)
            expr = v
        size = offset + fsize
        if div != 1:
            expr = f"{expr} / {div}"
        if na is not None:
            expr = f"(None if {v} == {na} else {expr})"
            sentinels.append((v, name, na))
        entries.append(f"{name!r}: {expr}")
    if flags & 1:
        entries.append("'more_data': True")
    if flags & STEP_COUNT_FLAG:
        entries.append(f"'deviations': ({STEP_COUNT!r},)")
    lines = [
        "def decode(data):",
        f"    if len(data) != {size}:",
        "        return _short(data, _KEY)" if tolerant else
        "        raise _size_error(data, _SIZE, _LAYOUT)",
    ]
    if names:
        lines.append(f"    {', '.join(names)}, = _unpack(data, 2)")
    lines.append(f"    d = {{{', '.join(entries)}}}")
    na_names: list[tuple[str, ...]] = []
    if sentinels:
        # Which sentinels the record carries, as a bit mask into the precomputed name tuples.
        mask = " | ".join(f"({v} == {na}) << {i}" for i, (v, _, na) in enumerate(sentinels))
        lines += [f"    m = {mask}", "    if m:", "        d['not_available'] = _NA[m]"]
        na_names = [
            tuple(n for i, (_, n, _) in enumerate(sentinels) if m >> i & 1)
            for m in range(1 << len(sentinels))
        ]
    lines += [
        "    obj = _new(_cls)",
        "    _set(obj, '__dict__', d)",
        "    return obj",
    ]
    namespace: dict[str, object] = {
        "_unpack": struct.Struct(fmt).unpack_from,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": TreadmillData,
        "_size_error": _size_error,
        "_short": _decode_short,
        "_KEY": key,
        "_SIZE": size,
        "_LAYOUT": ", ".join(layout) or "no fields",
        "_NA": tuple(na_names),
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


def _decode_short(data: ByteData, key: int) -> TreadmillData:
    """The tolerant reading of a record whose length does not match its flags.

    Shorter: the fields wholly present are read at their flag-order offsets and the others
    are listed in ``missing`` (never guessed); a record without the whole speed is an error.
    Longer: an error, as in the strict decoder (no known device appends unannounced bytes).
    """
    slots = _layout(key)
    size = slots[-1][2] + slots[-1][3] if slots else 2
    n = len(data)
    layout = ", ".join(f"{s[0]}@{s[2]}" for s in slots) or "no fields"
    if n > size:
        raise _size_error(data, size, layout)
    values: dict[str, object] = {}
    missing: list[str] = []
    not_available: list[str] = []
    for name, ffmt, offset, fsize, div, na in slots:
        if offset + fsize > n:
            missing.append(name)
            continue
        if ffmt == "U":
            raw = int.from_bytes(data[offset : offset + 3], "little")
        else:
            raw = struct.unpack_from("<" + ffmt, data, offset)[0]
        if na is not None and raw == na:
            values[name] = None
            not_available.append(name)
        else:
            values[name] = raw / div if div != 1 else raw
    flags = key & 0xFFFF
    if "speed_kmh" in missing:
        raise FTMSDecodeError(
            _NAME,
            f"truncated: flags 0x{flags:04x} announce the speed at offset 2 but the record"
            f" has {n} bytes; without the speed nothing in it can be trusted",
            reason="truncated",
        )
    if flags & 1:
        values["more_data"] = True
    deviations = [STEP_COUNT] if flags & STEP_COUNT_FLAG else []
    values["deviations"] = (*deviations, SHORT_RECORD)
    values["missing"] = tuple(missing)
    if not_available:
        values["not_available"] = tuple(not_available)
    obj = object.__new__(TreadmillData)
    object.__setattr__(obj, "__dict__", values)
    return obj


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
    strict: bool = True,
) -> TreadmillData:
    """Decode one Treadmill Data notification; raises only :class:`FTMSDecodeError` for bad bytes.

    ``signed_speed=True`` reads Instantaneous and Average Speed as sint16 (negative = belt
    running in reverse, the ``kinetic-rx2`` quirk). ``strict=False`` is the tolerant decoder
    for real devices (step count in flag bit 13, records shorter than their flags; see the
    module docstring); the default is FTMS 1.0 exactly.
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
    if not strict:
        key |= _TOLERANT_KEY
    decoder = _DECODERS.get(key)
    if decoder is None:
        if key & (RESERVED_FLAGS if strict else TOLERANT_RESERVED_FLAGS):
            bits = "13-15 are reserved" if strict else "14-15 are reserved even when tolerant"
            raise FTMSDecodeError(
                _NAME,
                f"reserved flag bits set: flags 0x{key & 0xFFFF:04x} (bits {bits})",
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
    force + power have none, so both of a pair must be given. A ``step_count`` sets flag
    bit 13 and appends a uint24: what walking pads send, which only the tolerant decoder
    reads (the simulator's ``step-count`` quirk).
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
