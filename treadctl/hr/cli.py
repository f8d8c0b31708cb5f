"""``treadctl hr decode HEX``: decode one captured Heart Rate Measurement (0x2A37) value and
print it as JSON (docs/heart-rate.md).

HEX is what a capture tool shows, in the same notations ``treadctl ftms decode`` reads
(plain ``164d1603``, spaced, nRF Connect's ``(0x) 16-4D-16-03``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from treadctl.hr.codec import HeartRateCodecError, decode_heart_rate_measurement


def _decode(args: argparse.Namespace) -> int:
    from treadctl.cli import UsageError  # the CLI entry point imports us; avoid a cycle
    from treadctl.ftms.cli import parse_hex

    text = " ".join(args.hex)
    try:
        data = parse_hex(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        value = decode_heart_rate_measurement(data)
    except HeartRateCodecError as exc:
        raise UsageError(f"cannot decode {data.hex()}: {exc}") from None
    print(json.dumps(value.to_jsonable(), indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``treadctl hr decode`` (see ``treadctl.cli``)."""
    hr = subparsers.add_parser(
        "hr", help="heart-rate tools", description="Heart Rate Service (0x180D) tools."
    )
    sub = hr.add_subparsers(dest="hr_command", metavar="SUBCOMMAND", required=True)
    decode = sub.add_parser(
        "decode",
        help="decode one Heart Rate Measurement (0x2A37) value and print JSON",
        description=(
            "Decode one captured Heart Rate Measurement value, e.g. `treadctl hr decode"
            " 164d1603` (flags 0x16: uint8, contact detected, one RR-interval)."
        ),
    )
    decode.add_argument("hex", metavar="HEX", nargs="+", help="value bytes in hex")
    decode.set_defaults(func=_decode)
