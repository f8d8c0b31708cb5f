"""``treadctl scan``: list FTMS treadmills advertising nearby over Bluetooth LE."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from treadctl.cli import EXIT_OK, EXIT_RUNTIME, UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scan",
        help="list FTMS treadmills nearby (BLE)",
        description="Scan for Bluetooth LE devices advertising the Fitness Machine Service "
        "(0x1826) and print their address, name and signal strength. Use the address as "
        "--device ble://ADDRESS.",
    )
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds to scan (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per device")
    p.set_defaults(func=handle_scan)


def handle_scan(args: argparse.Namespace) -> int:
    from treadctl.transport.ble import describe_ble_error, scan

    if not 0 < args.timeout <= 600:
        raise UsageError(f"--timeout must be in (0, 600] seconds, got {args.timeout:g}")
    try:
        devices = asyncio.run(scan(args.timeout))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # no adapter, BlueZ down, permissions: one line, exit 1
        reason = describe_ble_error(exc)
        if not reason.startswith(("no Bluetooth adapter", "BlueZ", "Bluetooth adapter",
                                  "permission")):
            reason = f"BLE scan failed ({reason})"
        print(f"treadctl: error: {reason}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        for d in devices:
            print(json.dumps(d))
        return EXIT_OK
    if not devices:
        print(f"no FTMS treadmills found in {args.timeout:g} s")
        return EXIT_OK
    print(f"{'ADDRESS':<20} {'RSSI':>5}  NAME")
    for d in devices:
        rssi = "" if d["rssi"] is None else str(d["rssi"])
        print(f"{d['address']:<20} {rssi:>5}  {d['name']}")
    return EXIT_OK
