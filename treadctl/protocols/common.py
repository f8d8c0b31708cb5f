"""What every native-protocol codec shares: the one error type, ASCII digit fields and a
resynchronising stream decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProtocolError(ValueError):
    """Bytes that are not a valid message, or a value that cannot be encoded."""


def ascii_digits(value: int, width: int, what: str) -> bytes:
    """``value`` as exactly ``width`` ASCII decimal digits; out of range is refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value < 10**width:
        raise ProtocolError(f"{what} {value} does not fit {width} digits")
    return b"%0*d" % (width, value)


def parse_digits(data: bytes, what: str) -> int:
    """ASCII decimal digits -> int; anything else is a :class:`ProtocolError`."""
    if not data or any(not 0x30 <= b <= 0x39 for b in data):
        raise ProtocolError(f"{what}: expected ASCII digits, got {data.hex(' ')}")
    return int(data)


def digit_field(buf: bytes, start: int, width: int, what: str) -> int | None:
    """The ``width`` ASCII digits at ``buf[start:]``, or None while they have not all come
    (the part that has come must already be digits: otherwise resync now)."""
    if len(buf) < start + width:
        if len(buf) > start:
            parse_digits(buf[start:], what)
        return None
    return parse_digits(buf[start : start + width], what)


#: ``parse(buffer)`` -> (message, bytes used), or None when more bytes are needed; raises
#: ProtocolError when the buffer does not start with a valid message.
Parser = Callable[[bytes], "tuple[T, int] | None"]


def decode_one(parse: Callable[[bytes], tuple[T, int] | None], data: bytes, what: str) -> T:
    """``data`` as exactly one message of ``parse``; anything else is a ProtocolError."""
    got = parse(data)
    if got is None or got[1] != len(data):
        raise ProtocolError(f"not exactly one {what}: {data.hex(' ')}")
    return got[0]


class StreamDecoder(Generic[T]):
    """Cuts a byte stream into messages. Garbage is dropped one byte at a time until a
    valid message starts (the resync); ``feed`` never raises."""

    def __init__(self, parse: Callable[[bytes], tuple[T, int] | None], max_buffer: int = 256):
        self._parse = parse
        self._buf = bytearray()
        self._max = max_buffer
        self.messages = 0
        self.garbage_bytes = 0

    def feed(self, data: bytes) -> list[T]:
        self._buf += data
        out: list[T] = []
        while self._buf:
            try:
                got = self._parse(bytes(self._buf))
            except ProtocolError:
                del self._buf[0]
                self.garbage_bytes += 1
                continue
            if got is None:
                if len(self._buf) > self._max:  # a "message" that never ends
                    del self._buf[0]
                    self.garbage_bytes += 1
                    continue
                break
            msg, used = got
            del self._buf[:used]
            self.messages += 1
            out.append(msg)
        return out

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a message."""
        return len(self._buf)
