"""``treadctl dashboard [--config PATH] [--check]`` and ``treadctl dashboard hash-password``
(docs/dashboard.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from typing import Any

DEFAULT_CONFIG = "/etc/treadctl/dashboard.toml"


def register(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="the web front desk: every lane live, stop any belt")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                   help=f"TOML file with a [dashboard] table (default {DEFAULT_CONFIG})")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    dsub = p.add_subparsers(dest="dashboard_cmd", metavar="ACTION")
    hp = dsub.add_parser("hash-password",
                         help="print an argon2 hash for a [[dashboard.user]] password_hash")
    hp.add_argument("--stdin", action="store_true",
                    help="read the password from standard input (one line) instead of a prompt")
    hp.set_defaults(func=_hash_password)
    p.set_defaults(func=_run)


def _missing_extra(exc: ModuleNotFoundError) -> int:
    print(f"treadctl: error: the dashboard needs {exc.name!r}: "
          "pip install 'treadctl[dashboard]'", file=sys.stderr)
    return 2


def _hash_password(args: argparse.Namespace) -> int:
    try:
        import argon2  # noqa: F401

        from treadctl.dashboard.auth import hash_password
    except ModuleNotFoundError as exc:
        return _missing_extra(exc)
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("treadctl: error: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 8:
        print("treadctl: error: use at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def _run(args: argparse.Namespace) -> int:
    from treadctl.dashboard.config import DashboardConfigError, load_dashboard_config

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_dashboard_config(args.config)
    except DashboardConfigError as exc:
        print(f"treadctl: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK: {len(config.users)} users, {len(config.sites)} sites, "
              f"http://{config.bind}:{config.port}/, broker {config.mqtt.host}:"
              f"{config.mqtt.port}")
        return 0
    try:
        from treadctl.dashboard.app import serve
    except ModuleNotFoundError as exc:
        return _missing_extra(exc)
    try:
        return asyncio.run(_main(config, serve))
    except OSError as exc:  # the port is taken, the address does not exist...
        print(f"treadctl: error: dashboard: {exc.strerror or exc}", file=sys.stderr)
        return 1


async def _main(config: Any, serve: Any) -> int:
    task = asyncio.create_task(serve(config))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0
