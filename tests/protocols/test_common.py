"""The helpers the ASCII codecs share (treadctl.protocols.common)."""

from __future__ import annotations

import pytest

from treadctl.protocols.common import ProtocolError, decode_one, digit_field


def test_digit_field_waits_for_all_digits():
    assert digit_field(b"\xa3", 1, 3, "speed") is None
    assert digit_field(b"\xa30", 1, 3, "speed") is None
    assert digit_field(b"\xa3012", 1, 3, "speed") == 12
    assert digit_field(b"\xa30123", 1, 3, "speed") == 12  # only its own width


def test_digit_field_refuses_a_partial_field_that_is_not_digits():
    with pytest.raises(ProtocolError, match="speed"):
        digit_field(b"\xa30x", 1, 3, "speed")
    with pytest.raises(ProtocolError):
        digit_field(b"\xa3\x300x2", 2, 3, "speed")


def test_decode_one_wants_exactly_one_message():
    def parse(buf: bytes) -> tuple[str, int] | None:
        return ("a", 1) if buf[:1] == b"a" else None

    assert decode_one(parse, b"a", "thing") == "a"
    for data in (b"", b"aa", b"b"):
        with pytest.raises(ProtocolError, match="not exactly one thing"):
            decode_one(parse, data, "thing")
