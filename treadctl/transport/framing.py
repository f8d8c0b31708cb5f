"""Serial/TCP framing of FTMS characteristic values (docs/framing.md), sans-I/O.

Byte layout (documented in docs/framing.md)::

    raw   = type:u8  seq:u8  uuid:u16le  len:u8  value[len]  crc:u16le
    wire  = 0x00  COBS(raw)  0x00

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over ``type..value``. COBS
removes every zero byte from the frame, so 0x00 only ever delimits: a reader that lands
in garbage re-synchronises at the next 0x00. The leading 0x00 flushes whatever partial
junk the reader holds. A frame with a bad COBS code, length or CRC is dropped and
counted, never returned.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

MAX_VALUE_LEN = 255
_HEADER = struct.Struct("<BBHB")
# Encoded frames never get longer than this; longer runs between delimiters are garbage.
MAX_WIRE_LEN = 2 + (_HEADER.size + MAX_VALUE_LEN + 2) * 255 // 254 + 2


class FrameType(enum.IntEnum):
    NOTIFY = 0x01
    WRITE = 0x02
    WRITE_RESPONSE = 0x03
    READ = 0x04
    READ_RESPONSE = 0x05
    KEEPALIVE = 0x06


# Status byte at the start of WRITE_RESPONSE / READ_RESPONSE values (ATT error codes).
STATUS_OK = 0x00
STATUS_WRITE_NOT_PERMITTED = 0x03
STATUS_NOT_SUPPORTED = 0x06
STATUS_APP_ERROR = 0x80

#: READ of this UUID asks "are you the treadctl simulator, and how fast does your time
#: run?": the simulator answers its speed-up as ASCII (``b"1"``, ``b"10"``), any other
#: firmware or bridge answers not-supported. ``treadctl run`` over TCP/serial checks it,
#: so both sides of a sped-up cross-process run agree (docs/framing.md).
SIMULATOR_CLOCK_UUID = 0xFFFE


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    uuid: int
    value: bytes = b""
    seq: int = 0


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    for block in data.split(b"\x00"):
        # Every zero-delimited block is written as runs of at most 254 bytes.
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises ValueError on a malformed encoding."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside COBS data")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the frame")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(frame: Frame) -> bytes:
    if len(frame.value) > MAX_VALUE_LEN:
        raise ValueError(f"value too long for a frame: {len(frame.value)} > {MAX_VALUE_LEN}")
    raw = _HEADER.pack(int(frame.type), frame.seq & 0xFF, frame.uuid & 0xFFFF, len(frame.value))
    raw += frame.value
    raw += struct.pack("<H", crc16_ccitt(raw))
    return b"\x00" + cobs_encode(raw) + b"\x00"


@dataclass
class FrameCounters:
    frames: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    cobs_errors: int = 0
    type_errors: int = 0
    oversize: int = 0
    bytes_discarded: int = 0

    @property
    def dropped(self) -> int:
        return (
            self.crc_errors
            + self.length_errors
            + self.cobs_errors
            + self.type_errors
            + self.oversize
        )


@dataclass
class FrameDecoder:
    """Feed bytes in any chunking; get whole, verified frames out."""

    counters: FrameCounters = field(default_factory=FrameCounters)
    _buf: bytearray = field(default_factory=bytearray)
    _overflowed: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        while True:
            idx = data.find(b"\x00", start)
            if idx < 0:
                self._append(data[start:])
                return frames
            self._append(data[start:idx])
            chunk = bytes(self._buf)
            overflowed = self._overflowed
            self._buf.clear()
            self._overflowed = False
            start = idx + 1
            if overflowed:
                self.counters.oversize += 1
                continue
            if chunk:
                frame = self._parse(chunk)
                if frame is not None:
                    frames.append(frame)

    def _append(self, data: bytes) -> None:
        if not data:
            return
        if self._overflowed or len(self._buf) + len(data) > MAX_WIRE_LEN:
            self.counters.bytes_discarded += len(self._buf) + len(data)
            self._buf.clear()
            self._overflowed = True
            return
        self._buf += data

    def _parse(self, chunk: bytes) -> Frame | None:
        c = self.counters
        try:
            raw = cobs_decode(chunk)
        except ValueError:
            c.cobs_errors += 1
            c.bytes_discarded += len(chunk)
            return None
        if len(raw) < _HEADER.size + 2:
            c.length_errors += 1
            c.bytes_discarded += len(chunk)
            return None
        ftype, seq, uuid, length = _HEADER.unpack_from(raw)
        if len(raw) != _HEADER.size + length + 2:
            c.length_errors += 1
            c.bytes_discarded += len(chunk)
            return None
        (crc,) = struct.unpack_from("<H", raw, len(raw) - 2)
        if crc != crc16_ccitt(raw[:-2]):
            c.crc_errors += 1
            c.bytes_discarded += len(chunk)
            return None
        try:
            frame_type = FrameType(ftype)
        except ValueError:
            c.type_errors += 1
            c.bytes_discarded += len(chunk)
            return None
        c.frames += 1
        return Frame(frame_type, uuid, raw[_HEADER.size : _HEADER.size + length], seq)
