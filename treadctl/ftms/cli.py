"""``treadctl ftms decode CHARACTERISTIC HEX``: decode one captured value and print it as JSON.

HEX is what a capture tool shows: plain (``0c00e803``), spaced, colon- or dash-separated
(nRF Connect: ``(0x) 0C-00-E8-03``), with an optional ``0x`` prefix per value or per byte.

The decoding is tolerant by default, as the controller reads: the JSON's ``deviations`` names
any deviation from FTMS 1.0 the value uses, ``missing`` the fields a short record announced
but did not carry, ``not_available`` the fields that carried the "data not available" value.
``--strict`` is the FTMS 1.0 decoder for conformance work: any deviation is an error.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from treadctl.ftms.errors import FTMSDecodeError
from treadctl.ftms.registry import CHARACTERISTICS, decode_characteristic, to_jsonable
from treadctl.ftms.treadmill_data import PACE_FORMATS

_SEPARATORS = re.compile(r"[\s:\-_,.]+")
_HEX = re.compile(r"[0-9a-fA-F]*")


def parse_hex(text: str) -> bytes:
    """Bytes from a hex dump in any of the usual capture notations; ``ValueError`` if not hex."""
    s = text.strip()
    if s.startswith("(0x)"):
        s = s[4:]
    tokens = [t[2:] if t[:2] in ("0x", "0X") else t for t in _SEPARATORS.split(s) if t]
    digits = "".join(tokens)
    if not _HEX.fullmatch(digits):
        bad = next(c for c in digits if c not in "0123456789abcdefABCDEF")
        raise ValueError(f"not a hex string: unexpected character {bad!r} in {text!r}")
    if len(digits) % 2:
        raise ValueError(f"odd number of hex digits ({len(digits)}) in {text!r}")
    return bytes.fromhex(digits)


def _decode(args: argparse.Namespace) -> int:
    from treadctl.cli import UsageError  # the CLI entry point imports us; avoid a cycle

    text = " ".join(args.hex)
    try:
        data = parse_hex(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    quirks: dict[str, Any] = {"signed_speed": args.signed_speed}
    if args.pace_format is not None:
        quirks["pace_format"] = args.pace_format
    try:
        value = decode_characteristic(args.characteristic, data, strict=args.strict, **quirks)
    except FTMSDecodeError as exc:
        raise UsageError(f"cannot decode {data.hex()}: {exc}") from None
    except ValueError as exc:  # unknown characteristic name
        raise UsageError(str(exc)) from None
    print(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))
    return 0


def register(subparsers: Any) -> None:
    """Add ``treadctl ftms decode`` (see ``treadctl.cli``)."""
    ftms = subparsers.add_parser(
        "ftms", help="FTMS codec tools", description="Fitness Machine Service codec tools."
    )
    sub = ftms.add_subparsers(dest="ftms_command", metavar="SUBCOMMAND", required=True)
    decode = sub.add_parser(
        "decode",
        help="decode one characteristic value and print JSON",
        description=(
            "Decode one captured FTMS value, e.g. `treadctl ftms decode treadmill-data"
            " 0c00e80310270032001400` or an nRF Connect value `(0x) 0C-00-E8-03-...`."
            " CHARACTERISTIC is one of: " + ", ".join(CHARACTERISTICS) + ", or a 16-bit UUID"
            " such as 0x2ACD."
        ),
    )
    decode.add_argument("characteristic", metavar="CHARACTERISTIC")
    decode.add_argument("hex", metavar="HEX", nargs="+", help="value bytes in hex")
    decode.add_argument(
        "--pace-format",
        choices=PACE_FORMATS,
        default=None,
        help="how Treadmill Data pace travels (default uint8-0.1kmpmin, FTMS 1.0)",
    )
    decode.add_argument(
        "--signed-speed",
        action="store_true",
        help="speeds are sint16, negative = reverse (kinetic-rx2 quirk)",
    )
    decode.add_argument(
        "--strict",
        action="store_true",
        help="FTMS 1.0 exactly: reject the deviations real devices send (step count in flag"
        " bit 13, records shorter than their flags, trailing Machine Status bytes)",
    )
    decode.set_defaults(func=_decode)
