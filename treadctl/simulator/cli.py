"""``treadctl sim``: run the simulator as its own process behind TCP or a pty.

The first line on stdout is where to connect (``tcp://HOST:PORT`` or the pty slave path,
e.g. ``/dev/pts/7``), flushed at once; then it serves until SIGINT/SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from treadctl import clock
from treadctl.cli import UsageError
from treadctl.profiles import DEFAULT_PROFILE, ProfileError, load_profile
from treadctl.simulator.faults import FaultSpecError, parse_faults
from treadctl.simulator.firmware import QUIRKS, QuirkSpecError, SimTreadmill, parse_quirks
from treadctl.simulator.link import serve_pty, serve_tcp

DEFAULT_LISTEN = "tcp://127.0.0.1:0"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sim",
        help="run the treadmill simulator behind TCP or a pty",
        description="Run the treadmill simulator as its own process. Prints the address "
        "(tcp://HOST:PORT) or pty path as the first line, then serves until SIGINT/SIGTERM.",
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="firmware profile name or file")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--listen", metavar="URL", default=None,
        help=f"tcp://HOST:PORT to listen on (default {DEFAULT_LISTEN}; port 0 = any free port)",
    )
    where.add_argument("--pty", action="store_true", help="serve a pseudo-terminal instead")
    where.add_argument("--ble", action="store_true",
                       help="serve a BLE FTMS treadmill through a Bumble HCI adapter "
                       "(needs treadctl[ble-sim]; docs/transports.md)")
    p.add_argument("--hci", metavar="TRANSPORT", default=None,
                   help="with --ble: Bumble HCI transport, e.g. usb:0 (default), hci-socket:0")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="NAME@SECONDS[+DURATION][,...], seconds since the host's first contact")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="virtual seconds per real second (both sides must agree; default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed >= 0 (garbage fault)")
    p.add_argument("--quirks", default="", metavar="NAME[,NAME]",
                   help="FTMS deviations of real machines for the firmware to send: "
                   + ", ".join(QUIRKS) + " (docs/simulator.md)")
    p.set_defaults(func=handle)


def _parse_listen(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"--listen must look like tcp://HOST:PORT, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--listen: bad port in {url!r}") from None
    if port is None:
        raise UsageError(f"--listen: missing port in {url!r} (use :0 for any free port)")
    return parts.hostname, port


def handle(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    try:
        plan = parse_faults(args.faults)
    except FaultSpecError as exc:
        raise UsageError(f"--faults: {exc}") from None
    if not math.isfinite(args.speedup) or args.speedup <= 0:
        raise UsageError(f"--speedup must be > 0, got {args.speedup}")
    try:
        quirks = parse_quirks(args.quirks)
    except QuirkSpecError as exc:
        raise UsageError(f"--quirks: {exc}") from None
    if args.seed < 0:  # as sim://?seed= (treadctl/transport/url.py): Random(-n) == Random(n)
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    listen = None if args.pty else _parse_listen(args.listen or DEFAULT_LISTEN)
    if profile.protocol != "ftms":  # a maker's own protocol (docs/protocols.md)
        from treadctl.simulator.personalities.cli import serve_native

        if args.ble or args.hci is not None or quirks:
            raise UsageError(f"--ble, --hci and --quirks are FTMS only ({profile.name} speaks"
                             f" {profile.protocol})")
        return serve_native(profile, plan, args.seed, args.speedup, listen)

    def make_sim() -> SimTreadmill:
        return SimTreadmill(profile, faults=plan, seed=args.seed, quirks=quirks)

    def announce(text: str) -> None:
        print(text, flush=True)

    if args.ble or args.hci is not None:  # BLE (Bumble) only when asked for
        if not args.ble:
            raise UsageError("--hci needs --ble")
        try:
            from treadctl.simulator.ble import run_cli as run_ble
        except ModuleNotFoundError as exc:
            print(f"treadctl sim: --ble needs Bumble ({exc}); pip install 'treadctl[ble-sim]'",
                  file=sys.stderr)
            return 1
        return run_ble(make_sim, args.hci, args.speedup, announce)

    return run_server(make_sim, listen, args.speedup, announce)


def run_server(
    make: Callable[[], Any],
    listen: tuple[str, int] | None,
    speedup: float,
    announce: Callable[[str], None],
    *,
    pty: Callable[..., Awaitable[None]] = serve_pty,
    tcp: Callable[..., Awaitable[None]] = serve_tcp,
) -> int:
    """Serve ``make``'s machine on a pty (``listen`` None) or on TCP until SIGINT/SIGTERM,
    announcing the pty path or ``tcp://HOST:PORT``; ``pty``/``tcp`` are the servers (the
    FTMS link's by default). Returns the exit status."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        if listen is None:
            await pty(make, on_path=announce)
            return
        ready: asyncio.Future[tuple[str, int]] = loop.create_future()
        server = asyncio.ensure_future(tcp(make, *listen, ready=ready))
        try:
            waiters: set[asyncio.Future[Any]] = {server, ready}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                host, port = ready.result()
                announce(f"tcp://{host}:{port}")
            await server
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    try:
        clock.run(main(), speedup)
    except asyncio.CancelledError:
        pass
    except OSError as exc:
        print(f"treadctl sim: {exc}", file=sys.stderr)
        return 1
    return 0
