"""``treadctl daemon [--config PATH] [--check]``: run (or just validate) the gym daemon.

Config errors are one line and exit code 2 before anything opens a device or a socket.
SIGTERM/SIGINT ask for an orderly shutdown (controlled stop of every belt, ``offline``
published) and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from treadctl import clock
from treadctl.cli import EXIT_OK, EXIT_USAGE
from treadctl.daemon.config import DEFAULT_CONFIG_PATH, ConfigError, DaemonConfig, load_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "daemon",
        help="run the MQTT gym daemon",
        description="Drive the configured treadmills over MQTT (docs/mqtt.md). See docs/daemon.md.",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("TREADCTL_CONFIG", DEFAULT_CONFIG_PATH),
        help=f"config file (default {DEFAULT_CONFIG_PATH})",
    )
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (journald picks it up)",
    )
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # Printed here rather than raised as UsageError: under ``python -m treadctl.cli``
        # the running module is ``__main__``, whose UsageError is a different class.
        print(f"treadctl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        ids = ", ".join(t.id for t in config.treadmills)
        print(f"{args.config}: OK ({len(config.treadmills)} treadmill(s): {ids})")
        for line in describe_lanes(config):
            print(f"  {line}")
        return EXIT_OK
    return clock.run(_main(config), speedup=1)


def describe_lanes(config: DaemonConfig) -> list[str]:
    """One line per treadmill for ``--check``: what the daemon will drive, and how."""
    from treadctl.daemon.info import lane_info
    from treadctl.daemon.service import merge_limits
    from treadctl.profiles import load_profile

    lines = []
    for tm in config.treadmills:
        profile = load_profile(tm.profile)
        info = lane_info(tm, profile, merge_limits(config.site_limits, tm.limits))
        lim = info["limits"]
        link = "FTMS" if profile.protocol == "ftms" else f"native {profile.protocol} protocol"
        if info["can_reverse"]:
            moves = (f"forward up to {lim['max_speed_kmh']:g} km/h, reverse up to "
                     f"{lim['reverse_max_speed_kmh']:g} km/h")
        elif info["rear_facing"]:
            moves = (f"forward-only belt up to {lim['max_speed_kmh']:g} km/h, rear-facing "
                     f"(reverse segments with the user facing the rear, up to "
                     f"{lim['reverse_max_speed_kmh']:g} km/h; the safety key lanyard is "
                     "required)")
        else:
            moves = (f"forward only up to {lim['max_speed_kmh']:g} km/h (reverse programs "
                     "are refused)")
        if tm.hr is None:
            heart = "heart rate from the treadmill's own HR field, if it sends one (no strap)"
        else:
            heart = f"heart-rate strap {tm.hr} (bound to this lane)"
        lines.append(f"{tm.id}: {profile.name} ({link}) on {tm.device}: {moves}; {heart}")
    return lines


async def _main(config: DaemonConfig) -> int:
    from treadctl.daemon.service import Daemon

    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    return await daemon.run()
