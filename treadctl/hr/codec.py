"""Heart Rate Measurement (0x2A37, Heart Rate Service 0x180D), decoded and encoded sans-I/O.

The layout (Bluetooth SIG, Heart Rate Service 1.0 and the GATT Specification Supplement,
"Heart Rate Measurement"), all little-endian::

    flags            uint8
      bit 0          Heart Rate Value Format: 0 = uint8, 1 = uint16
      bit 1          Sensor Contact detected (meaningful only when bit 2 is set)
      bit 2          Sensor Contact feature supported
      bit 3          Energy Expended field present
      bit 4          RR-Interval field(s) present
      bits 5-7       reserved for future use (kept as received, ignored)
    heart rate       uint8 or uint16, beats per minute
    energy expended  uint16, kilojoules since the last reset (0xFFFF: the maximum, it
                     saturates), if bit 3
    RR-intervals     uint16 each, units of 1/1024 s, as many as the rest holds, if bit 4

The sensor contact bits read as: ``0b00``/``0b01`` not supported, ``0b10`` supported but no
contact, ``0b11`` supported and in contact (bit 2 is "supported", bit 1 "detected").

Everything here is pure: bytes in, a frozen :class:`HeartRateMeasurement` out, and back. The
one error is :class:`HeartRateCodecError` (a ``ValueError``), raised by the decoder for a
value it cannot read (empty, shorter than its flags announce, an odd byte left over) and by
the encoder for a value it cannot write (a heart rate over 255 in uint8 format, a field
outside uint16). ``treadctl hr decode HEX`` prints a decoded value as JSON (docs/heart-rate.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal

#: 16-bit UUIDs of the Heart Rate Service and its Heart Rate Measurement characteristic.
HEART_RATE_SERVICE = 0x180D
HEART_RATE_MEASUREMENT = 0x2A37
#: RR-interval resolution: 1/1024 s per unit.
RR_UNITS_PER_S = 1024

FLAG_UINT16 = 0x01
FLAG_CONTACT_DETECTED = 0x02
FLAG_CONTACT_SUPPORTED = 0x04
FLAG_ENERGY = 0x08
FLAG_RR = 0x10
FLAG_RESERVED = 0xE0

Contact = Literal["not-supported", "not-detected", "detected"]
_U16 = struct.Struct("<H")


class HeartRateCodecError(ValueError):
    """A Heart Rate Measurement value that cannot be decoded or encoded."""


@dataclass(frozen=True)
class HeartRateMeasurement:
    """One Heart Rate Measurement notification, every field as the strap sent it.

    ``contact_detected`` is the raw bit 1; it only means something when
    ``contact_supported`` is set (see :attr:`contact`). ``rr_intervals`` are raw 1/1024 s
    units (:attr:`rr_intervals_s` in seconds). ``reserved_flags`` are bits 5-7 as received,
    so a value re-encodes byte for byte.
    """

    bpm: int
    uint16: bool = False
    contact_supported: bool = False
    contact_detected: bool = False
    energy_expended_kj: int | None = None
    rr_intervals: tuple[int, ...] = ()
    rr_present: bool = False
    reserved_flags: int = 0

    @property
    def contact(self) -> Contact:
        if not self.contact_supported:
            return "not-supported"
        return "detected" if self.contact_detected else "not-detected"

    @property
    def in_contact(self) -> bool | None:
        """True/False when the strap reports contact, None when it cannot tell."""
        return None if not self.contact_supported else self.contact_detected

    @property
    def rr_intervals_s(self) -> tuple[float, ...]:
        return tuple(rr / RR_UNITS_PER_S for rr in self.rr_intervals)

    @property
    def flags(self) -> int:
        return (
            (FLAG_UINT16 if self.uint16 else 0)
            | (FLAG_CONTACT_DETECTED if self.contact_detected else 0)
            | (FLAG_CONTACT_SUPPORTED if self.contact_supported else 0)
            | (FLAG_ENERGY if self.energy_expended_kj is not None else 0)
            | (FLAG_RR if (self.rr_present or self.rr_intervals) else 0)
            | (self.reserved_flags & FLAG_RESERVED)
        )

    def to_jsonable(self) -> dict[str, Any]:
        return {
            "characteristic": "heart-rate-measurement",
            "flags": f"0x{self.flags:02x}",
            "heart_rate_bpm": self.bpm,
            "format": "uint16" if self.uint16 else "uint8",
            "sensor_contact": self.contact,
            "energy_expended_kj": self.energy_expended_kj,
            "rr_intervals": list(self.rr_intervals),
            "rr_intervals_ms": [round(s * 1000, 1) for s in self.rr_intervals_s],
            "reserved_flags": f"0x{self.reserved_flags:02x}" if self.reserved_flags else None,
        }


def decode_heart_rate_measurement(data: bytes | bytearray | memoryview) -> HeartRateMeasurement:
    """Decode one 0x2A37 value; :class:`HeartRateCodecError` if it cannot be read.

    Flag bit 4 with no interval bytes decodes to ``rr_present=True`` and no intervals (a
    strap that had no beat to report in that second, as some send)."""
    raw = bytes(data)
    if not raw:
        raise HeartRateCodecError("empty value: a Heart Rate Measurement has at least 2 bytes")
    flags = raw[0]
    pos = 1
    uint16 = bool(flags & FLAG_UINT16)
    need = 2 if uint16 else 1
    if len(raw) < pos + need:
        fmt = "uint16" if uint16 else "uint8"
        raise HeartRateCodecError(
            f"flags 0x{flags:02x} announce a {fmt} heart rate, value is {len(raw)} byte(s)"
        )
    bpm = _U16.unpack_from(raw, pos)[0] if uint16 else raw[pos]
    pos += need
    energy: int | None = None
    if flags & FLAG_ENERGY:
        if len(raw) < pos + 2:
            raise HeartRateCodecError(
                f"flags 0x{flags:02x} announce energy expended at byte {pos}, value is "
                f"{len(raw)} byte(s)"
            )
        energy = _U16.unpack_from(raw, pos)[0]
        pos += 2
    rr: tuple[int, ...] = ()
    rest = len(raw) - pos
    if flags & FLAG_RR:
        if rest % 2:
            raise HeartRateCodecError(
                f"RR-intervals are uint16: {rest} byte(s) after byte {pos} is not a whole number"
            )
        rr = tuple(v for (v,) in struct.iter_unpack("<H", raw[pos:]))
    elif rest:
        raise HeartRateCodecError(
            f"{rest} trailing byte(s) after byte {pos - 1}: flags 0x{flags:02x} announce no "
            "RR-intervals"
        )
    return HeartRateMeasurement(
        bpm=bpm,
        uint16=uint16,
        contact_supported=bool(flags & FLAG_CONTACT_SUPPORTED),
        contact_detected=bool(flags & FLAG_CONTACT_DETECTED),
        energy_expended_kj=energy,
        rr_intervals=rr,
        rr_present=bool(flags & FLAG_RR),
        reserved_flags=flags & FLAG_RESERVED,
    )


def encode_heart_rate_measurement(m: HeartRateMeasurement) -> bytes:
    """The 0x2A37 bytes of ``m`` (what the simulated strap notifies)."""
    limit = 0xFFFF if m.uint16 else 0xFF
    if not isinstance(m.bpm, int) or not 0 <= m.bpm <= limit:
        fmt = "uint16" if m.uint16 else "uint8"
        raise HeartRateCodecError(f"heart rate {m.bpm!r} does not fit the {fmt} format")
    out = bytearray([m.flags])
    out += _U16.pack(m.bpm) if m.uint16 else bytes([m.bpm])
    if m.energy_expended_kj is not None:
        out += _u16(m.energy_expended_kj, "energy expended")
    for rr in m.rr_intervals:
        out += _u16(rr, "RR-interval")
    return bytes(out)


def _u16(value: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise HeartRateCodecError(f"{what} {value!r} does not fit uint16")
    return _U16.pack(value)


def rr_units(seconds: float) -> int:
    """An RR-interval in seconds as 1/1024 s units (rounded, clamped to uint16)."""
    return max(0, min(0xFFFF, round(seconds * RR_UNITS_PER_S)))
